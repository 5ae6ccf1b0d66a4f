//! Requests the gateway makes itself (aggregation parts, transcoded gRPC calls) through the
//! same machinery as proxied ones: the service's pool (balancing, health, outlier ejection),
//! its circuit breaker, its retry policy and budget, its transport and timeouts, over
//! Pingora's HTTP connector with its connection reuse. The caller says what one attempt on one
//! backend is; this module picks the backends and decides whether to try another.

use super::{now_ms, Pool};
use crate::snapshot::Snapshot;
use pingora::connectors::http::Connector;
use pingora::upstreams::peer::HttpPeer;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The connector these requests share (its pool keeps upstream connections between requests).
pub(crate) fn connector() -> &'static Connector {
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    CONNECTOR.get_or_init(|| Connector::new(None))
}

/// What became of one exchange, for its span and the access log: when it ran, the backend of
/// its last attempt, the status it answered and how many attempts it took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Report {
    pub(crate) started: Instant,
    pub(crate) ended: Instant,
    pub(crate) backend: Option<SocketAddr>,
    pub(crate) status: Option<u16>,
    pub(crate) attempts: u32,
}

impl Report {
    /// A report starting now.
    pub(crate) fn new() -> Report {
        let now = Instant::now();
        Report { started: now, ended: now, backend: None, status: None, attempts: 0 }
    }
}

/// How an attempt failed before a response.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// No connection (nothing was sent).
    Connect,
    /// The connection broke before a response head.
    Reset,
    /// No response head within the peer's read timeout.
    Timeout,
    /// The response timed out or broke while its body was read.
    Read,
}

impl AttemptError {
    /// A short description for error messages.
    pub(crate) fn text(&self) -> &'static str {
        match self {
            AttemptError::Connect => "connection failed",
            AttemptError::Reset => "connection broken before an answer",
            AttemptError::Timeout => "no answer in time",
            AttemptError::Read => "answer broken off",
        }
    }
}

/// Why no backend answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unanswered {
    /// What happened (names the service, never a backend's secrets).
    pub(crate) message: String,
    /// The last attempt waited out its read timeout.
    pub(crate) timed_out: bool,
}

/// Run `attempt` on the service's backends until one answers or the retry policy gives up:
/// `Ok((status, value))` of the last attempt, or why no backend answered. `idempotent` false
/// retries only attempts that never reached a backend (a refused connection). The peer handed
/// to `attempt` waits at most `response_timeout` for a response head (the service's
/// `read_timeout` when shorter).
pub(crate) async fn exchange<T, F, Fut>(
    snap: &Snapshot,
    service: usize,
    idempotent: bool,
    response_timeout: Option<Duration>,
    report: &mut Report,
    mut attempt: F,
) -> Result<(u16, T), Unanswered>
where
    F: FnMut(HttpPeer) -> Fut,
    Fut: Future<Output = Result<(u16, T), AttemptError>>,
{
    let settings = snap.service(service);
    let pool = snap.pool(service);
    let ticket = match &settings.circuit_breaker {
        Some(b) => match pool.state.breaker.admit(b, now_ms()) {
            Ok(ticket) => Some(ticket),
            Err(_) => {
                snap.metrics.circuit_refused(service, false);
                let message = format!("service {} is failing: its circuit is open", settings.name);
                return Err(Unanswered { message, timed_out: false });
            }
        },
        None => None,
    };
    if let Some(share) = settings.retry.budget_milli {
        pool.state.retry_budget.deposit(share);
    }
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut attempts = 0;
    let outcome = loop {
        attempts += 1;
        let Some(selected) = pool.select(&[], &tried) else {
            let message = if tried.is_empty() {
                format!("service {} has no healthy backend", settings.name)
            } else {
                format!("no backend of service {} answered", settings.name)
            };
            break Err(Unanswered { message, timed_out: false });
        };
        let addr = selected.addr;
        let peer = Pool::peer(settings, addr, response_timeout);
        (report.backend, report.status, report.attempts) = (Some(addr), None, attempts);
        let result = attempt(peer).await;
        report.status = result.as_ref().ok().map(|(status, _)| *status);
        let failed = match &result {
            Ok((status, _)) => *status >= 500,
            Err(_) => true,
        };
        if let Some(outlier) = &settings.outlier_detection {
            if failed {
                if let super::outlier::Verdict::Ejected { .. } =
                    pool.state.outliers.failure(addr, pool.size(), outlier, now_ms())
                {
                    snap.metrics.backend_ejected(service);
                }
            } else {
                pool.state.outliers.success(addr);
            }
        }
        drop(selected);
        let retry_reason = match &result {
            Err(AttemptError::Connect) if settings.retry.connect => Some(crate::proxy::RetryReason::Connect),
            Err(AttemptError::Reset) if settings.retry.reset && idempotent => Some(crate::proxy::RetryReason::Reset),
            Ok((status, _)) if settings.retry.statuses.contains(status) && idempotent => {
                Some(crate::proxy::RetryReason::Status)
            }
            _ => None,
        };
        if let Some(reason) = retry_reason {
            let budget_ok = settings.retry.budget_milli.is_none_or(|share| {
                let ok = pool.state.retry_budget.try_spend(share, now_ms());
                if !ok {
                    snap.metrics.retry_budget_exhausted(service);
                }
                ok
            });
            if attempts <= settings.retries && budget_ok {
                tried.push(addr);
                snap.metrics.upstream_retry(service, reason);
                continue;
            }
        }
        break result.map_err(|e| Unanswered {
            message: format!("service {}: {}", settings.name, e.text()),
            timed_out: matches!(e, AttemptError::Timeout),
        });
    };
    if let (Some(ticket), Some(b)) = (ticket, &settings.circuit_breaker) {
        let failed = match &outcome {
            Ok((status, _)) => *status >= 500,
            Err(_) => true,
        };
        pool.state.breaker.record(b, &ticket, failed, now_ms());
    }
    outcome
}

/// A request whose answer's head was read; its body and trailers are the caller's to read
/// (and the session its to release to [`connector`] when the answer was read whole).
pub(crate) struct Opened {
    pub(crate) session: pingora::protocols::http::client::HttpSession,
    pub(crate) peer: HttpPeer,
}

/// One attempt of a request with a body known whole: send it and wait for the answer's head.
pub(crate) async fn open(
    peer: HttpPeer,
    head: &pingora::http::RequestHeader,
    body: bytes::Bytes,
) -> Result<(u16, Opened), AttemptError> {
    let (mut session, _reused) = connector().get_http_session(&peer).await.map_err(|_| AttemptError::Connect)?;
    session.write_request_header(Box::new(head.clone())).await.map_err(|_| AttemptError::Reset)?;
    session.write_request_body(body, true).await.map_err(|_| AttemptError::Reset)?;
    session.finish_request_body().await.map_err(|_| AttemptError::Reset)?;
    session.read_response_header().await.map_err(|e| match e.etype {
        pingora::ErrorType::ReadTimedout => AttemptError::Timeout,
        _ => AttemptError::Reset,
    })?;
    let status = session.response_header().map_or(0, |r| r.status.as_u16());
    Ok((status, Opened { session, peer }))
}
