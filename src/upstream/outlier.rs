//! Passive outlier detection (ARCHITECTURE.md §7.3): backends are judged by the answers real
//! requests get. `consecutive_failures` failed attempts in a row (connect errors, timeouts,
//! resets, 5xx) eject a backend for `base_ejection × times ejected`, at most `max_ejection`;
//! at most `max_ejected_percent` of the pool is out at once, but one ejection is always
//! allowed. An ejected backend returns by itself when its time is up.
//!
//! The table lives in the service's lasting state, so an ejection survives a reload. Times are
//! milliseconds on the process's monotonic clock ([`crate::upstream::now_ms`]).

use crate::config::OutlierSettings;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// What one backend's record says.
#[derive(Debug, Default)]
struct Record {
    consecutive_failures: AtomicU32,
    /// When the current ejection ends (0: not ejected).
    ejected_until: AtomicU64,
    /// Ejections so far, the multiplier of the next one (reset after a quiet `max_ejection`).
    times_ejected: AtomicU32,
    /// When the last ejection ended (for that reset).
    returned_at: AtomicU64,
}

/// What a recorded failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Counted; the backend stays in.
    Counted,
    /// The backend is ejected for this long.
    Ejected {
        /// Milliseconds.
        for_ms: u64,
    },
    /// It would have been ejected, but `max_ejected_percent` of the pool is out already.
    KeptAtLimit,
}

/// Per-backend failure records of one service.
#[derive(Debug, Default)]
pub(crate) struct OutlierTable {
    records: RwLock<HashMap<SocketAddr, Arc<Record>>>,
    /// Backends ejected now (lets selection skip every lookup while it is 0).
    ejected: AtomicUsize,
}

impl OutlierTable {
    fn record(&self, backend: SocketAddr) -> Arc<Record> {
        if let Some(r) = self.records.read().unwrap_or_else(|p| p.into_inner()).get(&backend) {
            return r.clone();
        }
        self.records.write().unwrap_or_else(|p| p.into_inner()).entry(backend).or_default().clone()
    }

