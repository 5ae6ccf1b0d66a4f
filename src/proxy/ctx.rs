//! Per-request state carried between Pingora's phases.

use crate::answer::{RateLimitHeaders, Stamp};
use crate::auth::Identity;
use crate::config::{RouteId, ServiceId};
use crate::errors::GatewayError;
use crate::lifecycle::InFlightRequest;
use crate::ratelimit;
use crate::snapshot::Snapshot;
use crate::tls::ConnInfo;
use crate::upstream::attempt::Attempts;
use pingora::upstreams::peer::HttpPeer;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request's context: the configuration it runs on and what it has learned so far. The two
/// halves are separate fields so a phase can read the snapshot while it updates the state.
#[derive(Debug)]
pub(crate) struct RequestCtx {
    /// `new_ctx`: the configuration generation in force when the request started; it finishes
    /// on it whatever reloads happen meanwhile.
    pub(crate) snapshot: Arc<Snapshot>,
    /// What the phases learned.
    pub(crate) state: RequestState,
}

/// What one request has learned so far. Each field names the phase that sets it.
#[derive(Debug)]
pub(crate) struct RequestState {
    /// `new_ctx`: when the request started.
    pub(crate) started: Instant,
    /// `new_ctx`: counts this request as in flight for graceful shutdown (held for its drop).
    #[allow(dead_code)]
    pub(crate) drain_guard: Option<InFlightRequest>,
    /// `early_request_filter`: the id returned to the client and sent upstream.
    pub(crate) request_id: String,
    /// `early_request_filter`: who is asking, and over what connection.
    pub(crate) client: Client,
    /// `early_request_filter`: the body length `Content-Length` announces (`None`: no body,
    /// or chunked).
    pub(crate) declared_length: Option<u64>,
    /// `early_request_filter`: the request's trace context (`tracing` configured); its spans
    /// are handed to the exporter by `logging`.
    pub(crate) trace: Option<crate::trace::RequestTrace>,
    /// `request_filter`: the matched route.
    pub(crate) route: Option<RouteId>,
    /// The response cache's view of the request (caching routes).
    pub(crate) cache: CacheState,
    /// `request_filter`: a CORS preflight answered by the gateway.
    pub(crate) preflight: bool,
    /// `request_filter`: Pingora's compression module is on for this response.
    pub(crate) compressing: bool,
    /// `request_filter`: the body is held until complete and checked against the route's
    /// schema (`request_body_filter` releases it once valid).
    pub(crate) validation: Option<super::validation::HeldBody>,
    /// `request_filter` (or `request_body_filter`, for a body held as it streams): the body a
    /// `transform.request` route sends upstream.
    pub(crate) sent_body: Option<super::body_transform::SentBody>,
    /// `request_filter` or `request_body_filter`: request inspection's verdict (inspecting
    /// routes), for the access log.
    pub(crate) waf: Option<crate::waf::Verdict>,
    /// From `proxy_upstream_filter` on: the service proxied to and the attempts at it.
    pub(crate) upstream: Upstream,
    /// `request_filter`: path and query to send upstream, when they differ from the client's.
    pub(crate) upstream_uri: Option<http::Uri>,
    /// `request_filter`: the verified caller (`None` = anonymous); read by `upstream_peer`
    /// (`claim:` hash keys) and `upstream_request_filter` (claim headers).
    pub(crate) identity: Option<Arc<Identity>>,
    /// `request_filter`: the rate-limit verdict; `response_filter` turns it into headers.
    pub(crate) rate_limit: Option<ratelimit::Decision>,
    /// Who the request counts as in the partner program (consumer, plan, tenant).
    pub(crate) member: Option<crate::partner::Member>,
    /// Any phase: a refusal decided by the gateway (not an upstream failure), answered by
    /// `fail_to_proxy`.
    pub(crate) refusal: Option<GatewayError>,
    /// The error code answered, for the access log.
    pub(crate) error_code: Option<&'static str>,
}

impl RequestState {
    /// What every answer to this request carries ([`Stamp`]).
    pub(crate) fn stamp(&self) -> Stamp<'_> {
        let rate_limit = self.rate_limit.as_ref().filter(|d| d.allowed).map(|d| RateLimitHeaders {
            limit: d.limit,
            remaining: d.remaining,
            reset: d.reset,
        });
        Stamp { request_id: &self.request_id, rate_limit, hsts: self.client.hsts.as_ref() }
    }
}

