//! Body transformation (issue 28, docs/transform.md) through the real binary: request bodies
//! reshaped and re-encoded on their way to siger-echo (which answers what it received),
//! response bodies filtered, renamed, wrapped and unwrapped, statuses remapped, and every
//! answer that cannot be transformed refused 502 rather than passed through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::jwt::*;
use crate::support::*;
use serde_json::{json, Value};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// Routes on `echo` (prefix stripped): request transforms on `/req`, `/form`, `/json`; response
/// transforms on `/resp`, `/deny`, `/unwrap`, `/status`, `/small`; `/plain` untransformed.
fn routes(echo: SocketAddr, extra: &str) -> String {
    format!(
        r#"{auth}services:
  s: {{targets: ["{echo}"], read_timeout: 10s}}
{extra}routes:
  - path: /req
    service: s
    strip_prefix: true
    transform:
      request:
        rename: {{/qty: /quantity}}
        remove: [/internal, /lines/*/debug]
        set:
          /customer/id: "$claim_sub"
          /customer/age: {{value: "$claim_age", type: integer}}
          /source: web
          /priority: 3
  - {{path: /form, service: s, auth: public, strip_prefix: true, transform: {{request: {{format: form}}}}}}
  - {{path: /json, service: s, auth: public, strip_prefix: true, transform: {{request: {{set: {{/n: {{value: "5", type: integer}}}}}}}}}}
  - path: /resp
    service: s
    auth: public
    strip_prefix: true
    transform:
      response:
        allow: [/method, /path, /headers/accept-encoding]
        rename: {{/method: /verb}}
        wrap: data
  - {{path: /deny, service: s, auth: public, strip_prefix: true, transform: {{response: {{deny: [/headers, /tls_client, /lines/*/secret]}}}}}}
  - {{path: /unwrap, service: s, auth: public, strip_prefix: true, transform: {{response: {{unwrap: /headers, allow: ["/*/0"]}}}}}}
  - path: /status
    service: s
    auth: public
    strip_prefix: true
    transform:
      response:
        allow: [/path]
        status:
          404: {{status: 200, body: {{found: false, request: "$request_id"}}}}
          409: 422
  - {{path: /small, service: s, auth: public, strip_prefix: true, transform: {{response: {{allow: [/path], max_body: 64}}}}}}
  - {{path: /strip, service: s, auth: public, strip_prefix: true, max_body: 512KiB, transform: {{request: {{remove: [/internal]}}}}}}
  - {{path: /plain, service: s, auth: public, strip_prefix: true}}
"#,
        auth = hs_auth(""),
    )
}

fn gateway(echo: &Echo) -> Gateway {
    Gateway::start(&routes(echo.addr, ""))
}

/// What echo received as a body, read as JSON.
fn sent_json(resp: &RawResponse) -> Value {
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    serde_json::from_str(resp.json()["body"].as_str().unwrap()).unwrap()
}

/// The header `name` echo received (its first value).
fn sent_header(resp: &RawResponse, name: &str) -> Option<String> {
    resp.json()["headers"][name][0].as_str().map(str::to_string)
}

fn body_json(resp: &RawResponse) -> Value {
    serde_json::from_slice(&resp.body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&resp.body)))
}

/// The response's `Content-Length` is its body's length.
fn assert_exact_length(resp: &RawResponse) {
    let length = resp.header("content-length").unwrap_or_else(|| panic!("no Content-Length: {:?}", resp.headers));
    assert_eq!(length.parse::<usize>().unwrap(), resp.body.len());
}

