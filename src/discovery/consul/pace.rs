//! The pacing rules of a blocking-query loop, kept pure so they can be tested without a clock:
//! Consul's index rules and a token bucket so a churning index cannot become a busy loop
//! (errors back off with [`crate::backoff::Backoff`]).

use std::time::{Duration, Instant};

/// The index to send next, from the one sent and the `X-Consul-Index` received (Consul's
/// "Blocking Queries → Implementation Details"):
/// - an index lower than the previous one (snapshot restore, server change) resets to 0 so
///   the next query returns at once with the current state;
/// - an index of 0 is never blocked on: 1 is always safe;
/// - no index at all (not Consul, or a broken proxy) cannot block: 0, and the token bucket
///   keeps the loop at its sustained rate.
pub(crate) fn next_index(sent: u64, received: Option<u64>) -> u64 {
    match received {
        None => 0,
        Some(r) if r < sent => 0,
        Some(r) => r.max(1),
    }
}

/// Token bucket: `burst` queries back to back, then one per `every`. In the happy case
/// (changes seconds apart) it never delays a query; a flapping index degrades into polling
/// at the sustained rate instead of hammering Consul.
#[derive(Debug)]
pub(crate) struct Pace {
    tokens: f64,
    burst: f64,
    every: Duration,
    last: Instant,
}

impl Pace {
    /// A full bucket.
    pub(crate) fn new(burst: u32, every: Duration, now: Instant) -> Self {
        Pace { tokens: burst as f64, burst: burst as f64, every, last: now }
    }

    /// Take a token for a query about to be sent at `now`; returns how long to wait first.
    pub(crate) fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last);
        self.tokens = (self.tokens + elapsed.as_secs_f64() / self.every.as_secs_f64()).min(self.burst);
        self.last = now.max(self.last);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Duration::ZERO;
        }
        let wait = self.every.mul_f64(1.0 - self.tokens);
        // The token that accrues during the wait is the one being spent.
        self.tokens = 0.0;
        self.last += wait;
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, Some(42)), 42);
        assert_eq!(next_index(42, Some(42)), 42, "timeout without change keeps blocking on it");
        assert_eq!(next_index(42, Some(50)), 50);
        assert_eq!(next_index(42, Some(7)), 0, "backwards → restart with a non-blocking read");
        assert_eq!(next_index(0, Some(0)), 1, "0 is never blocked on");
        assert_eq!(next_index(42, None), 0);
    }

    #[test]
    fn bucket_allows_a_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut pace = Pace::new(3, sec, t0);
        assert_eq!(pace.take(t0), Duration::ZERO);
        assert_eq!(pace.take(t0), Duration::ZERO);
        assert_eq!(pace.take(t0), Duration::ZERO);
        let w = pace.take(t0);
        assert_eq!(w, sec, "fourth immediate query waits a full interval");
        // The loop slept `w`; a query right after the wait must wait another interval.
        assert_eq!(pace.take(t0 + w), sec);
        // A long idle period (a blocking query held for `wait`) refills the bucket.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(pace.take(later), Duration::ZERO);
        assert_eq!(pace.take(later), Duration::ZERO);
    }

    #[test]
    fn flapping_index_is_held_to_the_sustained_rate() {
        let t0 = Instant::now();
        let mut pace = Pace::new(3, Duration::from_secs(1), t0);
        let mut now = t0;
        let mut sent = 0;
        // Every answer comes back 1 ms after the query: a busy loop without the bucket.
        while now < t0 + Duration::from_secs(10) {
            now += pace.take(now);
            sent += 1;
            now += Duration::from_millis(1);
        }
        assert!((12..=14).contains(&sent), "{sent} queries in 10 s");
    }
}
