//! The admin status page (ARCHITECTURE.md §7.6) in a real headless browser: Debian's Chromium
//! loads `GET /` from the admin listener and the DOM it renders is compared with `GET /status`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use support::*;

/// The DOM Chromium renders for `url` (headless, isolated profile, no network beyond loopback).
fn rendered_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--timeout=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .output()
        .expect("chromium runs (scripts/install-deps installs it)");
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

#[test]
fn the_status_page_shows_routes_and_a_backend_its_health_check_took_down() {
    let echo = Echo::start("echo");
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = Gateway::start(&format!(
        r#"services:
  api:
    targets: ["{echo}", "{dead}"]
    health_check: {{interval: 200ms, timeout: 100ms, unhealthy: 1}}
    circuit_breaker: {{failure_rate: 50%, min_requests: 10, window: 10s, open_for: 2s}}
  spare:
    targets: [{{addr: "{echo}", weight: 3}}]
    lb: least_conn
routes:
  - {{path: /api, service: api, auth: public, methods: [GET, POST]}}
  - {{path: /spare, service: spare, auth: public}}
"#,
        echo = echo.addr
    ));
    let status = || get(gw.admin, "/status").json();
    let backend = |v: &Value, addr: &str| -> Value {
        v["services"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["backends"].as_array().unwrap().clone())
            .find(|b| b["address"] == addr)
            .unwrap()
    };
    assert!(eventually(Duration::from_secs(10), || backend(&status(), &dead)["healthy"] == false), "{}", status());

    let json = status();
    let dom = rendered_dom(&format!("http://{}/", gw.admin));
    // Every route, as the JSON lists it.
    let routes = json["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2);
    for r in routes {
        let label = r["label"].as_str().unwrap();
        let target = r["target"].as_str().unwrap();
        assert!(dom.contains(&format!("<tr class=\"route\"><td class=\"\">{label}</td>")), "route {label} in {dom}");
        assert!(dom.contains(&format!("<td class=\"\">{target}</td>")), "{target}");
    }
    assert!(dom.contains("<td class=\"\">GET, POST</td>"));
    // Every backend with its health; the dead one shows as down.
    for s in json["services"].as_array().unwrap() {
        for b in s["backends"].as_array().unwrap() {
            let (addr, up) = (b["address"].as_str().unwrap(), b["healthy"].as_bool().unwrap());
            let shown = if up { "<td class=\"up\">up</td>" } else { "<td class=\"down\">down</td>" };
            assert!(dom.contains(&format!("<td class=\"address\">{addr}</td>{shown}")), "{addr} {up} in {dom}");
        }
    }
    assert!(dom.contains(&format!("<td class=\"address\">{dead}</td><td class=\"down\">down</td>")));
    assert!(dom.contains(&format!("<td class=\"address\">{}</td><td class=\"up\">up</td>", echo.addr)));
    assert_eq!(backend(&json, &dead)["healthy"], false);
    assert_eq!(json["services"][0]["circuit"], "closed");
    assert!(dom.contains("circuit <span class=\"closed\">closed</span>"));
    assert_eq!(json["services"][1]["backends"][0]["weight"], 3);
    assert_eq!(json["services"][1]["backends"][0]["in_flight"], 0, "least_conn services count in-flight requests");
    assert!(json["services"][0]["backends"][0]["in_flight"].is_null());
    assert!(dom.contains("Configuration generation <b>1</b>"));
    assert!(dom.contains("<meta http-equiv=\"refresh\" content=\"5\">"), "the page refreshes itself");

    // A failed reload shows on both.
    std::fs::write(&gw.config_path, "listen: [oops\n").unwrap();
    assert_ne!(gw.reload().status, 200);
    let json = status();
    assert_eq!(json["last_reload"]["result"], "failed");
    assert_eq!(json["generation"], 1);
    let dom = rendered_dom(&format!("http://{}/", gw.admin));
    assert!(dom.contains("<span id=\"last-reload\" class=\"failed\">failed</span>"), "{dom}");
}

#[test]
fn status_answers_only_reads_and_never_shows_secrets() {
    let echo = Echo::start("echo");
    let secret = "status-page-secret-0123456789abcdef";
    let gw = Gateway::start(&format!(
        "auth:\n  jwt:\n    algorithms: [HS256]\n    secret: \"{secret}\"\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /api, service: api}}\n",
        echo.addr
    ));
    let page = get(gw.admin, "/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.header("content-security-policy").is_some_and(|v| v.contains("default-src 'none'")));
    let json = get(gw.admin, "/status");
    for body in [&page.body, &json.body] {
        assert!(!String::from_utf8_lossy(body).contains(secret));
    }
    assert_eq!(json.json()["routes"][0]["auth"], "required");
    let post = request(gw.admin, "POST", "/status", &[], b"");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    // Never on the public listener.
    assert_eq!(get(gw.addr, "/status").status, 404);
}
