//! The pool of idle upstream connections (patches/README.md, pingora-core 8): nothing watches an
//! idle connection, so these check from outside what the watcher used to guarantee — a
//! connection the backend closed while idle is never used for a request, `idle_timeout` closes
//! idle connections with no request coming, and an idle connection is reused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::http1::read_request;
use crate::support::*;
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// A backend answering every request on a connection with the connection's number (from 1) as
/// its body, keep-alive. With `close_after`, it closes each connection that long after its first
/// answer, with no `Connection: close` (as a server's own keep-alive timeout does). Each
/// connection that the gateway closes is reported on `closed` with its number.
struct Backend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: mpsc::Receiver<usize>,
}

impl Backend {
    fn start(close_after: Option<Duration>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (closed_tx, closed) = mpsc::channel();
        let count = accepted.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let closed_tx = closed_tx.clone();
                thread::spawn(move || serve(stream, n, close_after, closed_tx));
            }
        });
        Backend { addr, accepted, closed }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, n: usize, close_after: Option<Duration>, closed: mpsc::Sender<usize>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let body = n.to_string();
    loop {
        match read_request(&mut reader) {
            Ok(Some(_)) => {}
            // the gateway closed the connection
            _ => {
                let _ = closed.send(n);
                return;
            }
        }
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
        if let Some(after) = close_after {
            thread::sleep(after);
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn gateway(backend: &Backend, service: &str) -> Gateway {
    Gateway::start(&format!(
        "services:\n  s:\n    targets: [\"{}\"]\n{service}routes:\n  - {{path: /, service: s, auth: public}}\n",
        backend.addr
    ))
}

/// Every access line so far shows one upstream attempt: no request went to a dead connection
/// first and was retried.
fn one_attempt_each(gw: &Gateway, requests: usize) {
    let mut lines = Vec::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            lines = gw.access_lines();
            lines.len() >= requests
        }),
        "{} access lines for {requests} requests",
        lines.len()
    );
    for line in &lines {
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["attempts"], 1, "{line}");
    }
}

#[test]
fn an_idle_connection_is_reused() {
    let backend = Backend::start(None);
    let gw = gateway(&backend, "");
    for _ in 0..5 {
        let r = get(gw.addr, "/");
        assert_eq!(r.status, 200);
    }
    // the gateway has two worker threads: at most a connection each
    assert!(backend.accepted() <= 2, "{} connections for 5 requests in turn", backend.accepted());
    one_attempt_each(&gw, 5);
}

#[test]
fn a_connection_the_backend_closed_while_idle_is_never_used() {
    let backend = Backend::start(Some(Duration::from_millis(50)));
    let gw = gateway(&backend, "");
    const ROUNDS: usize = 8;
    for round in 1..=ROUNDS {
        let r = get(gw.addr, "/");
        assert_eq!(r.status, 200, "round {round}");
        // the backend closes the connection well before the next request
        thread::sleep(Duration::from_millis(250));
    }
    // each request went to a new connection, at its first attempt
    assert_eq!(backend.accepted(), ROUNDS);
    one_attempt_each(&gw, ROUNDS);
}

#[test]
fn idle_timeout_closes_idle_connections_without_a_request() {
    let backend = Backend::start(None);
    let gw = gateway(&backend, "    idle_timeout: 300ms\n");
    let started = Instant::now();
    assert_eq!(get(gw.addr, "/").status, 200);
    // the pool closes it (within a sweep, 1 s, of its timeout) with no request coming
    let closed = backend.closed.recv_timeout(Duration::from_secs(3)).expect("the idle connection was not closed");
    assert_eq!(closed, 1);
    let idle = started.elapsed();
    assert!(idle >= Duration::from_millis(300), "closed after {idle:?}");
    // the next request takes a new connection at its first attempt
    let r = get(gw.addr, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"2");
    one_attempt_each(&gw, 2);
}
