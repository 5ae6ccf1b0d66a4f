//! The upstream attempt engine (ARCHITECTURE.md §7.3): how one request's attempts at a service
//! go, for proxied requests and for the requests the gateway makes itself (aggregation parts,
//! [`super::fetch`]). Which backend each attempt goes to (not one that failed already), whether
//! the service's circuit breaker admits the request, how each attempt ended (counted in
//! `siger_upstream_errors_total`, judged by outlier detection), whether a failed attempt is
//! tried again on another backend (`retry_on`, `retries`, the retry budget, and only when the
//! request can be sent again), and the breaker's verdict once the request is done.
//!
//! The engine holds no reference into a configuration: each call is handed the [`Service`] it
//! is about (its settings, its pool in force and the generation's metrics), so a proxied
//! request can keep its [`Attempts`] between Pingora's phases. It does no I/O and allocates
//! nothing on a request's first attempt.
//!
//! One request, in order: [`Attempts::start`] (the first backend, the breaker, the budget's
//! deposit); per attempt [`Attempts::answered`] or [`Attempts::failed`] /
//! [`Attempts::connect_failed`]; after a failure [`Attempts::may_retry`] and, when it says yes,
//! [`Attempts::next`]; finally [`Attempts::finish`] (or dropping the [`Attempts`], when the
//! request was abandoned: the breaker gets no verdict then).

use super::breaker::{Refusal, State, Ticket};
use super::outlier::Verdict;
use super::{now_ms, InFlightGuard, Pool, ServiceState};
use crate::config::{ServiceId, ServiceSettings};
use crate::errors::{GatewayError, UpstreamErrorKind};
use crate::observability::ConfigMetrics;
use crate::tls::UpstreamTlsMaterial;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// One service as the engine sees it, in one configuration generation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Service<'a> {
    pub(crate) id: ServiceId,
    pub(crate) settings: &'a ServiceSettings,
    pub(crate) pool: &'a Pool,
    /// The transport material built for it (upstream TLS).
    pub(crate) tls: Option<&'a UpstreamTlsMaterial>,
    pub(crate) metrics: &'a ConfigMetrics,
}

impl Service<'_> {
    /// The peer for its backend `addr`, with the service's transport and timeouts (see
    /// [`Pool::peer`]; `response_timeout`: the route's `timeout`).
    pub(crate) fn peer(&self, addr: SocketAddr, response_timeout: Option<Duration>) -> HttpPeer {
        Pool::peer(self.settings, self.tls, addr, response_timeout)
    }
}

/// One attempt: a retry starts a fresh one, so a connect failure on the first backend never
/// colours how a timeout on the second is answered.
#[derive(Debug, Default)]
struct Attempt {
    backend: Option<SocketAddr>,
    /// least_conn's in-flight slot on the backend, released when the attempt ends.
    slot: Option<InFlightGuard>,
    started: Option<Instant>,
    /// The status the backend answered.
    status: Option<u16>,
    /// How it failed to connect; answered when no backend is left to try.
    connect_error: Option<GatewayError>,
    /// Its failure is counted in `siger_upstream_errors_total` already.
    counted: bool,
}

/// A request's attempts at one service.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    /// Admitted by the service's circuit breaker: held until the verdict, with the state the
    /// breaker lives in (for a request dropped before [`Attempts::finish`]).
    ticket: Option<(Ticket, Arc<ServiceState>)>,
    /// Backends that failed this request: never picked again for it.
    tried: Vec<SocketAddr>,
    /// Attempts made (the first and each retry).
    count: u32,
    /// How the last attempt ended: `Some(true)` failed (connect error, timeout, reset, 5xx),
    /// `Some(false)` answered; what the breaker counts.
    last_failed: Option<bool>,
    current: Attempt,
}

impl Attempts {
    /// The first attempt: a usable backend (hashing `hash` for consistent hashing), then the
    /// circuit breaker's admission, then the request's deposit in the retry budget. A refusal
    /// leaves no attempt made, so another service may be tried (a split's fallback).
    pub(crate) fn start(&mut self, s: &Service<'_>, hash: &[u8]) -> Result<SocketAddr, GatewayError> {
        let backend = self.next(s, hash)?;
        self.admit(s)?;
        if let Some(share) = s.settings.retry.budget_milli {
            s.pool.state.retry_budget.deposit(share);
        }
        Ok(backend)
    }

    /// The next attempt: a usable backend not tried yet. When there is none, the answer: no
    /// healthy backend, or (after failures) how the last attempt failed to connect.
    pub(crate) fn next(&mut self, s: &Service<'_>, hash: &[u8]) -> Result<SocketAddr, GatewayError> {
        match s.pool.select(hash, &self.tried) {
            Some(selected) => {
                self.current = Attempt {
                    backend: Some(selected.addr),
                    slot: selected.guard,
                    started: Some(Instant::now()),
                    ..Attempt::default()
                };
                self.count += 1;
                Ok(selected.addr)
            }
            None if self.tried.is_empty() => Err(GatewayError::NoHealthyBackend { service: s.settings.name.clone() }),
            None => Err(self.current.connect_error.take().unwrap_or(GatewayError::BadGateway {
                kind: UpstreamErrorKind::Connect,
                detail: "no backend accepted the connection".into(),
            })),
        }
    }

