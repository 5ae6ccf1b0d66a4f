//! Per-instance counters: exact sliding-window counts, one table per limit (a route's rule), so
//! no amount of traffic on one route or from other clients changes what a quiet client sees.
//!
//! A table maps a keyed 64-bit hash of the client key to the counts of its current and previous
//! fixed window. The hash is SipHash with a per-process random key, so clients cannot aim
//! collisions at each other (and by chance two keys share a slot with probability ~n²/2⁶⁵).
//! Entries older than the previous window are swept as a shard grows, when a shard is touched
//! two windows after its last sweep, and by [`LocalTable::sweep`] (run every second for every
//! table), so memory follows the number of clients active in the last two windows. A
//! process-wide budget bounds that too, and no table may take more than half of it, so one
//! flooded route cannot leave the others without room: once a table cannot track a new key,
//! the key is counted in a per-table count–min sketch (pingora-limits `Rate`) instead, which
//! can only over-count — a flood can make the limit stricter for newcomers, never looser — and
//! the overflow is counted in metrics. As soon as stale keys are swept, new keys are counted
//! exactly again.

use super::window::{self, Decision, Usage};
use pingora_limits::rate::Rate;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Shards per table: enough that worker threads rarely meet on one lock.
const SHARDS: usize = 32;
/// A shard is swept when it has doubled since its last sweep (and holds at least this many).
const SWEEP_FLOOR: usize = 64;
/// Overflow sketch: 4 rows × 16384 columns × 2 windows × 8 B = 1 MiB, made only when needed.
const SKETCH_HASHES: usize = 4;
const SKETCH_SLOTS: usize = 16_384;

/// How many client keys all local tables together may track exactly.
#[derive(Debug)]
pub(crate) struct KeyBudget {
    pub(crate) limit: usize,
    used: AtomicUsize,
    /// Checks counted in an overflow sketch because the budget was spent.
    pub(crate) overflowed: AtomicU64,
}

impl KeyBudget {
    /// A budget of `limit` keys.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(KeyBudget { limit, used: AtomicUsize::new(0), overflowed: AtomicU64::new(0) })
    }

    /// Keys tracked now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self) -> bool {
        self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.limit).then_some(n + 1)).is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy)]
struct Counts {
    /// Window number of `curr`.
    window: u64,
    curr: u64,
    prev: u64,
}

impl Counts {
    /// The counts as of window `now`.
    fn rolled(self, now: u64) -> Counts {
        match now.saturating_sub(self.window) {
            0 => self,
            1 => Counts { window: now, curr: 0, prev: self.curr },
            _ => Counts { window: now, curr: 0, prev: 0 },
        }
    }
}

#[derive(Debug, Default)]
struct Shard {
    counts: HashMap<u64, Counts>,
    /// Size after the last sweep.
    swept_at: usize,
    /// Window of the last sweep.
    swept_window: u64,
}

impl Shard {
    /// Forget keys not seen in the current or previous window; returns how many went.
    fn sweep(&mut self, window: u64) -> usize {
        let before = self.counts.len();
        self.counts.retain(|_, c| window.saturating_sub(c.window) <= 1);
        self.swept_at = self.counts.len();
        self.swept_window = window;
        before - self.counts.len()
    }
}

/// The exact counters of one limit.
pub(crate) struct LocalTable {
    per: Duration,
    epoch: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    budget: Arc<KeyBudget>,
    /// Keys this table tracks (at most half the budget).
    held: AtomicUsize,
    overflow: OnceLock<Rate>,
}

impl std::fmt::Debug for LocalTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTable").field("per", &self.per).finish()
    }
}

impl Drop for LocalTable {
    fn drop(&mut self) {
        self.budget.give_back(self.held.load(Ordering::Relaxed));
    }
}

impl LocalTable {
    /// A table for windows of `per`, drawing tracked keys from `budget`.
    pub(crate) fn new(per: Duration, budget: Arc<KeyBudget>) -> Self {
        LocalTable {
            per: per.max(Duration::from_millis(1)),
            epoch: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            budget,
            held: AtomicUsize::new(0),
            overflow: OnceLock::new(),
        }
    }