#[test]
fn request_bodies_are_renamed_pruned_and_set_from_claims() {
    let echo = Echo::start("b1");
    let gw = gateway(&echo);
    let mut claims = claims("user-7", &[]);
    claims["age"] = json!("42");
    let bearer = format!("Bearer {}", hs256(&claims));
    // The client tries to forge the customer and sends fields the route removes.
    let body = br#"{"qty": 2, "internal": true, "customer": {"id": "forged"}, "lines": [{"sku": "x", "debug": 1}], "priority": "low"}"#;
    let resp = request(
        gw.addr,
        "POST",
        "/req/orders",
        &[("Authorization", &bearer), ("Content-Type", "application/json")],
        body,
    );
    let sent = sent_json(&resp);
    assert_eq!(
        sent,
        json!({"quantity": 2, "customer": {"id": "user-7", "age": 42}, "lines": [{"sku": "x"}], "priority": 3, "source": "web"})
    );
    let text = resp.json()["body"].as_str().unwrap().to_string();
    assert_eq!(sent_header(&resp, "content-length"), Some(text.len().to_string()), "Content-Length recomputed");
    assert_eq!(resp.json()["body_bytes"].as_u64().unwrap() as usize, text.len());

    // A claim that does not convert to the asked type is the client's 400, naming the pointer.
    let mut claims = claims_of("user-8");
    claims["age"] = json!("forty");
    let bearer = format!("Bearer {}", hs256(&claims));
    let resp = request(gw.addr, "POST", "/req/orders", &[("Authorization", &bearer)], br#"{"qty": 1}"#);
    assert_eq!(resp.status, 400, "{}", String::from_utf8_lossy(&resp.body));
    assert!(body_json(&resp)["message"].as_str().unwrap().contains("/customer/age"), "{:?}", body_json(&resp));

    // A GET without a body is forwarded as it is: `set` invents no body.
    let resp = get_with(gw.addr, "/req/orders", &[("Authorization", &bearer)]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["body_bytes"], 0);
}

fn claims_of(sub: &str) -> Value {
    claims(sub, &[])
}

#[test]
fn json_becomes_a_form_and_a_form_becomes_json() {
    let echo = Echo::start("b1");
    let gw = gateway(&echo);
    let resp = request(
        gw.addr,
        "POST",
        "/form/legacy",
        &[("Content-Type", "application/json")],
        br#"{"name": "Ada L", "customer": {"id": "u1"}, "tags": ["a", "b"], "n": 12.50}"#,
    );
    assert_eq!(resp.status, 200);
    let body = resp.json()["body"].as_str().unwrap().to_string();
    assert_eq!(body, "name=Ada+L&customer%5Bid%5D=u1&tags%5B0%5D=a&tags%5B1%5D=b&n=12.50");
    assert_eq!(sent_header(&resp, "content-type").as_deref(), Some("application/x-www-form-urlencoded"));
    assert_eq!(sent_header(&resp, "content-length"), Some(body.len().to_string()));

    let resp = request(
        gw.addr,
        "POST",
        "/json/modern",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"name=Ada+L&customer%5Bid%5D=u1&tag=a&tag=b",
    );
    assert_eq!(sent_json(&resp), json!({"name": "Ada L", "customer": {"id": "u1"}, "tag": ["a", "b"], "n": 5}));
    assert_eq!(sent_header(&resp, "content-type").as_deref(), Some("application/json"));
}

#[test]
fn bodies_that_are_not_json_are_refused_415_and_bad_json_400() {
    let echo = Echo::start("b1");
    let gw = gateway(&echo);
    for path in ["/json/x", "/form/x"] {
        let resp = request(gw.addr, "POST", path, &[("Content-Type", "text/plain")], b"hello");
        assert_eq!(resp.status, 415, "{path}: {}", String::from_utf8_lossy(&resp.body));
        let body = body_json(&resp);
        assert_eq!(body["error"], "unsupported_media_type", "{body}");
        assert!(body["request_id"].is_string());
        // No Content-Type and not JSON: 415 as well.
        let resp = request(gw.addr, "POST", path, &[], b"hello");
        assert_eq!(resp.status, 415, "{path}");
        let resp = request(gw.addr, "POST", path, &[("Content-Type", "application/json")], b"{\"a\": ");
        assert_eq!(resp.status, 400, "{path}");
        assert_eq!(body_json(&resp)["error"], "bad_request");
    }
    let served = get(echo.addr, "/__control/served").json()["served"].as_u64().unwrap();
    assert_eq!(served, 0, "no refused body reached the backend");
}

#[test]
fn a_request_body_larger_than_the_retry_buffer_is_transformed_whole() {
    let echo = Echo::start("b1");
    let gw = gateway(&echo);
    let big = "x".repeat(200 * 1024);
    let body = format!(r#"{{"internal": "{big}", "qty": 1}}"#);
    let resp = request(gw.addr, "POST", "/strip/orders", &[("Content-Type", "application/json")], body.as_bytes());
    // Held whole as it streamed, transformed at its end and sent chunked (its length unknown
    // when the head left).
    assert_eq!(sent_json(&resp), json!({"qty": 1}));
    assert_eq!(resp.json()["body_bytes"], 9);
    // One that fits the retry buffer has its exact length.
    let resp = request(
        gw.addr,
        "POST",
        "/strip/orders",
        &[("Content-Type", "application/json")],
        br#"{"internal": 1, "qty": 1}"#,
    );
    assert_eq!(sent_json(&resp), json!({"qty": 1}));
    assert_eq!(sent_header(&resp, "content-length").as_deref(), Some("9"));
    // Over the route's max_body: 413.
    let huge = format!(r#"{{"internal": "{}"}}"#, "x".repeat(600 * 1024));
    let resp = request(gw.addr, "POST", "/strip/orders", &[("Content-Type", "application/json")], huge.as_bytes());
    assert_eq!(resp.status, 413);
}

#[test]
fn responses_are_filtered_renamed_and_wrapped_with_an_exact_length() {
    let echo = Echo::start("b1");
    let gw = gateway(&echo);
    let resp = get(gw.addr, "/resp/items?x=1");
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    // The backend was asked for an uncoded answer; nothing outside `allow` passes.
    assert_eq!(
        body_json(&resp),
        json!({"data": {"verb": "GET", "path": "/items", "headers": {"accept-encoding": ["identity"]}}})
    );
    assert_exact_length(&resp);
    assert!(resp.header("x-request-id").is_some());
    assert_eq!(resp.header("content-type"), Some("application/json"));

    let resp = get(gw.addr, "/deny/items");
    let body = body_json(&resp);
    assert!(body.get("headers").is_none() && body.get("tls_client").is_none(), "{body}");
    assert_eq!(body["path"], "/items");
    assert_exact_length(&resp);

    // A range of a JSON document cannot be transformed: the backend is asked for the whole,
    // and the client gets the whole transformed body.
    let resp = get_with(gw.addr, "/resp/items", &[("Range", "bytes=0-3")]);
    assert_eq!(resp.status, 200);
    assert_eq!(body_json(&resp)["data"]["path"], "/items");
    assert!(resp.header("content-range").is_none());
    let seen = body_json(&get_with(gw.addr, "/unwrap/items", &[("Range", "bytes=0-3"), ("If-Range", "\"x\"")]));
    assert!(seen.get("range").is_none() && seen.get("if-range").is_none(), "{seen}");
    assert_eq!(seen["accept-encoding"], json!(["identity"]));
    // HEAD: the backend's head, without the length of a body that was never transformed.
    let resp = request(gw.addr, "HEAD", "/resp/items", &[], b"");
    assert_eq!(resp.status, 200);
    assert!(resp.body.is_empty());

    // `unwrap` then `allow` with `/*/`: the first value of every header echo received.
    let resp = get_with(gw.addr, "/unwrap/items", &[("X-Two", "a"), ("X-Two", "b")]);
    let body = body_json(&resp);
    assert_eq!(body["x-two"], json!(["a"]), "{body}");
    assert!(body.as_object().unwrap().values().all(|v| v.as_array().is_some_and(|a| a.len() == 1)), "{body}");
}

#[test]
fn answers_that_cannot_be_transformed_are_502_never_passed_through() {
    let echo = Echo::start("b1");
    let gw = gateway(&echo);
    for (path, reason) in [
        ("/resp/x?fixed", "text/plain"),
        ("/resp/bytes/100", "application/octet-stream"),
        ("/small/items", "larger than 64 bytes"),
        ("/resp/x?respond_header=Content-Encoding:gzip", "gzip"),
        ("/resp/x?respond_header=Content-Encoding:compress", "compress"),
        ("/unwrap/x?respond_header=Content-Type:application/problem+json", ""),
    ] {
        let resp = get(gw.addr, path);
        if reason.is_empty() {
            // A JSON media type other than application/json is JSON: transformed.
            assert_eq!(resp.status, 200, "{path}");
            continue;
        }
        assert_eq!(resp.status, 502, "{path}: {}", String::from_utf8_lossy(&resp.body));
        let body = body_json(&resp);
        assert_eq!(body["error"], "bad_gateway", "{path}: {body}");
        assert!(!String::from_utf8_lossy(&resp.body).contains("backend\""), "{path}: the backend's body leaked");
        assert_exact_length(&resp);
        assert!(
            eventually(Duration::from_secs(10), || gw.logs().contains(reason)),
            "{path}: the reason `{reason}` is logged:\n{}",
            gw.logs()
        );
    }
}

/// A backend answering every request with `body` coded as `coding` (one thread, one answer per
/// connection), counting nothing: the test only reads what the gateway makes of it.
fn coded_backend(coding: &'static str, body: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = crate::support::http1::read_request(&mut reader);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: {coding}\r\nContent-Length: {}\r\nETag: \"v1\"\r\nLast-Modified: Mon, 07 Dec 2026 00:00:00 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        }
    });
    addr
}

#[test]
fn coded_backend_answers_are_decoded_and_the_etag_of_a_changed_body_dropped() {
    let doc = json!({"id": 7, "secret": "s", "name": "n"}).to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(doc.as_bytes()).unwrap();
    let gzip = coded_backend("gzip", gz.finish().unwrap());
    let identity = coded_backend("identity", doc.clone().into_bytes());
    let gw = Gateway::start(&format!(
        "services:\n  gz: {{targets: [\"{gzip}\"]}}\n  id: {{targets: [\"{identity}\"]}}\nroutes:\n  - {{path: /gz, service: gz, auth: public, transform: {{response: {{allow: [/id, /name]}}}}}}\n  - {{path: /id, service: id, auth: public, transform: {{response: {{deny: [/secret]}}}}}}\n  - {{path: /raw, service: gz, auth: public}}\n"
    ));
    for path in ["/gz", "/id"] {
        let resp = get(gw.addr, path);
        assert_eq!(resp.status, 200, "{path}: {}", String::from_utf8_lossy(&resp.body));
        assert_eq!(body_json(&resp), json!({"id": 7, "name": "n"}), "{path}");
        assert_exact_length(&resp);
        assert!(resp.header("content-encoding").is_none(), "{path}");
        assert!(resp.header("etag").is_none(), "{path}: the backend's ETag named other bytes");
        assert!(resp.header("last-modified").is_some(), "{path}");
    }
    // Untransformed, the same backend's ETag and coding pass as they are.
    let resp = get(gw.addr, "/raw");
    assert_eq!(resp.header("etag"), Some("\"v1\""));
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
}

#[test]
fn statuses_are_remapped_and_a_rule_body_replaces_the_backends() {
    let echo = Echo::start("b1");
    let gw = gateway(&echo);
    let resp = get_with(gw.addr, "/status/status/404", &[("X-Request-Id", "req-404")]);
    assert_eq!(resp.status, 200);
    assert_eq!(body_json(&resp), json!({"found": false, "request": "req-404"}));
    assert_exact_length(&resp);
    let resp = get(gw.addr, "/status/status/409");
    assert_eq!(resp.status, 422);
    assert_eq!(body_json(&resp), json!({"path": "/status/409"}));
    // A status without a rule keeps its status, its body transformed.
    let resp = get(gw.addr, "/status/status/500");
    assert_eq!(resp.status, 500);
    assert_eq!(body_json(&resp), json!({"path": "/status/500"}));
}

#[test]
fn the_gateways_own_errors_are_never_transformed() {
    let echo = Echo::start("b1");
    let dead = Reserved::new();
    let gw = Gateway::start(&routes(echo.addr, &format!("  dead: {{targets: [\"{}\"], connect_timeout: 1s}}\n", dead.addr())).replace(
        "  - {path: /plain, service: s, auth: public, strip_prefix: true}\n",
        "  - {path: /plain, service: s, auth: public, strip_prefix: true}\n  - {path: /gone, service: dead, auth: public, transform: {response: {wrap: data}}}\n",
    ));
    let resp = get(gw.addr, "/gone");
    assert_eq!(resp.status, 502, "{}", String::from_utf8_lossy(&resp.body));
    let body = body_json(&resp);
    assert!(body.get("data").is_none() && body["error"].is_string(), "{body}");
    // No token on an authenticated transforming route: the gateway's 401, as it is.
    let resp = request(gw.addr, "POST", "/req/x", &[("Content-Type", "application/json")], b"{}");
    assert_eq!(resp.status, 401);
    let body = body_json(&resp);
    assert!(body.get("data").is_none() && body["error"].is_string(), "{body}");
}

#[test]
fn a_reload_applies_new_transforms_and_a_broken_one_keeps_the_old() {
    let echo = Echo::start("b1");
    let config = |allow: &str| {
        format!(
            "{HEAD}services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /r, service: s, auth: public, strip_prefix: true, transform: {{response: {{{allow}}}}}}}\n",
            echo.addr
        )
    };
    let gw = Gateway::start_raw(&config("allow: [/method]"));
    assert_eq!(body_json(&get(gw.addr, "/r/x")), json!({"method": "GET"}));
    gw.rewrite(&config("allow: [/path]"));
    assert_eq!(gw.reload().status, 200);
    assert!(eventually(Duration::from_secs(10), || body_json(&get(gw.addr, "/r/x")) == json!({"path": "/x"})));
    let generation = gw.generation();
    gw.rewrite(&config("allow: [/path], deny: [/method]"));
    let resp = gw.reload();
    assert_ne!(resp.status, 200, "a broken transform is refused");
    let text = String::from_utf8_lossy(&resp.body).to_string();
    assert!(text.contains("routes[0].transform.response.deny"), "{text}");
    assert_eq!(gw.generation(), generation);
    assert_eq!(body_json(&get(gw.addr, "/r/x")), json!({"path": "/x"}));
}

#[test]
fn check_names_bad_pointers_allow_with_deny_and_unknown_variables_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("siger.yaml");
    std::fs::write(
        &path,
        "listen: [\"127.0.0.1:1\"]\nservices:\n  s: {targets: [\"127.0.0.1:2\"]}\nroutes:\n  - path: /\n    service: s\n    auth: public\n    transform:\n      request:\n        set:\n          /b: \"$nope\"\n      response:\n        allow: [/id, /a~2]\n        deny: [/x]\n",
    )
    .unwrap();
    let out = std::process::Command::new(SIGER).arg("-t").arg("-c").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for expected in ["routes[0].transform.request.set./b (line 11)", "routes[0].transform.response.deny (line 14)"] {
        assert!(stderr.contains(expected), "`{expected}` in:\n{stderr}");
    }
    assert!(stderr.contains("$nope"), "{stderr}");
    // The pointer mistake is reported once the other two are fixed (all at once per stage).
    std::fs::write(
        &path,
        "listen: [\"127.0.0.1:1\"]\nservices:\n  s: {targets: [\"127.0.0.1:2\"]}\nroutes:\n  - path: /\n    service: s\n    auth: public\n    transform:\n      response:\n        allow: [/id, /a~2]\n",
    )
    .unwrap();
    let out = std::process::Command::new(SIGER).arg("-t").arg("-c").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routes[0].transform.response.allow[1] (line 10)"), "{stderr}");
    // What a transform cannot be combined with is named, not silently skipped; a cache is
    // combined with it (the transformed answer is stored).
    std::fs::write(
        &path,
        "listen: [\"127.0.0.1:1\"]\nservices:\n  s: {targets: [\"127.0.0.1:2\"]}\nroutes:\n  - {path: /c, service: s, auth: public, cache: {ttl: 60s}, transform: {response: {wrap: data}}}\n  - {path: /a, auth: public, aggregate: {parts: [{key: k, service: s, path: /k, transform: {allow: [/a], deny: [/b]}}]}, transform: {response: {wrap: data}}}\n",
    )
    .unwrap();
    let out = std::process::Command::new(SIGER).arg("-t").arg("-c").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("routes[1].transform (line 6)"), "{stderr}");
    assert!(!stderr.contains("routes[0]"), "cache with transform.response is valid: {stderr}");
    // An aggregation part's transform is checked as a route's, named below the part.
    std::fs::write(
        &path,
        "listen: [\"127.0.0.1:1\"]\nservices:\n  s: {targets: [\"127.0.0.1:2\"]}\nroutes:\n  - path: /a\n    auth: public\n    aggregate:\n      parts:\n        - key: k\n          service: s\n          path: /k\n          transform:\n            allow: [/a]\n            deny: [/b]\n",
    )
    .unwrap();
    let out = std::process::Command::new(SIGER).arg("-t").arg("-c").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routes[0].aggregate.parts[0].transform.deny (line 14)"), "{stderr}");
}

