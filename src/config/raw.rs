//! Serde mirror of the config file (ARCHITECTURE.md §3). Nothing outside `config` uses these
//! types: `validate` turns them into the checked model. Every struct rejects unknown keys, so a
//! misspelt key is an error rather than a silently ignored setting.

use super::units::{ByteSize, ConfDuration};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub listen: Vec<RawListener>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub access_log: RawAccessLog,
    pub auth: Option<RawAuth>,
    pub rate_limit: Option<RawRateLimit>,
    pub consul: Option<RawConsul>,
    pub nats: Option<RawNats>,
    pub jobs: Option<RawJobs>,
    #[serde(default)]
    pub services: BTreeMap<String, RawService>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub threads: Option<usize>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub error_log: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub grace_period: Option<ConfDuration>,
    pub graceful_shutdown_timeout: Option<ConfDuration>,
    pub work_stealing: Option<bool>,
    pub upstream_keepalive_pool_size: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "an address string like \"0.0.0.0:8080\" or {addr, cert, key}")]
pub enum RawListener {
    Plain(String),
    Detailed(RawListenerDetail),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerDetail {
    pub addr: String,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body: Option<ByteSize>,
    pub max_header_bytes: Option<ByteSize>,
    pub idle_timeout: Option<ConfDuration>,
    pub keepalive_requests: Option<u32>,
    pub underscores_in_headers: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub jwt: RawJwt,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub algorithms: Vec<String>,
    pub secret: Option<String>,
    pub public_key_file: Option<String>,
    pub jwks_file: Option<String>,
    pub jwks_url: Option<String>,
    pub jwks_refresh: Option<ConfDuration>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Option<ConfDuration>,
    pub roles_claim: Option<String>,
    #[serde(default)]
    pub forward: BTreeMap<String, String>,
    pub cache_size: Option<usize>,
    pub max_token_bytes: Option<ByteSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub store: Option<String>,
    pub redis_url: Option<String>,
    pub redis_timeout: Option<ConfDuration>,
    pub on_store_error: Option<String>,
    pub default: Option<RawLimitRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimitRule {
    pub requests: u64,
    pub per: ConfDuration,
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsul {
    pub address: String,
    pub token: Option<String>,
    pub datacenter: Option<String>,
    pub wait: Option<ConfDuration>,
    pub state_dir: Option<String>,
    pub register: Option<RawConsulRegister>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsulRegister {
    pub name: String,
    pub address: String,
    pub port: u16,
    #[serde(default)]
    pub tags: Vec<String>,
    pub check: Option<RawConsulCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsulCheck {
    pub http: String,
    pub interval: Option<ConfDuration>,
    pub timeout: Option<ConfDuration>,
    pub deregister_after: Option<ConfDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNats {
    pub url: String,
    pub credentials_file: Option<String>,
    pub token: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Option<ConfDuration>,
    pub pending_buffer: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJobs {
    pub path: Option<String>,
    pub subject: String,
    pub stream: RawStream,
    #[serde(default)]
    pub roles: Vec<String>,
    pub max_body: Option<ByteSize>,
    pub ack_timeout: Option<ConfDuration>,
    pub body_timeout: Option<ConfDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    pub name: String,
    pub subjects: Vec<String>,
    pub create: Option<bool>,
    pub storage: Option<String>,
    pub replicas: Option<usize>,
    pub max_age: Option<ConfDuration>,
    pub duplicate_window: Option<ConfDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub targets: Option<Vec<RawTarget>>,
    pub discovery: Option<RawDiscovery>,
    pub lb: Option<String>,
    pub hash_key: Option<String>,
    pub health_check: Option<RawHealthCheck>,
    pub connect_timeout: Option<ConfDuration>,
    pub read_timeout: Option<ConfDuration>,
    pub write_timeout: Option<ConfDuration>,
    pub idle_timeout: Option<ConfDuration>,
    pub retries: Option<u32>,
    pub slow_start: Option<ConfDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a target \"host:port\" or {addr, weight}")]
pub enum RawTarget {
    Plain(String),
    Weighted(RawWeightedTarget),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedTarget {
    pub addr: String,
    pub weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub consul: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Option<String>,
    pub host: Option<String>,
    pub interval: Option<ConfDuration>,
    pub timeout: Option<ConfDuration>,
    pub healthy: Option<usize>,
    pub unhealthy: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    pub path: String,
    pub methods: Option<Vec<String>>,
    pub host: Option<String>,
    pub service: String,
    pub auth: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub strip_prefix: Option<bool>,
    pub rate_limit: Option<RawLimitRule>,
    pub max_body: Option<ByteSize>,
    pub timeout: Option<ConfDuration>,
    pub forward_authorization: Option<bool>,
}
