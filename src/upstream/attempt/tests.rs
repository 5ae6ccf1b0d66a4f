//! The engine on a static pool of unreachable addresses: no session and no network, since
//! picking a backend and recording outcomes never connects.

use super::*;
use crate::observability::Metrics;
use std::collections::HashMap;

/// A configuration whose service `s` has `extra` (YAML flow-map entries) and targets on ports
/// 1–3; its pool, and the metrics of its generation.
struct Fixture {
    config: crate::config::Config,
    pool: Pool,
    metrics: Metrics,
    generation: ConfigMetrics,
}

impl Fixture {
    fn new(extra: &str) -> Self {
        let text = format!(
            "listen: [\"127.0.0.1:1\"]\nservices:\n  s: {{targets: [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\"]{extra}}}\nroutes:\n  - {{path: /, service: s, auth: public}}\n"
        );
        let env = HashMap::<String, String>::new();
        let config = crate::config::parse(&text, std::path::Path::new("."), &env).expect("valid config");
        let settings = &config.services[0];
        let pool = Pool::build(settings, None, Arc::new(ServiceState::new("s", None, None)), None, None);
        let metrics = Metrics::new();
        let generation = metrics.for_config(&config, 1);
        Fixture { config, pool, metrics, generation }
    }

    fn service(&self) -> Service<'_> {
        Service { id: 0, settings: &self.config.services[0], pool: &self.pool, tls: None, metrics: &self.generation }
    }

    /// The value of the series `name{labels}` (labels as rendered, sorted by name), 0 if absent.
    fn metric(&self, series: &str) -> f64 {
        let text = String::from_utf8(self.metrics.render()).expect("text");
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
    }
}

fn refused() -> UpstreamErrorKind {
    UpstreamErrorKind::Connect
}

