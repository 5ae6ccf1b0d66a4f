//! The circuit breaker of a service (ARCHITECTURE.md §7.3): closed → open when at least
//! `failure_rate` of the last `window`'s requests failed (and there were `min_requests`); open
//! answers at once, without a backend; after `open_for`, half-open lets `half_open_requests`
//! through, whose success closes it and whose failure opens it again. `max_in_flight` bounds
//! concurrent requests in any state.
//!
//! Lock-free: a request costs an atomic load to be admitted and a couple of atomic adds to be
//! counted. Lives in the service's lasting state, so a reload keeps the state.

use crate::config::BreakerSettings;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// Buckets of the sliding window.
const BUCKETS: usize = 10;

/// Breaker states, as exported in `siger_circuit_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Requests flow.
    Closed = 0,
    /// Requests are refused.
    Open = 1,
    /// A few requests probe the service.
    HalfOpen = 2,
}

impl State {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }

    /// `closed`, `open`, `half_open`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The circuit is open (or half-open with its probes taken); retry after this many seconds.
    Open {
        /// Seconds.
        retry_after: u64,
    },
    /// `max_in_flight` requests are running.
    TooManyInFlight,
}

/// One time bucket of the window: requests and failures counted in it.
#[derive(Debug, Default)]
struct Bucket {
    /// Which bucket period (now / bucket length) the counts belong to.
    period: AtomicU64,
    total: AtomicU32,
    failed: AtomicU32,
}

/// A service's breaker.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    state: AtomicU8,
    opened_at: AtomicU64,
    probes_left: AtomicU32,
    probes_passed: AtomicU32,
    in_flight: Arc<AtomicU32>,
    buckets: [Bucket; BUCKETS],
}

