//! `proxy_protocol: true` listeners (ARCHITECTURE §8.7) through the real binary: PROXY v1 and
//! v2 headers written byte for byte by the test, a TLS listener reached through a relay that
//! sends a v2 header before the ClientHello, and HAProxy in front (`send-proxy`,
//! `send-proxy-v2`): the client the header carries is what the backend (X-Forwarded-For,
//! X-Real-IP), the access log and the per-IP connection bound see.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::pki::Pki;
use crate::support::ports::Reserved;
use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The server head without a listener: tests write their own `listen:` list.
const SERVER: &str = "server:\n  threads: 2\n  pid_file: {{DIR}}/siger.pid\n  upgrade_sock: {{DIR}}/upgrade.sock\n  grace_period: 0s\n  graceful_shutdown_timeout: 2s\nadmin:\n  listen: \"{{ADMIN}}\"\n";

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: PROXY (`local` false) or LOCAL, over IPv4 or IPv6 from `src` to `dst`.
fn v2(local: bool, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(if local { 0x20 } else { 0x21 });
    let mut addresses = Vec::new();
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.push(0x11);
            addresses.extend_from_slice(&s.ip().octets());
            addresses.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            h.push(0x21);
            addresses.extend_from_slice(&s.ip().octets());
            addresses.extend_from_slice(&d.ip().octets());
        }
        _ => panic!("one family"),
    }
    addresses.extend_from_slice(&src.port().to_be_bytes());
    addresses.extend_from_slice(&dst.port().to_be_bytes());
    h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    h.extend_from_slice(&addresses);
    h
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Write `header` then a GET of `path` (in one write) and read the answer.
fn get_after(addr: SocketAddr, header: &[u8], path: &str) -> RawResponse {
    get_after_with(addr, header, path, "")
}

/// [`get_after`] with more header lines (`"Name: value\r\n"` each).
fn get_after_with(addr: SocketAddr, header: &[u8], path: &str, lines: &str) -> RawResponse {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{lines}\r\n").as_bytes());
    stream.write_all(&bytes).unwrap();
    read_response(&mut stream).unwrap_or_else(|| panic!("no answer to {path} after {header:?}"))
}

