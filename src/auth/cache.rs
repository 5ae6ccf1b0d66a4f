//! Bounded cache of successful token verifications, keyed by the SHA-256 of the token (the
//! token itself is never stored). An entry dies at the token's own expiry (`exp` + leeway) and
//! when the verification keys change, so a cached answer is never more permissive than a fresh
//! check. Sharded LRUs keep lock hold times tiny under concurrency.

use super::Identity;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

/// Cache key: SHA-256 of the raw token.
pub(crate) type TokenDigest = [u8; 32];

struct Entry {
    identity: Arc<Identity>,
    /// Unix seconds after which the token is expired (leeway included).
    expires_at: u64,
    /// Key-set generation the token was verified with.
    generation: u64,
}

/// The validation cache; capacity 0 disables it.
pub(crate) struct TokenCache {
    shards: Vec<Mutex<LruCache<TokenDigest, Entry>>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").field("shards", &self.shards.len()).finish()
    }
}

impl TokenCache {
    /// A cache holding at most about `capacity` tokens.
    pub(crate) fn new(capacity: usize) -> Self {
        let shards = match NonZeroUsize::new(capacity.div_ceil(SHARDS)) {
            Some(per_shard) => (0..SHARDS).map(|_| Mutex::new(LruCache::new(per_shard))).collect(),
            None => Vec::new(),
        };
        TokenCache { shards }
    }

    fn shard(&self, key: &TokenDigest) -> Option<&Mutex<LruCache<TokenDigest, Entry>>> {
        if self.shards.is_empty() {
            return None;
        }
        self.shards.get(key[0] as usize % self.shards.len())
    }

    /// The identity of a token verified before, if still valid at `now` under `generation`.
    pub(crate) fn get(&self, key: &TokenDigest, now: u64, generation: u64) -> Option<Arc<Identity>> {
        let mut shard = self.shard(key)?.lock().ok()?;
        match shard.get(key) {
            Some(e) if e.expires_at >= now && e.generation == generation => Some(e.identity.clone()),
            Some(_) => {
                shard.pop(key);
                None
            }
            None => None,
        }
    }

    /// Remember a successful verification.
    pub(crate) fn insert(&self, key: TokenDigest, identity: Arc<Identity>, expires_at: u64, generation: u64) {
        if let Some(mut shard) = self.shard(&key).and_then(|s| s.lock().ok()) {
            shard.put(key, Entry { identity, expires_at, generation });
        }
    }

    /// Entries currently held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().filter_map(|s| s.lock().ok().map(|s| s.len())).sum()
    }

    /// True when nothing is cached.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sub: &str) -> Arc<Identity> {
        Arc::new(Identity { sub: Some(sub.into()), ..Identity::default() })
    }

    #[test]
    fn entries_expire_with_the_token_and_the_key_generation() {
        let cache = TokenCache::new(100);
        cache.insert([1; 32], id("a"), 1000, 0);
        assert_eq!(cache.get(&[1; 32], 999, 0).and_then(|i| i.sub.clone()).as_deref(), Some("a"));
        assert!(cache.get(&[1; 32], 1000, 1).is_none(), "keys changed");
        cache.insert([1; 32], id("a"), 1000, 0);
        assert!(cache.get(&[1; 32], 1001, 0).is_none(), "token expired");
        assert!(cache.is_empty(), "expired entries are dropped on lookup");
    }

    #[test]
    fn bounded() {
        let cache = TokenCache::new(32);
        for i in 0..1000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            k[0] = (i % 251) as u8;
            cache.insert(k, id("x"), u64::MAX, 0);
        }
        assert!(cache.len() <= 32, "{}", cache.len());
        let off = TokenCache::new(0);
        off.insert([0; 32], id("x"), u64::MAX, 0);
        assert!(off.get(&[0; 32], 0, 0).is_none());
    }
}
