//! Proxying end to end: timeouts, streaming in both directions with bounded memory,
//! WebSocket, request ids, forwarded and hop-by-hop headers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::time::{Duration, Instant};

fn one_backend(extra_route: &str) -> (Echo, Gateway) {
    let echo = Echo::start("e");
    let gw = Gateway::start(&format!(
        "services:\n  s:\n    targets: [\"{}\"]\n    read_timeout: 10s\nroutes:\n  - {{path: /, service: s, auth: public{extra_route}}}\n",
        echo.addr
    ));
    (echo, gw)
}

#[test]
fn slow_backend_gets_504_at_the_route_timeout() {
    let (_e, gw) = one_backend(", timeout: 1s");
    let started = Instant::now();
    let r = get(gw.addr, "/slow?delay_ms=5000");
    let elapsed = started.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "gateway_timeout");
    assert!(elapsed >= Duration::from_millis(800) && elapsed <= Duration::from_millis(1200), "took {elapsed:?}");
    assert_eq!(get(gw.addr, "/fast?delay_ms=100").status, 200, "answers inside the timeout pass");
}

fn expected_sha(n: u64) -> String {
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(1 << 16);
    let mut i = 0;
    while i < n {
        buf.clear();
        let end = (i + (1 << 16)).min(n);
        buf.extend((i..end).map(echo_pattern));
        h.update(&buf);
        i = end;
    }
    hex::encode(h.finalize())
}

const BIG: u64 = 256 << 20;

#[test]
fn large_download_streams_with_bounded_memory() {
    let _measuring = exclusive();
    let (_e, gw) = one_backend("");
    let mut resp = client().get(gw.url(&format!("/bytes/{BIG}"))).send().unwrap();
    assert_eq!(resp.status(), 200);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = resp.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    assert_eq!(total, BIG);
    assert_eq!(hex::encode(hasher.finalize()), expected_sha(BIG));
    let peak_mib = gw.peak_rss_kib() / 1024;
    eprintln!("download: gateway peak RSS {peak_mib} MiB");
    assert!(peak_mib < 150, "gateway peak RSS {peak_mib} MiB");
}

/// Yields the echo pattern as a body of unknown length (sent chunked).
struct PatternReader {
    offset: u64,
    len: u64,
}

impl Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len - self.offset) as usize;
        for (j, b) in buf[..n].iter_mut().enumerate() {
            *b = echo_pattern(self.offset + j as u64);
        }
        self.offset += n as u64;
        Ok(n)
    }
}

#[test]
fn large_chunked_upload_streams_with_bounded_memory() {
    let _measuring = exclusive();
    let (_e, gw) = one_backend(", max_body: 1GiB");
    let body = reqwest::blocking::Body::new(PatternReader { offset: 0, len: BIG });
    let resp = client().post(gw.url("/upload")).body(body).send().unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().unwrap();
    assert_eq!(v["bytes"], BIG);
    assert_eq!(v["sha256"], expected_sha(BIG));
    let peak_mib = gw.peak_rss_kib() / 1024;
    eprintln!("upload: gateway peak RSS {peak_mib} MiB");
    assert!(peak_mib < 150, "gateway peak RSS {peak_mib} MiB");
}

#[test]
fn websocket_echo_through_the_gateway() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (_e, gw) = one_backend("");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr)).await.unwrap();
        assert_eq!(resp.status(), 101);
        assert!(resp.headers().get("x-request-id").is_some());
        for i in 0..5 {
            ws.send(Message::Text(format!("hello {i}").into())).await.unwrap();
            let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(reply.into_text().unwrap().as_str(), format!("hello {i}"));
        }
        ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply.into_data().as_ref(), &[1, 2, 3]);
        ws.close(None).await.unwrap();
    });
}

