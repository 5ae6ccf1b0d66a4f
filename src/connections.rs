//! Client connections (ARCHITECTURE.md §7.8): how many the process holds, in all and per
//! client IP; which idle or stalled ones give way at the bound; and the deadlines of each TLS
//! handshake, request head and body, and of each write of the answer.
//!
//! Pingora reads a request head and body with a timeout per read, so a client that trickles a
//! byte at a time holds its connection until the head reaches Pingora's 1 MiB limit, and a
//! body has no overall deadline; it writes an answer without any, so a client that stops
//! reading holds its connection, and the backend connection under it, for ever. Every client
//! stream is therefore wrapped in a [`Guarded`] stream that knows the phase of the request in
//! progress: the first byte of a head starts the head clock, the proxy's hooks move the phase
//! on ([`head_read`], [`body_read`], [`upgraded`]), a read that would wait past the phase's
//! deadline ends the request instead, and a write that waits `limits.send_timeout` without
//! progress ends the connection. The hooks find their connection through a task-local: HTTP/1
//! requests run in their connection's task. Each HTTP/2 stream runs in a task of its own with
//! its own body clock ([`serve_h2_stream`]) and Pingora's write timeout; h2 connections are
//! bounded by their stream settings and idle timeout. A TLS connection is admitted before its
//! handshake, which runs under the deadlines of a head ([`Ticket::handshake`]).

use crate::config::Limits;
use crate::errors::GatewayError;
use crate::forwarding;
use bytes::BytesMut;
use futures::task::AtomicWaker;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType, ALPN,
};
use prometheus::IntCounter;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

tokio::task_local! {
    static CONNECTION: Arc<Conn>;
}

/// Where a connection's current request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Waiting for the first byte of a request head (idle keep-alive, or just accepted).
    Idle = 0,
    /// A head has begun and is not read whole yet: `header_timeout` runs.
    Head = 1,
    /// The head is read; its body is not: `body_timeout` runs.
    Body = 2,
    /// Head and body are read: no deadline of ours, and bytes that arrive now are the next
    /// request's (pipelined), kept for it rather than read by the session being answered.
    Done = 3,
    /// An HTTP/2 or upgraded (WebSocket) connection: not clocked here, nothing kept back.
    Untimed = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Phase::Idle,
            1 => Phase::Head,
            2 => Phase::Body,
            3 => Phase::Done,
            _ => Phase::Untimed,
        }
    }
}

/// Milliseconds since [`epoch`]: a clock that fits an atomic.
fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// An hour before the first call where the clock allows it, so "a second ago" never
/// saturates at zero.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    })
}

/// What one connection shares between its stream, the proxy's hooks and the eviction of idle
/// connections at the bound.
#[derive(Debug)]
pub(crate) struct Conn {
    phase: AtomicU8,
    /// When the phase began (`now_ms`): idle since, head started, body started.
    since_ms: AtomicU64,
    /// Chosen to close at the bound: the next idle read ends the connection.
    evict: AtomicBool,
    /// The task waiting on this connection (an idle or slow-head read, an HTTP/2 stream's body
    /// deadline), woken when it is evicted or enters its body phase.
    waker: AtomicWaker,
    /// The request's body missed `body_timeout` (the proxy answers 408).
    body_timed_out: AtomicBool,
    /// When a write to the client began to wait (`now_ms`, 0: not waiting): a client that has
    /// stopped reading, closed at `send_timeout` and evictable at the bound.
    write_stalled_since: AtomicU64,
}

impl Conn {
    fn new(phase: Phase) -> Self {
        Conn {
            phase: AtomicU8::new(phase as u8),
            since_ms: AtomicU64::new(now_ms()),
            evict: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            body_timed_out: AtomicBool::new(false),
            write_stalled_since: AtomicU64::new(0),
        }
    }

    /// Whether the connection was chosen to close at the bound; the task is woken when it is.
    fn evicted(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.evict.load(Ordering::Relaxed)
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    fn enter(&self, phase: Phase) {
        if self.phase() != Phase::Untimed {
            self.since_ms.store(now_ms(), Ordering::Relaxed);
            self.phase.store(phase as u8, Ordering::Relaxed);
            if matches!(phase, Phase::Body | Phase::Untimed) {
                // An HTTP/2 stream's deadline watch waits for its body phase (see
                // `serve_h2_stream`); a read holding bytes back waits for an upgrade.
                self.waker.wake();
            }
        }
    }

    /// Since when the connection has waited for its client, if it has: for a request (idle
    /// keep-alive), for the rest of a head, or for a write the client does not take.
    fn waiting_since(&self) -> Option<u64> {
        if self.evict.load(Ordering::Relaxed) {
            return None;
        }
        match self.write_stalled_since.load(Ordering::Relaxed) {
            0 => matches!(self.phase(), Phase::Idle | Phase::Head).then(|| self.since_ms.load(Ordering::Relaxed)),
            stalled => Some(stalled),
        }
    }
}

/// A new HTTP/1 request is about to be read on this task's connection.
pub(crate) fn request_starting() {
    let _ = CONNECTION.try_with(|c| {
        c.body_timed_out.store(false, Ordering::Relaxed);
        c.enter(Phase::Idle)
    });
}

/// The request head is read; `has_body` when the session has a body to read (HTTP/1:
/// `Content-Length` > 0 or chunked; HTTP/2: HEADERS without END_STREAM).
pub(crate) fn head_read(has_body: bool) {
    let _ = CONNECTION.try_with(|c| c.enter(if has_body { Phase::Body } else { Phase::Done }));
}

/// The request body is read whole: its deadline no longer applies.
pub(crate) fn body_read() {
    let _ = CONNECTION.try_with(|c| {
        if c.phase() == Phase::Body {
            c.enter(Phase::Done)
        }
    });
}

/// The answer switches the connection to another protocol (`101 Switching Protocols`): what the
/// client sends from now on is that protocol's, read as it comes, without deadlines.
pub(crate) fn upgraded() {
    let _ = CONNECTION.try_with(|c| c.enter(Phase::Untimed));
}

/// Whether this task's request failed because its body missed `body_timeout`.
pub(crate) fn body_timed_out() -> bool {
    CONNECTION.try_with(|c| c.body_timed_out.load(Ordering::Relaxed)).unwrap_or(false)
}

/// Run `fut` (the connection's HTTP processing) with its connection known to the hooks.
///
/// Not an `async fn`: one would hold `fut` twice (as its argument and inside the scope it
/// awaits), and this future lives as long as the connection.
pub(crate) fn serve<F: Future>(conn: Arc<Conn>, fut: F) -> impl Future<Output = F::Output> {
    CONNECTION.scope(conn, fut)
}

/// Serve one HTTP/2 stream with a request clock of its own: its body must arrive within
/// `body_timeout` of its head, or the stream is reset (its future dropped: h2 sends
/// RST_STREAM), counted as a body timeout. Heads are whole when a stream starts (the h2
/// connection bounds the header list). `None` when the stream was cut.
pub(crate) async fn serve_h2_stream<F: Future>(connections: &Connections, fut: F) -> Option<F::Output> {
    let conn = Arc::new(Conn::new(Phase::Head));
    let overdue = body_overdue(connections, &conn);
    let served = CONNECTION.scope(conn.clone(), async {
        tokio::select! {
            biased;
            out = fut => Some(out),
            _ = overdue => None,
        }
    });
    let out = served.await;
    if out.is_none() {
        connections.metrics.body_timeouts.inc();
    }
    out
}

/// Ready when `conn` has been in its body phase past `body_timeout`.
async fn body_overdue(connections: &Connections, conn: &Conn) {
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    std::future::poll_fn(|cx| {
        conn.waker.register(cx.waker());
        if conn.phase() != Phase::Body {
            return Poll::Pending;
        }
        let deadline = tokio::time::Instant::from_std(connections.deadline(conn, Phase::Body));
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    })
    .await
}

/// Counters of what the bounds and deadlines did.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionMetrics {
    pub(crate) open: prometheus::IntGauge,
    pub(crate) refused_total: IntCounter,
    pub(crate) refused_per_ip: IntCounter,
    pub(crate) evicted: IntCounter,
    pub(crate) header_timeouts: IntCounter,
    pub(crate) body_timeouts: IntCounter,
    /// Connections closed because a write to the client made no progress for `send_timeout`.
    pub(crate) send_timeouts: IntCounter,
    /// Heads answered 431 before a session: past `limits.max_header_bytes` while arriving, or
    /// with more header fields than Pingora parses.
    pub(crate) heads_too_large: IntCounter,
}

