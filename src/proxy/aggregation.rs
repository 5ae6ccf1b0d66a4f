//! An aggregation route's request, run from `request_filter` once the route admitted it
//! (authentication, roles and rate limit as for any route): each part's path rendered from
//! its template, the parts fetched in parallel (`crate::aggregate`), and one JSON answer.

use super::local::{refuse, respond};
use super::RequestState;
use crate::aggregate::{self, Merged, PartFailure, PartRequest};
use crate::answer::LocalAnswer;
use crate::config::AggregateSettings;
use crate::errors::{GatewayError, UpstreamErrorKind};
use crate::policy::headers::Vars;
use crate::snapshot::Snapshot;
use crate::trace::{ChildSpan, RequestTrace};
use http::{HeaderName, HeaderValue};
use opentelemetry::trace::SpanId;
use pingora::prelude::*;

/// Answer the request; `Ok(true)` unless the client vanished.
pub(super) async fn handle(
    snap: &Snapshot,
    settings: &AggregateSettings,
    session: &mut Session,
    state: &mut RequestState,
) -> Result<bool> {
    let route = snap.route(state.route.ok_or_else(|| Error::new(InternalError))?);
    if !session.is_body_empty() && !session.is_body_done() {
        // The parts never read the client's body: close rather than drain it.
        session.set_keepalive(None);
    }
    let req = session.req_header();
    let host = req.headers.get(http::header::HOST).cloned();
    let mut headers = forwarded_headers(snap, state, req, host.as_ref(), route.forward_authorization);
    headers.push((http::header::ACCEPT, HeaderValue::from_static("application/json")));
    let spans: Vec<Option<SpanId>> =
        settings.parts.iter().map(|_| state.trace.as_ref().map(|_| crate::trace::context::new_span_id())).collect();
    let requests = part_requests(settings, state, &route.label, &headers, &spans);
    let aggregate_id = match route.target {
        crate::config::RouteTarget::Aggregate(id) => id,
        _ => return refuse(session, snap, state, &GatewayError::Internal).await.map(|_| true),
    };
    let transforms = |part: usize| snap.part_transform(aggregate_id, part).map(|t| &**t);
    let fetched =
        aggregate::fetch_all(|id| snap.upstream(id), settings, requests, host.as_ref(), route.max_body, transforms)
            .await;
    let mut results = Vec::with_capacity(fetched.len());
    for ((part, span), (result, report)) in settings.parts.iter().zip(spans).zip(fetched) {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(f) => f.label(),
        };
        snap.metrics.aggregate_part(&route.label, &part.key, outcome);
        if let (Some(trace), Some(span_id)) = (state.trace.as_mut(), span) {
            trace.child(ChildSpan {
                span_id,
                started: report.started,
                ended: report.ended,
                service: &snap.service(part.service).name,
                backend: report.backend,
                status: report.status,
                error: (outcome != "ok").then_some(outcome),
                retry: report.attempts.saturating_sub(1),
                part: Some(&part.key),
            });
        }
        results.push(result);
    }
    match aggregate::merge(settings, results) {
        Merged::Answer { body, complete } => {
            let mut answer = LocalAnswer::json(200, &body);
            if !complete {
                answer = answer.header(aggregate::COMPLETED_HEADER, "false");
            }
            respond(session, snap, state, answer).await.map(|_| true)
        }
        Merged::Failed { timeout: true, .. } => {
            let err = GatewayError::GatewayTimeout { after: Some(settings.timeout) };
            refuse(session, snap, state, &err).await.map(|_| true)
        }
        Merged::Failed { timeout: false, detail } => {
            let err = GatewayError::BadGateway { kind: UpstreamErrorKind::Other, detail };
            refuse(session, snap, state, &err).await.map(|_| true)
        }
    }
}

/// Each part's request, its path rendered for this request.
fn part_requests(
    settings: &AggregateSettings,
    state: &RequestState,
    route: &str,
    headers: &[(HeaderName, HeaderValue)],
    spans: &[Option<SpanId>],
) -> Vec<Result<PartRequest, PartFailure>> {
    let claim = |name: &str| state.identity.as_ref().and_then(|i| i.claim_text(name));
    let vars = Vars {
        request_id: &state.request_id,
        client_ip: &state.client.ip_text,
        route,
        elapsed: state.started.elapsed(),
        claim: &claim,
        tenant: state.member.as_ref().and_then(|m| m.tenant.as_deref()),
    };
    settings
        .parts
        .iter()
        .enumerate()
        .map(|(index, part)| match part.path.render_path(&vars) {
            Some(path) => {
                let mut headers = headers.to_vec();
                // Each part continues the trace from its own span.
                if let (Some(trace), Some(span)) = (&state.trace, spans[index]) {
                    headers.extend(trace_headers(trace, span));
                }
                Ok(PartRequest { index, path, headers })
            }
            None => Err(PartFailure::Unavailable("a path variable is a dot-segment".into())),
        })
        .collect()
}

/// What every request the gateway makes for a client carries (aggregation parts, gRPC calls):
/// the request id, the client as forwarded headers, the verified identity, and the client's
/// `Authorization` when the route forwards it.
pub(super) fn forwarded_headers(
    snap: &Snapshot,
    state: &RequestState,
    req: &RequestHeader,
    host: Option<&HeaderValue>,
    forward_authorization: bool,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    let text = |s: &str| HeaderValue::from_str(s).ok();
    if let Some(v) = text(&state.request_id) {
        out.push((HeaderName::from_static("x-request-id"), v));
    }
    if let Some(v) = text(&state.client.ip_text) {
        out.push((HeaderName::from_static("x-forwarded-for"), v.clone()));
        out.push((HeaderName::from_static("x-real-ip"), v));
    }
    let proto = if state.client.tls.is_some() { "https" } else { "http" };
    out.push((HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static(proto)));
    if let Some(host) = host {
        out.push((HeaderName::from_static("x-forwarded-host"), host.clone()));
    }
    if let Some(identity) = &state.identity {
        out.extend(identity.forward.iter().cloned());
    }
    let api_key = snap.config.api_keys.as_ref().map(|k| &k.header);
    if forward_authorization && api_key.is_none_or(|h| !req.headers.contains_key(h)) {
        if let Some(auth) = req.headers.get(http::header::AUTHORIZATION) {
            out.push((http::header::AUTHORIZATION, auth.clone()));
        }
    }
    out
}

/// `traceparent` (and the caller's `tracestate`) for a part continuing from `span`.
fn trace_headers(trace: &RequestTrace, span: SpanId) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(2);
    out.push((crate::trace::context::TRACEPARENT, trace.traceparent(span)));
    if let Some(v) = trace.tracestate().and_then(|s| HeaderValue::from_str(s).ok()) {
        out.push((crate::trace::context::TRACESTATE, v));
    }
    out
}
