//! `routes[]`: matching, target, access and per-route policy; aggregation parts; the cache.

use super::{
    AuthMode, CompressSettings, CorsSettings, HeaderRules, LimitRule, LoadedFile, RouteTarget, Scheme, ServiceId,
    Template,
};
use http::{HeaderName, Method};
use std::time::Duration;

/// One route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSettings {
    /// Optional name.
    pub name: Option<String>,
    /// Metrics/log label: the name, else the path.
    pub label: String,
    /// Normalised prefix (no trailing slash except `/`).
    pub path: String,
    /// Allowed methods; `None` = any.
    pub methods: Option<Vec<Method>>,
    /// Lower-case host without port; `None` = any.
    pub host: Option<String>,
    /// Request headers that must have exactly these values (names lower-case).
    pub match_headers: Vec<(HeaderName, http::HeaderValue)>,
    /// Where matched requests go.
    pub target: RouteTarget,
    /// Authentication.
    pub auth: AuthMode,
    /// Roles, any of which grants access.
    pub roles: Vec<String>,
    /// Remove the prefix before proxying.
    pub strip_prefix: bool,
    /// Route rate limit (else the default).
    pub rate_limit: Option<LimitRule>,
    /// Body limit in bytes.
    pub max_body: u64,
    /// Longest wait for the upstream response headers.
    pub timeout: Option<Duration>,
    /// Send the client's `Authorization` header upstream.
    pub forward_authorization: bool,
    /// Rules for the request sent upstream.
    pub request_headers: HeaderRules,
    /// Rules for the response sent to the client (proxied, cached or the gateway's own).
    pub response_headers: HeaderRules,
    /// CORS.
    pub cors: Option<CorsSettings>,
    /// Response compression.
    pub compress: Option<CompressSettings>,
    /// Response caching.
    pub cache: Option<RouteCache>,
    /// Credentials accepted (`jwt` unless configured).
    pub schemes: Vec<Scheme>,
    /// JSON Schema the request body must match, as read (`policy::schema` compiles it).
    pub validate: Option<LoadedFile>,
    /// REST/JSON ↔ gRPC transcoding (docs/grpc.md): settings and descriptors as read
    /// (`grpc::Transcoder` is built from them with the snapshot).
    pub grpc_transcode: Option<super::super::GrpcTranscode>,
    /// gRPC-Web requests are translated to gRPC.
    pub grpc_web: bool,
    /// Request inspection (`waf`, `waf_exclude`; docs/waf.md).
    pub waf: super::super::RouteWaf,
    /// Body transformation (docs/transform.md), as written (`transform::Transform` is
    /// compiled from it with the snapshot).
    pub transform: Option<super::super::TransformSettings>,
    /// `quota_cost`: how many units of a plan's quota one request counts as (docs/plans.md).
    pub quota_cost: u64,
}

/// Each key's documented default (docs/config.md `routes`), written once: a route to the first
/// service, `auth: required` with `schemes: [jwt]`, `Authorization` forwarded, the default
/// `limits.max_body`. No path: a config always names one.
impl Default for RouteSettings {
    fn default() -> Self {
        RouteSettings {
            name: None,
            label: String::new(),
            path: String::new(),
            methods: None,
            host: None,
            match_headers: Vec::new(),
            target: RouteTarget::Service(0),
            auth: AuthMode::Required,
            roles: Vec::new(),
            strip_prefix: false,
            rate_limit: None,
            max_body: super::Limits::default().max_body,
            timeout: None,
            forward_authorization: true,
            request_headers: HeaderRules::default(),
            response_headers: HeaderRules::default(),
            cors: None,
            compress: None,
            cache: None,
            schemes: vec![Scheme::Jwt],
            validate: None,
            grpc_transcode: None,
            grpc_web: false,
            waf: Default::default(),
            transform: None,
            quota_cost: 1,
        }
    }
}

/// Index of an aggregation in [`Config::aggregates`].
pub type AggregateId = usize;

/// An aggregation route's parts.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateSettings {
    /// Bound on the whole (every part in parallel).
    pub timeout: Duration,
    /// What a failed part does to the answer.
    pub on_failure: OnFailure,
    /// The parts, in answer order.
    pub parts: Vec<AggregatePart>,
}

/// One part of an aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregatePart {
    /// Its key in the merged object.
    pub key: String,
    /// The service asked.
    pub service: ServiceId,
    /// Path and query, with the §7.4 template variables (values percent-encoded).
    pub path: Template,
    /// `allow`/`deny`, `rename`, `unwrap` on the part's answer (docs/transform.md), as written.
    pub transform: Option<super::super::PartTransformSettings>,
}

/// What a failed part does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Answer 200 with the part `null` and `Siger-Completed: false`.
    Partial,
    /// Answer 502/504.
    Fail,
}

/// A route's response cache.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteCache {
    /// Freshness when the response does not say (`max-age`, `s-maxage`, `Expires` win).
    pub ttl: Duration,
    /// A stale entry is served while one request revalidates it, for this long after expiry.
    pub stale_while_revalidate: Duration,
    /// A stale entry is served when the upstream fails, for this long after expiry.
    pub stale_if_error: Duration,
    /// Request headers whose values select different entries (lower-case).
    pub vary: Vec<HeaderName>,
    /// Larger responses are not stored.
    pub max_entry: u64,
}

/// The process's cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// Memory all cached responses may take.
    pub max_memory: u64,
}
