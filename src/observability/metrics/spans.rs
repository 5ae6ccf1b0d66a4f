//! `siger_trace_spans_exported_total` and `siger_trace_spans_dropped_total{reason}`.

use super::{counter, counter_vec};
use prometheus::{IntCounter, Registry};

/// Spans exported and dropped.
#[derive(Debug, Clone)]
pub(crate) struct SpanMetrics {
    pub(crate) exported: IntCounter,
    pub(crate) queue_full: IntCounter,
    pub(crate) export_failed: IntCounter,
}

impl SpanMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        let dropped = counter_vec(
            registry,
            "siger_trace_spans_dropped_total",
            "Spans not exported: the export queue was full (queue_full) or the collector failed (export_failed)",
            &["reason"],
        );
        SpanMetrics {
            exported: counter(registry, "siger_trace_spans_exported_total", "Spans the collector accepted"),
            queue_full: dropped.with_label_values(&["queue_full"]),
            export_failed: dropped.with_label_values(&["export_failed"]),
        }
    }
}
