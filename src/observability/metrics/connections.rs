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
    /// PROXY header rejections.
    pub(crate) proxy_protocol: ProxyProtocolMetrics,
}

/// Connections closed without a valid PROXY header, by reason.
#[derive(Debug, Clone)]
pub(crate) struct ProxyProtocolMetrics {
    /// The opening bytes were not a valid header.
    pub(crate) invalid: IntCounter,
    /// The client closed (or reset) the connection before its header was whole (a TCP health
    /// check that connects and closes counts here).
    pub(crate) closed: IntCounter,
    /// No header within `limits.idle_timeout`, or not whole within `header_timeout` of its
    /// first byte.
    pub(crate) timed_out: IntCounter,
}

impl ProxyProtocolMetrics {
    fn register(registry: &Registry) -> Self {
        let rejected = counter_vec(
            registry,
            "siger_proxy_protocol_rejected_total",
            "Connections on proxy_protocol listeners closed without a valid PROXY header: invalid (other \
             bytes, malformed, too long, or a peer outside proxy_protocol_from), closed (the client left \
             first; TCP health checks), timeout (none within limits.idle_timeout, or not whole within \
             header_timeout of its first byte)",
            &["reason"],
        );
        ProxyProtocolMetrics {
            invalid: rejected.with_label_values(&["invalid"]),
            closed: rejected.with_label_values(&["closed"]),
            timed_out: rejected.with_label_values(&["timeout"]),
        }
    }
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
            proxy_protocol: ProxyProtocolMetrics::register(registry),
        }
    }
}
