//! An aggregation route's request, run from `request_filter` once the route admitted it
//! (authentication, roles and rate limit as for any route): each part's path rendered from
//! its template, the parts fetched in parallel (`crate::aggregate`), and one JSON answer.

use super::{refuse, respond, RequestState};
use crate::aggregate::{self, Merged, PartFailure, PartRequest};
use crate::answer::LocalAnswer;
use crate::config::AggregateSettings;
use crate::errors::{GatewayError, UpstreamErrorKind};
use crate::policy::headers::Vars;
use crate::snapshot::Snapshot;
use http::{HeaderName, HeaderValue};
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
    let headers = part_headers(snap, state, req, host.as_ref(), route.forward_authorization);
    let requests = part_requests(settings, state, &route.label, &headers);
    let results = aggregate::fetch_all(snap, settings, requests, host.as_ref(), route.max_body).await;
    for (part, result) in settings.parts.iter().zip(&results) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(f) => f.label(),
        };
        snap.metrics.aggregate_part(&route.label, &part.key, outcome);
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
) -> Vec<Result<PartRequest, PartFailure>> {
    let claim = |name: &str| state.identity.as_ref().and_then(|i| i.claim_text(name));
    let vars = Vars {
        request_id: &state.request_id,
        client_ip: &state.client_ip_text,
        route,
        elapsed: state.started.elapsed(),
        claim: &claim,
    };
    settings
        .parts
        .iter()
        .enumerate()
        .map(|(index, part)| match part.path.render_path(&vars) {
            Some(path) => Ok(PartRequest { index, path, headers: headers.to_vec() }),
            None => Err(PartFailure::Unavailable("a path variable is a dot-segment".into())),
        })
        .collect()
}

/// What every part request carries: the request id, the client as forwarded headers, the
/// verified identity, and the client's `Authorization` when the route forwards it.
fn part_headers(
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
    if let Some(v) = text(&state.client_ip_text) {
        out.push((HeaderName::from_static("x-forwarded-for"), v.clone()));
        out.push((HeaderName::from_static("x-real-ip"), v));
    }
    let proto = if state.tls.is_some() { "https" } else { "http" };
    out.push((HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static(proto)));
    if let Some(host) = host {
        out.push((HeaderName::from_static("x-forwarded-host"), host.clone()));
    }
    out.push((http::header::ACCEPT, HeaderValue::from_static("application/json")));
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
