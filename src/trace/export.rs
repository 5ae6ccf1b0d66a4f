//! Span export: requests hand their finished spans to a bounded [`SpanQueue`] (never waiting:
//! a full queue drops and counts), and [`SpanExporter`], a Pingora background service, sends
//! them in batches over OTLP/HTTP (binary protobuf, the official `opentelemetry-proto` types)
//! on Pingora's own runtime.
//!
//! Spans are built as OTLP messages when the request ends, so a batch is only wrapped in its
//! resource and scope and encoded. OpenTelemetry's SDK exporter was measured here first: its
//! conversion of SDK spans into the same messages cost ≈ 8,000 instructions per traced request
//! on top of the encoding; its batch thread, with an async HTTP client, also has no reactor and
//! exports nothing (opentelemetry-rust#2673).

use super::text;
use crate::config::TracingSettings;
use crate::lifecycle::{Lifecycle, ReservedCleanup};
use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Most spans in one export request.
const BATCH: usize = 512;
/// Longest a span waits before its batch is sent.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Longest one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before the one retry of a batch the collector could not take right then.
const RETRY_AFTER: Duration = Duration::from_millis(200);

pub(crate) use crate::observability::SpanMetrics;

/// Finished spans waiting for export, at most `tracing.queue_size`.
#[derive(Debug, Default)]
pub(crate) struct SpanQueue {
    spans: Mutex<Vec<Span>>,
    /// Woken when a batch is full.
    ready: tokio::sync::Notify,
}

impl SpanQueue {
    /// Queue one request's spans, or drop (and count) those beyond `bound`.
    pub(crate) fn push(&self, spans: Vec<Span>, bound: usize, metrics: &SpanMetrics) {
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
    fn take_batch(&self) -> Vec<Span> {
        let Ok(mut queue) = self.spans.lock() else { return Vec::new() };
        let n = queue.len().min(BATCH);
        queue.drain(..n).collect()
    }

    fn len(&self) -> usize {
        self.spans.lock().map_or(0, |q| q.len())
    }
}

/// The background service that sends queued spans to the collector of the configuration in
/// force (a reload that changes the endpoint or service name applies to the next batch).
pub(crate) struct SpanExporter {
    queue: Arc<SpanQueue>,
    metrics: SpanMetrics,
    /// `tracing` of the configuration in force (the runtime sends each reload's).
    settings: watch::Receiver<Option<TracingSettings>>,
    /// Where the last batch went (spans queued before tracing was switched off still go there).
    last: Mutex<Option<(String, String)>>,
    /// The process's exit waits for the last export.
    exit: ReservedCleanup,
}

impl SpanExporter {
    /// Export what `queue` holds to the collector `settings` names, counting into `metrics`;
    /// `lifecycle`'s exit waits for the last export.
    pub(crate) fn new(
        queue: Arc<SpanQueue>,
        metrics: SpanMetrics,
        settings: watch::Receiver<Option<TracingSettings>>,
        lifecycle: &Arc<Lifecycle>,
    ) -> Self {
        SpanExporter { queue, metrics, settings, last: Mutex::new(None), exit: lifecycle.reserve_cleanup() }
    }

    /// The collector and service name for the next batch.
    fn destination(&self) -> Option<(String, String)> {
        let mut last = self.last.lock().ok()?;
        if let Some(t) = self.settings.borrow().as_ref() {
            *last = Some((t.otlp_endpoint.clone(), t.service_name.clone()));
        }
        last.clone()
    }

    /// Send one batch; spans the collector did not take are counted as dropped.
    async fn send(&self, client: &reqwest::Client, batch: Vec<Span>) {
        let metrics = &self.metrics;
        let n = batch.len() as u64;
        let Some((endpoint, service_name)) = self.destination() else {
            metrics.export_failed.inc_by(n);
            return;
        };
        let body = encode(batch, &service_name);
        let mut outcome = post(client, &endpoint, body.clone()).await;
        if matches!(outcome, Err(Failure::Retryable(_))) {
            tokio::time::sleep(RETRY_AFTER).await;
            outcome = post(client, &endpoint, body).await;
        }
        match outcome {
            Ok(rejected) => {
                metrics.exported.inc_by(n.saturating_sub(rejected));
                metrics.export_failed.inc_by(rejected.min(n));
            }
            Err(Failure::Retryable(why) | Failure::Final(why)) => {
                metrics.export_failed.inc_by(n);
                // The URL may carry credentials (user info, a query key): never logged.
                log::warn!("tracing: {n} spans not exported to {}: {why}", crate::config::redact_url(&endpoint));
            }
        }
    }
}

/// An `ExportTraceServiceRequest` of `spans` from this gateway.
fn encode(spans: Vec<Span>, service_name: &str) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![text("service.name", service_name)], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "siger".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// Why an export failed.
enum Failure {
    /// The collector could not take it now (no connection, 429, 502, 503, 504): tried once more.
    Retryable(String),
    /// It refused it.
    Final(String),
}

/// POST one encoded request; `Ok(rejected spans)` as the collector's partial success says.
async fn post(client: &reqwest::Client, endpoint: &str, body: Vec<u8>) -> Result<u64, Failure> {
    let sent = client.post(endpoint).header(http::header::CONTENT_TYPE, "application/x-protobuf").body(body).send();
    let response = match tokio::time::timeout(EXPORT_TIMEOUT, sent).await {
        Err(_) => return Err(Failure::Retryable("timed out".into())),
        Ok(Err(e)) => return Err(Failure::Retryable(e.to_string())),
        Ok(Ok(r)) => r,
    };
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        let why = format!("the collector answered {status}");
        return Err(if matches!(status, 429 | 502 | 503 | 504) {
            Failure::Retryable(why)
        } else {
            Failure::Final(why)
        });
    }
    let answer = tokio::time::timeout(EXPORT_TIMEOUT, response.bytes()).await.ok().and_then(Result::ok);
    let rejected = answer
        .and_then(|b| ExportTraceServiceResponse::decode(b).ok())
        .and_then(|r| r.partial_success)
        .map_or(0, |p| p.rejected_spans.max(0) as u64);
    Ok(rejected)
}

