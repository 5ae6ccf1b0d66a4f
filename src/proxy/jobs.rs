//! The HTTP side of `/jobs/submit`, run from `request_filter` once the jobs route admitted the
//! request (method, authentication, roles and rate limit are checked as for any route):
//! headers, the body (read here, so it is consumed — fine, jobs never reach a backend), then
//! [`Jobs::publish`]; and of `GET /jobs/submit/<job_id>` (the 202's `Location`), answered by
//! [`Jobs::status`]. The rules themselves live in `crate::jobs`.

use super::local::{refuse, respond};
use super::RequestState;
use crate::answer::LocalAnswer;
use crate::config::{JobsSettings, RouteTarget};
use crate::errors::GatewayError;
use crate::jobs::{rejection_reason, request, Accepted, Jobs, PublishFailure, Submission};
use crate::observability::logger;
use crate::runtime::Runtime;
use crate::snapshot::Snapshot;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, EXPECT};
use pingora::prelude::*;
use std::time::Duration;

/// How a submission ended before a 202.
pub(super) enum Failure {
    /// Answer with this error.
    Answer(GatewayError),
    /// Answer with this error; `siger_jobs_failed_total` already counts it (publish failures).
    Counted(GatewayError),
    /// The client is gone; nothing can be written.
    Gone(Box<Error>),
}

impl From<GatewayError> for Failure {
    fn from(e: GatewayError) -> Self {
        Failure::Answer(e)
    }
}

/// Answer a request for the jobs path. Always returns `Ok(true)` unless the client vanished.
pub(super) async fn handle(
    runtime: &Runtime,
    snap: &Snapshot,
    jobs: &Jobs,
    settings: &JobsSettings,
    session: &mut Session,
    state: &mut RequestState,
) -> Result<bool> {
    let (route_path, target) = match state.route.map(|id| snap.route(id)) {
        Some(route) => (route.path.as_str(), route.target),
        None => return refuse(session, snap, state, &GatewayError::Internal).await.map(|_| true),
    };
    // Both jobs routes own the jobs path and everything under it: the path says which resource
    // is meant, the route (matched by method) what is asked of it.
    let path =
        crate::routing::normalize_path(session.req_header().uri.path()).map_err(|_| Error::new(InternalError))?;
    let rest = crate::routing::route_path(&path).strip_prefix(route_path).unwrap_or_default().to_string();
    let submitting = rest.is_empty() || rest == "/";
    let reading = matches!(session.req_header().method, http::Method::GET | http::Method::HEAD);
    if target == RouteTarget::JobStatus && !session.is_body_done() && !session.is_body_empty() {
        // Nothing here reads a body: close rather than drain it.
        session.set_keepalive(None);
    }
    match (target, submitting) {
        (RouteTarget::JobStatus, false) if reading => {
            let answer = match crate::jobs::status::job_id_of(&rest) {
                Some(id) => jobs.status(settings, &id, state.identity.as_deref()).await,
                None => Err(GatewayError::NotFound(format!("no job here: job status is at {route_path}/<job_id>"))),
            };
            return match answer {
                Ok(status) => {
                    let body = serde_json::to_value(&status).unwrap_or_default();
                    respond(session, snap, state, LocalAnswer::json(200, &body)).await.map(|_| true)
                }
                Err(err) => refuse(session, snap, state, &err).await.map(|_| true),
            };
        }
        (RouteTarget::Jobs, true) => {}
        (_, submitting) => {
            let allow = if submitting { vec![http::Method::POST] } else { vec![http::Method::GET, http::Method::HEAD] };
            if !session.is_body_done() && !session.is_body_empty() {
                session.set_keepalive(None);
            }
            return refuse(session, snap, state, &GatewayError::MethodNotAllowed { allow }).await.map(|_| true);
        }
    }
    let _in_flight = jobs.begin();
    let err = match submit(runtime, jobs, settings, snap.jobs_schema(), session, state).await {
        Ok((job_id, accepted)) => {
            return respond(session, snap, state, accepted_answer(settings, &job_id, &accepted)).await.map(|_| true)
        }
        Err(Failure::Gone(e)) => return Err(e),
        Err(Failure::Counted(err)) => err,
        Err(Failure::Answer(err)) => {
            if let Some(reason) = rejection_reason(&err) {
                runtime.metrics.job_failed(reason);
            }
            err
        }
    };
    // An unread body would be drained before the connection could be reused; a refused
    // client gets a clean close instead.
    if !session.is_body_done() && !session.is_body_empty() {
        session.set_keepalive(None);
    }
    refuse(session, snap, state, &err).await.map(|_| true)
}

