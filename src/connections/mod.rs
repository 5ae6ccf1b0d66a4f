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

mod clock;
mod gate;
mod head;
mod stream;

pub(crate) use clock::*;
pub(crate) use head::*;
pub(crate) use stream::*;

pub(crate) use gate::{AtTheBound, ConnectionGate, IdleLimited};

use crate::config::{Limits, Listener, TrustedProxies};
use crate::errors::GatewayError;
use crate::forwarding;
use arc_swap::ArcSwap;
use bytes::BytesMut;
use futures::task::AtomicWaker;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType, ALPN,
};
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

/// Counters of what the bounds and deadlines did (defined with the other metric families).
pub(crate) use crate::observability::ConnectionMetrics;

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
    /// `limits.idle_timeout` in whole seconds (validated ≥ 1 s).
    idle_secs: AtomicU64,
    /// `trusted_proxies`: their connections carry many clients, so are not bounded per IP.
    trusted: ArcSwap<TrustedProxies>,
    /// The listeners with `proxy_protocol`: their socket and `proxy_protocol_from`.
    proxied: ArcSwap<Vec<(std::net::SocketAddr, TrustedProxies)>>,
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
    pub(crate) fn new(
        limits: &Limits,
        trusted: &TrustedProxies,
        listeners: &[Listener],
        metrics: ConnectionMetrics,
    ) -> Arc<Self> {
        let connections = Connections {
            max_total: AtomicUsize::new(0),
            max_per_ip: AtomicUsize::new(0),
            header_timeout_ms: AtomicU64::new(0),
            body_timeout_ms: AtomicU64::new(0),
            send_timeout_ms: AtomicU64::new(0),
            max_header_bytes: AtomicUsize::new(0),
            idle_secs: AtomicU64::new(0),
            trusted: ArcSwap::from_pointee(TrustedProxies::default()),
            proxied: ArcSwap::from_pointee(Vec::new()),
            open: AtomicUsize::new(0),
            no_eviction_before: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            registry: Mutex::new(Registry::default()),
            per_ip: Mutex::new(HashMap::new()),
            metrics,
        };
        connections.apply(limits, trusted, listeners);
        Arc::new(connections)
    }

    /// Take the limits, trusted proxies and PROXY protocol listeners of a (re)loaded
    /// configuration; open connections keep their limits until their next request.
    pub(crate) fn apply(&self, limits: &Limits, trusted: &TrustedProxies, listeners: &[Listener]) {
        self.idle_secs.store(limits.idle_timeout.as_secs(), Ordering::Relaxed);
        self.trusted.store(Arc::new(trusted.clone()));
        let proxied = listeners.iter().filter(|l| l.proxy_protocol);
        self.proxied.store(Arc::new(proxied.map(|l| (l.socket, l.proxy_protocol_from.clone())).collect()));
        self.max_total.store(limits.max_connections, Ordering::Relaxed);
        self.max_per_ip.store(limits.max_connections_per_ip.unwrap_or(0), Ordering::Relaxed);
        self.header_timeout_ms.store(limits.header_timeout.as_millis() as u64, Ordering::Relaxed);
        self.body_timeout_ms.store(limits.body_timeout.as_millis() as u64, Ordering::Relaxed);
        self.send_timeout_ms.store(limits.send_timeout.as_millis() as u64, Ordering::Relaxed);
        self.max_header_bytes.store(limits.max_header_bytes, Ordering::Relaxed);
    }

    /// `limits.send_timeout`: how long a write to a client may wait without progress (for
    /// HTTP/2 streams, Pingora's write timeout).
    /// `limits.idle_timeout`, in whole seconds (what Pingora's keep-alive takes).
    pub(crate) fn idle_secs(&self) -> u64 {
        self.idle_secs.load(Ordering::Relaxed)
    }

    /// `limits.idle_timeout`.
    pub(crate) fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_secs())
    }

    /// Whether connections from `ip` are a trusted proxy's (not bounded per IP).
    pub(crate) fn trusts(&self, ip: &IpAddr) -> bool {
        self.trusted.load().contains(ip)
    }

    /// Whether some listener reads PROXY protocol headers.
    pub(crate) fn any_proxy_protocol(&self) -> bool {
        !self.proxied.load().is_empty()
    }

    /// For a connection to `local` from `peer`: `None` when the listener that accepted it has
    /// no `proxy_protocol` (matched as TLS listeners are, see
    /// [`crate::tls::Handshakes::for_local`]); else whether its header may be read, i.e. `peer`
    /// is one of the listener's `proxy_protocol_from` (any peer when that is empty).
    pub(crate) fn proxy_protocol_sender(&self, local: std::net::SocketAddr, peer: Option<IpAddr>) -> Option<bool> {
        let proxied = self.proxied.load();
        let exact = proxied.iter().find(|(socket, _)| *socket == local);
        let any = || proxied.iter().find(|(s, _)| s.port() == local.port() && s.ip().is_unspecified());
        let (_, from) = exact.or_else(any)?;
        Some(from.is_empty() || peer.is_some_and(|ip| from.contains(&ip)))
    }

    /// The counters of the bounds, deadlines and PROXY headers.
    pub(crate) fn metrics(&self) -> &ConnectionMetrics {
        &self.metrics
    }

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
        let block = self.charge_ip(client)?;
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

    /// Count a connection against `client`'s block under `max_connections_per_ip`: the block
    /// charged (`None` when not bounded), or the refusal (counted).
    fn charge_ip(&self, client: Option<IpAddr>) -> Result<Option<IpAddr>, Refusal> {
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
        Ok(block)
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

/// Why a TLS handshake (or a PROXY header) on an admitted connection did not complete.
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
    /// Count this connection, admitted without a client (its peer, a load balancer, sends the
    /// PROXY protocol), against the bound of the `client` its header named.
    pub(crate) fn charge_client(&mut self, client: Option<IpAddr>) -> Result<(), Refusal> {
        self.block = self.connections.charge_ip(client)?;
        Ok(())
    }

    /// Run a TLS `handshake` (or the read of a PROXY header) on this admitted connection's
    /// `stream` under the deadlines of a request head: its first bytes must come within `idle`
    /// (as a request's on a new plain connection), the rest within `header_timeout` of them, and
    /// meanwhile it may be closed at the bound like a head still arriving. Pingora would allow a
    /// handshake 60 s, uncounted. The connection then waits for its first request (or is an
    /// untimed HTTP/2 one).
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

#[cfg(test)]
mod tests;
