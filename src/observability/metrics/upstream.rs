//! Upstream attempts and backends: errors, backends by health, retries and their budget,
//! outlier ejections, circuit breakers, aggregation parts.

use super::{counter_vec, gauge_vec};
use prometheus::{IntCounterVec, IntGaugeVec, Registry};

/// The upstream families.
#[derive(Clone)]
pub(crate) struct UpstreamMetrics {
    pub(crate) errors: IntCounterVec,
    pub(crate) backends: IntGaugeVec,
    pub(crate) retries: IntCounterVec,
    pub(crate) retry_budget_exhausted: IntCounterVec,
    pub(crate) ejections: IntCounterVec,
    pub(crate) ejected: IntGaugeVec,
    pub(crate) circuit_state: IntGaugeVec,
    pub(crate) circuit_refusals: IntCounterVec,
    pub(crate) aggregate_parts: IntCounterVec,
}

impl UpstreamMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        UpstreamMetrics {
            errors: counter_vec(
                registry,
                "siger_upstream_errors_total",
                "Failed upstream attempts by service and kind",
                &["service", "kind"],
            ),
            backends: gauge_vec(
                registry,
                "siger_backends",
                "Backends per service and health state",
                &["service", "state"],
            ),
            retries: counter_vec(
                registry,
                "siger_upstream_retries_total",
                "Upstream attempts retried on another backend, by service and reason (connect, reset, status)",
                &["service", "reason"],
            ),
            retry_budget_exhausted: counter_vec(
                registry,
                "siger_retry_budget_exhausted_total",
                "Retries not made because the service's retry budget was spent",
                &["service"],
            ),
            ejections: counter_vec(
                registry,
                "siger_backend_ejections_total",
                "Backends ejected by outlier detection",
                &["service"],
            ),
            ejected: gauge_vec(registry, "siger_backends_ejected", "Backends ejected now", &["service"]),
            circuit_state: gauge_vec(
                registry,
                "siger_circuit_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open",
                &["service"],
            ),
            circuit_refusals: counter_vec(
                registry,
                "siger_circuit_refusals_total",
                "Requests answered 503 by a circuit breaker, by reason (open, max_in_flight)",
                &["service", "reason"],
            ),
            aggregate_parts: counter_vec(
                registry,
                "siger_aggregate_parts_total",
                "Parts of aggregation routes by route, part and result (ok, timeout, unavailable, status, not_json)",
                &["route", "part", "result"],
            ),
        }
    }

    /// A service's ejected-backend count and breaker state (the state only with a breaker).
    pub(crate) fn set_resilience(&self, service: &str, ejected: usize, circuit: Option<u8>) {
        self.ejected.with_label_values(&[service]).set(ejected as i64);
        if let Some(state) = circuit {
            self.circuit_state.with_label_values(&[service]).set(i64::from(state));
        }
    }

    /// A service's backend gauges.
    pub(crate) fn set_backends(&self, service: &str, healthy: usize, unhealthy: usize) {
        self.backends.with_label_values(&[service, "healthy"]).set(healthy as i64);
        self.backends.with_label_values(&[service, "unhealthy"]).set(unhealthy as i64);
    }
}