#[test]
fn aggregation_parts_take_allow_rename_and_unwrap() {
    let echo = Echo::start("b1");
    let gw = Gateway::start(&format!(
        r#"services:
  s: {{targets: ["{}"]}}
routes:
  - path: /both
    auth: public
    aggregate:
      parts:
        - {{key: a, service: s, path: /a, transform: {{allow: [/path, /method], rename: {{/method: /verb}}}}}}
        - {{key: h, service: s, path: /h, transform: {{unwrap: /headers, allow: [/accept]}}}}
        - {{key: bad, service: s, path: "/x?fixed", transform: {{allow: [/path]}}}}
"#,
        echo.addr
    ));
    let resp = get(gw.addr, "/both");
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.header("siger-completed"), Some("false"), "the untransformable part failed");
    assert_eq!(
        body_json(&resp),
        json!({"a": {"path": "/a", "verb": "GET"}, "h": {"accept": ["application/json"]}, "bad": null})
    );
}

#[test]
fn compression_sees_the_transformed_body() {
    let echo = Echo::start("b1");
    let gw = Gateway::start(&format!(
        "services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /z, service: s, auth: public, strip_prefix: true, compress: {{algorithms: [gzip], min_size: 10}}, transform: {{response: {{allow: [/headers], wrap: data}}}}}}\n",
        echo.addr
    ));
    let resp = get_with(gw.addr, "/z/x", &[("Accept-Encoding", "gzip"), ("X-Pad", &"p".repeat(600))]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding"), Some("gzip"), "{:?}", resp.headers);
    let mut text = String::new();
    flate2::read::GzDecoder::new(&resp.body[..]).read_to_string(&mut text).unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["data"]["headers"]["x-pad"][0].as_str().unwrap().len(), 600);
    assert_eq!(body.as_object().unwrap().len(), 1);
    assert!(body["data"].get("path").is_none());
}