/// Whether the gateway closed `stream` without answering (EOF or reset before any byte).
fn closed_unanswered(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("answered: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => matches!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

fn headers_seen(r: &RawResponse) -> (serde_json::Value, serde_json::Value) {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let h = &r.json()["headers"];
    (h["x-forwarded-for"].clone(), h["x-real-ip"].clone())
}

fn routes(echo: &Echo) -> String {
    format!(
        "services:\n  web: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: web, auth: public}}\n",
        echo.addr
    )
}

/// The `client_ip` of the access line of the request to `path`.
fn logged_client(gw: &Gateway, path: &str) -> String {
    let mut found = None;
    eventually(Duration::from_secs(5), || {
        found = gw.access_lines().into_iter().find(|l| l["path"] == path);
        found.is_some()
    });
    let line = found.unwrap_or_else(|| panic!("no access line for {path}:\n{}", gw.logs()));
    line["client_ip"].as_str().unwrap_or_default().to_string()
}

#[test]
fn v1_and_v2_headers_name_the_client_for_the_backend_the_log_and_the_per_ip_bound() {
    let echo = Echo::start("e");
    let gw = Gateway::start_raw(&format!(
        "{SERVER}listen:\n  - {{addr: \"{{{{LISTEN}}}}\", proxy_protocol: true}}\ntrusted_proxies: [192.0.2.0/24]\nlimits:\n  max_connections_per_ip: 1\n{}",
        routes(&echo)
    ));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("/v1-tcp4", b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n".to_vec(), "203.0.113.7"),
        ("/v1-tcp6", b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n".to_vec(), "2001:db8::7"),
        ("/v1-unknown", b"PROXY UNKNOWN\r\n".to_vec(), "127.0.0.1"),
        ("/v2-tcp4", v2(false, sa("203.0.113.8:40000"), sa("192.0.2.1:443")), "203.0.113.8"),
        ("/v2-tcp6", v2(false, sa("[2001:db8::8]:40000"), sa("[2001:db8::1]:443")), "2001:db8::8"),
        // The balancer's own connection (a health check): the socket's peer stays the client.
        ("/v2-local", v2(true, sa("203.0.113.9:1"), sa("192.0.2.1:443")), "127.0.0.1"),
    ];
    for (path, header, client) in &cases {
        let (xff, real_ip) = headers_seen(&get_after(gw.addr, header, path));
        assert_eq!(xff, serde_json::json!([client]), "{path}");
        assert_eq!(real_ip, serde_json::json!([client]), "{path}");
        assert_eq!(logged_client(&gw, path), *client, "{path}");
    }

    // The carried address is a trusted proxy's: the X-Forwarded-For it relays is believed.
    let r = get_after_with(
        gw.addr,
        b"PROXY TCP4 192.0.2.50 192.0.2.1 51000 443\r\n",
        "/trusted",
        "X-Forwarded-For: 198.51.100.4\r\n",
    );
    let (xff, real_ip) = headers_seen(&r);
    assert_eq!(xff, serde_json::json!(["198.51.100.4, 192.0.2.50"]));
    assert_eq!(real_ip, serde_json::json!(["198.51.100.4"]));

    // max_connections_per_ip counts the carried client, not the balancer: a second connection
    // from 203.0.113.60 is closed while the first is open; another client still gets in.
    let mut first = TcpStream::connect(gw.addr).unwrap();
    first.write_all(b"PROXY TCP4 203.0.113.60 192.0.2.1 1 443\r\n").unwrap();
    first.write_all(b"GET /held HTTP/1.1\r\nHost: gw\r\n\r\n").unwrap();
    first.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(read_response(&mut first).map(|r| r.status), Some(200), "the first connection is served");
    let mut second = TcpStream::connect(gw.addr).unwrap();
    second.write_all(b"PROXY TCP4 203.0.113.60 192.0.2.1 2 443\r\nGET /second HTTP/1.1\r\nHost: gw\r\n\r\n").unwrap();
    assert!(closed_unanswered(&mut second), "the same client's second connection is closed");
    let other = get_after(gw.addr, b"PROXY TCP4 203.0.113.61 192.0.2.1 3 443\r\n", "/other");
    assert_eq!(other.status, 200);
    let refused = metric_of(&gw, "siger_connections_refused_total{reason=\"max_connections_per_ip\"}");
    assert_eq!(refused, 1.0);
    drop(first);
}

#[test]
fn a_connection_without_a_valid_header_is_closed_and_counted_and_a_split_header_is_read_whole() {
    let echo = Echo::start("e");
    let gw = Gateway::start_raw(&format!(
        "{SERVER}listen:\n  - {{addr: \"{{{{LISTEN}}}}\", proxy_protocol: true}}\n{}",
        routes(&echo)
    ));
    let invalid = "siger_proxy_protocol_rejected_total{reason=\"invalid\"}";
    assert_eq!(metric_of(&gw, invalid), 0.0);
    // A request straight to the listener, garbage, a v1 line that never ends, a malformed
    // v1 header, a v2 header of version 1.
    let mut bad_version = v2(false, sa("203.0.113.7:1"), sa("192.0.2.1:2"));
    bad_version[12] = 0x11;
    let openings: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat(),
        b"PROXY TCP4 203.0.113.7 192.0.2.1 99999 443\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        [bad_version.as_slice(), b"GET / HTTP/1.1\r\n\r\n"].concat(),
    ];
    for opening in &openings {
        let mut stream = TcpStream::connect(gw.addr).unwrap();
        stream.write_all(opening).unwrap();
        assert!(closed_unanswered(&mut stream), "{opening:?} closed without an answer");
    }
    assert!(eventually(Duration::from_secs(5), || metric_of(&gw, invalid) == openings.len() as f64));
    // Logged (the log writer is a thread of its own: the line comes soon after).
    let logged = || gw.logs().contains("closed on a proxy_protocol listener");
    assert!(eventually(Duration::from_secs(5), logged), "{}", gw.logs());

    // A header (and the request after it) arriving a few bytes at a time, as separate segments.
    for header in [
        b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n".to_vec(),
        v2(false, sa("203.0.113.8:2"), sa("192.0.2.1:443")),
    ] {
        let mut stream = TcpStream::connect(gw.addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let bytes = [header.as_slice(), b"GET /split HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"].concat();
        for piece in bytes.chunks(5) {
            stream.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(15));
        }
        let r = read_response(&mut stream).expect("an answer");
        let (xff, _) = headers_seen(&r);
        let want = if header.starts_with(b"PROXY") { "203.0.113.7" } else { "203.0.113.8" };
        assert_eq!(xff, serde_json::json!([want]));
    }
    assert_eq!(metric_of(&gw, invalid), openings.len() as f64, "split headers are not rejections");
}

#[test]
fn a_header_that_does_not_come_in_time_is_cut_and_one_left_unfinished_is_counted() {
    let echo = Echo::start("e");
    let gw = Gateway::start_raw(&format!(
        "{SERVER}listen:\n  - {{addr: \"{{{{LISTEN}}}}\", proxy_protocol: true}}\nlimits:\n  idle_timeout: 2s\n  header_timeout: 1s\n{}",
        routes(&echo)
    ));
    let timeout = "siger_proxy_protocol_rejected_total{reason=\"timeout\"}";
    let closed = "siger_proxy_protocol_rejected_total{reason=\"closed\"}";
    let closed_before = metric_of(&gw, closed);
    // Half a header, then nothing: cut at header_timeout. Nothing at all: cut at idle_timeout.
    let mut half = TcpStream::connect(gw.addr).unwrap();
    half.write_all(b"PROXY TCP4 203.0.113.7 ").unwrap();
    let mut silent = TcpStream::connect(gw.addr).unwrap();
    let started = std::time::Instant::now();
    assert!(closed_unanswered(&mut half));
    assert!(closed_unanswered(&mut silent));
    assert!(started.elapsed() < Duration::from_secs(15), "cut by the deadlines, not the test's read timeout");
    assert!(eventually(Duration::from_secs(5), || metric_of(&gw, timeout) == 2.0), "{}", scrape(&gw));
    // Half a header, then the client leaves.
    let mut left = TcpStream::connect(gw.addr).unwrap();
    left.write_all(&V2_SIGNATURE[..8]).unwrap();
    drop(left);
    assert!(eventually(Duration::from_secs(5), || metric_of(&gw, closed) == closed_before + 1.0), "{}", scrape(&gw));
    assert_eq!(metric_of(&gw, "siger_proxy_protocol_rejected_total{reason=\"invalid\"}"), 0.0);
}

#[test]
fn rate_limits_keyed_by_ip_count_the_carried_client_and_the_key_applies_on_reload() {
    let echo = Echo::start("e");
    let body = |listener: &str| {
        format!(
            "{SERVER}listen:\n  - {listener}\nservices:\n  web: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: web, auth: public, rate_limit: {{requests: 2, per: 1m, key: ip}}}}\n",
            echo.addr
        )
    };
    let gw = Gateway::start_raw(&body("{addr: \"{{LISTEN}}\", proxy_protocol: true}"));
    let status =
        |client: &str| get_after(gw.addr, format!("PROXY TCP4 {client} 192.0.2.1 1000 443\r\n").as_bytes(), "/").status;
    // Each client behind the balancer has its own budget of 2.
    assert_eq!([status("203.0.113.1"), status("203.0.113.1"), status("203.0.113.1")], [200, 200, 429]);
    assert_eq!([status("203.0.113.2"), status("203.0.113.2")], [200, 200]);

    // Off on reload: a header is now what it is without the key, not a client address.
    gw.rewrite(&body("\"{{LISTEN}}\""));
    assert_eq!(gw.reload().status, 200);
    assert_eq!(get(gw.addr, "/").status, 200, "a plain request is served again");
    // And on again.
    gw.rewrite(&body("{addr: \"{{LISTEN}}\", proxy_protocol: true}"));
    assert_eq!(gw.reload().status, 200);
    let mut direct = TcpStream::connect(gw.addr).unwrap();
    direct.write_all(b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n").unwrap();
    assert!(closed_unanswered(&mut direct), "a request without a header is closed again");
    assert_eq!(status("203.0.113.3"), 200);
}

/// A connection to `to` from `source` (any 127.0.0.0/8 address is local).
fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SockAddr::from(SocketAddr::new(source.parse().unwrap(), 0))).unwrap();
    socket.connect(&SockAddr::from(to)).unwrap();
    socket.into()
}

#[test]
fn headers_are_read_only_from_the_balancers_in_proxy_protocol_from() {
    let echo = Echo::start("e");
    let gw = Gateway::start_raw(&format!(
        "{SERVER}listen:\n  - {{addr: \"{{{{LISTEN}}}}\", proxy_protocol: true, proxy_protocol_from: [127.0.0.2/32]}}\n{}",
        routes(&echo)
    ));
    let opening =
        b"PROXY TCP4 203.0.113.5 192.0.2.1 1000 443\r\nGET /from HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n";
    // From the balancer: read, and the carried client is the client.
    let mut balancer = connect_from("127.0.0.2", gw.addr);
    balancer.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    balancer.write_all(opening).unwrap();
    let (xff, _) = headers_seen(&read_response(&mut balancer).expect("an answer"));
    assert_eq!(xff, serde_json::json!(["203.0.113.5"]));
    // From anyone else: closed before its header is read, counted and logged.
    let invalid = "siger_proxy_protocol_rejected_total{reason=\"invalid\"}";
    let lines = || gw.logs().matches("not in the listener's proxy_protocol_from").count();
    assert_eq!((metric_of(&gw, invalid), lines()), (0.0, 0));
    let mut other = connect_from("127.0.0.1", gw.addr);
    other.write_all(opening).unwrap();
    assert!(closed_unanswered(&mut other));
    assert!(eventually(Duration::from_secs(5), || metric_of(&gw, invalid) == 1.0));
    assert!(eventually(Duration::from_secs(5), || lines() == 1), "{}", gw.logs());
}

/// Accepts connections on `listen` and relays each to `to`, after writing `header` there:
/// a PROXY sender the test controls byte for byte.
fn relay(listen: TcpListener, to: SocketAddr, header: Vec<u8>) {
    std::thread::spawn(move || {
        for client in listen.incoming() {
            let Ok(client) = client else { return };
            let header = header.clone();
            std::thread::spawn(move || {
                let Ok(mut upstream) = TcpStream::connect(to) else { return };
                if upstream.write_all(&header).is_err() {
                    return;
                }
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut u2);
                    let _ = u2.shutdown(std::net::Shutdown::Write);
                });
                let mut client = client;
                let _ = std::io::copy(&mut upstream, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Write);
                let _ = up.join();
            });
        }
    });
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// `curl` over HTTPS to `name` at `addr` (trusting `ca`), from `source`: (exit code, body).
fn curl_https(addr: SocketAddr, name: &str, ca: &Path, source: &str, path: &str) -> (i32, String) {
    let resolve = format!("{name}:{}:{}", addr.port(), addr.ip());
    let url = format!("https://{name}:{}{path}", addr.port());
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "--interface", source, "--cacert", ca.to_str().unwrap(), "--resolve"])
        .args([&resolve, &url])
        .output()
        .expect("curl");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn curl_http(addr: SocketAddr, source: &str, path: &str) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "--interface", source])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn forwarded_for(body: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["headers"]["x-forwarded-for"].clone()
}

