//! Hostile load at the edge (issues 18 and 25, ARCHITECTURE.md §7.8): connection bounds in all
//! and per client IP (idle keep-alive connections and stalled readers give way first), the
//! whole-head deadline against trickled heads, the whole-body deadline against trickled bodies,
//! `send_timeout` against clients that stop reading, TLS handshakes under the same bounds as
//! heads, the connection gate on h2c listeners, HTTP/2 stream bounds, and pipelining.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::*;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn gateway(echo: &Echo, limits: &str) -> Gateway {
    Gateway::start(&format!(
        "limits: {{{limits}}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api, auth: public}}\n",
        echo.addr
    ))
}

/// A keep-alive connection that has been served one request.
fn served_connection(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /x?fixed HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).expect("an answer").status, 200);
    s
}

/// Whether the server closed `s` (end of stream or reset) within `wait`.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Whether the server has closed `s` (checked without waiting).
fn closed_now(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let closed = match s.read(&mut buf) {
        Ok(0) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        Ok(_) => false,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

/// A TCP connection from `local` (another loopback address) to `addr`.
fn connect_from(local: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{local}:0").parse().unwrap())?;
        socket.connect(addr).await
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

#[test]
fn at_max_connections_idle_connections_give_way_and_busy_ones_refuse_cleanly() {
    let echo = Echo::start("api");
    let gw = gateway(&echo, "max_connections: 100, header_timeout: 5s");
    let mut idle: Vec<TcpStream> = (0..100).map(|_| served_connection(gw.addr)).collect();
    // Connections idle for less than a second are an active client's: a new one is refused.
    // (All 100 send a request again first, so none has waited a second even on a slow machine.)
    for s in idle.iter_mut() {
        s.write_all(b"GET /x?fixed HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    }
    for s in idle.iter_mut() {
        assert_eq!(read_response(s).expect("an answer").status, 200);
    }
    let mut early = TcpStream::connect(gw.addr).unwrap();
    let _ = early.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(closed_within(&mut early, Duration::from_secs(2)), "refused while every connection is fresh");
    // Once they have waited a second, new clients are served: each closes the oldest idle one.
    // (Refused until then: each try is closed at once, evicting nothing.)
    assert!(eventually(Duration::from_secs(10), || http_get_status(gw.addr, "/new/0") == Some(200)));
    for i in 1..20 {
        let r = get(gw.addr, &format!("/new/{i}"));
        assert_eq!(r.status, 200, "new client {i}");
    }
    // Each eviction makes room for more than one new client (the new ones close too), so count
    // them: exactly `evicted` idle connections are closed, the rest are kept (which ones go
    // first, the longest idle, is the unit tests' part).
    let evicted = metric_of(&gw, "siger_connections_evicted_total") as usize;
    assert!((1..=20).contains(&evicted), "{evicted} evicted");
    let closed = |idle: &mut Vec<TcpStream>| idle.iter_mut().map(closed_now).filter(|c| *c).count();
    eventually(Duration::from_secs(5), || closed(&mut idle) >= evicted);
    assert_eq!(closed(&mut idle), evicted, "idle connections closed");
    drop(idle);

    // When every connection is busy (a request body under way), new ones are closed at once.
    assert!(eventually(Duration::from_secs(5), || metric_of(&gw, "siger_connections_open") == 0.0));
    let busy: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(gw.addr).unwrap();
            s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc").unwrap();
            s
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || metric_of(&gw, "siger_connections_open") == 100.0));
    let started = Instant::now();
    let mut refused = TcpStream::connect(gw.addr).unwrap();
    let _ = refused.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(closed_within(&mut refused, Duration::from_secs(2)), "refused, not left hanging");
    assert!(started.elapsed() < Duration::from_secs(1), "closed at once: {:?}", started.elapsed());
    assert!(metric_of(&gw, "siger_connections_refused_total{reason=\"max_connections\"}") >= 1.0, "{}", scrape(&gw));
    drop(busy);
    // Room again once those are gone.
    assert!(eventually(Duration::from_secs(5), || metric_of(&gw, "siger_connections_open") == 0.0));
    assert_eq!(get(gw.addr, "/after").status, 200);
}

#[test]
fn the_per_ip_bound_holds_for_one_address_while_another_is_served() {
    let echo = Echo::start("api");
    let gw = gateway(&echo, "max_connections_per_ip: 3");
    let held: Vec<TcpStream> = (0..3).map(|_| served_connection(gw.addr)).collect();
    let mut fourth = TcpStream::connect(gw.addr).unwrap();
    let _ = fourth.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(closed_within(&mut fourth, Duration::from_secs(2)), "a fourth connection from 127.0.0.1 is closed");
    // 127.0.0.2 is another client.
    let mut other = connect_from("127.0.0.2", gw.addr).expect("127.0.0.2 is a loopback address");
    other.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    other.write_all(b"GET /x?fixed HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut other).expect("served").status, 200);
    assert_eq!(metric_of(&gw, "siger_connections_refused_total{reason=\"max_connections_per_ip\"}"), 1.0);
    // A closed connection frees its place (once the gateway has seen it close).
    drop(held);
    assert!(eventually(Duration::from_secs(5), || metric_of(&gw, "siger_connections_open") <= 1.0));
    assert_eq!(get(gw.addr, "/again").status, 200);
}

#[test]
fn a_head_trickled_byte_by_byte_is_cut_at_the_header_timeout() {
    let echo = Echo::start("api");
    let gw = gateway(&echo, "header_timeout: 2s, idle_timeout: 5s");
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let head = b"GET /x HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let mut closed = false;
    // One byte every 500 ms; after each, look for what the server said.
    for byte in head {
        if s.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    let took = started.elapsed();
    assert!(closed, "still open after {took:?}");
    assert!(took >= Duration::from_millis(1600) && took <= Duration::from_millis(2900), "cut after {took:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    let body: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"], "request_timeout");
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(metric_of(&gw, "siger_request_timeouts_total{phase=\"header\"}"), 1.0);
    // The gateway still serves.
    assert_eq!(get(gw.addr, "/x").status, 200);
}

#[test]
fn heads_split_across_many_reads_are_served_whole() {
    let echo = Echo::start("api");
    let gw = gateway(&echo, "header_timeout: 5s");
    // The gateway reads a head until its empty line before Pingora parses it: whatever the
    // reads' boundaries, the request and a body sent with the head's end arrive intact.
    let body = b"{\"n\":1}";
    let crlf = format!(
        "POST /split?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nX-Long: {}\r\n\r\n",
        body.len(),
        "v".repeat(9000) // past the 8 KiB the gate gathers: Pingora reads the rest
    );
    let bare_lf = "GET /split?b=2 HTTP/1.1\nHost: x\n\n".to_string();
    for (what, head, with_body, pieces) in [
        ("CRLF head with a body", &crlf, true, 7),
        ("bare LF head", &bare_lf, false, 1),
        ("one byte a write", &bare_lf, false, bare_lf.len()),
    ] {
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The head's last `pieces` bytes go out one a write, 15 ms apart; the body, if any, in
        // the same write as the head's last byte.
        let head = head.as_bytes();
        let (first, tail) = head.split_at(head.len() - pieces);
        s.write_all(first).unwrap();
        for (i, byte) in tail.iter().enumerate() {
            // Pacing: each byte its own segment, so the gate sees the head in pieces.
            std::thread::sleep(Duration::from_millis(15));
            let mut write = vec![*byte];
            if with_body && i == tail.len() - 1 {
                write.extend_from_slice(body);
            }
            s.write_all(&write).unwrap();
        }
        let r = read_response(&mut s).unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(r.status, 200, "{what}: {}", String::from_utf8_lossy(&r.body));
        let echoed = r.json();
        assert_eq!(echoed["path"], "/split", "{what}");
        if with_body {
            assert_eq!(echoed["body"], "{\"n\":1}", "{what}");
            assert_eq!(echoed["headers"]["x-long"][0].as_str().map(str::len), Some(9000), "{what}");
        }
        // The connection stays open for the next request.
        s.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut s).expect("a second answer").status, 200, "{what}");
    }
}

#[test]
fn a_head_growing_past_max_header_bytes_is_answered_431_while_it_arrives() {
    let echo = Echo::start("api");
    let gw = gateway(&echo, "max_header_bytes: 4KiB, header_timeout: 10s");
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n").unwrap();
    // Header lines 1 KiB at a time, never ending the head: the answer comes once the head is
    // past the bound, not at header_timeout, and the connection closes.
    let started = Instant::now();
    for i in 0..8 {
        let line = format!("X-Pad-{i}: {}\r\n", "p".repeat(1000));
        if s.write_all(line.as_bytes()).is_err() {
            break;
        }
        // Pacing: the head arrives over time, as a slow client's would.
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = read_response(&mut s).expect("an answer");
    assert_eq!(r.status, 431, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"], "request_header_fields_too_large");
    assert!(r.json()["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
    assert!(closed_within(&mut s, Duration::from_secs(2)), "the connection closes after the 431");
    assert_eq!(metric_of(&gw, "siger_request_heads_too_large_total"), 1.0);
    assert_eq!(get(gw.addr, "/x").status, 200);
}

/// Send `total` bytes of body at `rate` bytes/s in 1 KiB writes, then read the answer; return
/// the answer and when it came.
fn trickled_upload(addr: SocketAddr, total: usize, per_second: usize) -> (Option<RawResponse>, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n").as_bytes()).unwrap();
    let started = Instant::now();
    let reader = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut s = s;
        let chunk = vec![b'x'; 1024];
        let mut sent = 0;
        while sent < total {
            let due = Duration::from_secs_f64(sent as f64 / per_second as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                // Pacing: the rate is what is under test.
                std::thread::sleep(wait);
            }
            let n = chunk.len().min(total - sent);
            if s.write_all(&chunk[..n]).is_err() {
                return;
            }
            sent += n;
        }
    });
    let mut reader = reader;
    let answer = read_response(&mut reader);
    let took = started.elapsed();
    let _ = reader.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    (answer, took)
}

#[test]
fn a_trickled_body_is_cut_at_the_body_timeout_and_a_slow_legitimate_one_completes() {
    let echo = Echo::start("api");
    let gw = gateway(&echo, "body_timeout: 3s, max_body: 2MiB");
    // 1 MiB at 1 KiB/s would take 17 minutes.
    let (answer, took) = trickled_upload(gw.addr, 1 << 20, 1024);
    let answer = answer.expect("an answer before the connection closes");
    assert_eq!(answer.status, 408, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["error"], "request_timeout");
    assert!(took >= Duration::from_millis(2400) && took <= Duration::from_millis(4000), "cut after {took:?}");
    assert_eq!(metric_of(&gw, "siger_request_timeouts_total{phase=\"body\"}"), 1.0);
    // 128 KiB over 1.5 s is slow but within the limit.
    let (answer, took) = trickled_upload(gw.addr, 128 << 10, 85 << 10);
    let answer = answer.expect("an answer");
    assert_eq!((answer.status, answer.json()["bytes"].as_u64()), (200, Some(128 << 10)), "after {took:?}");
    assert!(took >= Duration::from_millis(1400));
    // A GET waiting longer than body_timeout for its backend is not a slow body.
    let r = get(gw.addr, "/x?delay_ms=3500");
    assert_eq!(r.status, 200);
}

#[test]
fn limits_are_checked_and_reloadable() {
    let echo = Echo::start("api");
    let gw = gateway(&echo, "max_connections: 2");
    let _a = served_connection(gw.addr);
    let _b = served_connection(gw.addr);
    // Both are idle: after a second, a third client is served by closing the older (refused
    // until then).
    assert!(eventually(Duration::from_secs(10), || http_get_status(gw.addr, "/x") == Some(200)));
    drop((_a, _b));
    assert!(eventually(Duration::from_secs(5), || metric_of(&gw, "siger_connections_open") <= 1.0));
    gw.rewrite(&format!(
        "{HEAD}limits: {{max_connections: 50, max_connections_per_ip: 1}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api, auth: public}}\n",
        echo.addr
    ));
    assert_eq!(gw.reload().status, 200);
    let _c = served_connection(gw.addr);
    let mut second = TcpStream::connect(gw.addr).unwrap();
    let _ = second.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(closed_within(&mut second, Duration::from_secs(2)), "per-IP bound of the reloaded config");
    // Bad values name their key.
    gw.rewrite(&format!(
        "{HEAD}limits: {{max_connections: 0, header_timeout: 10ms, send_timeout: 2h}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api, auth: public}}\n",
        echo.addr
    ));
    let refused = gw.reload();
    let text = String::from_utf8_lossy(&refused.body);
    assert_eq!(refused.status, 422, "{text}");
    for key in ["limits.max_connections", "limits.header_timeout", "limits.send_timeout"] {
        assert!(text.contains(key), "{key}: {text}");
    }
}

/// A gateway with an h2c listener and `limits` (YAML flow-map entries), in front of `echo`.
fn h2c_gateway(echo: &Echo, limits: &str) -> Gateway {
    Gateway::start_h2c(&format!(
        "limits: {{{limits}}}\nservices:\n  api: {{targets: [\"{}\"], read_timeout: 10s}}\nroutes:\n  - {{path: /, service: api, auth: public}}\n",
        echo.addr
    ))
}

/// An HTTP/2 (prior knowledge) client of `addr`, its connection driven in the background.
async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

#[test]
fn http2_connections_announce_the_stream_and_header_bounds() {
    let echo = Echo::start("api");
    let gw = h2c_gateway(&echo, "h2_max_concurrent_streams: 7, max_header_bytes: 4KiB");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = h2_client(gw.addr).await;
        let mut client = client.ready().await.unwrap();
        let request = http::Request::get(format!("http://{}/x?fixed", gw.addr)).body(()).unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        assert_eq!(response.await.unwrap().status(), 200);
        // The server's SETTINGS arrived with the first response.
        assert_eq!(client.current_max_send_streams(), 7);
        // A header list over max_header_bytes is refused, and the connection keeps serving.
        let mut client = client.ready().await.unwrap();
        let big = http::Request::get(format!("http://{}/x?fixed", gw.addr))
            .header("x-big", "a".repeat(6 << 10))
            .body(())
            .unwrap();
        let refused = match client.send_request(big, true) {
            Ok((response, _)) => match response.await {
                Ok(r) => r.status().as_u16() == 431,
                Err(_) => true,
            },
            Err(_) => true,
        };
        assert!(refused, "a 6 KiB header list is refused");
    });
}

#[test]
fn an_http2_stream_whose_body_stalls_is_reset_at_the_body_timeout() {
    let echo = Echo::start("api");
    let gw = h2c_gateway(&echo, "body_timeout: 2s");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = h2_client(gw.addr).await;
        // 1 KiB of a declared 1 MiB, then nothing.
        let mut client = client.ready().await.unwrap();
        let upload = http::Request::post(format!("http://{}/upload", gw.addr))
            .header("content-length", "1048576")
            .body(())
            .unwrap();
        let (response, mut body) = client.send_request(upload, false).unwrap();
        body.send_data(bytes::Bytes::from(vec![b'x'; 1024]), false).unwrap();
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(10), response).await.expect("an outcome");
        let took = started.elapsed();
        let cut = match outcome {
            Err(_) => true,
            Ok(r) => r.status().as_u16() == 408,
        };
        assert!(cut, "the stalled stream is reset");
        assert!(took >= Duration::from_millis(1600) && took <= Duration::from_millis(3000), "cut after {took:?}");
        // The connection still serves; a GET waiting longer than body_timeout is not cut.
        let mut client = client.ready().await.unwrap();
        let slow = http::Request::get(format!("http://{}/x?delay_ms=2500&fixed", gw.addr)).body(()).unwrap();
        let (response, _) = client.send_request(slow, true).unwrap();
        assert_eq!(response.await.unwrap().status(), 200);
    });
    assert_eq!(metric_of(&gw, "siger_request_timeouts_total{phase=\"body\"}"), 1.0);
}

