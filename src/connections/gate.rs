//! The downstream connection before Pingora reads a request from it.
//!
//! [`ConnectionGate`] admits each accepted connection under `limits.max_connections` and
//! `max_connections_per_ip`, reads its PROXY protocol header on `proxy_protocol` listeners
//! ([`crate::proxy_protocol`]) and runs its TLS handshake, each under the deadlines of a request
//! head (TLS listeners are plain TCP ones to Pingora), and wraps its stream in the request clock of
//! [`crate::connections`] (header, body and send deadlines, eviction of idle and stalled
//! connections at the bound), then serves it in a task of its own (Pingora's per-connection
//! task is several KiB and ends). It serves HTTP/1 connections itself, request after request:
//! between requests it waits for the next one's first bytes outside Pingora, so an idle
//! keep-alive connection holds its stream and a small future, not Pingora's per-request state
//! and futures (tens of KiB); it then reads the whole head ([`read_head`]) and only a complete
//! head gets a Pingora session. HTTP/2 (ALPN, or the preface on an h2c listener, found by the
//! same head read) goes to Pingora's own connection handling.
//!
//! [`IdleLimited`] gives every session `limits.idle_timeout` (Pingora's default is a fixed 60 s)
//! and each HTTP/2 stream its own body deadline and `send_timeout`.

