//! Discovery: failed Consul requests, the age of each discovered service's last sync, and
//! failed DNS look-ups of DNS-backed services.

use super::{counter, counter_vec, gauge_vec};
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Registry};

/// The Consul families.
#[derive(Clone)]
pub(crate) struct ConsulMetrics {
    /// Failed Consul requests.
    pub(crate) errors: IntCounter,
    /// Seconds since the last successful Consul sync, per service.
    pub(crate) sync_age: IntGaugeVec,
    /// Failed DNS look-ups of DNS-backed services, per service.
    pub(crate) dns_lookup_failures: IntCounterVec,
}

impl ConsulMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        ConsulMetrics {
            errors: counter(registry, "siger_consul_errors_total", "Failed Consul requests"),
            sync_age: gauge_vec(
                registry,
                "siger_consul_last_sync_age_seconds",
                "Seconds since the last successful Consul sync",
                &["service"],
            ),
            dns_lookup_failures: counter_vec(
                registry,
                "siger_dns_lookup_failures_total",
                "Failed DNS look-ups of service targets (the last good addresses are kept)",
                &["service"],
            ),
        }
    }

    /// Seconds since Consul last answered for a service.
    pub(crate) fn set_sync_age(&self, service: &str, age: std::time::Duration) {
        self.sync_age.with_label_values(&[service]).set(age.as_secs() as i64);
    }
}
