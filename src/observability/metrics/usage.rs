//! Usage tracking's families (docs/plans.md "Metrics"): records dropped, flushes, records
//! pending.

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The usage families.
#[derive(Debug, Clone)]
pub(crate) struct UsageMetrics {
    /// `siger_usage_dropped_total`: requests not recorded (the bound between flushes).
    pub(crate) dropped: IntCounter,
    /// `siger_usage_flushes_total{result}`: `ok`, `error`.
    flushes: IntCounterVec,
    /// `siger_usage_pending_records`: records written to no store yet.
    pending: IntGauge,
}

#[allow(clippy::expect_used)]
impl Default for UsageMetrics {
    fn default() -> Self {
        // Names and labels are constants: they are valid.
        UsageMetrics {
            dropped: IntCounter::new(
                "siger_usage_dropped_total",
                "Requests not recorded in usage because the records held between flushes reached their bound",
            )
            .expect("valid metric"),
            flushes: IntCounterVec::new(
                Opts::new("siger_usage_flushes_total", "Usage flushes, by result"),
                &["result"],
            )
            .expect("valid metric"),
            pending: IntGauge::new("siger_usage_pending_records", "Usage records not yet written to the store")
                .expect("valid metric"),
        }
    }
}

impl UsageMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        let metrics = UsageMetrics::default();
        for collector in metrics.collectors() {
            // Names are static and unique: registration cannot fail.
            let _ = registry.register(collector);
        }
        metrics
    }

    /// The families, for a registry.
    pub(crate) fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![Box::new(self.dropped.clone()), Box::new(self.flushes.clone()), Box::new(self.pending.clone())]
    }

    /// A flush ended (`failed` or not) with `pending_records` written to no store yet.
    pub(crate) fn flushed(&self, failed: bool, pending_records: usize) {
        self.flushes.with_label_values(&[if failed { "error" } else { "ok" }]).inc();
        self.pending.set(pending_records as i64);
    }
}
