//! Transcoding against the test service (tests/fixtures/grpc/shop.proto): every mapping rule,
//! the load errors, request binding and its errors, response printing and streaming.

use super::*;
use crate::config::GrpcTranscodeSettings;
use base64::Engine;
use http::HeaderMap;
use prost_reflect::{DynamicMessage, Value};
use serde_json::json;

fn settings() -> GrpcTranscodeSettings {
    GrpcTranscodeSettings {
        descriptors: "shop.pb".into(),
        services: vec!["shop.v1.Orders".into()],
        print_defaults: false,
        proto_field_names: false,
        ignore_unknown_query_parameters: false,
        max_message: 4 << 20,
    }
}

fn transcoder_with(s: &GrpcTranscodeSettings) -> Transcoder {
    Transcoder::from_bytes(s, "shop.pb", fixture::descriptor_set()).expect("loads")
}

fn transcoder() -> Transcoder {
    transcoder_with(&settings())
}

fn route(verb: &str, path: &str) -> Result<Call, CallError> {
    transcoder().route(&Method::from_bytes(verb.as_bytes()).expect("verb"), path)
}

/// The request message as proto3 JSON (defaults left out).
fn bound(verb: &str, path: &str, query: Option<&str>, body: &str) -> Result<serde_json::Value, CallError> {
    let call = route(verb, path)?;
    let message = call.message(query, body.as_bytes())?;
    Ok(serde_json::to_value(&message).expect("prints"))
}

fn encode(t: &Transcoder, name: &str, value: serde_json::Value) -> Bytes {
    let desc = t.pool().get_message_by_name(name).expect("type");
    let message = DynamicMessage::deserialize(desc, value).expect("valid json");
    frame::encode(&message)
}

fn ok() -> GrpcStatus {
    GrpcStatus { code: Code::Ok, message: String::new(), details: None }
}

#[test]
fn every_method_has_its_rules_and_the_grpc_path() {
    let t = transcoder();
    let bindings = t.bindings();
    let has = |verb: &str, path: &str, method: &str| {
        assert!(
            bindings.iter().any(|(v, p, m)| v.as_str() == verb && p == path && m == method),
            "{verb} {path} → {method} missing from {bindings:#?}"
        );
    };
    has("GET", "/v1/orders/{id}", "shop.v1.Orders.GetOrder");
    has("GET", "/v1/shops/{shop}/orders/{id}", "shop.v1.Orders.GetOrder");
    has("GET", "/v1/{name=projects/*/items/*}", "shop.v1.Orders.GetItem");
    has("PATCH", "/v1/orders/{order.id}", "shop.v1.Orders.UpdateOrder");
    has("SEARCH", "/v1/orders/{id}", "shop.v1.Orders.Probe");
    has("POST", "/v1/orders/{id}:cancel", "shop.v1.Orders.CancelOrder");
    for method in ["GetOrder", "WatchOrders", "UploadOrders", "Chat", "Echo"] {
        has("POST", &format!("/shop.v1.Orders/{method}"), &format!("shop.v1.Orders.{method}"));
    }
}