#[test]
fn a_fetched_exchange_still_validates_the_clients_body() {
    let echo = Echo::start("b1");
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("order.json");
    std::fs::write(&schema, r#"{"type": "object", "required": ["qty"], "properties": {"qty": {"type": "integer"}}}"#)
        .unwrap();
    let gw = Gateway::start(&format!(
        "services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /v, service: s, auth: public, strip_prefix: true, validate: {{schema: {}}}, transform: {{request: {{rename: {{/qty: /quantity}}}}, response: {{allow: [/body]}}}}}}\n",
        echo.addr,
        schema.display()
    ));
    // The schema sees the client's body (before the rename), the backend the renamed one.
    let resp = request(gw.addr, "POST", "/v/o", &[("Content-Type", "application/json")], br#"{"qty": 2}"#);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(body_json(&resp), json!({"body": "{\"quantity\":2}"}));
    let resp = request(gw.addr, "POST", "/v/o", &[("Content-Type", "application/json")], br#"{"qty": "two"}"#);
    assert_eq!(resp.status, 400);
    let resp = request(gw.addr, "POST", "/v/o", &[("Content-Type", "text/plain")], b"qty=2");
    assert_eq!(resp.status, 415);
    assert_eq!(get(echo.addr, "/__control/served").json()["served"], 1, "refused bodies never reached the backend");
}

#[test]
fn a_retried_request_sends_the_transformed_body_again_and_chunked_bodies_are_transformed() {
    // e1 answers 503 to everything, e2 serves: requests that start at e1 are retried at e2.
    let e1 = Echo::start("e1");
    let e2 = Echo::start("e2");
    assert_eq!(request(e1.addr, "POST", "/__control/status/503", &[], b"").status, 200);
    let gw = Gateway::start(&format!(
        "services:\n  s: {{targets: [\"{}\", \"{}\"], retry_on: [503], retries: 1}}\nroutes:\n  - {{path: /t, service: s, auth: public, strip_prefix: true, transform: {{request: {{remove: [/internal], format: form}}}}}}\n",
        e1.addr, e2.addr
    ));
    let body = br#"{"internal": "x", "name": "Ada"}"#;
    for _ in 0..4 {
        let resp = request(gw.addr, "PUT", "/t/o", &[("Content-Type", "application/json")], body);
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        assert_eq!(resp.json()["backend"], "e2");
        assert_eq!(resp.json()["body"], "name=Ada");
        assert_eq!(sent_header(&resp, "content-length").as_deref(), Some("8"));
    }
    assert!(metric_of(&gw, "siger_upstream_retries_total{reason=\"status\",service=\"s\"}") >= 1.0);
    // A chunked body from the client: read whole, sent with its new length.
    let mut raw = b"PUT /t/o HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in body.chunks(7) {
        raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        raw.extend_from_slice(part);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let resp = raw_request(gw.addr, &raw);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.json()["body"], "name=Ada");
    assert_eq!(sent_header(&resp, "content-length").as_deref(), Some("8"));
}

#[test]
fn transforms_hold_over_http2() {
    let echo = Echo::start("b1");
    let gw = Gateway::start_h2c(&format!(
        "services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /f, service: s, auth: public, strip_prefix: true, transform: {{request: {{format: form, remove: [/internal]}}}}}}\n  - {{path: /r, service: s, auth: public, strip_prefix: true, transform: {{request: {{remove: [/internal]}}, response: {{allow: [/body, /version]}}}}}}\n",
        echo.addr
    ));
    let client = reqwest::blocking::Client::builder().http2_prior_knowledge().build().unwrap();
    let body = r#"{"internal": 1, "name": "Ada"}"#;
    let resp = client.post(gw.url("/f/o")).header("content-type", "application/json").body(body).send().unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let seen: Value = resp.json().unwrap();
    assert_eq!(seen["body"], "name=Ada");
    assert_eq!(seen["headers"]["content-length"][0], "8");
    // Larger than what is read ahead over HTTP/2: held as it streams, transformed at its end.
    let big = format!(r#"{{"internal": "{}", "name": "Ada"}}"#, "x".repeat(100 * 1024));
    let resp = client.post(gw.url("/f/o")).header("content-type", "application/json").body(big).send().unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().unwrap();
    assert_eq!((seen["body"].as_str(), seen["body_bytes"].as_u64()), (Some("name=Ada"), Some(8)));
    let resp = client.post(gw.url("/r/o")).header("content-type", "application/json").body(body).send().unwrap();
    assert_eq!(resp.status(), 200);
    let length = resp.headers()["content-length"].to_str().unwrap().to_string();
    let text = resp.text().unwrap();
    assert_eq!(length, text.len().to_string());
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"body": "{\"name\":\"Ada\"}", "version": "HTTP/1.1"})
    );
}