#[test]
fn a_tls_listener_reads_a_v2_header_before_the_client_hello() {
    let pki = Pki::new("PP CA");
    let cert = pki.server("gw", &["gw.test"], 30);
    let echo = Echo::start("e");
    let gw = Gateway::start_raw(&format!(
        "{SERVER}listen:\n  - addr: \"{{{{LISTEN}}}}\"\n    cert: {}\n    key: {}\n    proxy_protocol: true\n{}",
        p(&cert.cert),
        p(&cert.key),
        routes(&echo)
    ));
    let front = TcpListener::bind("127.0.0.1:0").unwrap();
    let front_addr = front.local_addr().unwrap();
    relay(front, gw.addr, v2(false, sa("[2001:db8::42]:50000"), sa("[2001:db8::1]:443")));
    let (code, body) = curl_https(front_addr, "gw.test", &pki.ca(), "127.0.0.1", "/tls");
    assert_eq!(code, 0, "curl through the relay: {body}\n{}", gw.logs());
    assert_eq!(forwarded_for(&body), serde_json::json!(["2001:db8::42"]));
    assert_eq!(logged_client(&gw, "/tls"), "2001:db8::42");
    // A ClientHello without the header first is refused, not handshaken.
    let (code, _) = curl_https(gw.addr, "gw.test", &pki.ca(), "127.0.0.1", "/direct");
    assert_ne!(code, 0);
    assert!(eventually(Duration::from_secs(5), || {
        metric_of(&gw, "siger_proxy_protocol_rejected_total{reason=\"invalid\"}") == 1.0
    }));
}

