//! Tracing (ARCHITECTURE.md §7.6): each request's W3C trace context and, when it is sampled,
//! its spans — the gateway's server span and one client span per upstream attempt or
//! aggregation part — handed to [`export::SpanQueue`] when the request ends.
//!
//! An unsampled request costs two random ids and the `traceparent` sent on; a sampled one
//! builds its spans only once it is over, so nothing here waits on the collector.

pub(crate) mod context;
pub(crate) mod export;

use crate::config::TracingSettings;
use context::Parent;
use http::HeaderMap;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// `flags` of a span whose parent is in this process (bit 8: the is-remote bit is known).
const PARENT_LOCAL: u32 = 0x100;
/// `flags` of a span whose parent came from the caller (bits 8 and 9).
const PARENT_REMOTE: u32 = 0x300;

/// A string attribute.
pub(crate) fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// An integer attribute.
fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }),
        ..Default::default()
    }
}

/// One request's place in a trace.
#[derive(Debug)]
pub(crate) struct RequestTrace {
    /// The trace: the caller's, or a new one.
    pub(crate) trace_id: TraceId,
    /// The gateway's server span.
    pub(crate) span_id: SpanId,
    /// The caller's span, from a valid `traceparent`.
    parent: Option<SpanId>,
    /// Spans are recorded and exported (the caller's flag, else the sample ratio).
    pub(crate) sampled: bool,
    /// The caller's `tracestate`, passed on unchanged when well-formed.
    tracestate: Option<String>,
    /// Wall clock and monotonic clock at the start, to place the spans' times.
    started: (SystemTime, Instant),
    /// Finished child spans (sampled requests only).
    children: Vec<Span>,
}

/// A finished upstream attempt or aggregation part, as its client span records it.
#[derive(Debug)]
pub(crate) struct ChildSpan<'a> {
    /// The span's id (sent upstream as the parent in `traceparent`).
    pub(crate) span_id: SpanId,
    /// When it started and ended.
    pub(crate) started: Instant,
    pub(crate) ended: Instant,
    /// The upstream service.
    pub(crate) service: &'a str,
    /// The backend, when one was picked.
    pub(crate) backend: Option<SocketAddr>,
    /// The upstream's status, when it answered.
    pub(crate) status: Option<u16>,
    /// Why it failed without an answer (`connect`, `reset`, `timeout`, …).
    pub(crate) error: Option<&'static str>,
    /// 0 for the first attempt, then 1, 2, … for retries.
    pub(crate) retry: u32,
    /// The aggregation part's key.
    pub(crate) part: Option<&'a str>,
}

/// The request as its server span records it.
#[derive(Debug)]
pub(crate) struct ServerSpan<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    /// The matched route's label.
    pub(crate) route: Option<&'a str>,
    pub(crate) service: Option<&'a str>,
    /// Status sent to the client (0: none).
    pub(crate) status: u16,
    pub(crate) client_ip: &'a str,
    pub(crate) request_id: &'a str,
    /// The gateway's error code, when it answered with one.
    pub(crate) error: Option<&'a str>,
}

impl RequestTrace {
    /// The trace context of a request with these headers: the caller's when its one
    /// `traceparent` is valid, else a new trace (never an error).
    pub(crate) fn start(settings: &TracingSettings, headers: &HeaderMap) -> Self {
        let started = (SystemTime::now(), Instant::now());
        let mut lines = headers.get_all(context::TRACEPARENT).iter();
        let parent = match (lines.next(), lines.next()) {
            (Some(one), None) => context::parse_traceparent(one.as_bytes()),
            _ => None,
        };
        let trace_id = parent.map_or_else(context::new_trace_id, |p| p.trace_id);
        // A `tracestate` belongs to the `traceparent` it came with.
        let tracestate = parent
            .filter(|_| headers.contains_key(context::TRACESTATE))
            .and_then(|_| context::tracestate(headers.get_all(context::TRACESTATE).iter().map(|v| v.as_bytes())));
        RequestTrace {
            trace_id,
            span_id: context::new_span_id(),
            parent: parent.map(|p: Parent| p.span_id),
            sampled: context::sampled(parent.as_ref(), trace_id, settings.sample_ratio),
            tracestate,
            started,
            children: Vec::new(),
        }
    }

    /// `traceparent` naming `span` (the gateway's span the receiver continues from).
    pub(crate) fn traceparent(&self, span: SpanId) -> http::HeaderValue {
        let text = context::format_traceparent(self.trace_id, span, self.sampled);
        // Lower-case hex and dashes: always a valid header value.
        http::HeaderValue::from_bytes(&text).unwrap_or_else(|_| http::HeaderValue::from_static(""))
    }