    /// The circuit breaker's verdict on this request (a refusal is counted and answered 503).
    fn admit(&mut self, s: &Service<'_>) -> Result<(), GatewayError> {
        let Some(breaker) = &s.settings.circuit_breaker else { return Ok(()) };
        let refusal = match s.pool.state.breaker.admit(breaker, now_ms()) {
            Ok(ticket) => {
                self.ticket = Some((ticket, s.pool.state.clone()));
                return Ok(());
            }
            Err(refusal) => refusal,
        };
        s.metrics.circuit_refused(s.id, refusal == Refusal::TooManyInFlight);
        // The backend picked for this request was never contacted.
        self.current = Attempt::default();
        self.count = 0;
        let name = &s.settings.name;
        Err(match refusal {
            Refusal::Open { retry_after } => GatewayError::Unavailable {
                message: format!("service {name} is failing: its circuit is open"),
                retry_after,
            },
            Refusal::TooManyInFlight => GatewayError::Unavailable {
                message: format!("service {name} is at its limit of concurrent requests"),
                retry_after: 1,
            },
        })
    }

    /// The attempt could not connect (`kind`: refused, timed out, TLS): nothing was sent, so
    /// the backend is never tried again for this request; `error` is answered should no other
    /// backend be left.
    pub(crate) fn connect_failed(&mut self, s: &Service<'_>, kind: UpstreamErrorKind, error: Option<GatewayError>) {
        if let Some(backend) = self.current.backend {
            self.tried.push(backend);
        }
        self.failed(s, kind);
        self.current.connect_error = error;
    }

    /// The attempt failed (`kind`) after it connected: counted in `siger_upstream_errors_total`
    /// and by outlier detection (an ejection is logged), and it is what the breaker will count.
    pub(crate) fn failed(&mut self, s: &Service<'_>, kind: UpstreamErrorKind) {
        s.metrics.upstream_error(s.id, kind);
        self.current.counted = true;
        self.last_failed = Some(true);
        let (Some(backend), Some(outlier)) = (self.current.backend, &s.settings.outlier_detection) else { return };
        let pool = s.pool;
        if let Verdict::Ejected { for_ms } = pool.state.outliers.failure(backend, pool.size(), outlier, now_ms()) {
            s.metrics.backend_ejected(s.id);
            log::warn!(
                "service {}: backend {backend} ejected for {}s after {} failures in a row",
                s.settings.name,
                for_ms / 1000,
                outlier.consecutive_failures
            );
        }
    }

    /// The backend answered `status`: a 5xx is a failure ([`Self::failed`]), anything else
    /// ends the backend's failure streak.
    pub(crate) fn answered(&mut self, s: &Service<'_>, status: u16) {
        self.current.status = Some(status);
        if status >= 500 {
            return self.failed(s, UpstreamErrorKind::Status5xx);
        }
        self.last_failed = Some(false);
        if let (Some(backend), Some(_)) = (self.current.backend, &s.settings.outlier_detection) {
            s.pool.state.outliers.success(backend);
        }
    }

    /// Whether the failed attempt is tried again on another backend for `why`: the service
    /// retries it (`retry_on`; for [`RetryReason::Status`], the status answered), `retries` is
    /// not spent, the request can be sent again (`replayable`; not asked after a connect
    /// failure, when nothing was sent), and the retry budget allows it. Counts the retry (or
    /// the budget's refusal) and leaves the backend out of the next pick.
    pub(crate) fn may_retry(&mut self, s: &Service<'_>, why: RetryReason, replayable: bool) -> bool {
        let policy = &s.settings.retry;
        let wanted = match why {
            RetryReason::Connect => policy.connect,
            RetryReason::Reset => policy.reset,
            RetryReason::Status => self.current.status.is_some_and(|status| policy.statuses.contains(&status)),
        };
        if !wanted || self.count > s.settings.retries || (why != RetryReason::Connect && !replayable) {
            return false;
        }
        if let Some(share) = policy.budget_milli {
            if !s.pool.state.retry_budget.try_spend(share, now_ms()) {
                s.metrics.retry_budget_exhausted(s.id);
                return false;
            }
        }
        if let Some(backend) = self.current.backend.filter(|b| !self.tried.contains(b)) {
            self.tried.push(backend);
        }
        s.metrics.upstream_retry(s.id, why.label());
        true
    }

    /// The request is done: its in-flight slot goes back and its outcome goes to the circuit
    /// breaker, once (a request that never got an answer or a failure gives no verdict). The
    /// breaker's transitions are logged.
    pub(crate) fn finish(&mut self, s: &Service<'_>) {
        self.current.slot = None;
        let Some((ticket, state)) = self.ticket.take() else { return };
        let Some(settings) = &s.settings.circuit_breaker else { return };
        let name = &s.settings.name;
        match self.last_failed {
            // The client left before any backend answered: no verdict on the service.
            None => state.breaker.abandon(&ticket),
            Some(failed) => match state.breaker.record(settings, &ticket, failed, now_ms()) {
                Some(State::Open) => log::warn!("service {name}: circuit open for {:?}", settings.open_for),
                Some(State::Closed) => log::info!("service {name}: circuit closed"),
                _ => {}
            },
        }
    }

    /// The current attempt's backend.
    pub(crate) fn backend(&self) -> Option<SocketAddr> {
        self.current.backend
    }

    /// When the current attempt started.
    pub(crate) fn started(&self) -> Option<Instant> {
        self.current.started
    }

    /// The status the current attempt's backend answered.
    pub(crate) fn status(&self) -> Option<u16> {
        self.current.status
    }

    /// Attempts made so far.
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// Whether the current attempt's failure is counted in `siger_upstream_errors_total`.
    pub(crate) fn counted(&self) -> bool {
        self.current.counted
    }
}

impl Drop for Attempts {
    fn drop(&mut self) {
        // Abandoned before [`Attempts::finish`] (an aggregation part at the route's timeout):
        // a half-open probe slot it held goes back.
        if let Some((ticket, state)) = self.ticket.take() {
            state.breaker.abandon(&ticket);
        }
    }
}

#[cfg(test)]
mod tests;