/// Who is asking: the connection's peer, the client behind `trusted_proxies`, and the TLS
/// session the request came over.
#[derive(Debug)]
pub(crate) struct Client {
    /// `early_request_filter`: the TCP peer.
    pub(crate) peer: IpAddr,
    /// `early_request_filter`: the client after `trusted_proxies` rules.
    pub(crate) ip: IpAddr,
    /// `early_request_filter`: `ip` as text (used in headers, logs and hashing).
    pub(crate) ip_text: String,
    /// `early_request_filter`: what the connection's TLS handshake recorded (`None`: plain).
    pub(crate) tls: Option<ConnInfo>,
    /// `early_request_filter`: `Strict-Transport-Security` for every answer (TLS listeners
    /// with `hsts`).
    pub(crate) hsts: Option<http::HeaderValue>,
}

/// What the response cache learns about a request, from `request_filter` to `logging`.
#[derive(Debug, Default)]
pub(crate) struct CacheState {
    /// `request_filter`: normalised path and query, the cache key's (caching routes only).
    pub(crate) path: Option<String>,
    /// `request_cache_filter`: the cache key, when computed ahead of `cache_key_callback`.
    pub(crate) key: Option<pingora::cache::CacheKey>,
    /// `request_cache_filter`: this request's fetch was handed to a background subrequest, and
    /// it waits on the lock for the entry ([`super::fill`]).
    pub(crate) handed_off: bool,
    /// `should_serve_stale`: the HTTP/2 request's version, lent out as HTTP/1.1 while Pingora
    /// copies the request into a background refresh; `response_filter` gives it back.
    pub(crate) lent_version: Option<http::Version>,
    /// `request_cache_filter`: this background subrequest fetches under a lock it holds for
    /// the requests waiting on it; `logging` releases it.
    pub(crate) background_fill: Option<crate::policy::cache::HeldLock>,
    /// `upstream_request_filter`: the request sent upstream carries credentials the cache key
    /// does not hold (a `Cookie`, or an `Authorization` that is not the keyed caller).
    pub(crate) unkeyed_credentials: bool,
    /// `proxy_upstream_filter`: the gateway fetched and answered this request itself (a
    /// `transform.response` route), in this cache phase; Pingora disables the cache of a
    /// request it did not proxy, so `logging` reads the phase from here.
    pub(crate) answered: Option<pingora::cache::CachePhase>,
}

impl CacheState {
    /// The phase the request's cache ended in (what `X-Cache` said).
    pub(crate) fn phase(&self, session: &pingora::proxy::Session) -> pingora::cache::CachePhase {
        self.answered.unwrap_or_else(|| session.cache.phase())
    }
}

/// The upstream side of a proxied request.
#[derive(Debug, Default)]
pub(crate) struct Upstream {
    /// `proxy_upstream_filter`: the service proxied to (a split route's choice).
    pub(crate) service: Option<ServiceId>,
    /// The attempts at it (backends, breaker ticket, outcomes): the attempt engine's record.
    pub(crate) attempts: Attempts,
    /// The peer of the next attempt, picked ahead (the first by `proxy_upstream_filter`, a
    /// status retry's by `upstream_response_filter`) and handed to `upstream_peer`.
    pub(crate) picked_peer: Option<Box<HttpPeer>>,
    /// `upstream_response_filter` turned a response into a retry: `error_while_proxy` keeps it
    /// retryable.
    pub(crate) retrying_status: bool,
    /// The current attempt's client span, sent upstream as the parent in `traceparent`
    /// (tracing on).
    pub(crate) span: Option<opentelemetry::trace::SpanId>,
    /// `upstream_response_filter`: time to the upstream's response headers.
    pub(crate) duration: Option<Duration>,
}

impl RequestCtx {
    /// A fresh context on `snapshot`; the clock starts now.
    pub(crate) fn new(snapshot: Arc<Snapshot>, drain_guard: InFlightRequest) -> Self {
        RequestCtx {
            snapshot,
            state: RequestState {
                started: Instant::now(),
                drain_guard: Some(drain_guard),
                request_id: String::new(),
                client: Client {
                    peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    ip_text: String::new(),
                    tls: None,
                    hsts: None,
                },
                cache: CacheState::default(),
                declared_length: None,
                trace: None,
                route: None,
                preflight: false,
                compressing: false,
                validation: None,
                sent_body: None,
                waf: None,
                upstream: Upstream::default(),
                upstream_uri: None,
                identity: None,
                rate_limit: None,
                member: None,
                refusal: None,
                error_code: None,
            },
        }
    }
}
