//! The downstream connection before Pingora reads a request from it.
//!
//! Pingora gives every new HTTP/1 connection a fixed 60 s keep-alive timeout for reading its
//! first request head; `limits.idle_timeout` only reaches a connection through the session of
//! a request it already sent. A client that connects and stays silent (or trickles a partial
//! head) would then hold its ~100 KB of connection state for 60 s whatever the operator
//! configured. [`IdleLimited`] sets the configured timeout on every session before the proxy
//! reads from it, so silent connections close as soon as idle ones do.

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An HTTP app whose sessions wait at most `idle_secs` for each read of a request head.
pub(crate) struct IdleLimited<A> {
    inner: Arc<A>,
    idle_secs: Arc<AtomicU64>,
}

impl<A> IdleLimited<A> {
    /// Wrap `inner`; `idle_secs` is `limits.idle_timeout` (validated ≥ 1 s), which a config
    /// reload may change.
    pub(crate) fn new(inner: A, idle_secs: Arc<AtomicU64>) -> Self {
        IdleLimited { inner: Arc::new(inner), idle_secs }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for IdleLimited<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // Keep-alive off means the connection is closing (shutdown, `Connection: close`): leave it.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.idle_secs.load(Ordering::Relaxed)));
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