/// Why a new connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `limits.max_connections` reached and no idle connection to close.
    Total,
    /// `limits.max_connections_per_ip` reached for this client.
    PerIp,
}

/// The process's client connections and the limits on them (reloadable).
#[derive(Debug)]
pub(crate) struct Connections {
    max_total: AtomicUsize,
    /// 0: unbounded.
    max_per_ip: AtomicUsize,
    header_timeout_ms: AtomicU64,
    body_timeout_ms: AtomicU64,
    send_timeout_ms: AtomicU64,
    max_header_bytes: AtomicUsize,
    open: AtomicUsize,
    /// `now_ms` before which no connection can be evicted (the last scan found none).
    no_eviction_before: AtomicU64,
    next_id: AtomicU64,
    /// Every open connection, for finding the oldest idle ones at the bound.
    registry: Mutex<Registry>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    metrics: ConnectionMetrics,
}

impl Connections {
    pub(crate) fn new(limits: &Limits, metrics: ConnectionMetrics) -> Arc<Self> {
        let connections = Connections {
            max_total: AtomicUsize::new(0),
            max_per_ip: AtomicUsize::new(0),
            header_timeout_ms: AtomicU64::new(0),
            body_timeout_ms: AtomicU64::new(0),
            send_timeout_ms: AtomicU64::new(0),
            max_header_bytes: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            no_eviction_before: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            registry: Mutex::new(Registry::default()),
            per_ip: Mutex::new(HashMap::new()),
            metrics,
        };
        connections.apply(limits);
        Arc::new(connections)
    }

    /// Take the limits of a (re)loaded configuration; open connections keep theirs until
    /// their next request.
    pub(crate) fn apply(&self, limits: &Limits) {
        self.max_total.store(limits.max_connections, Ordering::Relaxed);
        self.max_per_ip.store(limits.max_connections_per_ip.unwrap_or(0), Ordering::Relaxed);
        self.header_timeout_ms.store(limits.header_timeout.as_millis() as u64, Ordering::Relaxed);
        self.body_timeout_ms.store(limits.body_timeout.as_millis() as u64, Ordering::Relaxed);
        self.send_timeout_ms.store(limits.send_timeout.as_millis() as u64, Ordering::Relaxed);
        self.max_header_bytes.store(limits.max_header_bytes, Ordering::Relaxed);
    }

    /// `limits.send_timeout`: how long a write to a client may wait without progress (for
    /// HTTP/2 streams, Pingora's write timeout).
    pub(crate) fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms.load(Ordering::Relaxed))
    }

    /// Whether a connection just accepted would be refused at the total bound: the process is
    /// at `max_connections` and no waiting connection can be evicted yet (the last scan found
    /// none). Asked before Pingora sets the connection up, so a flood of new connections at
    /// the bound costs an accept and a close each; counted as a refusal. [`Self::admit`]
    /// decides the rest.
    pub(crate) fn refuse_early(&self) -> bool {
        let full = self.open.load(Ordering::Acquire) >= self.max_total.load(Ordering::Relaxed);
        let refused = full && now_ms() < self.no_eviction_before.load(Ordering::Relaxed);
        if refused {
            self.metrics.refused_total.inc();
        }
        refused
    }

    /// Admit a new connection from `client` (`None`: not bounded per IP, e.g. a trusted
    /// proxy). At the bound the oldest idle connections are closed to make room; without
    /// idle ones the new connection is refused. `untimed`: HTTP/2, no request clock.
    pub(crate) fn admit(self: &Arc<Self>, client: Option<IpAddr>, untimed: bool) -> Result<Ticket, Refusal> {
        let per_ip = self.max_per_ip.load(Ordering::Relaxed);
        let block = client.filter(|_| per_ip > 0).map(forwarding::client_block);
        if let Some(block) = block {
            let mut counts = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = counts.entry(block).or_insert(0);
            if *n >= per_ip {
                drop(counts);
                self.metrics.refused_per_ip.inc();
                return Err(Refusal::PerIp);
            }
            *n += 1;
        }
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        if open > self.max_total.load(Ordering::Relaxed) && !self.evict_idle() {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.release_ip(block);
            self.metrics.refused_total.inc();
            return Err(Refusal::Total);
        }
        self.metrics.open.inc();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(if untimed { Phase::Untimed } else { Phase::Idle }));
        self.registry.lock().unwrap_or_else(|p| p.into_inner()).open.insert(id, conn.clone());
        Ok(Ticket { id, block, conn, connections: self.clone() })
    }

    /// Close the connection that has waited longest for its client, if it has waited at least
    /// [`EVICTABLE_AFTER`]: an idle keep-alive connection, a head (or TLS handshake) still
    /// arriving (a slowloris otherwise holds its place for up to `header_timeout`), or an
    /// answer the client does not read (it would hold its place, and a backend connection, for
    /// up to `send_timeout`). A connection serving a request, or between requests for less than
    /// that (an active client), is never chosen.
    /// One per new connection, so refusals cannot cascade. False when none can go; then no
    /// scan is made again before one could.
    fn evict_idle(&self) -> bool {
        let now = now_ms();
        if now < self.no_eviction_before.load(Ordering::Relaxed) {
            return false;
        }
        let waited_enough = now.saturating_sub(EVICTABLE_AFTER.as_millis() as u64);
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        match registry.oldest_waiting() {
            Some((since, conn)) if since <= waited_enough => {
                conn.evict.store(true, Ordering::Relaxed);
                conn.waker.wake();
                self.metrics.evicted.inc();
                true
            }
            // Nothing qualifies before the oldest waiting one (or any that starts waiting now)
            // has waited long enough.
            other => {
                let since = other.map_or(now, |(since, _)| since);
                self.no_eviction_before.store(since + EVICTABLE_AFTER.as_millis() as u64, Ordering::Relaxed);
                false
            }
        }
    }

    fn release_ip(&self, block: Option<IpAddr>) {
        if let Some(block) = block {
            let mut counts = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = counts.get_mut(&block) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&block);
                }
            }
        }
    }

    /// `limits.max_header_bytes`.
    fn max_header_bytes(&self) -> usize {
        self.max_header_bytes.load(Ordering::Relaxed)
    }

    /// When a write that has waited since `stalled_ms` is given up.
    fn send_deadline(&self, stalled_ms: u64) -> Instant {
        epoch() + Duration::from_millis(stalled_ms + self.send_timeout_ms.load(Ordering::Relaxed))
    }

    fn deadline(&self, conn: &Conn, phase: Phase) -> Instant {
        let timeout = match phase {
            Phase::Head => self.header_timeout_ms.load(Ordering::Relaxed),
            _ => self.body_timeout_ms.load(Ordering::Relaxed),
        };
        epoch() + Duration::from_millis(conn.since_ms.load(Ordering::Relaxed) + timeout)
    }
}