    /// Whether any backend is ejected (cheap; selection checks it first).
    pub(crate) fn any_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed) > 0
    }

    /// Whether `backend` is ejected at `now`. An ejection that has run out ends here.
    pub(crate) fn is_ejected(&self, backend: &SocketAddr, now: u64) -> bool {
        let Some(record) = self.records.read().unwrap_or_else(|p| p.into_inner()).get(backend).cloned() else {
            return false;
        };
        let until = record.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return false;
        }
        if now < until {
            return true;
        }
        // Time is up: the first to notice returns it.
        if record.ejected_until.compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            record.returned_at.store(now, Ordering::Relaxed);
            self.ejected.fetch_sub(1, Ordering::Relaxed);
            log::info!("backend {backend} returns from ejection");
        }
        false
    }

    /// A successful attempt: the failure streak ends.
    pub(crate) fn success(&self, backend: SocketAddr) {
        if let Some(r) = self.records.read().unwrap_or_else(|p| p.into_inner()).get(&backend) {
            if r.consecutive_failures.load(Ordering::Relaxed) != 0 {
                r.consecutive_failures.store(0, Ordering::Relaxed);
            }
        }
    }

    /// A failed attempt on `backend`, in a pool of `pool_size` backends.
    pub(crate) fn failure(&self, backend: SocketAddr, pool_size: usize, s: &OutlierSettings, now: u64) -> Verdict {
        let record = self.record(backend);
        let streak = record.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if streak < s.consecutive_failures || record.ejected_until.load(Ordering::Acquire) > now {
            return Verdict::Counted;
        }
        // Envoy counts the streak anew after an ejection: a returning backend gets a full
        // `consecutive_failures` before the next one.
        record.consecutive_failures.store(0, Ordering::Release);
        let limit = (pool_size * usize::from(s.max_ejected_percent) / 100).max(1);
        let admitted =
            self.ejected.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1)).is_ok();
        if !admitted {
            return Verdict::KeptAtLimit;
        }
        let quiet_since = record.returned_at.load(Ordering::Relaxed);
        if quiet_since != 0 && now.saturating_sub(quiet_since) > s.max_ejection.as_millis() as u64 {
            record.times_ejected.store(0, Ordering::Relaxed);
        }
        let times = record.times_ejected.fetch_add(1, Ordering::Relaxed) + 1;
        let for_ms = (s.base_ejection.as_millis() as u64)
            .saturating_mul(u64::from(times))
            .min(s.max_ejection.as_millis() as u64);
        record.ejected_until.store(now + for_ms.max(1), Ordering::Release);
        Verdict::Ejected { for_ms }
    }

    /// Backends ejected now.
    pub(crate) fn ejected_count(&self) -> usize {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Forget backends no longer in the pool (their ejections end with them).
    pub(crate) fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
        records.retain(|addr, r| {
            let kept = keep(addr);
            if !kept && r.ejected_until.swap(0, Ordering::AcqRel) != 0 {
                self.ejected.fetch_sub(1, Ordering::Relaxed);
            }
            kept
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejected_percent: 50,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_streak_ejects_for_base_times_count_capped() {
        let (t, s) = (OutlierTable::default(), settings());
        assert_eq!(t.failure(addr(1), 4, &s, 0), Verdict::Counted);
        t.success(addr(1));
        assert_eq!(t.failure(addr(1), 4, &s, 0), Verdict::Counted);
        assert_eq!(t.failure(addr(1), 4, &s, 0), Verdict::Counted);
        assert_eq!(t.failure(addr(1), 4, &s, 0), Verdict::Ejected { for_ms: 10_000 });
        assert!(t.any_ejected() && t.is_ejected(&addr(1), 9_999));
        assert!(!t.is_ejected(&addr(1), 10_000), "returns when its time is up");
        assert!(!t.any_ejected());
        for _ in 0..2 {
            t.failure(addr(1), 4, &s, 11_000);
        }
        assert_eq!(t.failure(addr(1), 4, &s, 11_000), Verdict::Ejected { for_ms: 20_000 }, "twice as long");
        assert!(!t.is_ejected(&addr(1), 31_000));
        for _ in 0..2 {
            t.failure(addr(1), 4, &s, 32_000);
        }
        assert_eq!(t.failure(addr(1), 4, &s, 32_000), Verdict::Ejected { for_ms: 25_000 }, "capped");
        assert!(!t.is_ejected(&addr(1), 57_000));
        // Quiet for longer than max_ejection: the multiplier starts over.
        for _ in 0..2 {
            t.failure(addr(1), 4, &s, 200_000);
        }
        assert_eq!(t.failure(addr(1), 4, &s, 200_000), Verdict::Ejected { for_ms: 10_000 });
    }

    #[test]
    fn at_most_the_percentage_but_always_one() {
        let (t, s) = (OutlierTable::default(), settings());
        let eject = |port| (0..3).map(|_| t.failure(addr(port), 4, &s, 0)).last();
        assert_eq!(eject(1), Some(Verdict::Ejected { for_ms: 10_000 }));
        assert_eq!(eject(2), Some(Verdict::Ejected { for_ms: 10_000 }));
        assert_eq!(eject(3), Some(Verdict::KeptAtLimit), "50 % of 4");
        assert_eq!(t.ejected_count(), 2);
        let single = OutlierTable::default();
        let one = OutlierSettings { max_ejected_percent: 10, ..settings() };
        assert_eq!(
            (0..3).map(|_| single.failure(addr(1), 2, &one, 0)).last(),
            Some(Verdict::Ejected { for_ms: 10_000 })
        );
        t.retain(|a| *a != addr(1));
        assert_eq!(t.ejected_count(), 1, "a backend that left the pool is no longer counted");
    }
}