/// Every response on `s` until the server closes it (or 10 s pass), parsed in order.
fn responses_until_close(s: &mut TcpStream) -> Vec<RawResponse> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    let mut reader = std::io::Cursor::new(bytes);
    std::iter::from_fn(|| http1::read_response(&mut reader, "GET").expect("responses the reader can frame")).collect()
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let echo = Echo::start("api");
    let gw = gateway(&echo, "header_timeout: 5s");
    // Three requests in one write: each is answered, in order.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let paths: Vec<String> =
        responses_until_close(&mut s).iter().map(|r| r.json()["path"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(paths, ["/a", "/b", "/c"], "one write");
    // The next request sent while the first is still being answered.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /slow?delay_ms=400 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Pacing: the second request arrives while the first (400 ms at the backend) is answered.
    std::thread::sleep(Duration::from_millis(150));
    s.write_all(b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let answers = responses_until_close(&mut s);
    let paths: Vec<String> = answers.iter().map(|r| r.json()["path"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(paths, ["/slow", "/next"], "sent during the first answer");
}

#[test]
fn more_than_256_header_fields_get_a_json_answer_from_the_gate() {
    let echo = Echo::start("api");
    let gw = gateway(&echo, "max_header_bytes: 64KiB");
    let mut head = String::from("GET /x HTTP/1.1\r\nHost: x\r\n");
    for i in 0..300 {
        head.push_str(&format!("X-F{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let r = read_response(&mut s).expect("an answer");
    assert_eq!(r.status, 431, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"], "request_header_fields_too_large");
    assert!(r.json()["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    // 256 fields are proxied (the echo backend, hyper, refuses more than 100 itself).
    let mut head = String::from("GET /fields256 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..254 {
        head.push_str(&format!("X-F{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let r = raw_request(gw.addr, head.as_bytes());
    assert!(!String::from_utf8_lossy(&r.body).contains("request_header_fields_too_large"), "{r:?}");
    assert!(eventually(Duration::from_secs(5), || gw
        .access_lines()
        .iter()
        .any(|l| l["path"] == "/fields256" && l["attempts"] == 1)));
}

#[test]
fn leading_empty_lines_neither_end_the_head_nor_lift_its_bound() {
    let echo = Echo::start("api");
    let gw = gateway(&echo, "max_header_bytes: 4KiB, header_timeout: 10s");
    // Empty lines before the request line are skipped (RFC 9112 §2.2)...
    let r = raw_request(gw.addr, b"\r\n\r\n\nGET /x?fixed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    // ...and do not end the head early: a head growing past the bound after them is answered
    // 431 while it arrives, as without them.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\r\n\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    for i in 0..8 {
        if s.write_all(format!("X-Pad-{i}: {}\r\n", "p".repeat(1000)).as_bytes()).is_err() {
            break;
        }
        // Pacing: the head arrives over time, as a slow client's would.
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = read_response(&mut s).expect("an answer before header_timeout");
    assert_eq!(r.status, 431, "{}", String::from_utf8_lossy(&r.body));
    assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
    // Empty lines alone count toward the bound too.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(&b"\r\n".repeat(3000));
    let r = read_response(&mut s).expect("an answer before header_timeout");
    assert_eq!(r.status, 431);
}

#[test]
fn http1_on_an_h2c_listener_goes_through_the_connection_gate() {
    let echo = Echo::start("api");
    let gw = h2c_gateway(&echo, "max_header_bytes: 4KiB, header_timeout: 10s");
    // A head growing past the bound is answered 431 while it arrives.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    for i in 0..8 {
        if s.write_all(format!("X-Pad-{i}: {}\r\n", "p".repeat(1000)).as_bytes()).is_err() {
            break;
        }
        // Pacing: the head arrives over time, as a slow client's would.
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = read_response(&mut s).expect("an answer before header_timeout");
    assert_eq!(r.status, 431, "{}", String::from_utf8_lossy(&r.body));
    assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
    assert_eq!(metric_of(&gw, "siger_request_heads_too_large_total"), 1.0);
    // A request shorter than the HTTP/2 preface is answered at once (the preface is not waited
    // for), and keep-alive requests follow on the same connection.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    s.write_all(b"GET /x HTTP/1.1\r\n\r\n").unwrap();
    let r = read_response(&mut s).expect("an answer");
    assert!(started.elapsed() < Duration::from_secs(2), "answered after {:?}", started.elapsed());
    assert_eq!(r.status, 400, "no Host: {}", String::from_utf8_lossy(&r.body));
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /x?fixed HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).expect("an answer").status, 200);
    s.write_all(b"GET /x?fixed HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).expect("a second answer").status, 200);
    // HTTP/2 with prior knowledge is still served on the same listener.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = h2_client(gw.addr).await;
        let mut client = client.ready().await.unwrap();
        let request = http::Request::get(format!("http://{}/x?fixed", gw.addr)).body(()).unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        assert_eq!(response.await.unwrap().status(), 200);
    });
}

/// A backend that answers every request with a body it never finishes (chunked, without a
/// last chunk), written as fast as the connection takes it, and counts the connections it saw closed under
/// it (its write failed).
struct Firehose {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Firehose {
    fn start() -> Firehose {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                a.fetch_add(1, Ordering::SeqCst);
                let closed = c.clone();
                std::thread::spawn(move || {
                    let _ = http1::read_request(&mut BufReader::new(conn.try_clone().unwrap()));
                    let mut conn = conn;
                    let mut chunk = b"10000\r\n".to_vec();
                    chunk.extend_from_slice(&[b'f'; 64 << 10]);
                    chunk.extend_from_slice(b"\r\n");
                    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
                    if conn.write_all(head).is_ok() {
                        while conn.write_all(&chunk).is_ok() {}
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Firehose { addr, accepted, closed }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// A gateway routing `/big` to `fire` and everything else to `echo`; `listen` is the listener
/// list (YAML) and `limits` flow-map entries.
fn firehose_gateway(echo: &Echo, fire: &Firehose, listen: &str, limits: &str) -> Gateway {
    Gateway::start_raw(&firehose_config(echo, fire, listen, limits))
}

fn firehose_config(echo: &Echo, fire: &Firehose, listen: &str, limits: &str) -> String {
    format!(
        "server:\n  threads: 2\n  pid_file: {{{{DIR}}}}/siger.pid\n  upgrade_sock: {{{{DIR}}}}/upgrade.sock\n  grace_period: 0s\n  graceful_shutdown_timeout: 2s\nlisten: {listen}\nadmin:\n  listen: \"{{{{ADMIN}}}}\"\nlimits: {{{limits}}}\nservices:\n  api: {{targets: [\"{}\"]}}\n  big: {{targets: [\"{}\"], read_timeout: 120s}}\nroutes:\n  - {{path: /big, service: big, auth: public}}\n  - {{path: /, service: api, auth: public}}\n",
        echo.addr, fire.addr
    )
}

#[test]
fn a_client_that_stops_reading_is_closed_at_the_send_timeout_and_its_backend_released() {
    let echo = Echo::start("api");
    let fire = Firehose::start();
    let gw = firehose_gateway(&echo, &fire, "[\"{{LISTEN}}\"]", "");
    // send_timeout (60 s by default) follows reloads.
    gw.rewrite(&firehose_config(&echo, &fire, "[\"{{LISTEN}}\"]", "send_timeout: 2s"));
    assert_eq!(gw.reload().status, 200);
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // A client that reads keeps its response coming, however often the gateway's writes wait.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0usize;
    let reading = Instant::now();
    while reading.elapsed() < Duration::from_secs(3) {
        got += s.read(&mut buf).expect("the response keeps coming while the client reads");
    }
    assert!(got > 8 << 20, "{got} bytes in 3 s");
    assert_eq!(fire.closed(), 0);
    // Then it stops reading: once the socket buffers are full, nothing is written for
    // send_timeout and the connection closes, with the backend connection under it.
    let stopped = Instant::now();
    assert!(eventually(Duration::from_secs(15), || fire.closed() == 1), "the backend connection is still held");
    let took = stopped.elapsed();
    assert!(took >= Duration::from_secs(2), "closed after {took:?}, before send_timeout");
    assert!(closed_within(&mut s, Duration::from_secs(10)), "the client connection is closed");
    assert_eq!(metric_of(&gw, "siger_request_timeouts_total{phase=\"send\"}"), 1.0);
    assert_eq!(get(gw.addr, "/x").status, 200);
}

#[test]
fn at_max_connections_a_client_that_stopped_reading_gives_way() {
    let echo = Echo::start("api");
    let fire = Firehose::start();
    let gw = firehose_gateway(&echo, &fire, "[\"{{LISTEN}}\"]", "max_connections: 2");
    // Two clients ask for the endless body and never read it.
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(gw.addr).unwrap();
            s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            s
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || fire.accepted() == 2));
    // Once their writes have waited over a second (their socket buffers fill first), a new
    // client closes the one stalled longest (and its backend connection) and is served;
    // refused until then.
    assert!(
        eventually(Duration::from_secs(15), || http_get_status(gw.addr, "/x?fixed") == Some(200)),
        "a new client is served"
    );
    assert!(eventually(Duration::from_secs(5), || fire.closed() == 1), "the evicted reader's backend is released");
    assert_eq!(metric_of(&gw, "siger_connections_evicted_total"), 1.0);
    drop(stalled);
}

#[test]
fn an_http2_stream_at_a_zero_window_is_reset_at_the_send_timeout() {
    let echo = Echo::start("api");
    let fire = Firehose::start();
    let listen = "[{addr: \"{{LISTEN}}\", h2c: true}]";
    let gw = firehose_gateway(&echo, &fire, listen, "send_timeout: 2s");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // The client grants no flow-control window to the streams it opens.
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (client, connection) =
            h2::client::Builder::new().initial_window_size(0).handshake::<_, bytes::Bytes>(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut bodies = Vec::new();
        for _ in 0..3 {
            let mut client = client.clone().ready().await.unwrap();
            let request = http::Request::get(format!("http://{}/big", gw.addr)).body(()).unwrap();
            let (response, _) = client.send_request(request, true).unwrap();
            let response = response.await.unwrap();
            assert_eq!(response.status(), 200);
            bodies.push(response.into_body());
        }
        let started = Instant::now();
        // Each stream is reset once it has sat at the zero window for send_timeout.
        for mut body in bodies {
            let outcome = tokio::time::timeout(Duration::from_secs(15), body.data()).await.expect("the stream ends");
            assert!(!matches!(outcome, Some(Ok(_))), "no data fits a zero window");
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(1500), "reset after {took:?}");
    });
    assert!(eventually(Duration::from_secs(5), || fire.closed() == 3), "backend connections released");
}

/// An established TCP connection to `addr` that sends nothing.
fn silent(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

#[test]
fn tls_handshakes_count_against_max_connections_and_meet_the_head_deadlines() {
    let pki = support::pki::Pki::new("Edge CA");
    let cert = pki.server("a", &["a.test"], 365);
    let echo = Echo::start("api");
    let gw = Gateway::start_raw(&format!(
        "server:\n  threads: 2\n  pid_file: {{{{DIR}}}}/siger.pid\n  upgrade_sock: {{{{DIR}}}}/upgrade.sock\n  grace_period: 0s\nlisten:\n  - addr: \"{{{{LISTEN}}}}\"\n    certs:\n      - {{cert: {}, key: {}}}\nadmin:\n  listen: \"{{{{ADMIN}}}}\"\nlimits: {{max_connections: 4, idle_timeout: 4s, header_timeout: 1s}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api, auth: public}}\n",
        cert.cert.display(),
        cert.key.display(),
        echo.addr
    ));
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.ca()).unwrap()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .resolve("a.test", gw.addr)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://a.test:{}/x?fixed", gw.addr.port());
    // Connections that have not finished their handshake are counted.
    let opened = Instant::now();
    let mut quiet: Vec<TcpStream> = (0..4).map(|_| silent(gw.addr)).collect();
    assert!(eventually(Duration::from_secs(5), || metric_of(&gw, "siger_connections_open") == 4.0), "{}", scrape(&gw));
    // At the bound, one that has waited over a second gives way to a new client, which is served
    // (refused until then).
    let served = || client.get(&url).send().is_ok_and(|r| r.status() == 200);
    assert!(eventually(Duration::from_secs(10), served), "served over TLS once a silent one gave way");
    assert_eq!(metric_of(&gw, "siger_connections_evicted_total"), 1.0);
    // The others are closed at idle_timeout, not after Pingora's 60 s handshake timeout.
    for s in quiet.iter_mut() {
        assert!(closed_within(s, Duration::from_secs(8)), "a silent TLS connection is still open");
    }
    let took = opened.elapsed();
    assert!(took >= Duration::from_millis(3500) && took < Duration::from_secs(9), "closed after {took:?}");
    // A handshake that starts and stalls is cut at header_timeout from its first byte.
    let mut partial = silent(gw.addr);
    partial.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut partial, Duration::from_secs(8)), "a stalled handshake is still open");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(700) && took < Duration::from_millis(3500), "cut after {took:?}");
    let timeouts = format!("siger_tls_handshakes_total{{listener=\"{}\",result=\"timeout\"}}", gw.addr);
    // Three silent ones and the stalled one (counted just after the socket closes).
    assert!(eventually(Duration::from_secs(2), || metric_of(&gw, &timeouts) == 4.0), "{}", scrape(&gw));
    assert_eq!(client.get(&url).send().expect("still served").status(), 200);
}
