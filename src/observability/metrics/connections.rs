//! Client connections: open, refused at the bounds, evicted, and the request deadlines.

use super::{counter, counter_vec, gauge};
use prometheus::{IntCounter, IntGauge, Registry};

/// Counters of what the connection bounds and deadlines did.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionMetrics {
    pub(crate) open: IntGauge,
    pub(crate) refused_total: IntCounter,
    pub(crate) refused_per_ip: IntCounter,
    pub(crate) evicted: IntCounter,
    pub(crate) header_timeouts: IntCounter,
    pub(crate) body_timeouts: IntCounter,
    /// Connections closed because a write to the client made no progress for `send_timeout`.
    pub(crate) send_timeouts: IntCounter,
    /// Heads answered 431 before a session: past `limits.max_header_bytes` while arriving, or
    /// with more header fields than Pingora parses.
    pub(crate) heads_too_large: IntCounter,
}

impl ConnectionMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        let refused = counter_vec(
            registry,
            "siger_connections_refused_total",
            "Client connections closed at once by limits.max_connections or max_connections_per_ip",
            &["reason"],
        );
        let timeouts = counter_vec(
            registry,
            "siger_request_timeouts_total",
            "Requests whose head or body missed limits.header_timeout or body_timeout (phase header, body), and client connections closed when a write made no progress for limits.send_timeout (phase send)",
            &["phase"],
        );
        ConnectionMetrics {
            open: gauge(registry, "siger_connections_open", "Client connections open"),
            refused_total: refused.with_label_values(&["max_connections"]),
            refused_per_ip: refused.with_label_values(&["max_connections_per_ip"]),
            evicted: counter(
                registry,
                "siger_connections_evicted_total",
                "Idle keep-alive connections and slow heads closed to make room at limits.max_connections",
            ),
            header_timeouts: timeouts.with_label_values(&["header"]),
            body_timeouts: timeouts.with_label_values(&["body"]),
            send_timeouts: timeouts.with_label_values(&["send"]),
            heads_too_large: counter(
                registry,
                "siger_request_heads_too_large_total",
                "Request heads answered 431 before a session: past limits.max_header_bytes while still arriving, or with more than 256 header fields",
            ),
        }
    }
}