#[test]
fn connect_failures_move_on_and_the_last_one_is_answered_when_none_is_left() {
    let f = Fixture::new(", retries: 5");
    let s = f.service();
    let mut attempts = Attempts::default();
    let mut seen = vec![attempts.start(&s, b"").expect("a backend")];
    loop {
        let error =
            GatewayError::BadGateway { kind: refused(), detail: format!("refused by {:?}", attempts.backend()) };
        attempts.connect_failed(&s, refused(), Some(error));
        assert!(attempts.counted());
        assert!(attempts.may_retry(&s, RetryReason::Connect, false), "nothing was sent: any request");
        match attempts.next(&s, b"") {
            Ok(backend) => seen.push(backend),
            Err(err) => {
                assert!(err.to_string().contains("refused by Some(127.0.0.1:"), "the last failure: {err}");
                break;
            }
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!((seen.len(), attempts.count()), (3, 3), "each backend once");
    assert_eq!(f.metric("siger_upstream_errors_total{kind=\"connect\",service=\"s\"}"), 3.0);
    assert_eq!(f.metric("siger_upstream_retries_total{reason=\"connect\",service=\"s\"}"), 3.0);
}

#[test]
fn retries_follow_the_policy_the_count_the_replay_and_the_budget() {
    let f = Fixture::new(", retries: 1, retry_on: [connect, reset, 503]");
    let s = f.service();
    let mut attempts = Attempts::default();
    attempts.start(&s, b"").expect("a backend");
    attempts.answered(&s, 502);
    assert!(!attempts.may_retry(&s, RetryReason::Status, true), "502 is not in retry_on");
    attempts.answered(&s, 503);
    assert!(!attempts.may_retry(&s, RetryReason::Status, false), "a request that cannot be sent again");
    assert!(attempts.may_retry(&s, RetryReason::Status, true));
    let second = attempts.next(&s, b"").expect("another backend");
    assert_eq!(attempts.status(), None, "a fresh attempt");
    attempts.failed(&s, UpstreamErrorKind::Reset);
    assert!(!attempts.may_retry(&s, RetryReason::Reset, true), "retries: 1 is spent");
    assert_ne!(Some(second), None);
    assert_eq!(f.metric("siger_upstream_errors_total{kind=\"status_5xx\",service=\"s\"}"), 2.0);
    assert_eq!(f.metric("siger_upstream_errors_total{kind=\"reset\",service=\"s\"}"), 1.0);

    // A budget of 0 % allows the floor of three retries a second, then refuses and counts it.
    let f = Fixture::new(", retries: 10, retry_budget: 0%");
    let s = f.service();
    let allowed = (0..10)
        .filter(|_| {
            let mut attempts = Attempts::default();
            attempts.start(&s, b"").expect("a backend");
            attempts.connect_failed(&s, refused(), None);
            attempts.may_retry(&s, RetryReason::Connect, true)
        })
        .count();
    assert_eq!(allowed, 3);
    assert_eq!(f.metric("siger_retry_budget_exhausted_total{service=\"s\"}"), 7.0);
}

#[test]
fn the_breaker_refuses_with_one_message_per_reason_and_counts_each() {
    let f = Fixture::new(", circuit_breaker: {max_in_flight: 1}");
    let s = f.service();
    let mut first = Attempts::default();
    first.start(&s, b"").expect("admitted");
    let mut second = Attempts::default();
    let err = second.start(&s, b"").expect_err("over max_in_flight");
    assert_eq!(err.message(), "service s is at its limit of concurrent requests");
    assert_eq!((err.status(), second.count(), second.backend()), (503, 0, None), "no attempt was made");
    assert_eq!(f.metric("siger_circuit_refusals_total{reason=\"max_in_flight\",service=\"s\"}"), 1.0);
    first.answered(&s, 200);
    first.finish(&s);
    drop(first);
    second.start(&s, b"").expect("the slot is free again");
}

#[test]
fn the_breaker_opens_on_failures_and_an_abandoned_probe_gives_its_slot_back() {
    let f =
        Fixture::new(", circuit_breaker: {min_requests: 2, failure_rate: 50%, open_for: 100ms, half_open_requests: 1}");
    let s = f.service();
    for _ in 0..2 {
        let mut attempts = Attempts::default();
        attempts.start(&s, b"").expect("closed");
        attempts.failed(&s, UpstreamErrorKind::Timeout);
        attempts.finish(&s);
    }
    assert_eq!(f.pool.state.breaker.state(), State::Open);
    // `open_for` must pass: the duration is the behaviour under test.
    std::thread::sleep(std::time::Duration::from_millis(120));
    // The probe's request is dropped without a verdict (a part at the route's timeout).
    let mut probe = Attempts::default();
    probe.start(&s, b"").expect("half-open: one probe");
    let err = Attempts::default().start(&s, b"").expect_err("its only probe is out");
    assert_eq!(err.message(), "service s is failing: its circuit is open");
    drop(probe);
    let mut probe = Attempts::default();
    probe.start(&s, b"").expect("the probe slot came back");
    probe.answered(&s, 204);
    probe.finish(&s);
    assert_eq!(f.pool.state.breaker.state(), State::Closed);
}

#[test]
fn failures_in_a_row_eject_the_backend_and_an_answer_ends_the_streak() {
    let f = Fixture::new(", outlier_detection: {consecutive_failures: 2, max_ejected_percent: 100}");
    let s = f.service();
    let fail_on = |backend: SocketAddr, kind: UpstreamErrorKind| loop {
        let mut attempts = Attempts::default();
        if attempts.start(&s, b"").expect("a backend") == backend {
            match kind {
                UpstreamErrorKind::Status5xx => attempts.answered(&s, 500),
                kind => attempts.failed(&s, kind),
            }
            return;
        }
    };
    let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    fail_on(a, UpstreamErrorKind::Timeout);
    loop {
        let mut attempts = Attempts::default();
        if attempts.start(&s, b"").expect("a backend") == a {
            attempts.answered(&s, 404);
            break;
        }
    }
    fail_on(a, UpstreamErrorKind::Status5xx);
    assert_eq!(f.pool.state.outliers.ejected_count(), 0, "the 404 ended the streak");
    fail_on(a, UpstreamErrorKind::Reset);
    assert_eq!(f.pool.state.outliers.ejected_count(), 1);
    assert_eq!(f.metric("siger_backend_ejections_total{service=\"s\"}"), 1.0);
    let picks: Vec<SocketAddr> = (0..20).map(|_| Attempts::default().start(&s, b"").expect("the others")).collect();
    assert!(!picks.contains(&a), "an ejected backend is passed over");
}

#[test]
fn with_every_backend_tried_and_no_connect_error_the_answer_is_a_502() {
    let f = Fixture::new("");
    let s = f.service();
    let mut attempts = Attempts::default();
    attempts.start(&s, b"").expect("a backend");
    attempts.failed(&s, UpstreamErrorKind::Reset);
    attempts.tried = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"].map(|a| a.parse().expect("addr")).to_vec();
    let err = attempts.next(&s, b"").expect_err("every backend tried");
    assert_eq!((err.status(), err.message().as_str()), (502, "upstream connect: no backend accepted the connection"));
}
