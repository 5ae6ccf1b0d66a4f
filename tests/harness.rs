//! Tests of the test harness itself: that a reserved port (`support::ports`) is safe from the
//! tests running beside it and usable by every server the tests start, checked on the kernel
//! they run on.
//! Kept out of `support/` so they run once, not in every test binary that includes it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use socket2::{Domain, SockAddr, Socket, Type};
use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::nats::NatsServer;
use support::ports::{DeadPort, Reserved};
use support::redis_server::RedisServer;
use support::{eventually, http_get_status, Echo};

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
    // the 500 ports released instead of held (what `free_port` does), a trial on this kernel
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
