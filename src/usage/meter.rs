//! The hot path's half of usage: each request adds to an in-memory record of its consumer ×
//! route × day (a lock on one of a few shards, a short scan of the consumer's routes; an
//! allocation only for a consumer not seen since the last flush). The flusher takes the lot
//! every `usage.flush_interval`; no request waits on the store for usage.
//!
//! Memory is bounded: at most `limit` records are held between flushes, counting those the
//! flusher still holds because the store refused them. Past that, a request is not recorded
//! and is counted in [`UsageMeter::dropped`] (exported as `siger_usage_dropped_total`), never
//! silently lost.

use super::record::Counts;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use time::Date;

/// Records held between flushes when not configured otherwise (≈ 150 B each).
pub(crate) const DEFAULT_MAX_RECORDS: usize = 100_000;
const SHARDS: usize = 16;

/// One record in the meter.
#[derive(Debug, Clone)]
struct Cell {
    route: Arc<str>,
    day: Date,
    counts: Counts,
}

/// One shard: consumer → its records.
type Shard = Mutex<HashMap<String, Vec<Cell>>>;

/// What the meter gathered since the last take: (consumer, route, day, counts).
pub(crate) type Gathered = Vec<(String, Arc<str>, Date, Counts)>;

/// Usage gathered since the last flush.
#[derive(Debug)]
pub(crate) struct UsageMeter {
    shards: Box<[Shard]>,
    hasher: RandomState,
    /// Records in the shards.
    held: AtomicUsize,
    /// Records the flusher holds (not yet written).
    pending: AtomicUsize,
    limit: usize,
    dropped: AtomicU64,
}

impl Default for UsageMeter {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RECORDS)
    }
}

impl UsageMeter {
    /// A meter holding at most `limit` records (with the flusher's).
    pub(crate) fn new(limit: usize) -> Self {
        UsageMeter {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            held: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            limit,
            dropped: AtomicU64::new(0),
        }
    }

    /// Record one request of `consumer` on `route`, answered `status`, on `day` (UTC).
    pub(crate) fn record(
        &self,
        consumer: &str,
        route: &Arc<str>,
        day: Date,
        status: u16,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let one = Counts::one(status, bytes_in, bytes_out);
        let shard = &self.shards[(self.hasher.hash_one(consumer) % SHARDS as u64) as usize];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cells) = shard.get_mut(consumer) {
            if let Some(cell) = cells.iter_mut().find(|c| c.day == day && *c.route == **route) {
                cell.counts.add(&one);
                return;
            }
        }
        if !self.take_room() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let cell = Cell { route: route.clone(), day, counts: one };
        match shard.get_mut(consumer) {
            Some(cells) => cells.push(cell),
            None => {
                shard.insert(consumer.to_string(), vec![cell]);
            }
        }
    }

    fn take_room(&self) -> bool {
        let pending = self.pending.load(Ordering::Relaxed);
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n + pending < self.limit).then_some(n + 1))
            .is_ok()
    }

    /// Everything gathered since the last take.
    pub(crate) fn take(&self) -> Gathered {
        let mut out = Vec::with_capacity(self.held.load(Ordering::Relaxed));
        for shard in self.shards.iter() {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()));
            let mut n = 0;
            for (consumer, cells) in taken {
                n += cells.len();
                for cell in cells {
                    out.push((consumer.clone(), cell.route, cell.day, cell.counts));
                }
            }
            self.held.fetch_sub(n, Ordering::Relaxed);
        }
        out
    }

    /// Records the flusher holds unwritten (they count against the bound).
    pub(crate) fn set_pending(&self, records: usize) {
        self.pending.store(records, Ordering::Relaxed);
    }

    /// Requests not recorded because the bound was reached.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    /// Records held now (not yet taken).
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::calendar::parse_day;

    #[test]
    fn requests_add_up_per_consumer_route_and_day() {
        let meter = UsageMeter::new(100);
        let (orders, users): (Arc<str>, Arc<str>) = ("/orders".into(), "/users".into());
        let (d1, d2) = (parse_day("2026-12-01").expect("day"), parse_day("2026-12-02").expect("day"));
        meter.record("acme", &orders, d1, 200, 10, 100);
        meter.record("acme", &orders, d1, 404, 5, 20);
        meter.record("acme", &users, d1, 500, 0, 7);
        meter.record("acme", &orders, d2, 201, 1, 1);
        meter.record("globex", &orders, d1, 302, 0, 0);
        assert_eq!(meter.held(), 4);
        let mut taken = meter.take();
        taken.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        let rows: Vec<(&str, &str, String, [u64; 6])> =
            taken.iter().map(|(c, r, d, n)| (c.as_str(), &**r, d.to_string(), n.values())).collect();
        assert_eq!(
            rows,
            [
                ("acme", "/orders", "2026-12-01".to_string(), [1, 0, 1, 0, 15, 120]),
                ("acme", "/orders", "2026-12-02".to_string(), [1, 0, 0, 0, 1, 1]),
                ("acme", "/users", "2026-12-01".to_string(), [0, 0, 0, 1, 0, 7]),
                ("globex", "/orders", "2026-12-01".to_string(), [0, 1, 0, 0, 0, 0]),
            ]
        );
        assert_eq!(meter.held(), 0);
        assert!(meter.take().is_empty());
    }

    #[test]
    fn the_bound_counts_what_it_drops_and_includes_the_flushers_records() {
        let meter = UsageMeter::new(3);
        let route: Arc<str> = "/".into();
        let day = parse_day("2026-12-01").expect("day");
        for i in 0..5 {
            meter.record(&format!("c{i}"), &route, day, 200, 0, 0);
        }
        meter.record("c0", &route, day, 200, 0, 0);
        assert_eq!((meter.held(), meter.dropped()), (3, 2), "known records still add up");
        assert_eq!(meter.take().len(), 3);
        meter.set_pending(2);
        meter.record("x", &route, day, 200, 0, 0);
        meter.record("y", &route, day, 200, 0, 0);
        assert_eq!((meter.held(), meter.dropped()), (1, 3));
    }
}
