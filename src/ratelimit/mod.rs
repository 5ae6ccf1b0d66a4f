//! Rate limiting (ARCHITECTURE.md §6 "Rate limits"): each route's limit (its own, else
//! `rate_limit.default`) counted per client key in a sliding window, locally or in Redis.
//! Buckets are namespaced by route and limit, so routes never share one. What a client key is:
//! `consumer` = the verified `sub` (else the client IP), `ip`, `route` (one bucket), or
//! `header:<Name>` (absent → the client IP, never "unlimited").

mod local;
mod redis;
mod window;

pub(crate) use local::{KeyBudget, LocalTable};
pub(crate) use redis::{integers, RedisStore, StoreError};
pub(crate) use window::Decision;

use crate::auth::Identity;
use crate::config::{Config, LimitKey, LimitRule, OnStoreError, RateLimitStore, RouteId, RouteSettings};
use crate::forwarding;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Result of a check.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The route has no limit.
    Unlimited,
    /// Counted; `allowed` says whether the request passes.
    Checked(Decision),
    /// The shared store failed; the policy says whether the request passes.
    StoreFailed {
        /// `on_store_error: allow`.
        allow: bool,
        /// What failed.
        error: StoreError,
    },
}

/// A route's effective limit and its bucket namespace.
#[derive(Debug, Clone)]
struct RouteLimit {
    rule: LimitRule,
    /// `<route label>[@host][ methods]:<requests>/<per ms>`: names this route's buckets, the
    /// same on every instance sharing Redis.
    namespace: String,
    /// The exact local counters of this limit (local store only).
    table: Option<Arc<LocalTable>>,
}

/// All limits of one config generation and their store.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    routes: Vec<Option<RouteLimit>>,
    /// Each plan's rate limit (counted per consumer), by plan id (docs/plans.md).
    plans: Vec<Option<RouteLimit>>,
    redis: Option<Arc<RedisStore>>,
    on_store_error: OnStoreError,
    budget: Arc<KeyBudget>,
}

/// What outlives a config generation: the local tables (a route whose limit did not change
/// keeps its counters across a reload) and the Redis store (its connections).
#[derive(Debug)]
pub(crate) struct LimitStores {
    budget: Arc<KeyBudget>,
    tables: Mutex<HashMap<String, Arc<LocalTable>>>,
    redis: Mutex<Option<Arc<RedisStore>>>,
}

impl Default for LimitStores {
    fn default() -> Self {
        LimitStores {
            budget: KeyBudget::new(DEFAULT_MAX_TRACKED_KEYS),
            tables: Mutex::new(HashMap::new()),
            redis: Mutex::new(None),
        }
    }
}

impl LimitStores {
    /// The limits of `config`, reusing the tables of unchanged limits and the Redis store when
    /// its settings are the same (its connections stay warm); otherwise `fresh`, the store the
    /// snapshot built for this config. Changes nothing yet (see [`LimitStores::commit`]).
    /// `plan_rules` are the rate limits of the configuration's plans, by plan id: each counts
    /// in a namespace of its own (`plan:<name>`), as routes' limits do.
    pub(crate) fn plan(
        &self,
        config: &Config,
        fresh: Option<&Arc<RedisStore>>,
        plan_rules: &[(&str, Option<&LimitRule>)],
    ) -> RateLimiter {
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let redis = match &config.rate_limit.store {
            RateLimitStore::Redis(settings) => {
                let current = self.redis.lock().unwrap_or_else(|p| p.into_inner());
                match current.as_ref() {
                    Some(store) if store.settings() == settings => Some(store.clone()),
                    _ => fresh.cloned(),
                }
            }
            RateLimitStore::Local => None,
        };
        let routes = config
            .routes
            .iter()
            .map(|r| {
                r.rate_limit.clone().or_else(|| config.rate_limit.default.clone()).map(|rule| {
                    let namespace = namespace(r, &rule);
                    let table = redis.is_none().then(|| {
                        tables
                            .get(&namespace)
                            .cloned()
                            .unwrap_or_else(|| Arc::new(LocalTable::new(rule.per, self.budget.clone())))
                    });
                    RouteLimit { namespace, table, rule }
                })
            })
            .collect();
        let plans = plan_rules
            .iter()
            .map(|(name, rule)| {
                rule.map(|rule| {
                    let namespace =
                        format!("plan:{}:{}/{}", serde_json::json!(name), rule.requests, rule.per.as_millis());
                    let table = redis.is_none().then(|| {
                        tables
                            .get(&namespace)
                            .cloned()
                            .unwrap_or_else(|| Arc::new(LocalTable::new(rule.per, self.budget.clone())))
                    });
                    RouteLimit { namespace, table, rule: rule.clone() }
                })
            })
            .collect();
        RateLimiter {
            routes,
            plans,
            redis,
            on_store_error: config.rate_limit.on_store_error,
            budget: self.budget.clone(),
        }
    }

