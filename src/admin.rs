//! The admin listener (never served on public listeners): `/health` (process alive), `/ready`
//! (every service has a healthy backend, dependencies connected), `/metrics` (Prometheus text),
//! `GET /config` (the generation in force, the file's sha256, when it was loaded and how the
//! last reload ended; never a secret) and `POST /config/reload`.

use crate::answer::LocalAnswer;
use crate::runtime::Runtime;
use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;
use std::time::SystemTime;

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
        let (tracked, overflowed) = snap.limiter.local_usage();
        metrics.set_rate_limit_usage(tracked, overflowed);
        LocalAnswer::bytes(200, "text/plain; version=0.0.4", Bytes::from(metrics.render()))
    }

    fn config(&self) -> LocalAnswer {
        let snap = self.runtime.current();
        let last = self.runtime.last_reload().map(|r| {
            let (result, errors) = match &r.result {
                Ok(_) => ("ok", Vec::new()),
                Err(errors) => ("failed", errors.clone()),
            };
            json!({"result": result, "trigger": r.trigger, "at": rfc3339(r.at), "errors": errors})
        });
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

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
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
            ("/config/reload", _) if method == Method::POST => self.reload().await,
            ("/config/reload", _) => method_not_allowed("POST"),
            ("/health" | "/ready" | "/metrics" | "/config", false) => method_not_allowed("GET, HEAD"),
            _ => not_found("GET /health /ready /metrics /config, POST /config/reload"),
        };
        answer.into_http()
    }
}
