//! Resilience and traffic control (ARCHITECTURE §7.3) against real siger-echo backends told to
//! fail through their `/__control` endpoints: outlier ejection and its growth, the ejection
//! cap, fall-through; the circuit breaker's states and `max_in_flight`; retries on status, only
//! for idempotent methods, within the retry budget (counted at the backends); weighted and
//! sticky splits with fallback; header-matched routes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn fail_with(echo: &Echo, status: u16) {
    assert_eq!(request(echo.addr, "POST", &format!("/__control/status/{status}"), &[], b"").status, 200);
}

fn slow_down(echo: &Echo, ms: u64) {
    assert_eq!(request(echo.addr, "POST", &format!("/__control/delay/{ms}"), &[], b"").status, 200);
}

fn targets(echoes: &[&Echo]) -> String {
    echoes.iter().map(|e| format!("\"{}\"", e.addr)).collect::<Vec<_>>().join(", ")
}

/// Requests to `gw` until `backend` serves one again (at most `within`): when the answer to
/// that request came. Every other answer must be a success.
fn returns_at(gw: &Gateway, backend: &Echo, within: Duration) -> Instant {
    let before = backend.served();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let status = get(gw.addr, "/x").status;
        let answered = Instant::now();
        if backend.served() > before {
            return answered;
        }
        assert_eq!(status, 200, "only the ejected backend fails");
        // Pacing of the probing loop (each request is a sample).
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} did not return within {within:?}", backend.name);
}

#[test]
fn failing_backends_are_ejected_for_growing_times_and_return() {
    let _measuring = exclusive();
    let (b1, b2, b3) = (Echo::start("b1"), Echo::start("b2"), Echo::start("b3"));
    let gw = Gateway::start(&format!(
        "services:\n  s:\n    targets: [{}]\n    retries: 0\n    outlier_detection: {{consecutive_failures: 3, base_ejection: 1s, max_ejection: 10s, max_ejected_percent: 50}}\nroutes:\n  - {{path: /, service: s, auth: public}}\n",
        targets(&[&b1, &b2, &b3])
    ));
    let ejections = || metric_of(&gw, "siger_backend_ejections_total{service=\"s\"}");
    fail_with(&b1, 500);
    // Round robin: b1 sees every third request; its third failure ejects it. The ejection
    // starts after that request was sent, so its time is a lower bound that no load can shorten
    // (the request that meets b1 again is answered after the ejection ends).
    let mut failures = 0;
    let mut ejecting = None;
    for _ in 0..9 {
        let sent = Instant::now();
        if get(gw.addr, "/x").status == 500 {
            failures += 1;
            ejecting = Some(sent);
        }
    }
    assert_eq!(failures, 3);
    assert!(eventually(Duration::from_secs(2), || ejections() == 1.0));
    let first = returns_at(&gw, &b1, Duration::from_secs(5)) - ejecting.unwrap();
    // 1 s; less than twice that however slow the machine (b1 gets one request in three).
    assert!(first >= Duration::from_millis(1000) && first < Duration::from_millis(2000), "{first:?}");
    // Still failing: three more failures eject it again, for twice as long.
    let mut ejecting = None;
    while ejections() < 2.0 {
        let sent = Instant::now();
        if get(gw.addr, "/x").status == 500 {
            ejecting = Some(sent);
        }
    }
    let second = returns_at(&gw, &b1, Duration::from_secs(8)) - ejecting.expect("a failure ejected b1 again");
    assert!(second >= Duration::from_millis(2000) && second < Duration::from_millis(4000), "{second:?}");
    assert!(gw.logs().contains("ejected for 2s after 3 failures in a row"), "{}", gw.logs());
}

