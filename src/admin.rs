//! The admin listener (never served on public listeners): `/health` (process alive), `/ready`
//! (every service has a healthy backend, dependencies connected), `/metrics` (Prometheus text),
//! `GET /config` (the generation in force, the file's sha256, when it was loaded and how the
//! last reload ended; never a secret), `POST /config/reload`, `POST /cache/purge`, and the
//! status page: `GET /status` (JSON) and `GET /` (HTML), see `crate::status`. Every request
//! passes [`admit`] first (the listener has no authentication: a browser must not be usable
//! against it), and every failure is a [`GatewayError`] answered with its request id.

use crate::answer::LocalAnswer;
use crate::errors::GatewayError;
use crate::runtime::Runtime;
use crate::status::Reload;
use crate::timestamp::rfc3339;
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;

/// Admin endpoints over the runtime.
#[derive(Debug)]
pub(crate) struct AdminApp {
    runtime: Arc<Runtime>,
}

impl AdminApp {
    /// Serve admin endpoints for this runtime.
    pub(crate) fn new(runtime: Arc<Runtime>) -> Self {
        AdminApp { runtime }
    }

    fn ready(&self) -> LocalAnswer {
        let snap = self.runtime.current();
        let mut missing = snap.readiness_problems(self.runtime.jobs.as_deref());
        missing.extend(self.runtime.fleet.as_ref().and_then(|f| f.readiness_problem()));
        // Open circuits are reported, not a reason to take the gateway out of a balancer.
        let circuits: serde_json::Map<String, serde_json::Value> = snap
            .config
            .services
            .iter()
            .zip(&snap.pools)
            .filter(|(s, _)| s.circuit_breaker.is_some())
            .map(|(s, p)| (s.name.clone(), json!(p.state.breaker.state().name())))
            .collect();
        let mut body =
            if missing.is_empty() { json!({"ready": true}) } else { json!({"ready": false, "missing": missing}) };
        if !circuits.is_empty() {
            body["circuits"] = serde_json::Value::Object(circuits);
        }
        LocalAnswer::json(if missing.is_empty() { 200 } else { 503 }, &body)
    }

    fn metrics(&self) -> LocalAnswer {
        let snap = self.runtime.current();
        let metrics = &self.runtime.metrics;
        for pool in &snap.pools {
            let (healthy, unhealthy) = pool.health_counts();
            metrics.set_backends(pool.name(), healthy, unhealthy);
            let circuit =
                snap.config.services.iter().find(|s| s.name == pool.name()).and_then(|s| s.circuit_breaker.as_ref());
            metrics.set_resilience(
                pool.name(),
                pool.state.outliers.ejected_count(),
                circuit.map(|_| pool.state.breaker.state() as u8),
            );
            let consul = snap.config.services.iter().any(|s| s.name == pool.name() && s.discovery.is_some());
            if let Some(age) = pool.discovery_sync_age().filter(|_| consul) {
                metrics.set_consul_sync_age(pool.name(), age);
            }
        }
        metrics.set_in_flight(self.runtime.lifecycle.in_flight());
        let cache = crate::policy::cache::storage();
        metrics.set_cache_usage(cache.bytes(), cache.len());
        metrics.set_redis_node(snap.limiter.redis_node().as_deref());
        let (tracked, overflowed) = snap.limiter.local_usage();
        metrics.set_rate_limit_usage(tracked, overflowed);
        LocalAnswer::bytes(200, "text/plain; version=0.0.4", Bytes::from(metrics.render()))
    }

