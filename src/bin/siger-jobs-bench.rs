//! Load generator for the jobs path (load-tests/jobs-bench.sh drives it).
//!
//! * `raw`: C concurrent async-nats JetStream publishes, each awaiting its ack — the ceiling.
//! * `http`: C concurrent keep-alive HTTP/1.1 clients POSTing jobs through the gateway.
//!
//! Both send the same job and measure the same way (time from send to ack / to the 202), so
//! the ratio of their rates is what the gateway costs. Prints one JSON line on stdout.

use async_nats::jetstream::message::PublishMessage;
use async_nats::HeaderMap;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
#[command(about = "Benchmark /jobs/submit against raw JetStream publish-with-ack")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
    /// Concurrent in-flight submissions.
    #[arg(short, long, default_value_t = 32, global = true)]
    concurrency: usize,
    /// Measured duration in seconds.
    #[arg(short, long, default_value_t = 10, global = true)]
    duration: u64,
    /// Unmeasured warm-up in seconds.
    #[arg(long, default_value_t = 2, global = true)]
    warmup: u64,
    /// Runtime worker threads of this load generator.
    #[arg(long, default_value_t = 1, global = true)]
    threads: usize,
}

#[derive(Subcommand)]
enum Mode {
    /// async-nats publish + await ack, envelope-shaped payloads.
    Raw {
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        #[arg(long, default_value = "jobs.submitted")]
        subject: String,
    },
    /// POST through the gateway with a minted HS256 token.
    Http {
        /// e.g. http://127.0.0.1:8080/jobs/submit
        #[arg(long)]
        url: String,
        /// auth.jwt.secret of the gateway.
        #[arg(long)]
        secret: String,
        #[arg(long)]
        issuer: Option<String>,
        #[arg(long, default_value = "user")]
        role: String,
    },
}

/// The job every request submits (~130 bytes, a realistic small job).
const JOB: &str =
    r#"{"image":"registry.local/render:2.4","args":["--scene","s-0042","--frames","1-24"],"cpu":2,"memory_mib":2048}"#;

#[derive(Default)]
struct Totals {
    ok: AtomicU64,
    errors: AtomicU64,
    /// Successful submissions including the warm-up (for CPU per job).
    all: AtomicU64,
}

/// CPU seconds this process used so far (utime + stime from /proc; 0 where unavailable).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(cli.threads.max(1)).enable_all().build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(cli.warmup);
    let until = measure_from + Duration::from_secs(cli.duration);
    let totals = Arc::new(Totals::default());
    let mut tasks = Vec::new();
    let mode_name;
    match &cli.mode {
        Mode::Raw { nats, subject } => {
            mode_name = "raw";
            let client = async_nats::connect(nats.as_str()).await?;
            let js =
                async_nats::jetstream::context::ContextBuilder::new().timeout(Duration::from_secs(10)).build(client);
            for _ in 0..cli.concurrency {
                let (js, subject, totals) = (js.clone(), subject.clone(), totals.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(1 << 16);
                    while Instant::now() < until {
                        let job_id = uuid::Uuid::now_v7().to_string();
                        let request_id = uuid::Uuid::now_v7().to_string();
                        let payload = envelope(&job_id, &request_id);
                        let mut headers = HeaderMap::new();
                        headers.insert("Siger-User-Id", "bench");
                        headers.insert("Siger-Request-Id", request_id.as_str());
                        let msg = PublishMessage::build().payload(payload).headers(headers).message_id(&job_id);
                        let t = Instant::now();
                        let ok = match js.send_publish(subject.clone(), msg).await {
                            Ok(ack) => ack.await.is_ok(),
                            Err(_) => false,
                        };
                        record(&totals, &mut lat, t, measure_from, until, ok);
                    }
                    lat
                }));
            }
        }
        Mode::Http { url, secret, issuer, role } => {
            mode_name = "http";
            let (addr, path) = split_url(url)?;
            let token = mint(secret, issuer.as_deref(), role)?;
            let request = Bytes::from(format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{JOB}",
                JOB.len()
            ));
            for _ in 0..cli.concurrency {
                let (addr, request, totals) = (addr.clone(), request.clone(), totals.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(1 << 16);
                    let mut conn: Option<Conn> = None;
                    while Instant::now() < until {
                        let t = Instant::now();
                        if conn.is_none() {
                            conn = TcpStream::connect(addr.as_str()).await.ok().map(Conn::new);
                        }
                        let ok = match conn.as_mut() {
                            Some(c) => match c.exchange(&request).await {
                                Ok((status, keep)) => {
                                    if !keep {
                                        conn = None;
                                    }
                                    status == 202
                                }
                                Err(_) => {
                                    conn = None;
                                    false
                                }
                            },
                            None => false,
                        };
                        record(&totals, &mut lat, t, measure_from, until, ok);
                        if !ok {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    lat
                }));
            }
        }
    }
    let mut all: Vec<u32> = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i] as f64 / 1000.0
    };
    let ok = totals.ok.load(Ordering::Relaxed);
    let out = serde_json::json!({
        "mode": mode_name,
        "concurrency": cli.concurrency,
        "seconds": cli.duration,
        "ok": ok,
        "errors": totals.errors.load(Ordering::Relaxed),
        "rate_per_s": (ok as f64 / cli.duration as f64).round(),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        "total_ok": totals.all.load(Ordering::Relaxed),
        "client_cpu_s": cpu_seconds(),
    });
    println!("{out}");
    Ok(())
}

fn record(totals: &Totals, lat: &mut Vec<u32>, t: Instant, from: Instant, until: Instant, ok: bool) {
    let done = Instant::now();
    if ok {
        totals.all.fetch_add(1, Ordering::Relaxed);
    }
    if t < from || done > until {
        return;
    }
    if ok {
        totals.ok.fetch_add(1, Ordering::Relaxed);
        lat.push(done.duration_since(t).as_micros().min(u32::MAX as u128) as u32);
    } else {
        totals.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// The same envelope shape the gateway publishes.
fn envelope(job_id: &str, request_id: &str) -> Bytes {
    let submitted_at = siger::observability::logger::now_rfc3339();
    let job: &serde_json::value::RawValue = serde_json::from_str(JOB).unwrap_or_else(|_| unreachable!());
    let env = siger::jobs::request::Envelope { job_id, user_id: "bench", submitted_at: &submitted_at, request_id, job };
    env.to_bytes()
}

fn mint(secret: &str, issuer: Option<&str>, role: &str) -> Result<String, Box<dyn std::error::Error>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = serde_json::json!({"sub": "bench", "roles": [role], "iat": now, "exp": now + 3600});
    if let Some(iss) = issuer {
        claims["iss"] = iss.into();
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)?)
}

fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((addr.to_string(), format!("/{path}")))
}

/// One keep-alive HTTP/1.1 connection with a reusable read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Conn { stream, buf: Vec::with_capacity(4096) }
    }

    /// Send one request, read one response; returns (status, keep-alive).
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<(u16, bool)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad response");
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad())?.to_ascii_lowercase();
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(bad)?;
        let keep = !head.lines().any(|l| l.starts_with("connection:") && l.contains("close"));
        let mut have = self.buf.len() - head_end;
        while have < len {
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            have += n;
        }
        Ok((status, keep))
    }
}
