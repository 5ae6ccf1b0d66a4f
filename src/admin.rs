//! The admin listener (never served on public listeners): `/health` (process alive), `/ready`
//! (every service has a healthy backend, dependencies connected), `/metrics` (Prometheus text),
//! `GET /config` (the generation in force, the file's sha256, when it was loaded and how the
//! last reload ended; never a secret), `POST /config/reload`, and the status page: `GET /status`
//! (JSON) and `GET /` (HTML), see `crate::status`.

use crate::answer::LocalAnswer;
use crate::runtime::Runtime;
use crate::status::{rfc3339, Reload};
use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Response};
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
        let missing = snap.readiness_problems(self.runtime.jobs.as_deref());
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
            if let Some(age) = pool.discovery_sync_age() {
                metrics.set_consul_sync_age(pool.name(), age);
            }
        }
        metrics.set_in_flight(self.runtime.lifecycle.inflight());
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
    async fn purge(&self, session: &mut ServerSession) -> LocalAnswer {
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = session.read_request_body().await {
            if body.len() + chunk.len() > 64 * 1024 {
                return LocalAnswer::json(
                    413,
                    &json!({"error": "payload_too_large", "message": "purge requests are small JSON objects"}),
                );
            }
            body.extend_from_slice(&chunk);
        }
        let bad = |message: &str| LocalAnswer::json(400, &json!({"error": "bad_request", "message": message}));
        let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return bad("expected a JSON object: {\"path\": \"/x\"} or {\"all\": true}");
        };
        let storage = crate::policy::cache::storage();
        if request["all"] == json!(true) {
            return LocalAnswer::json(200, &json!({"purged": storage.purge_all()}));
        }
        let Some(target) = request["path"].as_str() else { return bad("`path` (a string) or `all: true` is required") };
        let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
        let Ok(normalized) = crate::routing::normalize_path(path) else {
            return bad("`path` is not a valid request path");
        };
        let snap = self.runtime.current();
        let host = request["host"].as_str().map(crate::routing::host_without_port);
        let route_path = crate::routing::route_path(&normalized);
        let found = snap.routes.lookup(host.as_deref(), &Method::GET, &route_path, &http::HeaderMap::new());
        let crate::routing::RouteMatch::Found(route) = found else {
            return LocalAnswer::json(404, &json!({"error": "not_found", "message": "no route owns this path"}));
        };
        let route = snap.route(route);
        if route.cache.is_none() {
            return LocalAnswer::json(
                404,
                &json!({"error": "not_found", "message": format!("route {} does not cache", route.label)}),
            );
        }
        let key_path = match query {
            Some(q) => format!("{normalized}?{q}"),
            None => normalized.to_string(),
        };
        let purged = storage.purge_tag(crate::policy::cache::purge_tag(&route.label, &key_path));
        LocalAnswer::json(200, &json!({"purged": purged, "route": route.label}))
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
            }),
        )
    }

    async fn reload(&self) -> LocalAnswer {
        match self.runtime.reload("admin").await {
            Ok(generation) => LocalAnswer::json(200, &json!({"generation": generation})),
            Err(errors) => LocalAnswer::json(422, &json!({"errors": errors})),
        }
    }
}

fn not_found(allowed: &str) -> LocalAnswer {
    let request_id = crate::forwarding::new_request_id();
    LocalAnswer::json(
        404,
        &json!({"error": "not_found", "message": format!("admin endpoints: {allowed}"), "request_id": request_id}),
    )
    .header("X-Request-Id", request_id)
}

fn method_not_allowed(allow: &'static str) -> LocalAnswer {
    let request_id = crate::forwarding::new_request_id();
    LocalAnswer::json(
        405,
        &json!({"error": "method_not_allowed", "message": format!("method not allowed here; allowed: {allow}"), "request_id": request_id}),
    )
    .header("Allow", allow)
    .header("X-Request-Id", request_id)
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        let read = method == Method::GET || method == Method::HEAD;
        let answer = match (path.as_str(), read) {
            ("/health", true) => LocalAnswer::json(200, &json!({"status": "ok"})),
            ("/ready", true) => self.ready(),
            ("/metrics", true) => self.metrics(),
            ("/config", true) => self.config(),
            ("/status", true) => {
                LocalAnswer::json(200, &serde_json::to_value(crate::status::collect(&self.runtime)).unwrap_or_default())
            }
            ("/", true) => LocalAnswer::bytes(
                200,
                "text/html; charset=utf-8",
                Bytes::from(crate::status::render_html(&crate::status::collect(&self.runtime))),
            )
            // The page needs nothing but its own inline styles.
            .header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
            .header("Cache-Control", "no-store"),
            ("/config/reload", _) if method == Method::POST => self.reload().await,
            ("/config/reload", _) => method_not_allowed("POST"),
            ("/cache/purge", _) if method == Method::POST => self.purge(session).await,
            ("/cache/purge", _) => method_not_allowed("POST"),
            ("/" | "/status" | "/health" | "/ready" | "/metrics" | "/config", false) => method_not_allowed("GET, HEAD"),
            _ => not_found("GET / /status /health /ready /metrics /config, POST /config/reload /cache/purge"),
        };
        answer.into_http()
    }
}