#[test]
fn a_fetched_exchange_is_the_traces_upstream_span() {
    let otlp = crate::support::otlp::OtlpReceiver::start();
    let echo = Echo::start("b1");
    let gw = Gateway::start(&format!(
        "tracing: {{otlp_endpoint: \"{}\", service_name: edge-test, sample_ratio: 1.0}}\nservices:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /t, service: s, auth: public, strip_prefix: true, transform: {{response: {{allow: [/headers/traceparent]}}}}}}\n",
        otlp.endpoint(),
        echo.addr
    ));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = get_with(gw.addr, "/t/x", &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))]);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let sent = body_json(&resp)["headers"]["traceparent"][0].as_str().unwrap().to_string();
    let backend_parent = sent.split('-').nth(2).unwrap().to_string();
    assert!(eventually(Duration::from_secs(10), || otlp.trace(trace).len() >= 2), "{:?}", otlp.spans());
    let spans = otlp.trace(trace);
    let client = spans.iter().find(|s| s.span_id() == backend_parent).unwrap_or_else(|| panic!("{spans:?}"));
    let server = spans.iter().find(|s| s.span_id() == client.parent_span_id()).expect("the server span is its parent");
    assert_eq!(server.attr("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(client.attr("http.response.status_code").as_deref(), Some("200"));
}

#[test]
fn the_cache_stores_the_transformed_answer() {
    let echo = Echo::start("b1");
    let gw = Gateway::start(&format!(
        "services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /t, service: s, auth: public, strip_prefix: true, cache: {{ttl: 60s}}, compress: {{algorithms: [gzip], min_size: 10}}, transform: {{response: {{allow: [/path, /method, /query], rename: {{/method: /verb}}}}}}}}\n  - {{path: /swr, service: s, auth: public, cache: {{ttl: 1s, stale_while_revalidate: 30s}}, transform: {{response: {{allow: [/path]}}}}}}\n",
        echo.addr
    ));
    let before = echo.served();
    let first = get(gw.addr, "/t/a");
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(body_json(&first), json!({"path": "/a", "verb": "GET", "query": ""}));
    assert_exact_length(&first);
    let second = get(gw.addr, "/t/a");
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.body, first.body, "the stored answer is the transformed one");
    assert_exact_length(&second);
    assert!(second.header("x-request-id").is_some_and(|id| Some(id) != first.header("x-request-id")));
    assert_eq!(echo.served(), before + 1, "the hit did not reach the backend");

    // A HEAD that misses asks the backend for the whole answer (GET) and stores it.
    let head = request(gw.addr, "HEAD", "/t/b", &[], b"");
    assert_eq!((head.status, head.header("x-cache")), (200, Some("MISS")));
    assert!(head.body.is_empty());
    let get_b = get(gw.addr, "/t/b");
    assert_eq!(get_b.header("x-cache"), Some("HIT"));
    assert_eq!(body_json(&get_b), json!({"path": "/b", "verb": "GET", "query": ""}));
    assert_eq!(head.header("content-length"), Some(get_b.body.len().to_string().as_str()));

    // Compression encodes the stored, transformed body per client.
    let gz = get_with(gw.addr, "/t/a", &[("Accept-Encoding", "gzip")]);
    assert_eq!((gz.header("x-cache"), gz.header("content-encoding")), (Some("HIT"), Some("gzip")));
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz.body[..]).read_to_string(&mut text).unwrap();
    assert_eq!(text.as_bytes(), &first.body[..]);

    // What cannot be transformed is a 502 and never stored; what must not be stored is not.
    let n = echo.served();
    for _ in 0..2 {
        let resp = get(gw.addr, "/t/x?fixed");
        assert_eq!(resp.status, 502, "{}", String::from_utf8_lossy(&resp.body));
    }
    assert_eq!(echo.served(), n + 2, "a refused answer is fetched again");
    let never = "/t/n?respond_header=Cache-Control:no-store";
    get(gw.addr, never);
    assert_ne!(get(gw.addr, never).header("x-cache"), Some("HIT"));

    // A purge removes the transformed entry; the next request fetches and stores it again.
    let r = request(gw.admin, "POST", "/cache/purge", &[("Content-Type", "application/json")], br#"{"path": "/t/a"}"#);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(get(gw.addr, "/t/a").header("x-cache"), Some("MISS"));
    assert_eq!(get(gw.addr, "/t/a").header("x-cache"), Some("HIT"));
    // Counted when each request's log line is written, just after its answer.
    let hits = || metric_of(&gw, "siger_cache_requests_total{result=\"hit\",route=\"/t\"}");
    assert!(eventually(Duration::from_secs(5), || hits() == 4.0), "hits counted: {}", hits());

    // Stale while revalidating: the stale transformed copy at once, one refetch behind it.
    assert_eq!(get(gw.addr, "/swr/x").header("x-cache"), Some("MISS"));
    // The 1 s TTL must run out; asking meanwhile would be the refetch under test.
    std::thread::sleep(Duration::from_millis(1300));
    let before = echo.served();
    let stale = get(gw.addr, "/swr/x");
    assert_eq!(stale.header("x-cache"), Some("STALE"));
    assert_eq!(body_json(&stale), json!({"path": "/swr/x"}));
    assert!(eventually(Duration::from_secs(3), || echo.served() == before + 1), "one background refetch");
    assert!(eventually(Duration::from_secs(3), || get(gw.addr, "/swr/x").header("x-cache") == Some("HIT")));
}

#[test]
fn an_http2_miss_on_a_transforming_cache_fills_in_the_background() {
    let echo = Echo::start("b1");
    let gw = Gateway::start_h2c(&format!(
        "services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /t, service: s, auth: public, strip_prefix: true, cache: {{ttl: 60s}}, transform: {{response: {{allow: [/path, /version]}}}}}}\n",
        echo.addr
    ));
    let client = reqwest::blocking::Client::builder().http2_prior_knowledge().build().unwrap();
    let before = echo.served();
    let mut bodies = Vec::new();
    for expected in ["MISS", "HIT"] {
        let resp = client.get(gw.url("/t/h2")).send().unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-cache"], expected);
        bodies.push(resp.text().unwrap());
    }
    assert_eq!(serde_json::from_str::<Value>(&bodies[0]).unwrap(), json!({"path": "/h2", "version": "HTTP/1.1"}));
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(echo.served(), before + 1);
}
