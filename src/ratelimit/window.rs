//! The sliding-window arithmetic shared by both stores (ARCHITECTURE.md §6 "Rate limits"):
//! requests in the last `per` are estimated as `prev × (1 − f) + curr`, where `prev` and `curr`
//! count the previous and current fixed windows and `f` is how far into the current window we
//! are. Pure functions, so the headers a client sees follow one formula whatever the store.

use std::time::Duration;

/// Counters of one key at the moment of a check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Usage {
    /// Requests admitted in the previous window.
    pub(crate) prev: u64,
    /// Requests admitted in the current window, this one included when it was admitted.
    pub(crate) curr: u64,
    /// Elapsed fraction of the current window, in `[0, 1)`.
    pub(crate) fraction: f64,
}

impl Usage {
    /// Estimated requests in the last window length.
    pub(crate) fn estimate(&self) -> f64 {
        self.prev as f64 * (1.0 - self.fraction.clamp(0.0, 1.0)) + self.curr as f64
    }
}

/// The answer to one check, with everything the `RateLimit-*` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Whether the request may pass.
    pub(crate) allowed: bool,
    /// `RateLimit-Limit`.
    pub(crate) limit: u64,
    /// `RateLimit-Remaining`.
    pub(crate) remaining: u64,
    /// `RateLimit-Reset` (and `Retry-After` when refused): whole seconds until one more request
    /// would be admitted, at least 1.
    pub(crate) reset: u64,
}

/// Seconds until the estimate falls to `target` or below, if no request is admitted meanwhile.
fn seconds_until(u: Usage, per: Duration, target: f64) -> f64 {
    let per = per.as_secs_f64();
    let f = u.fraction.clamp(0.0, 1.0);
    let left_in_window = (1.0 - f) * per;
    if u.estimate() <= target {
        return 0.0;
    }
    if target >= u.curr as f64 && u.prev > 0 {
        // The previous window's weight decays linearly through the rest of this window.
        let needed = 1.0 - (target - u.curr as f64) / u.prev as f64;
        return (needed - f).max(0.0) * per;
    }
    // Only the next window helps: then `curr` becomes the decaying previous window.
    if u.curr == 0 || target < 0.0 {
        return left_in_window + per;
    }
    left_in_window + (1.0 - target / u.curr as f64).max(0.0) * per
}

/// Judge a request from the counters. For an admitted request `usage` includes it; for a
/// refused one it does not (refusals are not counted, so a client that keeps hammering is
/// limited to the rate, not locked out).
pub(crate) fn decide(allowed: bool, limit: u64, per: Duration, usage: Usage) -> Decision {
    let estimate = usage.estimate();
    let (remaining, target) = if allowed {
        ((limit as f64 - estimate).floor().max(0.0) as u64, estimate - 1.0)
    } else {
        (0, limit as f64 - 1.0)
    };
    let reset = seconds_until(usage, per, target).ceil().max(1.0) as u64;
    Decision { allowed, limit, remaining, reset }
}

/// Whether one more request fits on top of `usage` (which does not include it yet).
pub(crate) fn admits(limit: u64, usage: Usage) -> bool {
    usage.estimate() + 1.0 <= limit as f64 + 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN: Duration = Duration::from_secs(10);

    #[test]
    fn estimate_weights_the_previous_window() {
        let u = Usage { prev: 10, curr: 4, fraction: 0.25 };
        assert!((u.estimate() - 11.5).abs() < 1e-9);
        assert!(admits(13, u) && !admits(12, u));
    }

    #[test]
    fn refused_request_waits_for_the_previous_window_to_decay() {
        // 20 / 10 s, previous window full, 5 s into the current one with 10 admitted: 20 in flight.
        let d = decide(false, 20, TEN, Usage { prev: 20, curr: 10, fraction: 0.5 });
        assert_eq!((d.allowed, d.remaining), (false, 0));
        // Estimate must reach 19: 20 × (1 − f) + 10 ≤ 19 ⇒ f ≥ 0.55 ⇒ 0.5 s ⇒ 1 s.
        assert_eq!(d.reset, 1);
        // Current window alone is full: wait for the next window and part of it.
        let d = decide(false, 20, TEN, Usage { prev: 0, curr: 20, fraction: 0.5 });
        // 5 s left, then 20 × (1 − g) ≤ 19 ⇒ g ≥ 0.05 ⇒ 0.5 s: 5.5 s ⇒ 6.
        assert_eq!(d.reset, 6);
    }

    #[test]
    fn admitted_request_reports_remaining() {
        let d = decide(true, 20, TEN, Usage { prev: 0, curr: 1, fraction: 0.0 });
        assert_eq!((d.allowed, d.remaining), (true, 19));
        assert!(d.reset >= 1 && d.reset <= 20, "{d:?}");
        let d = decide(true, 20, TEN, Usage { prev: 0, curr: 20, fraction: 0.9 });
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset, 2, "1 s left in the window, then 0.5 s");
    }
}
