//! Hostile clients for `slow-clients.sh`: `slow` connections that trickle a request head one
//! byte every `interval_ms` (a slowloris), and `idle` connections that send one request and
//! then stay silent. Whenever the server closes or refuses one, it is opened again
//! `reopen_ms` later (default 1,000: a connection flood; slowloris tools re-open their sockets
//! once per round, e.g. every 15 s), so the server always faces about `slow + idle` attackers. Stops by itself after `seconds`; prints every 10 s and
//! at the end what the server did: heads cut with a 408, connections closed without an
//! answer, connections refused or reset at once.
//!
//! `cargo run --release --example slow-clients -- <addr> <slow> <idle> <seconds> [interval_ms [reopen_ms]]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
struct Tally {
    opened: AtomicU64,
    answered_408: AtomicU64,
    closed_silently: AtomicU64,
    refused: AtomicU64,
    open_now: AtomicU64,
}

/// Pause before re-opening a connection the server closed or refused, in ms (`reopen_ms`).
static REOPEN_MS: AtomicU64 = AtomicU64::new(1000);

fn reopen_after() -> Duration {
    Duration::from_millis(REOPEN_MS.load(Ordering::Relaxed))
}

const HEAD: &[u8] = b"GET /slow HTTP/1.1\r\nHost: x\r\nUser-Agent: slow-clients\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";

/// A new connection to `addr`, counted; `None` (after a pause) when it is refused.
async fn open(addr: &str, tally: &Tally) -> Option<TcpStream> {
    match TcpStream::connect(addr).await {
        Ok(s) => {
            tally.opened.fetch_add(1, Ordering::Relaxed);
            Some(s)
        }
        Err(_) => {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(reopen_after()).await;
            None
        }
    }
}

/// One slowloris: trickle the head until the server ends the connection, then start again.
async fn slow(addr: String, interval: Duration, until: Instant, tally: Arc<Tally>) {
    while Instant::now() < until {
        let Some(mut s) = open(&addr, &tally).await else { continue };
        tally.open_now.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 2048];
        let mut answer = Vec::new();
        let mut sent = 0;
        let started = Instant::now();
        let ended = loop {
            if Instant::now() >= until {
                break None;
            }
            if sent < HEAD.len() && s.write_all(&HEAD[sent..sent + 1]).await.is_err() {
                break Some(false);
            }
            sent += 1;
            match tokio::time::timeout(interval, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break Some(false),
                Ok(Ok(n)) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.starts_with(b"HTTP/1.1 408") {
                        break Some(true);
                    }
                }
                Err(_) => {}
            }
        };
        tally.open_now.fetch_sub(1, Ordering::Relaxed);
        tokio::time::sleep(reopen_after()).await;
        match ended {
            Some(true) => tally.answered_408.fetch_add(1, Ordering::Relaxed),
            Some(false) if started.elapsed() < Duration::from_millis(50) => {
                tally.refused.fetch_add(1, Ordering::Relaxed)
            }
            Some(false) => tally.closed_silently.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
    }
}

/// One idle client: a request, its answer, then silence until the server closes.
async fn idle(addr: String, until: Instant, tally: Arc<Tally>) {
    while Instant::now() < until {
        let Some(mut s) = open(&addr, &tally).await else { continue };
        if s.write_all(b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n").await.is_err() {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(reopen_after()).await;
                continue;
            }
        }
        tally.open_now.fetch_add(1, Ordering::Relaxed);
        let left = until.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(left, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        tally.open_now.fetch_sub(1, Ordering::Relaxed);
        if Instant::now() < until {
            tally.closed_silently.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(reopen_after()).await;
        }
    }
}

fn report(label: &str, t: &Tally) {
    println!(
        "slow-clients: {label}: open now {}, opened {}, heads cut with 408 {}, closed without answer {}, refused or reset at once {}",
        t.open_now.load(Ordering::Relaxed),
        t.opened.load(Ordering::Relaxed),
        t.answered_408.load(Ordering::Relaxed),
        t.closed_silently.load(Ordering::Relaxed),
        t.refused.load(Ordering::Relaxed),
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parse = |i: usize| args.get(i).and_then(|v| v.parse::<u64>().ok());
    let (Some(addr), Some(slow_n), Some(idle_n), Some(seconds)) = (args.get(1).cloned(), parse(2), parse(3), parse(4))
    else {
        eprintln!("usage: slow-clients <addr> <slow> <idle> <seconds> [interval_ms [reopen_ms]]");
        std::process::exit(2);
    };
    let interval = Duration::from_millis(parse(5).unwrap_or(500));
    REOPEN_MS.store(parse(6).unwrap_or(1000), Ordering::Relaxed);
    let until = Instant::now() + Duration::from_secs(seconds);
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    // Open gradually (a few hundred per second), as attackers' connections arrive.
    for i in 0..(slow_n + idle_n) {
        let (addr, tally) = (addr.clone(), tally.clone());
        tasks.push(if i < idle_n {
            tokio::spawn(idle(addr, until, tally))
        } else {
            tokio::spawn(slow(addr, interval, until, tally))
        });
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let started = Instant::now();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(10).min(until.saturating_duration_since(Instant::now()))).await;
        report(&format!("t={:>4}s", started.elapsed().as_secs()), &tally);
    }
    for task in tasks {
        let _ = task.await;
    }
    report("end", &tally);
}