    /// `POST /cache/purge` with `{"path": "/catalog/x?page=2"}` (every variant of that path on
    /// the route that owns it, optionally `"host"` to pick among host routes) or
    /// `{"all": true}`.
    async fn purge(&self, session: &mut ServerSession) -> Result<LocalAnswer, GatewayError> {
        const LIMIT: usize = 64 * 1024;
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > LIMIT => {
                    return Err(GatewayError::PayloadTooLarge { limit: LIMIT as u64 })
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(_) => return Err(GatewayError::BadRequest("the request body could not be read".into())),
            }
        }
        let bad = |message: &str| GatewayError::BadRequest(message.into());
        let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return Err(bad("expected a JSON object: {\"path\": \"/x\"} or {\"all\": true}"));
        };
        let storage = crate::policy::cache::storage();
        if request["all"] == json!(true) {
            return Ok(LocalAnswer::json(200, &json!({"purged": storage.purge_all()})));
        }
        let Some(target) = request["path"].as_str() else {
            return Err(bad("`path` (a string) or `all: true` is required"));
        };
        let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
        let Ok(normalized) = crate::routing::normalize_path(path) else {
            return Err(bad("`path` is not a valid request path"));
        };
        let snap = self.runtime.current();
        let host = request["host"].as_str().map(crate::routing::host_without_port);
        let route_path = crate::routing::route_path(&normalized);
        let found = snap.routes.lookup(host.as_deref(), &Method::GET, &route_path, &http::HeaderMap::new());
        let crate::routing::RouteMatch::Found(route) = found else {
            return Err(GatewayError::NotFound("no route owns this path".into()));
        };
        let route = snap.route(route);
        if route.cache.is_none() {
            return Err(GatewayError::NotFound(format!("route {} does not cache", route.label)));
        }
        let key_path = match query {
            Some(q) => format!("{normalized}?{q}"),
            None => normalized.to_string(),
        };
        let purged = storage.purge_tag(crate::policy::cache::purge_tag(&route.label, &key_path));
        Ok(LocalAnswer::json(200, &json!({"purged": purged, "route": route.label})))
    }

    fn config(&self) -> LocalAnswer {
        let snap = self.runtime.current();
        let last = self.runtime.last_reload().map(|r| Reload::of(&r));
        LocalAnswer::json(
            200,
            &json!({
                "generation": snap.generation,
                "file": snap.source.path.display().to_string(),
                "sha256": snap.source.sha256,
                "loaded_at": rfc3339(snap.source.loaded_at),
                "watch_config": snap.config.server.watch_config,
                "last_reload": last,
                "source": self.runtime.fleet.as_ref().map(|f| f.view()),
            }),
        )
    }

    async fn reload(&self) -> Result<LocalAnswer, GatewayError> {
        match self.runtime.reload("admin").await {
            Ok(generation) => Ok(LocalAnswer::json(200, &json!({"generation": generation}))),
            Err(errors) => Err(GatewayError::ConfigRefused(errors)),
        }
    }

    /// `GET /usage` (docs/plans.md "Reading usage"): the usage store's records, JSON or CSV.
    async fn usage(&self, session: &ServerSession) -> Result<LocalAnswer, GatewayError> {
        let snap = self.runtime.current();
        let Some(program) = &snap.program else {
            return Err(GatewayError::NotFound(
                "no usage is recorded: the configuration has no `plans` or `usage`".into(),
            ));
        };
        let req = session.req_header();
        let today = crate::quota::calendar::day_of(program.now_ms());
        let accept = req.headers.get(http::header::ACCEPT);
        crate::usage::query::answer(program.usage(), req.uri.query(), accept, today).await
    }

    /// The answer of one admin request, once [`admit`] let it through.
    async fn serve(
        &self,
        session: &mut ServerSession,
        path: &str,
        method: &Method,
    ) -> Result<LocalAnswer, GatewayError> {
        let read = method == Method::GET || method == Method::HEAD;
        Ok(match (path, read) {
            ("/health", true) => LocalAnswer::json(200, &json!({"status": "ok"})),
            ("/ready", true) => self.ready(),
            ("/metrics", true) => self.metrics(),
            ("/config", true) => self.config(),
            ("/status", true) => {
                let status = crate::status::collect_with_usage(&self.runtime).await;
                LocalAnswer::json(200, &serde_json::to_value(status).unwrap_or_default())
            }
            ("/", true) => LocalAnswer::bytes(
                200,
                "text/html; charset=utf-8",
                Bytes::from(crate::status::render_html(&crate::status::collect_with_usage(&self.runtime).await)),
            )
            // The page needs nothing but its own inline styles.
            .header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
            .header("Cache-Control", "no-store"),
            ("/usage", true) => self.usage(session).await?,
            ("/config/reload", _) if method == Method::POST => self.reload().await?,
            ("/cache/purge", _) if method == Method::POST => self.purge(session).await?,
            ("/config/reload" | "/cache/purge", _) => {
                return Err(GatewayError::MethodNotAllowed { allow: vec![Method::POST] })
            }
            ("/" | "/status" | "/health" | "/ready" | "/metrics" | "/config" | "/usage", false) => {
                return Err(GatewayError::MethodNotAllowed { allow: vec![Method::GET, Method::HEAD] })
            }
            _ => {
                return Err(GatewayError::NotFound(
                    "admin endpoints: GET / /status /health /ready /metrics /config /usage, POST /config/reload /cache/purge"
                        .into(),
                ))
            }
        })
    }
}