use super::{Connections, Guarded, HandshakeCut, H2_PREFACE};
use crate::connections;
use crate::tls::Handshakes;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::listeners::ConnectionFilter;
use pingora::protocols::http::v1::server::HttpSession as HttpSessionV1;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::{Ssl, Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// An HTTP app whose sessions wait at most `limits.idle_timeout` for each read of a request
/// head.
pub(crate) struct IdleLimited<A> {
    inner: Arc<A>,
    connections: Arc<Connections>,
}

impl<A> IdleLimited<A> {
    /// Wrap `inner`; the idle timeout is the one `connections` holds now (a reload may change it).
    pub(crate) fn new(inner: A, connections: Arc<Connections>) -> Self {
        IdleLimited { inner: Arc::new(inner), connections }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for IdleLimited<A> {
    // Not an `async fn`: an HTTP/1 request is handed the inner app's future as it is, instead of
    // a second boxed future (allocated, and the session copied into it) wrapped around it.
    fn process_new_http<'app, 'watch, 'future>(
        self: &'app Arc<Self>,
        mut session: ServerSession,
        shutdown: &'watch ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<ReusedHttpStream>> + Send + 'future>>
    where
        'app: 'future,
        'watch: 'future,
        Self: 'future,
    {
        if matches!(session, ServerSession::H2(_)) {
            // A stream whose flow-control window stays shut cannot send: Pingora's write
            // timeout ends it (an HTTP/1 connection's writes are clocked by its stream).
            session.set_write_timeout(Some(self.connections.send_timeout()));
            return Box::pin(async move {
                connections::serve_h2_stream(&self.connections, self.inner.process_new_http(session, shutdown))
                    .await
                    .flatten()
            });
        }
        // Keep-alive off means the connection is closing (shutdown, `Connection: close`): leave it.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.connections.idle_secs()));
        }
        self.inner.process_new_http(session, shutdown)
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

/// Refuses new connections at the total bound before Pingora sets them up
/// ([`Connections::refuse_early`]).
#[derive(Debug)]
pub(crate) struct AtTheBound(pub(crate) Arc<Connections>);

#[async_trait]
impl ConnectionFilter for AtTheBound {
    async fn should_accept(&self, _peer: Option<&std::net::SocketAddr>) -> bool {
        !self.0.refuse_early()
    }
}

/// A server app behind the connection bounds: a connection over them is closed at once; an
/// admitted one is served through its [`Guarded`] stream, counted until it closes.
pub(crate) struct ConnectionGate<A> {
    inner: Arc<A>,
    connections: Arc<Connections>,
    /// The handshakes of the TLS listeners among this service's.
    tls: Handshakes,
}

impl<A> ConnectionGate<A> {
    pub(crate) fn new(inner: A, connections: Arc<Connections>, tls: Handshakes) -> Self {
        ConnectionGate { inner: Arc::new(inner), connections, tls }
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> ConnectionGate<A> {
    /// Serve an admitted connection until it closes: HTTP/1 request after request in
    /// [`Self::serve_http1`]; HTTP/2 (ALPN, or the preface on an h2c listener) in Pingora's
    /// handling ([`Self::serve_h2`]).
    async fn serve_connection(self: &Arc<Self>, stream: Box<Guarded>, shutdown: &ShutdownWatch) {
        let conn = stream.conn();
        if stream.selected_alpn_proto() == Some(ALPN::H2) {
            return connections::serve(conn, self.serve_h2(stream, shutdown)).await;
        }
        connections::serve(conn, self.serve_http1(stream, shutdown)).await
    }

    /// Pingora's connection loop: a stream handed back is served again.
    async fn serve_h2(self: &Arc<Self>, stream: Box<Guarded>, shutdown: &ShutdownWatch) {
        let mut next = ServerApp::process_new(&self.inner, stream, shutdown).await;
        while let Some(stream) = next {
            next = ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
    }

    /// Serve an HTTP/1 connection's requests one after another (Pingora's loop for HTTP apps,
    /// with the wait for each request moved out of the request's state). On an h2c listener a
    /// connection that opens with the HTTP/2 preface goes to [`Self::serve_h2`] instead.
    async fn serve_http1(self: &Arc<Self>, mut stream: Box<Guarded>, shutdown: &ShutdownWatch) {
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut h2c = self.inner.server_options().is_some_and(|o| o.h2c) && stream.get_ssl_digest().is_none();
        loop {
            connections::request_starting();
            // A new connection's first request is served even when shutdown has begun (the
            // client connected before the listener closed); an idle keep-alive one closes.
            let reused = settings.is_some();
            let Some(head) = read_head(&mut stream, &self.connections, reused.then_some(shutdown), h2c).await else {
                return;
            };
            if h2c && head.starts_with(H2_PREFACE) {
                // Pingora looks for the preface again, and reads it, from the bytes put back.
                stream.unread(head);
                stream.untimed();
                return self.serve_h2(stream, shutdown).await;
            }
            h2c = false;
            // Pingora parses the gathered head before it reads from the stream again.
            let mut http1 = HttpSessionV1::new(stream);
            http1.set_pipelined_prefix(head);
            let mut session = ServerSession::H1(http1);
            match settings.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => {
                    let keepalive = (!*shutdown.borrow()).then(|| self.connections.idle_secs());
                    session.set_keepalive(keepalive);
                    let limit = self.inner.server_options().and_then(|o| o.keepalive_request_limit);
                    session.set_keepalive_reuses_remaining(limit);
                }
            }
            let Some(reused) = self.inner.process_new_http(session, shutdown).await else { return };
            let (next, next_settings) = reused.consume();
            // Our own stream comes back (Pingora hands back what it was given).
            let Ok(next) = next.into_any().downcast::<Guarded>() else { return };
            stream = next;
            settings = next_settings;
        }
    }
}

/// The next request's whole head, read by the connection's stream before any Pingora session
/// exists ([`Guarded::read_head`]; `h2c`: or the HTTP/2 preface); `None` when the connection
/// is to close instead: it stayed idle (see [`wait_for_request`]) or the head did not come whole.
async fn read_head(
    stream: &mut Guarded,
    connections: &Connections,
    shutdown: Option<&ShutdownWatch>,
    h2c: bool,
) -> Option<BytesMut> {
    if !wait_for_request(stream, connections, shutdown).await {
        return None;
    }
    stream.read_head(connections.idle_timeout(), h2c).await
}

/// Wait until the next request's first bytes arrive (true), or the connection is to close:
/// `limits.idle_timeout` passed, it was evicted at the bound or, with `shutdown`, the process
/// is shutting down. Bytes that already arrived are served either way. A connection whose
/// client left reads as ready and ends in Pingora's read.
async fn wait_for_request(stream: &mut Guarded, connections: &Connections, shutdown: Option<&ShutdownWatch>) -> bool {
    let idle = connections.idle_timeout();
    let mut shutdown = shutdown.cloned();
    let shutting_down = async {
        match shutdown.as_mut() {
            Some(watch) if *watch.borrow() => {}
            Some(watch) => {
                let _ = watch.changed().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        readable = stream.readable() => readable,
        _ = tokio::time::sleep(idle) => false,
        _ = shutting_down => false,
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for ConnectionGate<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let peer = connections::peer_ip(&stream);
        // Looked up only when some listener has TLS or the PROXY protocol.
        let local =
            if self.tls.is_empty() && !self.connections.any_proxy_protocol() { None } else { local_addr(&stream) };
        // Headers are read only from the balancers listed, when they are.
        let proxied = match local.and_then(|a| self.connections.proxy_protocol_sender(a, peer)) {
            None => false,
            Some(true) => true,
            Some(false) => {
                crate::proxy_protocol::refuse_sender(peer, &self.connections.metrics().proxy_protocol);
                return None;
            }
        };
        // A trusted proxy's connection carries many clients: not bounded per IP. Nor is a load
        // balancer's; its PROXY header names the client, charged once it is read.
        let client = peer.filter(|ip| !proxied && !self.connections.trusts(ip));
        let mut ticket = match self.connections.admit(client, false) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                log::debug!("connection from {client:?} closed at once: {refusal:?}");
                return None;
            }
        };
        let idle = self.connections.idle_timeout();
        let stream = if proxied {
            // Before TLS: the header comes first on the connection.
            let metrics = &self.connections.metrics().proxy_protocol;
            let stream =
                match ticket.handshake(stream, idle, |s| crate::proxy_protocol::read_header(s, peer, metrics)).await {
                    Ok(stream) => stream,
                    Err(cut) => {
                        if matches!(cut, HandshakeCut::TimedOut) {
                            metrics.timed_out.inc();
                        }
                        log::debug!("PROXY header did not come whole: {cut}");
                        return None;
                    }
                };
            let client = connections::peer_ip(&stream).filter(|ip| !self.connections.trusts(ip));
            if let Err(refusal) = ticket.charge_client(client) {
                log::debug!("connection from {client:?} closed after its PROXY header: {refusal:?}");
                return None;
            }
            stream
        } else {
            stream
        };
        let tls = if self.tls.is_empty() { None } else { local.and_then(|a| self.tls.for_local(a)) };
        let stream = match tls {
            None => stream,
            // Here, not in the connection's own task: this future is freed once that is spawned.
            Some(tls) => match ticket.handshake(stream, idle, |s| tls.run(s)).await {
                Ok(stream) => stream,
                Err(cut) => {
                    if matches!(cut, HandshakeCut::TimedOut) {
                        tls.timed_out();
                    }
                    log::debug!("TLS handshake did not complete: {cut}");
                    return None;
                }
            },
        };
        // The connection is served in a task of its own and Pingora's per-connection task
        // ends here. That task is sized for its accept-and-handshake future (≈ 8.8 KiB, TLS
        // handshake state included even on plain listeners), which it would otherwise hold for
        // the connection's whole life: half of what an idle keep-alive connection costs.
        let gate = Arc::clone(self);
        let shutdown = shutdown.clone();
        tokio::spawn(async move { gate.serve_connection(Box::new(Guarded::new(stream, ticket)), &shutdown).await });
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.inner).await
    }
}

/// The local address a connection came in on (which listener accepted it).
fn local_addr(stream: &Stream) -> Option<std::net::SocketAddr> {
    match stream.get_socket_digest()?.local_addr()? {
        SocketAddr::Inet(addr) => Some(*addr),
        _ => None,
    }
}
