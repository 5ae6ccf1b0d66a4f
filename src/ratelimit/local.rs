//! Per-instance counters: pingora-limits `Rate` estimators (count–min sketches over the current
//! and previous window). Memory is fixed whatever the number of clients: one sketch per
//! distinct window length, shared by all routes (keys carry the route). Collisions can only
//! over-count, by about (all requests in the window) / [`SLOTS`] for a given key.

use super::window::{self, Decision, Usage};
use pingora_limits::rate::Rate;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// Sketch rows.
const HASHES: usize = 4;
/// Sketch columns: 4 × 8192 × 2 windows × 8 B = 512 KiB per distinct window length.
pub const SLOTS: usize = 8192;

/// The local store.
pub struct LocalStore {
    rates: HashMap<Duration, Rate>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore").field("windows", &self.rates.keys().collect::<Vec<_>>()).finish()
    }
}

impl LocalStore {
    /// One estimator per window length in `windows`.
    pub fn new(windows: impl IntoIterator<Item = Duration>) -> Self {
        let mut rates = HashMap::new();
        for per in windows {
            rates.entry(per).or_insert_with(|| Rate::new_with_estimator_config(per, HASHES, SLOTS));
        }
        LocalStore { rates }
    }

    /// Count one request for `key` if it fits in `limit` per `per`. Unknown windows (not
    /// declared at construction) are never limited.
    pub fn check<K: Hash>(&self, key: &K, limit: u64, per: Duration) -> Option<Decision> {
        let rate = self.rates.get(&per)?;
        // Count first, so concurrent requests see each other; a refusal takes its count back.
        rate.observe(key, 1);
        let usage = rate.rate_with(key, |c| Usage {
            prev: c.prev_samples.max(0) as u64,
            curr: c.curr_samples.max(0) as u64,
            fraction: c.current_interval_fraction,
        });
        let before = Usage { curr: usage.curr.saturating_sub(1), ..usage };
        if window::admits(limit, before) {
            Some(window::decide(true, limit, per, usage))
        } else {
            rate.observe(key, -1);
            Some(window::decide(false, limit, per, before))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_and_recovers() {
        let per = Duration::from_secs(1);
        let store = LocalStore::new([per]);
        let allowed = (0..30).filter(|_| store.check(&("r", "alice"), 20, per).is_some_and(|d| d.allowed)).count();
        assert_eq!(allowed, 20);
        assert!(store.check(&("r", "bob"), 20, per).is_some_and(|d| d.allowed), "keys are independent");
        let refused = store.check(&("r", "alice"), 20, per).expect("known window");
        assert!(!refused.allowed && refused.remaining == 0 && refused.reset >= 1);
        assert!(store.check(&"x", 1, Duration::from_secs(7)).is_none(), "undeclared window");
        // After two windows everything is forgotten.
        std::thread::sleep(Duration::from_millis(2100));
        let d = store.check(&("r", "alice"), 20, per).expect("known window");
        assert!(d.allowed && d.remaining == 19, "{d:?}");
    }
}
