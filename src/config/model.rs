//! The validated configuration every other module reads. Built only by `validate`; nothing
//! downstream re-checks strings: addresses are `SocketAddr`, durations are `Duration`, services
//! are referred to by index.

use http::{HeaderName, Method};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    pub telegram: Option<crate::auth::telegram::TelegramSettings>,
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
    /// are compiled from them by `crate::waf::compile` (`-t`, start, reload).
    pub waf: Option<super::WafSettings>,
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
    telegram: Option<&crate::auth::telegram::TelegramSettings>,
    api_keys: bool,
) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = jwt.iter().flat_map(|a| a.forward.iter().map(|(_, h)| h.clone())).collect();
    names.extend(telegram.iter().flat_map(|t| t.forward.iter().map(|(_, h)| h.clone())));
    if api_keys {
        names.push(crate::auth::api_keys::CONSUMER_HEADER);
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    names
}

/// Settings mapped onto Pingora's `ServerConf`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Written when daemonised (`-d`).
    pub pid_file: String,
    /// Unix socket used to hand listeners over during an upgrade (`-u`).
    pub upgrade_sock: String,
    /// stderr is redirected here when daemonised.
    pub error_log: Option<String>,
    /// Drop privileges to this user after daemonising.
    pub user: Option<String>,
    /// Drop privileges to this group after daemonising.
    pub group: Option<String>,
    /// Pingora's fixed wait after SIGTERM / upgrade before in-flight requests get their timeout.
    pub grace_period: Duration,
    /// How long in-flight requests may still run after the grace period.
    pub graceful_shutdown_timeout: Duration,
    /// Tokio work-stealing runtime (Pingora default) or one runtime per thread.
    pub work_stealing: bool,
    /// Idle upstream connections kept per worker thread.
    pub upstream_keepalive_pool_size: usize,
    /// Reload when the config file or a file it names changes (checked every 250 ms).
    pub watch_config: bool,
}

/// One public listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// The address exactly as written: Pingora matches inherited sockets by this string.
    pub addr: String,
    /// The parsed address.
    pub socket: SocketAddr,
    /// What the listener speaks.
    pub mode: ListenerMode,
    /// Connections open with a PROXY header naming the client (`crate::proxy_protocol`).
    pub proxy_protocol: bool,
    /// The only peers whose PROXY headers are read (`proxy_protocol_from`); empty: any peer.
    pub proxy_protocol_from: TrustedProxies,
}

/// What a listener speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum ListenerMode {
    /// Plain HTTP/1.1; with `h2c`, HTTP/2 with prior knowledge as well.
    Plain {
        /// Accept HTTP/2 without TLS (prior knowledge).
        h2c: bool,
    },
    /// TLS, with certificates chosen by SNI.
    Tls(TlsListener),
    /// Every request is answered with a 308 to the same URL on `https` at this port.
    RedirectHttps {
        /// The HTTPS port the redirects point at (443 is left out of the URL).
        port: u16,
    },
}

impl Listener {
    /// The TLS settings of a TLS listener.
    pub fn tls(&self) -> Option<&TlsListener> {
        match &self.mode {
            ListenerMode::Tls(t) => Some(t),
            _ => None,
        }
    }

    /// What only a new process can change: the address and protocol choices (the sockets and
    /// Pingora's TLS settings are fixed at start). Certificates, `min_tls`, `client_ca` and
    /// `hsts` apply on reload.
    pub fn fixed_shape(&self) -> (String, &'static str, bool, Option<u16>) {
        match &self.mode {
            ListenerMode::Plain { h2c } => (self.addr.clone(), "plain", *h2c, None),
            ListenerMode::Tls(t) => (self.addr.clone(), "tls", t.http2, None),
            ListenerMode::RedirectHttps { port } => (self.addr.clone(), "redirect", false, Some(*port)),
        }
    }
}

/// A TLS listener's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsListener {
    /// Certificates with their keys; the first is served when no other matches the SNI.
    pub certs: Vec<CertFiles>,
    /// Offer HTTP/2 through ALPN (`h2`, then `http/1.1`).
    pub http2: bool,
    /// Lowest TLS version accepted.
    pub min_tls: crate::tls::MinTls,
    /// Require client certificates issued by these CAs (mTLS).
    pub client_ca: Option<CaFile>,
    /// The `Strict-Transport-Security` value sent on this listener's responses.
    pub hsts: Option<http::HeaderValue>,
}

