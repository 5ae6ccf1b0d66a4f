//! The Pingora `ProxyHttp` implementation. Each phase reads what it needs from the session,
//! calls one module (routing, forwarding, upstream, errors, observability) and acts on the
//! answer. Phase order: ARCHITECTURE.md §1.

mod ctx;
mod downstream;
mod jobs;

pub use ctx::RequestCtx;
pub use downstream::IdleLimited;

use crate::auth;
use crate::config::{AuthMode, HashKey, LbAlgorithm};
use crate::errors::{GatewayError, UpstreamErrorKind};
use crate::forwarding;
use crate::observability::access;
use crate::ratelimit::{self, Outcome, StoreError};
use crate::routing::{self, RouteMatch};
use crate::state::GatewayState;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::upstreams::peer::Peer;
use std::sync::Arc;
use std::time::Instant;

/// The gateway's proxy logic.
#[derive(Debug, Clone)]
pub struct Gateway {
    state: Arc<GatewayState>,
    /// Headers only the gateway sets upstream; no client spelling of them (`X_User_Id`) passes.
    protected: Vec<http::HeaderName>,
}

impl Gateway {
    /// Wrap shared state.
    pub fn new(state: Arc<GatewayState>) -> Self {
        let protected = forwarding::protected_headers(
            state.config.auth.iter().flat_map(|a| a.forward.iter().map(|(_, h)| h.clone())),
        );
        Gateway { state, protected }
    }
}

