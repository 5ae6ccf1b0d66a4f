//! Tests of the test harness itself: that a reserved port (`support::ports`) is safe from the
//! tests running beside it and usable by every server the tests start, checked on the kernel
//! they run on, and that a gateway whose port another process took fails at once; and that the
//! one HTTP/1 reader (`support::http1`) delimits every kind of body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use crate::support::http1::{self, Framing};
use crate::support::nats::NatsServer;
use crate::support::ports::{DeadPort, Reserved};
use crate::support::redis_server::RedisServer;
use crate::support::{eventually, http_get_status, Echo, Gateway};
use socket2::{Domain, SockAddr, Socket, Type};
use std::collections::HashSet;
use std::io::{BufReader, Cursor, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Reserved ports

#[test]
fn a_reserved_or_dead_port_refuses_connections() {
    let reserved = Reserved::new();
    let dead = DeadPort::new();
    for addr in [reserved.addr(), dead.addr()] {
        let err = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect_err("nothing listens");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{addr}: {err}");
    }
}

#[test]
fn a_reserved_port_is_taken_for_a_bind_without_reuse() {
    // The control for the tests below: the reservation really occupies the port.
    let reserved = Reserved::new();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let err = socket.bind(&SockAddr::from(reserved.addr())).expect_err("the port is held");
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
}

#[test]
fn no_other_bind_or_connection_is_given_a_reserved_port() {
    // 500 reservations, then 500 listeners and 500 more reservations on :0 and 200 outgoing
    // connections. Bind(:0) draws from the odd half of the ephemeral range (~14,000 ports): with
    // the 500 ports released instead of held (what the harness's `free_port` did), a trial on this kernel
    // handed 69 of them out again.
    let reserved: Vec<Reserved> = (0..500).map(|_| Reserved::new()).collect();
    let held: HashSet<u16> = reserved.iter().map(Reserved::port).collect();
    let listeners: Vec<TcpListener> = (0..500).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let more: Vec<Reserved> = (0..500).map(|_| Reserved::new()).collect();
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = target.local_addr().unwrap();
    // Accepted as they come, so the backlog never fills.
    let acceptor = std::thread::spawn(move || (0..200).map(|_| target.accept().unwrap().0).collect::<Vec<_>>());
    let outgoing: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let _accepted = acceptor.join().unwrap();
    let given: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .chain(more.iter().map(Reserved::port))
        .chain(outgoing.iter().map(|s| s.local_addr().unwrap().port()))
        .collect();
    let clashes: Vec<&u16> = given.iter().filter(|p| held.contains(p)).collect();
    assert!(clashes.is_empty(), "reserved ports handed out again: {clashes:?}");
}

#[test]
fn a_std_listener_binds_a_reserved_port_and_accepts() {
    let reserved = Reserved::new();
    let listener = TcpListener::bind(reserved.addr()).expect("SO_REUSEADDR bind on a reserved port");
    let _client = TcpStream::connect(reserved.addr()).unwrap();
    listener.accept().expect("the listener, not the reservation, takes the connection");
}

#[test]
fn siger_echo_listens_and_restarts_on_a_reserved_port() {
    let reserved = Reserved::new();
    let listen = reserved.addr().to_string();
    let mut echo = Echo::start_on("reserved", &listen);
    assert_eq!(echo.addr, reserved.addr());
    assert_eq!(http_get_status(echo.addr, "/health"), Some(200));
    echo.kill();
    let echo = Echo::start_on("reserved", &listen);
    assert_eq!(http_get_status(echo.addr, "/health"), Some(200));
}

/// A `siger` process on given addresses, killed on drop.
struct Siger {
    child: Child,
    dir: tempfile::TempDir,
}

impl Siger {
    fn start(listen: SocketAddr, admin: SocketAddr) -> Siger {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("siger.yaml");
        std::fs::write(&config, support::render(support::HEAD, listen, admin, dir.path())).unwrap();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(support::SIGER)
            .arg("-c")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn siger");
        Siger { child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Siger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn siger_listens_on_reserved_ports() {
    let (listen, admin) = (Reserved::new(), Reserved::new());
    let mut siger = Siger::start(listen.addr(), admin.addr());
    let up = eventually(Duration::from_secs(30), || {
        if let Ok(Some(status)) = siger.child.try_wait() {
            panic!("siger exited with {status}:\n{}", siger.log());
        }
        http_get_status(admin.addr(), "/health") == Some(200) && http_get_status(listen.addr(), "/health") == Some(200)
    });
    assert!(up, "siger did not answer on its reserved ports:\n{}", siger.log());
    assert!(!siger.log().contains("in use"), "{}", siger.log());
}

#[test]
fn a_gateway_whose_port_is_taken_fails_at_once_and_says_so() {
    // Another process listens on the port (what a port race leaves): without the check the
    // start-up would wait out Pingora's 30 s of bind retries, or take the squatter for siger.
    let taken = Reserved::new();
    let squatter = TcpListener::bind(taken.addr()).unwrap();
    let started = Instant::now();
    let failed = std::panic::catch_unwind(|| Gateway::start_on(support::HEAD, [taken, Reserved::new()]));
    let message = failed.err().and_then(|p| p.downcast_ref::<String>().cloned()).expect("the start-up fails");
    assert!(message.contains("a port of the gateway is taken"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(15), "failed after {:?}", started.elapsed());
    drop(squatter);
}

#[test]
fn listens_tells_which_process_holds_a_listening_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(support::ports::listens(std::process::id(), addr));
    let reserved = Reserved::new();
    assert!(!support::ports::listens(std::process::id(), reserved.addr()), "bound, not listening");
    let echo = Echo::start("listens");
    assert!(support::ports::listens(echo.pid(), echo.addr));
    assert!(!support::ports::listens(echo.pid(), addr), "another process's listener");
}

#[test]
fn nats_server_listens_on_a_reserved_port() {
    let reserved = Reserved::new();
    // Ready only once it greets a client on that port with INFO (the reservation never would).
    let nats = NatsServer::start_on(reserved.port(), &[]);
    assert_eq!(nats.port, reserved.port());
}

#[test]
fn redis_server_listens_on_a_reserved_port() {
    let reserved = Reserved::new();
    // Ready only once it answers PING on that address.
    let redis = RedisServer::start_on(reserved.addr());
    assert_eq!(redis.addr, reserved.addr());
}

// ---------------------------------------------------------------------------------------------
// The HTTP/1 reader

fn reader(bytes: &[u8]) -> BufReader<Cursor<Vec<u8>>> {
    BufReader::new(Cursor::new(bytes.to_vec()))
}

#[test]
fn responses_with_content_length_follow_each_other_on_one_connection() {
    let mut r = reader(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Request-Id: a\r\n\r\nhelloHTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}",
    );
    let first = http1::read_response(&mut r, "GET").unwrap().unwrap();
    assert_eq!((first.status, first.reason.as_str(), first.version), (200, "OK", 1));
    assert_eq!((first.header("x-request-id"), first.body.as_slice()), (Some("a"), &b"hello"[..]));
    let second = http1::read_response(&mut r, "GET").unwrap().unwrap();
    assert_eq!((second.status, second.json()), (404, serde_json::json!({})));
    assert!(http1::read_response(&mut r, "GET").unwrap().is_none(), "a clean end of the connection");
}

#[test]
fn chunked_bodies_are_joined_and_keep_their_trailers() {
    let mut r = reader(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\ngrpc-status: 0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    );
    let resp = http1::read_response(&mut r, "POST").unwrap().unwrap();
    assert_eq!(String::from_utf8(resp.body).unwrap(), "Wikipedia in \r\n\r\nchunks.");
    assert_eq!(resp.trailers, [("grpc-status".to_string(), "0".to_string())]);
    assert_eq!(http1::read_response(&mut r, "POST").unwrap().unwrap().status, 204);
}

#[test]
fn a_response_without_length_runs_to_the_close() {
    let mut r = reader(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of\r\nthis");
    let resp = http1::read_response(&mut r, "GET").unwrap().unwrap();
    assert_eq!((resp.version, resp.body.as_slice()), (0, &b"all of\r\nthis"[..]));
}

#[test]
fn head_1xx_204_and_304_answers_have_no_body() {
    let mut r = reader(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    let head = http1::read_response(&mut r, "HEAD").unwrap().unwrap();
    assert_eq!((head.status, head.header("content-length"), head.body.len()), (200, Some("10"), 0));
    for status in [100, 304, 204] {
        let resp = http1::read_response(&mut r, "GET").unwrap().unwrap();
        assert_eq!((resp.status, resp.body.len()), (status, 0));
    }
    assert_eq!(http1::read_response(&mut r, "GET").unwrap().unwrap().body, b"ok");
}

#[test]
fn broken_framing_is_an_error_not_a_guess() {
    let read = |bytes: &[u8]| http1::read_response(&mut reader(bytes), "GET").map(|_| ()).unwrap_err().kind();
    assert_eq!(
        read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ErrorKind::InvalidData
    );
    assert_eq!(read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"), ErrorKind::UnexpectedEof);
    assert_eq!(read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"), ErrorKind::UnexpectedEof);
    assert_eq!(read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), ErrorKind::InvalidData);
    assert_eq!(read(b"HTTP/1.1 200 OK\r\nContent-Le"), ErrorKind::UnexpectedEof);
    assert_eq!(read(b"HTTP/1.1 2000 OK\r\n\r\n"), ErrorKind::InvalidData);
    let mut huge = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
    huge.resize(huge.len() + (1 << 20), b'a');
    assert_eq!(read(&huge), ErrorKind::InvalidData);
}

#[test]
fn requests_are_read_with_their_target_and_body() {
    let mut r = reader(
        b"\r\nGET /v1/health/service/users?index=7&wait=30s HTTP/1.1\r\nHost: consul\r\n\r\n\
          POST /v1/traces HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc\
          PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n\
          GET / HTTP/1.0\r\n\r\n",
    );
    let get = http1::read_request(&mut r).unwrap().unwrap();
    assert_eq!(
        (get.method.as_str(), get.path.as_str(), get.query.as_str()),
        ("GET", "/v1/health/service/users", "index=7&wait=30s")
    );
    assert_eq!((get.header("host"), get.body.len(), get.keep_alive()), (Some("consul"), 0, true));
    let post = http1::read_request(&mut r).unwrap().unwrap();
    assert_eq!((post.target.as_str(), post.body.as_slice(), post.keep_alive()), ("/v1/traces", &b"abc"[..], false));
    let put = http1::read_request(&mut r).unwrap().unwrap();
    assert_eq!(put.body, b"xyz");
    let old = http1::read_request(&mut r).unwrap().unwrap();
    assert_eq!((old.version, old.keep_alive()), (0, false));
    assert!(http1::read_request(&mut r).unwrap().is_none());
}

#[test]
fn a_request_framing_a_server_cannot_read_is_refused() {
    let headers = vec![("Transfer-Encoding".to_string(), "gzip".to_string())];
    assert_eq!(http1::request_framing(&headers).unwrap_err().kind(), ErrorKind::InvalidData);
    let headers = vec![("Transfer-Encoding".to_string(), "gzip, chunked".to_string())];
    assert_eq!(http1::request_framing(&headers).unwrap(), Framing::Chunked);
    assert_eq!(
        http1::response_framing("GET", 200, &vec![("Transfer-Encoding".into(), "gzip".into())]).unwrap(),
        Framing::UntilClose
    );
}

#[test]
fn keep_alive_responses_from_a_real_server_are_read_in_turn() {
    // siger-echo is hyper: its own framing choices, over a real socket.
    let echo = Echo::start("http-reader");
    let stream = TcpStream::connect(echo.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let host = echo.addr;
    write!(writer, "GET /bytes/70000 HTTP/1.1\r\nHost: {host}\r\n\r\nHEAD /bytes/10 HTTP/1.1\r\nHost: {host}\r\n\r\n")
        .unwrap();
    write!(writer, "POST /upload HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n").unwrap();
    let bytes = http1::read_response(&mut r, "GET").unwrap().unwrap();
    assert_eq!(bytes.body.len(), 70000);
    assert!(bytes.body.iter().enumerate().all(|(i, b)| *b == support::echo_pattern(i as u64)));
    let head = http1::read_response(&mut r, "HEAD").unwrap().unwrap();
    assert_eq!((head.status, head.body.len()), (200, 0));
    let upload = http1::read_response(&mut r, "POST").unwrap().unwrap();
    assert_eq!(upload.json()["bytes"], 2);
    assert!(http1::read_response(&mut r, "GET").unwrap().is_none());
}