/// A certificate chain file and its key file, loaded and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CertFiles {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// What they hold.
    pub loaded: crate::tls::ServingCert,
}

/// A PEM bundle of CA certificates, loaded and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CaFile {
    /// The file.
    pub path: PathBuf,
    /// Its certificates.
    pub bundle: crate::tls::CaBundle,
}

/// How the gateway connects to a service's backends.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpstreamTransport {
    /// TLS to the backends (`None`: plain TCP).
    pub tls: Option<std::sync::Arc<UpstreamTls>>,
    /// HTTP/2 to the backends: ALPN `h2` over TLS, prior knowledge (h2c) without.
    pub http2: bool,
}

/// TLS to a service's backends.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// The name sent as SNI and checked against the certificate; `None` uses the backend's
    /// IP address (checked against the certificate's IP SANs).
    pub sni: Option<String>,
    /// Verify the backend's certificate (only off with `accept_unverified: true`).
    pub verify: bool,
    /// Trust these CAs instead of the system's.
    pub ca: Option<CaFile>,
    /// The gateway's own certificate for mutual TLS.
    pub client: Option<ClientCertFiles>,
    /// Keeps pooled connections of different TLS settings apart (Pingora's reuse hash does not
    /// include the CA).
    pub group_key: u64,
}

/// The gateway's client certificate and key for an upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCertFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// What they hold.
    pub identity: crate::tls::ClientIdentity,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// Address as written (kept verbatim for socket hand-over).
    pub listen: String,
    /// The parsed address.
    pub socket: SocketAddr,
    /// Host names (lower-case, no trailing dot; `*.example.com` for any name under it) admin
    /// requests may carry in `Host` besides IP literals and `localhost` names.
    pub allowed_hosts: Vec<String>,
}

/// CIDRs of proxies in front of us whose `X-Forwarded-For` we believe.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = canonical_ip(*ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) compare as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Request size and connection limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Default request body limit in bytes (413 beyond).
    pub max_body: u64,
    /// Request header limit in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Idle keep-alive downstream connections are closed after this.
    pub idle_timeout: Duration,
    /// Requests served on one downstream connection before it is closed; `None` = unlimited.
    pub keepalive_requests: Option<u32>,
    /// Pass request headers whose names contain `_` upstream (default false: they are dropped,
    /// as nginx does, because CGI-style servers read `X_User_Id` as `X-User-Id`). Underscore
    /// spellings of headers the gateway sets are dropped either way.
    pub underscores_in_headers: bool,
    /// Read buffer of each client connection, in bytes: what an idle keep-alive connection
    /// holds (Pingora's default is 64 KiB); larger reads bypass it.
    pub read_buffer: usize,
    /// Client connections the process holds at once; at the bound the oldest idle keep-alive
    /// connections are closed for new ones, and without idle ones new connections are closed.
    pub max_connections: usize,
    /// Client connections per client IP (`None`: unbounded). Connections from trusted proxies
    /// carry many clients and are not bounded per IP.
    pub max_connections_per_ip: Option<usize>,
    /// The whole request head must arrive within this from its first byte (408 JSON, close).
    pub header_timeout: Duration,
    /// The whole request body must arrive within this from the end of its head (408 JSON
    /// where nothing was answered yet, else close).
    pub body_timeout: Duration,
    /// A write of an answer that makes no progress for this long closes the client's
    /// connection (and the backend connection under it); an HTTP/2 stream that cannot send
    /// for this long (its flow-control window stays shut) is reset.
    pub send_timeout: Duration,
    /// Concurrent streams an HTTP/2 client may open on one connection.
    pub h2_max_concurrent_streams: u32,
}