/// The open connections, and the oldest of those waiting for a request (or the rest of its
/// head) as last found, so that a run of new connections at the bound does not scan every
/// open one each time.
#[derive(Debug, Default)]
struct Registry {
    open: HashMap<u64, Arc<Conn>>,
    /// Up to [`EVICTION_BATCH`] waiting connections (id, when their wait began), the oldest
    /// last. No connection outside it waits longer than the newest in it: one that was not
    /// waiting at the scan, or whose wait began again since, waits from a later time.
    oldest: Vec<(u64, u64)>,
}

impl Registry {
    /// The open connection that has waited longest and is not chosen already, with the time
    /// it began waiting; it stays first until it is evicted, served or closed.
    fn oldest_waiting(&mut self) -> Option<(u64, Arc<Conn>)> {
        for rescanned in [false, true] {
            while let Some(&(id, since)) = self.oldest.last() {
                // Closed, served or waiting afresh since it was found: no longer its turn.
                if let Some(conn) = self.open.get(&id).filter(|c| c.waiting_since() == Some(since)) {
                    return Some((since, conn.clone()));
                }
                self.oldest.pop();
            }
            if rescanned {
                break;
            }
            let mut waiting: Vec<(u64, u64)> =
                self.open.iter().filter_map(|(id, c)| c.waiting_since().map(|since| (*id, since))).collect();
            if waiting.len() > EVICTION_BATCH {
                waiting.select_nth_unstable_by_key(EVICTION_BATCH, |&(_, since)| since);
                waiting.truncate(EVICTION_BATCH);
            }
            waiting.sort_unstable_by_key(|&(_, since)| std::cmp::Reverse(since));
            self.oldest = waiting;
        }
        None
    }
}

/// How many of the oldest waiting connections one scan of the registry remembers.
const EVICTION_BATCH: usize = 64;

/// An admitted connection's place in the counts, given back when the connection ends.
#[derive(Debug)]
pub(crate) struct Ticket {
    id: u64,
    block: Option<IpAddr>,
    conn: Arc<Conn>,
    connections: Arc<Connections>,
}

/// Why a TLS handshake on an admitted connection did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeCut {
    /// Nothing arrived within `idle_timeout`, or the handshake took longer than
    /// `header_timeout` from its first byte.
    #[error("timed out")]
    TimedOut,
    /// Closed to make room at the bound.
    #[error("closed at max_connections")]
    Evicted,
    /// The handshake failed (the client left, spoke something else, or was refused).
    #[error("{0}")]
    Failed(Box<pingora::Error>),
}

impl Ticket {
    /// Run a TLS `handshake` on this admitted connection's `stream` under the deadlines of a
    /// request head: its first bytes must come within `idle` (as a request's on a new plain
    /// connection), the rest within `header_timeout` of them, and meanwhile it may be closed at
    /// the bound like a head still arriving. Pingora would allow a handshake 60 s, uncounted.
    /// The connection then waits for its first request (or is an untimed HTTP/2 one).
    pub(crate) async fn handshake<F>(
        &self,
        mut stream: Stream,
        idle: Duration,
        handshake: impl FnOnce(Stream) -> F,
    ) -> Result<Stream, HandshakeCut>
    where
        F: Future<Output = pingora::Result<Stream>>,
    {
        let conn = &self.conn;
        let evicted = || {
            std::future::poll_fn(|cx| match conn.evicted(cx) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            })
        };
        // A read of zero bytes waits for the first bytes and leaves them in the read buffer.
        let first_bytes = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_read(cx, &mut ReadBuf::new(&mut [])));
        tokio::select! {
            biased;
            _ = first_bytes => {}
            _ = evicted() => return Err(HandshakeCut::Evicted),
            _ = tokio::time::sleep(idle) => return Err(HandshakeCut::TimedOut),
        }
        conn.enter(Phase::Head);
        let deadline = tokio::time::Instant::from_std(self.connections.deadline(conn, Phase::Head));
        let tls = tokio::select! {
            biased;
            done = handshake(stream) => done.map_err(HandshakeCut::Failed)?,
            _ = evicted() => return Err(HandshakeCut::Evicted),
            _ = tokio::time::sleep_until(deadline) => return Err(HandshakeCut::TimedOut),
        };
        conn.enter(if tls.selected_alpn_proto() == Some(ALPN::H2) { Phase::Untimed } else { Phase::Idle });
        Ok(tls)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let c = &self.connections;
        c.registry.lock().unwrap_or_else(|p| p.into_inner()).open.remove(&self.id);
        c.release_ip(self.block);
        c.open.fetch_sub(1, Ordering::AcqRel);
        c.metrics.open.dec();
    }
}

/// At the bound, a connection may be closed for a new one once it has waited this long for a
/// request (idle keep-alive), for the rest of its head (a legitimate head arrives in
/// milliseconds) or for its client to take a write. Active clients are between requests for
/// far less.
const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

/// How long, and for how many bytes, a connection answered early is read on before it closes
/// ([`Guarded::linger`]).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// The HTTP/2 client preface (RFC 9113 §3.4), which opens an h2c connection.
pub(crate) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Header fields Pingora parses in a request head (its `MAX_HEADERS`); a head with more gets
/// Pingora's bare 400, so the gate answers it first.
const MAX_HEADER_FIELDS: usize = 256;

/// Drop the empty lines before a request line ("\r\n" or "\n"; RFC 9112 §2.2 lets a server
/// skip them, as httparse does), so that they cannot pass for the end of the head. A lone
/// "\r" is kept until what follows it arrives. Returns how many bytes were dropped.
pub(crate) fn skip_empty_lines(head: &mut BytesMut) -> usize {
    use bytes::Buf;
    let mut skipped = 0;
    loop {
        let n = match head.first() {
            Some(b'\n') => 1,
            Some(b'\r') if head.get(1) == Some(&b'\n') => 2,
            _ => return skipped,
        };
        head.advance(n);
        skipped += n;
    }
}

/// Where the head that starts `head` (its request line first: see [`skip_empty_lines`]) ends,
/// just past its empty line ("\n\n" or "\n\r\n", as httparse ends one), if it holds it. The
/// first `looked_at` bytes were looked at already and hold no end.
pub(crate) fn head_end(head: &[u8], looked_at: usize) -> Option<usize> {
    // Two bytes back, so an end split across reads is found.
    let from = looked_at.saturating_sub(2).min(head.len());
    memchr::memchr_iter(b'\n', &head[from..]).find_map(|at| {
        let after = &head[from + at + 1..];
        if after.starts_with(b"\n") {
            Some(from + at + 2)
        } else if after.starts_with(b"\r\n") {
            Some(from + at + 3)
        } else {
            None
        }
    })
}

