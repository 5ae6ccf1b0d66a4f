//! Request bodies as the session frames them, not as headers announce them (issue 25): an
//! HTTP/2 body without `content-length` and an HTTP/1 chunked body on any method are
//! validated, clocked by `body_timeout` and keep a request out of the cache; a validated body
//! reaches the backend byte for byte whatever its size and framing; JSON validation refuses
//! what a strict backend would read differently (duplicate names, numbers beyond double
//! precision). Real siger and siger-echo processes; HTTP/2 with the `h2` crate (prior
//! knowledge on an h2c listener).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Objects with a string `pad` and an optional `qty` in 0..=100.
const PAD_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["pad"],
  "properties": {"pad": {"type": "string"}, "qty": {"type": "integer", "minimum": 0, "maximum": 100},
                 "price": {"type": "number", "maximum": 100}}
}"#;

const MAX_BODY: usize = 1 << 20;

/// A gateway on an h2c listener (HTTP/1 and prior-knowledge HTTP/2 alike) with a validating
/// route `/v`, a cached route `/c` and a plain route `/p`, all to `echo` with the prefix
/// stripped (`/v/upload` is echo's `/upload`, which answers the body's size and sha256).
fn gateway(echo: &Echo, dir: &std::path::Path, limits: &str) -> Gateway {
    let schema = dir.join("pad.json");
    std::fs::write(&schema, PAD_SCHEMA).unwrap();
    Gateway::start_h2c(&format!(
        "limits: {{{limits}}}\nservices:\n  s: {{targets: [\"{}\"], read_timeout: 10s}}\nroutes:\n  - {{path: /v, service: s, auth: public, strip_prefix: true, max_body: {MAX_BODY}, validate: {{schema: {}}}}}\n  - {{path: /c, service: s, auth: public, strip_prefix: true, cache: {{ttl: 60s}}}}\n  - {{path: /p, service: s, auth: public, strip_prefix: true, max_body: {MAX_BODY}}}\n",
        echo.addr,
        schema.display()
    ))
}

/// A valid JSON body of exactly `size` bytes (`{"qty":1,"pad":"xxx…"}`).
fn json_of_size(size: usize) -> Vec<u8> {
    let frame = br#"{"qty":1,"pad":""}"#.len();
    assert!(size >= frame);
    let mut body = br#"{"qty":1,"pad":""#.to_vec();
    // A pattern, so a lost or repeated stretch changes the digest.
    body.extend((0..size - frame).map(|i| b'a' + (i % 26) as u8));
    body.extend_from_slice(br#""}"#);
    assert_eq!(body.len(), size);
    body
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// An HTTP/1.1 request whose body is sent chunked, `chunk` bytes a chunk.
fn chunked(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    chunk: usize,
) -> RawResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    for part in body.chunks(chunk.max(1)) {
        bytes.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        bytes.extend_from_slice(part);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    raw_request(addr, &bytes)
}

/// What an HTTP/2 exchange ended with: a status and body, or the stream's error.
#[derive(Debug)]
enum H2Outcome {
    Answer(u16, Vec<u8>),
    Reset(String),
}

impl H2Outcome {
    fn status(&self) -> u16 {
        match self {
            H2Outcome::Answer(status, _) => *status,
            H2Outcome::Reset(e) => panic!("the stream was reset: {e}"),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            H2Outcome::Answer(_, body) => serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body))),
            H2Outcome::Reset(e) => panic!("the stream was reset: {e}"),
        }
    }
}

/// An HTTP/2 request over a fresh prior-knowledge connection. `body` is sent in DATA frames of
/// at most `frame` bytes, END_STREAM on the last one (`None`: no body, END_STREAM on HEADERS);
/// `content_length` adds the header.
async fn h2_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    frame: usize,
    content_length: bool,
) -> H2Outcome {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let mut request = http::Request::builder().method(method).uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if let (Some(body), true) = (body, content_length) {
        request = request.header("content-length", body.len());
    }
    let (response, mut send) = client.send_request(request.body(()).unwrap(), body.is_none()).unwrap();
    if let Some(body) = body {
        let parts: Vec<&[u8]> = if body.is_empty() { vec![&[][..]] } else { body.chunks(frame.max(1)).collect() };
        let last = parts.len() - 1;
        for (i, part) in parts.into_iter().enumerate() {
            send.send_data(Bytes::copy_from_slice(part), i == last).unwrap();
        }
    }
    let response = match response.await {
        Ok(r) => r,
        Err(e) => return H2Outcome::Reset(e.to_string()),
    };
    let status = response.status().as_u16();
    let mut recv = response.into_body();
    let mut answer = Vec::new();
    while let Some(chunk) = recv.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = recv.flow_control().release_capacity(chunk.len());
                answer.extend_from_slice(&chunk);
            }
            Err(e) => return H2Outcome::Reset(e.to_string()),
        }
    }
    H2Outcome::Answer(status, answer)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[test]
