//! Requests per route and minute over the last hour, for the status page's chart: one ring
//! of 60 counters per route, in memory, on this gateway. Each counter packs its minute and its
//! count in one atomic, so a request costs one compare-and-swap and a counter from an hour ago
//! is never read as this minute's.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const SLOTS: usize = 60;
const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// One route's ring.
#[derive(Debug)]
struct Ring {
    label: Arc<str>,
    slots: [AtomicU64; SLOTS],
}

/// The last hour of every route of one configuration, by route index.
#[derive(Debug, Default)]
pub(crate) struct RouteMinutes {
    routes: Vec<Ring>,
}

/// One route's last hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RouteSeries {
    /// The route's label.
    pub(crate) route: String,
    /// Requests per minute, the oldest first; the last is the minute in progress.
    pub(crate) per_minute: Vec<u64>,
    /// Their sum.
    pub(crate) total: u64,
}

fn minute_of(now_ms: i64) -> u64 {
    (now_ms.max(0) / 60_000) as u64
}

impl RouteMinutes {
    /// Rings for routes labelled `labels` (in route order), keeping the counts of `previous`
    /// for labels it had (a reload does not blank the chart).
    pub(crate) fn new(labels: &[Arc<str>], previous: Option<&RouteMinutes>) -> Self {
        let routes = labels
            .iter()
            .map(|label| {
                let old = previous.and_then(|p| p.routes.iter().find(|r| r.label == *label));
                Ring {
                    label: label.clone(),
                    slots: std::array::from_fn(|i| {
                        AtomicU64::new(old.map_or(0, |r| r.slots[i].load(Ordering::Relaxed)))
                    }),
                }
            })
            .collect();
        RouteMinutes { routes }
    }

    /// Count one request of route `index` at `now_ms`.
    pub(crate) fn record(&self, index: usize, now_ms: i64) {
        let Some(ring) = self.routes.get(index) else { return };
        let minute = minute_of(now_ms) & COUNT_MASK;
        let slot = &ring.slots[(minute % SLOTS as u64) as usize];
        let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
            Some(if packed >> COUNT_BITS == minute {
                packed + u64::from(packed & COUNT_MASK < COUNT_MASK)
            } else {
                (minute << COUNT_BITS) | 1
            })
        });
    }

    /// The last 60 minutes of routes with any request in them, busiest first.
    pub(crate) fn series(&self, now_ms: i64) -> Vec<RouteSeries> {
        let now = minute_of(now_ms) & COUNT_MASK;
        let mut out: Vec<RouteSeries> = self
            .routes
            .iter()
            .map(|ring| {
                let per_minute: Vec<u64> = (0..SLOTS as u64)
                    .rev()
                    .map(|ago| {
                        let minute = now.wrapping_sub(ago) & COUNT_MASK;
                        let packed = ring.slots[(minute % SLOTS as u64) as usize].load(Ordering::Relaxed);
                        if packed >> COUNT_BITS == minute {
                            packed & COUNT_MASK
                        } else {
                            0
                        }
                    })
                    .collect();
                RouteSeries { route: ring.label.to_string(), total: per_minute.iter().sum(), per_minute }
            })
            .filter(|s| s.total > 0)
            .collect();
        out.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.route.cmp(&b.route)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_hour_by_minute_and_nothing_older() {
        let labels: Vec<Arc<str>> = vec!["/orders".into(), "/users".into(), "/idle".into()];
        let minutes = RouteMinutes::new(&labels, None);
        let t0 = 1_796_083_200_000; // a minute boundary
        for _ in 0..3 {
            minutes.record(0, t0);
        }
        minutes.record(0, t0 + 59_999);
        minutes.record(0, t0 + 60_000);
        minutes.record(1, t0 + 120_000);
        minutes.record(7, t0); // no such route: ignored
        let series = minutes.series(t0 + 120_000);
        assert_eq!(
            series.iter().map(|s| (s.route.as_str(), s.total)).collect::<Vec<_>>(),
            [("/orders", 5), ("/users", 1)]
        );
        let orders = &series[0].per_minute;
        assert_eq!(orders.len(), 60);
        assert_eq!(&orders[57..], &[4, 1, 0]);
        assert_eq!(series[1].per_minute[59], 1, "the minute in progress is last");
        // An hour later the same slots hold nothing from before.
        assert!(minutes.series(t0 + 3_600_000 + 120_000).is_empty());
        minutes.record(0, t0 + 3_600_000);
        let series = minutes.series(t0 + 3_600_000);
        assert_eq!(series[0].per_minute[59], 1, "the slot of an hour ago starts over (it held 4)");
        assert_eq!(series[0].per_minute[0], 1, "59 minutes ago is still in the hour");
    }

    #[test]
    fn a_reload_keeps_the_counts_of_routes_it_keeps() {
        let old = RouteMinutes::new(&["/a".into(), "/b".into()], None);
        let t0 = 1_796_083_200_000;
        old.record(0, t0);
        old.record(1, t0);
        old.record(1, t0);
        let new = RouteMinutes::new(&["/b".into(), "/c".into()], Some(&old));
        let series = new.series(t0);
        assert_eq!(series.iter().map(|s| (s.route.as_str(), s.total)).collect::<Vec<_>>(), [("/b", 2)]);
    }
}
