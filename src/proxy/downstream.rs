//! The downstream connection before Pingora reads a request from it.
//!
//! Pingora gives every new HTTP/1 connection a fixed 60 s keep-alive timeout for reading its
//! first request head; `limits.idle_timeout` only reaches a connection through the session of
//! a request it already sent. A client that connects and stays silent (or trickles a partial
//! head) would then hold its ~100 KB of connection state for 60 s whatever the operator
//! configured. [`IdleLimited`] sets the configured timeout on every session before the proxy
//! reads from it, so silent connections close as soon as idle ones do.
//!
//! Before that, [`ConnectionGate`] admits each accepted connection under `limits.max_connections`
//! and `max_connections_per_ip` and wraps its stream in the request clock of
//! [`crate::connections`] (header and body deadlines, eviction of idle connections at the bound).

use crate::connections::{self, Connections, Guarded};
use crate::runtime::Runtime;
use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An HTTP app whose sessions wait at most `idle_secs` for each read of a request head.
pub(crate) struct IdleLimited<A> {
    inner: Arc<A>,
    idle_secs: Arc<AtomicU64>,
    connections: Arc<Connections>,
}

impl<A> IdleLimited<A> {
    /// Wrap `inner`; `idle_secs` is `limits.idle_timeout` (validated ≥ 1 s), which a config
    /// reload may change.
    pub(crate) fn new(inner: A, idle_secs: Arc<AtomicU64>, connections: Arc<Connections>) -> Self {
        IdleLimited { inner: Arc::new(inner), idle_secs, connections }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for IdleLimited<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if matches!(session, ServerSession::H2(_)) {
            return connections::serve_h2_stream(&self.connections, self.inner.process_new_http(session, shutdown))
                .await
                .flatten();
        }
        connections::request_starting();
        // Keep-alive off means the connection is closing (shutdown, `Connection: close`): leave it.
        if session.get_keepalive().is_some() {
            let idle_secs = self.idle_secs.load(Ordering::Relaxed);
            session.set_keepalive(Some(idle_secs));
            if matches!(session, ServerSession::H1(_)) {
                session = wait_for_request(session, idle_secs, shutdown).await?;
            }
        }
        self.inner.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await
    }

    async fn process_custom_session(self: Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        Arc::clone(&self.inner).process_custom_session(stream, shutdown).await
    }
}

/// Wait for the next request outside Pingora's request future. An idle HTTP/1 connection
/// then holds its stream and this small future, not the proxy's whole per-request state
/// (Pingora's session and the futures of every phase, tens of KiB), which is only made once a
/// request arrives. `None`: the connection is to close (idle timeout, shutdown). A connection
/// evicted at the bound, or whose client left, reads as readable and ends in Pingora's read.
/// Pingora's pipelining (bytes of the next request already in the session) is not enabled, so
/// nothing can be waiting in the session it drops here.
async fn wait_for_request(session: ServerSession, idle_secs: u64, shutdown: &ShutdownWatch) -> Option<ServerSession> {
    let settings = HttpPersistentSettings::for_session(&session);
    let ServerSession::H1(h1) = session else { return Some(session) };
    let stream = h1.into_inner();
    // Every client stream is guarded (`ConnectionGate`); nothing else reaches this app.
    let Ok(mut guarded) = stream.into_any().downcast::<Guarded>() else { return None };
    let mut shutdown = shutdown.clone();
    tokio::select! {
        biased;
        readable = guarded.readable() => readable.ok()?,
        _ = tokio::time::sleep(Duration::from_secs(idle_secs)) => return None,
        _ = shutdown.changed() => return None,
    }
    let stream: Stream = guarded;
    let mut session = ServerSession::new_http1(stream);
    settings.apply_to_session(&mut session);
    Some(session)
}

/// A server app behind the connection bounds: a connection over them is closed at once; an
/// admitted one is served through its [`Guarded`] stream, counted until it closes.
pub(crate) struct ConnectionGate<A> {
    inner: Arc<A>,
    runtime: Arc<Runtime>,
}

impl<A> ConnectionGate<A> {
    pub(crate) fn new(inner: A, runtime: Arc<Runtime>) -> Self {
        ConnectionGate { inner: Arc::new(inner), runtime }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ConnectionGate<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // A trusted proxy's connection carries many clients: not bounded per IP.
        let client =
            connections::peer_ip(&stream).filter(|ip| !self.runtime.current().config.trusted_proxies.contains(ip));
        let h2 = matches!(stream.selected_alpn_proto(), Some(pingora::protocols::ALPN::H2));
        let ticket = match self.runtime.connections.admit(client, h2) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                log::debug!("connection from {client:?} closed at once: {refusal:?}");
                return None;
            }
        };
        let conn = ticket.conn();
        let stream: Stream = Box::new(Guarded::new(stream, ticket));
        // HTTP apps serve every request of the connection here and hand nothing back.
        connections::serve(conn, self.inner.process_new(stream, shutdown)).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}
