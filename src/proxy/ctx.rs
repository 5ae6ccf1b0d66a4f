//! Per-request state carried between Pingora's phases.

use crate::auth::Identity;
use crate::errors::GatewayError;
use crate::lifecycle::InflightRequest;
use crate::ratelimit;
use crate::upstream::InflightGuard;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one request has learned so far. Each field names the phase that sets it.
#[derive(Debug)]
pub struct RequestCtx {
    /// `new_ctx`: when the request started.
    pub started: Instant,
    /// `early_request_filter`: the id returned to the client and sent upstream.
    pub request_id: String,
    /// `early_request_filter`: the TCP peer.
    pub peer_ip: IpAddr,
    /// `early_request_filter`: the client after `trusted_proxies` rules.
    pub client_ip: IpAddr,
    /// `early_request_filter`: `client_ip` as text (used in headers, logs and hashing).
    pub client_ip_text: String,
    /// `request_filter`: the matched route.
    pub route: Option<usize>,
    /// `request_filter`: path and query to send upstream.
    pub upstream_uri: Option<http::Uri>,
    /// `request_filter`: the verified caller (`None` = anonymous); read by `upstream_peer`
    /// (`claim:` hash keys) and `upstream_request_filter` (claim headers).
    pub identity: Option<Arc<Identity>>,
    /// `request_filter`: the rate-limit verdict; `response_filter` turns it into headers.
    pub rate_limit: Option<ratelimit::Decision>,
    /// `request_body_filter`: body bytes seen so far (for `max_body`).
    pub body_bytes: u64,
    /// `upstream_peer`: backends that failed to connect (never picked again for this request).
    pub tried: Vec<SocketAddr>,
    /// `proxy_upstream_filter`: the peer of the first attempt, handed to `upstream_peer`.
    pub first_peer: Option<Box<pingora::upstreams::peer::HttpPeer>>,
    /// `upstream_peer`: the backend of the current attempt.
    pub backend: Option<SocketAddr>,
    /// `upstream_peer`: least_conn slot, released when the request ends or is retried.
    pub inflight: Option<InflightGuard>,
    /// `upstream_peer`: start of the current upstream attempt.
    pub upstream_started: Option<Instant>,
    /// `upstream_response_filter`: time to the upstream's response headers.
    pub upstream_duration: Option<Duration>,
    /// Any phase: the failure to answer with (read by `fail_to_proxy`).
    pub error: Option<GatewayError>,
    /// `fail_to_connect`: the current attempt's error is already counted in metrics.
    pub error_counted: bool,
    /// Error code sent, for the access log.
    pub error_code: Option<&'static str>,
    /// `new_ctx`: counts this request as in flight for graceful shutdown.
    pub in_flight: Option<InflightRequest>,
}

impl RequestCtx {
    /// A fresh context; the clock starts now.
    pub fn new() -> Self {
        RequestCtx {
            started: Instant::now(),
            request_id: String::new(),
            peer_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_ip_text: String::new(),
            route: None,
            identity: None,
            upstream_uri: None,
            rate_limit: None,
            body_bytes: 0,
            tried: Vec::new(),
            first_peer: None,
            backend: None,
            inflight: None,
            upstream_started: None,
            upstream_duration: None,
            error: None,
            error_counted: false,
            error_code: None,
            in_flight: None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
