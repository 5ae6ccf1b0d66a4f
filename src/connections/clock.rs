//! The request clock: the phase of each connection's request, the hooks that move it on,
//! and the task-local that lets the proxy's hooks find their connection.

use super::*;

tokio::task_local! {
    pub(super) static CONNECTION: Arc<Conn>;
}

/// Where a connection's current request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Phase {
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
    pub(super) fn from_u8(v: u8) -> Self {
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
pub(super) fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// An hour before the first call where the clock allows it, so "a second ago" never
/// saturates at zero.
pub(super) fn epoch() -> Instant {
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
    pub(super) phase: AtomicU8,
    /// When the phase began (`now_ms`): idle since, head started, body started.
    pub(super) since_ms: AtomicU64,
    /// Chosen to close at the bound: the next idle read ends the connection.
    pub(super) evict: AtomicBool,
    /// The task waiting on this connection (an idle or slow-head read, an HTTP/2 stream's body
    /// deadline), woken when it is evicted or enters its body phase.
    pub(super) waker: AtomicWaker,
    /// The request's body missed `body_timeout` (the proxy answers 408).
    pub(super) body_timed_out: AtomicBool,
    /// When a write to the client began to wait (`now_ms`, 0: not waiting): a client that has
    /// stopped reading, closed at `send_timeout` and evictable at the bound.
    pub(super) write_stalled_since: AtomicU64,
}

impl Conn {
    pub(super) fn new(phase: Phase) -> Self {
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
    pub(super) fn evicted(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.evict.load(Ordering::Relaxed)
    }

    pub(super) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    pub(super) fn enter(&self, phase: Phase) {
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
    pub(super) fn waiting_since(&self) -> Option<u64> {
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
pub(super) async fn body_overdue(connections: &Connections, conn: &Conn) {
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
