//! Regressions for the defects an adversarial probe found (issue 10): each test sends what the
//! attacker sent, as raw bytes, to the real gateway in front of a real echo backend, and checks
//! what the client got and what the backend saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::jwt::*;
use crate::support::*;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Header values the backend received (lower-case name).
fn upstream(resp: &RawResponse, name: &str) -> Vec<String> {
    resp.json()["headers"][name]
        .as_array()
        .map_or_else(Vec::new, |v| v.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect())
}

fn raw(gw: &Gateway, request: &str) -> RawResponse {
    raw_request(gw.addr, request.as_bytes())
}

/// A host-restricted route that needs a token, next to a public catch-all.
fn host_gateway() -> (Echo, Gateway) {
    let echo = Echo::start("api");
    let gw = Gateway::start(&format!(
        "{auth}services:\n  api: {{targets: [\"{addr}\"]}}\nroutes:\n  - {{path: /billing/, host: api.example.com, service: api, roles: [admin]}}\n  - {{path: /, service: api, auth: public}}\n",
        auth = hs_auth(""),
        addr = echo.addr
    ));
    (echo, gw)
}

#[test]
fn absolute_form_without_host_is_routed_by_its_authority() {
    let (_echo, gw) = host_gateway();
    // The probe's request: no Host, the host only in the absolute-form target.
    let r = raw(&gw, "GET http://api.example.com/billing/x HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 401, "must reach the host route's auth: {}", String::from_utf8_lossy(&r.body));
    let token = hs256(&claims("alice", &["admin"]));
    let r = raw(
        &gw,
        &format!("GET http://API.example.com:80/billing/x?q=1 HTTP/1.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // The backend is told the host that was routed, and gets origin-form.
    assert_eq!(upstream(&r, "host"), ["API.example.com:80"]);
    assert_eq!(r.json()["target"], "/billing/x?q=1");
    assert_eq!(upstream(&r, "x-user-id"), ["alice"]);
    // A public path through the catch-all still works, with its host passed on.
    let r = raw(&gw, "GET http://other.example/x HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(upstream(&r, "host"), ["other.example"]);
    assert_eq!(upstream(&r, "x-forwarded-host"), ["other.example"]);
}

#[test]
fn http11_without_any_host_and_bad_hosts_are_400() {
    let (echo, gw) = host_gateway();
    let r = raw(&gw, "GET /billing/x HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad_request");
    assert!(r.json()["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    for host in ["host:abc", "a, b", "", "a b", "api.example.com:99999"] {
        let r = raw(&gw, &format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"));
        assert_eq!(r.status, 400, "Host: {host:?}");
        assert_eq!(r.json()["error"], "bad_request", "Host: {host:?}");
    }
    // HTTP/1.0 may omit Host, but with host routes in the table it would reach the backend's
    // default virtual host, which a host route may protect: refused too.
    let r = raw(&gw, "GET /x HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 400);
    // A target that is not a path is refused, not routed as `/`.
    let r = raw(&gw, "GET admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 400);
    let r = raw(&gw, "OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 400);
    // A fragment is never part of a request: Pingora drops it, so what follows `#` never
    // reaches a backend (or the router).
    let r = raw(&gw, "GET /x#/../billing/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["target"], "/x");
    let r = raw(&gw, "GET http://a/x#/../billing/x HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["target"], "/x");
    let seen = echo_count(&gw);
    assert_eq!(seen, 2, "only the fragment-less /x requests reached the backend");
    drop(echo);
}

/// Requests the gateway proxied, from its access log.
fn echo_count(gw: &Gateway) -> usize {
    assert!(eventually(Duration::from_secs(3), || gw.access_lines().len() >= 11));
    gw.access_lines().iter().filter(|l| l["status"] == 200).count()
}

/// Statuses of pipelined responses read from one connection.
fn read_statuses(reader: &mut BufReader<TcpStream>, n: usize) -> Vec<u16> {
    (0..n).map_while(|_| http1::read_response(reader, "GET").ok().flatten().map(|r| r.status)).collect()
}

#[test]
fn a_random_key_flood_on_one_route_leaves_other_routes_exact() {
    let echo = Echo::start("api");
    // The flooded route's service has no healthy backend, so each flood request costs the
    // gateway only routing and the limit check (503 after it); the limit is what is tested.
    let gw = Gateway::start(&format!(
        "access_log: {{enabled: false}}\nservices:\n  api: {{targets: [\"{addr}\"]}}\n  dead:\n    targets: [\"127.0.0.1:1\"]\n    health_check: {{interval: 200ms, timeout: 100ms, unhealthy: 1}}\nroutes:\n  - {{path: /flood, service: dead, auth: public, rate_limit: {{requests: 5, per: 30s, key: \"header:X-Key\"}}}}\n  - {{path: /quiet, service: api, auth: public, rate_limit: {{requests: 3, per: 30s, key: ip}}}}\n",
        addr = echo.addr
    ));
    assert!(eventually(Duration::from_secs(5), || metric_of(
        &gw,
        "siger_backends{service=\"dead\",state=\"unhealthy\"}"
    ) == 1.0));
    // 52,000 requests with random keys on /flood: 4 threads, keep-alive (Pingora serves
    // pipelined requests only when told to, so one request at a time).
    let sent = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (addr, sent) = (gw.addr, sent.clone());
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut answered = 0;
                for i in 0..13_000u64 {
                    let key = (t << 40 | i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    let request = format!("GET /flood HTTP/1.1\r\nHost: a\r\nX-Key: {key:x}\r\n\r\n");
                    stream.write_all(request.as_bytes()).unwrap();
                    let statuses = read_statuses(&mut reader, 1);
                    assert_eq!(statuses, [503], "a new key passes the limit and finds no backend");
                    answered += 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                answered
            })
        })
        .collect();
    // While the flood runs (30,000 random keys already counted in this window), a client never
    // seen before on the other route gets exactly its 3 requests.
    assert!(eventually(Duration::from_secs(60), || sent.load(Ordering::Relaxed) >= 30_000));
    let allowed = (0..6).filter(|_| get(gw.addr, "/quiet").status == 200).count();
    let flooded: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(flooded, 52_000);
    assert_eq!(allowed, 3);
    // Every flood key is counted exactly (none spilled into the approximate overflow sketch).
    let text = scrape(&gw);
    assert!(metric(&text, "siger_rate_limit_tracked_keys").is_some_and(|n| n >= 52_000.0), "{text}");
    assert_eq!(metric(&text, "siger_rate_limit_keys_overflow_total"), Some(0.0));
    drop(echo);
}

#[test]
fn several_forwarded_for_lines_are_one_chain() {
    let echo = Echo::start("api");
    let gw = Gateway::start(&format!(
        "trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]\nservices:\n  api: {{targets: [\"{addr}\"]}}\nroutes:\n  - {{path: /, service: api, auth: public}}\n",
        addr = echo.addr
    ));
    let r = raw(
        &gw,
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 198.51.100.7, 10.1.1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(upstream(&r, "x-real-ip"), ["198.51.100.7"], "the rightmost untrusted hop of all lines");
    assert_eq!(upstream(&r, "x-forwarded-for"), ["6.6.6.6, 198.51.100.7, 10.1.1.1, 127.0.0.1"]);
}

#[test]
fn underscore_header_names_never_reach_the_backend_by_default() {
    let echo = Echo::start("api");
    let body = |extra: &str| {
        format!(
            "{extra}{auth}services:\n  api: {{targets: [\"{addr}\"]}}\nroutes:\n  - {{path: /, service: api, auth: public}}\n",
            auth = hs_auth(""),
            addr = echo.addr
        )
    };
    let request = "GET /x HTTP/1.1\r\nHost: a\r\nX_User_Id: admin\r\nX_Forwarded_For: 1.2.3.4\r\nContent_Length: 5\r\nMy_Header: ok\r\nConnection: close\r\n\r\n";
    let gw = Gateway::start(&body(""));
    let r = raw(&gw, request);
    assert_eq!(r.status, 200);
    let headers = r.json()["headers"].as_object().unwrap().clone();
    assert!(headers.keys().all(|k| !k.contains('_')), "{headers:?}");
    drop(gw);
    // Opted in: ordinary underscore names pass, spellings of the gateway's own headers do not.
    let gw = Gateway::start(&body("limits: {underscores_in_headers: true}\n"));
    let r = raw(&gw, request);
    assert_eq!(upstream(&r, "my_header"), ["ok"]);
    for protected in ["x_user_id", "x_forwarded_for", "content_length"] {
        assert!(upstream(&r, protected).is_empty(), "{protected}");
    }
}

#[test]
fn path_parameters_cannot_move_a_request_to_another_route() {
    let echo = Echo::start("api");
    let gw = Gateway::start(&format!(
        "{auth}services:\n  api: {{targets: [\"{addr}\"]}}\nroutes:\n  - {{path: /admin, service: api, roles: [admin]}}\n  - {{path: /pub, service: api, auth: public, strip_prefix: true}}\n  - {{path: /, service: api, auth: public}}\n",
        auth = hs_auth(""),
        addr = echo.addr
    ));
    // A servlet container resolves these to /admin/x: they must meet /admin's auth.
    for path in ["/admin;x=1/x", "/;a/admin/x", "/admin;jsessionid=1"] {
        let r = raw(&gw, &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
        assert_eq!(r.status, 401, "{path}");
    }
    // Dot segments with parameters mean different things to different servers: refused.
    for path in ["/..;/admin/x", "/pub/..;/admin/x", "/pub/.;/x"] {
        let r = raw(&gw, &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
        assert_eq!(r.status, 400, "{path}");
    }
    // Parameters still reach the backend, and strip_prefix removes the whole prefix segment.
    let r = raw(&gw, "GET /pub;v=2/items;page=1?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["target"], "/items;page=1?q=1");
    let r = raw(&gw, "GET /other;v=2/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(r.json()["target"], "/other;v=2/x");
}

#[test]
fn transfer_codings_other_than_chunked_are_refused() {
    let echo = Echo::start("api");
    let gw = Gateway::start(&format!(
        "services:\n  api: {{targets: [\"{addr}\"]}}\nroutes:\n  - {{path: /, service: api, auth: public}}\n",
        addr = echo.addr
    ));
    let r = raw(&gw, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    assert_eq!(r.status, 501);
    assert_eq!(r.json()["error"], "not_implemented");
    assert_eq!(r.header("connection"), Some("close"));
    let r = raw(
        &gw,
        "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "hello");
}

#[test]
fn timeout_message_and_admin_404_are_clean() {
    let slow = Echo::start_with("slow", &["--delay-ms", "3000"]);
    let gw = Gateway::start(&format!(
        "services:\n  api: {{targets: [\"{addr}\"]}}\nroutes:\n  - {{path: /, service: api, auth: public, timeout: 300ms}}\n",
        addr = slow.addr
    ));
    let r = get(gw.addr, "/x");
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["message"], "upstream did not answer within 300ms");
    let r = get(gw.admin, "/nope");
    assert_eq!(r.status, 404);
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    assert!(!id.is_empty());
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));
}

/// A token with a hand-written payload, HS256-signed with the test secret.
fn hand_signed(header: &str, payload: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let message = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
    format!("{message}.{signature}")
}

#[test]
fn jwt_duplicates_crit_and_control_characters_are_refused() {
    let echo = Echo::start("api");
    let gw = Gateway::start(&format!(
        "{auth}services:\n  api: {{targets: [\"{addr}\"]}}\nroutes:\n  - {{path: /admin, service: api, roles: [admin]}}\n  - {{path: /, service: api}}\n",
        auth = hs_auth(""),
        addr = echo.addr
    ));
    let exp = now() + 600;
    let body = |extra: &str| format!(r#"{{"sub":"alice","iss":"siger","aud":"api","exp":{exp}{extra}}}"#);
    let call = |token: &str, path: &str| get_with(gw.addr, path, &[("Authorization", &format!("Bearer {token}"))]);
    let plain = r#"{"alg":"HS256","typ":"JWT"}"#;
    // The same token without the trick passes, so each refusal below is the trick's.
    assert_eq!(call(&hand_signed(plain, &body(r#","roles":["admin"]"#)), "/admin").status, 200);
    let dup = hand_signed(plain, &body(r#","roles":["user"],"roles":["admin"]"#));
    let r = call(&dup, "/admin");
    assert_eq!(r.status, 401, "duplicate roles");
    assert_eq!(r.json()["error"], "invalid_token");
    let crit = hand_signed(r#"{"alg":"HS256","crit":["exp"],"exp":1}"#, &body(""));
    assert_eq!(call(&crit, "/x").status, 401, "crit header");
    let dup_header = hand_signed(r#"{"alg":"HS256","x":1,"x":2}"#, &body(""));
    assert_eq!(call(&dup_header, "/x").status, 401, "a header member twice");
    let crit_hidden = hand_signed(r#"{"alg":"HS256","crit":["b64"],"b64":false,"b64":false}"#, &body(""));
    assert_eq!(call(&crit_hidden, "/x").status, 401, "crit behind a duplicate");
    // Roles the backend would read differently from the gateway.
    let comma_role = hand_signed(plain, &body(r#","roles":["user","admin,ops"]"#));
    assert_eq!(call(&comma_role, "/admin").status, 401, "a role name with a comma");
    let spaced = call(&hand_signed(plain, &body(r#","roles":"user admin""#)), "/admin");
    assert_eq!(spaced.status, 200);
    assert_eq!(upstream(&spaced, "x-user-roles"), ["user,admin"], "forwarded as checked");
    let crlf = hand_signed(plain, r#"{"sub":"alice\r\nX-Admin: 1","iss":"siger","aud":"api","exp":EXP}"#.replace("EXP", &exp.to_string()).as_str());
    assert_eq!(call(&crlf, "/x").status, 401, "CR/LF in a forwarded claim");
    let nul = hand_signed(plain, &format!(r#"{{"sub":"a\u0000b","iss":"siger","aud":"api","exp":{exp}}}"#));
    assert_eq!(call(&nul, "/x").status, 401, "NUL in a forwarded claim");
    // Non-ASCII text is a legitimate claim value and is forwarded as UTF-8.
    let r = call(&hand_signed(plain, &format!(r#"{{"sub":"José","iss":"siger","aud":"api","exp":{exp}}}"#)), "/x");
    assert_eq!(r.status, 200);
    assert_eq!(upstream(&r, "x-user-id"), ["José"]);
}

#[test]
fn headers_that_override_method_path_or_client_are_dropped_from_untrusted_clients() {
    let echo = Echo::start("api");
    let gw = Gateway::start(&format!(
        "services:\n  api: {{targets: [\"{addr}\"], lb: consistent_hash, hash_key: \"header:X-Tenant\"}}\nroutes:\n  - {{path: /, service: api, auth: public, rate_limit: {{requests: 100, per: 1m, key: \"header:X-Api-Key\"}}}}\n",
        addr = echo.addr
    ));
    let r = raw(
        &gw,
        "POST /items HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nX-HTTP-Method-Override: DELETE\r\nForwarded: for=10.0.0.1;host=admin\r\nX-Original-URL: /admin\r\nX-Forwarded-Host: admin.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let headers = r.json()["headers"].as_object().unwrap().clone();
    for gone in ["x-http-method-override", "forwarded", "x-original-url"] {
        assert!(!headers.contains_key(gone), "{gone}: {headers:?}");
    }
    assert_eq!(upstream(&r, "x-forwarded-host"), ["a"], "the routed host, not the client's claim");
    // A header that keys a limit or a hash must come on one line.
    for (name, value) in [("X-Api-Key", "k"), ("X-Tenant", "t")] {
        let r = raw(
            &gw,
            &format!("GET /x HTTP/1.1\r\nHost: a\r\n{name}: {value}1\r\n{name}: {value}2\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(r.status, 400, "{name}");
        assert!(r.json()["message"].as_str().unwrap().contains("more than once"), "{name}");
    }
}