fn an_http2_body_without_content_length_is_validated_on_every_method() {
    let echo = Echo::start("e1");
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&echo, dir.path(), "");
    let rt = runtime();
    let before = echo.served();
    let invalid = br#"{"qty":-1,"pad":"x"}"#;
    for method in ["POST", "PUT", "PATCH", "GET", "DELETE", "OPTIONS"] {
        let r = rt.block_on(h2_exchange(gw.addr, method, "/v/upload", &[JSON], Some(invalid), 16 << 10, false));
        assert_eq!(r.status(), 400, "{method} without content-length: {r:?}");
        assert!(r.json()["message"].as_str().unwrap().contains("/qty"), "{method}: {r:?}");
        let r = rt.block_on(h2_exchange(
            gw.addr,
            method,
            "/v/upload",
            &[("content-type", "text/plain")],
            Some(invalid),
            16 << 10,
            false,
        ));
        assert_eq!(r.status(), 415, "{method} without content-length, not JSON: {r:?}");
    }
    // HTTP/1 chunked, on a method that needs no body.
    let r = chunked(gw.addr, "GET", "/v/upload", &[JSON], invalid, 7);
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let r = chunked(gw.addr, "DELETE", "/v/upload", &[("Content-Type", "text/plain")], invalid, 7);
    assert_eq!(r.status, 415, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(echo.served(), before, "no refused body reached the backend");

    // Valid bodies pass, whole; a GET without a body (or with an empty one) needs no JSON.
    let valid = br#"{"qty":5,"pad":"ok"}"#;
    let r = rt.block_on(h2_exchange(gw.addr, "GET", "/v/upload", &[JSON], Some(valid), 16 << 10, false));
    assert_eq!((r.status(), r.json()["sha256"].as_str()), (200, Some(sha(valid).as_str())));
    let r = rt.block_on(h2_exchange(gw.addr, "GET", "/v/upload", &[], None, 0, false));
    assert_eq!((r.status(), r.json()["bytes"].as_u64()), (200, Some(0)));
    let r = rt.block_on(h2_exchange(gw.addr, "GET", "/v/upload", &[], Some(b""), 0, false));
    assert_eq!((r.status(), r.json()["bytes"].as_u64()), (200, Some(0)), "an empty DATA frame is no body");
    let r = chunked(gw.addr, "GET", "/v/upload", &[], b"", 1);
    assert_eq!((r.status, r.json()["bytes"].as_u64()), (200, Some(0)), "an empty chunked body is no body");
}

#[test]
fn a_request_with_a_body_is_neither_served_from_nor_stored_in_the_cache() {
    let echo = Echo::start("e1");
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&echo, dir.path(), "");
    let rt = runtime();
    // A GET whose body the backend answers about, chunked over HTTP/1 then length-less over h2.
    let r = chunked(gw.addr, "GET", "/c/upload?h1", &[], b"poison", 3);
    assert_eq!((r.status, r.json()["bytes"].as_u64()), (200, Some(6)));
    assert_ne!(r.header("x-cache"), Some("HIT"));
    let plain = get(gw.addr, "/c/upload?h1");
    assert_eq!(plain.json()["bytes"].as_u64(), Some(0), "a plain GET is not served what a body produced");
    let r = rt.block_on(h2_exchange(gw.addr, "GET", "/c/upload?h2", &[], Some(b"poison"), 3, false));
    assert_eq!((r.status(), r.json()["bytes"].as_u64()), (200, Some(6)));
    let plain = get(gw.addr, "/c/upload?h2");
    assert_eq!(plain.json()["bytes"].as_u64(), Some(0), "a plain GET is not served what an h2 body produced");
    // Nor is a cached answer given to a request with a body.
    assert_eq!(get(gw.addr, "/c/upload?h1").header("x-cache"), Some("HIT"));
    let r = chunked(gw.addr, "GET", "/c/upload?h1", &[], b"other", 2);
    assert_eq!(r.json()["bytes"].as_u64(), Some(5), "a body is answered by the backend, not the cache");
    let r = rt.block_on(h2_exchange(gw.addr, "GET", "/c/upload?h1", &[], Some(b"other"), 2, false));
    assert_eq!(r.json()["bytes"].as_u64(), Some(5), "an h2 body is answered by the backend, not the cache");
}

