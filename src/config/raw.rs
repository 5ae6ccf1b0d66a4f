//! Serde mirror of the config file (ARCHITECTURE.md §3). Nothing outside `config` uses these
//! types: `validate` turns them into the checked model. Every struct rejects unknown keys, so a
//! misspelt key is an error rather than a silently ignored setting.

use super::units::{ByteSize, ConfDuration};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) server: RawServer,
    pub(crate) listen: Vec<RawListener>,
    pub(crate) admin: Option<RawAdmin>,
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<String>,
    #[serde(default)]
    pub(crate) limits: RawLimits,
    #[serde(default)]
    pub(crate) access_log: RawAccessLog,
    pub(crate) auth: Option<RawAuth>,
    pub(crate) rate_limit: Option<RawRateLimit>,
    pub(crate) consul: Option<RawConsul>,
    pub(crate) dns: Option<RawDns>,
    pub(crate) nats: Option<RawNats>,
    pub(crate) jobs: Option<RawJobs>,
    pub(crate) cache: Option<RawCache>,
    pub(crate) tracing: Option<RawTracing>,
    pub(crate) waf: Option<super::waf::RawWaf>,
    #[serde(default)]
    pub(crate) plans: super::plans::PlansSettings,
    pub(crate) consumers: Option<super::plans::ConsumersSettings>,
    pub(crate) usage: Option<super::plans::UsageSettings>,
    #[serde(default)]
    pub(crate) services: BTreeMap<String, RawService>,
    #[serde(default)]
    pub(crate) routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) threads: Option<usize>,
    pub(crate) pid_file: Option<String>,
    pub(crate) upgrade_sock: Option<String>,
    pub(crate) error_log: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) grace_period: Option<ConfDuration>,
    pub(crate) graceful_shutdown_timeout: Option<ConfDuration>,
    pub(crate) work_stealing: Option<bool>,
    pub(crate) upstream_keepalive_pool_size: Option<usize>,
    pub(crate) watch_config: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "an address string like \"0.0.0.0:8080\" or {addr, cert, key}")]
