//! Span export: requests hand their finished spans to a bounded [`SpanQueue`] (never waiting:
//! a full queue drops and counts), and [`SpanExporter`], a Pingora background service, sends
//! them in batches with OpenTelemetry's OTLP/HTTP exporter on Pingora's own runtime.
//!
//! The exporter runs as a task of a runtime that exists for the process's life, rather than on
//! the SDK's batch thread: with an async HTTP client that thread has no reactor and exports
//! nothing (opentelemetry-rust#2673).

use crate::config::TracingSettings;
use crate::runtime::Runtime;
use async_trait::async_trait;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::IntCounter;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most spans in one export request.
const BATCH: usize = 512;
/// Longest a span waits before its batch is sent.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Longest one export (retries included) may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// `siger_trace_spans_exported_total` and `siger_trace_spans_dropped_total{reason}`.
#[derive(Debug)]
pub(crate) struct SpanMetrics {
    pub(crate) exported: IntCounter,
    pub(crate) queue_full: IntCounter,
    pub(crate) export_failed: IntCounter,
}

/// Finished spans waiting for export, at most `tracing.queue_size`.
#[derive(Debug, Default)]
pub(crate) struct SpanQueue {
    spans: Mutex<Vec<SpanData>>,
    /// Woken when a batch is full.
    ready: tokio::sync::Notify,
}

impl SpanQueue {
    /// Queue one request's spans, or drop (and count) those beyond `bound`.
    pub(crate) fn push(&self, spans: Vec<SpanData>, bound: usize, metrics: &SpanMetrics) {
        let Ok(mut queue) = self.spans.lock() else { return };
        let room = bound.saturating_sub(queue.len());
        let dropped = spans.len().saturating_sub(room);
        queue.extend(spans.into_iter().take(room));
        let full_batch = queue.len() >= BATCH;
        drop(queue);
        if dropped > 0 {
            metrics.queue_full.inc_by(dropped as u64);
        }
        if full_batch {
            self.ready.notify_one();
        }
    }

    /// Up to [`BATCH`] of the oldest spans.
    fn take_batch(&self) -> Vec<SpanData> {
        let Ok(mut queue) = self.spans.lock() else { return Vec::new() };
        let n = queue.len().min(BATCH);
        queue.drain(..n).collect()
    }

    fn len(&self) -> usize {
        self.spans.lock().map_or(0, |q| q.len())
    }
}

/// The background service that sends queued spans to the collector of the configuration in
/// force (a reload that changes the endpoint or service name builds a new exporter).
pub(crate) struct SpanExporter {
    runtime: Arc<Runtime>,
}

impl SpanExporter {
    pub(crate) fn new(runtime: Arc<Runtime>) -> Self {
        SpanExporter { runtime }
    }
}

/// An OTLP exporter and the settings it was built for.
struct Exporter {
    endpoint: String,
    service_name: String,
    inner: opentelemetry_otlp::SpanExporter,
}

impl Exporter {
    fn build(settings: &TracingSettings) -> Option<Exporter> {
        let built = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.otlp_endpoint.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .build();
        match built {
            Ok(mut inner) => {
                inner.set_resource(&Resource::builder_empty().with_service_name(settings.service_name.clone()).build());
                Some(Exporter {
                    endpoint: settings.otlp_endpoint.clone(),
                    service_name: settings.service_name.clone(),
                    inner,
                })
            }
            Err(e) => {
                log::error!("tracing: cannot build the OTLP exporter for {}: {e}", settings.otlp_endpoint);
                None
            }
        }
    }

    fn serves(&self, settings: &TracingSettings) -> bool {
        self.endpoint == settings.otlp_endpoint && self.service_name == settings.service_name
    }
}

impl SpanExporter {
    /// Send one batch; spans the collector did not take are counted as dropped.
    async fn send(&self, exporter: &mut Option<Exporter>, batch: Vec<SpanData>) {
        let metrics = &self.runtime.metrics.spans;
        let n = batch.len() as u64;
        // Spans queued before tracing was switched off still go to the collector they were
        // meant for.
        if let Some(settings) = self.runtime.current().config.tracing.as_ref() {
            if !exporter.as_ref().is_some_and(|e| e.serves(settings)) {
                *exporter = Exporter::build(settings);
            }
        }
        let Some(exporter) = exporter.as_ref() else {
            metrics.export_failed.inc_by(n);
            return;
        };
        match tokio::time::timeout(EXPORT_TIMEOUT + Duration::from_secs(1), exporter.inner.export(batch)).await {
            Ok(Ok(())) => metrics.exported.inc_by(n),
            Ok(Err(e)) => {
                metrics.export_failed.inc_by(n);
                log::warn!("tracing: {n} spans not exported to {}: {e}", exporter.endpoint);
            }
            Err(_) => {
                metrics.export_failed.inc_by(n);
                log::warn!("tracing: {n} spans not exported to {}: timed out", exporter.endpoint);
            }
        }
    }
}

#[async_trait]
impl BackgroundService for SpanExporter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let queue = &self.runtime.spans;
        let mut exporter: Option<Exporter> = None;
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => false,
                _ = queue.ready.notified() => false,
                _ = shutdown.changed() => true,
            };
            // Everything queued goes out, a batch at a time; at shutdown once more, then stop.
            loop {
                let batch = queue.take_batch();
                if batch.is_empty() {
                    break;
                }
                self.send(&mut exporter, batch).await;
                if !stopping && queue.len() < BATCH {
                    break;
                }
            }
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};

    fn span() -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes([1; 16]),
                SpanId::from_bytes([1; 8]),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "x".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_growing() {
        let metrics = SpanMetrics {
            exported: IntCounter::new("e", "e").expect("metric"),
            queue_full: IntCounter::new("q", "q").expect("metric"),
            export_failed: IntCounter::new("f", "f").expect("metric"),
        };
        let queue = SpanQueue::default();
        queue.push(vec![span(), span(), span()], 4, &metrics);
        queue.push(vec![span(), span()], 4, &metrics);
        assert_eq!(queue.len(), 4);
        assert_eq!(metrics.queue_full.get(), 1);
        assert_eq!(queue.take_batch().len(), 4);
        assert_eq!(queue.len(), 0);
        let many: Vec<SpanData> = (0..BATCH + 10).map(|_| span()).collect();
        queue.push(many, 10_000, &metrics);
        assert_eq!(queue.take_batch().len(), BATCH);
        assert_eq!(queue.take_batch().len(), 10);
    }
}
