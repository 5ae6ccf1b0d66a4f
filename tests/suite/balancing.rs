//! Upstream pools end to end: round robin, weights, least_conn, consistent hashing, health
//! checks, connect retries, and what happens when every backend is down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use std::time::Duration;

fn service(name: &str, targets: &str, extra: &str) -> String {
    format!("services:\n  {name}:\n    targets: [{targets}]\n{extra}routes:\n  - {{path: /, service: {name}, auth: public}}\n")
}

fn within(actual: usize, expected: f64, tolerance: f64) -> bool {
    (actual as f64 - expected).abs() <= expected * tolerance
}

#[test]
fn round_robin_spreads_evenly() {
    let b: Vec<Echo> = (0..3).map(|i| Echo::start(&format!("b{i}"))).collect();
    let targets = b.iter().map(|e| format!("\"{}\"", e.addr)).collect::<Vec<_>>().join(", ");
    let gw = Gateway::start(&service("s", &targets, "    lb: round_robin\n"));
    let counts = spread(gw.addr, "/", 300);
    for e in &b {
        let n = counts.get(&e.name).copied().unwrap_or(0);
        assert!(within(n, 100.0, 0.15), "{}: {n} of 300 ({counts:?})", e.name);
    }
}

#[test]
fn weights_one_to_three() {
    let light = Echo::start("light");
    let heavy = Echo::start("heavy");
    let targets = format!("{{addr: \"{}\", weight: 1}}, {{addr: \"{}\", weight: 3}}", light.addr, heavy.addr);
    let gw = Gateway::start(&service("s", &targets, ""));
    let counts = spread(gw.addr, "/", 400);
    assert!(within(counts["light"], 100.0, 0.2), "{counts:?}");
    assert!(within(counts["heavy"], 300.0, 0.2), "{counts:?}");
}

#[test]
fn least_conn_avoids_the_busy_backend() {
    let slow = Echo::start_with("slow", &["--delay-ms", "300"]);
    let fast = Echo::start("fast");
    let targets = format!("\"{}\", \"{}\"", slow.addr, fast.addr);
    let gw = Gateway::start(&service("s", &targets, "    lb: least_conn\n"));
    let addr = gw.addr;
    let workers: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || (0..15).map(|_| backend_of(&get(addr, "/"))).collect::<Vec<_>>()))
        .collect();
    let all: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let on_slow = all.iter().filter(|b| *b == "slow").count();
    // Round robin would give the slow backend half (60 of 120); least_conn keeps it to the
    // few requests that find it idle.
    assert!(on_slow * 5 < all.len(), "slow backend got {on_slow} of {}", all.len());
}

#[test]
fn consistent_hash_is_sticky_per_key() {
    let b: Vec<Echo> = (0..3).map(|i| Echo::start(&format!("b{i}"))).collect();
    let targets = b.iter().map(|e| format!("\"{}\"", e.addr)).collect::<Vec<_>>().join(", ");
    let gw = Gateway::start(&service("s", &targets, "    lb: consistent_hash\n    hash_key: header:X-User\n"));
    let mut owners = std::collections::HashSet::new();
    for user in 0..30 {
        let key = format!("user-{user}");
        let first = backend_of(&get_with(gw.addr, "/", &[("X-User", &key)]));
        for _ in 0..4 {
            assert_eq!(backend_of(&get_with(gw.addr, "/", &[("X-User", &key)])), first, "{key} moved");
        }
        owners.insert(first);
    }
    assert!(owners.len() >= 2, "30 keys all hashed to {owners:?}");
}

#[test]
fn killed_backend_is_taken_out_by_health_checks() {
    let a = Echo::start("a");
    let mut doomed = Echo::start("doomed");
    let targets = format!("\"{}\", \"{}\"", a.addr, doomed.addr);
    let gw = Gateway::start(&service(
        "s",
        &targets,
        "    health_check: {path: /health, interval: 200ms, timeout: 100ms, healthy: 1, unhealthy: 2}\n    retries: 0\n",
    ));
    let counts = spread(gw.addr, "/", 20);
    assert_eq!(counts.get("doomed"), Some(&10));
    doomed.kill();
    let series = "siger_backends{service=\"s\",state=\"unhealthy\"}";
    assert!(eventually(Duration::from_secs(5), || metric(&scrape(&gw), series) == Some(1.0)), "never marked down");
    // From here on no request may fail, even with retries disabled.
    let counts = spread(gw.addr, "/", 50);
    assert_eq!(counts.get("a"), Some(&50), "{counts:?}");
    assert_eq!(get(gw.admin, "/ready").status, 200, "one healthy backend keeps the service ready");
}

#[test]
fn connect_failure_is_retried_on_another_backend() {
    let live = Echo::start("live");
    let dead_port = DeadPort::new();
    let dead = dead_port.addr();
    let targets = format!("\"{dead}\", \"{}\"", live.addr);
    let gw = Gateway::start(&service("s", &targets, "    retries: 1\n"));
    for _ in 0..20 {
        let r = get(gw.addr, "/");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(backend_of(&r), "live");
    }
    let errors = metric(&scrape(&gw), "siger_upstream_errors_total{kind=\"connect\",service=\"s\"}").unwrap_or(0.0);
    assert!(errors >= 9.0, "round robin sent about half the first attempts to the dead port: {errors}");
}

#[test]
fn all_backends_down() {
    let dead_ports = [DeadPort::new(), DeadPort::new()];
    let (dead1, dead2) = (dead_ports[0].addr(), dead_ports[1].addr());
    // Without health checks the connect errors surface as 502 after the retry.
    let gw = Gateway::start(&service("s", &format!("\"{dead1}\", \"{dead2}\""), "    retries: 1\n"));
    let r = get(gw.addr, "/x");
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "bad_gateway");
    drop(gw);

    // With health checks they are marked down and the service is unavailable.
    let gw = Gateway::start(&service(
        "s",
        &format!("\"{dead1}\", \"{dead2}\""),
        "    health_check: {interval: 200ms, timeout: 100ms, unhealthy: 1}\n",
    ));
    assert!(eventually(Duration::from_secs(5), || get(gw.addr, "/x").status == 503));
    let r = get(gw.addr, "/x");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["error"], "service_unavailable");
    assert_eq!(body["request_id"].as_str().map(str::len), Some(36));
    let ready = get(gw.admin, "/ready");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["missing"][0], "service s: no healthy backend");
}

#[test]
fn a_timeout_after_a_retried_connect_failure_is_504() {
    // Each attempt is judged on its own: the first backend's connect failure must not turn
    // the second one's timeout into a 502.
    let slow = Echo::start_with("slow", &["--delay-ms", "2000"]);
    let dead_port = DeadPort::new();
    let dead = dead_port.addr();
    let targets = format!("\"{dead}\", \"{}\"", slow.addr);
    let gw = Gateway::start(&format!(
        "services:\n  s:\n    targets: [{targets}]\n    retries: 1\nroutes:\n  - {{path: /, service: s, auth: public, timeout: 300ms}}\n"
    ));
    for _ in 0..6 {
        let r = get(gw.addr, "/");
        assert_eq!(r.status, 504, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["error"], "gateway_timeout");
    }
    let errors = metric(&scrape(&gw), "siger_upstream_errors_total{kind=\"connect\",service=\"s\"}").unwrap_or(0.0);
    assert!(errors >= 2.0, "round robin sent some first attempts to the dead port: {errors}");
}
