//! Exponential back-off with jitter, the one every retry loop of the gateway uses (Consul
//! watches and registration, the NATS connection and its stream check): the n-th consecutive
//! failure waits a random time in `[cap/2, cap]` with `cap = min(base·2ⁿ, max)`, so a fleet of
//! gateways that lost the same dependency does not come back to it in lock-step.

use std::time::Duration;

/// Back-off state of one retry loop: how many attempts failed in a row.
#[derive(Debug)]
pub(crate) struct Backoff {
    failures: u32,
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// Back-off starting at `base`, never above `max`.
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Backoff { failures: 0, base, max }
    }

    /// The delay after `n` consecutive failures (0: the first), for loops whose count is kept
    /// elsewhere (a client library's reconnect callback); `unit` ∈ [0, 1] is the jitter draw.
    pub(crate) fn nth(n: u32, base: Duration, max: Duration, unit: f64) -> Duration {
        let cap = base.saturating_mul(1u32 << n.min(16)).min(max);
        cap / 2 + cap.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }

    /// Delay before the next attempt; `unit` ∈ [0, 1] is the jitter draw.
    pub(crate) fn next_with(&mut self, unit: f64) -> Duration {
        let delay = Self::nth(self.failures, self.base, self.max, unit);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Delay before the next attempt, randomly jittered.
    pub(crate) fn next(&mut self) -> Duration {
        self.next_with(rand::random::<f64>())
    }

    /// Consecutive failures so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: start over.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        assert_eq!(b.next_with(0.0), Duration::from_millis(125));
        assert_eq!(b.next_with(1.0), Duration::from_millis(500));
        let d = b.next_with(0.5);
        assert_eq!(d, Duration::from_millis(750));
        for _ in 0..40 {
            assert!(b.next() <= Duration::from_secs(10));
        }
        assert!(b.next_with(0.0) >= Duration::from_secs(5), "capped range is [max/2, max]");
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.next_with(0.0), Duration::from_millis(125));
    }

    #[test]
    fn the_nth_delay_needs_no_state() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(Backoff::nth(0, base, max, 1.0), base);
        assert_eq!(Backoff::nth(3, base, max, 0.0), Duration::from_millis(400));
        assert_eq!(Backoff::nth(u32::MAX, base, max, 1.0), max, "no overflow, capped");
        assert_eq!(Backoff::nth(u32::MAX, base, max, 0.0), max / 2);
    }
}