/// The endpoints that change something (the others only read).
const POST_ENDPOINTS: [&str; 2] = ["/config/reload", "/cache/purge"];

/// What an admin request says about where it comes from and what it carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdminRequest<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    /// `Host` (or the absolute target's authority); `None` for an HTTP/1.0 request without one.
    pub(crate) authority: Option<&'a str>,
    pub(crate) origin: Option<&'a [u8]>,
    pub(crate) content_type: Option<&'a HeaderValue>,
}

/// Whether an admin request may reach an endpoint. The admin listener has no authentication, so
/// a browser on a machine that can reach it must not be usable against it:
/// - DNS rebinding (a page of `evil.example` whose name now resolves to the listener) shows as a
///   `Host` that is not the listener's: only IP literals, `localhost` names and
///   `admin.allowed_hosts` are answered (`/health` and `/ready` excepted: a probe carries
///   nothing worth reading and a balancer may name the node anything);
/// - a cross-site request carries a foreign `Origin`: only the listener's own origin passes
///   (it grants no CORS, so its own pages are the only ones that could call it);
/// - a "simple" cross-site POST (a form, `fetch` in `no-cors` mode) cannot be JSON: POSTs must
///   be, so a browser would first need a CORS preflight, which the listener never grants.
pub(crate) fn admit(req: &AdminRequest<'_>, allowed_hosts: &[String]) -> Result<(), GatewayError> {
    let probe = matches!(req.path, "/health" | "/ready");
    if let Some(authority) = req.authority.filter(|_| !probe) {
        if !host_allowed(authority, allowed_hosts) {
            return Err(GatewayError::MisdirectedRequest(format!(
                "the admin listener does not answer for host `{}` (IP addresses, localhost and admin.allowed_hosts only)",
                crate::routing::host_without_port(authority)
            )));
        }
    }
    if req.origin.is_some_and(|origin| !same_origin(origin, req.authority)) {
        return Err(GatewayError::Forbidden("cross-origin requests to the admin listener are refused".into()));
    }
    let changes_state = req.method == Method::POST && POST_ENDPOINTS.contains(&req.path);
    if changes_state && !crate::policy::schema::is_json(req.content_type) {
        return Err(GatewayError::UnsupportedMediaType(
            "admin POSTs need `Content-Type: application/json` (a browser cannot send that cross-site without a CORS preflight)"
                .into(),
        ));
    }
    Ok(())
}

/// Whether `authority` (`host[:port]`) names a host the admin listener answers for; the port is
/// not checked (the listener is on the port it is on).
fn host_allowed(authority: &str, allowed_hosts: &[String]) -> bool {
    let name = crate::routing::host_without_port(authority);
    crate::config::is_always_allowed_host(&name)
        || allowed_hosts.iter().any(|pattern| match pattern.strip_prefix("*.") {
            Some(parent) => name.strip_suffix(parent).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => *pattern == name,
        })
}

