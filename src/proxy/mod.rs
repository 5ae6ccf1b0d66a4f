//! The Pingora `ProxyHttp` implementation. Each phase reads what it needs from the session,
//! calls one module (routing, forwarding, auth, ratelimit, upstream, errors, observability)
//! and acts on the answer. Phase order: ARCHITECTURE.md §1.
//!
//! A request runs on the configuration snapshot in force when it started (pinned in
//! [`RequestCtx::snapshot`] by `new_ctx`); every phase reads that snapshot, never the
//! runtime's current one, so a reload mid-request changes nothing for it.

mod admission;
mod aggregation;
mod attempts;
mod body_transform;
mod ctx;
mod dispatch;
mod fill;
mod grpc;
mod inspection;
mod jobs;
mod local;
mod partner;
mod policies;
mod proxied;
mod validation;

pub(crate) use ctx::{RequestCtx, RequestState};

use dispatch::{decide, Decision};
use local::{refuse, respond};

use crate::answer::LocalAnswer;
use crate::config::{RouteTarget, WafMode};
use crate::connections;
use crate::errors::{GatewayError, UpstreamErrorKind};
use crate::forwarding;
use crate::framing;
use crate::observability::access;
use crate::routing;
use crate::runtime::Runtime;
use crate::tls::ConnInfo;
use crate::upstream::attempt::RetryReason;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::HOST;
use pingora::prelude::*;
use pingora::proxy::{box_in_place, FailToProxy};
use std::sync::Arc;

/// The gateway's proxy logic.
#[derive(Debug, Clone)]
pub(crate) struct Gateway {
    runtime: Arc<Runtime>,
}

impl Gateway {
    /// The proxy of a runtime.
    pub(crate) fn new(runtime: Arc<Runtime>) -> Self {
        Gateway { runtime }
    }
}

/// What the TLS handshake of this request's connection recorded (`None` on plain listeners).
fn conn_info(session: &Session) -> Option<&ConnInfo> {
    session.digest()?.ssl_digest.as_ref()?.extension.get::<ConnInfo>()
}

/// `GET /health` on public listeners (for a balancer in front).
fn health_answer() -> LocalAnswer {
    LocalAnswer::bytes(200, "application/json", Bytes::from_static(b"{\"status\":\"ok\"}\n"))
}