#[test]
fn an_http2_body_without_content_length_is_cut_at_the_body_timeout() {
    let echo = Echo::start("e1");
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&echo, dir.path(), "body_timeout: 2s");
    let rt = runtime();
    for path in ["/p/upload", "/v/upload"] {
        let outcome = rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
            let (client, connection) = h2::client::handshake(tcp).await.unwrap();
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let mut client = client.ready().await.unwrap();
            let upload = http::Request::post(format!("http://{}{path}", gw.addr))
                .header("content-type", "application/json")
                .body(())
                .unwrap();
            let (response, mut body) = client.send_request(upload, false).unwrap();
            // 1 KiB, no length announced, then nothing.
            body.send_data(Bytes::from(vec![b' '; 1024]), false).unwrap();
            let started = Instant::now();
            let outcome = tokio::time::timeout(Duration::from_secs(8), response).await;
            let cut = match outcome {
                Ok(Err(_)) => true,
                Ok(Ok(r)) => r.status().as_u16() == 408,
                Err(_) => false,
            };
            drop(body);
            (cut, started.elapsed())
        });
        let (cut, took) = outcome;
        assert!(cut, "{path}: the stalled length-less stream is cut (after {took:?})");
        assert!(took >= Duration::from_millis(1600) && took <= Duration::from_millis(4000), "{path}: after {took:?}");
    }
    assert!(metric_of(&gw, "siger_request_timeouts_total{phase=\"body\"}") >= 2.0);
}

/// Sizes around Pingora's 64 KiB retry buffer, past it, and up to `max_body`.
fn sizes() -> Vec<usize> {
    let k = 1024;
    vec![1000, 48 * k, 64 * k - 1, 64 * k, 64 * k + 1, 70_000, 80 * k, 200 * k, MAX_BODY]
}

#[test]
fn a_validated_body_reaches_the_backend_byte_for_byte_over_http1() {
    let echo = Echo::start("e1");
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&echo, dir.path(), "");
    for size in sizes() {
        let body = json_of_size(size);
        let want = (200, Some(size as u64), Some(sha(&body)));
        let seen =
            |r: &RawResponse| (r.status, r.json()["bytes"].as_u64(), r.json()["sha256"].as_str().map(str::to_string));
        let r = request(gw.addr, "POST", "/v/upload", &[("Content-Type", "application/json")], &body);
        assert_eq!(seen(&r), want, "content-length {size}: {}", String::from_utf8_lossy(&r.body));
        for chunk in [1000, 16 << 10, 64 << 10, 1 << 20] {
            let r = chunked(gw.addr, "POST", "/v/upload", &[("Content-Type", "application/json")], &body, chunk);
            assert_eq!(seen(&r), want, "chunked {size} in {chunk}-byte chunks: {}", String::from_utf8_lossy(&r.body));
        }
        let r = chunked(gw.addr, "PUT", "/v/upload", &[("Content-Type", "application/json")], &body, 4000);
        assert_eq!(seen(&r), want, "chunked PUT {size}");
    }
    // One byte over max_body is refused, whatever the framing.
    let over = json_of_size(MAX_BODY + 1);
    let r = request(gw.addr, "POST", "/v/upload", &[("Content-Type", "application/json")], &over);
    assert_eq!(r.status, 413);
    let r = chunked(gw.addr, "POST", "/v/upload", &[("Content-Type", "application/json")], &over, 16 << 10);
    assert_eq!(r.status, 413);
}

#[test]
fn a_validated_body_reaches_the_backend_byte_for_byte_over_http2() {
    let echo = Echo::start("e1");
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&echo, dir.path(), "");
    let rt = runtime();
    for size in sizes() {
        let body = json_of_size(size);
        for (frame, content_length) in [(16 << 10, false), (16 << 10, true), (1000, false), (5000, true)] {
            let r = rt.block_on(async {
                let exchange = h2_exchange(gw.addr, "POST", "/v/upload", &[JSON], Some(&body), frame, content_length);
                tokio::time::timeout(Duration::from_secs(8), exchange).await
            });
            let r = r.unwrap_or_else(|_| panic!("{size} bytes in {frame}-byte frames, length {content_length}: hung"));
            let label = format!("{size} bytes in {frame}-byte frames, content-length {content_length}: {r:?}");
            assert_eq!(r.status(), 200, "{label}");
            assert_eq!(r.json()["bytes"].as_u64(), Some(size as u64), "{label}");
            assert_eq!(r.json()["sha256"].as_str(), Some(sha(&body).as_str()), "{label}");
        }
    }
    let over = json_of_size(MAX_BODY + 1);
    for content_length in [false, true] {
        let r = rt.block_on(h2_exchange(gw.addr, "POST", "/v/upload", &[JSON], Some(&over), 16 << 10, content_length));
        match r {
            H2Outcome::Answer(status, _) => assert_eq!(status, 413, "length {content_length}"),
            H2Outcome::Reset(_) => {}
        }
    }
}