    /// Forget stale keys in every table (every second, so tables no request touches give
    /// their share of the key budget back).
    pub(crate) fn sweep(&self) {
        let tables: Vec<Arc<LocalTable>> =
            self.tables.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for table in tables {
            table.sweep();
        }
    }

    /// Keep exactly the tables and store `limiter` uses (it is now in force).
    pub(crate) fn commit(&self, limiter: &RateLimiter, config: &Config) {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.clear();
        for limit in limiter.routes.iter().chain(&limiter.plans).flatten() {
            if let Some(table) = &limit.table {
                tables.insert(limit.namespace.clone(), table.clone());
            }
        }
        let mut redis = self.redis.lock().unwrap_or_else(|p| p.into_inner());
        *redis = match (&config.rate_limit.store, &limiter.redis) {
            (RateLimitStore::Redis(_), Some(store)) => Some(store.clone()),
            _ => None,
        };
    }
}

/// Client keys tracked exactly by all local tables together (≈ 48 B each): beyond it new keys
/// are counted approximately (see `local`).
pub(crate) const DEFAULT_MAX_TRACKED_KEYS: usize = 1_000_000;

/// The bucket namespace of a route's limit: routes sharing a path but not host, methods or
/// name never share buckets. The parts are JSON-encoded, so no name can be made to read as
/// another route's parts.
fn namespace(route: &RouteSettings, rule: &LimitRule) -> String {
    let methods: Option<Vec<&str>> = route.methods.as_ref().map(|ms| ms.iter().map(|m| m.as_str()).collect());
    let parts = serde_json::json!([route.name, route.path, route.host, methods]);
    format!("{parts}:{}/{}", rule.requests, rule.per.as_millis())
}

/// Longest client key kept verbatim in a Redis key; longer ones are hashed.
const MAX_PLAIN_KEY: usize = 96;

impl RateLimiter {
    /// Keys tracked exactly by the local tables, and checks that overflowed that budget.
    /// The Redis node checks go to (`None`: local limits, or not connected yet).
    pub(crate) fn redis_node(&self) -> Option<String> {
        self.redis.as_ref().and_then(|r| r.node())
    }

    pub(crate) fn local_usage(&self) -> (usize, u64) {
        (self.budget.used(), self.budget.overflowed.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The limit rule of a route, if any.
    pub(crate) fn rule(&self, route: RouteId) -> Option<&LimitRule> {
        self.routes.get(route).and_then(|r| r.as_ref()).map(|r| &r.rule)
    }

    /// The shared store checks go to (`rate_limit.store: redis`): quotas and usage use it too.
    pub(crate) fn redis_store(&self) -> Option<&Arc<RedisStore>> {
        self.redis.as_ref()
    }

    /// Count one request of `route` for the client `key` (see [`client_key`]).
    pub(crate) async fn check(&self, route: RouteId, key: &str) -> Outcome {
        self.check_limit(self.routes.get(route).and_then(|r| r.as_ref()), key).await
    }

    /// Count one request of a consumer (`key`, see [`client_key`] with `LimitKey::Consumer`)
    /// against its plan's rate limit.
    pub(crate) async fn check_plan(&self, plan: usize, key: &str) -> Outcome {
        self.check_limit(self.plans.get(plan).and_then(|r| r.as_ref()), key).await
    }

    async fn check_limit(&self, limit: Option<&RouteLimit>, key: &str) -> Outcome {
        let Some(limit) = limit else { return Outcome::Unlimited };
        let (requests, per) = (limit.rule.requests, limit.rule.per);
        match &self.redis {
            None => match &limit.table {
                Some(table) => Outcome::Checked(table.check(key, requests)),
                None => Outcome::Unlimited,
            },
            Some(store) => match store.check(&redis_key(&limit.namespace, key), requests, per).await {
                Ok(d) => Outcome::Checked(d),
                Err(e) => Outcome::StoreFailed { allow: self.on_store_error == OnStoreError::Allow, error: e },
            },
        }
    }
}

/// `siger:rl:{<route>:<limit>:<client>}`, the client part hashed when long. The braces are a
/// Redis Cluster hash tag: the whole key decides its slot, even when a route's name or path
/// has braces of its own (escaped, so they cannot end the tag early).
fn redis_key(namespace: &str, key: &str) -> String {
    let namespace = namespace.replace('%', "%25").replace('{', "%7B").replace('}', "%7D");
    if key.len() <= MAX_PLAIN_KEY && key.bytes().all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}') {
        format!("siger:rl:{{{namespace}:{key}}}")
    } else {
        let digest = Sha256::digest(key.as_bytes());
        format!("siger:rl:{{{namespace}:h:{}}}", hex::encode(&digest[..16]))
    }
}

