//! Opens N keep-alive connections, sends one request on each, then holds them idle and reports
//! how many the server has closed (idle timeout) every few seconds. Used by `soak.sh`.
//!
//! `cargo run --release --example idle-conns -- <addr> <count> <hold-seconds>`

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(count), Some(hold)) = (
        args.get(1),
        args.get(2).and_then(|c| c.parse::<usize>().ok()),
        args.get(3).and_then(|h| h.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: idle-conns <addr> <count> <hold-seconds>");
        std::process::exit(2);
    };
    let mut conns = Vec::with_capacity(count);
    for _ in 0..count {
        match TcpStream::connect(addr) {
            Ok(mut c) => {
                let req = format!("GET /?idle HTTP/1.1\r\nHost: {addr}\r\n\r\n");
                if c.write_all(req.as_bytes()).is_ok() {
                    let mut buf = [0u8; 4096];
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = c.read(&mut buf);
                    let _ = c.set_nonblocking(true);
                    conns.push(c);
                }
            }
            Err(e) => eprintln!("connect: {e}"),
        }
    }
    println!("idle-conns: {} connections open and idle", conns.len());
    let start = Instant::now();
    let mut open = vec![true; conns.len()];
    while start.elapsed() < Duration::from_secs(hold) {
        std::thread::sleep(Duration::from_secs(5));
        let mut buf = [0u8; 1024];
        for (i, c) in conns.iter_mut().enumerate() {
            if !open[i] {
                continue;
            }
            match c.read(&mut buf) {
                Ok(0) => open[i] = false,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => open[i] = false,
            }
        }
        let still = open.iter().filter(|o| **o).count();
        println!("idle-conns: t={:>4}s still open {still}/{}", start.elapsed().as_secs(), conns.len());
        if still == 0 {
            break;
        }
    }
}
