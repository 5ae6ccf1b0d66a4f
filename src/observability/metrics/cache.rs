//! The response cache: requests by result, and what it holds.

use super::{counter_vec, gauge};
use prometheus::{IntCounterVec, IntGauge, Registry};

/// The cache families.
#[derive(Clone)]
pub(crate) struct CacheMetrics {
    pub(crate) requests: IntCounterVec,
    bytes: IntGauge,
    entries: IntGauge,
}

impl CacheMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        CacheMetrics {
            requests: counter_vec(
                registry,
                "siger_cache_requests_total",
                "Requests on caching routes by route and result (hit, miss, stale, bypass)",
                &["route", "result"],
            ),
            bytes: gauge(registry, "siger_cache_bytes", "Bytes the response cache holds (bounded by cache.max_memory)"),
            entries: gauge(registry, "siger_cache_entries", "Responses the cache holds"),
        }
    }

    /// The cache's size.
    pub(crate) fn set_usage(&self, bytes: usize, entries: usize) {
        self.bytes.set(bytes as i64);
        self.entries.set(entries as i64);
    }
}
