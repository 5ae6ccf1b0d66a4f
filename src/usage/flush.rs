//! Writing usage in batches: every `usage.flush_interval`, at shutdown and before an upgraded
//! process takes over, the flusher takes what the meter gathered and writes it as parts (one
//! per consumer × day, one per day's index). A part the store refused stays pending, in order
//! behind any older part of the same key, and is retried with its own sequence number by the
//! next flush (see `store`: the retry of a write Redis did apply is skipped, not doubled).
//! Pending parts count against the meter's bound, so an outage costs memory up to the bound
//! and then requests counted in `siger_usage_dropped_total`.

use super::meter::UsageMeter;
use super::store::{parts, Part, Target, UsageStore};
use super::UsageMetrics;
use crate::lifecycle::CleanupGuard;
use crate::quota::Clock;
use futures::StreamExt;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Parts written at once (the store's connections pipeline them).
const CONCURRENCY: usize = 16;

/// How long the flush at shutdown keeps retrying before it reports what it could not write.
const FINAL_FLUSH: Duration = Duration::from_secs(5);

/// The result of one flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Flushed {
    /// Parts written (or found already written).
    pub(crate) written: usize,
    /// Parts still pending.
    pub(crate) pending: usize,
    /// Whether a write failed.
    pub(crate) failed: bool,
}

/// Takes the meter's records and writes them.
/// Where and how often a flusher writes: the configuration in force says, and a reload may
/// change both (the store's records already pending go to the new one).
#[derive(Debug)]
pub(crate) struct FlushTarget {
    /// The store.
    pub(crate) store: Arc<UsageStore>,
    /// `usage.flush_interval`.
    pub(crate) interval: Duration,
}

#[derive(Debug)]
pub(crate) struct Flusher {
    target: Option<Arc<arc_swap::ArcSwap<FlushTarget>>>,
    meter: Arc<UsageMeter>,
    store: Arc<UsageStore>,
    /// This process's name in the store's sequence fields.
    writer: String,
    seq: u64,
    pending: BTreeMap<Target, VecDeque<Part>>,
    clock: Arc<dyn Clock>,
    metrics: UsageMetrics,
    reported_drops: u64,
}

impl Flusher {
    /// A flusher of `meter` into `store` (both kept across reloads by the caller).
    pub(crate) fn new(
        meter: Arc<UsageMeter>,
        store: Arc<UsageStore>,
        clock: Arc<dyn Clock>,
        metrics: UsageMetrics,
    ) -> Self {
        // Random per process: an upgraded process, or a restarted one, never reuses the
        // sequence numbers of the one before.
        let writer = hex::encode(rand::random::<[u8; 8]>());
        Flusher {
            target: None,
            meter,
            store,
            writer,
            seq: 0,
            pending: BTreeMap::new(),
            clock,
            metrics,
            reported_drops: 0,
        }
    }

    /// Records pending in the flusher.
    fn pending_records(&self) -> usize {
        self.pending.values().flatten().map(|p| p.records).sum()
    }

    /// Write what was gathered since the last flush, after what is pending.
    /// Write where `target` says, as often as it says, from now on.
    pub(crate) fn following(mut self, target: Arc<arc_swap::ArcSwap<FlushTarget>>) -> Self {
        self.target = Some(target);
        self
    }

    pub(crate) async fn flush(&mut self) -> Flushed {
        if let Some(target) = &self.target {
            self.store = target.load().store.clone();
        }
        let gathered = self.meter.take();
        if !gathered.is_empty() {
            self.seq += 1;
            for part in parts(gathered, self.seq) {
                self.pending.entry(part.target.clone()).or_default().push_back(part);
            }
        }
        let mut result = Flushed::default();
        // Rounds: the oldest part of every key at once; a key whose write failed waits for the
        // next flush, and so does every key not reached once a write failed (the store is
        // likely down: no point in a timeout per key).
        while !result.failed {
            let fronts: Vec<Part> = self.pending.values().filter_map(|q| q.front().cloned()).collect();
            if fronts.is_empty() {
                break;
            }
            let now_ms = self.clock.now_ms();
            let (store, writer) = (self.store.clone(), self.writer.clone());
            let mut writes = futures::stream::iter(fronts)
                .map(|part| {
                    let (store, writer) = (store.clone(), writer.clone());
                    async move {
                        let done = store.apply(&writer, &part, now_ms).await;
                        (part.target, done)
                    }
                })
                .buffer_unordered(CONCURRENCY);
            while let Some((target, done)) = writes.next().await {
                match done {
                    Ok(_) => {
                        result.written += 1;
                        if let Some(queue) = self.pending.get_mut(&target) {
                            queue.pop_front();
                            if queue.is_empty() {
                                self.pending.remove(&target);
                            }
                        }
                    }
                    Err(e) => {
                        if !result.failed {
                            log::warn!("usage: writing to the store failed ({e}); retried at the next flush");
                        }
                        result.failed = true;
                        break;
                    }
                }
            }
        }
        result.pending = self.pending.values().map(VecDeque::len).sum();
        let records = self.pending_records();
        self.meter.set_pending(records);
        self.metrics.flushed(result.failed, records);
        let dropped = self.meter.dropped();
        self.metrics.dropped.inc_by(dropped.saturating_sub(self.reported_drops));
        self.reported_drops = dropped;
        result
    }

    /// Flush every `interval` until `stop` turns true; then flush until no request is in
    /// flight (each finished request's usage is written, not only those before the signal),
    /// and once more, holding the process's exit (`exit`) until done (bounded). `exit` is taken
    /// before the process can be signalled: taken here, the drain could see nothing pending and
    /// exit between the signal and this loop noticing it.
    pub(crate) async fn run(mut self, interval: Duration, mut stop: watch::Receiver<bool>, exit: Option<CleanupGuard>) {
        while !*stop.borrow() {
            // A followed target's interval is read each time: a reload changes it.
            let wait = self.target.as_ref().map_or(interval, |t| t.load().interval);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {
                    self.flush().await;
                }
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        while exit.as_ref().is_some_and(|e| e.in_flight() > 0) {
            self.flush().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let deadline = tokio::time::Instant::now() + FINAL_FLUSH;
        loop {
            let flushed = self.flush().await;
            if flushed.pending == 0 {
                log::info!("usage: written before exit");
                return;
            }
            if tokio::time::Instant::now() + Duration::from_millis(500) > deadline {
                let requests: u64 = self
                    .pending
                    .iter()
                    .filter(|(t, _)| matches!(t, Target::Index(_)))
                    .flat_map(|(_, q)| q.iter().flat_map(|p| p.adds.iter().map(|(_, n)| *n)))
                    .sum();
                log::error!(
                    "usage: {} record(s) of {requests} request(s) could not be written before exit",
                    self.pending_records()
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