    /// The `tracestate` to pass on with it.
    pub(crate) fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// Tell the backend to continue from `span` (this attempt's client span): `traceparent`,
    /// and the caller's `tracestate` or none (a client-sent one without a valid parent is
    /// never passed on).
    pub(crate) fn propagate(&self, head: &mut pingora::http::RequestHeader, span: SpanId) -> pingora::Result<()> {
        head.insert_header(context::TRACEPARENT, self.traceparent(span))?;
        match self.tracestate() {
            Some(value) => head.insert_header(context::TRACESTATE, value)?,
            None => {
                head.remove_header(&context::TRACESTATE);
            }
        }
        Ok(())
    }

    /// Record a finished child span (nothing when the request is not sampled).
    pub(crate) fn child(&mut self, span: ChildSpan<'_>) {
        if !self.sampled {
            return;
        }
        let mut attributes = Vec::with_capacity(6);
        attributes.push(text("siger.service", span.service));
        if let Some(addr) = span.backend {
            attributes.push(text("server.address", addr.ip().to_string()));
            attributes.push(int("server.port", i64::from(addr.port())));
        }
        if let Some(status) = span.status {
            attributes.push(int("http.response.status_code", i64::from(status)));
        }
        if span.retry > 0 {
            attributes.push(int("http.request.resend_count", i64::from(span.retry)));
        }
        if let Some(part) = span.part {
            attributes.push(text("siger.aggregate.part", part));
        }
        let failed = span.error.or(span.status.filter(|s| *s >= 500).map(|_| "status"));
        if let Some(error) = span.error {
            attributes.push(text("error.type", error));
        }
        let name = match span.part {
            Some(part) => format!("part {part}"),
            None => format!("upstream {}", span.service),
        };
        let mut data = self.span(span.span_id, SpanKind::Client, name, (span.started, span.ended), attributes, failed);
        data.parent_span_id = self.span_id.to_bytes().to_vec();
        self.children.push(data);
    }

    /// The request is over: its spans, server span last (`None` when not sampled).
    pub(crate) fn finish(mut self, server: ServerSpan<'_>) -> Option<Vec<Span>> {
        if !self.sampled {
            return None;
        }
        let mut attributes = Vec::with_capacity(8);
        attributes.push(text("http.request.method", server.method));
        attributes.push(text("url.path", server.path.chars().take(1024).collect::<String>()));
        attributes.push(text("client.address", server.client_ip));
        attributes.push(text("siger.request_id", server.request_id));
        if server.status != 0 {
            attributes.push(int("http.response.status_code", i64::from(server.status)));
        }
        if let Some(route) = server.route {
            attributes.push(text("http.route", route));
        }
        if let Some(service) = server.service {
            attributes.push(text("siger.service", service));
        }
        if let Some(code) = server.error {
            attributes.push(text("error.type", code));
        }
        let name = match server.route {
            Some(route) => format!("{} {route}", server.method),
            None => server.method.to_string(),
        };
        let failed = (server.status >= 500 || server.status == 0).then(|| server.error.unwrap_or("no answer"));
        let times = (self.started.1, Instant::now());
        let mut span = self.span(self.span_id, SpanKind::Server, name, times, attributes, failed);
        if let Some(parent) = self.parent {
            span.parent_span_id = parent.to_bytes().to_vec();
            span.flags = PARENT_REMOTE;
        }
        if let Some(state) = self.tracestate.take() {
            span.trace_state = state;
        }
        let mut spans = std::mem::take(&mut self.children);
        spans.push(span);
        Some(spans)
    }

