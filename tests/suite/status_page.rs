//! The admin status page (ARCHITECTURE.md §7.6) in a real headless browser: Debian's Chromium
//! loads `GET /` from the admin listener and the DOM it renders is compared with `GET /status`.
//! And what a browser must not be made to do to the admin listener: a page of another origin
//! posting to it, a rebound DNS name reading it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use serde_json::Value;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

/// The DOM Chromium renders for `url` (headless, isolated profile, no network beyond loopback),
/// with `extra` flags.
pub(crate) fn rendered_dom(url: &str, extra: &[&str]) -> String {
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
        .args(extra)
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
    let dead_port = DeadPort::new();
    let dead = dead_port.addr().to_string();
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
    let dom = rendered_dom(&format!("http://{}/", gw.admin), &[]);
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
    let dom = rendered_dom(&format!("http://{}/", gw.admin), &[]);
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

/// A one-page web site on loopback, another origin than the admin listener (the attacker's):
/// every request is answered with `html`.
fn serve_page(html: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = http1::read_request(&mut std::io::BufReader::new(&mut stream));
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    addr
}

/// A GET naming `host` in its `Host` header.
fn get_as(addr: SocketAddr, path: &str, host: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw_request(addr, req.as_bytes())
}

fn cached_gateway(echo: &Echo) -> Gateway {
    Gateway::start(&format!(
        "services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /c, service: s, auth: public, cache: {{ttl: 60s}}}}\n",
        echo.addr
    ))
}

#[test]
fn a_page_of_another_origin_can_neither_purge_the_cache_nor_reload() {
    let echo = Echo::start("echo");
    let gw = cached_gateway(&echo);
    get(gw.addr, "/c/a");
    assert_eq!(get(gw.addr, "/c/a").header("x-cache"), Some("HIT"));

    // What a malicious page can send without a CORS preflight: `no-cors` fetches with a
    // text/plain body, and a form posted as text/plain.
    let admin = format!("http://{}", gw.admin);
    let page = serve_page(format!(
        r#"<!doctype html><html><body><p id="out">pending</p>
<iframe name="sink"></iframe>
<form id="f" method="POST" enctype="text/plain" target="sink" action="{admin}/config/reload"><input name='{{"a":"' value='"}}'></form>
<script>
document.getElementById("f").submit();
Promise.allSettled([
  fetch("{admin}/cache/purge", {{method: "POST", mode: "no-cors", body: '{{"all": true}}'}}),
  fetch("{admin}/config/reload", {{method: "POST", mode: "no-cors", body: "{{}}"}}),
]).then(r => {{ document.getElementById("out").textContent = "sent " + r.map(x => x.status).join(","); }});
</script></body></html>"#
    ));
    let dom = rendered_dom(&format!("http://{page}/"), &["--virtual-time-budget=5000"]);
    assert!(dom.contains("sent fulfilled,fulfilled"), "the requests went out: {dom}");

    assert_eq!(get(gw.addr, "/c/a").header("x-cache"), Some("HIT"), "the cache was not purged");
    let config = get(gw.admin, "/config").json();
    assert_eq!(config["last_reload"], serde_json::Value::Null, "no reload happened: {config}");
    assert_eq!(metric_of(&gw, "siger_config_reloads_total{result=\"ok\"}"), 0.0);
}

#[test]
fn a_rebound_name_reads_nothing_from_the_admin_listener() {
    let echo = Echo::start("echo");
    let gw = cached_gateway(&echo);
    // DNS rebinding: the attacker's name now resolves to the admin listener, and the browser
    // (same origin: rebind.test) would hand the attacker's script whatever it answers.
    let rules = "--host-resolver-rules=MAP rebind.test 127.0.0.1";
    for path in ["/status", "/config", "/metrics", "/"] {
        let dom = rendered_dom(&format!("http://rebind.test:{}{path}", gw.admin.port()), &[rules]);
        assert!(dom.contains("misdirected_request") && dom.contains("request_id"), "{path}: {dom}");
        assert!(!dom.contains("generation") && !dom.contains("siger_"), "{path}: {dom}");
    }
    // The same through a name the operator listed (applied on reload).
    let listed = format!(
        "admin:\n  listen: \"{{{{ADMIN}}}}\"\n  allowed_hosts: [\"*.rebind.test\"]\nservices:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /c, service: s, auth: public}}\n",
        echo.addr
    );
    gw.rewrite(&(HEAD.replace("admin:\n  listen: \"{{ADMIN}}\"\n", "") + &listed));
    assert_eq!(gw.reload().status, 200, "{}", gw.logs());
    let rules = "--host-resolver-rules=MAP gw1.rebind.test 127.0.0.1";
    let dom = rendered_dom(&format!("http://gw1.rebind.test:{}/status", gw.admin.port()), &[rules]);
    assert!(dom.contains("generation"), "{dom}");
}

#[test]
fn admin_refusals_are_json_errors_with_a_request_id() {
    let echo = Echo::start("echo");
    let gw = cached_gateway(&echo);
    let check = |r: &RawResponse, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        let body = r.json();
        assert_eq!(body["error"], code, "{body}");
        let id = body["request_id"].as_str().unwrap_or_default();
        assert!(!id.is_empty() && r.header("x-request-id") == Some(id), "{body}");
    };
    let text = [("Content-Type", "text/plain")];
    check(&request(gw.admin, "POST", "/config/reload", &text, b"{}"), 415, "unsupported_media_type");
    check(&request(gw.admin, "POST", "/cache/purge", &[], br#"{"all": true}"#), 415, "unsupported_media_type");
    check(&get_as(gw.admin, "/status", "evil.example", &[]), 421, "misdirected_request");
    check(&get_with(gw.admin, "/config", &[("Origin", "http://evil.example")]), 403, "forbidden");
    check(&get(gw.admin, "/nothing"), 404, "not_found");
    check(&request(gw.admin, "DELETE", "/config/reload", &[], b""), 405, "method_not_allowed");
    let json = [("Content-Type", "application/json")];
    check(&request(gw.admin, "POST", "/cache/purge", &json, b"not json"), 400, "bad_request");
    check(&request(gw.admin, "POST", "/cache/purge", &json, br#"{"path": "/elsewhere"}"#), 404, "not_found");
    // Probes answer whatever name a balancer uses; the operator's own calls go through.
    assert_eq!(get_as(gw.admin, "/health", "node-7.internal", &[]).status, 200);
    assert_eq!(get_as(gw.admin, "/status", "localhost:1", &[("Origin", "http://localhost:1")]).status, 200);
    let purge = request(gw.admin, "POST", "/cache/purge", &json, br#"{"all": true}"#);
    assert_eq!(purge.status, 200, "{}", String::from_utf8_lossy(&purge.body));
    assert!(purge.header("x-request-id").is_some());
    // A refused reload lists every problem, through the same mapping.
    std::fs::write(&gw.config_path, "listen: [oops\n").unwrap();
    let refused = gw.reload();
    check(&refused, 422, "config_refused");
    assert!(refused.json()["errors"].as_array().is_some_and(|e| !e.is_empty()), "{}", refused.json());
}
