//! Which discovered backends may take traffic, and how much of it.
//!
//! Two rules Pingora does not provide:
//! - **First probe.** Pingora counts a backend it has never checked as healthy, so a freshly
//!   discovered instance would take traffic before anyone knew it answers. With health checks
//!   configured, a new backend is held back until one probe of ours succeeds.
//! - **Slow start.** Once admitted, a backend that appeared after the pool's first membership
//!   ramps linearly from 10 % to 100 % of its weight over `slow_start`. The members the pool
//!   starts with (state file or first Consul answer) are taken at full weight: ramping
//!   everything at once would change nothing but the absolute numbers.
//!
//! The ramp is applied as a probability of *accepting* the backend when the balancer offers
//! it ([`Admission::factor`]), which for weighted round robin and random scales its share by
//! exactly that factor; least_conn also scales the weight it divides by.
//!
//! Entries are keyed by address; a weight change keeps the backend's admission and ramp. The
//! table is rebuilt from each membership, so it never outgrows the pool.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Share a ramping backend starts with.
const RAMP_FLOOR: f64 = 0.1;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the backend passed its first probe (or appeared, without health checks).
    admitted_at: Option<Instant>,
    /// Appeared after the first membership: subject to slow start.
    ramps: bool,
}

/// The admission table of one pool.
#[derive(Debug)]
pub(crate) struct Admission {
    slow_start: Option<Duration>,
    needs_probe: bool,
    entries: ArcSwap<HashMap<SocketAddr, Entry>>,
    /// Serialises writers (membership updates and probe results).
    write: Mutex<()>,
    seeded: AtomicBool,
}

/// A point-in-time view used for one selection.
#[derive(Debug)]
pub(crate) struct AdmissionView {
    entries: Arc<HashMap<SocketAddr, Entry>>,
    slow_start: Option<Duration>,
    now: Instant,
}

impl Admission {
    /// `needs_probe`: health checks are configured, so new backends wait for a first probe.
    pub(crate) fn new(slow_start: Option<Duration>, needs_probe: bool) -> Self {
        Admission {
            slow_start,
            needs_probe,
            entries: ArcSwap::from_pointee(HashMap::new()),
            write: Mutex::new(()),
            seeded: AtomicBool::new(false),
        }
    }

    /// A table for a rebuilt pool of the same service (its settings changed on a config
    /// reload): backends keep their admission and ramp, and the pool counts as already seeded,
    /// so members that were taking traffic keep taking it.
    pub(crate) fn continue_from(previous: &Admission, slow_start: Option<Duration>, needs_probe: bool) -> Self {
        let table = Admission::new(slow_start, needs_probe);
        table.entries.store(previous.entries.load_full());
        table.seeded.store(previous.seeded.load(Ordering::Relaxed), Ordering::Relaxed);
        table
    }

    /// A table whose `admitted` backends (known healthy from elsewhere) take traffic at once
    /// and at full weight; the pool counts as seeded.
    pub(crate) fn with_admitted(
        slow_start: Option<Duration>,
        needs_probe: bool,
        admitted: &[SocketAddr],
        now: Instant,
    ) -> Self {
        let table = Admission::new(slow_start, needs_probe);
        let entries = admitted.iter().map(|a| (*a, Entry { admitted_at: Some(now), ramps: false })).collect();
        table.entries.store(Arc::new(entries));
        table.seeded.store(true, Ordering::Relaxed);
        table
    }

    /// Take note of the current membership: new addresses are added (pending their probe),
    /// vanished ones forgotten. `None` (nothing known yet) leaves the table alone.
    pub(crate) fn observe(&self, members: Option<&[SocketAddr]>, now: Instant) {
        let Some(members) = members else { return };
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let ramps = self.seeded.swap(true, Ordering::Relaxed);
        let old = self.entries.load();
        let next: HashMap<SocketAddr, Entry> = members
            .iter()
            .map(|addr| {
                let entry = old
                    .get(addr)
                    .copied()
                    .unwrap_or(Entry { admitted_at: if self.needs_probe { None } else { Some(now) }, ramps });
                (*addr, entry)
            })
            .collect();
        self.entries.store(Arc::new(next));
    }

    /// Backends waiting for their first successful probe.
    pub(crate) fn pending(&self) -> Vec<SocketAddr> {
        self.entries.load().iter().filter(|(_, e)| e.admitted_at.is_none()).map(|(a, _)| *a).collect()
    }

    /// A probe of `addr` succeeded: it may take traffic from now on (its ramp starts now).
    pub(crate) fn admit(&self, addr: SocketAddr, now: Instant) {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.entries.load();
        if let Some(entry) = old.get(&addr).filter(|e| e.admitted_at.is_none()) {
            let mut next = HashMap::clone(&old);
            next.insert(addr, Entry { admitted_at: Some(now), ..*entry });
            self.entries.store(Arc::new(next));
        }
    }

    /// Whether `addr` may take traffic at all.
    pub(crate) fn is_admitted(&self, addr: &SocketAddr) -> bool {
        self.entries.load().get(addr).is_some_and(|e| e.admitted_at.is_some())
    }

    /// A snapshot for one selection.
    pub(crate) fn view(&self, now: Instant) -> AdmissionView {
        AdmissionView { entries: self.entries.load_full(), slow_start: self.slow_start, now }
    }
}

