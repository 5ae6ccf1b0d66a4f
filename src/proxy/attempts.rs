//! Where Pingora's upstream phases meet the attempt engine ([`crate::upstream::attempt`]):
//! which service a route proxies to (a split's choice, with fallback), the gRPC-over-HTTP/1
//! refusal, the hash and peer of each attempt, its client span, and whether the request can be
//! sent again. The rules (backends, breaker, outlier records, retries) are the engine's.

use super::RequestState;
use crate::config::{LbAlgorithm, RouteTarget, ServiceId};
use crate::errors::GatewayError;
use crate::snapshot::Snapshot;
use crate::trace::ChildSpan;
use crate::upstream::attempt::{RetryReason, Service};
use crate::upstream::{self, split};
use pingora::prelude::*;
use std::net::SocketAddr;
use std::time::Instant;

/// Start proxying: choose the service, pass its circuit breaker and pick the first backend.
/// A split route whose chosen service has no usable backend (or an open circuit) falls back
/// to its other services, heaviest first.
pub(crate) fn start(
    snap: &Snapshot,
    session: &Session,
    state: &mut RequestState,
) -> Result<Box<HttpPeer>, GatewayError> {
    let route = snap.route(state.route.ok_or(GatewayError::Internal)?);
    let split = match route.target {
        RouteTarget::Service(id) => return start_on(snap, session, state, id),
        RouteTarget::Split(id) => &snap.config.splits[id],
        RouteTarget::Jobs | RouteTarget::JobStatus | RouteTarget::Aggregate(_) => return Err(GatewayError::Internal),
    };
    let sticky =
        split.sticky.as_ref().and_then(|k| split::sticky_value(k, &session.req_header().headers, claim(state)));
    let mut last = GatewayError::Internal;
    for service in split::order(split, sticky.as_deref(), rand::random()) {
        match start_on(snap, session, state, service) {
            Err(err @ (GatewayError::NoHealthyBackend { .. } | GatewayError::Unavailable { .. })) => last = err,
            other => return other,
        }
    }
    Err(last)
}

/// [`start`] on one service.
fn start_on(
    snap: &Snapshot,
    session: &Session,
    state: &mut RequestState,
    service: ServiceId,
) -> Result<Box<HttpPeer>, GatewayError> {
    state.upstream.service = Some(service);
    let s = snap.upstream(service);
    // gRPC ends every call with trailers (`grpc-status`), which HTTP/1.1 responses cannot
    // carry: answer at once rather than proxy a call whose outcome would be lost.
    if s.settings.transport.http2 && session.req_header().version != http::Version::HTTP_2 && is_grpc(session) {
        return Err(GatewayError::HttpVersionNotSupported(
            "gRPC needs HTTP/2: connect with TLS (ALPN h2) or h2c prior knowledge",
        ));
    }
    let hash = hash(&s, session, state)?;
    let backend = state.upstream.attempts.start(&s, &hash)?;
    peer(snap, state, &s, backend)
}

/// `Content-Type: application/grpc` (and its `+proto`/`+json` forms).
fn is_grpc(session: &Session) -> bool {
    let ct = session.req_header().headers.get(http::header::CONTENT_TYPE);
    ct.is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The verified claim `name` of the request's caller, as text.
fn claim(state: &RequestState) -> impl Fn(&str) -> Option<String> + '_ {
    |name| state.identity.as_ref().and_then(|i| i.claim_text(name))
}

/// The service a request the gateway fetches itself goes to (a transformed answer): the route's,
/// or a split's choice (the fetch's own attempts fall back among that service's backends).
pub(crate) fn chosen_service(
    snap: &Snapshot,
    session: &Session,
    state: &RequestState,
) -> Result<ServiceId, GatewayError> {
    let route = snap.route(state.route.ok_or(GatewayError::Internal)?);
    match route.target {
        RouteTarget::Service(id) => Ok(id),
        RouteTarget::Split(id) => {
            let split = &snap.config.splits[id];
            let sticky =
                split.sticky.as_ref().and_then(|k| split::sticky_value(k, &session.req_header().headers, claim(state)));
            split::order(split, sticky.as_deref(), rand::random()).first().copied().ok_or(GatewayError::Internal)
        }
        RouteTarget::Jobs | RouteTarget::JobStatus | RouteTarget::Aggregate(_) => Err(GatewayError::Internal),
    }
}

