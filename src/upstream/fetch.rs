//! Requests the gateway makes to a service itself and reads whole before it answers its client:
//! aggregation parts today; a transcoded gRPC call or a response to transform are the same
//! shape (Pingora writes a proxied answer's head before its body filters run, so an answer that
//! must be judged whole before the client hears anything is fetched here instead).
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
    /// The trailers that ended the answer (HTTP/2: a gRPC call's `grpc-status`), for the
    /// gRPC transcoding glue to come (docs/grpc.md); aggregation parts have none to read.
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
    let mut attempts = Attempts::default();
    let mut backend = attempts.start(s, request.hash)?;
    // The body is kept whole, so only the method decides whether it may be sent again.
    let idempotent = request.head.method.is_idempotent();
    loop {
        *report = Report { backend: Some(backend), status: None, attempts: attempts.count() };
        let peer = s.peer(backend, request.response_timeout);
        let outcome = exchange(&peer, request, s.settings.idle_timeout).await;
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
                return Err(GatewayError::upstream(&failure.error, peer.options.read_timeout));
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

/// One attempt: send the request to `peer` and read the answer whole (its body up to the
/// bound), with the peer's read and write timeouts as a proxied request has them.
async fn exchange(peer: &HttpPeer, request: &Fetch<'_>, idle_timeout: Option<Duration>) -> Result<Fetched, Failure> {
    let at = |stage| move |error| Failure { stage, error };
    let connector = connector();
    let (mut session, _reused) = connector.get_http_session(peer).await.map_err(at(Stage::Connect))?;
    session.set_read_timeout(peer.options.read_timeout);
    session.set_write_timeout(peer.options.write_timeout);
    session.write_request_header(Box::new(request.head.clone())).await.map_err(at(Stage::Sent))?;
    if let Some(body) = &request.body {
        session.write_request_body(body.clone(), true).await.map_err(at(Stage::Sent))?;
    }
    session.finish_request_body().await.map_err(at(Stage::Sent))?;
    session.read_response_header().await.map_err(at(Stage::Sent))?;
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
        connector.release_http_session(session, peer, idle_timeout).await;
    }
    Ok(Fetched { head, body: (!oversized).then(|| body.freeze()), trailers })
}