pub(crate) enum RawListener {
    Plain(String),
    Detailed(RawListenerDetail),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListenerDetail {
    pub(crate) addr: String,
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) certs: Option<Vec<RawCertPair>>,
    pub(crate) http2: Option<bool>,
    pub(crate) min_tls: Option<RawVersion>,
    pub(crate) client_ca: Option<String>,
    pub(crate) hsts: Option<RawHsts>,
    pub(crate) redirect_https: Option<u16>,
    pub(crate) h2c: Option<bool>,
    pub(crate) proxy_protocol: Option<bool>,
    pub(crate) proxy_protocol_from: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertPair {
    pub(crate) cert: String,
    pub(crate) key: String,
}

/// `"1.2"` or `1.2` (YAML reads an unquoted version as a number).
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a TLS version, \"1.2\" or \"1.3\"")]
pub(crate) enum RawVersion {
    Text(String),
    Number(f64),
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a max-age duration (e.g. 365d) or {max_age, include_subdomains, preload}")]
pub(crate) enum RawHsts {
    MaxAge(ConfDuration),
    Detailed(RawHstsDetail),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHstsDetail {
    pub(crate) max_age: ConfDuration,
    pub(crate) include_subdomains: Option<bool>,
    pub(crate) preload: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) listen: String,
    #[serde(default)]
    pub(crate) allowed_hosts: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) max_body: Option<ByteSize>,
    pub(crate) max_header_bytes: Option<ByteSize>,
    pub(crate) idle_timeout: Option<ConfDuration>,
    pub(crate) keepalive_requests: Option<u32>,
    pub(crate) underscores_in_headers: Option<bool>,
    pub(crate) read_buffer: Option<ByteSize>,
    pub(crate) max_connections: Option<u64>,
    pub(crate) max_connections_per_ip: Option<u64>,
    pub(crate) header_timeout: Option<ConfDuration>,
    pub(crate) body_timeout: Option<ConfDuration>,
    pub(crate) send_timeout: Option<ConfDuration>,
    pub(crate) h2_max_concurrent_streams: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccessLog {
    pub(crate) enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub(crate) jwt: Option<RawJwt>,
    pub(crate) api_keys: Option<RawApiKeys>,
    pub(crate) telegram: Option<RawTelegram>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiKeys {
    pub(crate) header: Option<String>,
    pub(crate) file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelegram {
    pub(crate) bot_token: Option<String>,
    pub(crate) bot_token_file: Option<String>,
    pub(crate) max_age: Option<ConfDuration>,
    #[serde(default)]
    pub(crate) roles: Vec<String>,
    #[serde(default)]
    pub(crate) forward: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwt {
    pub(crate) algorithms: Vec<String>,
    pub(crate) secret: Option<String>,
    pub(crate) secret_file: Option<String>,
    pub(crate) public_key_file: Option<String>,
    pub(crate) jwks_file: Option<String>,
    pub(crate) jwks_url: Option<String>,
    pub(crate) jwks_refresh: Option<ConfDuration>,
    pub(crate) issuer: Option<String>,
    pub(crate) audience: Option<String>,
    pub(crate) leeway: Option<ConfDuration>,
    pub(crate) roles_claim: Option<String>,
    #[serde(default)]
    pub(crate) forward: BTreeMap<String, String>,
    pub(crate) cache_size: Option<usize>,
    pub(crate) max_token_bytes: Option<ByteSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub(crate) store: Option<String>,
    pub(crate) redis_url: Option<String>,
    pub(crate) redis_timeout: Option<ConfDuration>,
    pub(crate) redis: Option<RawRedis>,
    pub(crate) on_store_error: Option<String>,
    pub(crate) default: Option<RawLimitRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    pub(crate) url: Option<String>,
    pub(crate) sentinels: Option<Vec<String>>,
    pub(crate) master_name: Option<String>,
    pub(crate) cluster_nodes: Option<Vec<String>>,
    pub(crate) password: Option<String>,
    pub(crate) tls: Option<bool>,
    pub(crate) ca_file: Option<String>,
    pub(crate) timeout: Option<ConfDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimitRule {
    pub(crate) requests: u64,
    pub(crate) per: ConfDuration,
    pub(crate) key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    #[serde(default)]
    pub(crate) servers: Vec<String>,
    pub(crate) timeout: Option<ConfDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsul {
    pub(crate) address: String,
    pub(crate) token: Option<String>,
    pub(crate) datacenter: Option<String>,
    pub(crate) wait: Option<ConfDuration>,
    pub(crate) state_dir: Option<String>,
    pub(crate) register: Option<RawConsulRegister>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsulRegister {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) port: u16,
    #[serde(default)]
    pub(crate) tags: Vec<String>,
    pub(crate) check: Option<RawConsulCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsulCheck {
    pub(crate) http: String,
    pub(crate) interval: Option<ConfDuration>,
    pub(crate) timeout: Option<ConfDuration>,
    pub(crate) deregister_after: Option<ConfDuration>,
}

/// One URL (comma-separated for several), or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawUrls {
    One(String),
    Many(Vec<String>),
}

impl RawUrls {
    /// Every URL, trimmed.
    pub(crate) fn list(&self) -> Vec<String> {
        match self {
            RawUrls::One(text) => text.split(',').map(|u| u.trim().to_string()).collect(),
            RawUrls::Many(list) => list.iter().map(|u| u.trim().to_string()).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNats {
    pub(crate) url: RawUrls,
    pub(crate) credentials_file: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) connect_timeout: Option<ConfDuration>,
    pub(crate) pending_buffer: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJobs {
    pub(crate) path: Option<String>,
    pub(crate) subject: String,
    pub(crate) stream: RawStream,
    #[serde(default)]
    pub(crate) roles: Vec<String>,
    pub(crate) max_body: Option<ByteSize>,
    pub(crate) ack_timeout: Option<ConfDuration>,
    pub(crate) body_timeout: Option<ConfDuration>,
    pub(crate) rate_limit: Option<RawLimitRule>,
    pub(crate) schema: Option<String>,
    #[serde(default)]
    pub(crate) status_roles: Vec<String>,
    pub(crate) consumer: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStream {
    pub(crate) name: String,
    pub(crate) subjects: Vec<String>,
    pub(crate) create: Option<bool>,
    pub(crate) storage: Option<String>,
    pub(crate) replicas: Option<usize>,
    pub(crate) max_age: Option<ConfDuration>,
    pub(crate) duplicate_window: Option<ConfDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) targets: Option<Vec<RawTarget>>,
    pub(crate) discovery: Option<RawDiscovery>,
    pub(crate) dns_srv: Option<String>,
    pub(crate) lb: Option<String>,
    pub(crate) hash_key: Option<String>,
    pub(crate) health_check: Option<RawHealthCheck>,
    pub(crate) connect_timeout: Option<ConfDuration>,
    pub(crate) read_timeout: Option<ConfDuration>,
    pub(crate) write_timeout: Option<ConfDuration>,
    pub(crate) idle_timeout: Option<ConfDuration>,
    pub(crate) retries: Option<u32>,
    pub(crate) slow_start: Option<ConfDuration>,
    pub(crate) tls: Option<RawUpstreamTls>,
    pub(crate) http2: Option<bool>,
    pub(crate) outlier_detection: Option<RawOutlier>,
    pub(crate) circuit_breaker: Option<RawBreaker>,
    pub(crate) retry_on: Option<Vec<RawRetryOn>>,
    pub(crate) retry_budget: Option<RawPercent>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutlier {
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) base_ejection: Option<ConfDuration>,
    pub(crate) max_ejection: Option<ConfDuration>,
    pub(crate) max_ejected_percent: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreaker {
    pub(crate) max_in_flight: Option<u32>,
    pub(crate) failure_rate: Option<RawPercent>,
    pub(crate) min_requests: Option<u32>,
    pub(crate) window: Option<ConfDuration>,
    pub(crate) open_for: Option<ConfDuration>,
    pub(crate) half_open_requests: Option<u32>,
}

/// `"20%"` (a bare number is refused by validation: 20 or 0.2?).
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a percentage such as \"20%\"")]
pub(crate) enum RawPercent {
    Text(String),
    Number(f64),
}

/// `connect`, `reset`, or a status code.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "`connect`, `reset` or a 5xx status code")]
pub(crate) enum RawRetryOn {
    Status(u16),
    Event(String),
}

/// `tls: true` (system CAs, the backend's IP as SNI) or the detailed form.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "`true` or {sni, ca, verify, accept_unverified, client_cert, client_key}")]
pub(crate) enum RawUpstreamTls {
    Enabled(bool),
    Detailed(RawUpstreamTlsDetail),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTlsDetail {
    pub(crate) sni: Option<String>,
    pub(crate) ca: Option<String>,
    pub(crate) verify: Option<bool>,
    pub(crate) accept_unverified: Option<bool>,
    pub(crate) client_cert: Option<String>,
    pub(crate) client_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a target \"host:port\" or {addr, weight}")]
pub(crate) enum RawTarget {
    Plain(String),
    Weighted(RawWeightedTarget),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWeightedTarget {
    pub(crate) addr: String,
    pub(crate) weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDiscovery {
    pub(crate) consul: String,
    #[serde(default)]
    pub(crate) tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    pub(crate) path: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) interval: Option<ConfDuration>,
    pub(crate) timeout: Option<ConfDuration>,
    pub(crate) healthy: Option<usize>,
    pub(crate) unhealthy: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSplit {
    pub(crate) service: String,
    pub(crate) weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub(crate) name: Option<String>,
    pub(crate) path: String,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) host: Option<String>,
    pub(crate) match_headers: Option<BTreeMap<String, String>>,
    pub(crate) service: Option<String>,
    pub(crate) split: Option<Vec<RawSplit>>,
    pub(crate) sticky: Option<String>,
    pub(crate) auth: Option<String>,
    #[serde(default)]
    pub(crate) roles: Vec<String>,
    pub(crate) strip_prefix: Option<bool>,
    pub(crate) rate_limit: Option<RawLimitRule>,
    pub(crate) max_body: Option<ByteSize>,
    pub(crate) timeout: Option<ConfDuration>,
    pub(crate) forward_authorization: Option<bool>,
    pub(crate) request_headers: Option<RawHeaderRules>,
    pub(crate) response_headers: Option<RawHeaderRules>,
    pub(crate) cors: Option<RawCors>,
    pub(crate) compress: Option<RawCompress>,
    pub(crate) cache: Option<RawRouteCache>,
    pub(crate) schemes: Option<Vec<String>>,
    pub(crate) validate: Option<RawValidate>,
    pub(crate) aggregate: Option<RawAggregate>,
    pub(crate) grpc_transcode: Option<super::grpc::RawGrpcTranscode>,
    pub(crate) grpc_web: Option<bool>,
    pub(crate) waf: Option<super::waf::WafMode>,
    pub(crate) waf_exclude: Option<Vec<u32>>,
    pub(crate) transform: Option<super::TransformSettings>,
    pub(crate) quota_cost: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawValidate {
    pub(crate) schema: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAggregate {
    pub(crate) timeout: Option<ConfDuration>,
    pub(crate) on_failure: Option<String>,
    pub(crate) parts: Vec<RawPart>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPart {
    pub(crate) key: String,
    pub(crate) service: String,
    pub(crate) path: String,
    pub(crate) transform: Option<super::PartTransformSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderRules {
    #[serde(default)]
    pub(crate) set: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) add: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCors {
    pub(crate) origins: Vec<String>,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) headers: Option<Vec<String>>,
    pub(crate) expose: Option<Vec<String>>,
    pub(crate) credentials: Option<bool>,
    pub(crate) max_age: Option<ConfDuration>,
}

/// `compress: true` or the detailed form.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "`true`, `false` or {algorithms, min_size, level}")]
pub(crate) enum RawCompress {
    Enabled(bool),
    Detailed(RawCompressDetail),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCompressDetail {
    pub(crate) algorithms: Option<Vec<String>>,
    pub(crate) min_size: Option<ByteSize>,
    pub(crate) level: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteCache {
    pub(crate) ttl: ConfDuration,
    pub(crate) stale_while_revalidate: Option<ConfDuration>,
    pub(crate) stale_if_error: Option<ConfDuration>,
    #[serde(default)]
    pub(crate) vary: Vec<String>,
    pub(crate) max_entry: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    pub(crate) max_memory: Option<ByteSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTracing {
    pub(crate) otlp_endpoint: String,
    pub(crate) service_name: Option<String>,
    pub(crate) sample_ratio: Option<f64>,
    pub(crate) queue_size: Option<usize>,
}