#[async_trait]
impl BackgroundService for SpanExporter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let exit = self.exit.claim();
        let queue = &self.queue;
        let client =
            match reqwest::Client::builder().timeout(EXPORT_TIMEOUT).connect_timeout(Duration::from_secs(2)).build() {
                Ok(client) => client,
                Err(e) => {
                    log::error!("tracing: no HTTP client for span export: {e}");
                    return;
                }
            };
        loop {
            // Started after the signal, `changed` would never come: look at the value first.
            let stopping = *shutdown.borrow()
                || tokio::select! {
                    _ = tokio::time::sleep(FLUSH_EVERY) => false,
                    _ = queue.ready.notified() => false,
                    _ = shutdown.changed() => true,
                };
            // Requests in flight at the signal end their spans after it: they go in the last export.
            while stopping && exit.as_ref().is_some_and(|e| e.in_flight() > 0) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Everything queued goes out, a batch at a time; at shutdown once more, then stop.
            loop {
                let batch = queue.take_batch();
                if batch.is_empty() {
                    break;
                }
                self.send(&client, batch).await;
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
    use prometheus::IntCounter;

    fn span() -> Span {
        Span { trace_id: vec![1; 16], span_id: vec![1; 8], name: "x".into(), ..Default::default() }
    }

    fn metrics() -> SpanMetrics {
        SpanMetrics {
            exported: IntCounter::new("e", "e").expect("metric"),
            queue_full: IntCounter::new("q", "q").expect("metric"),
            export_failed: IntCounter::new("f", "f").expect("metric"),
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_growing() {
        let metrics = metrics();
        let queue = SpanQueue::default();
        queue.push(vec![span(), span(), span()], 4, &metrics);
        queue.push(vec![span(), span()], 4, &metrics);
        assert_eq!(queue.len(), 4);
        assert_eq!(metrics.queue_full.get(), 1);
        assert_eq!(queue.take_batch().len(), 4);
        assert_eq!(queue.len(), 0);
        let many: Vec<Span> = (0..BATCH + 10).map(|_| span()).collect();
        queue.push(many, 10_000, &metrics);
        assert_eq!(queue.take_batch().len(), BATCH);
        assert_eq!(queue.take_batch().len(), 10);
    }

    /// The exporter holds the process's exit from when it is built; at the signal it waits for
    /// the requests in flight (their spans end after it), exports, and then lets go.
    #[tokio::test]
    async fn the_last_export_waits_for_requests_in_flight_and_holds_the_exit() {
        let lifecycle = Lifecycle::new();
        let (_tracing, settings) = watch::channel(None);
        let exporter = Arc::new(SpanExporter::new(Arc::new(SpanQueue::default()), metrics(), settings, &lifecycle));
        assert_eq!(lifecycle.cleanups_pending(), 1, "held before the exporter starts");
        let request = lifecycle.request();
        let (_signal, shutdown) = watch::channel(true);
        let running = tokio::spawn({
            let exporter = exporter.clone();
            async move { exporter.start(shutdown).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!running.is_finished(), "a request in flight holds the last export");
        assert_eq!(lifecycle.cleanups_pending(), 1);
        drop(request);
        tokio::time::timeout(Duration::from_secs(5), running).await.expect("stops").expect("no panic");
        assert_eq!(lifecycle.cleanups_pending(), 0, "released after the last export");
    }

    #[test]
    fn a_batch_decodes_as_one_resource_and_scope() {
        let body = encode(vec![span(), span()], "edge");
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("decodes");
        let resource = &request.resource_spans[0];
        let name = &resource.resource.as_ref().expect("resource").attributes[0];
        assert_eq!(name.key, "service.name");
        assert_eq!(resource.scope_spans[0].scope.as_ref().map(|s| s.name.as_str()), Some("siger"));
        assert_eq!(resource.scope_spans[0].spans.len(), 2);
    }
}