/// Whether a whole head has more header fields than Pingora parses: every line but the request
/// line and the empty one is a field (httparse refuses folded lines), and a field line takes at
/// least three bytes, so shorter heads are not counted.
fn too_many_fields(head: &[u8]) -> bool {
    head.len() > MAX_HEADER_FIELDS * 3 && memchr::memchr_iter(b'\n', head).count() > MAX_HEADER_FIELDS + 2
}

/// The head buffer's first size: Pingora's own for a request head.
const HEAD_BUFFER: usize = 4096;

/// The bytes of an answer the stream writes itself, before any Pingora session exists for the
/// request (a head cut at `header_timeout` or past `max_header_bytes`).
fn early_answer(error: GatewayError) -> Vec<u8> {
    error.answer(&forwarding::new_request_id()).to_http1()
}

/// A client stream under its connection's bounds and deadlines (see the module docs).
pub(crate) struct Guarded {
    inner: Stream,
    ticket: Ticket,
    /// The deadline timer, made the first time a read has to wait in a clocked phase (a
    /// request whose head and body arrive at once never needs one).
    timer: Option<Pin<Box<Sleep>>>,
    /// The `send_timeout` timer, made the first time a write has to wait.
    send_timer: Option<Pin<Box<Sleep>>>,
    /// A write is waiting (the client is not reading); `Conn::write_stalled_since` says since when.
    write_stalled: bool,
    /// Something was written since the current head began: an answer of the stream's own
    /// would be spliced into it, so a head refused then only fails the read.
    wrote: bool,
    /// An answer written by the stream itself (a 408 at the header deadline, a 431 for a head
    /// Pingora reads on past `max_header_bytes`), how much of it is out and whether it is the
    /// 408; the read fails once it is out.
    early_answer: Option<(Vec<u8>, usize, bool)>,
    /// Bytes read from the client but not consumed yet, served before the socket's: what
    /// follows the head Pingora was given (a body, a pipelined request), a request that
    /// arrived while the previous one was answered, or an h2c preface.
    unread: Option<BytesMut>,
    /// The length of a head the gate took for whole, and what Pingora read on from it: should
    /// its parser want more, that is held to `max_header_bytes` too (`None` while the gate
    /// reads the head).
    head_read_on: Option<usize>,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").field("inner", &self.inner).field("phase", &self.ticket.conn.phase()).finish()
    }
}

impl Guarded {
    pub(crate) fn new(inner: Stream, ticket: Ticket) -> Self {
        Guarded {
            inner,
            ticket,
            timer: None,
            send_timer: None,
            write_stalled: false,
            wrote: false,
            early_answer: None,
            unread: None,
            head_read_on: None,
        }
    }

    /// The connection's shared state (for [`serve`]).
    pub(crate) fn conn(&self) -> Arc<Conn> {
        self.ticket.conn.clone()
    }

    /// Put `bytes` back before anything not yet read (an h2c preface, for Pingora's HTTP/2).
    pub(crate) fn unread(&mut self, mut bytes: BytesMut) {
        if let Some(rest) = self.unread.take() {
            bytes.extend_from_slice(&rest);
        }
        if !bytes.is_empty() {
            self.unread = Some(bytes);
        }
    }

    /// Serve the connection from now on without clocks or bytes held back (HTTP/2).
    pub(crate) fn untimed(&self) {
        self.ticket.conn.enter(Phase::Untimed);
    }

    /// Wait until the stream can be read (data, end of stream or an error: true) or it is
    /// evicted at the bound with nothing arrived (false), without consuming anything: a read of
    /// zero bytes fills the connection's read buffer (`limits.read_buffer`) and leaves the
    /// bytes there for the request's reader.
    pub(crate) async fn readable(&mut self) -> bool {
        if self.unread.is_some() {
            return true;
        }
        std::future::poll_fn(|cx| {
            let conn = &self.ticket.conn;
            match Pin::new(&mut self.inner).poll_read(cx, &mut ReadBuf::new(&mut [])) {
                Poll::Ready(_) => Poll::Ready(true),
                Poll::Pending if conn.evicted(cx) => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Read a request head into a buffer of its own, up to and including its empty line: the
    /// bytes a new Pingora session is to parse first. What arrived after it (a body, pipelined
    /// requests) stays in the stream for the session's reads and the next head. Empty lines
    /// before the request line are dropped. `None` when the connection is to close instead:
    /// its client left, fell silent for `idle` between two reads or was evicted mid-head, the
    /// head missed `header_timeout` (the 408 is written by [`Self::poll_read`]), grew past
    /// `max_header_bytes` (looked up only for a head that takes more than one read, skipped
    /// empty lines counted) or has more fields than Pingora parses (answered 431 here, so the
    /// buffer is bounded by the limit, not by Pingora's 1 MiB).
    ///
    /// `h2c`: the connection may open with the HTTP/2 preface; the whole preface is then
    /// returned with what followed it.
    ///
    /// A slowloris trickling its head a byte at a time then costs one read per byte, not a pass
    /// through Pingora's parser with a timer each, and an evicted or abandoned head closes
    /// without a Pingora session, error path and log line. A head that arrives whole is read
    /// once, into the buffer Pingora would have allocated for it.
    pub(crate) async fn read_head(&mut self, idle: Duration, h2c: bool) -> Option<BytesMut> {
        use tokio::io::AsyncReadExt;
        self.head_read_on = None;
        self.wrote = false;
        let mut head = match self.unread.take() {
            // A request that arrived while the previous one was answered: its clock runs from now.
            Some(pipelined) => {
                self.ticket.conn.enter(Phase::Head);
                pipelined
            }
            None => BytesMut::with_capacity(HEAD_BUFFER),
        };
        // The timer is registered only if a read has to wait, and is moved on lazily when it
        // fires: a byte that arrives costs a clock read, not a timer.
        let silence = tokio::time::sleep(idle);
        tokio::pin!(silence);
        let mut last_read = tokio::time::Instant::now();
        let mut limit = None;
        let mut skipped = 0;
        let mut looked_at = 0usize;
        loop {
            if !head.is_empty() {
                if head[0] == b'\r' || head[0] == b'\n' {
                    let dropped = skip_empty_lines(&mut head);
                    skipped += dropped;
                    looked_at = looked_at.saturating_sub(dropped);
                }
                if h2c && H2_PREFACE.starts_with(&head[..head.len().min(H2_PREFACE.len())]) {
                    // Not looked at for the end of a head: should the bytes turn out not to
                    // be the preface, the scan starts from the beginning.
                    if head.len() >= H2_PREFACE.len() {
                        return Some(head);
                    }
                } else if let Some(end) = head_end(&head, looked_at) {
                    return self.hand_over(head, end).await;
                } else {
                    let limit = *limit.get_or_insert_with(|| self.ticket.connections.max_header_bytes());
                    // The empty line ending a head is not counted in `max_header_bytes`.
                    if head.len() + skipped > limit + 4 {
                        self.ticket.connections.metrics.heads_too_large.inc();
                        self.answer_and_close(GatewayError::HeadersTooLarge { limit }).await;
                        return None;
                    }
                    looked_at = head.len();
                }
            }
            tokio::select! {
                biased;
                read = self.read_buf(&mut head) => match read {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => last_read = tokio::time::Instant::now(),
                },
                () = &mut silence => {
                    if last_read + idle <= tokio::time::Instant::now() {
                        return None;
                    }
                    silence.as_mut().reset(last_read + idle);
                }
            }
        }
    }

    /// The head `head[..end]` is whole: keep what follows it, and refuse it if it has more
    /// fields than Pingora parses.
    async fn hand_over(&mut self, mut head: BytesMut, end: usize) -> Option<BytesMut> {
        if end < head.len() {
            self.unread = Some(head.split_off(end));
        }
        if too_many_fields(&head) {
            self.ticket.connections.metrics.heads_too_large.inc();
            self.answer_and_close(GatewayError::TooManyHeaderFields { limit: MAX_HEADER_FIELDS }).await;
            return None;
        }
        self.head_read_on = Some(head.len());
        Some(head)
    }

    /// Answer a request cut short before all of it was read (nothing else was written for
    /// it), then close after a lingering read. A client that does not read cannot hold the
    /// connection: the answer fits the socket's buffer, and the linger is bounded.
    async fn answer_and_close(&mut self, error: GatewayError) {
        use tokio::io::AsyncWriteExt;
        if self.write_all(&early_answer(error)).await.is_ok() && self.flush().await.is_ok() {
            self.linger().await;
        }
    }

    /// After an answer that ends a request before all of it was read: end the sending side, then
    /// read and discard what the client still sends, for at most [`LINGER`] and
    /// [`LINGER_BYTES`], so that closing with unread bytes does not reset the connection
    /// before the client has read the answer (nginx's lingering close).
    async fn linger(&mut self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if AsyncWriteExt::shutdown(&mut self.inner).await.is_err() {
            return;
        }
        let mut discard = vec![0u8; 4096];
        let mut left = LINGER_BYTES;
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(n @ 1..) = self.inner.read(&mut discard).await {
                left = left.saturating_sub(n);
                if left == 0 {
                    break;
                }
            }
        })
        .await;
    }

    /// Poll the deadline of `phase`; ready when it passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, phase: Phase) -> Poll<()> {
        let deadline = tokio::time::Instant::from_std(self.ticket.connections.deadline(&self.ticket.conn, phase));
        poll_timer(&mut self.timer, deadline, cx)
    }

    /// Write the answer `refuse` makes, and counts, (nothing else was written for this
    /// request), then fail the read so Pingora closes the connection: a head that missed
    /// `header_timeout` (408), or one Pingora reads on past `max_header_bytes` (431).
    fn poll_early_answer(
        &mut self,
        cx: &mut Context<'_>,
        refuse: fn(&Connections) -> GatewayError,
    ) -> Poll<io::Result<()>> {
        let connections = &self.ticket.connections;
        let wrote = self.wrote;
        let (bytes, written, timed_out) = self.early_answer.get_or_insert_with(|| {
            let error = refuse(connections);
            let timed_out = matches!(error, GatewayError::RequestTimeout);
            // An answer is under way already: the connection just closes.
            (if wrote { Vec::new() } else { early_answer(error) }, 0, timed_out)
        });
        while *written < bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => break,
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(_)) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        let timed_out = *timed_out;
        let _ = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        Poll::Ready(Err(if timed_out {
            io::Error::new(io::ErrorKind::TimedOut, "request head not received within header_timeout")
        } else {
            io::Error::new(io::ErrorKind::InvalidData, "request head past max_header_bytes")
        }))
    }

