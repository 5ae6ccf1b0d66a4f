//! The process logger: `log` records filtered by `RUST_LOG` (default `info`), written as one JSON
//! object per line to stderr (which Pingora redirects to `server.error_log` when daemonised).
//!
//! Requests must not pay a write syscall each: lines are appended to a shared buffer that a
//! writer thread flushes every 100 ms or at 64 KiB. The buffer is bounded (8 MiB); if stderr
//! stalls, further lines are dropped and counted rather than blocking the proxy. Until
//! [`start_writer`] runs (from a Pingora service, i.e. after the daemon fork, which would lose a
//! thread started earlier) lines are written synchronously. [`flush`] drains it at exit.
//!
//! Pingora logs an error line for every client connection that breaks mid-request: under a
//! slowloris attack or a connection flood that is thousands of lines a second, a disk-filling
//! attack of its own. Pingora's warnings and errors therefore pass at most
//! [`PINGORA_LINES_PER_SECOND`] a second; the rest are counted, and the count is logged with
//! Pingora's first line of a later second. Siger's own lines are not limited.

use log::{Level, Log, Metadata, Record};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

const FLUSH_AT: usize = 64 << 10;
const MAX_BUFFER: usize = 8 << 20;
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The room the buffer starts with after each flush: the writer hands the appenders an emptied
/// buffer of this size in exchange for the full one, so the lines between two flushes (usually
/// up to a little over `FLUSH_AT`) are appended without growing it again (growing from empty,
/// doubling to 64 KiB, copied ≈ 400 bytes a request at the access log's rate).
const KEPT_CAPACITY: usize = 2 * FLUSH_AT;
/// Pingora's warning and error lines written per second at most (see the module docs).
const PINGORA_LINES_PER_SECOND: u64 = 50;

/// Log target that `RUST_LOG` uses to switch access-log lines (written by `access`) on or off.
pub const ACCESS_TARGET: &str = "access";

struct Sink {
    buffer: Mutex<Vec<u8>>,
    wake: Condvar,
    dropped: AtomicU64,
    buffered: AtomicBool,
}

static SINK: Sink = Sink {
    buffer: Mutex::new(Vec::new()),
    wake: Condvar::new(),
    dropped: AtomicU64::new(0),
    buffered: AtomicBool::new(false),
};
static LOGGER: OnceLock<JsonLogger> = OnceLock::new();
/// Whether `RUST_LOG` lets access lines through; decided once at start-up.
static ACCESS_ENABLED: AtomicBool = AtomicBool::new(true);

struct JsonLogger {
    filter: env_filter::Filter,
}

/// The per-second allowance of Pingora's warning and error lines.
struct Flood {
    /// The Unix second the counts are for.
    second: AtomicU64,
    passed: AtomicU64,
    suppressed: AtomicU64,
}

static PINGORA_FLOOD: Flood = Flood::new();