/// An admitted request; counts as in flight until dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    in_flight: Arc<AtomicU32>,
    /// Admitted as a half-open probe.
    pub(crate) probe: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Breaker {
    /// The state now (an open breaker whose time is up reads as open until a request comes).
    pub(crate) fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Admit a request at `now` (ms), or say why not.
    pub(crate) fn admit(&self, s: &BreakerSettings, now: u64) -> Result<Ticket, Refusal> {
        let probe = match self.state() {
            State::Closed => false,
            State::Open => {
                let reopens = self.opened_at.load(Ordering::Acquire) + s.open_for.as_millis() as u64;
                if now < reopens {
                    return Err(Refusal::Open { retry_after: (reopens - now).div_ceil(1000).max(1) });
                }
                // The first request after `open_for` turns the breaker half-open.
                if self
                    .state
                    .compare_exchange(State::Open as u8, State::HalfOpen as u8, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.probes_passed.store(0, Ordering::Release);
                    self.probes_left.store(s.half_open_requests, Ordering::Release);
                    log::info!("circuit half-open: {} probe requests", s.half_open_requests);
                }
                self.take_probe(s)?
            }
            State::HalfOpen => self.take_probe(s)?,
        };
        if let Some(max) = s.max_in_flight {
            if self.in_flight.fetch_add(1, Ordering::AcqRel) >= max {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                if probe {
                    self.probes_left.fetch_add(1, Ordering::AcqRel);
                }
                return Err(Refusal::TooManyInFlight);
            }
        } else {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        Ok(Ticket { in_flight: self.in_flight.clone(), probe })
    }

    fn take_probe(&self, s: &BreakerSettings) -> Result<bool, Refusal> {
        let taken = self.probes_left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok();
        if taken {
            Ok(true)
        } else {
            Err(Refusal::Open { retry_after: s.open_for.as_secs().max(1) })
        }
    }

    /// An admitted request ended without a verdict (the client left first): a half-open probe
    /// it held goes back, so the breaker does not wait forever for its outcome.
    pub(crate) fn abandon(&self, ticket: &Ticket) {
        if ticket.probe && self.state() == State::HalfOpen {
            self.probes_left.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The outcome of an admitted request. Returns the new state when this one changed it.
    pub(crate) fn record(&self, s: &BreakerSettings, ticket: &Ticket, failed: bool, now: u64) -> Option<State> {
        if ticket.probe {
            if failed {
                return self.open(now, State::HalfOpen);
            }
            let passed = self.probes_passed.fetch_add(1, Ordering::AcqRel) + 1;
            if passed >= s.half_open_requests
                && self
                    .state
                    .compare_exchange(State::HalfOpen as u8, State::Closed as u8, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                self.clear_window();
                return Some(State::Closed);
            }
            return None;
        }
        let bucket_ms = (s.window.as_millis() as u64 / BUCKETS as u64).max(1);
        let period = now / bucket_ms;
        let bucket = &self.buckets[(period % BUCKETS as u64) as usize];
        let seen = bucket.period.load(Ordering::Acquire);
        if seen != period && bucket.period.compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            bucket.total.store(0, Ordering::Release);
            bucket.failed.store(0, Ordering::Release);
        }
        bucket.total.fetch_add(1, Ordering::AcqRel);
        if !failed {
            return None;
        }
        bucket.failed.fetch_add(1, Ordering::AcqRel);
        // Judged only when something fails: successes cost no sum.
        let oldest = period.saturating_sub(BUCKETS as u64 - 1);
        let (mut total, mut fails) = (0u64, 0u64);
        for b in &self.buckets {
            let p = b.period.load(Ordering::Acquire);
            if (oldest..=period).contains(&p) {
                total += u64::from(b.total.load(Ordering::Acquire));
                fails += u64::from(b.failed.load(Ordering::Acquire));
            }
        }
        if total >= u64::from(s.min_requests) && fails as f64 >= s.failure_rate * total as f64 {
            return self.open(now, State::Closed);
        }
        None
    }

    fn open(&self, now: u64, from: State) -> Option<State> {
        self.opened_at.store(now, Ordering::Release);
        self.state.compare_exchange(from as u8, State::Open as u8, Ordering::AcqRel, Ordering::Acquire).ok()?;
        self.clear_window();
        Some(State::Open)
    }

    fn clear_window(&self) {
        for b in &self.buckets {
            b.total.store(0, Ordering::Release);
            b.failed.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            max_in_flight: None,
            failure_rate: 0.5,
            min_requests: 4,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            half_open_requests: 2,
        }
    }

    fn run(b: &Breaker, s: &BreakerSettings, failed: bool, now: u64) -> Option<State> {
        let t = b.admit(s, now).expect("admitted");
        b.record(s, &t, failed, now)
    }

    #[test]
    fn opens_on_the_failure_rate_and_recovers_through_half_open() {
        let (b, s) = (Breaker::default(), settings());
        assert_eq!(run(&b, &s, true, 0), None, "below min_requests");
        assert_eq!(run(&b, &s, false, 0), None);
        assert_eq!(run(&b, &s, false, 0), None);
        assert_eq!(run(&b, &s, true, 0), Some(State::Open), "2 of 4 failed");
        assert_eq!(b.admit(&s, 1_000).err(), Some(Refusal::Open { retry_after: 4 }));
        // Half-open: exactly two probes.
        let p1 = b.admit(&s, 5_000).expect("probe 1");
        let p2 = b.admit(&s, 5_000).expect("probe 2");
        assert!(p1.probe && p2.probe);
        assert!(b.admit(&s, 5_000).is_err(), "no third probe");
        assert_eq!(b.record(&s, &p1, false, 5_001), None);
        assert_eq!(b.record(&s, &p2, false, 5_002), Some(State::Closed));
        assert!(!b.admit(&s, 5_003).expect("closed").probe);
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_old_failures_age_out() {
        let (b, s) = (Breaker::default(), settings());
        for _ in 0..3 {
            run(&b, &s, true, 0);
        }
        assert_eq!(run(&b, &s, true, 0), Some(State::Open));
        let probe = b.admit(&s, 6_000).expect("probe");
        assert_eq!(b.record(&s, &probe, true, 6_000), Some(State::Open));
        assert!(b.admit(&s, 6_001).is_err());
        // A closed breaker only counts the last window.
        let (b, s) = (Breaker::default(), settings());
        for _ in 0..3 {
            run(&b, &s, true, 0);
        }
        for _ in 0..10 {
            run(&b, &s, false, 20_000);
        }
        assert_eq!(run(&b, &s, true, 20_000), None, "1 failure of 11 in this window");
    }

    #[test]
    fn max_in_flight_refuses_beyond_and_frees_on_drop() {
        let (b, s) = (Breaker::default(), BreakerSettings { max_in_flight: Some(2), ..settings() });
        let t1 = b.admit(&s, 0).expect("1");
        let _t2 = b.admit(&s, 0).expect("2");
        assert_eq!(b.admit(&s, 0).err(), Some(Refusal::TooManyInFlight));
        drop(t1);
        assert!(b.admit(&s, 0).is_ok());
    }
}
