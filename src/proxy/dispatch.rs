//! `request_filter`'s first step: which route a request is for, and what the gateway does
//! with it (proxy, answer the health check, a preflight, jobs, an aggregation or a gRPC
//! translation).

use super::RequestState;
use crate::config::RouteTarget;
use crate::errors::GatewayError;
use crate::policy::cors;
use crate::routing::{self, RouteMatch, TargetError};
use crate::snapshot::Snapshot;
use http::header::HOST;
use pingora::http::RequestHeader;

/// What `request_filter` decided.
pub(super) enum Decision {
    /// Proxy to the matched route's service.
    Proxy,
    /// Answer the public health check.
    Health,
    /// The reserved jobs path: answered here, never proxied.
    Jobs,
    /// A CORS preflight on a route with `cors`: answered here, before authentication.
    Preflight,
    /// An aggregation route: answered here from its parts.
    Aggregate,
    /// A route with `grpc_transcode` or `grpc_web`: translated and answered here.
    Grpc(super::grpc::Translation),
}

/// Route the request and check what can be checked before authentication.
pub(super) fn decide(snap: &Snapshot, req: &RequestHeader, state: &mut RequestState) -> Result<Decision, GatewayError> {
    let raw_path = req.uri.path();
    let path = routing::normalize_path(raw_path)?;
    // Routes match without `;` path parameters, as servlet containers resolve them.
    let route_path = routing::route_path(&path);
    if route_path == "/health" && (req.method == http::Method::GET || req.method == http::Method::HEAD) {
        return Ok(Decision::Health);
    }
    // Lower-casing the host costs an allocation; only pay it when a route names a host.
    let host = if snap.routes.has_host_routes() {
        let host = req
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .map(routing::host_without_port);
        // An HTTP/1.0 request without Host would reach the backend's default virtual host,
        // which may be one a host route protects.
        if host.is_none() {
            return Err(GatewayError::BadTarget(TargetError::MissingHost));
        }
        host
    } else {
        None
    };
    // A preflight is routed by the method it asks about; it is the gateway's to answer only
    // on a route with `cors` (elsewhere it is an OPTIONS request like any other).
    if let Some(asked) = cors::preflight_method(&req.method, &req.headers) {
        if let RouteMatch::Found(id) = snap.routes.lookup(host.as_deref(), &asked, &route_path, &req.headers) {
            if snap.route(id).cors.is_some() {
                state.route = Some(id);
                state.preflight = true;
                return Ok(Decision::Preflight);
            }
        }
    }
    let id = match snap.routes.lookup(host.as_deref(), &req.method, &route_path, &req.headers) {
        RouteMatch::Found(id) => id,
        RouteMatch::MethodNotAllowed { allow } => return Err(GatewayError::MethodNotAllowed { allow }),
        RouteMatch::NotFound => return Err(GatewayError::NoRoute),
    };
    state.route = Some(id);
    let route = snap.route(id);
    if route.cache.is_some() {
        state.cache.path = Some(match req.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        });
    }
    if state.declared_length.is_some_and(|len| len > route.max_body) {
        return Err(GatewayError::PayloadTooLarge { limit: route.max_body });
    }
    match route.target {
        RouteTarget::Jobs | RouteTarget::JobStatus => return Ok(Decision::Jobs),
        RouteTarget::Aggregate(_) => return Ok(Decision::Aggregate),
        RouteTarget::Service(_) | RouteTarget::Split(_) => {}
    }
    if route.grpc_transcode.is_some() || route.grpc_web {
        let content_type = req.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if let Some(translation) =
            super::grpc::translation(route.grpc_transcode.is_some(), route.grpc_web, content_type.unwrap_or_default())
        {
            return Ok(Decision::Grpc(translation));
        }
    }
    let upstream_path = routing::upstream_path(&path, &route.path, route.strip_prefix);
    // Rewrite the request target only when it changes: a prefix was stripped, the path was
    // normalised, or the client used the absolute form (`GET http://host/path`, whose
    // authority became the Host header in `early_request_filter`).
    if upstream_path != raw_path || req.raw_path().first() != Some(&b'/') {
        let uri = match req.uri.query() {
            Some(q) => format!("{upstream_path}?{q}"),
            None => upstream_path.to_string(),
        };
        state.upstream_uri =
            Some(uri.parse().map_err(|_| GatewayError::BadRequest("request target cannot be forwarded".into()))?);
    }
    Ok(Decision::Proxy)
}