impl Flood {
    const fn new() -> Self {
        Flood { second: AtomicU64::new(0), passed: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// Whether a line logged in Unix second `now` may be written, and how many lines were
    /// suppressed in the seconds before it (reported by the first line of a new second).
    fn admit(&self, now: u64, per_second: u64) -> (bool, u64) {
        let mut earlier = 0;
        if self.second.swap(now, Ordering::AcqRel) != now {
            self.passed.store(0, Ordering::Relaxed);
            earlier = self.suppressed.swap(0, Ordering::AcqRel);
        }
        if self.passed.fetch_add(1, Ordering::Relaxed) < per_second {
            (true, earlier)
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            (false, earlier)
        }
    }
}

/// Lines dropped because stderr could not keep up.
pub fn dropped_lines() -> u64 {
    SINK.dropped.load(Ordering::Relaxed)
}

/// Install the logger (idempotent). `RUST_LOG` overrides the default level `info`.
pub fn init() {
    let logger = LOGGER.get_or_init(|| {
        let mut builder = env_filter::Builder::new();
        match std::env::var("RUST_LOG") {
            Ok(spec) if !spec.trim().is_empty() => builder.parse(&spec),
            // pingora_cache::meta's only warning asks for a header-compression dictionary, a
            // disk-storage optimisation our in-memory cache has no use for.
            _ => builder.parse("info,pingora_cache::meta=error"),
        };
        JsonLogger { filter: builder.build() }
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(logger.filter.filter());
    }
    let access = log::Metadata::builder().level(log::Level::Info).target(ACCESS_TARGET).build();
    ACCESS_ENABLED.store(logger.filter.enabled(&access), Ordering::Relaxed);
}

/// Switch to buffered writing with a writer thread. Call after the daemon fork; idempotent.
pub fn start_writer() {
    if SINK.buffered.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new().name("siger-log".into()).spawn(|| {
        let mut spare = Vec::with_capacity(KEPT_CAPACITY);
        loop {
            let chunk = {
                let Ok(mut buf) = SINK.buffer.lock() else { return };
                if buf.len() < FLUSH_AT {
                    buf = match SINK.wake.wait_timeout(buf, FLUSH_EVERY) {
                        Ok((b, _)) => b,
                        Err(_) => return,
                    };
                }
                if buf.is_empty() {
                    continue;
                }
                std::mem::replace(&mut *buf, spare)
            };
            let _ = std::io::stderr().lock().write_all(&chunk);
            spare = emptied(chunk);
        }
    });
    if spawned.is_err() {
        SINK.buffered.store(false, Ordering::Release);
    }
}

/// Whether access-log lines are wanted (`RUST_LOG` may turn the `access` target off).
pub fn access_enabled() -> bool {
    ACCESS_ENABLED.load(Ordering::Relaxed)
}

/// Queue one complete line (ending in `\n`) for stderr.
pub fn append_line(line: &[u8]) {
    append(line);
}

fn append(line: &[u8]) {
    if !SINK.buffered.load(Ordering::Acquire) {
        let _ = std::io::stderr().lock().write_all(line);
        return;
    }
    let Ok(mut buf) = SINK.buffer.lock() else { return };
    if buf.len() + line.len() > MAX_BUFFER {
        SINK.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    buf.extend_from_slice(line);
    if buf.len() >= FLUSH_AT {
        SINK.wake.notify_one();
    }
}

/// A written chunk made the next spare buffer: emptied, and its room kept up to
/// [`KEPT_CAPACITY`] (a burst that grew it towards `MAX_BUFFER` does not keep that much).
fn emptied(mut chunk: Vec<u8>) -> Vec<u8> {
    chunk.clear();
    if chunk.capacity() > KEPT_CAPACITY {
        chunk = Vec::with_capacity(KEPT_CAPACITY);
    }
    chunk
}

/// Write everything buffered to stderr now (call before the process exits).
pub fn flush() {
    let chunk = match SINK.buffer.lock() {
        Ok(mut buf) => std::mem::take(&mut *buf),
        Err(_) => return,
    };
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(&chunk);
    let _ = err.flush();
}

/// Current UTC time as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339_now(&mut out);
    out
}

/// Append the current UTC time as RFC 3339 with milliseconds (`2026-11-22T17:05:54.601Z`).
pub fn push_rfc3339_now(out: &mut String) {
    thread_local! {
        // The formatted second ("2026-11-22T17:05:54") only changes once a second.
        static SECOND: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let now = time::OffsetDateTime::now_utc();
    let unix = now.unix_timestamp();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != unix {
            let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
            cached.1 = now.format(&fmt).unwrap_or_default();
            cached.0 = unix;
        }
        out.push_str(&cached.1);
        let ms = now.millisecond();
        out.push('.');
        out.push(char::from(b'0' + (ms / 100) as u8));
        out.push(char::from(b'0' + (ms / 10 % 10) as u8));
        out.push(char::from(b'0' + (ms % 10) as u8));
        out.push('Z');
    })
}

/// Write one JSON log line.
fn write_line(level: &str, target: &str, msg: &str) {
    let mut line = serde_json::to_vec(&LogLine { time: now_rfc3339(), level, target, msg }).unwrap_or_default();
    line.push(b'\n');
    append(&line);
}

#[derive(serde::Serialize)]
struct LogLine<'a> {
    time: String,
    level: &'a str,
    target: &'a str,
    msg: &'a str,
}

impl Log for JsonLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        if record.level() <= Level::Warn && record.target().starts_with("pingora") {
            let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
            let (pass, suppressed) = PINGORA_FLOOD.admit(now, PINGORA_LINES_PER_SECOND);
            if suppressed > 0 {
                let msg = format!(
                    "{suppressed} warning and error lines from Pingora suppressed (more than \
                     {PINGORA_LINES_PER_SECOND} a second; typically clients breaking connections mid-request)"
                );
                write_line("warn", module_path!(), &msg);
            }
            if !pass {
                return;
            }
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        write_line(level, record.target(), &record.args().to_string());
    }

    fn flush(&self) {
        flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_chunk_comes_back_empty_with_its_room_kept_up_to_a_bound() {
        let mut chunk = Vec::with_capacity(FLUSH_AT + 300);
        chunk.extend_from_slice(&[b'x'; 1000]);
        let spare = emptied(chunk);
        assert!(spare.is_empty() && spare.capacity() >= FLUSH_AT + 300);
        let burst = emptied(vec![b'x'; 4 * KEPT_CAPACITY]);
        assert!(burst.is_empty() && burst.capacity() == KEPT_CAPACITY);
    }

    #[test]
    fn a_flood_passes_its_allowance_and_reports_the_rest_the_next_second() {
        let flood = Flood::new();
        let first: Vec<(bool, u64)> = (0..60).map(|_| flood.admit(100, 50)).collect();
        assert!(first[..50].iter().all(|&(pass, earlier)| pass && earlier == 0));
        assert!(first[50..].iter().all(|&(pass, _)| !pass));
        assert_eq!(flood.admit(101, 50), (true, 10), "the next second reports the 10 suppressed");
        assert_eq!(flood.admit(101, 50), (true, 0));
        assert_eq!(flood.admit(105, 50), (true, 0), "nothing suppressed, nothing reported");
    }
}
