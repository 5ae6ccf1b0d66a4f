//! `rate_limit` and the `{requests, per, key}` rules of routes.

use super::*;

pub(super) fn check_rule(path: &str, raw: &RawLimitRule, p: &mut Problems) -> Option<LimitRule> {
    if raw.requests == 0 {
        p.add(format!("{path}.requests"), "must be at least 1 (remove the limit to disable it)");
    }
    if raw.per.0 < Duration::from_secs(1) {
        p.add(format!("{path}.per"), "must be at least 1s");
    }
    let key = match raw.key.as_deref().unwrap_or("consumer") {
        "consumer" => LimitKey::Consumer,
        "ip" => LimitKey::Ip,
        "route" => LimitKey::Route,
        other => match other.strip_prefix("header:") {
            Some(name) => LimitKey::Header(check_header_name(&format!("{path}.key"), name, p)?),
            None => {
                p.add(format!("{path}.key"), format!("`{other}` is not one of consumer, ip, route, header:<Name>"));
                return None;
            }
        },
    };
    Some(LimitRule { requests: raw.requests, per: raw.per.0, key })
}

pub(super) fn check_rate_limit(raw: Option<&RawRateLimit>, base: &Path, p: &mut Problems) -> RateLimitSettings {
    let Some(raw) = raw else {
        return RateLimitSettings { store: RateLimitStore::Local, on_store_error: OnStoreError::Allow, default: None };
    };
    let store = match raw.store.as_deref().unwrap_or("local") {
        "local" => {
            if raw.redis_url.is_some() {
                p.warn(
                    "rate_limit.redis_url",
                    "set, but `store` is local, so limits are per instance: set `store: redis` to share them",
                );
            }
            RateLimitStore::Local
        }
        "redis" => match check_redis(raw, base, p) {
            Some(settings) => RateLimitStore::Redis(settings),
            None => RateLimitStore::Local,
        },
        other => {
            p.add("rate_limit.store", format!("`{other}` is not one of local, redis"));
            RateLimitStore::Local
        }
    };
    let on_store_error = match raw.on_store_error.as_deref().unwrap_or("allow") {
        "allow" => OnStoreError::Allow,
        "deny" => OnStoreError::Deny,
        other => {
            p.add("rate_limit.on_store_error", format!("`{other}` is not one of allow, deny"));
            OnStoreError::Allow
        }
    };
    let default = raw.default.as_ref().and_then(|r| check_rule("rate_limit.default", r, p));
    RateLimitSettings { store, on_store_error, default }
}

/// `rate_limit.redis` (or the older `redis_url` + `redis_timeout`): exactly one of `url`,
/// `sentinels` + `master_name`, `cluster_nodes`.
fn check_redis(raw: &RawRateLimit, base: &Path, p: &mut Problems) -> Option<RedisSettings> {
    let Some(redis) = &raw.redis else {
        let Some(url) = &raw.redis_url else {
            p.add("rate_limit.redis", "`store: redis` needs `redis` (url, sentinels or cluster_nodes) or `redis_url`");
            return None;
        };
        let url = check_redis_url("rate_limit.redis_url", url, p)?;
        let timeout = check_redis_timeout("rate_limit.redis_timeout", &raw.redis_timeout, p);
        let tls = url.starts_with("rediss://");
        return Some(RedisSettings { topology: RedisTopology::Single { url }, password: None, tls, ca: None, timeout });
    };
    if raw.redis_url.is_some() || raw.redis_timeout.is_some() {
        p.add("rate_limit.redis_url", "give either `redis` or `redis_url`/`redis_timeout`, not both");
    }
    let timeout = check_redis_timeout("rate_limit.redis.timeout", &redis.timeout, p);
    let password = redis.password.clone().filter(|s| !s.is_empty());
    let kinds = [redis.url.is_some(), redis.sentinels.is_some(), redis.cluster_nodes.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        p.add("rate_limit.redis", "give exactly one of `url`, `sentinels` (with `master_name`), `cluster_nodes`");
        return None;
    }
    if redis.master_name.is_some() && redis.sentinels.is_none() {
        p.add("rate_limit.redis.master_name", "only used with `sentinels`");
    }
    let nodes = |key: &str, list: &[String], p: &mut Problems| -> Option<Vec<(String, u16)>> {
        if list.is_empty() {
            p.add(key, "must name at least one host:port");
            return None;
        }
        let mut out = Vec::new();
        for (i, node) in list.iter().enumerate() {
            match node.rsplit_once(':').and_then(|(h, port)| Some((h, port.parse::<u16>().ok()?))) {
                Some((host, port)) if !host.is_empty() && port != 0 => {
                    out.push((host.trim_start_matches('[').trim_end_matches(']').to_string(), port));
                }
                _ => p.add(format!("{key}[{i}]"), format!("`{node}` is not host:port")),
            }
        }
        (out.len() == list.len()).then_some(out)
    };
    let topology = if let Some(url) = &redis.url {
        let url = check_redis_url("rate_limit.redis.url", url, p)?;
        if redis.tls.is_some_and(|t| t != url.starts_with("rediss://")) {
            p.add("rate_limit.redis.tls", "the URL's scheme says whether TLS is used (`rediss://` for TLS)");
        }
        RedisTopology::Single { url }
    } else if let Some(sentinels) = &redis.sentinels {
        let sentinels = nodes("rate_limit.redis.sentinels", sentinels, p);
        let master_name = redis.master_name.clone().filter(|m| !m.trim().is_empty());
        if master_name.is_none() {
            p.add("rate_limit.redis.master_name", "`sentinels` need the `master_name` they watch");
        }
        RedisTopology::Sentinel { sentinels: sentinels?, master_name: master_name? }
    } else {
        let list = redis.cluster_nodes.as_deref().unwrap_or_default();
        RedisTopology::Cluster { nodes: nodes("rate_limit.redis.cluster_nodes", list, p)? }
    };
    // A URL says it with its scheme; the other topologies with `tls`.
    let tls = match &topology {
        RedisTopology::Single { url } => url.starts_with("rediss://"),
        _ => redis.tls.unwrap_or(false),
    };
    let ca = redis.ca_file.as_ref().and_then(|file| {
        let key = "rate_limit.redis.ca_file";
        let file = read_file(key, base, file, p)?;
        if !tls {
            p.add(key, "only used with TLS (`tls: true` or a `rediss://` URL)");
        }
        Some(file)
    });
    // The clients (and the CA's certificates) are checked where the limiter builds them.
    Some(RedisSettings { topology, password, tls, ca, timeout })
}

fn check_redis_url(key: &str, url: &str, p: &mut Problems) -> Option<String> {
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    if scheme_ok && redis::Client::open(url).is_ok() {
        Some(url.to_string())
    } else {
        p.add(key, format!("`{}` is not a redis:// or rediss:// URL", redact_url(url)));
        None
    }
}

fn check_redis_timeout(key: &str, raw: &Option<super::super::units::ConfDuration>, p: &mut Problems) -> Duration {
    let timeout = dur(raw, Duration::from_millis(50));
    if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(10) {
        p.add(key, "must be between 1ms and 10s (a check never waits longer)");
    }
    timeout
}