/// Bytes of the request head as received (request line + header lines), for `max_header_bytes`.
fn request_head_bytes(req: &RequestHeader) -> usize {
    let target = req.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri.authority().map_or(0, |a| a.as_str().len() + 8);
    let line = req.method.as_str().len() + target + 12;
    req.headers.iter().fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        // Response compression, off until a route's policy turns it on for a request; only
        // when some route compresses (the module costs every request a context and two calls).
        if self.runtime.compression {
            modules.add_module(pingora::modules::http::compression::ResponseCompressionBuilder::enable(0));
        }
    }

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::new(self.runtime.current(), self.runtime.lifecycle.request())
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
        // From the session, not the headers: an HTTP/2 stream has a body unless its HEADERS
        // ended it, whatever `content-length` says or omits.
        let has_body = !session.is_body_empty();
        let req = session.req_header();
        state.request_id = match req.headers.get(&forwarding::X_REQUEST_ID_NAME) {
            Some(id) if forwarding::is_sane_request_id(id.as_bytes()) => {
                String::from_utf8_lossy(id.as_bytes()).into_owned()
            }
            _ => forwarding::new_request_id(),
        };
        state.trace = snap.config.tracing.as_ref().map(|t| crate::trace::RequestTrace::start(t, &req.headers));
        if let Some(peer) = session.client_addr().and_then(|a| a.as_inet()) {
            state.client.peer = peer.ip();
        }
        if let Some(info) = conn_info(session) {
            state.client.hsts = snap.config.listeners.get(info.listener).and_then(|l| l.tls()?.hsts.clone());
            state.client.tls = Some(info.clone());
        }
        let xff = forwarding::combined_lines(req.headers.get_all(&forwarding::X_FORWARDED_FOR_NAME));
        state.client.ip = forwarding::client_ip(state.client.peer, xff.as_deref(), &snap.config.trusted_proxies);
        state.client.ip_text = forwarding::ip_text(state.client.ip);
        let limits = &snap.config.limits;
        let checked = if request_head_bytes(req) > limits.max_header_bytes {
            Err(GatewayError::HeadersTooLarge { limit: limits.max_header_bytes })
        } else {
            framing::inspect(req).and_then(|declared| {
                state.declared_length = declared;
                connections::head_read(has_body);
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
                state.refusal = Some(err);
                Error::e_explain(HTTPStatus(status), "request refused before routing")
            }
        }
    }

    // The routes that answer here (aggregation, gRPC transcoding, jobs) await futures many
    // KiB large (upstream fetches, NATS publishes). Inline, they would make this phase's future
    // as large, and Pingora boxes it by copy on every request (`async_trait`), plain proxied
    // ones included; boxed in place (built in their allocation, not copied there), only those
    // routes pay for them, with an allocation.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
        let decision = match decide(snap, session.req_header(), state) {
            Ok(d @ (Decision::Proxy | Decision::Jobs | Decision::Aggregate | Decision::Grpc(_))) => {
                // A cache's background revalidation repeats a request already admitted.
                let background = session.subrequest_ctx.is_some();
                self.admit(snap, session.req_header(), state, background).await.map(|_| d)
            }
            other => other,
        };
        match decision {
            Ok(Decision::Proxy) => self.start_proxied(session, ctx).await,
            Ok(Decision::Preflight) => {
                let route = snap.route(state.route.ok_or_else(|| Error::new(InternalError))?);
                match policies::preflight_answer(route, session.req_header()) {
                    Some(answer) => respond(session, snap, state, answer).await.map(|_| true),
                    None => refuse(session, snap, state, &GatewayError::NoRoute).await.map(|_| true),
                }
            }
            Ok(Decision::Health) => respond(session, snap, state, health_answer()).await.map(|_| true),
            Ok(Decision::Aggregate) => match snap.route(state.route.ok_or_else(|| Error::new(InternalError))?).target {
                RouteTarget::Aggregate(id) => {
                    box_in_place(|| aggregation::handle(snap, &snap.config.aggregates[id], session, state)).await
                }
                _ => refuse(session, snap, state, &GatewayError::Internal).await.map(|_| true),
            },
            Ok(Decision::Grpc(translation)) => box_in_place(|| grpc::handle(snap, translation, session, state)).await,
            Ok(Decision::Jobs) => match (&self.runtime.jobs, &snap.config.jobs) {
                (Some(link), Some(settings)) => {
                    box_in_place(|| jobs::handle(&self.runtime, snap, link, settings, session, state)).await
                }
                _ => refuse(session, snap, state, &GatewayError::NoRoute).await.map(|_| true),
            },
            Err(err) => refuse(session, snap, state, &err).await.map(|_| true),
        }
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
        if end {
            connections::body_read();
        }
        if let Some(route) = state.route {
            // What was read from the client, not what passes here: a retry passes the
            // retry buffer again.
            let limit = snap.route(route).max_body;
            if session.body_bytes_read() as u64 > limit {
                state.refusal = Some(GatewayError::PayloadTooLarge { limit });
                return Error::e_explain(HTTPStatus(413), "request body over max_body");
            }
        }
        let mut to_inspect = None;
        if let (Some(held), Some(route)) = (state.validation.as_mut(), state.route) {
            match held.take(snap.route(route), body, end) {
                Err(err) => {
                    let status = err.status();
                    state.refusal = Some(err);
                    return Error::e_explain(HTTPStatus(status), "request body refused by the route's validation");
                }
                Ok(validation::Held::Whole(bytes)) => to_inspect = Some((route, Some(bytes), state.declared_length)),
                Ok(validation::Held::Overflow(length)) => to_inspect = Some((route, None, Some(length))),
                Ok(_) => {}
            }
        }
        // The client's whole body, for a transform (inspection sees it as the client sent it).
        let whole = state.sent_body.as_ref().and(to_inspect.as_ref()).and_then(|(_, bytes, _)| bytes.clone());
        if let Some((route, bytes, length)) = to_inspect {
            if snap.route(route).waf.mode != WafMode::Off && state.waf.is_none() {
                let body = match bytes {
                    Some(bytes) => inspection::body(snap, Some(bytes), length),
                    None => crate::waf::Body::TooLarge(length.unwrap_or(0)),
                };
                let head = session.req_header();
                if let Err(err) = inspection::inspect(&self.runtime, snap, route, state, head, body).await {
                    let status = err.status();
                    state.refusal = Some(err);
                    return Error::e_explain(HTTPStatus(status), "request refused by request inspection");
                }
            }
        }
        if state.sent_body.is_some() {
            self.transform_request_chunk(session, body, end, whole, ctx)?;
        }
        Ok(())
    }

    async fn proxy_upstream_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        if let Some(route) =
            ctx.state.route.filter(|r| ctx.snapshot.transform(*r).is_some_and(|t| t.response.is_some()))
        {
            // Boxed: a fetch's future is large, and only these routes should carry it.
            return box_in_place(|| self.answer_transformed(session, ctx, route)).await.map(|_| false);
        }
        let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
        // The first backend is chosen here rather than in `upstream_peer`: when there is none
        // (or the circuit is open), the 503 answered from this hook keeps the client's
        // connection (Pingora closes it after any error raised in its upstream loop).
        match attempts::start(snap, session, state) {
            Ok(peer) => {
                state.upstream.picked_peer = Some(peer);
                Ok(true)
            }
            Err(err) => {
                if !session.is_body_empty() && !session.is_body_done() {
                    // An unread body would be drained before reuse: close instead.
                    session.set_keepalive(None);
                }
                refuse(session, snap, state, &err).await?;
                Ok(false)
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
        if let Some(held) = state.validation.as_mut() {
            held.restart(session.as_ref().retry_buffer_truncated());
        }
        if let Some(peer) = state.upstream.picked_peer.take() {
            return Ok(peer);
        }
        match attempts::next_peer(snap, session, state) {
            Ok(peer) => Ok(peer),
            Err(err) => {
                // Only a failed attempt leads here: its failure is counted already.
                let status = err.status();
                state.refusal = Some(err);
                Error::e_explain(HTTPStatus(status), "no backend left to try")
            }
        }
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
        let Some(service) = attempts::service(snap, state) else { return e };
        let error = GatewayError::from_pingora(&e, None);
        state.upstream.attempts.connect_failed(&service, UpstreamErrorKind::of(&e), error);
        attempts::record_span(snap, state, Some(UpstreamErrorKind::Connect.label()));
        // Nothing was sent upstream yet, so another backend is safe for any method.
        if attempts::may_retry(snap, session, state, RetryReason::Connect) {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
        let mut e = e.more_context(format!("Peer: {peer}"));
        if std::mem::take(&mut state.upstream.retrying_status) {
            // Our own error from `upstream_response_filter`: its retry is decided and counted.
            e.set_retry(true);
            return e;
        }
        let kind = UpstreamErrorKind::of(&e);
        if let Some(service) = attempts::service(snap, state) {
            state.upstream.attempts.failed(&service, kind);
        }
        attempts::record_span(snap, state, Some(kind.label()));
        if kind == UpstreamErrorKind::Reset && attempts::may_retry(snap, session, state, RetryReason::Reset) {
            e.set_retry(true);
        } else if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated() {
            e.set_retry(false);
        } else {
            // Pingora's own rule: a pooled connection the backend had already closed is
            // retried once (the request never reached it).
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
        if let Some(uri) = state.upstream_uri.clone() {
            upstream.set_uri(uri);
        }
        let config = &snap.config;
        let identity = state.identity.as_deref().map_or(&[][..], |i| &i.forward[..]);
        let forwarding = forwarding::Forwarding {
            peer: state.client.peer,
            client: &state.client.ip_text,
            request_id: &state.request_id,
            trusted: &config.trusted_proxies,
            underscores_allowed: config.limits.underscores_in_headers,
            protected: &snap.protected_headers,
            tls: state.client.tls.is_some(),
            client_subject: state.client.tls.as_ref().and_then(|t| t.client_subject.as_ref()),
            identity_headers: &snap.identity_headers,
            api_key_header: config.api_keys.as_ref().map(|keys| &keys.header),
            identity,
            forward_authorization: state.route.is_none_or(|r| snap.route(r).forward_authorization),
            continued: state.validation.as_ref().is_some_and(|v| v.continued()),
        };
        forwarding::rewrite(upstream, &forwarding)?;
        if let Some(trace) = &state.trace {
            // The backend continues from this attempt's span.
            trace.propagate(upstream, state.upstream.span.unwrap_or(trace.span_id))?;
        }
        policies::on_upstream_request(snap, session, state, upstream);
        if let Some(sent) = &state.sent_body {
            if let Some(t) = state.route.and_then(|r| snap.transform(r)?.request.as_ref()) {
                body_transform::on_upstream_request(sent, t, upstream);
            }
        }
        if session.cache.enabled() {
            state.cache.unkeyed_credentials = policies::unkeyed_credentials(snap, state, upstream);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
        state.upstream.duration = state.upstream.attempts.started().map(|t| t.elapsed());
        let status = upstream.status.as_u16();
        let Some(service) = attempts::service(snap, state) else { return Ok(()) };
        state.upstream.attempts.answered(&service, status);
        // A `retry_on` status goes to another backend when one is left and the request can be
        // sent again; otherwise this answer is the client's.
        if status >= 500 && attempts::may_retry(snap, session, state, RetryReason::Status) {
            attempts::record_span(snap, state, None);
            if let Ok(peer) = attempts::next_peer(snap, session, state) {
                state.upstream.picked_peer = Some(peer);
                state.upstream.retrying_status = true;
                return Error::e_explain(HTTPStatus(status), "retried on another backend");
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        fill::restore_version(session, &mut ctx.state);
        let (snap, state) = (&*ctx.snapshot, &ctx.state);
        if upstream.status == http::StatusCode::SWITCHING_PROTOCOLS {
            connections::upgraded();
        }
        state.stamp().apply(upstream)?;
        policies::on_response(snap, session, state, upstream);
        Ok(())
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
        let Some(cache) = state.route.and_then(|r| snap.route(r).cache.as_ref()) else { return Ok(()) };
        // A request with a body (whatever its headers say: chunked, or an HTTP/2 stream
        // without `content-length`) is answered by the backend: the key does not see the body.
        if !session.is_body_empty() {
            return Ok(());
        }
        let req = session.req_header();
        let method_ok = req.method == http::Method::GET || req.method == http::Method::HEAD;
        if !method_ok || req.headers.contains_key(http::header::UPGRADE) || !policies::cache_enabled_for(snap, state) {
            return Ok(());
        }
        let mut overrides = pingora::cache::CacheOptionOverrides::default();
        overrides.wait_timeout = Some(std::time::Duration::from_secs(10));
        // A background fill already holds its key's lock: it must not wait on it.
        let background_fill = fill::adopt(session);
        let lock = if background_fill.is_some() { None } else { Some(crate::policy::cache::cache_lock()) };
        session.cache.enable(
            crate::policy::cache::storage(),
            None,
            Some(crate::policy::cache::predictor()),
            lock,
            Some(overrides),
        );
        session.cache.set_max_file_size_bytes(cache.max_entry as usize);
        state.cache.background_fill = background_fill;
        if state.cache.background_fill.is_none() && session.subrequest_spawner.is_some() {
            let key = policies::cache_key(snap, session, state)
                .ok_or_else(|| Error::explain(InternalError, "cache enabled on a request without a cache key"))?;
            state.cache.handed_off = fill::hand_off(snap, session, state, &key);
            state.cache.key = Some(key);
        }
        Ok(())
    }

    fn allow_spawning_subrequest(&self, session: &Session, _ctx: &Self::CTX) -> bool {
        fill::may_hand_off(session)
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Self::CTX) -> Result<pingora::cache::CacheKey> {
        if let Some(key) = ctx.state.cache.key.take() {
            return Ok(key);
        }
        policies::cache_key(&ctx.snapshot, session, &ctx.state)
            .ok_or_else(|| Error::explain(InternalError, "cache enabled on a request without a cache key"))
    }

    fn cache_vary_filter(
        &self,
        meta: &pingora::cache::CacheMeta,
        ctx: &mut Self::CTX,
        req: &RequestHeader,
    ) -> Option<pingora::cache::key::HashBinary> {
        policies::cache_variance(&ctx.snapshot, &ctx.state, meta.headers(), req)
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<pingora::cache::RespCacheable> {
        Ok(policies::cacheable(&ctx.snapshot, &ctx.state, resp))
    }

    fn should_serve_stale(&self, session: &mut Session, ctx: &mut Self::CTX, error: Option<&Error>) -> bool {
        match error {
            // Stale-if-error: the entry's own window decides (Pingora checks it).
            Some(e) => e.esource() == &ErrorSource::Upstream,
            // Stale-while-revalidate, when the route allows it.
            None => {
                let serves = ctx
                    .state
                    .route
                    .and_then(|r| ctx.snapshot.route(r).cache.as_ref())
                    .is_some_and(|c| !c.stale_while_revalidate.is_zero());
                if serves && session.cache.is_cache_lock_writer() {
                    // Pingora hands the refresh to a background subrequest next.
                    fill::lend_http1_version(session, &mut ctx.state);
                }
                serves
            }
        }
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Self::CTX) -> FailToProxy {
        let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
        if let Some(sent) = session.response_written() {
            // Headers are out: the body was cut; nothing else can be said to this client.
            return FailToProxy { error_code: sent.status.as_u16(), can_reuse_downstream: false };
        }
        let read_timeout = state.route.and_then(|r| {
            let service = snap.service(state.upstream.service?);
            let route = snap.route(r);
            Some(route.timeout.map_or(service.read_timeout, |t| t.min(service.read_timeout)))
        });
        let err = match state.refusal.take() {
            Some(refusal) => Some(refusal),
            // The body missed `limits.body_timeout` (the stream failed the read).
            None if connections::body_timed_out() => Some(GatewayError::RequestTimeout),
            None => GatewayError::from_pingora(e, read_timeout),
        };
        match err {
            Some(err) => {
                let code = err.status();
                let written = refuse(session, snap, state, &err).await.is_ok();
                // A 502/503/504 to a request whose body was read whole leaves the connection
                // in a clean state (Pingora may still close it after an upstream error).
                let body_done = session.is_body_empty() || session.is_body_done();
                FailToProxy { error_code: code, can_reuse_downstream: written && body_done && !err.closes_connection() }
            }
            None => FailToProxy { error_code: 0, can_reuse_downstream: false },
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, e: &Error) -> bool {
        // Our own refusals (413, 431, …) are answered and access-logged; not gateway errors.
        ctx.state.error_code.is_some() && e.esource != ErrorSource::Upstream
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        fill::restore_version(session, &mut ctx.state);
        let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if let Some(service) = attempts::service(snap, state) {
            state.upstream.attempts.finish(&service);
        }
        let service = state.upstream.service;
        if let (Some(e), Some(service), false) = (e, service, state.upstream.attempts.counted()) {
            if e.esource == ErrorSource::Upstream {
                snap.metrics.upstream_error(service, UpstreamErrorKind::of(e));
            }
        }
        let upstream_error = e.filter(|e| e.esource == ErrorSource::Upstream).map(|e| UpstreamErrorKind::of(e).label());
        // An attempt still open at the end either answered (its status is recorded) or was
        // given up when the client left.
        let unanswered = state.upstream.attempts.status().is_none().then_some("cancelled");
        attempts::record_span(snap, state, upstream_error.or(unanswered));
        let elapsed = state.started.elapsed();
        // A background request (a fill or a revalidation) is counted by the client request it
        // serves, not as one more.
        let background = session.subrequest_ctx.is_some();
        if let Some(route) = state.route.filter(|r| !background && snap.route(*r).cache.is_some()) {
            snap.metrics
                .cache_result(route, policies::cache_result(state.cache.phase(session), state.cache.handed_off));
        }
        // A background fill tells the requests waiting on it what it came to.
        if let Some(held) = state.cache.background_fill.take() {
            held.release(state.cache.phase(session));
        }
        if let Some(program) = snap.program.as_ref().filter(|_| !background) {
            partner::record(program, state, status, session.body_bytes_read() as u64, session.body_bytes_sent() as u64);
        }
        let req = session.req_header();
        snap.metrics.observe_request(&self.runtime.metrics, state.route, &req.method, status, elapsed.as_secs_f64());
        let route = state.route.map(|r| snap.route(r));
        let trace_id = state.trace.as_ref().map(|t| t.trace_id);
        if let (Some(trace), Some(settings)) = (state.trace.take(), snap.config.tracing.as_ref()) {
            let server = crate::trace::ServerSpan {
                method: req.method.as_str(),
                path: req.uri.path(),
                route: route.map(|r| r.label.as_str()),
                service: service.map(|s| snap.service(s).name.as_str()),
                status,
                client_ip: &state.client.ip_text,
                request_id: &state.request_id,
                error: state.error_code,
            };
            if let Some(spans) = trace.finish(server) {
                self.runtime.spans.push(spans, settings.queue_size, &self.runtime.metrics.spans);
            }
        }
        if !snap.config.access_log {
            return;
        }
        let line = access::AccessLine {
            request_id: &state.request_id,
            client_ip: &state.client.ip_text,
            method: req.method.as_str(),
            path: req.uri.path(),
            route: route.map_or("-", |r| r.label.as_str()),
            service: service.map_or("-", |s| snap.service(s).name.as_str()),
            backend: state.upstream.attempts.backend(),
            status,
            bytes_in: session.body_bytes_read(),
            bytes_out: session.body_bytes_sent(),
            duration: elapsed,
            upstream_duration: state.upstream.duration,
            error: state.error_code,
            http_version: access::http_version(req.version),
            tls_version: state.client.tls.as_ref().map(|t| t.version),
            attempts: state.upstream.attempts.count(),
            user: state.identity.as_ref().and_then(|i| i.sub.as_deref()),
            trace_id,
            waf: state.waf.as_ref(),
        };
        access::write(&line);
    }
}
