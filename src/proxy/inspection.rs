//! Where request inspection (`waf`, docs/waf.md) meets the request: `request_filter` inspects
//! a request whose body is already known (none, read ahead whole, or larger than
//! `waf.max_body` by its `Content-Length`); a body held as it streams is inspected by
//! `request_body_filter` when `validation::HeldBody` hands it over whole or outgrown. Either
//! way the backend gets no byte of the body before the verdict.
//!
//! A route with `waf: off` never gets here: [`body_limit`] is `None` for it, so nothing is held
//! and nothing allocated.

use super::RequestState;
use crate::config::{RouteId, RouteSettings, WafMode};
use crate::errors::GatewayError;
use crate::runtime::Runtime;
use crate::snapshot::Snapshot;
use crate::waf::{Body, Cause, Exclusions, Request, Verdict};
use bytes::Bytes;
use pingora::http::RequestHeader;
use std::sync::Arc;

/// Whether the body is to be held for inspection, and up to how many bytes: not for a route
/// that does not inspect, nor for a body whose `Content-Length` is already past the limit.
pub(crate) fn body_limit(snap: &Snapshot, route: &RouteSettings, declared: Option<u64>) -> Option<u64> {
    if route.waf.mode == WafMode::Off {
        return None;
    }
    let max_body = snap.config.waf.as_ref()?.max_body;
    declared.is_none_or(|n| n <= max_body).then_some(max_body)
}

/// The body as inspection sees it: `bytes` read (the whole body, or nothing yet), classified
/// against `waf.max_body` with the declared length.
pub(crate) fn body(snap: &Snapshot, bytes: Option<Bytes>, declared: Option<u64>) -> Body {
    let max_body = snap.config.waf.as_ref().map_or(0, |w| w.max_body);
    Body::classify(bytes.unwrap_or_default(), declared, max_body)
}

/// Inspect the request on an inspecting route, count and remember the verdict; a refusal on a
/// `block` route is the error to answer. Fails closed there when inspection could not run
/// (at capacity, past `waf.timeout`, an engine failure); a `detect` route forwards.
pub(crate) async fn inspect(
    runtime: &Runtime,
    snap: &Snapshot,
    route_id: RouteId,
    state: &mut RequestState,
    head: &RequestHeader,
    body: Body,
) -> Result<(), GatewayError> {
    let route = snap.route(route_id);
    let verdict = match (snap.waf(), snap.config.waf.as_ref()) {
        // The snapshot has rules whenever a route inspects; fail closed regardless.
        (None, _) | (_, None) => failed("no rules are loaded".into()),
        (Some(rules), Some(settings)) => {
            let mut request = Request::from_head(head, state.client.ip);
            request.body = body;
            let exclusions = Exclusions::new(&route.waf.exclude);
            let run = runtime.inspector.inspect(Arc::clone(rules), request, exclusions);
            match tokio::time::timeout(settings.timeout, run).await {
                Ok(Ok(verdict)) => verdict,
                Ok(Err(e)) => failed(e.to_string()),
                Err(_) => failed(format!("no verdict within waf.timeout ({:?})", settings.timeout)),
            }
        }
    };
    let (refused, action) = crate::waf::outcome(route.waf.mode, &verdict);
    if let Some(action) = action {
        snap.metrics.waf_match(route_id, action);
        log::warn!(
            target: "siger::waf",
            "request {} on route {}: {} (score {}, rules {:?}{})",
            state.request_id,
            route.label,
            if refused { "refused" } else { "matched, forwarded" },
            verdict.score,
            verdict.rules,
            match &verdict.cause {
                Some(Cause::Engine(why)) => format!(", inspection failed: {why}"),
                Some(Cause::BodyTooLarge) => ", body over waf.max_body".to_string(),
                Some(Cause::UnparsableBody) => ", body does not parse as its Content-Type".to_string(),
                _ => String::new(),
            }
        );
    }
    state.waf = Some(verdict);
    if refused {
        return Err(GatewayError::RequestBlocked);
    }
    Ok(())
}

/// The verdict when inspection could not run: refused (on a `block` route).
fn failed(why: String) -> Verdict {
    Verdict { blocked: true, cause: Some(Cause::Engine(why)), ..Verdict::default() }
}