#[test]
fn a_body_with_duplicate_names_or_inexact_numbers_is_refused() {
    let echo = Echo::start("e1");
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&echo, dir.path(), "");
    let before = echo.served();
    let post = |body: &[u8]| request(gw.addr, "POST", "/v/upload", &[("Content-Type", "application/json")], body);
    let r = post(br#"{"qty":-1,"pad":"x","qty":5}"#);
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("bad_request")));
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("/qty") && message.contains("duplicate"), "{message}");
    // Names compare after unescaping, at any depth.
    let r = post(br#"{"pad":"x","more":[{"a":1},{"a":1,"\u0061":2}]}"#);
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("/more/1/a"), "{}", r.json());
    // Numbers a double cannot hold exactly.
    for number in ["100.0000000000000001", "12345678901234567890123", "1e-400", "99.99999999999999999"] {
        let r = post(format!(r#"{{"pad":"x","price":{number}}}"#).as_bytes());
        assert_eq!(r.status, 400, "{number}: {}", String::from_utf8_lossy(&r.body));
        let message = r.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains("/price") && message.contains(number), "{message}");
    }
    assert_eq!(echo.served(), before, "no refused body reached the backend");
    // Numbers a double holds exactly pass, as written.
    for number in ["0.1", "99.99", "1e2", "1E+2", "-0", "0.30000000000000004", "100.000", "18446744073709551615"] {
        let body = format!(r#"{{"pad":"x","price":{number}}}"#);
        let r = post(body.as_bytes());
        let expect = if number == "18446744073709551615" { 400 } else { 200 };
        assert_eq!(r.status, expect, "{number}: {}", String::from_utf8_lossy(&r.body));
        if expect == 200 {
            assert_eq!(r.json()["sha256"].as_str(), Some(sha(body.as_bytes()).as_str()));
        } else {
            assert!(r.json()["message"].as_str().unwrap().contains("maximum"), "{}", r.json());
        }
    }
}

#[test]
fn a_retried_body_is_sent_whole_again_and_counted_once_against_max_body() {
    // e1 answers 503 to everything, e2 serves: a request that starts at e1 is retried at e2
    // with its body sent again from Pingora's retry buffer.
    let e1 = Echo::start("e1");
    let e2 = Echo::start("e2");
    assert_eq!(request(e1.addr, "POST", "/__control/status/503", &[], b"").status, 200);
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("pad.json");
    std::fs::write(&schema, PAD_SCHEMA).unwrap();
    let gw = Gateway::start_h2c(&format!(
        "services:\n  s: {{targets: [\"{}\", \"{}\"], retry_on: [503], retries: 1}}\nroutes:\n  - {{path: /r, service: s, auth: public, strip_prefix: true, max_body: 60KiB}}\n  - {{path: /v, service: s, auth: public, strip_prefix: true, max_body: 60KiB, validate: {{schema: {}}}}}\n",
        e1.addr,
        e2.addr,
        schema.display()
    ));
    let rt = runtime();
    let body = json_of_size(40 << 10);
    let want = (200, Some(body.len() as u64), Some(sha(&body)));
    let retries = || metric_of(&gw, "siger_upstream_retries_total{reason=\"status\",service=\"s\"}");
    for path in ["/r/upload", "/v/upload"] {
        let before = retries();
        // Round robin: of four requests, some start at e1.
        for _ in 0..4 {
            let r = request(gw.addr, "PUT", path, &[("Content-Type", "application/json")], &body);
            let seen = (r.status, r.json()["bytes"].as_u64(), r.json()["sha256"].as_str().map(str::to_string));
            assert_eq!(seen, want, "{path} over HTTP/1: {}", String::from_utf8_lossy(&r.body));
            let r = rt.block_on(h2_exchange(gw.addr, "PUT", path, &[JSON], Some(&body), 16 << 10, false));
            let seen = (r.status(), r.json()["bytes"].as_u64(), r.json()["sha256"].as_str().map(str::to_string));
            assert_eq!(seen, want, "{path} over HTTP/2 without content-length: {r:?}");
        }
        assert!(retries() >= before + 2.0, "{path}: some requests were retried");
    }
}

#[test]
fn a_client_expecting_100_continue_gets_one_and_its_whole_body_forwarded() {
    let echo = Echo::start("e1");
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&echo, dir.path(), "");
    for size in [100, 70_000] {
        let body = json_of_size(size);
        let mut stream = std::net::TcpStream::connect(gw.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = "PUT /v/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";
        use std::io::Write;
        stream.write_all(head.as_bytes()).unwrap();
        let interim = read_response_head(&mut stream).expect("100 Continue");
        assert_eq!(interim.status, 100);
        let mut chunked = Vec::new();
        for part in body.chunks(8000) {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        stream.write_all(&chunked).unwrap();
        let r = read_response(&mut stream).expect("an answer");
        assert_eq!(r.status, 200, "{size}: one 100 Continue, then the answer: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["body_bytes"].as_u64(), Some(size as u64));
        assert!(r.json()["headers"].get("expect").is_none(), "the backend is not asked again: {}", r.json());
    }
}
