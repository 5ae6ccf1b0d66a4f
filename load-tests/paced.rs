//! A paced HTTP/1.1 load generator: `rate` GET requests per second for `seconds`, spread over
//! `conns` keep-alive connections, latency measured from each request's scheduled time (so a
//! stalled server shows up as latency, not as fewer requests). Prints one JSON line:
//! `{"sent", "statuses": {"200": n, …}, "errors", "p50_ms", "p99_ms", "p99_ms_by_status": {…}}`.
//!
//!   cargo run --release --example paced -- 127.0.0.1:8080 /path 1000 20 [conns=32]
//!
//! Bounded: it stops after `seconds` and waits at most 5 s more for answers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// One answer: status (0 for a transport error) and latency.
type Outcome = (u16, Duration);

async fn one(stream: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<u16> {
    stream.get_mut().write_all(request).await?;
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    Ok(status)
}

async fn worker(addr: String, request: Vec<u8>, mut ticks: mpsc::Receiver<Instant>, done: mpsc::Sender<Outcome>) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    while let Some(scheduled) = ticks.recv().await {
        if conn.is_none() {
            conn = TcpStream::connect(&addr).await.ok().map(BufReader::new);
        }
        let status = match conn.as_mut() {
            Some(stream) => match one(stream, &request).await {
                Ok(status) => status,
                Err(_) => {
                    conn = None;
                    0
                }
            },
            None => 0,
        };
        let _ = done.send((status, scheduled.elapsed())).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: paced <host:port> <path> <rate/s> <seconds> [conns]");
        std::process::exit(2);
    }
    let (addr, path) = (args[1].clone(), args[2].clone());
    let rate: u64 = args[3].parse().expect("rate");
    let seconds: u64 = args[4].parse().expect("seconds");
    let conns: usize = args.get(5).and_then(|c| c.parse().ok()).unwrap_or(32);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    let (done_tx, mut done_rx) = mpsc::channel::<Outcome>(1 << 16);
    let mut senders = Vec::new();
    for _ in 0..conns {
        let (tx, rx) = mpsc::channel(1 << 12);
        senders.push(tx);
        tokio::spawn(worker(addr.clone(), request.clone(), rx, done_tx.clone()));
    }
    drop(done_tx);
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let collector = tokio::spawn(async move {
        let mut outcomes = Vec::with_capacity(total as usize);
        while let Some(o) = done_rx.recv().await {
            outcomes.push(o);
        }
        outcomes
    });
    for i in 0..total {
        let at = start + interval * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let _ = senders[(i as usize) % conns].try_send(at);
    }
    drop(senders);
    let outcomes = match tokio::time::timeout(Duration::from_secs(5), collector).await {
        Ok(Ok(o)) => o,
        _ => Vec::new(),
    };
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_status: BTreeMap<u16, Vec<Duration>> = BTreeMap::new();
    for (status, latency) in &outcomes {
        *statuses.entry(status.to_string()).or_default() += 1;
        by_status.entry(*status).or_default().push(*latency);
    }
    let mut all: Vec<Duration> = outcomes.iter().map(|o| o.1).collect();
    all.sort();
    let p99_by_status: BTreeMap<String, f64> = by_status
        .iter_mut()
        .map(|(s, l)| {
            l.sort();
            (s.to_string(), percentile(l, 0.99))
        })
        .collect();
    let errors = outcomes.iter().filter(|(s, _)| *s == 0 || *s >= 500).count();
    println!(
        "{}",
        serde_json::json!({
            "sent": total,
            "answered": outcomes.len(),
            "statuses": statuses,
            "errors": errors,
            "error_rate": errors as f64 / outcomes.len().max(1) as f64,
            "p50_ms": percentile(&all, 0.50),
            "p99_ms": percentile(&all, 0.99),
            "p99_ms_by_status": p99_by_status,
        })
    );
}