/// The key an IP address counts under: the address (IPv4), or its /64 (IPv6).
fn ip_key(ip: IpAddr) -> String {
    match forwarding::client_block(ip) {
        IpAddr::V6(block) => format!("ip:{block}/{}", forwarding::IPV6_CLIENT_PREFIX),
        v4 => format!("ip:{v4}"),
    }
}

/// The client key a rule counts by. Kinds are prefixed so a `sub` can never collide with an
/// IP address or a header value. A key header sent on more than one line is refused: the
/// gateway and a backend could read different lines, and a fresh first line would start a
/// fresh bucket with every request.
pub(crate) fn client_key(
    key: &LimitKey,
    identity: Option<&Identity>,
    ip: IpAddr,
    headers: &HeaderMap,
) -> Result<String, crate::errors::GatewayError> {
    Ok(match key {
        LimitKey::Consumer => {
            identity.and_then(|i| i.sub.as_deref()).map_or_else(|| ip_key(ip), |s| format!("sub:{s}"))
        }
        LimitKey::Ip => ip_key(ip),
        LimitKey::Route => "route".to_string(),
        LimitKey::Header(name) => match crate::forwarding::single_line(headers, name)? {
            Some(v) if !v.as_bytes().trim_ascii().is_empty() => {
                format!("hdr:{}", String::from_utf8_lossy(v.as_bytes().trim_ascii()))
            }
            _ => ip_key(ip),
        },
    })
}

/// Sweeps the local limit tables every second.
pub(crate) struct LimitSweeper {
    stores: Arc<LimitStores>,
}

impl LimitSweeper {
    /// Sweep the tables of `stores`.
    pub(crate) fn new(stores: Arc<LimitStores>) -> Self {
        LimitSweeper { stores }
    }
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for LimitSweeper {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => self.stores.sweep(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    #[test]
    fn client_keys() {
        let ip: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        let mut headers = HeaderMap::new();
        let alice = Identity { sub: Some("alice".into()), ..Identity::default() };
        let key =
            |k: &LimitKey, id: Option<&Identity>, ip: IpAddr, h: &HeaderMap| client_key(k, id, ip, h).expect("key");
        assert_eq!(key(&LimitKey::Consumer, Some(&alice), ip, &headers), "sub:alice");
        assert_eq!(key(&LimitKey::Consumer, None, ip, &headers), "ip:10.0.0.1");
        assert_eq!(key(&LimitKey::Route, None, ip, &headers), "route");
        let name = HeaderName::from_static("x-api-key");
        assert_eq!(key(&LimitKey::Header(name.clone()), None, ip, &headers), "ip:10.0.0.1", "absent header");
        headers.insert(name.clone(), " ".parse().expect("value"));
        assert_eq!(key(&LimitKey::Header(name.clone()), None, ip, &headers), "ip:10.0.0.1", "blank header");
        headers.insert(name.clone(), "k1".parse().expect("value"));
        assert_eq!(key(&LimitKey::Header(name.clone()), None, ip, &headers), "hdr:k1");
        headers.append(name.clone(), "k2".parse().expect("value"));
        assert!(client_key(&LimitKey::Header(name), None, ip, &headers).is_err(), "two lines of a key header");
        // IPv6 clients share their /64.
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        assert_eq!(key(&LimitKey::Ip, None, a, &headers), "ip:2001:db8:1:2::/64");
        assert_eq!(key(&LimitKey::Ip, None, a, &headers), key(&LimitKey::Ip, None, b, &headers));
    }

    #[test]
    fn redis_keys_are_namespaced_and_bounded() {
        assert_eq!(redis_key("/api:20/10000", "sub:alice"), "siger:rl:{/api:20/10000:sub:alice}");
        assert_eq!(redis_key("[\"{x}\"]:1/1000", "ip:1.2.3.4"), "siger:rl:{[\"%7Bx%7D\"]:1/1000:ip:1.2.3.4}");
        assert!(redis_key("r", "hdr:{a}").contains(":h:"), "braces in a client key are hashed away");
        let long = redis_key("/api:20/10000", &"x".repeat(500));
        assert!(long.len() < 80 && long.contains(":h:"), "{long}");
        assert!(redis_key("r", "hdr:a b").contains(":h:"), "spaces are hashed away");
    }
}
