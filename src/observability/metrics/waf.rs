//! Request inspection: inspected requests that matched rules.

use super::counter_vec;
use prometheus::{IntCounterVec, Registry};

/// The request inspection family.
#[derive(Clone)]
pub(crate) struct WafMetrics {
    /// Inspected requests something matched, by route and action (`block`: refused,
    /// `detect`: forwarded).
    pub(crate) matches: IntCounterVec,
}

impl WafMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        WafMetrics {
            matches: counter_vec(
                registry,
                "siger_waf_matches_total",
                "Inspected requests that matched rules, by route and action (block: refused, detect: forwarded)",
                &["route", "action"],
            ),
        }
    }
}