/// What consistent hashing hashes for this request (nothing for other balancers).
pub(crate) fn hash(s: &Service<'_>, session: &Session, state: &RequestState) -> Result<Vec<u8>, GatewayError> {
    let LbAlgorithm::ConsistentHash(key) = &s.settings.lb else { return Ok(Vec::new()) };
    let req = session.req_header();
    let path = state.upstream_uri.as_ref().map_or_else(|| req.uri.path(), |u| u.path());
    upstream::hash_key(key, &req.headers, path, &state.client.ip_text, claim(state))
}

/// The peer of an attempt at `backend` (the route's `timeout` bounds the wait for the answer),
/// and the attempt's client span (tracing on).
fn peer(
    snap: &Snapshot,
    state: &mut RequestState,
    s: &Service<'_>,
    backend: SocketAddr,
) -> Result<Box<HttpPeer>, GatewayError> {
    let route = snap.route(state.route.ok_or(GatewayError::Internal)?);
    state.upstream.span = state.trace.as_ref().map(|_| crate::trace::context::new_span_id());
    Ok(Box::new(s.peer(backend, route.timeout)))
}

/// The peer of the next attempt: a usable backend of the request's service not tried yet.
pub(crate) fn next_peer(
    snap: &Snapshot,
    session: &Session,
    state: &mut RequestState,
) -> Result<Box<HttpPeer>, GatewayError> {
    let s = snap.upstream(state.upstream.service.ok_or(GatewayError::Internal)?);
    let hash = hash(&s, session, state)?;
    let backend = state.upstream.attempts.next(&s, &hash)?;
    peer(snap, state, &s, backend)
}

/// The current attempt is over: its client span (tracing on) is recorded, once. `error` says
/// how it failed when the backend did not answer.
pub(crate) fn record_span(snap: &Snapshot, state: &mut RequestState, error: Option<&'static str>) {
    let upstream = &mut state.upstream;
    let (Some(trace), Some(span_id), Some(started)) =
        (state.trace.as_mut(), upstream.span.take(), upstream.attempts.started())
    else {
        return;
    };
    trace.child(ChildSpan {
        span_id,
        started,
        ended: Instant::now(),
        service: upstream.service.map_or("-", |s| snap.service(s).name.as_str()),
        backend: upstream.attempts.backend(),
        status: upstream.attempts.status(),
        error,
        retry: upstream.attempts.count().saturating_sub(1),
        part: None,
    });
}

/// Whether the failed attempt is retried on another backend for `reason` (the engine's rules;
/// see [`crate::upstream::attempt::Attempts::may_retry`]). Counts the retry when it is.
pub(crate) fn may_retry(snap: &Snapshot, session: &Session, state: &mut RequestState, reason: RetryReason) -> bool {
    let Some(service) = state.upstream.service else { return false };
    state.upstream.attempts.may_retry(&snap.upstream(service), reason, replayable(session))
}

/// The request can be sent again: an idempotent method (RFC 9110 §9.2.2), a body Pingora kept
/// whole in its retry buffer (64 KiB), and nothing sent downstream yet.
fn replayable(session: &Session) -> bool {
    session.req_header().method.is_idempotent()
        && !session.as_ref().retry_buffer_truncated()
        && session.response_written().is_none()
}

/// The service of the request, as the engine takes it, if one was chosen.
pub(crate) fn service<'a>(snap: &'a Snapshot, state: &RequestState) -> Option<Service<'a>> {
    state.upstream.service.map(|id| snap.upstream(id))
}