    /// Take a slot for a new key: from this table's half of the budget, then the budget.
    fn take(&self) -> bool {
        let half = self.budget.limit / 2;
        let mine = self.held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < half).then_some(n + 1));
        if mine.is_err() {
            return false;
        }
        if self.budget.take() {
            return true;
        }
        self.held.fetch_sub(1, Ordering::Relaxed);
        false
    }

    fn give_back(&self, n: usize) {
        if n > 0 {
            self.held.fetch_sub(n, Ordering::Relaxed);
            self.budget.give_back(n);
        }
    }

    /// Forget every key not seen in the current or previous window (run periodically, so
    /// a table no request touches gives its keys back too).
    pub(crate) fn sweep(&self) {
        let (window, _) = self.clock(Instant::now());
        for shard in self.shards.iter() {
            let gone = shard.lock().unwrap_or_else(|p| p.into_inner()).sweep(window);
            self.give_back(gone);
        }
    }

    /// Window number and elapsed fraction of the current window at `now`.
    fn clock(&self, now: Instant) -> (u64, f64) {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        let per = self.per.as_nanos();
        ((elapsed / per) as u64, (elapsed % per) as f64 / per as f64)
    }

    /// Count one request for `key` if it fits in `limit`.
    pub(crate) fn check<K: Hash + ?Sized>(&self, key: &K, limit: u64) -> Decision {
        self.check_at(key, limit, Instant::now())
    }

    fn check_at<K: Hash + ?Sized>(&self, key: &K, limit: u64, now: Instant) -> Decision {
        let (window, fraction) = self.clock(now);
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shards[(hash % SHARDS as u64) as usize].lock().unwrap_or_else(|p| p.into_inner());
        if window > shard.swept_window + 1 && !shard.counts.is_empty() {
            let gone = shard.sweep(window);
            self.give_back(gone);
        }
        let counts = match shard.counts.get(&hash) {
            Some(c) => c.rolled(window),
            None => {
                if !self.take() {
                    // Make room from this shard's stale keys before falling back.
                    let gone = shard.sweep(window);
                    self.give_back(gone);
                    if !self.take() {
                        drop(shard);
                        self.budget.overflowed.fetch_add(1, Ordering::Relaxed);
                        return self.check_sketch(hash, limit);
                    }
                }
                Counts { window, curr: 0, prev: 0 }
            }
        };
        let before = Usage { prev: counts.prev, curr: counts.curr, fraction };
        let admitted = window::admits(limit, before);
        let counts = if admitted { Counts { curr: counts.curr + 1, ..counts } } else { counts };
        shard.counts.insert(hash, counts);
        if shard.counts.len() >= SWEEP_FLOOR.max(shard.swept_at * 2) {
            let gone = shard.sweep(window);
            self.give_back(gone);
        }
        if admitted {
            window::decide(true, limit, self.per, Usage { curr: counts.curr, ..before })
        } else {
            window::decide(false, limit, self.per, before)
        }
    }

    /// The over-budget path: a count–min sketch that can only over-count.
    fn check_sketch(&self, hash: u64, limit: u64) -> Decision {
        let rate = self.overflow.get_or_init(|| Rate::new_with_estimator_config(self.per, SKETCH_HASHES, SKETCH_SLOTS));
        rate.observe(&hash, 1);
        let usage = rate.rate_with(&hash, |c| Usage {
            prev: c.prev_samples.max(0) as u64,
            curr: c.curr_samples.max(0) as u64,
            fraction: c.current_interval_fraction,
        });
        let before = Usage { curr: usage.curr.saturating_sub(1), ..usage };
        if window::admits(limit, before) {
            window::decide(true, limit, self.per, usage)
        } else {
            rate.observe(&hash, -1);
            window::decide(false, limit, self.per, before)
        }
    }

    /// Keys tracked exactly by this table now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |s| s.counts.len())).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_and_recovers() {
        let per = Duration::from_secs(1);
        let table = LocalTable::new(per, KeyBudget::new(1000));
        let t0 = Instant::now();
        let allowed = (0..30).filter(|_| table.check_at("alice", 20, t0).allowed).count();
        assert_eq!(allowed, 20);
        assert!(table.check_at("bob", 20, t0).allowed, "keys are independent");
        let refused = table.check_at("alice", 20, t0);
        assert!(!refused.allowed && refused.remaining == 0 && refused.reset >= 1);
        // Two windows later everything is forgotten.
        let d = table.check_at("alice", 20, t0 + Duration::from_millis(2100));
        assert!(d.allowed && d.remaining == 19, "{d:?}");
    }

    #[test]
    fn the_previous_window_is_weighted() {
        let per = Duration::from_secs(10);
        let table = LocalTable::new(per, KeyBudget::new(1000));
        let t0 = table.epoch;
        assert_eq!((0..10).filter(|_| table.check_at("k", 10, t0).allowed).count(), 10);
        // Half-way through the next window half of the previous one still counts: 5 more fit.
        let mid = t0 + Duration::from_secs(15);
        assert_eq!((0..10).filter(|_| table.check_at("k", 10, mid).allowed).count(), 5);
    }

    #[test]
    fn a_flood_of_other_keys_leaves_a_quiet_key_exact() {
        let per = Duration::from_secs(30);
        let table = LocalTable::new(per, KeyBudget::new(1_000_000));
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            table.check_at(&i, 3, t0);
        }
        let allowed = (0..10).filter(|_| table.check_at("quiet", 3, t0).allowed).count();
        assert_eq!(allowed, 3);
    }

    #[test]
    fn memory_is_bounded_by_sweeps_and_the_budget() {
        let per = Duration::from_millis(100);
        let budget = KeyBudget::new(1_000_000);
        let table = LocalTable::new(per, budget.clone());
        let t0 = Instant::now();
        for round in 0..20u64 {
            let at = t0 + per * (round as u32 * 3);
            for i in 0..5_000u64 {
                table.check_at(&(round, i), 5, at);
            }
        }
        // Old windows were swept: far fewer than the 100,000 keys ever seen remain.
        assert!(table.tracked() <= 15_000, "{}", table.tracked());
        assert_eq!(budget.used(), table.tracked());
        assert_eq!(table.held.load(Ordering::Relaxed), table.tracked());
        // Past the budget new keys still get answers (from the sketch), and it is counted.
        let full = LocalTable::new(per, KeyBudget::new(10));
        for i in 0..50u64 {
            assert!(full.check_at(&i, 5, t0).allowed);
        }
        assert_eq!(full.budget.overflowed.load(Ordering::Relaxed), 45, "one table holds half the budget");
        drop(table);
        assert_eq!(budget.used(), 0, "a dropped table returns its keys");
    }

    #[test]
    fn a_spent_budget_recovers_once_keys_go_stale_and_no_table_takes_more_than_half() {
        let per = Duration::from_millis(100);
        let budget = KeyBudget::new(1_000);
        let flooded = LocalTable::new(per, budget.clone());
        let quiet = LocalTable::new(per, budget.clone());
        let t0 = flooded.epoch;
        for i in 0..2_000u64 {
            flooded.check_at(&i, 5, t0);
        }
        assert_eq!(flooded.tracked(), 500, "half the budget");
        // The other half is still there for another route: its newcomers are counted exactly.
        assert_eq!((0..5).filter(|_| quiet.check_at("newcomer", 3, t0).allowed).count(), 3);
        // Two windows later the periodic sweep gives the flood's keys back.
        std::thread::sleep(Duration::from_millis(250));
        flooded.sweep();
        assert_eq!(flooded.tracked(), 0);
        let later = Instant::now();
        assert_eq!((0..5).filter(|_| flooded.check_at("fresh", 3, later).allowed).count(), 3);
        assert_eq!(flooded.tracked(), 1, "tracked exactly again, not in the sketch");
    }
}
