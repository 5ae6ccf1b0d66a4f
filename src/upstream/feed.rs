//! The hand-off point between a discovery source (Consul) and a pool: the source publishes the
//! member list it currently believes in, the pool is woken and re-reads it.
//!
//! Push rather than poll: a change reaches the pool as soon as it is published, and nothing
//! runs while nothing changes. The feed knows nothing about Consul; it only records *that* and
//! *when* the source last confirmed its answer (for the sync-age metric).

use crate::config::Target;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Members as published: `None` until the source has said anything (no answer, no state file).
pub(crate) type Members = Option<Arc<Vec<Target>>>;

/// A shared, cloneable handle on one service's dynamic membership.
#[derive(Clone)]
pub(crate) struct MembershipFeed(Arc<Inner>);

struct Inner {
    tx: watch::Sender<Members>,
    created: Instant,
    /// Milliseconds after `created` of the last confirmation + 1 (0 = never).
    synced_ms: AtomicU64,
}

impl std::fmt::Debug for MembershipFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipFeed").field("members", &self.current().map(|m| m.len())).finish()
    }
}

impl Default for MembershipFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl MembershipFeed {
    /// A feed that has not heard anything yet.
    pub(crate) fn new() -> Self {
        let (tx, _) = watch::channel(None);
        MembershipFeed(Arc::new(Inner { tx, created: Instant::now(), synced_ms: AtomicU64::new(0) }))
    }

    /// Replace the member list. Order and duplicates do not matter (an address listed twice
    /// keeps its highest weight). Returns whether the membership changed; the pool is woken
    /// only then.
    pub(crate) fn publish(&self, members: Vec<Target>) -> bool {
        let members = normalize(members);
        self.0.tx.send_if_modified(|current| {
            if current.as_deref() == Some(&members) {
                return false;
            }
            *current = Some(Arc::new(members));
            true
        })
    }

    /// The current member list (`None` = never known).
    pub(crate) fn current(&self) -> Members {
        self.0.tx.borrow().clone()
    }

    /// The source answered successfully (whether or not anything changed).
    pub(crate) fn mark_synced(&self) {
        let ms = self.0.created.elapsed().as_millis() as u64 + 1;
        self.0.synced_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the source last answered, or since start-up when it never has (so an alert
    /// on a large age also fires for a source that never answered).
    pub(crate) fn sync_age(&self) -> Duration {
        let synced = self.0.synced_ms.load(Ordering::Relaxed);
        let since = Duration::from_millis(synced.saturating_sub(1));
        self.0.created.elapsed().saturating_sub(if synced == 0 { Duration::ZERO } else { since })
    }

    /// Whether the source has ever answered.
    #[cfg(test)]
    fn ever_synced(&self) -> bool {
        self.0.synced_ms.load(Ordering::Relaxed) != 0
    }

    /// Identity of the feed (clones share it).
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<Members> {
        self.0.tx.subscribe()
    }
}

/// Sorted by address, one entry per address (highest weight wins).
fn normalize(mut members: Vec<Target>) -> Vec<Target> {
    members.sort_by(|a, b| a.addr.cmp(&b.addr).then(b.weight.cmp(&a.weight)));
    members.dedup_by(|later, first| later.addr == first.addr);
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(port: u16, weight: u32) -> Target {
        Target { addr: format!("127.0.0.1:{port}").parse().expect("addr"), weight }
    }

    #[test]
    fn publish_reports_changes_only() {
        let feed = MembershipFeed::new();
        assert!(feed.current().is_none());
        assert!(feed.publish(vec![t(2, 1), t(1, 1)]));
        assert!(!feed.publish(vec![t(1, 1), t(2, 1)]), "same set in another order");
        assert!(feed.publish(vec![t(1, 1), t(2, 5)]), "weight change");
        assert!(feed.publish(vec![]), "empty is a real answer");
        assert_eq!(feed.current().expect("known").len(), 0);
    }

    #[test]
    fn duplicates_keep_the_highest_weight() {
        let feed = MembershipFeed::new();
        feed.publish(vec![t(1, 2), t(1, 7), t(1, 3)]);
        assert_eq!(*feed.current().expect("known"), vec![t(1, 7)]);
    }

    #[test]
    fn sync_age_counts_from_start_until_first_answer() {
        let feed = MembershipFeed::new();
        assert!(!feed.ever_synced());
        std::thread::sleep(Duration::from_millis(20));
        assert!(feed.sync_age() >= Duration::from_millis(20));
        feed.mark_synced();
        assert!(feed.ever_synced());
        assert!(feed.sync_age() < Duration::from_millis(15));
    }
}