/// JWT algorithms a deployment may pin.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    /// Parse the JOSE name (`HS256`, `EdDSA`, …).
    pub fn parse(name: &str) -> Option<Self> {
        use JwtAlgorithm::*;
        Some(match name {
            "HS256" => HS256,
            "HS384" => HS384,
            "HS512" => HS512,
            "RS256" => RS256,
            "RS384" => RS384,
            "RS512" => RS512,
            "PS256" => PS256,
            "PS384" => PS384,
            "PS512" => PS512,
            "ES256" => ES256,
            "ES384" => ES384,
            "EdDSA" => EdDSA,
            _ => return None,
        })
    }

    /// The same algorithm as jsonwebtoken names it.
    pub fn jose(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm;
        match self {
            Self::HS256 => Algorithm::HS256,
            Self::HS384 => Algorithm::HS384,
            Self::HS512 => Algorithm::HS512,
            Self::RS256 => Algorithm::RS256,
            Self::RS384 => Algorithm::RS384,
            Self::RS512 => Algorithm::RS512,
            Self::PS256 => Algorithm::PS256,
            Self::PS384 => Algorithm::PS384,
            Self::PS512 => Algorithm::PS512,
            Self::ES256 => Algorithm::ES256,
            Self::ES384 => Algorithm::ES384,
            Self::EdDSA => Algorithm::EdDSA,
        }
    }

    /// HMAC algorithms use the shared secret; the others a public key.
    pub fn is_hmac(self) -> bool {
        matches!(self, JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512)
    }
}

/// JWT verification settings.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSettings {
    /// Allowed algorithms; anything else, `none` included, is rejected.
    pub algorithms: Vec<JwtAlgorithm>,
    /// HMAC secret.
    pub secret: Option<String>,
    /// PEM public key for asymmetric algorithms.
    pub public_key_file: Option<PathBuf>,
    /// Local JWKS file (re-read every `jwks_refresh`).
    pub jwks_file: Option<PathBuf>,
    /// Remote JWKS URL.
    pub jwks_url: Option<String>,
    /// How often JWKS sources are refreshed.
    pub jwks_refresh: Duration,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Dotted path of the roles claim.
    pub roles_claim: String,
    /// Claim → upstream header; client-sent copies are always removed.
    pub forward: Vec<(String, HeaderName)>,
    /// Entries in the validation cache.
    pub cache_size: usize,
    /// Longest accepted token.
    pub max_token_bytes: usize,
}

/// Where rate-limit counters live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitStore {
    /// In-process estimators (per instance).
    Local,
    /// Shared through Redis.
    Redis(RedisSettings),
}

/// How to reach the shared Redis (`rate_limit.redis`, or the older `redis_url`).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// One server, a Sentinel-watched master, or a cluster.
    pub topology: RedisTopology,
    /// `AUTH` password for the data nodes (not the sentinels); a URL's own password wins.
    pub password: Option<String>,
    /// TLS to every node (`rediss://` URLs say so themselves).
    pub tls: bool,
    /// PEM certificates the data nodes' certificates must chain to (`ca_file`); `None`: the
    /// system's roots.
    pub ca: Option<Vec<u8>>,
    /// Per-check timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("topology", &self.topology)
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The Redis deployment the limits are shared through.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server.
    Single {
        /// `redis://` or `rediss://` URL.
        url: String,
    },
    /// The master the sentinels name, followed through failovers.
    Sentinel {
        /// Sentinels as (host, port).
        sentinels: Vec<(String, u16)>,
        /// The master's name in the sentinels' configuration.
        master_name: String,
    },
    /// A Redis Cluster.
    Cluster {
        /// Seed nodes as (host, port).
        nodes: Vec<(String, u16)>,
    },
}

impl std::fmt::Debug for RedisTopology {
    // A URL may carry a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTopology::Single { .. } => f.write_str("Single"),
            RedisTopology::Sentinel { sentinels, master_name } => {
                f.debug_struct("Sentinel").field("sentinels", sentinels).field("master_name", master_name).finish()
            }
            RedisTopology::Cluster { nodes } => f.debug_struct("Cluster").field("nodes", nodes).finish(),
        }
    }
}

/// What to do when the shared store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Let the request through (logged and counted).
    Allow,
    /// Answer 503.
    Deny,
}

/// Rate-limit settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSettings {
    /// Counter store.
    pub store: RateLimitStore,
    /// Policy when the store fails.
    pub on_store_error: OnStoreError,
    /// Rule for routes without their own.
    pub default: Option<LimitRule>,
}