#[test]
fn paths_find_their_methods() {
    let name = |verb, path| route(verb, path).map(|c| c.method().name().to_string());
    assert_eq!(name("GET", "/v1/orders/42").as_deref(), Ok("GetOrder"));
    assert_eq!(name("GET", "/v1/shops/s1/orders/42").as_deref(), Ok("GetOrder"));
    assert_eq!(name("GET", "/v1/projects/p1/items/i1").as_deref(), Ok("GetItem"));
    assert_eq!(name("GET", "/v1/orders").as_deref(), Ok("ListOrders"));
    assert_eq!(name("GET", "/v1/orders/42/status").as_deref(), Ok("GetOrderStatus"));
    assert_eq!(name("GET", "/v1/files/a/b/c.txt").as_deref(), Ok("GetFile"));
    assert_eq!(name("SEARCH", "/v1/orders/42").as_deref(), Ok("Probe"));
    assert_eq!(name("DELETE", "/v1/orders/42").as_deref(), Ok("DeleteOrder"));
    assert_eq!(name("POST", "/v1/orders/42:cancel").as_deref(), Ok("CancelOrder"));
    assert_eq!(name("GET", "/v1/shops/s1/events").as_deref(), Ok("WatchOrders"));
    assert_eq!(name("POST", "/shop.v1.Orders/ListOrders").as_deref(), Ok("ListOrders"));
    assert_eq!(route("GET", "/v1/orders/42").map(|c| c.grpc_path()).as_deref(), Ok("/shop.v1.Orders/GetOrder"));
    assert!(matches!(route("GET", "/v2/orders"), Err(CallError::NoMethod)));
    assert!(matches!(route("GET", "/v1/projects/p1/things/i1"), Err(CallError::NoMethod)));
    match route("PUT", "/v1/orders/42") {
        Err(CallError::MethodNotAllowed { allow }) => {
            let mut allow: Vec<String> = allow.iter().map(ToString::to_string).collect();
            allow.sort();
            // PATCH /v1/orders/{order.id} matches the path too.
            assert_eq!(allow, ["DELETE", "GET", "PATCH", "SEARCH"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn streaming_from_the_client_is_not_transcoded() {
    for (verb, path, kind) in [
        ("POST", "/v1/orders:upload", "client-streaming"),
        ("POST", "/shop.v1.Orders/UploadOrders", "client-streaming"),
        ("POST", "/shop.v1.Orders/Chat", "bidirectional-streaming"),
    ] {
        match route(verb, path) {
            Err(CallError::NotTranscoded { method, kind: k }) => {
                assert!(method.starts_with("shop.v1.Orders."), "{method}");
                assert_eq!(k, kind);
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    assert!(route("GET", "/v1/shops/s1/events").expect("server streaming").server_streaming());
}

#[test]
fn load_errors_name_what_is_wrong() {
    let mut s = settings();
    s.services = vec!["shop.v1.Missing".into()];
    let e = Transcoder::from_bytes(&s, "shop.pb", fixture::descriptor_set()).expect_err("unknown service");
    assert!(
        matches!(&e, LoadError::UnknownService { service, known } if service == "shop.v1.Missing" && known.contains("shop.v1.Orders")),
        "{e}"
    );

    let e = Transcoder::from_bytes(&settings(), "junk.pb", b"\x0a\x05junk!").expect_err("not a set");
    assert!(matches!(&e, LoadError::Decode { path, .. } if path == "junk.pb"), "{e}");
    assert!(e.to_string().contains("--include_imports"), "{e}");

    s.services = vec!["invalid.v1.Things".into()];
    let set = fixture::compile(&["invalid/unknown_field.proto"]);
    let e = Transcoder::from_bytes(&s, "x.pb", &set).expect_err("unknown field");
    assert_eq!(
        e.to_string(),
        "method `invalid.v1.Things.GetThing`, rule `GET /v1/things/{thing_id}`: `thing_id` is not a field of invalid.v1.GetThingRequest"
    );
    let set = fixture::compile(&["invalid/conflict.proto"]);
    let e = Transcoder::from_bytes(&s, "x.pb", &set).expect_err("conflict");
    assert_eq!(
        e.to_string(),
        "`invalid.v1.Things.GetThing` and `invalid.v1.Things.FindThing` are both bound to GET /v1/{id=things/*}"
    );

    // A set built without --include_imports does not link.
    let dir = tempfile::tempdir().expect("dir");
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpc");
    let out = dir.path().join("bare.pb");
    let status = std::process::Command::new("protoc")
        .arg(format!("-I{}", root.display()))
        .arg(format!("-I{}", googleapis_include()))
        .arg("-I/usr/include")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg("shop.proto")
        .status()
        .expect("protoc");
    assert!(status.success());
    let e =
        Transcoder::from_bytes(&settings(), "bare.pb", &std::fs::read(&out).expect("read")).expect_err("no imports");
    assert!(matches!(e, LoadError::Decode { .. }), "{e}");

    let mut s = settings();
    s.descriptors = "missing.pb".into();
    let e = Transcoder::from_settings(&s, dir.path()).expect_err("missing file");
    assert!(matches!(&e, LoadError::Read { path, .. } if path.ends_with("missing.pb")), "{e}");
    std::fs::write(dir.path().join("shop.pb"), fixture::descriptor_set()).expect("write");
    assert!(Transcoder::from_settings(&settings(), dir.path()).is_ok());
}

fn googleapis_include() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import google.api.annotations_pb2 as m, os; print(os.path.dirname(os.path.dirname(os.path.dirname(m.__file__))))"])
        .output()
        .expect("python3");
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

#[test]
fn path_variables_bind_plain_nested_and_resource_name_fields() {
    assert_eq!(bound("GET", "/v1/orders/42", None, ""), Ok(json!({"id": "42"})));
    assert_eq!(bound("GET", "/v1/shops/s%201/orders/42", None, ""), Ok(json!({"id": "42", "shop": "s 1"})));
    assert_eq!(bound("GET", "/v1/projects/p1/items/i1", None, ""), Ok(json!({"name": "projects/p1/items/i1"})));
    assert_eq!(bound("GET", "/v1/files/a/b%2Fc/d", None, ""), Ok(json!({"path": "a/b%2Fc/d"})));
    assert!(matches!(
        bound("PATCH", "/v1/orders/9", None, r#"{"note": "hi", "display": null}"#),
        Err(CallError::Field { field, .. }) if field == "order.display"
    ));
    // The path wins over the body; the rest of the body is the `order` field.
    assert_eq!(
        bound("PATCH", "/v1/orders/9", Some("updateMask=note,ttl"), r#"{"id": "ignored", "note": "hi"}"#),
        Ok(json!({"order": {"id": "9", "note": "hi"}, "updateMask": "note,ttl"}))
    );
    assert_eq!(
        bound("POST", "/v1/orders/7:cancel", None, r#"{"reason": "late", "notify": true}"#),
        Ok(json!({"id": "7", "reason": "late", "notify": true}))
    );
    assert_eq!(
        bound(
            "POST",
            "/v1/shops/s1/orders",
            Some("request_id=r1"),
            r#"{"id": "o1", "customer": {"display_name": "Ann"}}"#
        ),
        Ok(json!({"shop": "s1", "order": {"id": "o1", "customer": {"displayName": "Ann"}}, "requestId": "r1"}))
    );
}

#[test]
fn query_parameters_bind_scalars_repeated_enums_nested_and_well_known_types() {
    let query = "page_size=10&pageToken=t&statuses=PENDING&statuses=2&tags=a&tags=b+c&customer.id=c1\
                 &customer.displayName=Ann&since=2024-01-02T03:04:05Z&gift=false&descending=true&min_weight=1.5\
                 &min_total=9007199254740993&max_items=3&cursor=AQI%3D&max_age=1.5s&read_mask=a,b.c&ids=1&ids=-2";
    assert_eq!(
        bound("GET", "/v1/orders", Some(query), ""),
        Ok(json!({
            "pageSize": 10, "pageToken": "t", "statuses": ["PENDING", "SHIPPED"], "tags": ["a", "b c"],
            "customer": {"id": "c1", "displayName": "Ann"}, "since": "2024-01-02T03:04:05Z", "gift": false,
            "descending": true, "minWeight": 1.5, "minTotal": "9007199254740993", "maxItems": 3, "cursor": "AQI=",
            "maxAge": "1.500s", "readMask": "a,b.c", "ids": ["1", "-2"],
        }))
    );
}

#[test]
fn wrong_values_are_named() {
    let q = |query: &str| bound("GET", "/v1/orders", Some(query), "");
    let parameter = |r: Result<serde_json::Value, CallError>| match r {
        Err(CallError::Query { parameter, reason }) => (parameter, reason),
        other => panic!("{other:?}"),
    };
    assert_eq!(parameter(q("page_size=ten")), ("page_size".into(), "`ten` is not a 32-bit integer".into()));
    assert_eq!(parameter(q("page_size=3000000000")).0, "page_size");
    assert_eq!(parameter(q("statuses=LOST")), ("statuses".into(), "`LOST` is not a value of shop.v1.Status".into()));
    assert_eq!(parameter(q("descending=yes")).1, "`yes` is not `true` or `false`");
    assert_eq!(parameter(q("min_total=1.5")).1, "`1.5` is not a 64-bit integer");
    assert_eq!(parameter(q("colour=red")), ("colour".into(), "not a field of shop.v1.ListOrdersRequest".into()));
    assert_eq!(parameter(q("customer=c1")).1, "is a message; bind one of its fields");
    assert!(matches!(q("since=yesterday"), Err(CallError::Field { field, .. }) if field == "since"));
    assert_eq!(parameter(bound("GET", "/v1/orders/1", Some("id=2"), "")).1, "this field is bound by the path");
    assert_eq!(
        parameter(bound("POST", "/v1/orders/1:cancel", Some("reason=x"), "{}")).1,
        "this method takes every field from the body"
    );
    assert_eq!(
        parameter(bound("PATCH", "/v1/orders/1", Some("order.note=x"), "{}")).1,
        "this field comes from the body"
    );
    // Unknown parameters may be ignored by the route's choice.
    let mut s = settings();
    s.ignore_unknown_query_parameters = true;
    let call = transcoder_with(&s).route(&Method::GET, "/v1/orders").expect("route");
    let m = call.message(Some("access_token=x&page_size=2"), b"").expect("ignored");
    assert_eq!(serde_json::to_value(&m).expect("json"), json!({"pageSize": 2}));
}

#[test]
fn wrong_json_is_named_by_its_field() {
    let body = |path: &str, body: &str| bound("POST", path, None, body);
    let field = |r: Result<serde_json::Value, CallError>| match r {
        Err(CallError::Field { field, reason }) => (field, reason),
        other => panic!("{other:?}"),
    };
    let (f, why) = field(body("/shop.v1.Orders/CreateOrder", r#"{"order": {"totalCents": "many"}}"#));
    assert_eq!(f, "order.totalCents", "{why}");
    let (f, why) = field(body("/shop.v1.Orders/CreateOrder", r#"{"order": {"colour": "red"}}"#));
    assert!(f.starts_with("order") && why.contains("colour"), "{f}: {why}");
    let (f, _) = field(body("/shop.v1.Orders/CreateOrder", r#"{"order": {"createdAt": "noon"}}"#));
    assert_eq!(f, "order.createdAt");
    let (f, _) = field(body("/shop.v1.Orders/CreateOrder", r#"{"order": {"tags": ["a", 7]}}"#));
    assert!(f.starts_with("order.tags"), "{f}");
    let (f, _) = field(body("/shop.v1.Orders/CreateOrder", r#"{"order": {"status": "LOST"}}"#));
    assert_eq!(f, "order.status");
    // The same through a path with variables (the JSON tree route).
    let (f, _) = field(body("/v1/shops/s1/orders", r#"{"totalCents": {}}"#));
    assert_eq!(f, "order.totalCents");
    assert!(
        matches!(body("/shop.v1.Orders/CreateOrder", "{\"order\": "), Err(CallError::Body(m)) if m.contains("not JSON"))
    );
    assert!(matches!(body("/shop.v1.Orders/CreateOrder", "{} {}"), Err(CallError::Body(_))));
    assert!(matches!(body("/v1/orders/1:cancel", "[1]"), Err(CallError::Field { field, .. }) if field.is_empty()));
    assert!(
        matches!(bound("GET", "/v1/orders/1", None, "{}"), Err(CallError::Body(m)) if m.contains("no request body"))
    );
}

#[test]
fn well_known_types_round_trip() {
    let order = json!({
        "id": "o1", "status": "SHIPPED", "totalCents": "-9007199254740993", "tags": ["a"],
        "createdAt": "2024-02-29T23:59:59.123456789Z", "ttl": "-1.000000001s", "note": "",
        "attributes": {"k": [1.5, "two", null, {"x": true}]},
        "extra": {"@type": "type.googleapis.com/shop.v1.Customer", "id": "c1", "displayName": "Ann"},
        "quantities": {"apple": 3}, "signature": "/+8=", "weight": 0.5, "gift": true,
        "sequence": "18446744073709551615", "fields": "a.b,cD", "limit": "12", "discount": "NaN",
        "recipients": [{"id": "r1"}],
    });
    let t = transcoder();
    let call = t.route(&Method::POST, "/shop.v1.Orders/Echo").expect("route");
    let body = json!({"order": order}).to_string();
    let framed = call.request(None, body.as_bytes()).expect("encodes");
    // The backend answers the same message back (EchoReply has `order` at the same tag).
    let reply =
        DynamicMessage::decode(t.pool().get_message_by_name("shop.v1.EchoRequest").expect("type"), &framed[5..])
            .expect("decodes");
    let mut response = call.response(None);
    let mut out = response.push(&frame::encode(&reply)).expect("push").to_vec();
    out.extend_from_slice(&response.finish(Some(&ok()), "rid").expect("finish"));
    let printed: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(printed["order"], order);
}

#[test]
fn printing_options_and_response_body() {
    let t = transcoder();
    let status = encode(&t, "shop.v1.OrderStatusReply", json!({"status": {"state": "SHIPPED"}, "etag": "e"}));
    let call = t.route(&Method::GET, "/v1/orders/1/status").expect("route");
    let mut r = call.response(None);
    assert!(r.push(&status).expect("push").is_empty(), "a unary answer waits for the status");
    assert_eq!(r.finish(Some(&ok()), "rid").expect("ok"), Bytes::from_static(br#"{"state":"SHIPPED"}"#));
    // An absent response_body field prints as its default.
    let mut r = call.response(None);
    r.push(&encode(&t, "shop.v1.OrderStatusReply", json!({"etag": "e"}))).expect("push");
    assert_eq!(r.finish(Some(&ok()), "rid").expect("ok"), Bytes::from_static(b"{}"));

    let mut s = settings();
    s.print_defaults = true;
    s.proto_field_names = true;
    let t = transcoder_with(&s);
    let call = t.route(&Method::GET, "/v1/orders/1").expect("route");
    let mut r = call.response(None);
    r.push(&encode(&t, "shop.v1.Order", json!({"id": "1", "customer": {"displayName": "Ann"}}))).expect("push");
    let printed: serde_json::Value = serde_json::from_slice(&r.finish(Some(&ok()), "rid").expect("ok")).expect("json");
    assert_eq!(printed["total_cents"], "0");
    assert_eq!(printed["gift"], false);
    assert_eq!(printed["tags"], json!([]));
    assert_eq!(printed["customer"]["display_name"], "Ann");
    assert_eq!(printed["status"], "STATUS_UNSPECIFIED");
}

fn stream_body(t: &Transcoder, count: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..count {
        body.extend_from_slice(&encode(t, "shop.v1.OrderEvent", json!({"orderId": format!("o{i}"), "sequence": i})));
    }
    body
}

#[test]
fn server_streaming_writes_an_array_or_ndjson_as_messages_arrive() {
    let t = transcoder();
    let call = t.route(&Method::GET, "/v1/shops/s1/events").expect("route");
    let body = stream_body(&t, 3);
    for split in [1, 7, body.len()] {
        let mut r = call.response(Some("application/json"));
        assert_eq!(r.format(), Format::Array);
        let mut out = Vec::new();
        let mut pieces = 0;
        for chunk in body.chunks(split) {
            let json = r.push(chunk).expect("push");
            pieces += usize::from(!json.is_empty());
            out.extend_from_slice(&json);
        }
        assert_eq!(pieces, if split == body.len() { 1 } else { 3 }, "a piece as each message completes, split {split}");
        out.extend_from_slice(&r.finish(Some(&ok()), "rid").expect("ok"));
        let v: serde_json::Value = serde_json::from_slice(&out).expect("a JSON array");
        assert_eq!(v, json!([{"orderId": "o0"}, {"orderId": "o1", "sequence": 1}, {"orderId": "o2", "sequence": 2}]));
    }
    let mut r = call.response(Some("text/html, application/x-ndjson;q=0.9"));
    assert_eq!(r.format().content_type(), "application/x-ndjson");
    let mut out = r.push(&body).expect("push").to_vec();
    out.extend_from_slice(&r.finish(Some(&ok()), "rid").expect("ok"));
    let lines: Vec<&str> = std::str::from_utf8(&out).expect("utf-8").lines().collect();
    assert_eq!(lines, [r#"{"orderId":"o0"}"#, r#"{"orderId":"o1","sequence":1}"#, r#"{"orderId":"o2","sequence":2}"#]);
    let mut r = call.response(None);
    assert_eq!(r.finish(Some(&ok()), "rid").expect("empty stream"), Bytes::from_static(b"[]"));
}

#[test]
fn a_failed_call_is_an_error_before_output_and_the_last_element_after() {
    let t = transcoder();
    let failed = GrpcStatus { code: Code::NotFound, message: "no such shop".into(), details: None };
    let call = t.route(&Method::GET, "/v1/shops/s1/events").expect("route");
    let mut r = call.response(None);
    assert_eq!(r.finish(Some(&failed), "rid"), Err(CallError::Status(failed.clone())));
    let mut r = call.response(None);
    let mut out = r.push(&stream_body(&t, 1)).expect("push").to_vec();
    assert!(r.started());
    out.extend_from_slice(&r.finish(Some(&failed), "rid").expect("ends the array"));
    let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
    assert_eq!(v[1], json!({"error": "not_found", "message": "no such shop", "request_id": "rid", "code": 5}));
    let mut r = call.response(Some("application/x-ndjson"));
    r.push(&stream_body(&t, 1)).expect("push");
    let last = r.finish(Some(&failed), "rid").expect("a last line");
    assert!(last.ends_with(b"\n"));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&last).expect("json")["error"], "not_found");

    let unary = t.route(&Method::GET, "/v1/orders/1").expect("route");
    let mut r = unary.response(None);
    r.push(&encode(&t, "shop.v1.Order", json!({"id": "1"}))).expect("push");
    assert_eq!(r.finish(Some(&failed), "rid"), Err(CallError::Status(failed.clone())));
    let mut r = unary.response(None);
    assert!(matches!(r.finish(Some(&ok()), "rid"), Err(CallError::Protocol(m)) if m.contains("no message")));
    let mut r = unary.response(None);
    assert!(matches!(r.finish(None, "rid"), Err(CallError::Protocol(m)) if m.contains("grpc-status")));
    let mut r = unary.response(None);
    let two = [encode(&t, "shop.v1.Order", json!({})), encode(&t, "shop.v1.Order", json!({}))].concat();
    assert!(matches!(r.push(&two), Err(CallError::Protocol(_))));
    let mut r = unary.response(None);
    assert!(
        matches!(r.push(&frame::encode_bytes(0, b"\xff\xff")), Err(CallError::Protocol(m)) if m.contains("shop.v1.Order"))
    );
}

#[test]
fn details_are_printed_with_the_descriptors_types() {
    let t = transcoder();
    let bad_request =
        encode(&t, "google.rpc.BadRequest", json!({"fieldViolations": [{"field": "id", "description": "empty"}]}));
    let status = encode(
        &t,
        "google.rpc.Status",
        json!({"code": 3, "message": "bad", "details": [{
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "id", "description": "empty"}],
        }]}),
    );
    assert!(bad_request.len() > 5);
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", "3".parse().expect("value"));
    headers.insert("grpc-message", "bad".parse().expect("value"));
    let bin = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&status[5..]);
    headers.insert("grpc-status-details-bin", bin.parse().expect("value"));
    let parsed = GrpcStatus::from_headers(&headers).expect("status");
    assert_eq!(parsed.code.http_status(), 400);
    let body = parsed.error_body("rid", t.pool());
    assert_eq!(
        body["details"],
        json!([{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "id", "description": "empty"}]}])
    );
}

#[test]
fn one_mebibyte_messages_both_ways_and_the_limit() {
    let t = transcoder();
    let call = t.route(&Method::POST, "/v1/echo").expect("route");
    let payload = vec![0x5a_u8; 1 << 20];
    let body = json!({"payload": base64::engine::general_purpose::STANDARD.encode(&payload)}).to_string();
    let framed = call.request(None, body.as_bytes()).expect("1 MiB fits the 4 MiB default");
    assert!(framed.len() > 1 << 20);
    let mut r = call.response(None);
    for chunk in framed.chunks(16 * 1024) {
        assert!(r.push(chunk).expect("push").is_empty());
    }
    let out = r.finish(Some(&ok()), "rid").expect("ok");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    let echoed =
        base64::engine::general_purpose::STANDARD.decode(v["payload"].as_str().expect("payload")).expect("b64");
    assert_eq!(echoed, payload);

    let mut s = settings();
    s.max_message = 1 << 19;
    let t = transcoder_with(&s);
    let call = t.route(&Method::POST, "/v1/echo").expect("route");
    assert!(matches!(call.request(None, body.as_bytes()), Err(CallError::TooLarge { limit, .. }) if limit == 1 << 19));
    let mut r = call.response(None);
    assert!(matches!(r.push(&framed), Err(CallError::Protocol(m)) if m.contains("exceeds")));
}

#[test]
fn wrappers_bind_from_the_query_and_empty_bodies_are_empty_messages() {
    let v = bound("GET", "/v1/orders", Some("gift=true"), "").expect("bound");
    assert_eq!(v, json!({"gift": true}));
    let call = route("POST", "/shop.v1.Orders/GetOrder").expect("route");
    let m = call.message(None, b"  ").expect("empty");
    assert_eq!(m.fields().count(), 0);
    assert!(matches!(m.get_field_by_name("id").as_deref(), Some(Value::String(s)) if s.is_empty()));
}
