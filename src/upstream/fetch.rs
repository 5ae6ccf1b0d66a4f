//! Requests the gateway makes to a service itself before it answers its client: aggregation
//! parts and transcoded gRPC calls ([`fetch`] reads the answer whole; [`open`] only its head,
//! for an answer streamed on as it arrives). Pingora writes a proxied answer's head before its
//! body filters run, so an answer that must be judged before the client hears anything is
//! fetched here instead.
//!
//! A fetch goes through the same machinery as a proxied request, by the attempt engine
//! ([`super::attempt`]): the service's pool (balancing, health, outlier ejection), its circuit
//! breaker, its retry policy and budget, its transport (TLS, HTTP/2) and timeouts, over Pingora's
//! HTTP connector with its connection reuse. The caller bounds the whole by its own deadline
//! (dropping the future abandons the request: the breaker gets no verdict).

use super::attempt::{Attempts, RetryReason, Service};
use crate::errors::{GatewayError, UpstreamErrorKind};
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

/// What to send.
#[derive(Debug)]
pub(crate) struct Fetch<'a> {
    /// Method, path and query, headers (`Host` included) as sent.
    pub(crate) head: &'a RequestHeader,
    /// The request body, if any (kept whole, so any attempt can send it).
    pub(crate) body: Option<Bytes>,
    /// The answer's body is read up to this many bytes; a larger one is not read on.
    pub(crate) max_body: u64,
    /// Bounds each wait for the answer when shorter than the service's `read_timeout` (a
    /// route's `timeout`).
    pub(crate) response_timeout: Option<Duration>,
    /// What consistent hashing hashes (empty: the pool's first choice).
    pub(crate) hash: &'a [u8],
}

/// A whole answer.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) head: Box<ResponseHeader>,
    /// `None`: larger than [`Fetch::max_body`] (the connection is not reused).
    pub(crate) body: Option<Bytes>,
    /// The trailers that ended the answer (HTTP/2), read so the stream ends whole; no caller
    /// reads them yet (aggregation parts have none; gRPC calls stream through [`open`]).
    #[allow(dead_code)]
    pub(crate) trailers: Option<Box<HeaderMap>>,
}

impl Fetched {
    /// The answer's status.
    pub(crate) fn status(&self) -> u16 {
        self.head.status.as_u16()
    }
}

/// How a fetch went, for its span: the backend of its last attempt, the status it answered
/// and how many attempts it took.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Report {
    pub(crate) backend: Option<SocketAddr>,
    pub(crate) status: Option<u16>,
    pub(crate) attempts: u32,
}

/// Fetch `request` from the service `s`. `Ok` with whatever the backend answered (a status the
/// service retries is retried on another backend first); `Err` when no answer came: no usable
/// backend, the circuit refused, or the last attempt failed to connect, broke or timed out.
pub(crate) async fn fetch(s: &Service<'_>, request: &Fetch<'_>, report: &mut Report) -> Result<Fetched, GatewayError> {
    let idle_timeout = s.settings.idle_timeout;
    let mut attempts = Attempts::default();
    attempt_all(s, request, &mut attempts, report, |peer| async move { exchange(&peer, request, idle_timeout).await })
        .await
}

/// [`fetch`], its attempts recorded in `attempts` (the request's own, read by its access log
/// line and spans): a client's request the gateway fetches itself (a transformed answer).
pub(crate) async fn fetch_recorded(
    s: &Service<'_>,
    request: &Fetch<'_>,
    attempts: &mut Attempts,
    report: &mut Report,
) -> Result<Fetched, GatewayError> {
    let idle_timeout = s.settings.idle_timeout;
    attempt_all(s, request, attempts, report, |peer| async move { exchange(&peer, request, idle_timeout).await }).await
}

/// Send `request` to the service `s` and read the answer's head only: its body and trailers
/// are the caller's to read as they arrive (a streamed gRPC call), then [`Opened::release`].
/// Attempts, retries and verdicts as [`fetch`]'s, judged by the head's status, recorded in
/// `attempts` (the request's own, read by its access log line and spans).
pub(crate) async fn open(
    s: &Service<'_>,
    request: &Fetch<'_>,
    attempts: &mut Attempts,
    report: &mut Report,
) -> Result<Opened, GatewayError> {
    attempt_all(s, request, attempts, report, |peer| async move { open_one(peer, request).await }).await
}

/// What one attempt's answer is to the engine: the status it judges.
trait Answered {
    fn status(&self) -> u16;
}

impl Answered for Fetched {
    fn status(&self) -> u16 {
        Fetched::status(self)
    }
}

impl Answered for Opened {
    fn status(&self) -> u16 {
        self.session.response_header().map_or(0, |h| h.status.as_u16())
    }
}