/// `requests` per `per`, counted by `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRule {
    /// Allowed requests per window.
    pub requests: u64,
    /// Window length.
    pub per: Duration,
    /// What identifies a client.
    pub key: LimitKey,
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// JWT `sub` when authenticated, else the client IP.
    Consumer,
    /// The client IP.
    Ip,
    /// One bucket for the whole route.
    Route,
    /// A request header; absent → the client IP.
    Header(HeaderName),
}

/// Consul connection and registration.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsulSettings {
    /// Base URL, e.g. `http://127.0.0.1:8500`, without trailing slash.
    pub address: String,
    /// `X-Consul-Token`.
    pub token: Option<String>,
    /// `dc` query parameter.
    pub datacenter: Option<String>,
    /// Blocking-query wait.
    pub wait: Duration,
    /// Directory for last-known-good instance files.
    pub state_dir: Option<PathBuf>,
    /// Self-registration of this gateway.
    pub register: Option<ConsulRegistration>,
}

/// How this instance registers itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsulRegistration {
    /// Service name.
    pub name: String,
    /// Advertised address.
    pub address: String,
    /// Advertised port.
    pub port: u16,
    /// Service tags.
    pub tags: Vec<String>,
    /// HTTP check URL (normally the admin `/health`).
    pub check_http: Option<String>,
    /// Check interval.
    pub check_interval: Duration,
    /// Check timeout.
    pub check_timeout: Duration,
    /// `DeregisterCriticalServiceAfter`.
    pub deregister_after: Duration,
}

impl ConsulRegistration {
    /// `<name>-<address>-<port>` (ARCHITECTURE.md §6).
    pub fn service_id(&self) -> String {
        format!("{}-{}-{}", self.name, self.address, self.port)
    }
}

/// NATS connection.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsSettings {
    /// Server URL(s), comma separated.
    pub url: String,
    /// `.creds` file.
    pub credentials_file: Option<PathBuf>,
    /// Token auth.
    pub token: Option<String>,
    /// User/password auth.
    pub user_password: Option<(String, String)>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Messages buffered while disconnected.
    pub pending_buffer: usize,
}

/// JetStream storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStorage {
    /// Durable on disk.
    File,
    /// In memory.
    Memory,
}

/// The jobs stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    /// Stream name.
    pub name: String,
    /// Subjects the stream captures.
    pub subjects: Vec<String>,
    /// Create or verify the stream at start-up.
    pub create: bool,
    /// Storage.
    pub storage: StreamStorage,
    /// Replicas.
    pub replicas: usize,
    /// Message max age.
    pub max_age: Duration,
    /// De-duplication window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
}

/// The `/jobs/submit` short-circuit.
#[derive(Debug, Clone, PartialEq)]
pub struct JobsSettings {
    /// Reserved path.
    pub path: String,
    /// Subject jobs are published to.
    pub subject: String,
    /// Stream settings.
    pub stream: StreamSettings,
    /// Roles allowed to submit (any of); empty = any authenticated user.
    pub roles: Vec<String>,
    /// Body limit.
    pub max_body: u64,
    /// Longest wait for the JetStream ack.
    pub ack_timeout: Duration,
    /// Longest time to receive the whole request body (408 beyond).
    pub body_timeout: Duration,
    /// Limit on submissions (else `rate_limit.default`).
    pub rate_limit: Option<LimitRule>,
    /// JSON Schema every job payload must match.
    pub schema: Option<crate::policy::schema::BodySchema>,
    /// Roles that may read any job's status (besides the identity that submitted it).
    pub status_roles: Vec<String>,
    /// The scheduler's durable consumer on the stream: job status says `delivered` and
    /// `acknowledged` from its progress.
    pub consumer: Option<String>,
}

/// Load-balancing algorithm of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbAlgorithm {
    /// Weighted round robin (Pingora).
    RoundRobin,
    /// Weighted random (Pingora).
    Random,
    /// Fewest in-flight requests relative to weight (ours: power of two choices).
    LeastConn,
    /// Ketama consistent hashing (Pingora) on a request key.
    ConsistentHash(HashKey),
}

