//! Prometheus series of quotas (docs/plans.md "Metrics"): per plan, never per consumer. A
//! partner program has thousands of consumers; a label per consumer would make every scrape
//! carry all of them forever. Who used what is the usage API's answer, not the scrape's.
//!
//! A family of the process's [`Metrics`](super::Metrics), registered with the others;
//! [`PlanCounters`] are the children of one configuration's plans, resolved once so a check
//! touches only an atomic.

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// The outcome labels of `siger_quota_requests_total`.
pub(crate) const RESULTS: [&str; 4] = ["allowed", "exceeded", "store_error_allowed", "store_error_denied"];

/// The quota families.
#[derive(Debug, Clone)]
pub(crate) struct QuotaMetrics {
    /// `siger_quota_requests_total{plan, result}`.
    requests: IntCounterVec,
    /// `siger_quota_units_total{plan}`: quota units counted (requests × `quota_cost`).
    units: IntCounterVec,
    /// `siger_quota_unknown_plan_total`: requests whose claim named a plan the configuration
    /// lacks (the name itself is logged, not labelled).
    pub(crate) unknown_plan: IntCounter,
}

#[allow(clippy::expect_used)]
impl Default for QuotaMetrics {
    fn default() -> Self {
        // Names and labels are constants: they are valid.
        QuotaMetrics {
            requests: IntCounterVec::new(
                Opts::new("siger_quota_requests_total", "Requests checked against a plan's quota, by plan and result"),
                &["plan", "result"],
            )
            .expect("valid metric"),
            units: IntCounterVec::new(
                Opts::new("siger_quota_units_total", "Quota units counted (requests times quota_cost), by plan"),
                &["plan"],
            )
            .expect("valid metric"),
            unknown_plan: IntCounter::new(
                "siger_quota_unknown_plan_total",
                "Requests whose plan claim named a plan the configuration lacks",
            )
            .expect("valid metric"),
        }
    }
}

impl QuotaMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        let metrics = QuotaMetrics::default();
        for collector in metrics.collectors() {
            // Names are static and unique: registration cannot fail.
            let _ = registry.register(collector);
        }
        metrics
    }

    /// The families, for a registry.
    pub(crate) fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![Box::new(self.requests.clone()), Box::new(self.units.clone()), Box::new(self.unknown_plan.clone())]
    }

    /// The children of `plan` (every result pre-created, so each exports 0 from the start).
    pub(crate) fn plan(&self, plan: &str) -> PlanCounters {
        PlanCounters {
            results: RESULTS.map(|result| self.requests.with_label_values(&[plan, result])),
            units: self.units.with_label_values(&[plan]),
        }
    }

    /// Remove the series of plans a reload removed.
    pub(crate) fn forget(&self, plan: &str) {
        for result in RESULTS {
            let _ = self.requests.remove_label_values(&[plan, result]);
        }
        let _ = self.units.remove_label_values(&[plan]);
    }
}

/// One plan's counters.
#[derive(Debug, Clone)]
pub(crate) struct PlanCounters {
    results: [IntCounter; 4],
    units: IntCounter,
}

/// What happened to one request at its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// Within the quota.
    Allowed,
    /// Beyond it: 429.
    Exceeded,
    /// The store failed and `on_store_error: allow` let it through.
    StoreErrorAllowed,
    /// The store failed and `on_store_error: deny` refused it: 503.
    StoreErrorDenied,
}

impl PlanCounters {
    /// Count one request (and its `cost` in units when it was counted).
    pub(crate) fn count(&self, what: Counted, cost: u64) {
        let index = match what {
            Counted::Allowed => 0,
            Counted::Exceeded => 1,
            Counted::StoreErrorAllowed => 2,
            Counted::StoreErrorDenied => 3,
        };
        self.results[index].inc();
        if what == Counted::Allowed {
            self.units.inc_by(cost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_per_plan_and_removable() {
        let metrics = QuotaMetrics::default();
        let registry = prometheus::Registry::new();
        for c in metrics.collectors() {
            registry.register(c).expect("registers");
        }
        let free = metrics.plan("free");
        free.count(Counted::Allowed, 3);
        free.count(Counted::Exceeded, 3);
        metrics.plan("pro").count(Counted::StoreErrorDenied, 1);
        let text = {
            let mut out = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut out).expect("text");
            String::from_utf8(out).expect("utf-8")
        };
        assert!(text.contains("siger_quota_requests_total{plan=\"free\",result=\"allowed\"} 1"), "{text}");
        assert!(text.contains("siger_quota_requests_total{plan=\"free\",result=\"store_error_allowed\"} 0"), "{text}");
        assert!(text.contains("siger_quota_units_total{plan=\"free\"} 3"), "{text}");
        assert!(text.contains("siger_quota_requests_total{plan=\"pro\",result=\"store_error_denied\"} 1"), "{text}");
        assert!(!text.contains("consumer"), "never a consumer label");
        metrics.forget("pro");
        let families = registry.gather();
        let series: usize = families.iter().map(|f| f.get_metric().len()).sum();
        assert_eq!(series, RESULTS.len() + 1 + 1, "free's four results, its units and the unknown-plan counter");
    }
}
