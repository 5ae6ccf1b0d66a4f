//! REST ↔ gRPC transcoding and gRPC-Web through the real siger binary to the real gRPC test
//! server (siger-grpc-echo, tonic), issue 27 / ARCHITECTURE §8.2: every google.api.http mapping
//! rule, unary and server-streaming answers, the status table and `details`, wrong JSON, large
//! messages, gRPC-Web binary and text, `-t` errors and reloads, and one check against Google's
//! own protobuf and grpcio (tests/fixtures/grpc/reference.py) reading the same descriptors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use base64::Engine;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const GRPC_ECHO: &str = env!("CARGO_BIN_EXE_siger-grpc-echo");
const SIGER: &str = env!("CARGO_BIN_EXE_siger");

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpc")
}

/// Compile `files` (default: shop.proto with google/rpc) into `out`.
fn compile(out: &Path, files: &[&str]) {
    let status = Command::new(fixtures().join("descriptors")).arg(out).args(files).status().expect("descriptors");
    assert!(status.success(), "tests/fixtures/grpc/descriptors {files:?} failed");
}

/// siger-grpc-echo on an ephemeral port, killed on drop.
struct Backend {
    child: Child,
    addr: SocketAddr,
}

impl Backend {
    fn start(set: &Path) -> Backend {
        let mut child = Command::new(GRPC_ECHO)
            .arg("--descriptors")
            .arg(set)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn siger-grpc-echo");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr =
            line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("said {line:?}")).parse().unwrap();
        Backend { child, addr }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The descriptor set, a backend serving it and a gateway with the transcoding route.
struct Setup {
    set: PathBuf,
    backend: Backend,
    gw: Gateway,
    _dir: tempfile::TempDir,
}

/// `extra` goes into the route's map (`timeout: 3s`, `cors: {...}`, …); `transcode` into
/// `grpc_transcode`.
fn setup(extra: &str, transcode: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("shop.pb");
    compile(&set, &[]);
    let backend = Backend::start(&set);
    let gw = Gateway::start(&config(&set, backend.addr, extra, transcode));
    Setup { set, backend, gw, _dir: dir }
}

fn config(set: &Path, backend: SocketAddr, extra: &str, transcode: &str) -> String {
    format!(
        "services:\n  orders: {{targets: [\"{backend}\"], http2: true}}\nroutes:\n  - {{path: /, service: orders, auth: public, grpc_web: true, max_body: 4MiB{extra}, grpc_transcode: {{descriptors: {}, services: [shop.v1.Orders]{transcode}}}}}\n",
        set.display()
    )
}

fn call(gw: &Gateway, method: &str, path: &str, body: &str) -> RawResponse {
    let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &[("Content-Type", "application/json")] };
    request(gw.addr, method, path, headers, body.as_bytes())
}

fn ok(r: &RawResponse) -> Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

