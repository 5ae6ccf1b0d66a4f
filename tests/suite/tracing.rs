//! Tracing end to end (ARCHITECTURE.md §7.6): the real gateway exporting to an OTLP/HTTP
//! receiver that decodes with the official protobuf types; W3C `traceparent` continued, created
//! and repaired; one client span per upstream attempt and per aggregation part; sampling;
//! a collector that is down; the trace context in the NATS headers of a job; reload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::otlp::{OtlpReceiver, Received};
use crate::support::*;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn tracing_section(endpoint: &str, ratio: f64) -> String {
    format!("tracing: {{otlp_endpoint: \"{endpoint}\", service_name: edge-test, sample_ratio: {ratio}}}\n")
}

fn gateway(tracing: &str, echo: SocketAddr, extra_services: &str, extra_routes: &str) -> Gateway {
    Gateway::start(&format!(
        "{tracing}services:\n  echo: {{targets: [\"{echo}\"]}}\n{extra_services}routes:\n{extra_routes}  - {{path: /api, service: echo, auth: public}}\n"
    ))
}

/// The `traceparent` the backend received (from siger-echo's JSON), split into its fields.
fn forwarded_traceparent(resp: &RawResponse) -> (String, String, String) {
    let v = resp.json();
    let value = v["headers"]["traceparent"][0].as_str().unwrap_or_else(|| panic!("no traceparent: {v}")).to_string();
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00");
    (parts[1].to_string(), parts[2].to_string(), parts[3].to_string())
}

/// Wait until `n` spans of `trace_id` arrived.
fn spans_of(otlp: &OtlpReceiver, trace_id: &str, n: usize) -> Vec<Received> {
    let ok = eventually(Duration::from_secs(10), || otlp.trace(trace_id).len() >= n);
    let spans = otlp.trace(trace_id);
    assert!(ok, "expected {n} spans of {trace_id}, got {spans:?}");
    spans
}

fn kind(s: &Received) -> SpanKind {
    SpanKind::try_from(s.span.kind).unwrap()
}

