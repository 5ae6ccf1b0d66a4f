//! The shared store as quotas and usage see it: something that runs a Lua script on the
//! `rate_limit.redis` deployment. In production that is the rate limiter's
//! [`RedisStore`](crate::ratelimit::RedisStore), with its connection pool, Sentinel failover,
//! Cluster client, per-check timeout and cool-down after a failure; there is no second
//! connection. Every script's keys share one hash tag ([`consumer_tag`], [`day_tag`]), so a
//! script runs on one Cluster slot.

use crate::ratelimit::StoreError;
use sha2::{Digest, Sha256};

/// Runs scripts on the shared store.
#[async_trait::async_trait]
pub(crate) trait Scripts: Send + Sync + std::fmt::Debug {
    /// Run `script` with `keys` (all under one hash tag) and `args`, answered within the
    /// store's timeout; failures as the rate limiter reports them (so `on_store_error` reads
    /// them alike).
    async fn invoke(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> Result<redis::Value, StoreError>;
}

/// The rate limiter's store runs quota and usage scripts as it runs its own checks.
#[async_trait::async_trait]
impl Scripts for crate::ratelimit::RedisStore {
    async fn invoke(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> Result<redis::Value, StoreError> {
        crate::ratelimit::RedisStore::invoke(self, script, keys, args).await
    }
}

/// Longest consumer name kept verbatim in a key; longer ones are hashed.
const MAX_PLAIN: usize = 96;

/// `{c:<consumer>}`: the hash tag of every key of one consumer (its quota counters and usage
/// days), so one consumer's keys live on one Cluster slot and a script may touch several. A
/// name with braces, spaces or control bytes, or a long one, is hashed: it cannot end the tag
/// early or make two consumers share one (`{h:<hash>}`, which no plain name's tag can equal).
pub(crate) fn consumer_tag(consumer: &str) -> String {
    if consumer.len() <= MAX_PLAIN && consumer.bytes().all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}') {
        format!("{{c:{consumer}}}")
    } else {
        let digest = Sha256::digest(consumer.as_bytes());
        format!("{{h:{}}}", hex::encode(&digest[..16]))
    }
}

/// `{d:<YYYY-MM-DD>}`: the hash tag of a day's consumer index.
pub(crate) fn day_tag(day: &str) -> String {
    format!("{{d:{day}}}")
}

/// A reply as text (bulk strings, numbers as decimal).
pub(crate) fn text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_one_slot_per_consumer_and_cannot_be_escaped() {
        assert_eq!(consumer_tag("acme"), "{c:acme}");
        assert_eq!(consumer_tag("telegram:12345"), "{c:telegram:12345}");
        for hostile in ["a}b", "{x", "a b", "a\tb", &"x".repeat(200)] {
            let tag = consumer_tag(hostile);
            assert!(tag.starts_with("{h:") && tag.len() == 36, "{hostile:?} → {tag}");
            assert_eq!(tag.matches('}').count(), 1);
        }
        assert_ne!(consumer_tag("a}b"), consumer_tag("a}c"));
        assert_eq!(day_tag("2026-12-01"), "{d:2026-12-01}");
    }
}