#[test]
fn an_h2c_listener_reads_the_header_before_the_http2_preface() {
    let echo = Echo::start("e");
    let gw = Gateway::start_raw(&format!(
        "{SERVER}listen:\n  - {{addr: \"{{{{LISTEN}}}}\", h2c: true, proxy_protocol: true}}\n{}",
        routes(&echo)
    ));
    let front = TcpListener::bind("127.0.0.1:0").unwrap();
    let front_addr = front.local_addr().unwrap();
    relay(front, gw.addr, b"PROXY TCP4 203.0.113.77 192.0.2.1 4000 80\r\n".to_vec());
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "--http2-prior-knowledge", "-w", "\n%{http_version}"])
        .arg(format!("http://{front_addr}/h2c"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = text.rsplit_once('\n').unwrap_or((&text, ""));
    assert_eq!(version, "2", "{text}\n{}", gw.logs());
    assert_eq!(forwarded_for(body), serde_json::json!(["203.0.113.77"]));
}

/// HAProxy, run in the foreground from a config the test writes; stopped on drop.
struct Haproxy(Child);

impl Haproxy {
    fn start(dir: &Path, config: &str, ready: SocketAddr) -> Haproxy {
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let check =
            Command::new("haproxy").arg("-c").arg("-f").arg(&path).output().expect("haproxy (scripts/install-deps)");
        assert!(check.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&check.stderr));
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy");
        let mut haproxy = Haproxy(child);
        let up = eventually(Duration::from_secs(10), || {
            assert!(haproxy.0.try_wait().unwrap().is_none(), "haproxy exited");
            TcpStream::connect(ready).is_ok()
        });
        assert!(up, "haproxy did not listen");
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn haproxy_in_front_with_send_proxy_and_send_proxy_v2_passes_the_client_address() {
    let pki = Pki::new("HAProxy CA");
    let cert = pki.server("gw", &["gw.test"], 30);
    let echo = Echo::start("e");
    let tls = Reserved::new();
    let gw = Gateway::start_raw(&format!(
        "{SERVER}listen:\n  - {{addr: \"{{{{LISTEN}}}}\", proxy_protocol: true}}\n  - addr: \"{}\"\n    cert: {}\n    key: {}\n    proxy_protocol: true\n{}",
        tls.addr(),
        p(&cert.cert),
        p(&cert.key),
        routes(&echo)
    ));
    let (v1_front, v2_front) = (Reserved::new(), Reserved::new());
    // HTTP mode with `send-proxy` (v1) to the plain listener; TCP mode (TLS passed through)
    // with `send-proxy-v2` to the TLS listener. HAProxy connects from 127.0.0.1; the client
    // from 127.0.0.2, which only the header can tell Siger.
    let config = format!(
        "defaults\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend v1\n  mode http\n  bind {v1}\n  default_backend siger_v1\n\
         backend siger_v1\n  mode http\n  server gw {gw} send-proxy source 127.0.0.1\n\
         frontend v2\n  mode tcp\n  bind {v2}\n  default_backend siger_v2\n\
         backend siger_v2\n  mode tcp\n  server gw {tls} send-proxy-v2 source 127.0.0.1\n",
        v1 = v1_front.addr(),
        v2 = v2_front.addr(),
        gw = gw.addr,
        tls = tls.addr(),
    );
    let _haproxy = Haproxy::start(gw.dir.path(), &config, v2_front.addr());
    let (code, body) = curl_http(v1_front.addr(), "127.0.0.2", "/haproxy-v1");
    assert_eq!(code, 0, "{body}\n{}", gw.logs());
    assert_eq!(forwarded_for(&body), serde_json::json!(["127.0.0.2"]));
    assert_eq!(logged_client(&gw, "/haproxy-v1"), "127.0.0.2");
    let (code, body) = curl_https(v2_front.addr(), "gw.test", &pki.ca(), "127.0.0.2", "/haproxy-v2");
    assert_eq!(code, 0, "{body}\n{}", gw.logs());
    assert_eq!(forwarded_for(&body), serde_json::json!(["127.0.0.2"]));
    assert_eq!(logged_client(&gw, "/haproxy-v2"), "127.0.0.2");
}