    /// A span of this trace (its parent set by the caller).
    fn span(
        &self,
        span_id: SpanId,
        kind: SpanKind,
        name: String,
        (started, ended): (Instant, Instant),
        attributes: Vec<KeyValue>,
        failed: Option<&str>,
    ) -> Span {
        let (wall, mono) = self.started;
        let nanos = |at: Instant| {
            (wall + at.saturating_duration_since(mono)).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        };
        Span {
            trace_id: self.trace_id.to_bytes().to_vec(),
            span_id: span_id.to_bytes().to_vec(),
            flags: PARENT_LOCAL,
            name,
            kind: kind as i32,
            start_time_unix_nano: nanos(started),
            end_time_unix_nano: nanos(ended),
            attributes,
            status: failed.map(|message| Status { message: message.to_string(), code: StatusCode::Error as i32 }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(sample_ratio: f64) -> TracingSettings {
        TracingSettings {
            otlp_endpoint: "http://127.0.0.1:4318/v1/traces".into(),
            service_name: "siger".into(),
            sample_ratio,
            queue_size: 64,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn the_backend_continues_from_the_attempt_span() {
        let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let trace = RequestTrace::start(&settings(1.0), &headers(&[("traceparent", caller), ("tracestate", "k=v")]));
        let mut head = pingora::http::RequestHeader::build("GET", b"/", None).expect("head");
        let attempt = SpanId::from_bytes([7; 8]);
        trace.propagate(&mut head, attempt).expect("propagate");
        let sent = head.headers.get("traceparent").expect("traceparent").to_str().expect("text");
        assert_eq!(sent, "00-0af7651916cd43dd8448eb211c80319c-0707070707070707-01");
        assert_eq!(head.headers.get("tracestate").expect("tracestate"), "k=v");
        // A tracestate without a valid parent is not the caller's to pass on.
        let fresh = RequestTrace::start(&settings(1.0), &headers(&[("tracestate", "k=v")]));
        let mut head = pingora::http::RequestHeader::build("GET", b"/", None).expect("head");
        head.insert_header("tracestate", "forged=1").expect("header");
        fresh.propagate(&mut head, fresh.span_id).expect("propagate");
        assert!(head.headers.get("tracestate").is_none());
    }

    fn server<'a>(status: u16) -> ServerSpan<'a> {
        ServerSpan {
            method: "GET",
            path: "/x",
            route: Some("/x"),
            service: Some("s"),
            status,
            client_ip: "127.0.0.1",
            request_id: "r",
            error: None,
        }
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_callers_trace_is_continued_with_its_state() {
        let h = headers(&[("traceparent", PARENT), ("tracestate", "rojo=1"), ("tracestate", "congo=2")]);
        let mut t = RequestTrace::start(&settings(0.0), &h);
        assert_eq!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.sampled, "the caller's flag wins over the ratio");
        assert_eq!(t.tracestate(), Some("rojo=1,congo=2"));
        let attempt = context::new_span_id();
        assert_eq!(t.traceparent(attempt), format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{attempt}-01").as_str());
        t.child(ChildSpan {
            span_id: attempt,
            started: Instant::now(),
            ended: Instant::now(),
            service: "s",
            backend: Some("127.0.0.1:9".parse().expect("addr")),
            status: Some(503),
            error: None,
            retry: 1,
            part: None,
        });
        let server_id = t.span_id;
        let spans = t.finish(server(200)).expect("sampled");
        assert_eq!(spans.len(), 2);
        let (child, root) = (&spans[0], &spans[1]);
        assert_eq!(child.parent_span_id, server_id.to_bytes());
        assert_eq!(child.kind, SpanKind::Client as i32);
        assert_eq!(child.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
        assert!(child.attributes.contains(&int("http.request.resend_count", 1)));
        assert_eq!(hex::encode(&root.parent_span_id), "00f067aa0ba902b7");
        assert_eq!(root.flags, PARENT_REMOTE);
        assert_eq!(root.trace_state, "rojo=1,congo=2");
        assert_eq!(root.kind, SpanKind::Server as i32);
        assert_eq!(root.status, None);
        assert!(root.start_time_unix_nano <= child.start_time_unix_nano);
        assert!(child.end_time_unix_nano <= root.end_time_unix_nano);
    }

    #[test]
    fn bad_or_repeated_traceparents_start_a_new_trace_without_the_state() {
        for h in [
            headers(&[("traceparent", "00-xyz"), ("tracestate", "rojo=1")]),
            headers(&[("traceparent", PARENT), ("traceparent", PARENT)]),
            headers(&[("tracestate", "rojo=1")]),
        ] {
            let t = RequestTrace::start(&settings(1.0), &h);
            assert_ne!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(t.tracestate(), None);
            assert!(t.sampled);
            let spans = t.finish(server(502)).expect("sampled");
            assert!(spans[0].parent_span_id.is_empty());
            assert_eq!(spans[0].status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
        }
    }

    #[test]
    fn unsampled_requests_record_nothing_but_still_propagate() {
        let mut t = RequestTrace::start(&settings(0.0), &HeaderMap::new());
        assert!(!t.sampled);
        assert!(t.traceparent(t.span_id).as_bytes().ends_with(b"-00"));
        t.child(ChildSpan {
            span_id: context::new_span_id(),
            started: Instant::now(),
            ended: Instant::now(),
            service: "s",
            backend: None,
            status: Some(200),
            error: None,
            retry: 0,
            part: None,
        });
        assert!(t.children.is_empty());
        assert!(t.finish(server(200)).is_none());
    }
}
