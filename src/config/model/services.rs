//! `services.<name>`: membership, balancing, health checks, transport, resilience; and the
//! traffic splits of `split` routes.

use super::{LoadedFile, ServiceId};
use http::HeaderName;
use std::net::SocketAddr;
use std::time::Duration;

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

impl Default for HealthCheckSettings {
    /// The documented defaults: a TCP connect every 5 s with a 1 s timeout, healthy after one
    /// success, unhealthy after two failures. `host` is the service's name once validated.
    fn default() -> Self {
        HealthCheckSettings {
            path: None,
            host: String::new(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy: 1,
            unhealthy: 2,
            transport: UpstreamTransport::default(),
        }
    }
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

/// Each key's documented default (docs/config.md `services`), written once: the validator reads
/// what a service leaves out from here. No name and no members: a config always names both.
impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            name: String::new(),
            targets: Vec::new(),
            discovery: None,
            dns: None,
            lb: LbAlgorithm::RoundRobin,
            health_check: None,
            transport: UpstreamTransport::default(),
            outlier_detection: None,
            circuit_breaker: None,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(30),
            write_timeout: None,
            idle_timeout: None,
            retries: 1,
            slow_start: None,
        }
    }
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

/// The documented defaults of `outlier_detection` (docs/config.md), written once.
impl Default for OutlierSettings {
    fn default() -> Self {
        OutlierSettings {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 10,
        }
    }
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

/// The documented defaults of `circuit_breaker` (docs/config.md), written once.
impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            max_in_flight: None,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(10),
            half_open_requests: 3,
        }
    }
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
    pub ca: Option<LoadedFile>,
    /// The gateway's own certificate for mutual TLS.
    pub client: Option<ClientCertFiles>,
}

/// The gateway's client certificate and key for an upstream, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCertFiles {
    /// Certificate chain (PEM).
    pub cert: LoadedFile,
    /// Private key (PEM).
    pub key: LoadedFile,
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
