//! Quota counters (docs/plans.md "Exactness"): one counter per consumer × calendar window,
//! either in this process (`local`, one gateway) or in the shared store, where one atomic
//! script per check adds the request's cost unless that would pass the limit, and sets the
//! counter to expire after the window's end. A refused request is not counted, so a client
//! that keeps knocking after its quota is spent does not push the next window's start.
//!
//! The limit is an argument of each check, never part of the key: a plan changed by a reload
//! applies to the window in progress (a consumer moved from 10 000 to 1 000 000 a month keeps
//! what it used and gets the rest).

use super::calendar::{self, Span};
use super::scripts::{consumer_tag, Scripts};
use crate::config::{CalendarWindow, QuotaSettings};
use crate::ratelimit::{integers, StoreError};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

/// A counter outlives its window by this much, so a gateway whose clock runs a little behind
/// still finds (and adds to) the window it believes current instead of starting it afresh.
const GRACE_SECS: i64 = 300;

/// KEYS[1] = the counter; ARGV = cost, limit, expiry (Unix seconds). Returns {admitted, used}:
/// `used` after this request when admitted, before it when refused.
const CHECK: &str = r"
local cost = tonumber(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + cost > tonumber(ARGV[2]) then
  return {0, used}
end
used = redis.call('INCRBY', KEYS[1], cost)
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return {1, used}
";

/// The script, its SHA-1 computed once (it is sent by hash; the body only when Redis lacks it).
static CHECK_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(CHECK));

/// Consumers the local table holds when not told otherwise (≈ 100 B each).
pub(crate) const DEFAULT_MAX_CONSUMERS: usize = 1_000_000;

/// The answer to one quota check, with what the `RateLimit-*` headers and a 429 need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Whether the request fits.
    pub(crate) allowed: bool,
    /// The quota (`RateLimit-Limit`).
    pub(crate) limit: u64,
    /// Counted in this window, this request included when allowed.
    pub(crate) used: u64,
    /// `RateLimit-Remaining`.
    pub(crate) remaining: u64,
    /// Seconds to the window's end (`RateLimit-Reset`, and `Retry-After` when refused).
    pub(crate) reset: u64,
    /// The window.
    pub(crate) span: Span,
    /// Its kind.
    pub(crate) per: CalendarWindow,
}

impl Decision {
    fn new(allowed: bool, used: u64, quota: QuotaSettings, span: Span, now_ms: i64) -> Decision {
        Decision {
            allowed,
            limit: quota.requests,
            used,
            remaining: quota.requests.saturating_sub(used),
            reset: span.seconds_left(now_ms),
            span,
            per: quota.per,
        }
    }
}

/// Why a check has no answer; `rate_limit.on_store_error` decides what the request gets.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CheckError {
    /// The shared store failed (timeout, connection, cool-down).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The local table holds as many consumers as it may.
    #[error("the local quota table holds {limit} consumers, its most")]
    TableFull {
        /// Its bound.
        limit: usize,
    },
    /// The store answered something the script never returns.
    #[error("unexpected quota script reply")]
    Reply,
}

/// Where counters live.
#[derive(Debug)]
pub(crate) enum QuotaStore {
    /// In this process.
    Local(LocalCounters),
    /// The shared store.
    Shared(Arc<dyn Scripts>),
}

impl QuotaStore {
    /// Count `cost` for `consumer` against `quota` at `now_ms`, unless it would pass the quota.
    pub(crate) async fn check(
        &self,
        consumer: &str,
        quota: QuotaSettings,
        cost: u64,
        now_ms: i64,
    ) -> Result<Decision, CheckError> {
        let span = calendar::span(quota.per, now_ms);
        let (allowed, used) = match self {
            QuotaStore::Local(counters) => counters.add(consumer, quota, cost, span, now_ms)?,
            QuotaStore::Shared(scripts) => {
                let keys = [counter_key(consumer, quota.per, span)];
                let args = [cost.to_string(), quota.requests.to_string(), (span.end + GRACE_SECS).to_string()];
                let reply = scripts.invoke(&CHECK_SCRIPT, &keys, &args).await?;
                match integers(&reply).as_deref() {
                    Some(&[admitted, used]) => (admitted == 1, used.max(0) as u64),
                    _ => return Err(CheckError::Reply),
                }
            }
        };
        Ok(Decision::new(allowed, used, quota, span, now_ms))
    }
}

