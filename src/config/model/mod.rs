//! The validated configuration every other module reads: plain data. Built only by
//! `validate`; nothing downstream re-checks strings: addresses are `SocketAddr`, durations are
//! `Duration`, services are referred to by index, and a file the config names is held as the
//! bytes that were read ([`LoadedFile`]). Turning those bytes into working objects
//! (certificates, key tables, schemas) belongs to the modules that use them, where a snapshot
//! is built.

mod auth;
mod deps;
mod limits;
mod policy;
mod routes;
mod server;
mod services;

pub use auth::*;
pub use deps::*;
pub use limits::*;
pub use policy::*;
pub use routes::*;
pub use server::*;
pub use services::*;

use http::HeaderName;
use std::path::PathBuf;
use std::sync::Arc;

/// Index of a service in [`Config::services`].
pub type ServiceId = usize;
/// Index of a route in [`Config::routes`].
pub type RouteId = usize;
/// Index of a traffic split in [`Config::splits`].
pub type SplitId = usize;

/// Where a matched route's requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTarget {
    /// Proxied to a service's pool.
    Service(ServiceId),
    /// Proxied to one of several services by weight (`RouteSettings::split`).
    Split(SplitId),
    /// Answered by the gateway from several services' JSON (`Config::aggregates`).
    Aggregate(AggregateId),
    /// The reserved jobs path (`jobs.path`): answered by publishing to JetStream, never
    /// proxied. Added by validation after the file's routes, so it shares their matching,
    /// authentication, roles and rate limits.
    Jobs,
    /// `GET <jobs.path>/<job_id>`: a job's status, read from JetStream (the 202's `Location`).
    /// Added beside [`RouteTarget::Jobs`] on the same path for every method but POST, with its
    /// own label, no route-level roles (the submitter or `jobs.status_roles` may read) and
    /// `rate_limit.default`.
    JobStatus,
}

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Pingora process settings.
    pub server: ServerSettings,
    /// Public listeners (plain or TLS).
    pub listeners: Vec<Listener>,
    /// The admin listener (`/health`, `/ready`, `/metrics`), if configured.
    pub admin: Option<AdminSettings>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Request size and connection limits.
    pub limits: Limits,
    /// Whether one JSON access-log line is written per request.
    pub access_log: bool,
    /// JWT verification; `None` when no route needs it.
    pub auth: Option<JwtSettings>,
    /// API keys (`auth.api_keys`).
    pub api_keys: Option<ApiKeySettings>,
    /// Telegram Mini App initData (`auth.telegram`).
    pub telegram: Option<TelegramSettings>,
    /// Rate-limit store and default rule.
    pub rate_limit: RateLimitSettings,
    /// Consul connection, needed by services with `discovery.consul` and by registration.
    pub consul: Option<ConsulSettings>,
    /// How host names in `targets` and `dns_srv` are resolved.
    pub dns: DnsSettings,
    /// NATS connection, needed by jobs.
    pub nats: Option<NatsSettings>,
    /// The `/jobs/submit` short-circuit.
    pub jobs: Option<JobsSettings>,
    /// Upstream services, addressed by [`ServiceId`].
    pub services: Vec<ServiceSettings>,
    /// Routes in file order, addressed by [`RouteId`]; the jobs route, when jobs are on, last.
    pub routes: Vec<RouteSettings>,
    /// The response cache (used by routes with `cache`).
    pub cache: CacheSettings,
    /// Traffic splits of `split` routes, addressed by [`SplitId`].
    pub splits: Vec<TrafficSplit>,
    /// Parts of `aggregate` routes, addressed by [`AggregateId`].
    pub aggregates: Vec<AggregateSettings>,
    /// OpenTelemetry tracing (`tracing`); `None`: off, and client trace headers pass untouched.
    pub tracing: Option<TracingSettings>,
    /// Request inspection's settings (`waf:`), present only when a route inspects; the rules
    /// are compiled from them with the snapshot (`waf::RuleSet::build`).
    pub waf: Option<super::WafSettings>,
    /// `plans` (docs/plans.md): compiled into `quota::Plans` with the snapshot.
    pub plans: super::PlansSettings,
    /// `consumers`: where a consumer's plan and tenant come from.
    pub consumers: super::ConsumersSettings,
    /// `usage`: usage records (`None`: recorded only when there are plans, in the local store).
    pub usage: Option<super::UsageSettings>,
    /// Settings that parse but have no effect (e.g. `redis_url` with `store: local`): printed
    /// by `siger -t` and logged on load, never refused.
    pub warnings: Vec<super::ConfigError>,
    /// The config file itself, then every file it names (keys, certificates, credentials), each
    /// with the sha256 of the bytes that were read: what `watch_config` compares against.
    pub files: Vec<FileDigest>,
}

/// A file the configuration was read from, and the sha256 of its bytes as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// The file.
    pub path: PathBuf,
    /// sha256 of its contents.
    pub sha256: [u8; 32],
}

impl FileDigest {
    /// Whether any file's contents differ from the digest the configuration was read with (a
    /// missing file differs).
    pub fn any_changed(files: &[FileDigest]) -> bool {
        use sha2::Digest;
        files.iter().any(|f| {
            std::fs::read(&f.path).map_or(true, |bytes| <[u8; 32]>::from(sha2::Sha256::digest(&bytes)) != f.sha256)
        })
    }
}

/// A file the configuration names, as it was read while the configuration was checked: the
/// module that uses it builds its working object from these bytes (no file is read twice, and
/// what is served is what was checked), and reports problems under `key`.
#[derive(Clone, PartialEq, Eq)]
pub struct LoadedFile {
    /// Its key in the config, e.g. `listen[0].certs[1].cert`.
    pub key: String,
    /// The file, resolved against the config's directory.
    pub path: PathBuf,
    /// Its contents.
    pub bytes: Arc<[u8]>,
}

impl std::fmt::Debug for LoadedFile {
    // Key files are secrets: never their bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedFile").field("path", &self.path).field("bytes", &self.bytes.len()).finish()
    }
}

impl LoadedFile {
    /// The file as messages name it: `` `path` ``.
    pub fn shown(&self) -> String {
        format!("`{}`", self.path.display())
    }
}

impl Config {
    /// The service with this name.
    pub fn service_id(&self, name: &str) -> Option<ServiceId> {
        self.services.iter().position(|s| s.name == name)
    }

    /// The headers that carry a verified identity upstream (JWT and Telegram `forward`,
    /// `X-Consumer` with API keys): only the gateway sets them; client copies never pass.
    pub fn identity_headers(&self) -> Vec<HeaderName> {
        identity_headers(self.auth.as_ref(), self.telegram.as_ref(), self.api_keys.is_some())
    }
}

/// [`Config::identity_headers`] from its parts (validation has them before the `Config`).
pub(crate) fn identity_headers(
    jwt: Option<&JwtSettings>,
    telegram: Option<&TelegramSettings>,
    api_keys: bool,
) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = jwt.iter().flat_map(|a| a.forward.iter().map(|(_, h)| h.clone())).collect();
    names.extend(telegram.iter().flat_map(|t| t.forward.iter().map(|(_, h)| h.clone())));
    if api_keys {
        names.push(CONSUMER_HEADER);
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}