#[test]
fn at_most_the_ejection_cap_and_a_failing_pool_still_answers() {
    let echoes: Vec<Echo> = (1..=4).map(|i| Echo::start(&format!("b{i}"))).collect();
    let refs: Vec<&Echo> = echoes.iter().collect();
    let gw = Gateway::start(&format!(
        "services:\n  s:\n    targets: [{}]\n    retries: 0\n    outlier_detection: {{consecutive_failures: 2, base_ejection: 30s, max_ejected_percent: 50}}\n  all:\n    targets: [{}]\n    retries: 0\n    outlier_detection: {{consecutive_failures: 2, base_ejection: 30s, max_ejected_percent: 100}}\nroutes:\n  - {{path: /s, service: s, auth: public}}\n  - {{path: /all, service: all, auth: public}}\n",
        targets(&refs),
        targets(&refs[..2])
    ));
    for e in &echoes[..3] {
        fail_with(e, 500);
    }
    for _ in 0..40 {
        get(gw.addr, "/s/x");
    }
    assert_eq!(metric_of(&gw, "siger_backends_ejected{service=\"s\"}"), 2.0, "50 % of 4");
    // The third failing backend is kept in (at the cap) and still gets its share.
    let seen: Vec<u64> = echoes.iter().map(Echo::served).collect();
    for _ in 0..20 {
        get(gw.addr, "/s/x");
    }
    let grew = echoes.iter().zip(&seen).filter(|(e, before)| e.served() > **before).count();
    assert_eq!(grew, 2, "the healthy backend and the failing one kept at the cap");

    // Every backend of `all` fails: both are ejected, yet requests still reach them (their
    // own 500s), never a 503 for an empty pool.
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for _ in 0..30 {
        *statuses.entry(get(gw.addr, "/all/x").status).or_default() += 1;
    }
    assert_eq!(metric_of(&gw, "siger_backends_ejected{service=\"all\"}"), 2.0);
    assert_eq!(statuses.get(&503), None, "{statuses:?}");
    assert_eq!(statuses.get(&500), Some(&30));
}

