//! Rate limits: `siger_rate_limited_total`, the shared store and the local key budget.

use super::{counter, counter_vec, gauge, gauge_vec};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

/// The rate-limit families.
#[derive(Clone)]
pub(crate) struct LimitMetrics {
    pub(crate) rate_limited: IntCounterVec,
    /// Rate-limit checks the shared store could not answer (`on_store_error` applied).
    pub(crate) store_errors: IntCounter,
    tracked_keys: IntGauge,
    redis_node: IntGaugeVec,
    overflow: IntCounter,
}

impl LimitMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        LimitMetrics {
            rate_limited: counter_vec(
                registry,
                "siger_rate_limited_total",
                "Requests refused by a rate limit",
                &["route"],
            ),
            store_errors: counter(
                registry,
                "siger_rate_limit_store_errors_total",
                "Rate-limit checks the shared store (Redis) could not answer",
            ),
            tracked_keys: gauge(
                registry,
                "siger_rate_limit_tracked_keys",
                "Client keys the local rate-limit tables count exactly",
            ),
            redis_node: gauge_vec(
                registry,
                "siger_rate_limit_redis_node",
                "1 for the Redis node shared rate limits use now: the server, the master Sentinel named, or `cluster`",
                &["node"],
            ),
            overflow: counter(
                registry,
                "siger_rate_limit_keys_overflow_total",
                "Local rate-limit checks counted approximately because the key budget was spent",
            ),
        }
    }

    /// Which Redis node shared limits use now.
    pub(crate) fn set_redis_node(&self, node: Option<&str>) {
        self.redis_node.reset();
        if let Some(node) = node {
            self.redis_node.with_label_values(&[node]).set(1);
        }
    }

    /// Keys tracked now, and the total of checks that overflowed the key budget so far.
    pub(crate) fn set_usage(&self, tracked: usize, overflowed: u64) {
        self.tracked_keys.set(tracked as i64);
        let seen = self.overflow.get();
        if overflowed > seen {
            self.overflow.inc_by(overflowed - seen);
        }
    }
}