/// The attempt loop of [`fetch`] and [`open`]: `attempt` is one try on one backend's peer.
async fn attempt_all<T, F, Fut>(
    s: &Service<'_>,
    request: &Fetch<'_>,
    attempts: &mut Attempts,
    report: &mut Report,
    mut attempt: F,
) -> Result<T, GatewayError>
where
    T: Answered,
    F: FnMut(HttpPeer) -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut backend = attempts.start(s, request.hash)?;
    // The body is kept whole, so only the method decides whether it may be sent again.
    let idempotent = request.head.method.is_idempotent();
    loop {
        *report = Report { backend: Some(backend), status: None, attempts: attempts.count() };
        let peer = s.peer(backend, request.response_timeout);
        let read_timeout = peer.options.read_timeout;
        let outcome = attempt(peer).await;
        let retry = match &outcome {
            Ok(answer) => {
                report.status = Some(answer.status());
                attempts.answered(s, answer.status());
                attempts.may_retry(s, RetryReason::Status, idempotent)
            }
            Err(failure) => {
                let kind = UpstreamErrorKind::of(&failure.error);
                match failure.stage {
                    Stage::Connect => {
                        attempts.connect_failed(s, kind, Some(GatewayError::upstream(&failure.error, None)));
                        attempts.may_retry(s, RetryReason::Connect, idempotent)
                    }
                    // Once the answer began, what was read of it cannot be taken back.
                    stage => {
                        attempts.failed(s, kind);
                        let replayable = idempotent && stage == Stage::Sent;
                        kind == UpstreamErrorKind::Reset && attempts.may_retry(s, RetryReason::Reset, replayable)
                    }
                }
            }
        };
        let next = if retry { Some(attempts.next(s, request.hash)) } else { None };
        match (outcome, next) {
            (_, Some(Ok(next))) => backend = next,
            // A status to retry with no backend left: the answer is the caller's.
            (Ok(answer), _) => {
                attempts.finish(s);
                return Ok(answer);
            }
            (Err(_), Some(Err(last))) => {
                attempts.finish(s);
                return Err(last);
            }
            (Err(failure), None) => {
                attempts.finish(s);
                return Err(GatewayError::upstream(&failure.error, read_timeout));
            }
        }
    }
}

/// Where an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No connection: nothing was sent.
    Connect,
    /// Sending the request or waiting for the answer's head.
    Sent,
    /// Reading the answer's body.
    Body,
}

#[derive(Debug)]
struct Failure {
    stage: Stage,
    error: Box<pingora::Error>,
}

/// The connector fetches share (its pool keeps upstream connections between requests).
fn connector() -> &'static Connector {
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    CONNECTOR.get_or_init(|| Connector::new(None))
}

/// A request whose answer's head was read ([`open`]); its body and trailers are the caller's
/// to read.
pub(crate) struct Opened {
    pub(crate) session: HttpSession,
    peer: HttpPeer,
}

impl Opened {
    /// The answer was read whole: the connection may serve another request (kept at most
    /// `idle_timeout`, the service's).
    pub(crate) async fn release(self, idle_timeout: Option<Duration>) {
        connector().release_http_session(self.session, &self.peer, idle_timeout).await;
    }
}

/// Connect to `peer` and send the request, with the peer's read and write timeouts as a
/// proxied request has them; then wait for the answer's head.
async fn send(peer: &HttpPeer, request: &Fetch<'_>) -> Result<HttpSession, Failure> {
    let at = |stage| move |error| Failure { stage, error };
    let (mut session, _reused) = connector().get_http_session(peer).await.map_err(at(Stage::Connect))?;
    session.set_read_timeout(peer.options.read_timeout);
    session.set_write_timeout(peer.options.write_timeout);
    session.write_request_header(Box::new(request.head.clone())).await.map_err(at(Stage::Sent))?;
    if let Some(body) = &request.body {
        session.write_request_body(body.clone(), true).await.map_err(at(Stage::Sent))?;
    }
    session.finish_request_body().await.map_err(at(Stage::Sent))?;
    session.read_response_header().await.map_err(at(Stage::Sent))?;
    if session.response_header().is_none() {
        return Err(at(Stage::Sent)(pingora::Error::explain(pingora::ErrorType::InvalidHTTPHeader, "no head")));
    }
    Ok(session)
}

/// One attempt of [`open`]: the answer's head read, the rest left to the caller.
async fn open_one(peer: HttpPeer, request: &Fetch<'_>) -> Result<Opened, Failure> {
    let session = send(&peer, request).await?;
    Ok(Opened { session, peer })
}

/// One attempt of [`fetch`]: send the request to `peer` and read the answer whole (its body up
/// to the bound).
async fn exchange(peer: &HttpPeer, request: &Fetch<'_>, idle_timeout: Option<Duration>) -> Result<Fetched, Failure> {
    let at = |stage| move |error| Failure { stage, error };
    let mut session = send(peer, request).await?;
    let head = match session.response_header() {
        Some(head) => Box::new(head.clone()),
        None => return Err(at(Stage::Sent)(pingora::Error::explain(pingora::ErrorType::InvalidHTTPHeader, "no head"))),
    };
    let mut body = BytesMut::new();
    let mut oversized = false;
    while let Some(chunk) = session.read_response_body().await.map_err(at(Stage::Body))? {
        if body.len() as u64 + chunk.len() as u64 > request.max_body {
            oversized = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let trailers = match &mut session {
        HttpSession::H2(h2) if !oversized => h2.read_trailers().await.map_err(at(Stage::Body))?.map(Box::new),
        _ => None,
    };
    if !oversized {
        connector().release_http_session(session, peer, idle_timeout).await;
    }
    Ok(Fetched { head, body: (!oversized).then(|| body.freeze()), trailers })
}