#[test]
fn the_breaker_opens_answers_fast_probes_half_open_and_closes() {
    let _measuring = exclusive();
    let backend = Echo::start("b1");
    let gw = Gateway::start(&format!(
        "services:\n  s:\n    targets: [\"{}\"]\n    retries: 0\n    circuit_breaker: {{failure_rate: 50%, min_requests: 10, window: 10s, open_for: 5s, half_open_requests: 3}}\nroutes:\n  - {{path: /, service: s, auth: public}}\n",
        backend.addr
    ));
    fail_with(&backend, 500);
    for _ in 0..10 {
        assert_eq!(get(gw.addr, "/x").status, 500);
    }
    // The outcome is counted once the answer is out (Pingora's logging phase).
    assert!(eventually(Duration::from_secs(2), || metric_of(&gw, "siger_circuit_state{service=\"s\"}") == 1.0));
    // It opened before this; open_for (5 s) is over by this plus 5 s.
    let seen_open = Instant::now();
    assert_eq!(get(gw.admin, "/ready").json()["circuits"]["s"], "open");
    // A backend that now takes 2 s: an answer that waited on it would show, and the half-open
    // probes below stay in flight while the other requests arrive.
    slow_down(&backend, 2000);
    let reached = backend.served();
    // 1,000 requests on one keep-alive connection: all 503 at once, none reaches the backend.
    let mut stream = std::net::TcpStream::connect(gw.addr).unwrap();
    use std::io::Write;
    for i in 0..1000 {
        stream.write_all(format!("GET /x?{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).unwrap();
        let r = read_response(&mut stream).expect("answer");
        assert_eq!(r.status, 503, "request {i}, {:?} after the circuit opened (open_for 5 s)", seen_open.elapsed());
        if i == 0 {
            assert!(r.header("retry-after").is_some());
            assert_eq!(r.json()["error"], "service_unavailable");
        }
    }
    assert_eq!(backend.served(), reached, "no request reached the backend while open");
    assert!(
        eventually(Duration::from_secs(5), || gw.access_lines().iter().filter(|l| l["status"] == 503).count() >= 1000)
    );
    let mut ms: Vec<f64> =
        gw.access_lines().iter().filter(|l| l["status"] == 503).map(|l| l["duration_ms"].as_f64().unwrap()).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    // Answered without waiting on anything: the typical answer takes well under a millisecond
    // (in a release build, load-tests/resilience.sh), and nearly every one stays far from the
    // backend's 2 s even when the machine is busy (a wait on the backend would make them all slow).
    let (median, p99) = (ms[ms.len() / 2], ms[ms.len() * 99 / 100]);
    assert!(median < 5.0 && p99 < 250.0, "open-circuit answers: median {median} ms, p99 {p99} ms");
    assert_eq!(metric_of(&gw, "siger_circuit_refusals_total{reason=\"open\",service=\"s\"}"), 1000.0);

    // Recovered and slow: after open_for, exactly 3 probes get through at once.
    fail_with(&backend, 0);
    // open_for must run out: a request before it is refused, not a probe.
    std::thread::sleep((seen_open + Duration::from_millis(5100)).saturating_duration_since(Instant::now()));
    let addr = gw.addr;
    let statuses: Vec<u16> = (0..10)
        .map(|_| std::thread::spawn(move || get(addr, "/x").status))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 7, "{statuses:?}");
    // The probes' outcomes are recorded as each request finishes, just after its answer.
    let closed = eventually(Duration::from_secs(5), || metric_of(&gw, "siger_circuit_state{service=\"s\"}") == 0.0);
    assert!(closed, "closed after three good probes");
    slow_down(&backend, 0);
    assert_eq!(get(gw.addr, "/x").status, 200);
}

#[test]
fn max_in_flight_refuses_the_excess_at_once() {
    let backend = Echo::start_with("slow", &["--delay-ms", "1500"]);
    let gw = Gateway::start(&format!(
        "services:\n  s:\n    targets: [\"{}\"]\n    read_timeout: 10s\n    circuit_breaker: {{max_in_flight: 10}}\nroutes:\n  - {{path: /, service: s, auth: public}}\n",
        backend.addr
    ));
    let addr = gw.addr;
    let started = Instant::now();
    let results: Vec<(u16, Duration)> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let t = Instant::now();
                (get(addr, "/x").status, t.elapsed())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let refused: Vec<&Duration> = results.iter().filter(|(s, _)| *s == 503).map(|(_, d)| d).collect();
    assert_eq!(refused.len(), 40, "{results:?}");
    assert!(refused.iter().all(|d| **d < Duration::from_millis(1000)), "refused at once: {refused:?}");
    assert_eq!(results.iter().filter(|(s, _)| *s == 200).count(), 10);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(metric_of(&gw, "siger_circuit_refusals_total{reason=\"max_in_flight\",service=\"s\"}"), 40.0);
}

#[test]
fn idempotent_requests_are_retried_on_status_within_the_budget() {
    let (b1, b2, b3) = (Echo::start("b1"), Echo::start("b2"), Echo::start("b3"));
    let gw = Gateway::start(&format!(
        "services:\n  s:\n    targets: [{t}]\n    retries: 2\n    retry_on: [connect, 502, 503]\n  budgeted:\n    targets: [{t}]\n    retries: 2\n    retry_on: [503]\n    retry_budget: 20%\nroutes:\n  - {{path: /budgeted, service: budgeted, auth: public}}\n  - {{path: /, service: s, auth: public}}\n",
        t = targets(&[&b1, &b2, &b3])
    ));
    fail_with(&b1, 503);
    for _ in 0..30 {
        let r = get(gw.addr, "/x");
        assert_eq!(r.status, 200, "GET retried on another backend");
        assert_ne!(backend_of(&r), "b1");
    }
    // A third of the GETs met b1 first (round robin) and were answered by another backend.
    assert!(eventually(Duration::from_secs(3), || gw.access_lines().iter().filter(|l| l["attempts"] == 2).count() >= 9));
    assert!(metric_of(&gw, "siger_upstream_retries_total{reason=\"status\",service=\"s\"}") >= 9.0);
    // POST is not idempotent: b1's 503 is the answer.
    let posts: Vec<u16> = (0..9).map(|_| request(gw.addr, "POST", "/x", &[], b"{}").status).collect();
    assert_eq!(posts.iter().filter(|s| **s == 503).count(), 3, "{posts:?}");

    // Everything fails: retries stay within 20 % of requests (+3/s).
    for e in [&b2, &b3] {
        fail_with(e, 503);
    }
    let before: u64 = [&b1, &b2, &b3].iter().map(|e| e.served()).sum();
    let started = Instant::now();
    let n = 600;
    for _ in 0..n {
        assert_eq!(get(gw.addr, "/budgeted/x").status, 503);
    }
    let seconds = started.elapsed().as_secs_f64().ceil();
    let reached = [&b1, &b2, &b3].iter().map(|e| e.served()).sum::<u64>() - before;
    let retries = reached - n;
    let allowed = (n as f64 * 0.2 + 3.0 * seconds + 3.0 + 30.0) as u64;
    assert!(retries <= allowed, "{retries} retries for {n} requests in {seconds}s (allowed {allowed})");
    assert!(retries >= n / 10, "the budget allows retries: {retries}");
    assert!(metric_of(&gw, "siger_retry_budget_exhausted_total{service=\"budgeted\"}") > 0.0);
}

#[test]
fn splits_weigh_stick_and_fall_back_and_headers_pick_routes() {
    let (v1, v2) = (Echo::start("v1"), Echo::start("v2"));
    let gw = Gateway::start(&format!(
        "services:\n  v1: {{targets: [\"{}\"]}}\n  v2: {{targets: [\"{}\"], health_check: {{path: /health, interval: 200ms, timeout: 100ms, unhealthy: 1}}}}\nroutes:\n  - {{path: /api, split: [{{service: v1, weight: 90}}, {{service: v2, weight: 10}}], auth: public}}\n  - {{path: /sticky, split: [{{service: v1, weight: 50}}, {{service: v2, weight: 50}}], sticky: \"header:X-User-Id\", auth: public}}\n  - {{path: /versioned, service: v1, auth: public}}\n  - {{path: /versioned, match_headers: {{X-Api-Version: \"2\"}}, service: v2, auth: public}}\n",
        v1.addr, v2.addr
    ));
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut stream = std::net::TcpStream::connect(gw.addr).unwrap();
    use std::io::Write;
    for i in 0..5000 {
        stream.write_all(format!("GET /api/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).unwrap();
        let r = read_response(&mut stream).unwrap();
        *counts.entry(backend_of(&r)).or_default() += 1;
    }
    let share = counts.get("v2").copied().unwrap_or(0) as f64 / 5000.0;
    assert!((0.08..=0.12).contains(&share), "v2 took {:.1} %", share * 100.0);
    assert!(gw.access_lines().iter().any(|l| l["service"] == "v2"), "the access log names the chosen service");

    for user in 0..20 {
        let id = format!("user-{user}");
        let picks: Vec<String> =
            (0..5).map(|_| backend_of(&get_with(gw.addr, "/sticky/x", &[("X-User-Id", &id)]))).collect();
        assert!(picks.iter().all(|p| *p == picks[0]), "{id}: {picks:?}");
    }

    let r = get_with(gw.addr, "/versioned/x", &[("X-Api-Version", "2")]);
    assert_eq!(backend_of(&r), "v2");
    assert_eq!(backend_of(&get(gw.addr, "/versioned/x")), "v1");
    assert_eq!(backend_of(&get_with(gw.addr, "/versioned/x", &[("X-Api-Version", "3")])), "v1");

    // The 10 % service goes down: every request succeeds through the other.
    let mut v2 = v2;
    v2.kill();
    assert!(eventually(Duration::from_secs(5), || metric_of(&gw, "siger_backends{service=\"v2\",state=\"healthy\"}")
        == 0.0));
    for i in 0..200 {
        let r = get(gw.addr, &format!("/api/{i}"));
        assert_eq!(r.status, 200);
        assert_eq!(backend_of(&r), "v1");
    }
}
