//! `rate_limit`: the counter store (local or Redis) and the `{requests, per, key}` rules.

use super::LoadedFile;
use http::HeaderName;
use std::time::Duration;

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
    /// PEM certificates the data nodes' certificates must chain to (`ca_file`), as read; `None`:
    /// the system's roots.
    pub ca: Option<LoadedFile>,
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
