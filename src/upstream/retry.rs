//! The retry budget of a service (ARCHITECTURE.md §7.3): retries may add at most `share` of
//! the service's requests, plus a floor of 3 per second so a quiet service can still retry.
//! A failing pool therefore sees at most `(1 + share)` times its offered load, never a retry
//! storm of `retries + 1` times.
//!
//! A token bucket in milli-tokens: every request deposits `share` tokens, time deposits 3 per
//! second, a retry spends one; the bucket holds at most 10 seconds' worth of the floor plus
//! 1000 requests' worth, so an idle service cannot bank an unbounded burst.

use std::sync::atomic::{AtomicU64, Ordering};

/// Retries allowed per second whatever the request count.
const FLOOR_PER_SECOND: u64 = 3;
const MILLI: u64 = 1000;

/// A service's retry budget.
#[derive(Debug, Default)]
pub(crate) struct RetryBudget {
    milli_tokens: AtomicU64,
    /// When time last deposited (ms).
    refilled_at: AtomicU64,
}

impl RetryBudget {
    fn cap(share_milli: u64) -> u64 {
        10 * FLOOR_PER_SECOND * MILLI + 1000 * share_milli
    }

    /// A request to the service: deposit its share (`share_milli` = share × 1000).
    pub(crate) fn deposit(&self, share_milli: u64) {
        let cap = Self::cap(share_milli);
        let _ =
            self.milli_tokens.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| Some((t + share_milli).min(cap)));
    }

    /// Spend one retry at `now` (ms) if the budget allows it.
    pub(crate) fn try_spend(&self, share_milli: u64, now: u64) -> bool {
        let last = self.refilled_at.load(Ordering::Acquire);
        if now > last && self.refilled_at.compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // The first call ever starts the clock with a full second's floor.
            let earned = if last == 0 { FLOOR_PER_SECOND * MILLI } else { (now - last) * FLOOR_PER_SECOND };
            let cap = Self::cap(share_milli);
            let _ =
                self.milli_tokens.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| Some((t + earned).min(cap)));
        }
        self.milli_tokens.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(MILLI)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_a_share_of_requests_plus_a_floor() {
        let b = RetryBudget::default();
        // 1000 requests at 20 % in the same millisecond: 200 retries plus the 3 of the floor.
        for _ in 0..1000 {
            b.deposit(200);
        }
        let allowed = (0..1000).filter(|_| b.try_spend(200, 1)).count();
        assert!((200..=203).contains(&allowed), "{allowed}");
        // No requests: the floor alone, 3 per second.
        let idle = RetryBudget::default();
        let first = (0..10).filter(|_| idle.try_spend(200, 1)).count();
        assert_eq!(first, 3);
        assert_eq!((0..10).filter(|_| idle.try_spend(200, 1_001)).count(), 3);
        assert_eq!(
            (0..10).filter(|_| idle.try_spend(200, 1_334)).count(),
            0,
            "a third of a second: one token not yet earned"
        );
    }

    #[test]
    fn an_idle_service_cannot_bank_a_storm() {
        let b = RetryBudget::default();
        b.try_spend(200, 1);
        let later = 3_600_000;
        let allowed = (0..1000).filter(|_| b.try_spend(200, later)).count();
        assert_eq!(allowed as u64, (RetryBudget::cap(200)) / MILLI);
    }
}