/// Whether an `Origin` is the request's own: `http(s)://` and the same `host[:port]` (a default
/// port written or not). `null` and anything unparsable are foreign.
fn same_origin(origin: &[u8], authority: Option<&str>) -> bool {
    let (Ok(origin), Some(authority)) = (std::str::from_utf8(origin), authority) else { return false };
    let origin = origin.trim().to_ascii_lowercase();
    let (rest, default_port) = if let Some(rest) = origin.strip_prefix("http://") {
        (rest, ":80")
    } else if let Some(rest) = origin.strip_prefix("https://") {
        (rest, ":443")
    } else {
        return false;
    };
    let authority = authority.to_ascii_lowercase();
    let without_default = |a: &str| a.strip_suffix(default_port).unwrap_or(a).to_owned();
    !rest.is_empty() && without_default(rest) == without_default(&authority)
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let request_id = match req.headers.get("x-request-id") {
            Some(id) if crate::forwarding::is_sane_request_id(id.as_bytes()) => {
                String::from_utf8_lossy(id.as_bytes()).into_owned()
            }
            _ => crate::forwarding::new_request_id(),
        };
        let (path, method) = (req.uri.path().to_string(), req.method.clone());
        let snap = self.runtime.current();
        let allowed_hosts = snap.config.admin.as_ref().map_or(&[][..], |a| &a.allowed_hosts[..]);
        let admitted = crate::routing::request_host(
            req.raw_path(),
            req.uri.authority().map(|a| a.as_str()),
            req.headers.get(http::header::HOST).map(|h| h.as_bytes()),
            req.version >= http::Version::HTTP_11,
        )
        .map_err(GatewayError::from)
        .and_then(|host| {
            let request = AdminRequest {
                method: &method,
                path: &path,
                authority: host.authority,
                origin: req.headers.get(http::header::ORIGIN).map(|o| o.as_bytes()),
                content_type: req.headers.get(http::header::CONTENT_TYPE),
            };
            admit(&request, allowed_hosts)
        });
        let answer = match admitted {
            Ok(()) => self.serve(session, &path, &method).await,
            Err(e) => Err(e),
        };
        answer.unwrap_or_else(|e| e.answer(&request_id)).header("X-Request-Id", request_id).into_http()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(
        method: &'a Method,
        path: &'a str,
        host: Option<&'a str>,
        origin: Option<&'a str>,
        content_type: Option<&'a HeaderValue>,
    ) -> AdminRequest<'a> {
        AdminRequest { method, path, authority: host, origin: origin.map(str::as_bytes), content_type }
    }

    fn status(r: &AdminRequest<'_>, allowed: &[&str]) -> u16 {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        admit(r, &allowed).map_or_else(|e| e.status(), |()| 200)
    }

    #[test]
    fn hosts_are_ip_literals_localhost_names_or_listed() {
        let get = Method::GET;
        let host = |h: &'static str| request(&get, "/status", Some(h), None, None);
        for ok in ["127.0.0.1:9901", "10.1.2.3", "[::1]:9901", "LOCALHOST:9901", "localhost.", "ops.localhost"] {
            assert_eq!(status(&host(ok), &[]), 200, "{ok}");
        }
        for refused in ["evil.example:9901", "localhost.evil.example", "127.0.0.1.nip.io", "0x7f000001"] {
            assert_eq!(status(&host(refused), &[]), 421, "{refused}");
        }
        let listed = ["gw1.example.com", "*.ops.example.com"];
        assert_eq!(status(&host("GW1.example.com:9901"), &listed), 200);
        assert_eq!(status(&host("a.b.ops.example.com"), &listed), 200);
        assert_eq!(status(&host("ops.example.com"), &listed), 421, "the wildcard names what is under it");
        assert_eq!(status(&host("evilops.example.com"), &listed), 421);
        assert_eq!(status(&host("gw2.example.com"), &listed), 421);
        // Probes answer any name; a request without Host (HTTP/1.0) is not a browser's.
        assert_eq!(status(&request(&get, "/health", Some("evil.example"), None, None), &[]), 200);
        assert_eq!(status(&request(&get, "/ready", Some("evil.example"), None, None), &[]), 200);
        assert_eq!(status(&request(&get, "/status", None, None, None), &[]), 200);
    }

    #[test]
    fn only_the_listeners_own_origin_passes() {
        let get = Method::GET;
        let from = |origin: &'static str| request(&get, "/config", Some("127.0.0.1:9901"), Some(origin), None);
        assert_eq!(status(&from("http://127.0.0.1:9901"), &[]), 200);
        for foreign in ["http://127.0.0.1:8000", "http://evil.example", "null", "https://127.0.0.1:9901x", ""] {
            assert_eq!(status(&from(foreign), &[]), 403, "{foreign}");
        }
        let default_port = request(&get, "/config", Some("localhost:80"), Some("http://localhost"), None);
        assert_eq!(status(&default_port, &[]), 200);
        assert_eq!(status(&request(&get, "/config", None, Some("http://localhost"), None), &[]), 403);
    }

    #[test]
    fn posts_must_be_json() {
        let post = Method::POST;
        let json = HeaderValue::from_static("application/json; charset=utf-8");
        let text = HeaderValue::from_static("text/plain");
        let form = HeaderValue::from_static("application/x-www-form-urlencoded");
        let host = Some("127.0.0.1:9901");
        assert_eq!(status(&request(&post, "/config/reload", host, None, Some(&json)), &[]), 200);
        assert_eq!(status(&request(&post, "/config/reload", host, None, Some(&text)), &[]), 415);
        assert_eq!(status(&request(&post, "/cache/purge", host, None, Some(&form)), &[]), 415);
        assert_eq!(status(&request(&post, "/cache/purge", host, None, None), &[]), 415);
        // Elsewhere a POST is simply not allowed (405 from the endpoint).
        assert_eq!(status(&request(&post, "/status", host, None, Some(&text)), &[]), 200);
    }
}
