//! Keeps N idle keep-alive connections open against a server for a while: each sends one
//! request, reads the answer and then stays silent. A connection the server closes (its idle
//! timeout) is replaced by a new one, so the server always holds about N idle clients. Reports
//! every 10 s how many were open and how many the server has closed so far. Used by `soak.sh`.
//!
//! `cargo run --release --example idle-conns -- <addr> <count> <seconds>`

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn open(addr: &str) -> Option<TcpStream> {
    let mut c = TcpStream::connect(addr).ok()?;
    c.write_all(format!("GET /?idle HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = [0u8; 4096];
    if c.read(&mut buf).ok()? == 0 {
        return None;
    }
    c.set_nonblocking(true).ok()?;
    Some(c)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(count), Some(seconds)) = (
        args.get(1),
        args.get(2).and_then(|c| c.parse::<usize>().ok()),
        args.get(3).and_then(|h| h.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: idle-conns <addr> <count> <seconds>");
        std::process::exit(2);
    };
    let mut conns: Vec<Option<TcpStream>> = (0..count).map(|_| open(addr)).collect();
    println!("idle-conns: {} of {count} connections open and idle", conns.iter().flatten().count());
    let start = Instant::now();
    let mut closed_by_server = 0usize;
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(10));
        let mut buf = [0u8; 1024];
        for slot in conns.iter_mut() {
            let gone = match slot.as_mut().map(|c| c.read(&mut buf)) {
                None => true,
                Some(Ok(0)) => {
                    closed_by_server += 1;
                    true
                }
                Some(Ok(_)) => false,
                Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => false,
                Some(Err(_)) => {
                    closed_by_server += 1;
                    true
                }
            };
            if gone {
                *slot = open(addr);
            }
        }
        println!(
            "idle-conns: t={:>4}s open {}/{count}, closed by the server so far {closed_by_server}",
            start.elapsed().as_secs(),
            conns.iter().flatten().count()
        );
    }
}