/// `siger:quota:{c:acme}:month:1796083200`: one consumer's counter of one window.
pub(crate) fn counter_key(consumer: &str, per: CalendarWindow, span: Span) -> String {
    format!("siger:quota:{}:{}:{}", consumer_tag(consumer), per.name(), span.start)
}

/// Shards of the local table: enough that worker threads rarely meet on one lock.
const SHARDS: usize = 16;

/// A consumer's counters, one per window kind: (window start, used).
type Windows = [Option<(i64, u64)>; 4];

/// Exact per-instance counters: for each consumer and window kind, the current window's count
/// (a new window replaces the old one in place, so memory follows the number of consumers).
/// Bounded: past `limit` consumers, windows that ended are swept; if none did, checks of new
/// consumers fail ([`CheckError::TableFull`]) and `on_store_error` decides.
#[derive(Debug)]
pub(crate) struct LocalCounters {
    shards: Box<[Mutex<HashMap<String, Windows>>]>,
    hasher: RandomState,
    held: AtomicUsize,
    limit: usize,
    /// When a full table last swept (Unix ms).
    last_full_sweep_ms: AtomicI64,
}

fn slot(per: CalendarWindow) -> usize {
    match per {
        CalendarWindow::Hour => 0,
        CalendarWindow::Day => 1,
        CalendarWindow::Week => 2,
        CalendarWindow::Month => 3,
    }
}

impl LocalCounters {
    /// A table of at most `limit` consumers.
    pub(crate) fn new(limit: usize) -> Self {
        LocalCounters {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            held: AtomicUsize::new(0),
            limit,
            last_full_sweep_ms: AtomicI64::new(i64::MIN / 2),
        }
    }

