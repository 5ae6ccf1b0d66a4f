//! The admin listener: `/health` (process alive), `/ready` (every service has a healthy backend,
//! dependencies connected), `/metrics` (Prometheus text). Never served on public listeners.

use crate::state::GatewayState;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// Admin endpoints over shared state.
#[derive(Debug)]
pub struct AdminApp {
    state: Arc<GatewayState>,
}

impl AdminApp {
    /// Serve admin endpoints for this state.
    pub fn new(state: Arc<GatewayState>) -> Self {
        AdminApp { state }
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    text(status, "application/json", body)
}

fn text(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let len = resp.body().len();
    let headers = resp.headers_mut();
    if let Ok(v) = content_type.parse() {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    headers.insert(http::header::CONTENT_LENGTH, len.into());
    if let Ok(v) = "no-store".parse() {
        resp.headers_mut().insert(http::header::CACHE_CONTROL, v);
    }
    resp
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/health" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            "/ready" => {
                let missing = self.state.readiness_problems();
                if missing.is_empty() {
                    json(StatusCode::OK, &serde_json::json!({"ready": true}))
                } else {
                    json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"ready": false, "missing": missing}))
                }
            }
            "/metrics" => {
                for (id, pool) in self.state.pools.iter().enumerate() {
                    let (healthy, unhealthy) = pool.health_counts();
                    self.state.metrics.set_backends(id, healthy, unhealthy);
                    if let Some(age) = pool.discovery_sync_age() {
                        self.state.metrics.set_consul_sync_age(&pool.settings.name, age);
                    }
                }
                self.state.metrics.set_in_flight(self.state.lifecycle.inflight());
                let (tracked, overflowed) = self.state.limiter.local_usage();
                self.state.metrics.set_rate_limit_usage(tracked, overflowed);
                text(StatusCode::OK, "text/plain; version=0.0.4", self.state.metrics.render())
            }
            _ => {
                let request_id = crate::forwarding::new_request_id();
                let mut resp = json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"error": "not_found", "message": "admin endpoints: /health /ready /metrics", "request_id": request_id}),
                );
                if let Ok(v) = request_id.parse() {
                    resp.headers_mut().insert("x-request-id", v);
                }
                resp
            }
        }
    }
}