/// Write a JSON error response and remember it for the access log.
async fn respond(session: &mut Session, ctx: &mut RequestCtx, err: &GatewayError) -> Result<()> {
    let (mut resp, body) = err.to_response(&ctx.request_id);
    if !matches!(err, GatewayError::RateLimited { .. }) {
        add_rate_limit_headers(&mut resp, ctx.rate_limit.as_ref());
    }
    ctx.error_code = Some(err.code());
    if err.closes_connection() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// `RateLimit-*` headers of an admitted request (ARCHITECTURE.md §4).
fn add_rate_limit_headers(resp: &mut ResponseHeader, decision: Option<&ratelimit::Decision>) {
    if let Some(d) = decision.filter(|d| d.allowed) {
        let _ = resp.insert_header("RateLimit-Limit", d.limit);
        let _ = resp.insert_header("RateLimit-Remaining", d.remaining);
        let _ = resp.insert_header("RateLimit-Reset", d.reset);
    }
}

/// Answer `GET /health` on public listeners (for a balancer in front).
async fn respond_health(session: &mut Session, ctx: &RequestCtx) -> Result<()> {
    let body = Bytes::from_static(b"{\"status\":\"ok\"}\n");
    let mut resp = ResponseHeader::build(200, Some(4))?;
    resp.insert_header("Content-Type", "application/json")?;
    resp.insert_header("Content-Length", body.len())?;
    resp.insert_header("Cache-Control", "no-store")?;
    resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head_only).await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Bytes of the request head as received (request line + header lines), for `max_header_bytes`.
fn request_head_bytes(req: &RequestHeader) -> usize {
    let target = req.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri.authority().map_or(0, |a| a.as_str().len() + 8);
    let line = req.method.as_str().len() + target + 12;
    req.headers.iter().fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// What `request_filter` decided.
enum Decision {
    /// Proxy to the matched route.
    Proxy,
    /// Answer the public health check.
    Health,
    /// The reserved jobs path: answered here, never proxied (checked before routing).
    Job,
}

impl Gateway {
    /// Route the request and enforce the pre-proxy checks. Pure apart from `ctx`.
    fn decide(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> std::result::Result<Decision, GatewayError> {
        let raw_path = req.uri.path();
        let path = routing::normalize_path(raw_path)?;
        // Routes match without `;` path parameters, as servlet containers resolve them.
        let route_path = routing::route_path(&path);
        if route_path == "/health" && (req.method == http::Method::GET || req.method == http::Method::HEAD) {
            return Ok(Decision::Health);
        }
        if self.state.jobs.as_ref().is_some_and(|j| j.owns_path(&route_path)) {
            return Ok(Decision::Job);
        }
        // Lower-casing the host costs an allocation; only pay it when a route names a host.
        let host = if self.state.routes.has_host_routes() {
            req.headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri.authority().map(|a| a.as_str()))
                .map(routing::host_without_port)
        } else {
            None
        };
        let id = match self.state.routes.lookup(host.as_deref(), &req.method, &route_path) {
            RouteMatch::Found(id) => id,
            RouteMatch::MethodNotAllowed { allow } => return Err(GatewayError::MethodNotAllowed { allow }),
            RouteMatch::NotFound => return Err(GatewayError::NoRoute),
        };
        ctx.route = Some(id);
        let route = self.state.route(id);
        if crate::framing::declared_length(req)?.is_some_and(|len| len > route.max_body) {
            return Err(GatewayError::PayloadTooLarge { limit: route.max_body });
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
            ctx.upstream_uri =
                Some(uri.parse().map_err(|_| GatewayError::BadRequest("request target cannot be forwarded".into()))?);
        }
        Ok(Decision::Proxy)
    }

    /// Claim headers: client-sent copies are dropped on every route, public ones included, so
    /// upstream identity headers can only come from a verified token.
    fn identity_headers(&self, upstream: &mut RequestHeader, ctx: &RequestCtx) -> Result<()> {
        // From the config, not the authenticator: stripping must not depend on keys loading.
        for (_, name) in self.state.config.auth.iter().flat_map(|a| a.forward.iter()) {
            upstream.remove_header(name);
        }
        if let Some(identity) = &ctx.identity {
            for (name, value) in &identity.forward {
                upstream.insert_header(name.clone(), value.clone())?;
            }
        }
        if ctx.route.is_some_and(|r| !self.state.route(r).forward_authorization) {
            upstream.remove_header(&AUTHORIZATION);
        }
        Ok(())
    }

    /// Bytes consistent hashing hashes for this request.
    fn hash_key(&self, key: &HashKey, session: &Session, ctx: &RequestCtx) -> Vec<u8> {
        let ip = || ctx.client_ip_text.as_bytes().to_vec();
        match key {
            HashKey::Ip => ip(),
            HashKey::Path => ctx
                .upstream_uri
                .as_ref()
                .map_or_else(|| session.req_header().uri.path().as_bytes().to_vec(), |u| u.path().as_bytes().to_vec()),
            HashKey::Header(name) => {
                session.req_header().headers.get(name).map(|v| v.as_bytes().to_vec()).unwrap_or_else(ip)
            }
            // A verified claim only; anonymous requests (or tokens without it) use the IP.
            HashKey::Claim(name) => {
                ctx.identity.as_ref().and_then(|i| i.claim_text(name)).map(String::into_bytes).unwrap_or_else(ip)
            }
        }
    }

    /// The peer of the next attempt: a usable backend of the route's service not tried yet.
    fn next_peer(&self, session: &Session, ctx: &mut RequestCtx) -> std::result::Result<Box<HttpPeer>, GatewayError> {
        let route_id = ctx.route.ok_or(GatewayError::Internal)?;
        let route = self.state.route(route_id);
        let pool = self.state.pools.get(route.service);
        let key = match &pool.settings.lb {
            LbAlgorithm::ConsistentHash(k) => self.hash_key(k, session, ctx),
            _ => Vec::new(),
        };
        ctx.inflight = None;
        ctx.error_counted = false;
        match pool.select(&key, &ctx.tried) {
            Some(selected) => {
                ctx.backend = Some(selected.addr);
                ctx.inflight = selected.guard;
                ctx.upstream_started = Some(Instant::now());
                Ok(Box::new(pool.peer(selected.addr, route.timeout)))
            }
            None if ctx.tried.is_empty() => Err(GatewayError::NoHealthyBackend { service: pool.settings.name.clone() }),
            None => {
                // Every healthy backend refused the connection: report the last failure.
                ctx.error_counted = true;
                Err(ctx.error.take().unwrap_or(GatewayError::BadGateway {
                    kind: UpstreamErrorKind::Connect,
                    detail: "no backend accepted the connection".into(),
                }))
            }
        }
    }

    /// Authentication, roles and the rate limit of the matched route (in that order).
    async fn admit(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> std::result::Result<(), GatewayError> {
        let Some(route_id) = ctx.route else { return Ok(()) };
        let route = self.state.route(route_id);
        let metrics = &self.state.metrics;
        if route.auth != AuthMode::Public {
            let Some(authenticator) = &self.state.auth else {
                // Keys failed to load at start-up: fail closed.
                return Err(GatewayError::Unavailable {
                    message: "authentication is unavailable".into(),
                    retry_after: 1,
                });
            };
            let verdict = match authenticator.authenticate(&req.headers, route.auth, metrics).await {
                Ok(identity) => auth::authorize(identity.as_deref(), &route.roles).map(|_| identity),
                Err(e) => Err(e),
            };
            match verdict {
                Ok(identity) => ctx.identity = identity,
                Err(e) => {
                    metrics.auth_failure(e.metric_reason());
                    return Err(e.into());
                }
            }
        }
        let Some(rule) = self.state.limiter.rule(route_id) else { return Ok(()) };
        let key = ratelimit::client_key(&rule.key, ctx.identity.as_deref(), ctx.client_ip, &req.headers);
        match self.state.limiter.check(route_id, &key).await {
            Outcome::Unlimited => Ok(()),
            Outcome::Checked(d) => {
                ctx.rate_limit = Some(d);
                if d.allowed {
                    return Ok(());
                }
                metrics.rate_limited(Some(route_id));
                Err(GatewayError::RateLimited { retry_after: d.reset, limit: d.limit })
            }
            Outcome::StoreFailed { allow, error } => {
                metrics.rate_limit_store_errors.inc();
                // While cooling down the failure was already logged.
                if !matches!(error, StoreError::CoolingDown) {
                    log::warn!("rate limit store failed ({}): {error}", if allow { "allowing" } else { "denying" });
                }
                if allow {
                    Ok(())
                } else {
                    Err(GatewayError::Unavailable { message: "rate limit store unavailable".into(), retry_after: 1 })
                }
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {
        // Pingora's default adds a (disabled) response-compression module that still runs on
        // every request; the gateway passes bodies through as the upstream sent them.
    }

    fn new_ctx(&self) -> Self::CTX {
        let mut ctx = RequestCtx::new();
        ctx.in_flight = Some(self.state.lifecycle.request());
        ctx
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        let req = session.req_header();
        ctx.request_id = match req.headers.get("x-request-id") {
            Some(id) if forwarding::is_sane_request_id(id.as_bytes()) => {
                String::from_utf8_lossy(id.as_bytes()).into_owned()
            }
            _ => forwarding::new_request_id(),
        };
        if let Some(peer) = session.client_addr().and_then(|a| a.as_inet()) {
            ctx.peer_ip = peer.ip();
        }
        let xff = forwarding::combined_lines(req.headers.get_all("x-forwarded-for"));
        ctx.client_ip = forwarding::client_ip(ctx.peer_ip, xff.as_deref(), &self.state.config.trusted_proxies);
        ctx.client_ip_text = forwarding::ip_text(ctx.client_ip);
        let limits = &self.state.config.limits;
        let checked = if request_head_bytes(req) > limits.max_header_bytes {
            Err(GatewayError::HeadersTooLarge { limit: limits.max_header_bytes })
        } else {
            crate::framing::check_transfer_coding(req).and_then(|_| {
                let requires_host = req.version != http::Version::HTTP_10 && req.version != http::Version::HTTP_09;
                let host = req.headers.get(HOST).map(|h| h.as_bytes());
                routing::request_host(req.raw_path(), req.uri.authority().map(|a| a.as_str()), host, requires_host)
                    .map_err(GatewayError::from)
            })
        };
        match checked {
            // An absolute-form target's authority replaces the missing Host (RFC 9112 §3.2.2):
            // routing, auth and the upstream all see that one host.
            Ok(host) if host.add_host_header => {
                let authority = host.authority.map(str::to_string);
                if let Some(authority) = authority {
                    session.req_header_mut().insert_header(HOST, authority)?;
                }
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(err) => {
                let status = err.status();
                ctx.error = Some(err);
                Error::e_explain(HTTPStatus(status), "request refused before routing")
            }
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let decision = match self.decide(session.req_header(), ctx) {
            Ok(Decision::Proxy) => self.admit(session.req_header(), ctx).await.map(|_| Decision::Proxy),
            other => other,
        };
        match decision {
            Ok(Decision::Proxy) => Ok(false),
            Ok(Decision::Health) => respond_health(session, ctx).await.map(|_| true),
            Ok(Decision::Job) => match &self.state.jobs {
                Some(j) => jobs::handle(&self.state, j, session, ctx).await,
                None => respond(session, ctx, &GatewayError::NoRoute).await.map(|_| true),
            },
            Err(err) => respond(session, ctx, &err).await.map(|_| true),
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let (Some(chunk), Some(route)) = (body.as_ref(), ctx.route) {
            ctx.body_bytes += chunk.len() as u64;
            let limit = self.state.route(route).max_body;
            if ctx.body_bytes > limit {
                ctx.error = Some(GatewayError::PayloadTooLarge { limit });
                return Error::e_explain(HTTPStatus(413), "request body over max_body");
            }
        }
        Ok(())
    }

    async fn proxy_upstream_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // The first backend is chosen here rather than in `upstream_peer`: when there is none,
        // the 503 answered from this hook keeps the client's connection (Pingora closes it after
        // any error raised in its upstream loop).
        match self.next_peer(session, ctx) {
            Ok(peer) => {
                ctx.first_peer = Some(peer);
                Ok(true)
            }
            Err(err) => {
                if !session.is_body_empty() && !session.is_body_done() {
                    // An unread body would be drained before reuse: close instead.
                    session.set_keepalive(None);
                }
                respond(session, ctx, &err).await?;
                Ok(false)
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        if let Some(peer) = ctx.first_peer.take() {
            return Ok(peer);
        }
        match self.next_peer(session, ctx) {
            Ok(peer) => Ok(peer),
            Err(err) => {
                let status = err.status();
                ctx.error = Some(err);
                Error::e_explain(HTTPStatus(status), "no backend left to try")
            }
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(route) = ctx.route.map(|r| self.state.route(r)) else { return e };
        if let Some(addr) = peer.address().as_inet() {
            ctx.tried.push(*addr);
        }
        let kind = UpstreamErrorKind::of(&e);
        self.state.metrics.upstream_error(route.service, kind);
        ctx.error_counted = true;
        ctx.error = GatewayError::from_pingora(&e, None);
        // Nothing was sent upstream yet, so another backend is safe for any method.
        let retries = self.state.pools.get(route.service).settings.retries as usize;
        if ctx.tried.len() <= retries {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(uri) = ctx.upstream_uri.clone() {
            upstream.set_uri(uri);
        }
        let config = &self.state.config;
        for name in
            forwarding::underscore_headers(&upstream.headers, config.limits.underscores_in_headers, &self.protected)
        {
            upstream.remove_header(&name);
        }
        let trusted = &config.trusted_proxies;
        let from_trusted = trusted.contains(&ctx.peer_ip);
        if from_trusted {
            let existing = forwarding::combined_lines(upstream.headers.get_all("x-forwarded-for"));
            let chain = forwarding::forwarded_for(ctx.peer_ip, existing.as_deref(), trusted);
            upstream.insert_header("X-Forwarded-For", chain)?;
        } else {
            // From an untrusted peer the chain is just the peer, which is the client.
            upstream.insert_header("X-Forwarded-For", ctx.client_ip_text.as_str())?;
        }
        upstream.insert_header("X-Real-IP", ctx.client_ip_text.as_str())?;
        upstream.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        self.identity_headers(upstream, ctx)?;
        if !(from_trusted && upstream.headers.contains_key("x-forwarded-proto")) {
            let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
            upstream.insert_header("X-Forwarded-Proto", if tls { "https" } else { "http" })?;
        }
        if !(from_trusted && upstream.headers.contains_key("x-forwarded-host")) {
            match upstream.headers.get(HOST).cloned() {
                Some(host) => upstream.insert_header("X-Forwarded-Host", host)?,
                None => {
                    upstream.remove_header("X-Forwarded-Host");
                }
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.upstream_duration = ctx.upstream_started.map(|t| t.elapsed());
        if upstream.status.is_server_error() {
            if let Some(route) = ctx.route {
                self.state.metrics.upstream_error(self.state.route(route).service, UpstreamErrorKind::Status5xx);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        upstream.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        add_rate_limit_headers(upstream, ctx.rate_limit.as_ref());
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Self::CTX) -> FailToProxy {
        if let Some(sent) = session.response_written() {
            // Headers are out: the body was cut; nothing else can be said to this client.
            return FailToProxy { error_code: sent.status.as_u16(), can_reuse_downstream: false };
        }
        let read_timeout = ctx.route.map(|r| {
            let route = self.state.route(r);
            let pool = self.state.pools.get(route.service);
            route.timeout.map_or(pool.settings.read_timeout, |t| t.min(pool.settings.read_timeout))
        });
        let err = ctx.error.take().or_else(|| GatewayError::from_pingora(e, read_timeout));
        match err {
            Some(err) => {
                let code = err.status();
                let written = respond(session, ctx, &err).await.is_ok();
                // A 502/503/504 to a request whose body was read whole leaves the connection
                // in a clean state: keep it, so clients of a failing service do not pay a new
                // connection (and the gateway a new session) for every error.
                let body_done = session.is_body_empty() || session.is_body_done();
                FailToProxy { error_code: code, can_reuse_downstream: written && body_done && !err.closes_connection() }
            }
            None => FailToProxy { error_code: 0, can_reuse_downstream: false },
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, e: &Error) -> bool {
        // Our own refusals (413, 431, …) are answered and access-logged; not gateway errors.
        ctx.error_code.is_some() && e.esource != ErrorSource::Upstream
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        ctx.inflight = None;
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if let (Some(e), Some(route), false) = (e, ctx.route, ctx.error_counted) {
            if e.esource == ErrorSource::Upstream {
                self.state.metrics.upstream_error(self.state.route(route).service, UpstreamErrorKind::of(e));
            }
        }
        let elapsed = ctx.started.elapsed();
        let req = session.req_header();
        self.state.metrics.observe_request(ctx.route, &req.method, status, elapsed.as_secs_f64());
        if !self.state.config.access_log {
            return;
        }
        let route = ctx.route.map(|r| self.state.route(r));
        let line = access::AccessLine {
            request_id: &ctx.request_id,
            client_ip: &ctx.client_ip_text,
            method: req.method.as_str(),
            path: req.uri.path(),
            route: route.map_or("-", |r| r.label.as_str()),
            service: route.map_or("-", |r| self.state.pools.get(r.service).settings.name.as_str()),
            backend: ctx.backend,
            status,
            bytes_in: session.body_bytes_read(),
            bytes_out: session.body_bytes_sent(),
            duration: elapsed,
            upstream_duration: ctx.upstream_duration,
            error: ctx.error_code,
        };
        access::write(&line);
    }
}