    fn add(
        &self,
        consumer: &str,
        quota: QuotaSettings,
        cost: u64,
        span: Span,
        now_ms: i64,
    ) -> Result<(bool, u64), CheckError> {
        let shard = &self.shards[(self.hasher.hash_one(consumer) % SHARDS as u64) as usize];
        let mut guard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if !guard.contains_key(consumer) {
            if self.held.load(Ordering::Relaxed) >= self.limit {
                // Full: make room from ended windows, at most once a second (a table full of
                // live consumers must not cost every new consumer a sweep).
                drop(guard);
                let last = self.last_full_sweep_ms.load(Ordering::Relaxed);
                if now_ms - last >= 1000
                    && self
                        .last_full_sweep_ms
                        .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    self.sweep(now_ms);
                }
                guard = shard.lock().unwrap_or_else(|p| p.into_inner());
            }
            if !guard.contains_key(consumer) {
                let took =
                    self.held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.limit).then_some(n + 1));
                if took.is_err() {
                    return Err(CheckError::TableFull { limit: self.limit });
                }
                guard.insert(consumer.to_string(), [None; 4]);
            }
        }
        let Some(windows) = guard.get_mut(consumer) else { return Err(CheckError::Reply) };
        let counter = &mut windows[slot(quota.per)];
        let used = match *counter {
            Some((start, used)) if start == span.start => used,
            _ => 0,
        };
        if used.saturating_add(cost) > quota.requests {
            return Ok((false, used));
        }
        *counter = Some((span.start, used + cost));
        Ok((true, used + cost))
    }

    /// Forget consumers none of whose windows is still running at `now_ms` (the wiring runs it
    /// every second beside the rate limiter's sweep; a full table runs it too).
    pub(crate) fn sweep(&self, now_ms: i64) {
        let kinds = [CalendarWindow::Hour, CalendarWindow::Day, CalendarWindow::Week, CalendarWindow::Month];
        let current = kinds.map(|per| calendar::span(per, now_ms).start);
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = shard.len();
            shard.retain(|_, windows| {
                windows.iter().zip(current).any(|(counter, start)| counter.is_some_and(|(s, _)| s == start))
            });
            self.held.fetch_sub(before - shard.len(), Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    /// Consumers held.
    pub(crate) fn len(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::calendar::at_utc;

    const MONTHLY_3: QuotaSettings = QuotaSettings { requests: 3, per: CalendarWindow::Month };

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn local_counts_exactly_refuses_without_counting_and_resets_with_the_window() {
        let store = QuotaStore::Local(LocalCounters::new(100));
        let now = at_utc("2026-12-31T23:59:58");
        let check = |cost, now| block_on(store.check("acme", MONTHLY_3, cost, now)).expect("answer");
        let d = check(2, now);
        assert_eq!((d.allowed, d.used, d.remaining, d.reset), (true, 2, 1, 2));
        let d = check(2, now);
        assert_eq!((d.allowed, d.used, d.remaining), (false, 2, 1), "a cost that does not fit is refused, uncounted");
        let d = check(1, now + 500);
        assert_eq!((d.allowed, d.used, d.remaining, d.reset), (true, 3, 0, 2));
        assert!(!check(1, now + 1999).allowed);
        let d = check(1, at_utc("2027-01-01T00:00:00"));
        assert_eq!((d.allowed, d.used, d.span.start_text()), (true, 1, "2027-01-01T00:00:00Z".to_string()));
        // Another consumer and another window kind count apart.
        assert_eq!(block_on(store.check("globex", MONTHLY_3, 3, now)).expect("answer").used, 3);
        let daily = QuotaSettings { requests: 3, per: CalendarWindow::Day };
        assert_eq!(block_on(store.check("acme", daily, 1, now)).expect("answer").used, 1);
    }

    #[test]
    fn a_reloaded_plan_applies_to_the_window_in_progress() {
        let store = QuotaStore::Local(LocalCounters::new(100));
        let now = at_utc("2026-12-10T10:00:00");
        for _ in 0..3 {
            assert!(block_on(store.check("acme", MONTHLY_3, 1, now)).expect("answer").allowed);
        }
        assert!(!block_on(store.check("acme", MONTHLY_3, 1, now)).expect("answer").allowed);
        let bigger = QuotaSettings { requests: 5, ..MONTHLY_3 };
        let d = block_on(store.check("acme", bigger, 1, now)).expect("answer");
        assert_eq!((d.allowed, d.used, d.remaining, d.limit), (true, 4, 1, 5));
        let smaller = QuotaSettings { requests: 2, ..MONTHLY_3 };
        let d = block_on(store.check("acme", smaller, 1, now)).expect("answer");
        assert_eq!((d.allowed, d.used, d.remaining), (false, 4, 0), "over a lowered quota: refused, remaining 0");
    }

    #[test]
    fn the_local_table_is_bounded_and_makes_room_from_ended_windows() {
        let store = QuotaStore::Local(LocalCounters::new(2));
        let hourly = QuotaSettings { requests: 10, per: CalendarWindow::Hour };
        let now = at_utc("2026-12-10T10:00:00");
        for consumer in ["a", "b"] {
            block_on(store.check(consumer, hourly, 1, now)).expect("room");
        }
        let full = block_on(store.check("c", hourly, 1, now + 10));
        assert!(matches!(full, Err(CheckError::TableFull { limit: 2 })), "{full:?}");
        assert!(block_on(store.check("a", hourly, 1, now + 20)).is_ok(), "known consumers keep counting");
        // An hour later a's and b's windows have ended: a full table takes their places back.
        let later = at_utc("2026-12-10T11:00:00");
        for consumer in ["c", "d"] {
            let d = block_on(store.check(consumer, hourly, 1, later)).expect("room made");
            assert_eq!(d.used, 1);
        }
        let QuotaStore::Local(counters) = &store else { unreachable!("local") };
        assert_eq!(counters.len(), 2);
        counters.sweep(at_utc("2026-12-10T12:00:00"));
        assert_eq!(counters.len(), 0, "the periodic sweep forgets ended windows");
    }

    #[test]
    fn keys_carry_the_consumer_tag_and_the_window() {
        let span = calendar::span(CalendarWindow::Month, at_utc("2026-12-10T10:00:00"));
        assert_eq!(
            counter_key("acme", CalendarWindow::Month, span),
            format!("siger:quota:{{c:acme}}:month:{}", span.start)
        );
    }
}
