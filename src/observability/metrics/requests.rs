//! `siger_requests_total`, `siger_request_duration_seconds`, `siger_requests_in_flight`.

use super::{counter_vec, gauge, histogram_vec};
use prometheus::{HistogramVec, IntCounterVec, IntGauge, Registry};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// One series of `siger_requests_total`: route, method, status.
pub(crate) type Series = (String, &'static str, u16);

/// The request families.
#[derive(Clone)]
pub(crate) struct RequestMetrics {
    pub(crate) requests: IntCounterVec,
    /// `(route, method, status)` series of `siger_requests_total` created so far, so a reload
    /// can remove those of routes that are gone.
    pub(crate) series: Arc<Mutex<HashSet<Series>>>,
    pub(crate) durations: HistogramVec,
    pub(crate) in_flight: IntGauge,
}

impl RequestMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        RequestMetrics {
            requests: counter_vec(
                registry,
                "siger_requests_total",
                "Requests answered, by route, method and status",
                &["route", "method", "status"],
            ),
            series: Arc::default(),
            durations: histogram_vec(
                registry,
                "siger_request_duration_seconds",
                "Time from request start to the last response byte",
                &["route"],
            ),
            in_flight: gauge(registry, "siger_requests_in_flight", "Requests being processed"),
        }
    }

    /// Remember a `siger_requests_total` series, so a reload can remove it with its route.
    pub(crate) fn note_series(&self, route: &str, method: &'static str, status: u16) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series.insert((route.to_string(), method, status));
    }

    /// Remove every series of a route that is gone.
    pub(crate) fn forget_route(&self, label: &str) {
        let _ = self.durations.remove_label_values(&[label]);
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series.retain(|(route, method, status)| {
            if route != label {
                return true;
            }
            let _ = self.requests.remove_label_values(&[route.as_str(), method, status.to_string().as_str()]);
            false
        });
    }
}
