//! Answers the gateway makes itself (refusals, health, jobs, aggregations, translated gRPC
//! calls): the one place every such answer passes, so what they all carry (request id,
//! rate-limit headers, the route's CORS and response rules, HSTS) is added once.

use super::{policies, RequestState};
use crate::answer::LocalAnswer;
use crate::errors::GatewayError;
use crate::snapshot::Snapshot;
use pingora::prelude::*;

/// Write an answer the gateway makes itself: the one place every such answer passes, so
/// what they all carry (request id, rate-limit headers) is added once.
pub(super) async fn respond(
    session: &mut Session,
    snap: &Snapshot,
    state: &RequestState,
    answer: LocalAnswer,
) -> Result<()> {
    let head = local_head(session, snap, state, &answer)?;
    if answer.close {
        session.set_keepalive(None);
    }
    let head_only = session.req_header().method == http::Method::HEAD || answer.body.is_empty();
    session.write_response_header(Box::new(head), head_only).await?;
    if !head_only {
        session.write_response_body(Some(answer.body), true).await?;
    }
    Ok(())
}

/// The head of an answer the gateway makes itself, with what every such answer carries
/// (request id, rate-limit headers, the route's CORS and response rules, HSTS).
pub(super) fn local_head(
    session: &mut Session,
    snap: &Snapshot,
    state: &RequestState,
    answer: &LocalAnswer,
) -> Result<ResponseHeader> {
    let mut head = answer.response_header();
    state.stamp().apply(&mut head)?;
    policies::on_local_answer(snap, state, session.req_header(), &mut head);
    policies::no_compression(session, state);
    Ok(head)
}

/// Start an answer the gateway writes as it goes (a transcoded stream): `answer`'s head with
/// what every local answer carries, its body length unknown (chunked on HTTP/1.1). The caller
/// writes the body with `write_response_body`, the last chunk with `end_of_stream`.
pub(super) async fn start_stream(
    session: &mut Session,
    snap: &Snapshot,
    state: &RequestState,
    answer: &LocalAnswer,
) -> Result<()> {
    let mut head = local_head(session, snap, state, answer)?;
    head.remove_header(&http::header::CONTENT_LENGTH);
    // HTTP/2 drops it; HTTP/1.1 needs it to keep the connection.
    head.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    session.write_response_header(Box::new(head), false).await
}

/// Answer a refusal, and remember its code for the access log.
pub(super) async fn refuse(
    session: &mut Session,
    snap: &Snapshot,
    state: &mut RequestState,
    err: &GatewayError,
) -> Result<()> {
    state.error_code = Some(err.code());
    respond(session, snap, state, err.answer(&state.request_id)).await
}
