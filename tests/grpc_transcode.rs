//! gRPC transcoding checked against implementations that are not ours (issue 27): the proto3
//! JSON mapping against Google's protobuf (`json_format`), the transcoder's requests and answer
//! handling against a real tonic server (siger-grpc-echo), and that server against grpcio.
//! The gateway's wiring is not here yet; these tests drive `siger::grpc` directly.

mod support;

use http::Method;
use prost::Message;
use prost_reflect::DynamicMessage;
use serde_json::{json, Value};
use siger::config::GrpcTranscodeSettings;
use siger::grpc::{CallError, Code, GrpcStatus, Transcoder};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const GRPC_ECHO: &str = env!("CARGO_BIN_EXE_siger-grpc-echo");

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grpc")
}

/// shop.proto compiled into `dir/shop.pb`.
fn descriptors(dir: &Path) -> PathBuf {
    let out = dir.join("shop.pb");
    let status = Command::new(fixtures().join("descriptors")).arg(&out).status().expect("run descriptors");
    assert!(status.success(), "tests/fixtures/grpc/descriptors failed");
    out
}

fn transcoder(set: &Path) -> Transcoder {
    let settings = GrpcTranscodeSettings {
        descriptors: set.to_path_buf(),
        services: vec!["shop.v1.Orders".into()],
        print_defaults: false,
        proto_field_names: false,
        ignore_unknown_query_parameters: false,
        max_message: 4 << 20,
    };
    Transcoder::from_settings(&settings, Path::new("/")).expect("loads")
}

