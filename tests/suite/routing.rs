//! Routing end to end: longest prefix, strip_prefix, method/host matching, path normalisation
//! (no route bypass), 404/405 JSON, the public /health.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;

fn two_services() -> (Echo, Echo, Gateway) {
    let api = Echo::start("api");
    let admin = Echo::start("admin");
    let gw = Gateway::start(&format!(
        r#"
services:
  api: {{targets: ["{api}"]}}
  admin: {{targets: ["{admin}"]}}
routes:
  - {{path: /, service: api, auth: public}}
  - {{path: /api/, service: api, auth: public, strip_prefix: true}}
  - {{path: /api/admin, service: admin, auth: public, methods: [GET, PUT]}}
  - {{path: /billing, service: admin, auth: public, host: billing.example.com}}
  - {{path: /billing, service: api, auth: public, host: billing.example.com, methods: [POST]}}
"#,
        api = api.addr,
        admin = admin.addr
    ));
    (api, admin, gw)
}

#[test]
fn longest_prefix_strip_prefix_and_query() {
    let (_a, _b, gw) = two_services();
    let r = get(gw.addr, "/api/users/7?x=1&y=%20z");
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["backend"], "api");
    assert_eq!(echo["target"], "/users/7?x=1&y=%20z", "prefix stripped, query unchanged");

    let r = get(gw.addr, "/api/admin/panel");
    assert_eq!(backend_of(&r), "admin", "longer prefix wins");
    assert_eq!(r.json()["path"], "/api/admin/panel", "no strip_prefix on this route");

    let r = get(gw.addr, "/api");
    assert_eq!(r.json()["target"], "/", "the bare prefix becomes /");
    let r = get(gw.addr, "/apix");
    assert_eq!(r.json()["path"], "/apix", "/apix is not under /api (segment boundary)");
    assert_eq!(backend_of(&r), "api");
}

#[test]
fn method_and_host_matching() {
    let (_a, _b, gw) = two_services();
    let r = request(gw.addr, "DELETE", "/api/admin/x", &[], b"");
    assert_eq!(r.status, 405, "a longer prefix with other methods is not bypassed to a shorter route");
    assert_eq!(r.header("allow"), Some("GET, PUT"));
    assert_eq!(r.json()["error"], "method_not_allowed");
    let r = request(gw.addr, "PUT", "/api/admin/x", &[], b"");
    assert_eq!(backend_of(&r), "admin");

    let billing = |method: &str, host: &str| {
        raw_request(
            gw.addr,
            format!("{method} /billing/1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        )
    };
    assert_eq!(backend_of(&billing("GET", "billing.example.com")), "admin");
    assert_eq!(
        backend_of(&billing("GET", "BILLING.example.com:8080")),
        "admin",
        "host is case-insensitive and ignores the port"
    );
    assert_eq!(backend_of(&billing("POST", "billing.example.com")), "api", "the route naming methods wins for POST");
    let other = billing("GET", "other.example.com");
    assert_eq!(backend_of(&other), "api", "other hosts fall back to /");
    assert_eq!(other.json()["path"], "/billing/1");
}

#[test]
fn normalised_paths_route_like_the_backend_resolves_them() {
    let (_a, _b, gw) = two_services();
    // Each of these reaches the admin route, whose GET-only rule must apply: a DELETE is 405,
    // never a DELETE to the catch-all.
    for path in [
        "/api/x/../admin/y",
        "/api/%2e%2e/api/admin/y",
        "/api/x/%2E%2e/admin/y",
        "//api//admin/y",
        "/api/./admin/y",
        "/%61pi/admin/y",
    ] {
        let r = request(gw.addr, "DELETE", path, &[], b"");
        assert_eq!(r.status, 405, "{path} must be matched as /api/admin/y");
        let r = get(gw.addr, path);
        assert_eq!(backend_of(&r), "admin", "{path}");
        assert_eq!(r.json()["path"], "/api/admin/y", "{path}: the backend sees the normalised path");
    }
    for path in
        ["/api%2Fadmin/y", "/api/..%2Fadmin", "/api%5cadmin", "/api/%00", "/..", "/a/../../admin", "/api\\admin"]
    {
        let r = get(gw.addr, path);
        assert_eq!(r.status, 400, "{path} must be refused");
        let body = r.json();
        assert_eq!(body["error"], "bad_request");
        assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    }
}

#[test]
fn misses_are_json_404_with_request_id() {
    let backend = Echo::start("only");
    let gw = Gateway::start(&format!(
        "services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /only, service: s, auth: public}}\n",
        backend.addr
    ));
    let r = get_with(gw.addr, "/nothing/here", &[("X-Request-Id", "trace-42")]);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-request-id"), Some("trace-42"));
    let body = r.json();
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["request_id"], "trace-42");
    assert!(body["message"].as_str().is_some());

    let health = get(gw.addr, "/health");
    assert_eq!(health.status, 200, "public /health answers without a route");
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(get(gw.admin, "/ready").json()["ready"], true);
}
