//! A proxied request's upstream attempts (ARCHITECTURE.md §7.3): which service (a split's
//! choice, with fallback), whether its circuit breaker admits the request, which backend each
//! attempt goes to, how each attempt ended (outlier detection, the breaker's count), and
//! whether a failed attempt is retried on another backend (`retry_on`, `retries`, the retry
//! budget, and only when the request can be replayed).

use super::{hash_key, RequestState};
use crate::config::{LbAlgorithm, RouteTarget, ServiceId, ServiceSettings, StickyKey};
use crate::errors::{GatewayError, UpstreamErrorKind};
use crate::forwarding;
use crate::snapshot::Snapshot;
use crate::trace::ChildSpan;
use crate::upstream::breaker::{Refusal, State};
use crate::upstream::outlier::Verdict;
use crate::upstream::{now_ms, split, Pool};
use pingora::prelude::*;
use std::time::Instant;

/// Why an attempt is retried (the `reason` label of `siger_upstream_retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryReason {
    /// The connection could not be made.
    Connect,
    /// The connection broke before a response.
    Reset,
    /// The backend answered a `retry_on` status.
    Status,
}

impl RetryReason {
    /// Metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Reset => "reset",
            RetryReason::Status => "status",
        }
    }
}

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
    let sticky = split.sticky.as_ref().and_then(|k| sticky_value(k, session.req_header(), state));
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
    state.service = Some(service);
    let settings = snap.service(service);
    // gRPC ends every call with trailers (`grpc-status`), which HTTP/1.1 responses cannot
    // carry: answer at once rather than proxy a call whose outcome would be lost.
    if settings.transport.http2 && session.req_header().version != http::Version::HTTP_2 && is_grpc(session) {
        return Err(GatewayError::HttpVersionNotSupported(
            "gRPC needs HTTP/2: connect with TLS (ALPN h2) or h2c prior knowledge",
        ));
    }
    let peer = next_peer(snap, session, state)?;
    admit(snap, settings, service, state)?;
    if let Some(share) = settings.retry.budget_milli {
        snap.pool(service).state.retry_budget.deposit(share);
    }
    Ok(peer)
}

/// `Content-Type: application/grpc` (and its `+proto`/`+json` forms).
fn is_grpc(session: &Session) -> bool {
    let ct = session.req_header().headers.get(http::header::CONTENT_TYPE);
    ct.is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The value a sticky split hashes: the header, the cookie or the verified claim.
fn sticky_value(key: &StickyKey, req: &RequestHeader, state: &RequestState) -> Option<Vec<u8>> {
    match key {
        StickyKey::Header(name) => {
            forwarding::single_line(&req.headers, name).ok().flatten().map(|v| v.as_bytes().to_vec())
        }
        StickyKey::Cookie(name) => req.headers.get_all(http::header::COOKIE).iter().find_map(|line| {
            let line = line.to_str().ok()?;
            line.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then(|| v.as_bytes().to_vec())
            })
        }),
        StickyKey::Claim(name) => state.identity.as_ref().and_then(|i| i.claim_text(name)).map(String::into_bytes),
    }
}

/// The circuit breaker's verdict on this request.
fn admit(
    snap: &Snapshot,
    settings: &ServiceSettings,
    service: ServiceId,
    state: &mut RequestState,
) -> Result<(), GatewayError> {
    let Some(breaker) = &settings.circuit_breaker else { return Ok(()) };
    match snap.pool(service).state.breaker.admit(breaker, now_ms()) {
        Ok(ticket) => {
            state.breaker = Some(ticket);
            Ok(())
        }
        Err(refusal) => {
            snap.metrics.circuit_refused(service, matches!(refusal, Refusal::TooManyInFlight));
            // The backend picked for this request was never contacted.
            state.attempt = Default::default();
            state.attempts = 0;
            Err(match refusal {
                Refusal::Open { retry_after } => GatewayError::Unavailable {
                    message: format!("service {} is failing: its circuit is open", settings.name),
                    retry_after,
                },
                Refusal::TooManyInFlight => GatewayError::Unavailable {
                    message: format!("service {} is at its limit of concurrent requests", settings.name),
                    retry_after: 1,
                },
            })
        }
    }
}

/// The peer of the next attempt: a usable backend of the request's service not tried yet.
/// Starts a fresh [`super::Attempt`] only when there is one.
pub(crate) fn next_peer(
    snap: &Snapshot,
    session: &Session,
    state: &mut RequestState,
) -> Result<Box<HttpPeer>, GatewayError> {
    let route_id = state.route.ok_or(GatewayError::Internal)?;
    let service = state.service.ok_or(GatewayError::Internal)?;
    let (settings, pool) = (snap.service(service), snap.pool(service));
    let key = match &settings.lb {
        LbAlgorithm::ConsistentHash(k) => hash_key(k, session, state)?,
        _ => Vec::new(),
    };
    match pool.select(&key, &state.tried) {
        Some(selected) => {
            state.attempt = super::Attempt {
                backend: Some(selected.addr),
                slot: selected.guard,
                started: Some(Instant::now()),
                span: state.trace.as_ref().map(|_| crate::trace::context::new_span_id()),
                ..Default::default()
            };
            state.attempts += 1;
            Ok(Box::new(Pool::peer(settings, selected.addr, snap.route(route_id).timeout)))
        }
        None if state.tried.is_empty() => Err(GatewayError::NoHealthyBackend { service: settings.name.clone() }),
        // Every usable backend failed: answer with the last failure.
        None => Err(state.attempt.connect_error.take().unwrap_or(GatewayError::BadGateway {
            kind: UpstreamErrorKind::Connect,
            detail: "no backend accepted the connection".into(),
        })),
    }
}