/// What `consistent_hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A verified JWT claim; anonymous requests fall back to the client IP.
    Claim(String),
    /// A client-sent header.
    Header(HeaderName),
    /// The client IP.
    Ip,
    /// The normalised path.
    Path,
}

/// Active health checking of a service's backends.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckSettings {
    /// HTTP GET of this path (200 = healthy), or a TCP connect when `None`.
    pub path: Option<String>,
    /// Host header of HTTP checks.
    pub host: String,
    /// Time between checks.
    pub interval: Duration,
    /// Connect + response timeout of one check.
    pub timeout: Duration,
    /// Consecutive successes to become healthy.
    pub healthy: usize,
    /// Consecutive failures to become unhealthy.
    pub unhealthy: usize,
    /// The service's transport: checks connect as requests do (TLS included).
    pub transport: UpstreamTransport,
}

/// A static backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Address.
    pub addr: SocketAddr,
    /// Relative weight (≥ 1).
    pub weight: u32,
}

/// Consul-backed membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulDiscovery {
    /// Consul service name.
    pub service: String,
    /// Required tags.
    pub tags: Vec<String>,
}

/// Membership resolved through DNS: host names in `targets` (A and AAAA) or `dns_srv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsDiscovery {
    /// IP literals listed beside the names: members whatever DNS says.
    pub fixed: Vec<Target>,
    /// Host names of `targets`, each with its port and weight.
    pub names: Vec<DnsName>,
    /// `dns_srv`: targets, ports and weights from SRV records.
    pub srv: Option<String>,
}

/// A host name of `targets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsName {
    /// The name as configured (resolved for A and AAAA).
    pub host: String,
    /// Port of every address it resolves to.
    pub port: u16,
    /// Weight of every address it resolves to.
    pub weight: u32,
}

/// The resolver DNS-backed services use (`dns`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSettings {
    /// Name servers asked instead of the system's (`/etc/resolv.conf`); empty: the system's.
    pub servers: Vec<SocketAddr>,
    /// How long one look-up may take before it counts as failed.
    pub timeout: Duration,
}

/// Where a dynamic service's members come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberSource {
    /// `discovery.consul`.
    Consul(ConsulDiscovery),
    /// Host names in `targets`, or `dns_srv`.
    Dns(DnsDiscovery),
}

/// One upstream service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSettings {
    /// Name used by routes.
    pub name: String,
    /// Static backends (empty with discovery).
    pub targets: Vec<Target>,
    /// Consul discovery.
    pub discovery: Option<ConsulDiscovery>,
    /// DNS-resolved membership (host names in `targets`, or `dns_srv`); `targets` then holds
    /// nothing.
    pub dns: Option<DnsDiscovery>,
    /// Balancing.
    pub lb: LbAlgorithm,
    /// Active health checks.
    pub health_check: Option<HealthCheckSettings>,
    /// TLS and HTTP/2 to the backends.
    pub transport: UpstreamTransport,
    /// Passive outlier detection (off when `None`).
    pub outlier_detection: Option<OutlierSettings>,
    /// The circuit breaker (off when `None`).
    pub circuit_breaker: Option<BreakerSettings>,
    /// What is retried on another backend, and the budget for it.
    pub retry: RetryPolicy,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for one upstream read.
    pub read_timeout: Duration,
    /// Longest wait for one upstream write. `None` (the default) relies on `read_timeout`:
    /// the response is read while the request body is written, so a stalled upload still ends
    /// when the upstream stays silent for `read_timeout`; it saves a timer per write.
    pub write_timeout: Option<Duration>,
    /// Idle pooled upstream connections are closed after this; `None` keeps them until the
    /// backend closes them or the pool (`server.upstream_keepalive_pool_size`) evicts them,
    /// which saves a timer per request.
    pub idle_timeout: Option<Duration>,
    /// Connect failures retried on another backend.
    pub retries: u32,
    /// Weight ramp for new backends.
    pub slow_start: Option<Duration>,
}