/// Run tests/fixtures/grpc/reference.py with `stdin`; its stdout.
fn reference(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("python3")
        .arg(fixtures().join("reference.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/install-deps)");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("reference.py");
    assert!(out.status.success(), "reference.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

/// siger-grpc-echo on an ephemeral port, killed on drop.
struct Backend {
    child: Child,
    addr: std::net::SocketAddr,
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
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
        let addr =
            line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("said {line:?}")).parse().expect("addr");
        Backend { child, addr }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A message with every kind of field, in the canonical JSON both implementations print.
fn rich_order() -> Value {
    json!({
        "id": "o1", "shop": "s1", "status": "SHIPPED", "totalCents": "-9007199254740993", "tags": ["a", "b"],
        "createdAt": "2024-02-29T23:59:59.123Z", "ttl": "3600.500s", "note": "",
        "attributes": {"k": [1.5, "two", null, {"x": true}], "n": {}},
        "extra": {"@type": "type.googleapis.com/shop.v1.Customer", "id": "c1", "displayName": "Ann"},
        "quantities": {"apple": 3, "pear": -1}, "signature": "/+8=", "customer": {"id": "c2"},
        "weight": 0.25, "gift": true, "sequence": "18446744073709551615", "fields": "a.b,cD",
        "limit": "0", "discount": "Infinity", "recipients": [{"id": "r1"}, {}],
    })
}

#[test]
fn the_json_mapping_agrees_with_protobufs_reference_both_ways() {
    let dir = tempfile::tempdir().expect("dir");
    let set = descriptors(dir.path());
    let set_arg = set.to_str().expect("utf-8");
    let t = transcoder(&set);
    let cases = [
        (
            "/shop.v1.Orders/Echo",
            "shop.v1.EchoRequest",
            json!({"order": rich_order(), "payload": "AAEC", "replySize": 7}),
        ),
        (
            "/shop.v1.Orders/ListOrders",
            "shop.v1.ListOrdersRequest",
            json!({"statuses": ["PENDING", "CANCELLED"], "ids": ["1", "-9223372036854775808"], "gift": false,
                   "since": "1970-01-01T00:00:00Z", "maxAge": "-0.000001s", "readMask": "customer.displayName"}),
        ),
        ("/shop.v1.Orders/UpdateOrder", "shop.v1.UpdateOrderRequest", json!({"order": {"id": "9"}, "updateMask": ""})),
    ];
    for (path, type_name, value) in cases {
        let call = t.route(&Method::POST, path).expect("route");
        // Ours encodes, protobuf decodes and prints.
        let ours = call.message(None, value.to_string().as_bytes()).expect("our parser accepts it");
        let b64 = base64_encode(&ours.encode_to_vec());
        let printed: Value = serde_json::from_str(&reference(&["bin2json", set_arg, type_name], &b64)).expect("json");
        assert_eq!(printed, value, "protobuf's reading of our {type_name}");
        // Protobuf encodes, ours decodes and prints.
        let theirs = reference(&["json2bin", set_arg, type_name], &value.to_string());
        let desc = t.pool().get_message_by_name(type_name).expect("type");
        let decoded = DynamicMessage::decode(desc, base64_decode(&theirs).as_slice()).expect("decodes");
        assert_eq!(serde_json::to_value(&decoded).expect("prints"), value, "our reading of protobuf's {type_name}");
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text.trim()).expect("base64")
}

/// One transcoded call, the way the proxy will make it: our request body to the backend, its
/// frames and status through our response side. `Ok(json)` or the call's error.
fn transcoded(
    t: &Transcoder,
    backend: &Backend,
    verb: Method,
    path: &str,
    query: Option<&str>,
    body: &str,
) -> Result<Value, CallError> {
    let call = t.route(&verb, path)?;
    let framed = call.request(query, body.as_bytes())?;
    let answer = support::grpc::call(backend.addr, "shop", None, &call.grpc_path(), &framed[5..]);
    assert_eq!(answer.status, 200);
    let mut response = call.response(None);
    let mut out = Vec::new();
    for message in &answer.messages {
        out.extend_from_slice(&response.push(&siger::grpc::frame::encode_bytes(0, message))?);
    }
    let status = answer
        .trailers
        .as_ref()
        .and_then(GrpcStatus::from_headers)
        .or_else(|| GrpcStatus::from_headers(&answer.headers));
    out.extend_from_slice(&response.finish(status.as_ref(), "rid")?);
    Ok(serde_json::from_slice(&out).expect("JSON"))
}

#[test]
fn transcoded_calls_to_a_tonic_backend() {
    let dir = tempfile::tempdir().expect("dir");
    let set = descriptors(dir.path());
    let t = transcoder(&set);
    let backend = Backend::start(&set);
    let call =
        |verb: Method, path: &str, query: Option<&str>, body: &str| transcoded(&t, &backend, verb, path, query, body);

    assert_eq!(
        call(Method::GET, "/v1/shops/s1/orders/42", None, ""),
        Ok(json!({"id": "42", "shop": "s1", "status": "PENDING"}))
    );
    assert_eq!(call(Method::GET, "/v1/projects/p/items/i", None, ""), Ok(json!({"name": "projects/p/items/i"})));
    assert_eq!(call(Method::GET, "/v1/files/a/b.txt", None, ""), Ok(json!({"path": "a/b.txt"})));
    assert_eq!(
        call(
            Method::GET,
            "/v1/orders",
            Some("page_size=2&statuses=SHIPPED&customer.id=c&since=2024-01-01T00:00:00Z"),
            ""
        )
        .map(|v| v["request"].clone()),
        Ok(json!({"pageSize": 2, "statuses": ["SHIPPED"], "customer": {"id": "c"}, "since": "2024-01-01T00:00:00Z"}))
    );
    assert_eq!(
        call(Method::PATCH, "/v1/orders/9", Some("update_mask=note"), r#"{"note": "n"}"#),
        Ok(json!({"id": "9", "note": "n", "fields": "note"}))
    );
    assert_eq!(
        call(Method::POST, "/v1/orders/7:cancel", None, r#"{"reason": "late"}"#),
        Ok(json!({"id": "7", "status": "CANCELLED", "note": "late"}))
    );
    assert_eq!(call(Method::DELETE, "/v1/orders/7", None, ""), Ok(json!({})));
    assert_eq!(
        call(Method::GET, "/v1/orders/7/status", None, ""),
        Ok(json!({"state": "SHIPPED", "updatedAt": "2024-01-02T03:04:05Z"}))
    );
    let events = call(Method::GET, "/v1/shops/s/events", Some("count=3"), "").expect("stream");
    assert_eq!(events.as_array().map(Vec::len), Some(3));
    assert_eq!(events[2], json!({"orderId": "s-2", "status": "PENDING", "sequence": 2}));

    // Each status the backend returns maps as google.rpc.Code says; details come through.
    for code in 1..=16 {
        let body = json!({"code": code, "message": format!("failed with {code}")}).to_string();
        match call(Method::POST, "/v1/fail", None, &body) {
            Err(CallError::Status(status)) => {
                assert_eq!(status.code, Code::ALL[code as usize]);
                assert_eq!(status.message, format!("failed with {code}"));
            }
            other => panic!("code {code}: {other:?}"),
        }
    }
    match call(Method::POST, "/v1/fail", None, r#"{"code": 3, "message": "bad id № 7", "withDetails": true}"#) {
        Err(CallError::Status(status)) => {
            assert_eq!(status.code.http_status(), 400);
            let body = status.error_body("rid", t.pool());
            assert_eq!(body["message"], "bad id № 7");
            assert_eq!(body["details"][0]["@type"], "type.googleapis.com/google.rpc.BadRequest");
            assert_eq!(body["details"][0]["fieldViolations"][0]["field"], "id");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(call(Method::GET, "/v1/orders/missing", None, ""), Err(CallError::Status(s)) if s.code.http_status() == 404)
    );

    // A 1 MiB answer and a 1 MiB request.
    let big = call(Method::POST, "/v1/echo", None, r#"{"replySize": 1048576}"#).expect("1 MiB answer");
    assert_eq!(base64_decode(big["payload"].as_str().expect("payload")).len(), 1 << 20);
    let payload = base64_encode(&vec![9u8; 1 << 20]);
    let echoed = call(Method::POST, "/v1/echo", None, &json!({"payload": payload}).to_string()).expect("1 MiB request");
    assert_eq!(echoed["payload"], payload);
}

#[test]
fn the_backend_answers_the_reference_client() {
    let dir = tempfile::tempdir().expect("dir");
    let set = descriptors(dir.path());
    let set_arg = set.to_str().expect("utf-8");
    let backend = Backend::start(&set);
    let addr = backend.addr.to_string();
    let call = |method: &str, extra: &[&str], request: Value| -> Value {
        let mut args = vec!["call", set_arg, &addr, method];
        args.extend_from_slice(extra);
        serde_json::from_str(&reference(&args, &request.to_string())).expect("json")
    };
    let got = call("/shop.v1.Orders/GetOrder", &[], json!({"id": "1", "shop": "s"}));
    assert_eq!(got["messages"], json!([{"id": "1", "shop": "s", "status": "PENDING"}]));
    let got = call("/shop.v1.Orders/WatchOrders", &["--stream"], json!({"shop": "s", "count": 2, "failWith": 14}));
    assert_eq!(got["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(got["code"], 14);
    let got = call("/shop.v1.Orders/Fail", &[], json!({"code": 7, "message": "no", "withDetails": true}));
    assert_eq!((got["code"].clone(), got["message"].clone()), (json!(7), json!("no")));
    assert_eq!(got["details"][0]["fieldViolations"][0]["description"], "must not be empty");
    let got = call("/shop.v1.Orders/UploadOrders", &[], json!({"id": "x"}));
    assert_eq!(got["messages"], json!([{"count": 2}]));
    let got = call("/shop.v1.Orders/Echo", &["--timeout", "5", "--meta", "x-tenant=t1"], json!({"replySize": 1048576}));
    let reply = &got["messages"][0];
    assert_eq!(reply["metadata"]["x-tenant"], "t1");
    assert!(reply["grpcTimeout"].as_str().is_some_and(|t| !t.is_empty()), "{reply:?}");
    assert_eq!(base64_decode(reply["payload"].as_str().expect("payload")).len(), 1 << 20);
}
