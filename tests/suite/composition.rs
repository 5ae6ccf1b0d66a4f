//! Composition and validation (ARCHITECTURE §7.5) against real siger and siger-echo backends:
//! JSON Schema on request bodies (held until checked; invalid bodies never reach a backend)
//! and aggregation routes (parts in parallel through the services' pools, partial answers,
//! timeouts, failures, retries on another backend, identity and request id on every part).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::jwt::{claims, hs256, hs_auth};
use crate::support::*;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const ORDER_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["items"],
  "properties": {
    "items": {"type": "array", "minItems": 1, "items": {
      "type": "object", "required": ["sku", "qty"],
      "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}
    }}
  }
}"#;

#[test]
fn bodies_are_checked_against_the_schema_before_the_backend_sees_them() {
    let echo = Echo::start("e1");
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("order.json");
    std::fs::write(&schema, ORDER_SCHEMA).unwrap();
    let gw = Gateway::start(&format!(
        "services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /orders, service: s, auth: public, strip_prefix: true, max_body: 4KiB, validate: {{schema: {}}}}}\n  - {{path: /bulk, service: s, auth: public, strip_prefix: true, max_body: 1MiB, validate: {{schema: {}}}}}\n",
        echo.addr,
        schema.display(),
        schema.display()
    ));
    let json = [("Content-Type", "application/json")];
    // Valid: passed on byte for byte (spacing and member order as sent).
    let body = br#"{ "items": [ {"qty": 2, "sku": "A-1"} ],  "note": "keep as is" }"#;
    let r = request(gw.addr, "POST", "/orders/upload", &json, body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["sha256"], hex(&Sha256::digest(body)), "the backend got the body unchanged");
    assert_eq!(r.json()["bytes"], body.len());
    // Chunked bodies too.
    let chunked = b"POST /orders/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n8\r\n{\"items\"\r\nd\r\n:[{\"sku\":\"B\",\r\na\r\n\"qty\":1}]}\r\n0\r\n\r\n";
    let r = raw_request(gw.addr, chunked);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let before = echo.served();
    let r =
        request(gw.addr, "POST", "/orders/upload", &json, br#"{"items":[{"sku":"A","qty":2},{"sku":"B","qty":0}]}"#);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad_request");
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("/items/1/qty"), "names the failing instance: {message}");
    assert!(r.json()["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    let r = request(gw.addr, "POST", "/orders/upload", &json, b"{not json");
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("bad_request")));
    assert!(r.json()["message"].as_str().unwrap().contains("not JSON"));
    let r = request(gw.addr, "POST", "/orders/upload", &[("Content-Type", "text/plain")], br#"{"items":[]}"#);
    assert_eq!((r.status, r.json()["error"].as_str()), (415, Some("unsupported_media_type")));
    let big = format!(r#"{{"items":[{{"sku":"{}","qty":1}}]}}"#, "x".repeat(5000));
    assert_eq!(request(gw.addr, "POST", "/orders/upload", &json, big.as_bytes()).status, 413);
    let r = request(gw.addr, "POST", "/orders/upload", &json, b"");
    assert_eq!(r.status, 400, "an empty body is not an order");
    assert_eq!(echo.served(), before, "no backend heard of a refused request");
    // Bodies beyond the 64 KiB read-ahead are held as they stream and checked whole.
    let items: Vec<String> = (0..3000).map(|i| format!(r#"{{"sku":"SKU-{i:06}","qty":{}}}"#, i % 9 + 1)).collect();
    let bulk = format!(r#"{{"items":[{}]}}"#, items.join(","));
    assert!(bulk.len() > 64 * 1024);
    let r = request(gw.addr, "POST", "/bulk/upload", &json, bulk.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["sha256"], hex(&Sha256::digest(bulk.as_bytes())));
    let bad = bulk.replace(r#""qty":5"#, r#""qty":0"#);
    let r = request(gw.addr, "POST", "/bulk/upload", &json, bad.as_bytes());
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("/qty"), "{}", r.json());
    // Requests without a body on other methods pass.
    assert_eq!(get(gw.addr, "/orders/list").status, 200);
    // A client that waits for `100 Continue` gets it from the gateway, then its answer.
    let body = br#"{"items":[{"sku":"C","qty":3}]}"#;
    let mut stream = std::net::TcpStream::connect(gw.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = format!(
        "POST /orders/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    use std::io::Write;
    stream.write_all(head.as_bytes()).unwrap();
    let interim = read_response_head(&mut stream).expect("100 Continue");
    assert_eq!(interim.status, 100);
    stream.write_all(body).unwrap();
    let r = read_response(&mut stream).expect("an answer");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["sha256"], hex(&Sha256::digest(body)));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_schema_that_does_not_compile_fails_the_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("broken.json");
    std::fs::write(&schema, r#"{"type": "no-such-type"}"#).unwrap();
    let config = dir.path().join("siger.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [\"127.0.0.1:1\"]\nservices:\n  s: {{targets: [\"127.0.0.1:2\"]}}\nroutes:\n  - {{path: /o, service: s, auth: public, validate: {{schema: {}}}}}\n",
            schema.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siger")).args(["-t", "-c"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routes[0].validate.schema") && err.contains("broken.json"), "{err}");
}

fn token(sub: &str) -> String {
    format!("Bearer {}", hs256(&claims(sub, &["user"])))
}

/// How long the two slow parts of `/dashboard` take each.
const PART_MS: u64 = 1000;

#[test]
fn aggregation_merges_parts_in_parallel_and_reports_what_failed() {
    let _measuring = exclusive();
    let users = Echo::start("users");
    let wallets = Echo::start("wallets");
    let dead_port = DeadPort::new();
    let dead = dead_port.port();
    let gw = Gateway::start(&format!(
        r#"{auth}services:
  users: {{targets: ["{users}"]}}
  wallets: {{targets: ["127.0.0.1:{dead}", "{wallets}"], lb: round_robin}}
  gone: {{targets: ["127.0.0.1:{dead}"]}}
routes:
  - {{path: /direct, service: users, auth: public, strip_prefix: true}}
  - path: /dashboard
    methods: [GET]
    aggregate:
      timeout: 10s
      parts:
        - {{key: user, service: users, path: "/users/$claim_sub"}}
        - {{key: wallet, service: wallets, path: "/wallets/$claim_sub?currency=eur"}}
        - {{key: slow, service: users, path: "/slow?delay_ms={PART_MS}"}}
        - {{key: slower, service: users, path: "/slower?delay_ms={PART_MS}"}}
  - path: /partial
    aggregate:
      timeout: 500ms
      parts:
        - {{key: user, service: users, path: /users/me}}
        - {{key: late, service: users, path: "/late?delay_ms=3000"}}
  - path: /strict
    aggregate:
      timeout: 500ms
      on_failure: fail
      parts:
        - {{key: user, service: users, path: /users/me}}
        - {{key: late, service: users, path: "/late?delay_ms=3000"}}
  - path: /down
    aggregate:
      parts:
        - {{key: a, service: gone, path: /a}}
        - {{key: b, service: users, path: /status/503}}
"#,
        auth = hs_auth(""),
        users = users.addr,
        wallets = wallets.addr,
    ));
    let alice = token("alice");
    // The two slow parts asked one after the other, through the same gateway and pool: what
    // the aggregation would take if it ran its parts in turn.
    let started = Instant::now();
    for part in ["slow", "slower"] {
        assert_eq!(get(gw.addr, &format!("/direct/{part}?delay_ms={PART_MS}")).status, 200);
    }
    let in_turn = started.elapsed();
    let started = Instant::now();
    let r = get_with(gw.addr, "/dashboard", &[("Authorization", &alice)]);
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("siger-completed"), None, "complete answers carry no marker");
    let body = r.json();
    assert_eq!(body["user"]["path"], "/users/alice");
    assert_eq!(body["wallet"]["path"], "/wallets/alice");
    assert_eq!(body["wallet"]["query"], "currency=eur");
    assert_eq!(body["wallet"]["backend"], "wallets");
    let request_id = r.header("x-request-id").unwrap();
    for key in ["user", "wallet", "slow", "slower"] {
        let headers = &body[key]["headers"];
        assert_eq!(headers["x-user-id"], serde_json::json!(["alice"]), "{key} carries the identity");
        assert_eq!(headers["x-request-id"], serde_json::json!([request_id]), "{key} carries the request id");
        assert_eq!(headers["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    }
    // Side by side, the aggregation takes one part's time, not two: half a part less than the
    // parts in turn leaves the machine's noise half a second.
    let part = Duration::from_millis(PART_MS);
    assert!(took >= part, "the parts were waited for: {took:?}");
    assert!(took + part / 2 < in_turn, "two {part:?} parts run side by side: {took:?}, in turn {in_turn:?}");
    assert_eq!(get(gw.addr, "/dashboard").status, 401, "auth applies as on any route");
    // Half the wallets pool refuses connections: every answer still has the wallet part,
    // retried on the other backend.
    for _ in 0..6 {
        let r = get_with(gw.addr, "/dashboard", &[("Authorization", &alice)]);
        assert_eq!(r.json()["wallet"]["backend"], "wallets");
    }

    let started = Instant::now();
    let r = get_with(gw.addr, "/partial", &[("Authorization", &alice)]);
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("siger-completed"), Some("false"));
    assert_eq!(r.json()["late"], serde_json::Value::Null);
    assert_eq!(r.json()["user"]["path"], "/users/me");
    // The late part takes 3 s: an answer after the 500 ms timeout and a second before the part
    // came at the timeout.
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(2000), "answered after {took:?}");

    let started = Instant::now();
    let r = get_with(gw.addr, "/strict", &[("Authorization", &alice)]);
    assert_eq!((r.status, r.json()["error"].as_str()), (504, Some("gateway_timeout")));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(2000), "answered after {took:?}");
    let r = get_with(gw.addr, "/down", &[("Authorization", &alice)]);
    assert_eq!((r.status, r.json()["error"].as_str()), (502, Some("bad_gateway")), "{}", r.json());
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("a:") && message.contains("b: answered 503"), "{message}");

    let metrics = scrape(&gw);
    assert!(
        metric(&metrics, "siger_aggregate_parts_total{part=\"late\",result=\"timeout\",route=\"/partial\"}").unwrap()
            >= 1.0,
        "{metrics}"
    );
}

/// Aggregation parts go through the proxy's attempt engine: the same breaker refusal (message and
/// metric), the same count of failed attempts, the same outlier ejection with its log line.
#[test]
fn aggregation_parts_meet_the_breaker_and_outlier_detection_as_proxied_requests_do() {
    let slow = Echo::start("slow");
    request(slow.addr, "POST", "/__control/delay/1500", &[], b"");
    let users = Echo::start("users");
    let dead_port = DeadPort::new();
    let dead = dead_port.port();
    let gw = Gateway::start(&format!(
        r#"services:
  slow: {{targets: ["{slow}"], read_timeout: 10s, circuit_breaker: {{max_in_flight: 1}}}}
  flaky: {{targets: ["127.0.0.1:{dead}", "{users}"], lb: round_robin, retries: 1, outlier_detection: {{consecutive_failures: 1, max_ejected_percent: 50}}}}
routes:
  - {{path: /slow, service: slow, auth: public}}
  - path: /both
    auth: public
    aggregate:
      timeout: 5s
      on_failure: fail
      parts:
        - {{key: held, service: slow, path: /held}}
  - path: /flaky
    auth: public
    aggregate:
      parts:
        - {{key: user, service: flaky, path: /users/me}}
"#,
        slow = slow.addr,
        users = users.addr,
    ));
    // One proxied request holds the slow service's only slot.
    let addr = gw.addr;
    let held = std::thread::spawn(move || get(addr, "/slow/x").status);
    assert!(eventually(Duration::from_secs(5), || slow.served() == 1), "the proxied request reached its backend");
    let r = get(gw.addr, "/both");
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("held: service slow is at its limit of concurrent requests"), "{message}");
    assert_eq!(
        metric_of(&gw, "siger_circuit_refusals_total{reason=\"max_in_flight\",service=\"slow\"}"),
        1.0,
        "counted as the proxy counts it"
    );
    assert_eq!(held.join().unwrap(), 200);

    // Every part is answered (the refused backend is retried on the other), the refused one
    // is counted as a failed attempt and ejected, as a proxied request's would be.
    for _ in 0..4 {
        let r = get(gw.addr, "/flaky");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["user"]["backend"], "users");
    }
    assert!(metric_of(&gw, "siger_upstream_errors_total{kind=\"connect\",service=\"flaky\"}") >= 1.0);
    assert!(metric_of(&gw, "siger_upstream_retries_total{reason=\"connect\",service=\"flaky\"}") >= 1.0);
    assert!(metric_of(&gw, "siger_backend_ejections_total{service=\"flaky\"}") >= 1.0);
    let logged = format!("service flaky: backend 127.0.0.1:{dead} ejected for");
    assert!(eventually(Duration::from_secs(2), || gw.logs().contains(&logged)), "{}", gw.logs());
}