#[test]
fn every_mapping_rule_reaches_the_grpc_method() {
    let s = setup("", "");
    let gw = &s.gw;
    // A path variable, and an additional binding with two.
    assert_eq!(ok(&call(gw, "GET", "/v1/orders/42", "")), json!({"id": "42", "status": "PENDING"}));
    assert_eq!(
        ok(&call(gw, "GET", "/v1/shops/s1/orders/42", "")),
        json!({"id": "42", "shop": "s1", "status": "PENDING"})
    );
    // A resource name over several segments (values percent-decoded; the gateway refuses an
    // encoded `/` in any path before routing).
    assert_eq!(ok(&call(gw, "GET", "/v1/projects/p1/items/i%202", "")), json!({"name": "projects/p1/items/i 2"}));
    // `**`.
    assert_eq!(ok(&call(gw, "GET", "/v1/files/a/b/c.txt", "")), json!({"path": "a/b/c.txt"}));
    // Query parameters: scalars, repeated, enums, nested, 64-bit and well-known types.
    let r = ok(&call(
        gw,
        "GET",
        "/v1/orders?page_size=5&statuses=PENDING&statuses=2&customer.displayName=Ann&minTotal=9007199254740993&since=2024-01-01T00:00:00Z&gift=true&ids=1&ids=2",
        "",
    ));
    assert_eq!(
        r["request"],
        json!({"pageSize": 5, "statuses": ["PENDING", "SHIPPED"], "customer": {"displayName": "Ann"},
               "minTotal": "9007199254740993", "since": "2024-01-01T00:00:00Z", "gift": true, "ids": ["1", "2"]})
    );
    // `body: "order"` with a path variable.
    let r = ok(&call(gw, "POST", "/v1/shops/s9/orders", r#"{"id": "o1", "totalCents": "12", "tags": ["x"]}"#));
    assert_eq!(r, json!({"id": "o1", "shop": "s9", "totalCents": "12", "tags": ["x"]}));
    // A nested path variable, the body one field, the rest from the query.
    let r = ok(&call(gw, "PATCH", "/v1/orders/o9?updateMask=note,tags", r#"{"note": "n"}"#));
    assert_eq!(r, json!({"id": "o9", "note": "n", "fields": "note,tags"}));
    // `body: "*"` with a custom verb.
    let r = ok(&call(gw, "POST", "/v1/orders/o3:cancel", r#"{"reason": "late", "notify": true}"#));
    assert_eq!(r, json!({"id": "o3", "status": "CANCELLED", "note": "late"}));
    // DELETE without a body; google.protobuf.Empty answers `{}`.
    assert_eq!(ok(&call(gw, "DELETE", "/v1/orders/o3", "")), json!({}));
    // response_body.
    assert_eq!(
        ok(&call(gw, "GET", "/v1/orders/o4/status", "")),
        json!({"state": "SHIPPED", "updatedAt": "2024-01-02T03:04:05Z"})
    );
    // A custom HTTP method.
    assert_eq!(ok(&call(gw, "SEARCH", "/v1/orders/o5", "")), json!({"id": "o5", "status": "PENDING"}));
    // Every method at POST /<package>.<Service>/<Method>.
    let r = ok(&call(gw, "POST", "/shop.v1.Orders/GetOrder", r#"{"id": "g", "shop": "s"}"#));
    assert_eq!(r, json!({"id": "g", "shop": "s", "status": "PENDING"}));
    // Unbound paths and verbs.
    let r = call(gw, "GET", "/v1/nothing", "");
    assert_eq!((r.status, r.json()["error"].as_str()), (404, Some("not_found")));
    let r = call(gw, "PUT", "/v1/orders/1", "");
    assert_eq!(r.status, 405);
    assert!(r.header("allow").is_some_and(|a| a.contains("GET") && a.contains("DELETE")), "{:?}", r.headers);
}

#[test]
fn server_streaming_answers_an_array_or_ndjson_as_messages_arrive() {
    let s = setup("", "");
    let gw = &s.gw;
    let r = call(gw, "GET", "/v1/shops/s/events?count=3", "");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "written as messages arrive");
    assert_eq!(
        r.json(),
        json!([
            {"orderId": "s-0", "status": "PENDING"},
            {"orderId": "s-1", "status": "PENDING", "sequence": 1},
            {"orderId": "s-2", "status": "PENDING", "sequence": 2}
        ])
    );
    let r = request(gw.addr, "GET", "/v1/shops/s/events?count=2", &[("Accept", "application/x-ndjson")], b"");
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> =
        String::from_utf8(r.body.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        lines,
        [json!({"orderId": "s-0", "status": "PENDING"}), json!({"orderId": "s-1", "status": "PENDING", "sequence": 1})]
    );
    // No messages: an empty array.
    assert_eq!(ok(&call(gw, "GET", "/v1/shops/s/events?count=0", "")), json!([]));
    // A failure after messages: the error is the last element.
    let r = call(gw, "GET", "/v1/shops/s/events?count=2&failWith=14", "");
    let items = r.json();
    assert_eq!(items.as_array().map(Vec::len), Some(3), "{items}");
    assert_eq!(items[2]["error"], "unavailable");
    assert_eq!(items[2]["message"], "the watch broke off");
    // A failure before any message (in real trailers, after a 200 head): an error answer.
    let r = call(gw, "GET", "/v1/shops/s/events?count=0&failWith=5", "");
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"], "not_found");
    // Client and bidirectional streaming are not transcoded.
    let r = call(gw, "POST", "/v1/orders:upload", r#"{"id": "1"}"#);
    assert_eq!(r.status, 501, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"], "not_implemented");
    assert!(r.json()["message"].as_str().unwrap().contains("shop.v1.Orders.UploadOrders"));
    let r = call(gw, "POST", "/shop.v1.Orders/Chat", r#"{"text": "hi"}"#);
    assert_eq!(r.status, 501);
}

#[test]
fn grpc_statuses_map_to_http_with_message_request_id_and_details() {
    let s = setup("", "");
    let gw = &s.gw;
    let table = [
        (1, 499),
        (2, 500),
        (3, 400),
        (4, 504),
        (5, 404),
        (6, 409),
        (7, 403),
        (8, 429),
        (9, 400),
        (10, 409),
        (11, 400),
        (12, 501),
        (13, 500),
        (14, 503),
        (15, 500),
        (16, 401),
    ];
    for (code, status) in table {
        let r = call(gw, "POST", "/v1/fail", &format!(r#"{{"code": {code}, "message": "failed № {code}"}}"#));
        assert_eq!(r.status, status, "gRPC code {code}: {}", String::from_utf8_lossy(&r.body));
        let body = r.json();
        assert_eq!(body["code"], code);
        assert_eq!(body["message"], format!("failed № {code}"));
        assert_eq!(body["request_id"].as_str(), r.header("x-request-id"));
        assert!(body.get("details").is_none());
    }
    // An error in the trailers of a trailers-only answer from a unary call.
    let r = call(gw, "GET", "/v1/orders/missing", "");
    assert_eq!((r.status, r.json()["message"].as_str()), (404, Some("order missing not found")));
    // grpc-status-details-bin, printed with the descriptors' types.
    let r = call(gw, "POST", "/v1/fail", r#"{"code": 3, "message": "bad id", "withDetails": true}"#);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["details"],
        json!([{"@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": "id", "description": "must not be empty"}]}])
    );
    assert_eq!(r.json()["error"], "invalid_argument");
}

#[test]
fn wrong_json_is_a_400_naming_the_field() {
    let s = setup("", "");
    let gw = &s.gw;
    let bad = |method: &str, path: &str, body: &str, names: &str| {
        let r = call(gw, method, path, body);
        assert_eq!(r.status, 400, "{path} {body}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["error"], "bad_request");
        let message = r.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(names), "{body} → {message}");
    };
    bad("POST", "/v1/echo", r#"{"order": {"totalCents": "ten"}}"#, "order.totalCents");
    bad("POST", "/v1/echo", r#"{"order": {"colour": "red"}}"#, "order.colour");
    bad("POST", "/v1/echo", r#"{"text": 5}"#, "text");
    bad("POST", "/v1/echo", r#"{"text": "#, "not JSON");
    bad("GET", "/v1/orders?pageSize=many", "", "pageSize");
    bad("GET", "/v1/orders?colour=red", "", "colour");
    bad("GET", "/v1/orders/1", r#"{"id": "2"}"#, "no request body");
}

#[test]
fn one_mebibyte_messages_both_ways_and_the_message_limit() {
    let s = setup("", ", max_message: 2MiB");
    let gw = &s.gw;
    let payload: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 7 + 3) as u8).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&payload);
    let r = call(gw, "POST", "/v1/echo", &format!(r#"{{"payload": "{encoded}", "text": "big"}}"#));
    let body = ok(&r);
    assert_eq!(body["payload"].as_str(), Some(encoded.as_str()), "1 MiB there and back");
    // A 1 MiB answer to a small request.
    let r = call(gw, "POST", "/v1/echo", r#"{"replySize": 1048576}"#);
    let reply = base64::engine::general_purpose::STANDARD.decode(ok(&r)["payload"].as_str().unwrap()).unwrap();
    assert_eq!(reply.len(), 1 << 20);
    // Over `max_message` either way.
    let r = call(gw, "POST", "/v1/echo", r#"{"replySize": 3000000}"#);
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    let big = base64::engine::general_purpose::STANDARD.encode(vec![1u8; 2_200_000]);
    let r = call(gw, "POST", "/v1/echo", &format!(r#"{{"payload": "{big}"}}"#));
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn the_route_timeout_becomes_grpc_timeout_and_client_metadata_passes() {
    let s = setup(", timeout: 3s", "");
    let r = request(
        s.gw.addr,
        "POST",
        "/v1/echo",
        &[("Content-Type", "application/json"), ("X-Tenant", "t1"), ("X-Request-Id", "rid-123")],
        br#"{"text": "hi"}"#,
    );
    let body = ok(&r);
    assert_eq!(body["grpcTimeout"], "3000000u");
    assert_eq!(body["metadata"]["x-tenant"], "t1");
    assert_eq!(body["metadata"]["x-request-id"], "rid-123");
    assert_eq!(body["metadata"]["content-type"], "application/grpc");
    assert_eq!(body["metadata"]["te"], "trailers");
}

#[test]
fn a_unary_call_past_the_route_timeout_is_a_504_and_no_backend_a_502() {
    let s = setup(", timeout: 1s", "");
    let started = std::time::Instant::now();
    let r = call(&s.gw, "POST", "/v1/echo", r#"{"text": "slow", "delayMs": 4000}"#);
    assert_eq!(r.status, 504, "{}", String::from_utf8_lossy(&r.body));
    assert!(started.elapsed() < Duration::from_millis(3500), "answered at the deadline: {:?}", started.elapsed());
    assert!(r.json()["request_id"].as_str().is_some());
    // Within the deadline: answered.
    assert_eq!(ok(&call(&s.gw, "POST", "/v1/echo", r#"{"text": "quick", "delayMs": 10}"#))["text"], "quick");
    // A service with nothing listening.
    let dead = DeadPort::new();
    let gw = Gateway::start(&config(&s.set, dead.addr(), "", ""));
    let r = call(&gw, "GET", "/v1/orders/1", "");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (502, Some("bad_gateway")),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let series = "siger_upstream_errors_total{kind=\"connect\",service=\"orders\"}";
    assert!(eventually(Duration::from_secs(10), || metric(&scrape(&gw), series).is_some_and(|n| n >= 1.0)), "{series}");
    // One backend, one failed attempt: counted once, as a proxied request's would be.
    assert_eq!(metric(&scrape(&gw), series), Some(1.0), "{series}");
}

/// A gRPC-Web request of `message` (JSON of the method's input) to `method`; the answer's
/// messages (as JSON) and trailers.
fn grpc_web(
    gw: &Gateway,
    pool: &DescriptorPool,
    method: &str,
    message: Value,
    text: bool,
    extra: &[(&str, &str)],
) -> (RawResponse, Vec<Value>, Vec<(String, String)>) {
    let desc = pool.get_service_by_name("shop.v1.Orders").unwrap().methods().find(|m| m.name() == method).unwrap();
    let input = DynamicMessage::deserialize(desc.input(), message).unwrap();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(input.encoded_len() as u32).to_be_bytes());
    frame.extend_from_slice(&input.encode_to_vec());
    let (content_type, body) = if text {
        ("application/grpc-web-text", base64::engine::general_purpose::STANDARD.encode(&frame).into_bytes())
    } else {
        ("application/grpc-web+proto", frame)
    };
    let mut headers = vec![("Content-Type", content_type), ("X-Grpc-Web", "1")];
    headers.extend_from_slice(extra);
    let r = request(gw.addr, "POST", &format!("/shop.v1.Orders/{method}"), &headers, &body);
    let mut bytes = if text {
        // Each chunk is padded base64 on its own: decode quantum by quantum.
        let clean: Vec<u8> = r.body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        let mut out = Vec::new();
        let mut rest = &clean[..];
        while !rest.is_empty() {
            let end = rest.iter().position(|b| *b == b'=').map_or(rest.len(), |p| {
                let mut e = p;
                while e < rest.len() && rest[e] == b'=' {
                    e += 1;
                }
                e
            });
            out.extend(base64::engine::general_purpose::STANDARD.decode(&rest[..end]).unwrap());
            rest = &rest[end..];
        }
        out
    } else {
        r.body.clone()
    };
    let mut messages = Vec::new();
    let mut trailers = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let payload: Vec<u8> = bytes[5..5 + len].to_vec();
        if bytes[0] & 0x80 != 0 {
            for line in String::from_utf8(payload).unwrap().split("\r\n").filter(|l| !l.is_empty()) {
                let (k, v) = line.split_once(':').unwrap();
                trailers.push((k.to_string(), v.trim().to_string()));
            }
        } else {
            let m = DynamicMessage::decode(desc.output(), payload.as_slice()).unwrap();
            messages.push(serde_json::to_value(&m).unwrap());
        }
        bytes.drain(..5 + len);
    }
    assert!(bytes.is_empty(), "the body is whole frames");
    (r, messages, trailers)
}

fn trailer<'a>(trailers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    trailers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn grpc_web_binary_and_text_with_trailers_in_the_body_and_cors() {
    let s = setup(", cors: {origins: [\"https://app.example\"], headers: [content-type, x-grpc-web], expose: [grpc-status, grpc-message]}", "");
    let pool = DescriptorPool::decode(std::fs::read(&s.set).unwrap().as_slice()).unwrap();
    let origin = [("Origin", "https://app.example")];
    for text in [false, true] {
        let (r, messages, trailers) = grpc_web(&s.gw, &pool, "GetOrder", json!({"id": "7"}), text, &origin);
        assert_eq!(r.status, 200);
        let expected = if text { "application/grpc-web-text+proto" } else { "application/grpc-web+proto" };
        assert_eq!(r.header("content-type"), Some(expected));
        assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));
        assert_eq!(messages, [json!({"id": "7", "status": "PENDING"})]);
        assert_eq!(trailer(&trailers, "grpc-status"), Some("0"), "text={text}: {trailers:?}");
        // Server streaming: every message, then the trailers.
        let (_, messages, trailers) =
            grpc_web(&s.gw, &pool, "WatchOrders", json!({"shop": "w", "count": 3}), text, &[]);
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[2]["orderId"], "w-2");
        assert_eq!(trailer(&trailers, "grpc-status"), Some("0"));
        // A failure: trailers-only, its status in the head and in the trailer frame.
        let (r, messages, trailers) = grpc_web(&s.gw, &pool, "GetOrder", json!({"id": "missing"}), text, &[]);
        assert_eq!(r.status, 200);
        assert!(messages.is_empty());
        assert_eq!(r.header("grpc-status"), Some("5"));
        assert_eq!(trailer(&trailers, "grpc-status"), Some("5"));
        assert_eq!(trailer(&trailers, "grpc-message"), Some("order%20missing%20not%20found"));
        // A failure after messages: in the trailer frame.
        let (_, messages, trailers) =
            grpc_web(&s.gw, &pool, "WatchOrders", json!({"shop": "w", "count": 1, "failWith": 8}), text, &[]);
        assert_eq!(messages.len(), 1);
        assert_eq!(trailer(&trailers, "grpc-status"), Some("8"));
    }
    // The preflight a browser sends first.
    let r = request(
        s.gw.addr,
        "OPTIONS",
        "/shop.v1.Orders/GetOrder",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type,x-grpc-web"),
        ],
        b"",
    );
    assert!(r.status == 204 || r.status == 200, "{}", r.status);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example"));
}

#[test]
fn the_answers_agree_with_grpcio_and_protobufs_json_format() {
    let s = setup("", "");
    // The same request through the gateway (REST) and straight to the backend with grpcio
    // (reading the same descriptor set): the same answer, printed by each side's JSON mapping.
    let order = json!({
        "id": "o1", "status": "SHIPPED", "totalCents": "-9007199254740993", "tags": ["a", "b"],
        "createdAt": "2024-02-29T23:59:59.123Z", "ttl": "3600.500s", "note": "n",
        "attributes": {"k": [1.5, "two", null, {"x": true}]},
        "extra": {"@type": "type.googleapis.com/shop.v1.Customer", "id": "c1", "displayName": "Ann"},
        "quantities": {"apple": 3}, "signature": "/+8=", "customer": {"id": "c2"},
        "weight": 0.25, "gift": true, "sequence": "18446744073709551615", "fields": "a.b,cD",
        "limit": "7", "recipients": [{"id": "r1"}],
    });
    let request_json = json!({"text": "same", "payload": "AAEC", "order": order});
    let r = call(&s.gw, "POST", "/shop.v1.Orders/Echo", &request_json.to_string());
    let mut ours = ok(&r);
    let mut child = Command::new("python3")
        .arg(fixtures().join("reference.py"))
        .args(["call", s.set.to_str().unwrap(), &s.backend.addr.to_string(), "/shop.v1.Orders/Echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/install-deps installs grpcio and protobuf)");
    child.stdin.take().unwrap().write_all(request_json.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "reference.py: {}", String::from_utf8_lossy(&out.stderr));
    let reference: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reference["code"], 0, "{reference}");
    let mut theirs = reference["messages"][0].clone();
    // Metadata and the deadline differ by client (user agents, forwarded headers, grpcio's own
    // timeout); the rest must not.
    for v in [&mut ours, &mut theirs] {
        v.as_object_mut().unwrap().remove("metadata");
        v.as_object_mut().unwrap().remove("grpcTimeout");
    }
    assert_eq!(ours, theirs);
    assert_eq!(ours["order"]["sequence"], "18446744073709551615");
}

/// `siger -t -c FILE`: (exit code, output).
fn check(config: &str, dir: &Path) -> (i32, String) {
    let path = dir.join("siger.yaml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(SIGER).args(["-t", "-c"]).arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn config_check_names_the_key_and_line_of_each_descriptor_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("shop.pb");
    compile(&good, &[]);
    let conflict = dir.path().join("conflict.pb");
    compile(&conflict, &["invalid/conflict.proto"]);
    let unknown = dir.path().join("unknown.pb");
    compile(&unknown, &["invalid/unknown_field.proto"]);
    let garbage = dir.path().join("garbage.pb");
    std::fs::write(&garbage, b"\xff\xff not a descriptor set").unwrap();
    let cfg = |set: &Path, services: &str, http2: bool| {
        format!(
            "listen: [\"127.0.0.1:1\"]\nservices:\n  orders: {{targets: [\"127.0.0.1:2\"], http2: {http2}}}\nroutes:\n  - path: /\n    service: orders\n    auth: public\n    grpc_transcode:\n      descriptors: {}\n      services: [{services}]\n",
            set.display()
        )
    };
    let (code, out) = check(&cfg(&good, "shop.v1.Orders", true), dir.path());
    assert_eq!(code, 0, "{out}");
    let cases = [
        (
            cfg(&dir.path().join("absent.pb"), "shop.v1.Orders", true),
            "routes[0].grpc_transcode.descriptors",
            "cannot read",
        ),
        (cfg(&garbage, "shop.v1.Orders", true), "routes[0].grpc_transcode.descriptors", "FileDescriptorSet"),
        (cfg(&good, "shop.v1.Nope", true), "routes[0].grpc_transcode.services", "shop.v1.Nope"),
        (cfg(&unknown, "invalid.v1.Things", true), "routes[0].grpc_transcode.services", "is not a field of"),
        (cfg(&conflict, "invalid.v1.Things", true), "routes[0].grpc_transcode.services", "are both bound to GET"),
        (cfg(&good, "shop.v1.Orders", false), "routes[0].grpc_transcode", "http2: true"),
        (
            cfg(&good, "shop.v1.Orders", true).replace("auth: public", "auth: public\n    cache: {ttl: 1m}"),
            "routes[0].cache",
            "transcoded",
        ),
    ];
    for (config, key, says) in cases {
        let (code, out) = check(&config, dir.path());
        assert_ne!(code, 0, "{config}\n{out}");
        let line = out.lines().find(|l| l.contains(key)).unwrap_or_else(|| panic!("no {key} in {out}"));
        assert!(line.contains("line"), "names the line: {line}");
        assert!(out.contains(says), "{says}: {out}");
    }
}

#[test]
fn descriptors_are_read_again_on_reload_and_a_broken_set_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("shop.pb");
    compile(&set, &[]);
    let backend = Backend::start(&set);
    let gw = Gateway::start(&config(&set, backend.addr, "", ""));
    assert_eq!(call(&gw, "GET", "/v1/orders/1", "").status, 200);
    // A set without the service: refused, the old one keeps serving.
    let other = dir.path().join("other.pb");
    compile(&other, &["invalid/conflict.proto"]);
    std::fs::copy(&other, &set).unwrap();
    let r = gw.reload();
    assert_ne!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("grpc_transcode"), "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(call(&gw, "GET", "/v1/orders/1", "").status, 200);
    // The good set again, with names printed as in the proto: the reload reads it.
    compile(&set, &[]);
    gw.rewrite(&format!("{}{}", HEAD, config(&set, backend.addr, "", ", proto_field_names: true")));
    let r = gw.reload();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = call(&gw, "POST", "/v1/shops/s/orders", r#"{"totalCents": "5"}"#);
    assert_eq!(ok(&r), json!({"shop": "s", "total_cents": "5"}));
}

#[test]
fn native_grpc_on_a_transcoding_route_is_proxied_as_it_is() {
    let s = setup("", "");
    // An h2c client speaking gRPC is out of reach of a raw socket; an HTTP/1.1 gRPC request is
    // what the gateway answers for any gRPC route (505), proving it was not transcoded.
    let mut stream = TcpStream::connect(s.gw.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = "POST /shop.v1.Orders/GetOrder HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\nContent-Length: 5\r\nConnection: close\r\n\r\n\0\0\0\0\0";
    stream.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 505"), "{out}");
}
