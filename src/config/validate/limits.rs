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

pub(super) fn check_rate_limit(raw: Option<&RawRateLimit>, p: &mut Problems) -> RateLimitSettings {
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
        "redis" => match &raw.redis_url {
            Some(url) if url.starts_with("rediss://") => {
                p.add("rate_limit.redis_url", "TLS to Redis (`rediss://`) is not supported by this build; use `redis://` on a trusted network or a local TLS tunnel");
                RateLimitStore::Local
            }
            Some(url) if url.starts_with("redis://") && redis::Client::open(url.as_str()).is_ok() => {
                RateLimitStore::Redis { url: url.clone(), timeout: dur(&raw.redis_timeout, Duration::from_millis(50)) }
            }
            Some(url) => {
                p.add("rate_limit.redis_url", format!("`{}` is not a redis:// URL", redact_url(url)));
                RateLimitStore::Local
            }
            None => {
                p.add("rate_limit.redis_url", "`store: redis` needs `redis_url`");
                RateLimitStore::Local
            }
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