#[test]
fn a_callers_trace_is_continued_through_the_gateway_to_the_backend() {
    let otlp = OtlpReceiver::start();
    let echo = Echo::start("echo");
    // Ratio 0: the caller's sampled flag alone decides (parent-based sampling).
    let gw = gateway(&tracing_section(&otlp.endpoint(), 0.0), echo.addr, "", "");
    let parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = get_with(gw.addr, "/api/x", &[("traceparent", &parent), ("tracestate", "vendor=abc,other=1")]);
    assert_eq!(r.status, 200);
    let (trace, parent_of_backend, flags) = forwarded_traceparent(&r);
    assert_eq!(trace, CLIENT_TRACE);
    assert_eq!(flags, "01");
    assert_ne!(parent_of_backend, CLIENT_SPAN, "the backend continues from the gateway's span");
    assert_eq!(r.json()["headers"]["tracestate"][0], "vendor=abc,other=1");

    let spans = spans_of(&otlp, CLIENT_TRACE, 2);
    assert_eq!(spans.len(), 2, "{spans:?}");
    let server = spans.iter().find(|s| kind(s) == SpanKind::Server).expect("server span");
    let upstream = spans.iter().find(|s| kind(s) == SpanKind::Client).expect("upstream span");
    assert_eq!(server.service_name, "edge-test");
    assert_eq!(server.parent_span_id(), CLIENT_SPAN);
    assert_eq!(server.attr("http.route").as_deref(), Some("/api"));
    assert_eq!(server.attr("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(server.attr("siger.service").as_deref(), Some("echo"));
    assert_eq!(upstream.parent_span_id(), server.span_id());
    assert_eq!(upstream.span_id(), parent_of_backend, "the backend's parent is the attempt's span");
    assert_eq!(upstream.attr("server.port"), Some(echo.addr.port().to_string()));
    assert_eq!(upstream.attr("http.response.status_code").as_deref(), Some("200"));
    assert!(server.span.start_time_unix_nano <= upstream.span.start_time_unix_nano);
    assert!(upstream.span.end_time_unix_nano <= server.span.end_time_unix_nano);
    // The access log names the trace.
    let found = eventually(Duration::from_secs(5), || {
        gw.access_lines().iter().any(|l| l["path"] == "/api/x" && l["trace_id"] == CLIENT_TRACE)
    });
    assert!(found, "{:?}", gw.access_lines());
}

#[test]
fn missing_or_malformed_trace_headers_start_a_new_trace_and_never_fail_the_request() {
    let otlp = OtlpReceiver::start();
    let echo = Echo::start("echo");
    let gw = gateway(&tracing_section(&otlp.endpoint(), 1.0), echo.addr, "", "");

    let r = get(gw.addr, "/api/new");
    assert_eq!(r.status, 200);
    let (trace, backend_parent, flags) = forwarded_traceparent(&r);
    assert_eq!(flags, "01");
    let spans = spans_of(&otlp, &trace, 2);
    let server = spans.iter().find(|s| kind(s) == SpanKind::Server).unwrap();
    assert!(server.span.parent_span_id.is_empty(), "a new trace has a root span");
    assert_eq!(spans.iter().find(|s| kind(s) == SpanKind::Client).unwrap().span_id(), backend_parent);

    for bad in [
        format!("00-{}-{CLIENT_SPAN}-01", CLIENT_TRACE.to_uppercase()),
        format!("ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
        format!("00-{CLIENT_TRACE}-0000000000000000-01"),
        "garbage".to_string(),
    ] {
        let r = get_with(gw.addr, "/api/bad", &[("traceparent", &bad), ("tracestate", "vendor=abc")]);
        assert_eq!(r.status, 200, "{bad}");
        let (trace, _, _) = forwarded_traceparent(&r);
        assert_ne!(trace, CLIENT_TRACE, "{bad}");
        assert!(r.json()["headers"].get("tracestate").is_none(), "a tracestate without its traceparent is dropped");
        let spans = spans_of(&otlp, &trace, 2);
        assert!(spans.iter().find(|s| kind(s) == SpanKind::Server).unwrap().span.parent_span_id.is_empty());
    }
}

#[test]
fn sample_ratio_zero_exports_nothing_but_still_propagates() {
    let otlp = OtlpReceiver::start();
    let echo = Echo::start("echo");
    let gw = gateway(&tracing_section(&otlp.endpoint(), 0.0), echo.addr, "", "");
    let mut unsampled = Vec::new();
    for _ in 0..20 {
        let r = get(gw.addr, "/api/quiet");
        assert_eq!(r.status, 200);
        let (trace, _, flags) = forwarded_traceparent(&r);
        assert_eq!(flags, "00", "the decision travels with the trace");
        unsampled.push(trace);
    }
    // A caller that samples is still recorded: the exporter works, the ratio chose nothing.
    let r = get_with(gw.addr, "/api/loud", &[("traceparent", &format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))]);
    assert_eq!(r.status, 200);
    spans_of(&otlp, CLIENT_TRACE, 2);
    // Absence: one more flush interval (1 s) for an unsampled span to show up; nothing counts
    // the batches sent, so there is no condition to poll.
    std::thread::sleep(Duration::from_millis(1500));
    let exported: Vec<String> = otlp.spans().iter().map(Received::trace_id).collect();
    assert!(unsampled.iter().all(|t| !exported.contains(t)), "unsampled traces were exported");
    assert_eq!(metric_of(&gw, "siger_trace_spans_exported_total"), 2.0);
}

#[test]
fn a_collector_that_is_down_costs_requests_nothing_and_drops_are_counted() {
    let _measuring = exclusive();
    let echo = Echo::start("echo");
    let dead_port = DeadPort::new();
    let dead = format!("http://{}/v1/traces", dead_port.addr());
    let gw = Gateway::start(&format!(
        "tracing: {{otlp_endpoint: \"{dead}\", sample_ratio: 1.0, queue_size: 64}}\nservices:\n  echo: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /api, service: echo, auth: public}}\n",
        echo.addr
    ));
    let mut took = Vec::new();
    for i in 0..300 {
        let started = Instant::now();
        let r = get(gw.addr, &format!("/api/{i}"));
        took.push(started.elapsed());
        assert_eq!(r.status, 200);
    }
    // Requests that waited on the exporter (its timeout is 5 s, its retry a second) would be
    // slow by the hundred once the queue is full; a busy machine makes a few slow.
    let slow = slower_than(&took, Duration::from_millis(500));
    assert!(slow <= 3, "{slow} of 300 requests over 500 ms; median {:?}", median(&took));
    let dropped = || {
        metric_of(&gw, "siger_trace_spans_dropped_total{reason=\"queue_full\"}")
            + metric_of(&gw, "siger_trace_spans_dropped_total{reason=\"export_failed\"}")
    };
    assert!(eventually(Duration::from_secs(10), || dropped() >= 536.0), "dropped {}", dropped());
    assert!(metric_of(&gw, "siger_trace_spans_dropped_total{reason=\"queue_full\"}") > 0.0);
    assert_eq!(metric_of(&gw, "siger_trace_spans_exported_total"), 0.0);
}

#[test]
fn each_attempt_and_each_aggregation_part_has_its_span() {
    let otlp = OtlpReceiver::start();
    let echo = Echo::start("echo");
    let other = Echo::start("other");
    let services = format!(
        "  flaky:\n    targets: [\"{}\", \"{}\"]\n    lb: round_robin\n    retries: 1\n    retry_on: [503]\n",
        echo.addr, other.addr
    );
    let routes = "  - {path: /status, service: flaky, auth: public}\n  - path: /both\n    auth: public\n    aggregate:\n      parts:\n        - {key: a, service: echo, path: /a}\n        - {key: b, service: flaky, path: /status/404}\n";
    let gw = gateway(&tracing_section(&otlp.endpoint(), 1.0), echo.addr, &services, routes);

    let parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = get_with(gw.addr, "/status/503", &[("traceparent", &parent)]);
    assert_eq!(r.status, 503);
    let spans = spans_of(&otlp, CLIENT_TRACE, 3);
    let server = spans.iter().find(|s| kind(s) == SpanKind::Server).unwrap();
    let mut attempts: Vec<&Received> = spans.iter().filter(|s| kind(s) == SpanKind::Client).collect();
    attempts.sort_by_key(|s| s.span.start_time_unix_nano);
    assert_eq!(attempts.len(), 2, "{spans:?}");
    assert!(attempts.iter().all(|s| s.parent_span_id() == server.span_id()));
    assert!(attempts.iter().all(|s| s.attr("http.response.status_code").as_deref() == Some("503")));
    assert_eq!(attempts[0].attr("http.request.resend_count"), None);
    assert_eq!(attempts[1].attr("http.request.resend_count").as_deref(), Some("1"));
    assert_ne!(attempts[0].attr("server.port"), attempts[1].attr("server.port"), "the retry went elsewhere");

    let r = get(gw.addr, "/both");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // The access log is written in batches.
    let logged = || {
        gw.access_lines().iter().find(|l| l["path"] == "/both").and_then(|l| l["trace_id"].as_str().map(String::from))
    };
    assert!(eventually(Duration::from_secs(5), || logged().is_some()), "no access line with trace_id");
    let trace = logged().unwrap();
    let spans = spans_of(&otlp, &trace, 3);
    let server = spans.iter().find(|s| kind(s) == SpanKind::Server).unwrap();
    let parts: Vec<&Received> = spans.iter().filter(|s| kind(s) == SpanKind::Client).collect();
    assert_eq!(parts.len(), 2);
    assert!(parts.iter().all(|p| p.parent_span_id() == server.span_id()));
    let b = parts.iter().find(|p| p.attr("siger.aggregate.part").as_deref() == Some("b")).unwrap();
    assert_eq!(b.attr("http.response.status_code").as_deref(), Some("404"));
    assert_eq!(b.attr("siger.service").as_deref(), Some("flaky"));
    // Each part's backend continued from the part's own span.
    let body = r.json();
    let a_parent = body["a"]["headers"]["traceparent"][0].as_str().unwrap().to_string();
    let a = parts.iter().find(|p| p.attr("siger.aggregate.part").as_deref() == Some("a")).unwrap();
    assert_eq!(a_parent, format!("00-{trace}-{}-01", a.span_id()));
}

#[test]
fn tracing_follows_reloads() {
    let otlp = OtlpReceiver::start();
    let echo = Echo::start("echo");
    let body = |tracing: &str| {
        format!(
            "{HEAD}{tracing}services:\n  echo: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /api, service: echo, auth: public}}\n",
            echo.addr
        )
    };
    let gw = Gateway::start_raw(&body(""));
    // Off: the caller's headers pass untouched and nothing is exported.
    let parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = get_with(gw.addr, "/api", &[("traceparent", &parent)]);
    assert_eq!(r.json()["headers"]["traceparent"][0], parent.as_str());

    gw.rewrite(&body(&tracing_section(&otlp.endpoint(), 1.0)));
    assert_eq!(gw.reload().status, 200);
    let r = get_with(gw.addr, "/api", &[("traceparent", &parent)]);
    assert_ne!(r.json()["headers"]["traceparent"][0], parent.as_str());
    spans_of(&otlp, CLIENT_TRACE, 2);
    assert!(otlp.spans().iter().all(|s| s.service_name == "edge-test"));

    let bad = body("tracing: {otlp_endpoint: \"udp://x\", sample_ratio: 2}\n");
    gw.rewrite(&bad);
    let refused = gw.reload();
    assert_ne!(refused.status, 200);
    let text = String::from_utf8_lossy(&refused.body).to_string();
    assert!(text.contains("tracing.otlp_endpoint") && text.contains("tracing.sample_ratio"), "{text}");
}

#[test]
fn a_collector_that_is_busy_gets_the_batch_again_and_rejections_are_counted() {
    let otlp = OtlpReceiver::start();
    let echo = Echo::start("echo");
    let gw = gateway(&tracing_section(&otlp.endpoint(), 1.0), echo.addr, "", "");
    // One 503: the batch is sent once more and arrives.
    otlp.fail_next(1, 503);
    let r = get_with(gw.addr, "/api/busy", &[("traceparent", &format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))]);
    assert_eq!(r.status, 200);
    spans_of(&otlp, CLIENT_TRACE, 2);
    assert!(eventually(Duration::from_secs(5), || metric_of(&gw, "siger_trace_spans_exported_total") == 2.0));
    assert_eq!(metric_of(&gw, "siger_trace_spans_dropped_total{reason=\"export_failed\"}"), 0.0);
    // A 400 is final: the batch is dropped and counted.
    otlp.fail_next(1, 400);
    assert_eq!(get(gw.addr, "/api/refused").status, 200);
    assert!(eventually(Duration::from_secs(5), || metric_of(
        &gw,
        "siger_trace_spans_dropped_total{reason=\"export_failed\"}"
    ) == 2.0));
    // A partial success: the rejected spans are counted as failed, the rest as exported.
    otlp.reject_spans(1);
    assert_eq!(get(gw.addr, "/api/partial").status, 200);
    assert!(eventually(Duration::from_secs(5), || metric_of(
        &gw,
        "siger_trace_spans_dropped_total{reason=\"export_failed\"}"
    ) == 3.0));
    assert_eq!(metric_of(&gw, "siger_trace_spans_exported_total"), 3.0);
}

/// A request still in flight at SIGTERM ends after it; its spans go in the last export before
/// the process exits (the tests' gateways have `grace_period: 0s`: nothing else waits).
#[test]
fn spans_of_a_request_in_flight_at_shutdown_are_exported_before_exit() {
    let otlp = OtlpReceiver::start();
    let echo = Echo::start("echo");
    let mut gw = gateway(&tracing_section(&otlp.endpoint(), 1.0), echo.addr, "", "");
    let addr = gw.addr;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let slow = std::thread::spawn(move || get_with(addr, "/api/slow?delay_ms=1500", &[("traceparent", &traceparent)]));
    let in_flight = || metric(&scrape(&gw), "siger_requests_in_flight");
    assert!(eventually(Duration::from_secs(5), || in_flight() == Some(1.0)), "the slow request is in flight");
    gw.signal("TERM");
    assert_eq!(slow.join().unwrap().status, 200, "the request in flight completes");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0), "{}", gw.logs());
    // The process is gone: whatever it exported has arrived.
    let spans = otlp.trace(CLIENT_TRACE);
    assert_eq!(spans.len(), 2, "the request's server and upstream spans: {spans:?}\n{}", gw.logs());
}