async fn submit(
    runtime: &Runtime,
    jobs: &Jobs,
    settings: &JobsSettings,
    schema: Option<&crate::policy::schema::BodySchema>,
    session: &mut Session,
    state: &mut RequestState,
) -> std::result::Result<(String, Accepted), Failure> {
    let req = session.req_header();
    // One line each: a second Idempotency-Key could let the gateway and a reader of the
    // stream disagree on which job a retry is.
    let content_type = crate::forwarding::single_line(&req.headers, &CONTENT_TYPE)?;
    request::check_content_type(content_type.map(|v| v.as_bytes()))?;
    let idempotency = crate::forwarding::single_line(&req.headers, &http::HeaderName::from_static("idempotency-key"))?;
    let key = request::idempotency_key(idempotency.map(|v| v.as_bytes()))?;
    let limit = settings.max_body;
    let declared = state.declared_length;
    if declared.is_some_and(|len| len > limit) {
        return Err(GatewayError::PayloadTooLarge { limit }.into());
    }
    let expects_continue = req.headers.get(EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !jobs.is_connected() {
        // No point in receiving a body that cannot be published.
        runtime.metrics.job_failed(PublishFailure::Disconnected.reason());
        return Err(Failure::Counted(PublishFailure::Disconnected.into()));
    }
    if expects_continue {
        // Every check that does not need the body passed: now the client may send it.
        session.write_continue_response().await.map_err(Failure::Gone)?;
    }
    let body = read_body(session, limit, declared, settings.body_timeout).await?;
    let job = request::parse_job(&body)?;
    if let Some(schema) = schema {
        // The job as stored, checked as a validating route checks a body (strict JSON too).
        schema.check(job.get().as_bytes()).map_err(|e| GatewayError::BadRequest(format!("job: {e}")))?;
    }

    let user = state.identity.as_ref().and_then(|i| i.sub.as_deref()).unwrap_or("");
    let job_id = request::job_id(user, key.as_deref()).hyphenated().to_string();
    let submitted_at = logger::now_rfc3339();
    let envelope = request::Envelope {
        job_id: &job_id,
        user_id: user,
        submitted_at: &submitted_at,
        request_id: &state.request_id,
        job,
    };
    let submission = Submission {
        job_id: &job_id,
        user_id: user,
        request_id: &state.request_id,
        payload: envelope.to_bytes(),
        job_len: job.get().len(),
        settings,
        // The job's consumer continues the trace from the gateway's span.
        traceparent: state.trace.as_ref().map(|t| t.traceparent(t.span_id)),
        tracestate: state.trace.as_ref().and_then(|t| t.tracestate()),
        submitted_at: &submitted_at,
        job: job.get().as_bytes(),
        keyed: key.is_some(),
    };
    let accepted = jobs.publish(submission, &runtime.metrics).await.map_err(|f| Failure::Counted(f.into()))?;
    Ok((job_id, accepted))
}

/// Read the whole body, refusing at the first byte over `limit` (the rest is never read: the
/// connection is closed) and anything slower than `timeout` in total.
pub(super) async fn read_body(
    session: &mut Session,
    limit: u64,
    declared: Option<u64>,
    timeout: Duration,
) -> std::result::Result<Bytes, Failure> {
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Err(_) => return Err(GatewayError::RequestTimeout.into()),
            Ok(Ok(None)) => {
                crate::connections::body_read();
                break;
            }
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Err(_)) if crate::connections::body_timed_out() => return Err(GatewayError::RequestTimeout.into()),
            Ok(Err(e)) => {
                return Err(match e.etype {
                    ErrorType::ReadTimedout => GatewayError::RequestTimeout.into(),
                    ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => Failure::Gone(e),
                    _ => GatewayError::BadRequest("malformed request body".into()).into(),
                })
            }
        };
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(GatewayError::PayloadTooLarge { limit }.into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// `202 {"job_id", "stream", "seq", "duplicate"}` with the job's `Location`.
fn accepted_answer(settings: &JobsSettings, job_id: &str, accepted: &Accepted) -> LocalAnswer {
    let body = serde_json::json!({
        "job_id": job_id,
        "stream": accepted.stream,
        "seq": accepted.seq,
        "duplicate": accepted.duplicate,
    });
    LocalAnswer::json(202, &body).header("Location", format!("{}/{job_id}", settings.path))
}
