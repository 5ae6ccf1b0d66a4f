//! Usage tracking (issue 29; docs/plans.md "Usage"): per consumer × route × day, requests by status
//! class and bytes in and out, kept `usage.retention`.
//!
//! The request path only adds to memory ([`meter`]); [`flush`] writes in batches every
//! `usage.flush_interval`, at shutdown and before an upgrade hands over, exactly once per
//! gateway ([`store`]: local, or the rate limiter's Redis through `quota::scripts::Scripts`). Reading:
//! [`query`] (admin `GET /usage`, JSON or CSV), [`report`] (`siger usage`), [`view`] (the status
//! page's usage section, with [`minutes`]: requests per route over the last hour).
//!
//! Not wired yet: the proxy's logging phase calls [`meter::UsageMeter::record`] and
//! [`minutes::RouteMinutes::record`]; see docs/plans.md "Wiring".

pub(crate) mod flush;
pub(crate) mod meter;
pub(crate) mod minutes;
pub(crate) mod query;
pub(crate) mod record;
pub mod report;
pub(crate) mod store;
#[cfg(test)]
mod tests;
pub(crate) mod view;

pub use report::command;

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

/// The usage families (registered into the process registry by the wiring).
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
    /// The families, for the process registry.
    pub(crate) fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![Box::new(self.dropped.clone()), Box::new(self.flushes.clone()), Box::new(self.pending.clone())]
    }

    fn report(&self, flushed: &flush::Flushed, pending_records: usize) {
        self.flushes.with_label_values(&[if flushed.failed { "error" } else { "ok" }]).inc();
        self.pending.set(pending_records as i64);
    }
}
