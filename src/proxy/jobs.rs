//! The HTTP side of `/jobs/submit`, run from `request_filter`: method, authentication, roles,
//! headers, the body (read here, so it is consumed — fine, jobs never reach a backend), then
//! [`Jobs::publish`]. The rules themselves live in `crate::jobs`.

use super::{respond, RequestCtx};
use crate::auth;
use crate::config::AuthMode;
use crate::errors::GatewayError;
use crate::jobs::{rejection_reason, request, Accepted, Jobs, PublishFailure, Submission};
use crate::observability::logger;
use crate::state::GatewayState;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, EXPECT};
use http::Method;
use pingora::prelude::*;
use std::time::Duration;

/// How a submission ended before a 202.
enum Failure {
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
    state: &GatewayState,
    jobs: &Jobs,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let _inflight = jobs.begin();
    let err = match submit(state, jobs, session, ctx).await {
        Ok((job_id, accepted)) => return respond_accepted(jobs, session, ctx, &job_id, &accepted).await.map(|_| true),
        Err(Failure::Gone(e)) => return Err(e),
        Err(Failure::Counted(err)) => err,
        Err(Failure::Answer(err)) => {
            if let Some(reason) = rejection_reason(&err) {
                state.metrics.job_failed(reason);
            }
            err
        }
    };
    // An unread body would be drained before the connection could be reused; a refused
    // client gets a clean close instead.
    if !session.is_body_done() && !session.is_body_empty() {
        session.set_keepalive(None);
    }
    respond(session, ctx, &err).await.map(|_| true)
}

async fn submit(
    state: &GatewayState,
    jobs: &Jobs,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> std::result::Result<(String, Accepted), Failure> {
    let req = session.req_header();
    if req.method != Method::POST {
        return Err(GatewayError::MethodNotAllowed { allow: vec![Method::POST] }.into());
    }
    // Submitting always needs a verified caller, whatever route the path falls under.
    let Some(authenticator) = &state.auth else {
        return Err(
            GatewayError::Unavailable { message: "authentication is unavailable".into(), retry_after: 1 }.into()
        );
    };
    let verdict = match authenticator.authenticate(&req.headers, AuthMode::Required, &state.metrics).await {
        Ok(Some(identity)) if identity.sub.as_deref().is_some_and(|s| !s.is_empty()) => {
            auth::authorize(Some(&identity), &jobs.settings.roles).map(|_| identity)
        }
        Ok(_) => {
            state.metrics.auth_failure("invalid_token");
            return Err(
                GatewayError::InvalidToken { reason: "the token has no `sub` claim to own the job".into() }.into()
            );
        }
        Err(e) => Err(e),
    };
    let identity = verdict.map_err(|e| {
        state.metrics.auth_failure(e.metric_reason());
        GatewayError::from(e)
    })?;
    ctx.identity = Some(identity);
    request::check_content_type(req.headers.get(CONTENT_TYPE).map(|v| v.as_bytes()))?;
    let key = request::idempotency_key(req.headers.get("idempotency-key").map(|v| v.as_bytes()))?;
    let limit = jobs.settings.max_body;
    let declared = crate::framing::declared_length(req)?;
    if declared.is_some_and(|len| len > limit) {
        return Err(GatewayError::PayloadTooLarge { limit }.into());
    }
    let expects_continue = req.headers.get(EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !jobs.is_connected() {
        // No point in receiving a body that cannot be published.
        state.metrics.job_failed(PublishFailure::Disconnected.reason());
        return Err(Failure::Counted(PublishFailure::Disconnected.into()));
    }
    if expects_continue {
        // Every check that does not need the body passed: now the client may send it.
        session.write_continue_response().await.map_err(Failure::Gone)?;
    }
    let body = read_body(session, limit, declared, jobs.settings.body_timeout).await?;
    let job = request::parse_job(&body)?;

    let user = ctx.identity.as_ref().and_then(|i| i.sub.as_deref()).unwrap_or("");
    let job_id = request::job_id(user, key.as_deref()).hyphenated().to_string();
    let submitted_at = logger::now_rfc3339();
    let envelope = request::Envelope {
        job_id: &job_id,
        user_id: user,
        submitted_at: &submitted_at,
        request_id: &ctx.request_id,
        job,
    };
    let submission = Submission {
        job_id: &job_id,
        user_id: user,
        request_id: &ctx.request_id,
        payload: envelope.to_bytes(),
        job_len: job.get().len(),
    };
    let accepted = jobs.publish(submission, &state.metrics).await.map_err(|f| Failure::Counted(f.into()))?;
    Ok((job_id, accepted))
}

/// Read the whole body, refusing at the first byte over `limit` (the rest is never read: the
/// connection is closed) and anything slower than `timeout` in total.
async fn read_body(
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
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
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

async fn respond_accepted(
    jobs: &Jobs,
    session: &mut Session,
    ctx: &RequestCtx,
    job_id: &str,
    accepted: &Accepted,
) -> Result<()> {
    let body = serde_json::json!({
        "job_id": job_id,
        "stream": accepted.stream,
        "seq": accepted.seq,
        "duplicate": accepted.duplicate,
    });
    let mut body = serde_json::to_vec(&body).unwrap_or_default();
    body.push(b'\n');
    let mut resp = ResponseHeader::build(202, Some(6))?;
    resp.insert_header("Content-Type", "application/json")?;
    resp.insert_header("Content-Length", body.len())?;
    resp.insert_header("Cache-Control", "no-store")?;
    resp.insert_header("Location", format!("{}/{job_id}", jobs.settings.path))?;
    resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(Bytes::from(body)), true).await
}