#[test]
fn request_ids_are_kept_or_replaced_and_sent_both_ways() {
    let (_e, gw) = one_backend("");
    let r = get_with(gw.addr, "/", &[("X-Request-Id", "client-id:1.2_3-x")]);
    assert_eq!(r.header("x-request-id"), Some("client-id:1.2_3-x"));
    assert_eq!(r.json()["headers"]["x-request-id"][0], "client-id:1.2_3-x");
    let long = "a".repeat(129);
    for bad in ["has space", "quote\"d", long.as_str(), "ünicode"] {
        let r = get_with(gw.addr, "/", &[("X-Request-Id", bad)]);
        let id = r.header("x-request-id").unwrap().to_string();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 36, "a fresh UUID replaces {bad:?}");
        assert_eq!(r.json()["headers"]["x-request-id"], serde_json::json!([id]), "exactly one id upstream");
    }
    let r = get(gw.addr, "/");
    let id = r.header("x-request-id").unwrap().to_string();
    assert_eq!(r.json()["headers"]["x-request-id"][0], id.as_str());
    let logged =
        eventually(Duration::from_secs(2), || gw.access_lines().iter().any(|l| l["request_id"] == id.as_str()));
    assert!(logged, "the access log carries the same id");
}

#[test]
fn forwarded_headers_from_an_untrusted_peer() {
    let (_e, gw) = one_backend("");
    let r = get_with(
        gw.addr,
        "/",
        &[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
        ],
    );
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"], serde_json::json!(["127.0.0.1"]), "a spoofed chain is not passed on");
    assert_eq!(h["x-real-ip"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["http"]));
    assert_eq!(h["x-forwarded-host"], serde_json::json!([gw.addr.to_string()]));
    let lines = || gw.access_lines();
    assert!(eventually(Duration::from_secs(2), || !lines().is_empty()));
    assert!(lines().iter().all(|l| l["client_ip"] == "127.0.0.1"));
}

#[test]
fn forwarded_headers_from_a_trusted_proxy() {
    let echo = Echo::start("e");
    let gw = Gateway::start(&format!(
        "trusted_proxies: [127.0.0.0/8]\nservices:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: s, auth: public}}\n",
        echo.addr
    ));
    let r = get_with(gw.addr, "/", &[("X-Forwarded-For", "203.0.113.7, 127.0.0.9"), ("X-Forwarded-Proto", "https")]);
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"], serde_json::json!(["203.0.113.7, 127.0.0.9, 127.0.0.1"]));
    assert_eq!(h["x-real-ip"], serde_json::json!(["203.0.113.7"]), "first untrusted hop from the right");
    assert_eq!(h["x-forwarded-proto"], serde_json::json!(["https"]), "a trusted proxy's scheme is kept");
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let (_e, gw) = one_backend("");
    let r = raw_request(
        gw.addr,
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Kept: yes\r\n\r\n",
            gw.addr
        )
        .as_bytes(),
    );
    let h = r.json()["headers"].clone();
    for gone in ["x-secret", "keep-alive", "proxy-connection", "te", "upgrade"] {
        assert!(h.get(gone).is_none(), "{gone} reached the backend: {h}");
    }
    assert_eq!(h["x-kept"], serde_json::json!(["yes"]));
}

#[test]
fn idle_keepalive_connections_are_closed_after_idle_timeout() {
    let echo = Echo::start("e");
    let gw = Gateway::start(&format!(
        "limits: {{idle_timeout: 1s}}\nservices:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: s, auth: public}}\n",
        echo.addr
    ));
    let mut conn = std::net::TcpStream::connect(gw.addr).unwrap();
    use std::io::Write;
    conn.write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", gw.addr).as_bytes()).unwrap();
    let r = read_response(&mut conn).unwrap();
    assert_eq!(r.status, 200);
    assert_ne!(r.header("connection"), Some("close"));
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let idle_from = Instant::now();
    let mut buf = [0u8; 1];
    let n = conn.read(&mut buf).unwrap_or(0);
    let idle = idle_from.elapsed();
    assert_eq!(n, 0, "the gateway closes the idle connection");
    assert!(idle >= Duration::from_millis(900) && idle < Duration::from_millis(2500), "closed after {idle:?}");
}