    /// The head missed `header_timeout`: answer 408 (see [`Self::poll_early_answer`]).
    fn poll_header_timeout(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_early_answer(cx, |c| {
            c.metrics.header_timeouts.inc();
            GatewayError::RequestTimeout
        })
    }

    /// Pingora read on from a head the gate took for whole (its parser disagreed on the end):
    /// count what it reads against `max_header_bytes`; past it, answer 431 (see
    /// [`Self::poll_early_answer`]).
    fn poll_head_read_on(&mut self, cx: &mut Context<'_>, read: usize) -> Poll<io::Result<()>> {
        let Some(head) = &mut self.head_read_on else { return Poll::Ready(Ok(())) };
        *head += read;
        // The empty line ending a head is not counted in `max_header_bytes`.
        if *head <= self.ticket.connections.max_header_bytes() + 4 {
            return Poll::Ready(Ok(()));
        }
        self.poll_early_answer(cx, |c| {
            c.metrics.heads_too_large.inc();
            GatewayError::HeadersTooLarge { limit: c.max_header_bytes() }
        })
    }

    /// A write could not go out: the client is not reading. Pending until `send_timeout` has
    /// passed since the stall began, or the connection was chosen to close at the bound; then
    /// the error that ends the write (and the connection).
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let conn = &self.ticket.conn;
        if !self.write_stalled {
            self.write_stalled = true;
            conn.write_stalled_since.store(now_ms().max(1), Ordering::Relaxed);
        }
        if conn.evicted(cx) {
            return Poll::Ready(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed at max_connections: the client does not read its answer",
            ));
        }
        let connections = &self.ticket.connections;
        let since = conn.write_stalled_since.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::from_std(connections.send_deadline(since));
        ready!(poll_timer(&mut self.send_timer, deadline, cx));
        connections.metrics.send_timeouts.inc();
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "no write progress within send_timeout"))
    }

    /// Run a write operation on the client's stream; one that waits is clocked by
    /// [`Self::poll_stalled`], one that completes ends the stall.
    fn poll_send<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut Stream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Pending => self.poll_stalled(cx).map(Err),
            done => {
                self.wrote = true;
                if self.write_stalled {
                    self.write_stalled = false;
                    self.ticket.conn.write_stalled_since.store(0, Ordering::Relaxed);
                }
                done
            }
        }
    }
}