impl AdmissionView {
    /// `None`: not admitted (unknown or awaiting its first probe). `Some(f)`: the fraction of
    /// its weight the backend gets now, `0.1 ≤ f ≤ 1`.
    pub(crate) fn factor(&self, addr: &SocketAddr) -> Option<f64> {
        let entry = self.entries.get(addr)?;
        let since = entry.admitted_at?;
        Some(match self.slow_start {
            Some(window) if entry.ramps => ramp(self.now.saturating_duration_since(since), window),
            _ => 1.0,
        })
    }
}

/// Linear ramp from [`RAMP_FLOOR`] at `elapsed = 0` to 1 at `elapsed = window`.
pub(crate) fn ramp(elapsed: Duration, window: Duration) -> f64 {
    if window.is_zero() || elapsed >= window {
        return 1.0;
    }
    RAMP_FLOOR + (1.0 - RAMP_FLOOR) * elapsed.as_secs_f64() / window.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn ramp_is_linear_from_ten_percent() {
        let w = Duration::from_secs(30);
        assert!((ramp(Duration::ZERO, w) - 0.1).abs() < 1e-9);
        assert!((ramp(Duration::from_secs(15), w) - 0.55).abs() < 1e-9);
        assert!((ramp(Duration::from_millis(7500), w) - 0.325).abs() < 1e-9);
        assert_eq!(ramp(Duration::from_secs(30), w), 1.0);
        assert_eq!(ramp(Duration::from_secs(90), w), 1.0);
    }

    #[test]
    fn first_members_are_established_later_ones_ramp() {
        let adm = Admission::new(Some(Duration::from_secs(10)), false);
        let t0 = Instant::now();
        adm.observe(None, t0);
        adm.observe(Some(&[a(1), a(2)]), t0);
        adm.observe(Some(&[a(1), a(2), a(3)]), t0 + Duration::from_secs(5));
        let view = adm.view(t0 + Duration::from_secs(5));
        assert_eq!(view.factor(&a(1)), Some(1.0));
        assert_eq!(view.factor(&a(2)), Some(1.0));
        assert!((view.factor(&a(3)).expect("admitted") - 0.1).abs() < 1e-9);
        let later = adm.view(t0 + Duration::from_secs(10));
        assert!((later.factor(&a(3)).expect("admitted") - 0.55).abs() < 1e-9);
        assert_eq!(adm.view(t0 + Duration::from_secs(15)).factor(&a(3)), Some(1.0));
        assert_eq!(view.factor(&a(4)), None, "unknown backends are not admitted");
    }

    #[test]
    fn probes_gate_admission_and_start_the_ramp() {
        let adm = Admission::new(Some(Duration::from_secs(10)), true);
        let t0 = Instant::now();
        adm.observe(Some(&[a(1)]), t0);
        assert_eq!(adm.pending(), vec![a(1)]);
        assert_eq!(adm.view(t0).factor(&a(1)), None, "not before the first probe");
        adm.admit(a(1), t0);
        assert_eq!(adm.view(t0).factor(&a(1)), Some(1.0), "first member: no ramp");

        adm.observe(Some(&[a(1), a(2)]), t0 + Duration::from_secs(1));
        assert_eq!(adm.pending(), vec![a(2)]);
        adm.admit(a(2), t0 + Duration::from_secs(3));
        let f = adm.view(t0 + Duration::from_secs(3)).factor(&a(2)).expect("admitted");
        assert!((f - 0.1).abs() < 1e-9, "the ramp starts at admission, not discovery");
        assert!(adm.pending().is_empty());
    }

    #[test]
    fn removal_forgets_and_return_starts_over() {
        let adm = Admission::new(Some(Duration::from_secs(10)), false);
        let t0 = Instant::now();
        adm.observe(Some(&[a(1), a(2)]), t0);
        adm.observe(Some(&[a(1)]), t0 + Duration::from_secs(1));
        assert!(!adm.is_admitted(&a(2)));
        adm.observe(Some(&[a(1), a(2)]), t0 + Duration::from_secs(2));
        let f = adm.view(t0 + Duration::from_secs(2)).factor(&a(2)).expect("admitted");
        assert!(f < 0.2, "a returning backend ramps again");
        adm.admit(a(9), t0);
        assert!(!adm.is_admitted(&a(9)), "probe results for non-members are ignored");
    }

    #[test]
    fn a_rebuilt_pool_continues_the_table() {
        let adm = Admission::new(Some(Duration::from_secs(10)), true);
        let t0 = Instant::now();
        adm.observe(Some(&[a(1), a(2)]), t0);
        adm.admit(a(1), t0);
        let next = Admission::continue_from(&adm, None, true);
        assert!(next.is_admitted(&a(1)) && !next.is_admitted(&a(2)));
        next.observe(Some(&[a(1), a(2), a(3)]), t0);
        assert_eq!(next.pending().len(), 2, "the new member waits for its probe; the seeded pool does not reset");
    }

    #[test]
    fn without_slow_start_everything_admitted_is_full_weight() {
        let adm = Admission::new(None, false);
        let t0 = Instant::now();
        adm.observe(Some(&[a(1)]), t0);
        adm.observe(Some(&[a(1), a(2)]), t0);
        assert_eq!(adm.view(t0).factor(&a(2)), Some(1.0));
    }
}