/// The current attempt is over: its client span (tracing on) is recorded, once. `error` says
/// how it failed when the backend did not answer.
pub(crate) fn record_span(snap: &Snapshot, state: &mut RequestState, error: Option<&'static str>) {
    let (Some(trace), Some(span_id), Some(started)) =
        (state.trace.as_mut(), state.attempt.span.take(), state.attempt.started)
    else {
        return;
    };
    trace.child(ChildSpan {
        span_id,
        started,
        ended: Instant::now(),
        service: state.service.map_or("-", |s| snap.service(s).name.as_str()),
        backend: state.attempt.backend,
        status: state.attempt.status,
        error,
        retry: state.attempts.saturating_sub(1),
        part: None,
    });
}

/// The current attempt failed (`kind`): counted for outlier detection and the breaker.
pub(crate) fn attempt_failed(snap: &Snapshot, state: &mut RequestState) {
    state.last_attempt_failed = Some(true);
    let (Some(service), Some(backend)) = (state.service, state.attempt.backend) else { return };
    let Some(outlier) = &snap.service(service).outlier_detection else { return };
    let pool = snap.pool(service);
    if let Verdict::Ejected { for_ms } = pool.state.outliers.failure(backend, pool.size(), outlier, now_ms()) {
        snap.metrics.backend_ejected(service);
        log::warn!(
            "service {}: backend {backend} ejected for {}s after {} failures in a row",
            snap.service(service).name,
            for_ms / 1000,
            outlier.consecutive_failures
        );
    }
}

/// The current attempt got an answer that is not a failure.
pub(crate) fn attempt_succeeded(snap: &Snapshot, state: &mut RequestState) {
    state.last_attempt_failed = Some(false);
    if let (Some(service), Some(backend)) = (state.service, state.attempt.backend) {
        if snap.service(service).outlier_detection.is_some() {
            snap.pool(service).state.outliers.success(backend);
        }
    }
}

/// Whether the failed attempt may be retried on another backend for `reason`: the service
/// retries it, `retries` is not spent, the request can be sent again (idempotent method and
/// a replayable body, except after a connect failure, when nothing was sent), nothing went
/// downstream yet, and the retry budget allows it. Counts the retry when it does.
pub(crate) fn may_retry(snap: &Snapshot, session: &Session, state: &mut RequestState, reason: RetryReason) -> bool {
    let Some(service) = state.service else { return false };
    let settings = snap.service(service);
    let policy = &settings.retry;
    let wanted = match reason {
        RetryReason::Connect => policy.connect,
        RetryReason::Reset => policy.reset,
        RetryReason::Status => true,
    };
    if !wanted || state.attempts > settings.retries {
        return false;
    }
    if reason != RetryReason::Connect && !replayable(session) {
        return false;
    }
    if let Some(share) = policy.budget_milli {
        if !snap.pool(service).state.retry_budget.try_spend(share, now_ms()) {
            snap.metrics.retry_budget_exhausted(service);
            return false;
        }
    }
    if let Some(backend) = state.attempt.backend.filter(|b| !state.tried.contains(b)) {
        state.tried.push(backend);
    }
    snap.metrics.upstream_retry(service, reason);
    true
}

/// The request can be sent again: an idempotent method (RFC 9110 §9.2.2), a body Pingora kept
/// whole in its retry buffer (64 KiB), and nothing sent downstream yet.
fn replayable(session: &Session) -> bool {
    session.req_header().method.is_idempotent()
        && !session.as_ref().retry_buffer_truncated()
        && session.response_written().is_none()
}

/// Whether `status` from the current attempt's backend is one the service retries.
pub(crate) fn retries_status(snap: &Snapshot, state: &RequestState, status: u16) -> bool {
    state.service.is_some_and(|s| snap.service(s).retry.statuses.contains(&status))
}

/// The request is done: its outcome goes to the circuit breaker.
pub(crate) fn finish(snap: &Snapshot, state: &mut RequestState) {
    let (Some(ticket), Some(service)) = (state.breaker.take(), state.service) else { return };
    let Some(settings) = &snap.service(service).circuit_breaker else { return };
    let breaker = &snap.pool(service).state.breaker;
    let name = &snap.service(service).name;
    match state.last_attempt_failed {
        // The client left before any backend answered: no verdict on the service.
        None => breaker.abandon(&ticket),
        Some(failed) => match breaker.record(settings, &ticket, failed, now_ms()) {
            Some(State::Open) => log::warn!("service {name}: circuit open for {:?}", settings.open_for),
            Some(State::Closed) => log::info!("service {name}: circuit closed"),
            _ => {}
        },
    }
}
