//! Each consumer's quota use as this gateway last saw it, for the status page: every check
//! returns the consumer's count in its window (exact across gateways with the shared store),
//! so the latest one is what the bar shows. Bounded: the consumers seen most recently, at most
//! [`BOARD_CONSUMERS`]; a page shows the fullest of them.

use super::store::Decision;
use crate::config::CalendarWindow;
use lru::LruCache;
use serde::Serialize;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// Consumers the board remembers.
pub(crate) const BOARD_CONSUMERS: usize = 10_000;
const SHARDS: usize = 8;

/// One consumer's quota use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct QuotaUse {
    /// The consumer.
    pub(crate) consumer: String,
    /// Its plan.
    pub(crate) plan: String,
    /// Counted in the window.
    pub(crate) used: u64,
    /// The quota.
    pub(crate) limit: u64,
    /// `hour`, `day`, `week`, `month`.
    pub(crate) per: &'static str,
    /// When the window ends (RFC 3339).
    pub(crate) resets_at: String,
}

#[derive(Debug, Clone)]
struct Seen {
    plan: Arc<str>,
    used: u64,
    limit: u64,
    per: CalendarWindow,
    end: i64,
}

/// The board.
#[derive(Debug)]
pub(crate) struct QuotaBoard {
    shards: Box<[Mutex<LruCache<String, Seen>>]>,
    hasher: RandomState,
}

impl Default for QuotaBoard {
    fn default() -> Self {
        Self::new(BOARD_CONSUMERS)
    }
}

impl QuotaBoard {
    /// A board of about `consumers` entries.
    pub(crate) fn new(consumers: usize) -> Self {
        let per_shard = NonZeroUsize::new(consumers.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN);
        QuotaBoard {
            shards: (0..SHARDS).map(|_| Mutex::new(LruCache::new(per_shard))).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Note a check's answer (allocates only for a consumer not on the board).
    pub(crate) fn note(&self, consumer: &str, plan: &Arc<str>, d: &Decision) {
        let shard = &self.shards[(self.hasher.hash_one(consumer) % SHARDS as u64) as usize];
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        let seen = Seen { plan: plan.clone(), used: d.used, limit: d.limit, per: d.per, end: d.span.end };
        match shard.get_mut(consumer) {
            Some(entry) => *entry = seen,
            None => {
                shard.put(consumer.to_string(), seen);
            }
        }
    }

    /// The `n` consumers closest to their quota whose window is still running at `now_ms`,
    /// fullest first (ties: most used, then by name).
    pub(crate) fn fullest(&self, now_ms: i64, n: usize) -> Vec<QuotaUse> {
        let now = now_ms.div_euclid(1000);
        let mut all: Vec<(String, Seen)> = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            all.extend(shard.iter().filter(|(_, s)| s.end > now).map(|(c, s)| (c.clone(), s.clone())));
        }
        // used/limit compared as fractions without floats: a/b > c/d ⇔ a·d > c·b.
        all.sort_by(|(ca, a), (cb, b)| {
            let (left, right) = (u128::from(a.used) * u128::from(b.limit), u128::from(b.used) * u128::from(a.limit));
            right.cmp(&left).then(b.used.cmp(&a.used)).then(ca.cmp(cb))
        });
        all.into_iter()
            .take(n)
            .map(|(consumer, s)| QuotaUse {
                consumer,
                plan: s.plan.to_string(),
                used: s.used,
                limit: s.limit,
                per: s.per.name(),
                resets_at: super::calendar::rfc3339(s.end),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuotaSettings;
    use crate::quota::calendar::{at_utc, span};

    fn decision(used: u64, limit: u64, now: i64) -> Decision {
        let quota = QuotaSettings { requests: limit, per: CalendarWindow::Day };
        let span = span(quota.per, now);
        Decision {
            allowed: true,
            limit,
            used,
            remaining: limit - used,
            reset: span.seconds_left(now),
            span,
            per: quota.per,
        }
    }

    #[test]
    fn fullest_first_latest_answer_wins_ended_windows_drop_out() {
        let board = QuotaBoard::new(100);
        let now = at_utc("2026-12-10T10:00:00");
        let (free, pro): (Arc<str>, Arc<str>) = ("free".into(), "pro".into());
        board.note("acme", &free, &decision(10, 100, now));
        board.note("globex", &pro, &decision(900, 1000, now));
        board.note("initech", &free, &decision(50, 100, now));
        board.note("acme", &free, &decision(60, 100, now));
        let names = |v: Vec<QuotaUse>| v.into_iter().map(|u| (u.consumer, u.used)).collect::<Vec<_>>();
        assert_eq!(
            names(board.fullest(now, 10)),
            [("globex".to_string(), 900), ("acme".to_string(), 60), ("initech".to_string(), 50)]
        );
        assert_eq!(board.fullest(now, 1)[0].resets_at, "2026-12-11T00:00:00Z");
        assert!(board.fullest(at_utc("2026-12-11T00:00:00"), 10).is_empty(), "windows that ended show nothing");
    }

    #[test]
    fn the_board_is_bounded() {
        let board = QuotaBoard::new(16);
        let now = at_utc("2026-12-10T10:00:00");
        let plan: Arc<str> = "free".into();
        for i in 0..1000 {
            board.note(&format!("c{i}"), &plan, &decision(1, 10, now));
        }
        assert!(board.fullest(now, usize::MAX).len() <= 16);
    }
}