/// Poll the lazily made `timer` for `deadline` (moved there if it was set for another); ready
/// when it passed.
fn poll_timer(timer: &mut Option<Pin<Box<Sleep>>>, deadline: tokio::time::Instant, cx: &mut Context<'_>) -> Poll<()> {
    let timer = match timer {
        Some(timer) => {
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            timer
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    timer.as_mut().poll(cx)
}

/// Copy from `unread` into `buf` what fits; `unread` is dropped once empty.
fn take_unread(unread: &mut Option<BytesMut>, buf: &mut ReadBuf<'_>) {
    if let Some(bytes) = unread {
        let n = bytes.len().min(buf.remaining());
        buf.put_slice(&bytes.split_to(n));
        if bytes.is_empty() {
            *unread = None;
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.early_answer.is_some() {
            return this.poll_early_answer(cx, |_| GatewayError::Internal);
        }
        let conn = this.ticket.conn.clone();
        let phase = conn.phase();
        let before = buf.filled().len();
        let polled = match this.unread {
            // The next request's first bytes: kept for it (see `Phase::Done`).
            Some(_) if phase == Phase::Done => {
                conn.waker.register(cx.waker());
                return Poll::Pending;
            }
            Some(_) => {
                take_unread(&mut this.unread, buf);
                Poll::Ready(Ok(()))
            }
            None => Pin::new(&mut this.inner).poll_read(cx, buf),
        };
        match polled {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                match phase {
                    Phase::Idle if read > 0 => conn.enter(Phase::Head),
                    Phase::Head if this.head_read_on.is_some() => return this.poll_head_read_on(cx, read),
                    Phase::Done if read > 0 => {
                        // A pipelined request arriving while this one is answered: Pingora
                        // would take it for bytes after the end of this request and fail it.
                        this.unread = Some(BytesMut::from(&buf.filled()[before..]));
                        buf.set_filled(before);
                        conn.waker.register(cx.waker());
                        return Poll::Pending;
                    }
                    _ => {}
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match phase {
                // Closed to make room at the bound (bytes that already arrived were served):
                // the end of the stream ends the connection.
                Phase::Idle | Phase::Head if conn.evicted(cx) => Poll::Ready(Ok(())),
                Phase::Idle => Poll::Pending,
                Phase::Head => {
                    ready!(this.poll_deadline(cx, phase));
                    this.poll_header_timeout(cx)
                }
                Phase::Body => {
                    ready!(this.poll_deadline(cx, phase));
                    this.ticket.connections.metrics.body_timeouts.inc();
                    conn.body_timed_out.store(true, Ordering::Relaxed);
                    conn.enter(Phase::Done);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request body not received within body_timeout",
                    )))
                }
                Phase::Done | Phase::Untimed => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_send(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send(cx, |inner, cx| inner.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait::async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        // Through `poll_shutdown`: flushing to a client that does not read meets send_timeout.
        if let Err(e) = tokio::io::AsyncWriteExt::shutdown(self).await {
            log::debug!("client connection shutdown: {e}");
        }
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guarded {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait::async_trait]
impl Peek for Guarded {
    /// Pingora's look for the h2c preface: from the bytes put back, read on as needed.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        use tokio::io::AsyncReadExt;
        let mut unread = self.unread.take().unwrap_or_default();
        let peeked = loop {
            if unread.len() >= buf.len() {
                buf.copy_from_slice(&unread[..buf.len()]);
                break Ok(true);
            }
            match self.inner.read_buf(&mut unread).await {
                Ok(0) => break Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        self.unread(unread);
        peeked
    }
}

/// The client's address block for the per-IP bound, from the stream's socket.
pub(crate) fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    match digest.peer_addr()? {
        SocketAddr::Inet(addr) => Some(addr.ip()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntGauge;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn metrics() -> ConnectionMetrics {
        let counter = |n: &str| IntCounter::new(n, "test").unwrap();
        ConnectionMetrics {
            open: IntGauge::new("open", "test").unwrap(),
            refused_total: counter("refused_total"),
            refused_per_ip: counter("refused_per_ip"),
            evicted: counter("evicted"),
            header_timeouts: counter("header_timeouts"),
            body_timeouts: counter("body_timeouts"),
            send_timeouts: counter("send_timeouts"),
            heads_too_large: counter("heads_too_large"),
        }
    }

    fn limits(max: usize, per_ip: Option<usize>) -> Limits {
        let text = "listen: [\"127.0.0.1:1\"]\nservices:\n  s: {targets: [\"127.0.0.1:2\"]}\nroutes:\n  - {path: /, service: s, auth: public}\n";
        let env = HashMap::<String, String>::new();
        let mut limits = crate::config::parse(text, std::path::Path::new("."), &env).expect("valid config").limits;
        limits.max_connections = max;
        limits.max_connections_per_ip = per_ip;
        limits.header_timeout = Duration::from_millis(300);
        limits.body_timeout = Duration::from_millis(300);
        limits.send_timeout = Duration::from_millis(300);
        limits
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn per_ip_bound_counts_ipv6_by_its_64_and_frees_on_close() {
        let c = Connections::new(&limits(100, Some(2)), metrics());
        let a = c.admit(ip("2001:db8::1"), false).unwrap();
        let _b = c.admit(ip("2001:db8::2"), false).unwrap();
        assert_eq!(c.admit(ip("2001:db8::3"), false).unwrap_err(), Refusal::PerIp);
        let _other = c.admit(ip("127.0.0.2"), false).unwrap();
        let _unbounded = c.admit(None, false).unwrap();
        drop(a);
        let _c = c.admit(ip("2001:db8::3"), false).unwrap();
        assert_eq!(c.open.load(Ordering::Relaxed), 4);
        assert_eq!(c.metrics.refused_per_ip.get(), 1);
    }

    /// A connection that began waiting `ago_ms` ago, in `phase`.
    fn waiting(c: &Arc<Connections>, phase: Phase, ago_ms: u64) -> Ticket {
        let t = c.admit(None, false).unwrap();
        t.conn.enter(phase);
        t.conn.since_ms.store(now_ms() - ago_ms, Ordering::Relaxed);
        t
    }

    #[test]
    fn the_end_of_a_head_is_found_however_the_reads_split_it() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody";
        let end = head.len() - 4;
        // Every split into two reads: the head ends only once its empty line is all there.
        for split in 0..=head.len() {
            let first = head_end(&head[..split], 0);
            assert_eq!(first, (split >= end).then_some(end), "first read of {split} bytes");
            if first.is_none() {
                assert_eq!(head_end(head, split), Some(end), "second read after {split} bytes");
            }
        }
        // One byte per read (a slowloris): found exactly at the last byte of the empty line.
        let found = (1..=head.len()).find(|&n| head_end(&head[..n], n - 1).is_some());
        assert_eq!(found, Some(end));
        // Bare line feeds end a head too; a line feed with no empty line does not.
        assert_eq!(head_end(b"GET / HTTP/1.0\n\nnext", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\n\r\n", 0), Some(26));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
        assert_eq!(head_end(b"", 0), None);
        // Looked-at bytes past the end (a caller's slip) are not a panic.
        assert_eq!(head_end(b"ab", 5), None);
    }

    #[test]
    fn empty_lines_before_a_request_line_are_dropped_as_httparse_skips_them() {
        let mut head = BytesMut::from(&b"\r\n\n\r\nGET / HTTP/1.1\r\n"[..]);
        assert_eq!(skip_empty_lines(&mut head), 5);
        assert_eq!(&head[..], b"GET / HTTP/1.1\r\n");
        // A lone CR waits for what follows it; a CR before anything else is not an empty line.
        let mut head = BytesMut::from(&b"\r\n\r"[..]);
        assert_eq!((skip_empty_lines(&mut head), &head[..]), (2, &b"\r"[..]));
        let mut head = BytesMut::from(&b"\rGET"[..]);
        assert_eq!((skip_empty_lines(&mut head), &head[..]), (0, &b"\rGET"[..]));
    }

    #[test]
    fn header_fields_are_counted_only_in_heads_that_could_hold_too_many() {
        let head = |fields: usize| {
            let mut h = String::from("GET / HTTP/1.1\r\n");
            for i in 0..fields {
                h.push_str(&format!("X-{i}: v\r\n"));
            }
            h + "\r\n"
        };
        assert!(!too_many_fields(head(256).as_bytes()));
        assert!(too_many_fields(head(257).as_bytes()));
        // Short heads are not scanned: 257 field lines take more bytes than this.
        assert!(!too_many_fields(&b"\n".repeat(MAX_HEADER_FIELDS * 3)));
    }

    #[test]
    fn at_the_bound_the_longest_waiting_connection_gives_way() {
        let c = Connections::new(&limits(4, None), metrics());
        let idle = waiting(&c, Phase::Idle, 5_000);
        let slow_head = waiting(&c, Phase::Head, 8_000);
        let active = waiting(&c, Phase::Idle, 10); // between two requests of a busy client
        let serving = waiting(&c, Phase::Body, 60_000);
        let _new = waiting(&c, Phase::Done, 0);
        assert!(slow_head.conn.evict.load(Ordering::Relaxed), "the head arriving for 8 s goes first");
        let _newer = waiting(&c, Phase::Done, 0);
        assert!(idle.conn.evict.load(Ordering::Relaxed));
        // Only an active client and a request being served are left: new connections are
        // refused, and the registry is not scanned again before one could qualify.
        assert_eq!(c.admit(None, false).unwrap_err(), Refusal::Total);
        assert!(!active.conn.evict.load(Ordering::Relaxed) && !serving.conn.evict.load(Ordering::Relaxed));
        assert!(c.no_eviction_before.load(Ordering::Relaxed) > now_ms() + 900);
        assert_eq!((c.metrics.evicted.get(), c.metrics.refused_total.get()), (2, 1));
    }

    #[test]
    fn at_the_bound_without_a_candidate_new_connections_are_refused_before_setup() {
        let c = Connections::new(&limits(2, None), metrics());
        let _a = waiting(&c, Phase::Done, 0);
        assert!(!c.refuse_early(), "below the bound");
        let _b = waiting(&c, Phase::Idle, 10);
        assert!(!c.refuse_early(), "at the bound, but no scan has found it without candidates");
        assert_eq!(c.admit(None, false).unwrap_err(), Refusal::Total);
        assert!(c.refuse_early(), "the scan found none: refused at accept until one could qualify");
        assert_eq!(c.metrics.refused_total.get(), 2);
        c.no_eviction_before.store(now_ms(), Ordering::Relaxed);
        assert!(!c.refuse_early(), "once one could, admission decides again");
    }

    #[test]
    fn evictions_follow_the_wait_order_across_rescans() {
        let c = Connections::new(&limits(200, None), metrics());
        // Connection i has waited 10 s + i × 10 ms: the last is the oldest.
        let old: Vec<Ticket> = (0..200).map(|i| waiting(&c, Phase::Idle, 10_000 + i * 10)).collect();
        let _first = waiting(&c, Phase::Done, 0);
        assert!(old[199].conn.evict.load(Ordering::Relaxed));
        // The next oldest are served, or begin a new wait, before their turn comes.
        old[198].conn.enter(Phase::Done);
        old[197].conn.enter(Phase::Idle);
        let _new: Vec<Ticket> = (0..150).map(|_| waiting(&c, Phase::Done, 0)).collect();
        let evicted: Vec<usize> = (0..200).filter(|&i| old[i].conn.evict.load(Ordering::Relaxed)).collect();
        let expected: Vec<usize> = (47..197).chain([199]).collect();
        assert_eq!(evicted, expected, "151 evictions, oldest first, past {EVICTION_BATCH}-connection batches");
        assert_eq!(c.metrics.evicted.get(), 151);
    }

    fn guarded(c: &Arc<Connections>) -> (Guarded, tokio::io::DuplexStream, Arc<Conn>) {
        let (client, server) = tokio::io::duplex(4096);
        let stream = Guarded::new(Box::new(server), c.admit(None, false).unwrap());
        let conn = stream.conn();
        (stream, client, conn)
    }

    #[tokio::test]
    async fn a_trickled_head_gets_408_at_the_deadline() {
        let c = Connections::new(&limits(10, None), metrics());
        let (mut stream, mut client, conn) = guarded(&c);
        client.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 64];
        let started = Instant::now();
        assert_eq!(stream.read(&mut buf).await.unwrap(), 8);
        assert_eq!(conn.phase(), Phase::Head);
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(290), "{:?}", started.elapsed());
        let mut answer = vec![0u8; 512];
        let n = client.read(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer[..n]);
        assert!(text.starts_with("HTTP/1.1 408 ") && text.contains("\"request_timeout\""), "{text}");
        assert_eq!(c.metrics.header_timeouts.get(), 1);
    }

    #[tokio::test]
    async fn a_stalled_body_fails_its_read_and_is_remembered() {
        let c = Connections::new(&limits(10, None), metrics());
        let (mut stream, mut client, conn) = guarded(&c);
        client.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(stream.read(&mut buf).await.unwrap(), 19);
        conn.enter(Phase::Body);
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(conn.body_timed_out.load(Ordering::Relaxed));
        assert_eq!(c.metrics.body_timeouts.get(), 1);
    }

    #[tokio::test]
    async fn an_idle_connection_is_not_clocked_and_ends_when_evicted() {
        let c = Connections::new(&limits(1, None), metrics());
        let (mut stream, _client, conn) = guarded(&c);
        conn.since_ms.store(now_ms() - 2_000, Ordering::Relaxed);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            stream.read(&mut buf).await
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!reader.is_finished(), "idle connections wait for idle_timeout, not header_timeout");
        let _new = c.admit(None, false).unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), 0, "evicted: end of stream");
        assert!(conn.evict.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_head_is_handed_over_alone_and_what_follows_it_is_read_after_it() {
        let c = Connections::new(&limits(10, None), metrics());
        let (mut stream, mut client, _conn) = guarded(&c);
        let idle = Duration::from_secs(5);
        client.write_all(b"\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\nbodyGET /b HTTP/1.1\r\n\r\n").await.unwrap();
        let head = stream.read_head(idle, false).await.unwrap();
        assert_eq!(&head[..], b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", "empty lines dropped, the rest kept");
        let mut body = [0u8; 4];
        stream.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"body");
        let next = stream.read_head(idle, false).await.unwrap();
        assert_eq!(&next[..], b"GET /b HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn bytes_arriving_while_a_whole_request_is_answered_wait_for_the_next_head() {
        let c = Connections::new(&limits(10, None), metrics());
        let (mut stream, mut client, conn) = guarded(&c);
        let idle = Duration::from_secs(5);
        client.write_all(b"GET /a HTTP/1.1\r\n\r\n").await.unwrap();
        stream.read_head(idle, false).await.unwrap();
        conn.enter(Phase::Done);
        client.write_all(b"GET /b HTTP/1.1\r\n\r\n").await.unwrap();
        // Pingora's look for the client leaving (a one-byte read) does not take them...
        let mut probe = [0u8; 1];
        assert!(tokio::time::timeout(Duration::from_millis(200), stream.read(&mut probe)).await.is_err());
        assert!(tokio::time::timeout(Duration::from_millis(50), stream.read(&mut probe)).await.is_err());
        // ...the next head gets them whole.
        let next = stream.read_head(idle, false).await.unwrap();
        assert_eq!(&next[..], b"GET /b HTTP/1.1\r\n\r\n");
        // An upgraded connection's bytes are read as they come; a client leaving is seen.
        conn.enter(Phase::Done);
        upgraded_in(&conn);
        client.write_all(b"frame").await.unwrap();
        let mut frame = [0u8; 5];
        stream.read_exact(&mut frame).await.unwrap();
        assert_eq!(&frame, b"frame");
        let (mut stream, client, conn) = guarded(&c);
        conn.enter(Phase::Done);
        drop(client);
        assert_eq!(stream.read(&mut probe).await.unwrap(), 0);
    }

    fn upgraded_in(conn: &Arc<Conn>) {
        CONNECTION.sync_scope(conn.clone(), upgraded);
        assert_eq!(conn.phase(), Phase::Untimed);
    }

    #[tokio::test]
    async fn heads_with_too_many_fields_and_reads_past_the_bound_are_answered_431() {
        let mut l = limits(10, None);
        l.max_header_bytes = 8 << 10;
        let c = Connections::new(&l, metrics());
        // More fields than Pingora parses, in one whole head.
        let (mut stream, mut client, _conn) = guarded(&c);
        let mut head = String::from("GET / HTTP/1.1\r\n");
        for i in 0..300 {
            head.push_str(&format!("X-{i}: v\r\n"));
        }
        client.write_all(format!("{head}\r\n").as_bytes()).await.unwrap();
        let reader = tokio::spawn(async move { stream.read_head(Duration::from_secs(5), false).await });
        let mut answer = vec![0u8; 1024];
        let n = client.read(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer[..n]);
        assert!(text.starts_with("HTTP/1.1 431 ") && text.contains("more than 256 header fields"), "{text}");
        drop(client);
        assert!(reader.await.unwrap().is_none());
        // A parser that wants more than the gate found reads on within the same bound.
        let (mut stream, mut client, conn) = guarded(&c);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        stream.read_head(Duration::from_secs(5), false).await.unwrap();
        assert_eq!(conn.phase(), Phase::Head);
        let pad = vec![b'a'; 1 << 10];
        let mut buf = vec![0u8; 1 << 10];
        let mut read = 0;
        let err = loop {
            client.write_all(&pad).await.unwrap();
            match stream.read(&mut buf).await {
                Ok(n) => read += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(((7 << 10)..=(8 << 10) + 4).contains(&read), "{read}");
        let n = client.read(&mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 431 "));
        assert_eq!(c.metrics.heads_too_large.get(), 2);
    }

    #[tokio::test]
    async fn an_h2c_preface_is_read_whole_under_the_head_clock() {
        let c = Connections::new(&limits(10, None), metrics());
        let (mut stream, mut client, conn) = guarded(&c);
        client.write_all(&H2_PREFACE[..18]).await.unwrap();
        let rest = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(&H2_PREFACE[18..]).await.unwrap();
            client.write_all(b"\0\0\0\x04").await.unwrap();
            client
        });
        let head = stream.read_head(Duration::from_secs(5), true).await.unwrap();
        assert!(head.starts_with(H2_PREFACE), "{head:?}");
        assert_eq!(conn.phase(), Phase::Head);
        // Put back for Pingora, which peeks at it and then reads it.
        stream.unread(head);
        stream.untimed();
        let mut peeked = [0u8; 24];
        assert!(stream.try_peek(&mut peeked).await.unwrap());
        assert_eq!(&peeked, H2_PREFACE);
        let mut all = [0u8; 28];
        stream.read_exact(&mut all).await.unwrap();
        assert_eq!(&all[..24], H2_PREFACE);
        drop(rest.await.unwrap());
        // Bytes that start like the preface and then differ are a head like any other.
        let (mut stream, mut client, _conn) = guarded(&c);
        client.write_all(&H2_PREFACE[..18]).await.unwrap();
        let rest = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.write_all(b"XY").await.unwrap();
            client
        });
        let head = stream.read_head(Duration::from_secs(5), true).await.unwrap();
        assert_eq!(&head[..], &H2_PREFACE[..18]);
        drop(rest.await.unwrap());
    }

    #[tokio::test]
    async fn a_write_the_client_does_not_take_fails_at_the_send_timeout_one_it_takes_does_not() {
        let c = Connections::new(&limits(10, None), metrics());
        // A client reading 1 KiB every 100 ms keeps writes moving past the 300 ms send_timeout.
        let (mut stream, mut client, conn) = guarded(&c);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut got = 0;
            while got < 16 << 10 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                got += client.read(&mut buf).await.unwrap();
            }
            client
        });
        stream.write_all(&[7u8; 16 << 10]).await.unwrap();
        let client = reader.await.unwrap();
        assert_eq!(conn.write_stalled_since.load(Ordering::Relaxed), 0);
        // A client that stops reading: the write fails once it has waited send_timeout.
        let started = Instant::now();
        let err = stream.write_all(&[7u8; 64 << 10]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(290), "{:?}", started.elapsed());
        assert_eq!(c.metrics.send_timeouts.get(), 1);
        drop(client);
    }

    #[tokio::test]
    async fn at_the_bound_a_writer_the_client_stopped_taking_gives_way() {
        let mut l = limits(1, None);
        l.send_timeout = Duration::from_secs(60);
        let c = Connections::new(&l, metrics());
        let (mut stream, _client, conn) = guarded(&c);
        conn.enter(Phase::Done);
        let writer = tokio::spawn(async move { stream.write_all(&[7u8; 64 << 10]).await });
        while conn.write_stalled_since.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(c.admit(None, false).unwrap_err(), Refusal::Total, "stalled for less than a second");
        c.no_eviction_before.store(0, Ordering::Relaxed);
        conn.write_stalled_since.store(now_ms() - 2_000, Ordering::Relaxed);
        let _new = c.admit(None, false).unwrap();
        let err = writer.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(c.metrics.evicted.get(), 1);
    }

    /// A loopback TCP connection: the client's end, and the server's as Pingora accepts it (a
    /// buffered stream, whose read of zero bytes waits for the first bytes).
    async fn tcp_pair() -> (tokio::net::TcpStream, Stream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, Box::new(pingora::protocols::l4::stream::Stream::from(server)))
    }

    #[tokio::test]
    async fn a_tls_handshake_is_counted_and_meets_the_idle_and_head_deadlines() {
        let c = Connections::new(&limits(2, None), metrics());
        // The stand-in handshake reads five bytes.
        async fn five_bytes(mut s: Stream) -> pingora::Result<Stream> {
            let mut b = [0u8; 5];
            s.read_exact(&mut b).await.map_err(|e| pingora::Error::because(pingora::ErrorType::ReadError, "", e))?;
            Ok(s)
        }
        let idle = Duration::from_millis(200);
        // Nothing sent: cut at idle_timeout.
        let (_client, server) = tcp_pair().await;
        let ticket = c.admit(None, false).unwrap();
        let started = Instant::now();
        let cut = ticket.handshake(server, idle, five_bytes).await.unwrap_err();
        assert!(matches!(cut, HandshakeCut::TimedOut), "{cut:?}");
        assert!(started.elapsed() < Duration::from_millis(290), "idle: {:?}", started.elapsed());
        drop(ticket);
        // Started, then stalled: cut at header_timeout (300 ms) from the first byte.
        let (mut client, server) = tcp_pair().await;
        let ticket = c.admit(None, false).unwrap();
        client.write_all(b"ab").await.unwrap();
        let started = Instant::now();
        let cut = ticket.handshake(server, idle, five_bytes).await.unwrap_err();
        assert!(matches!(cut, HandshakeCut::TimedOut), "{cut:?}");
        assert!(started.elapsed() >= Duration::from_millis(290), "head: {:?}", started.elapsed());
        drop(ticket);
        // Completed: the connection waits for its first request.
        let (mut client, server) = tcp_pair().await;
        let ticket = c.admit(None, false).unwrap();
        client.write_all(b"abcde").await.unwrap();
        assert!(ticket.handshake(server, idle, five_bytes).await.is_ok());
        assert_eq!(ticket.conn.phase(), Phase::Idle);
        drop(ticket);
        let _other = c.admit(None, false).unwrap();
        // At the bound, one waiting for its handshake long enough gives way.
        let (_client, server) = tcp_pair().await;
        let waiting = c.admit(None, false).unwrap();
        waiting.conn.since_ms.store(now_ms() - 2_000, Ordering::Relaxed);
        let cut = tokio::join!(waiting.handshake(server, Duration::from_secs(5), five_bytes), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.admit(None, false).map(|_| ())
        });
        assert!(matches!(cut, (Err(HandshakeCut::Evicted), Ok(()))), "{cut:?}");
    }
}