impl ServiceSettings {
    /// Where the members come from when they can change while running (`None`: static
    /// `targets` of IP addresses).
    pub fn member_source(&self) -> Option<MemberSource> {
        match (&self.discovery, &self.dns) {
            (Some(consul), _) => Some(MemberSource::Consul(consul.clone())),
            (None, Some(dns)) => Some(MemberSource::Dns(dns.clone())),
            (None, None) => None,
        }
    }
}

/// Passive outlier detection of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierSettings {
    /// Failed attempts in a row that eject a backend.
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th lasts n times as long.
    pub base_ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
    /// At most this share of the pool is ejected at once (one ejection is always allowed).
    pub max_ejected_percent: u8,
}

/// The circuit breaker of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// Concurrent requests beyond this are refused at once.
    pub max_in_flight: Option<u32>,
    /// Share of failed requests in `window` that opens the circuit (0–1).
    pub failure_rate: f64,
    /// Requests in `window` before the rate is judged.
    pub min_requests: u32,
    /// The sliding window.
    pub window: Duration,
    /// How long the circuit stays open.
    pub open_for: Duration,
    /// Requests let through half-open; all must succeed to close.
    pub half_open_requests: u32,
}

/// What a service retries on another backend.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Connect failures (nothing reached the backend: any method).
    pub connect: bool,
    /// Connections reset or closed before a response (idempotent methods only).
    pub reset: bool,
    /// Upstream statuses retried (idempotent methods only, before anything went downstream).
    pub statuses: Vec<u16>,
    /// Retries may add at most this share of requests, in thousandths (plus 3 per second).
    pub budget_milli: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { connect: true, reset: false, statuses: Vec::new(), budget_milli: None }
    }
}

/// A route's traffic split over services.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficSplit {
    /// Services with their weights (each ≥ 1).
    pub services: Vec<(ServiceId, u32)>,
    /// What keeps a client on one service; `None` picks at random per request.
    pub sticky: Option<StickyKey>,
}

/// The request property a split hashes to pick a service.
#[derive(Debug, Clone, PartialEq)]
pub enum StickyKey {
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// A verified JWT claim.
    Claim(String),
}

/// Authentication requirement of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid token is required.
    Required,
    /// Anonymous allowed; a present token must be valid.
    Optional,
    /// No authentication.
    Public,
}

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
    pub request_headers: crate::policy::headers::HeaderRules,
    /// Rules for the response sent to the client (proxied, cached or the gateway's own).
    pub response_headers: crate::policy::headers::HeaderRules,
    /// CORS.
    pub cors: Option<crate::policy::cors::CorsSettings>,
    /// Response compression.
    pub compress: Option<crate::policy::compress::CompressSettings>,
    /// Response caching.
    pub cache: Option<RouteCache>,
    /// Credentials accepted (`jwt` unless configured).
    pub schemes: Vec<crate::auth::Scheme>,
    /// JSON Schema the request body must match.
    pub validate: Option<crate::policy::schema::BodySchema>,
    /// REST/JSON ↔ gRPC transcoding (docs/grpc.md): the loaded descriptors and rules.
    pub grpc_transcode: Option<crate::grpc::Transcoder>,
    /// gRPC-Web requests are translated to gRPC.
    pub grpc_web: bool,
    /// Request inspection (`waf`, `waf_exclude`; docs/waf.md).
    pub waf: super::RouteWaf,
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
    pub path: crate::policy::headers::Template,
}

/// What a failed part does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Answer 200 with the part `null` and `Siger-Completed: false`.
    Partial,
    /// Answer 502/504.
    Fail,
}

/// `auth.api_keys`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeySettings {
    /// The request header carrying the key.
    pub header: HeaderName,
    /// The keys file.
    pub file: PathBuf,
    /// Its keys.
    pub table: Arc<crate::auth::api_keys::ApiKeyTable>,
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

/// `tracing`: W3C trace context and spans exported over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// Where spans are POSTed (OTLP/HTTP protobuf), e.g. `http://127.0.0.1:4318/v1/traces`.
    pub otlp_endpoint: String,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Share of new traces recorded (0–1); requests with a caller's `traceparent` follow its flag.
    pub sample_ratio: f64,
    /// Most spans waiting for export; beyond it spans are dropped and counted.
    pub queue_size: usize,
}
