//! The public edge (ARCHITECTURE §7.2) with real clients — curl, `openssl s_client`, h2load,
//! reqwest (rustls), an h2 gRPC client — and certificates made by the openssl CLI in each test:
//! SNI, HTTP/2 and h2c, redirects, HSTS, client certificates, certificates rotated on disk,
//! TLS and HTTP/2 to upstreams, health checks over TLS, wss, and gRPC with its trailers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::grpc::{self, GrpcEcho};
use support::pki::{replace_file, served_subject, Pki};
use support::*;

/// The server head without a listener: tests write their own `listen:` list.
const SERVER: &str = "server:\n  threads: 2\n  pid_file: {{DIR}}/siger.pid\n  upgrade_sock: {{DIR}}/upgrade.sock\n  grace_period: 0s\n  graceful_shutdown_timeout: 2s\nadmin:\n  listen: \"{{ADMIN}}\"\n";

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// `curl` with `args`; returns (exit code, stdout).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl").args(["-s", "--max-time", "20"]).args(args).output().expect("curl");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `https://<name>:<port><path>` resolved to `addr`, trusting `ca`: (exit, "<version> <status>", headers+body).
fn curl_https(addr: SocketAddr, name: &str, path: &str, ca: &Path, extra: &[&str]) -> (i32, String, String) {
    let resolve = format!("{name}:{}:127.0.0.1", addr.port());
    let url = format!("https://{name}:{}{path}", addr.port());
    let mut args =
        vec!["--cacert", ca.to_str().unwrap(), "--resolve", &resolve, "-i", "-w", "\n%{http_version} %{http_code}"];
    args.extend_from_slice(extra);
    args.push(&url);
    let (code, out) = curl(&args);
    let (body, summary) = out.rsplit_once('\n').unwrap_or((&out, ""));
    (code, summary.to_string(), body.to_string())
}

/// The JSON body of a curl `-i` output.
fn json_body(out: &str) -> serde_json::Value {
    let body = out.split("\r\n\r\n").last().unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn header_of(out: &str, name: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

fn routes(service_yaml: &str) -> String {
    format!("services:\n{service_yaml}routes:\n  - {{path: /, service: web, auth: public}}\n")
}

#[test]
fn sni_picks_certificates_and_http2_carries_100_concurrent_streams() {
    let pki = Pki::new("Edge CA");
    let a = pki.server("a", &["a.test", "www.a.test"], 365);
    let b = pki.server("b", &["b.test"], 365);
    let wild = pki.server("wild", &["*.wild.test"], 365);
    let echo = Echo::start("e1");
    let gw = Gateway::start_raw(&format!(
        "{SERVER}listen:\n  - addr: \"{{{{LISTEN}}}}\"\n    certs:\n      - {{cert: {}, key: {}}}\n      - {{cert: {}, key: {}}}\n      - {{cert: {}, key: {}}}\n    hsts: 365d\n{}",
        p(&a.cert),
        p(&a.key),
        p(&b.cert),
        p(&b.key),
        p(&wild.cert),
        p(&wild.key),
        routes(&format!("  web: {{targets: [\"{}\"]}}\n", echo.addr)),
    ));
    // openssl s_client: the certificate served for each name.
    assert_eq!(served_subject(gw.addr, Some("a.test")).as_deref(), Some("CN = a.test"));
    assert_eq!(served_subject(gw.addr, Some("www.a.test")).as_deref(), Some("CN = a.test"));
    assert_eq!(served_subject(gw.addr, Some("b.test")).as_deref(), Some("CN = b.test"));
    assert_eq!(served_subject(gw.addr, Some("api.wild.test")).as_deref(), Some("CN = *.wild.test"));
    assert_eq!(served_subject(gw.addr, Some("unknown.test")).as_deref(), Some("CN = a.test"), "default");
    assert_eq!(served_subject(gw.addr, None).as_deref(), Some("CN = a.test"), "no SNI gets the default");

    // curl --http2: h2 negotiated, the chain verifies for the name, HSTS on TLS answers.
    let (code, summary, out) = curl_https(gw.addr, "b.test", "/hello", &pki.ca(), &["--http2"]);
    assert_eq!((code, summary.as_str()), (0, "2 200"), "{out}");
    assert_eq!(header_of(&out, "strict-transport-security").as_deref(), Some("max-age=31536000"));
    let seen = json_body(&out);
    assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
    // The gateway's own answers carry HSTS too (a path it refuses: 400).
    let (_, summary, out) = curl_https(gw.addr, "a.test", "/%zz", &pki.ca(), &["--http2"]);
    assert_eq!(summary, "2 400", "{out}");
    assert_eq!(header_of(&out, "strict-transport-security").as_deref(), Some("max-age=31536000"));

    // reqwest with rustls, trusting only the test CA.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.ca()).unwrap()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .resolve("api.wild.test", gw.addr)
        .build()
        .unwrap();
    let resp = client.get(format!("https://api.wild.test:{}/r", gw.addr.port())).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);

    // h2load: 100 streams at once on one connection, all answered.
    let out = Command::new("h2load")
        .args(["-n", "100", "-c", "1", "-m", "100", &format!("https://127.0.0.1:{}/load", gw.addr.port())])
        .output()
        .expect("h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(text.contains("100 succeeded, 0 failed"), "{text}");

    // Plain HTTP sent to the TLS port is not served.
    let mut stream = std::net::TcpStream::connect(gw.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    use std::io::Write;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").unwrap();
    assert!(read_response(&mut stream).is_none_or(|r| r.status == 400));

    // The access log names the protocol; the metrics count handshakes and expiry.
    assert!(eventually(Duration::from_secs(5), || gw
        .access_lines()
        .iter()
        .any(|l| l["path"] == "/hello" && l["http_version"] == "HTTP/2" && l["tls_version"] == "TLSv1.3")));
    let metrics = scrape(&gw);
    let listener = format!("listener=\"{}\"", gw.addr);
    assert!(metric(&metrics, &format!("siger_tls_handshakes_total{{{listener},result=\"ok\"}}")).unwrap() >= 8.0);
    let left = metric(&metrics, "siger_tls_cert_expiry_seconds{name=\"b.test\"}").unwrap();
    assert!(left > 364.0 * 86_400.0 && left <= 365.0 * 86_400.0, "{left}");
    drop(echo);
}

#[test]
fn h2c_redirects_and_hsts_only_on_tls() {
    let pki = Pki::new("Edge CA");
    let a = pki.server("a", &["a.test"], 365);
    let echo = Echo::start("e1");
    let (tls_port, redirect_port) = (free_port(), free_port());
    let gw = Gateway::start_raw(&format!(
        "{SERVER}listen:\n  - {{addr: \"{{{{LISTEN}}}}\", h2c: true}}\n  - {{addr: \"127.0.0.1:{redirect_port}\", redirect_https: {tls_port}}}\n  - {{addr: \"127.0.0.1:{tls_port}\", cert: {}, key: {}, hsts: {{max_age: 365d, include_subdomains: true}}}}\n{}",
        p(&a.cert),
        p(&a.key),
        routes(&format!("  web: {{targets: [\"{}\"]}}\n", echo.addr)),
    ));
    let plain = format!("http://{}/x", gw.addr);
    let (_, out) = curl(&["--http2-prior-knowledge", "-i", "-w", "\n%{http_version} %{http_code}", &plain]);
    assert!(out.ends_with("\n2 200"), "{out}");
    assert_eq!(header_of(&out, "strict-transport-security"), None, "no HSTS on plain HTTP");
    let (_, out) = curl(&["-i", "-w", "\n%{http_version} %{http_code}", &plain]);
    assert!(out.ends_with("\n1.1 200"), "HTTP/1.1 still works on an h2c listener: {out}");

    let redirect: SocketAddr = format!("127.0.0.1:{redirect_port}").parse().unwrap();
    assert!(eventually(Duration::from_secs(5), || http_get_status(redirect, "/").is_some()));
    let r = raw_request(
        redirect,
        b"GET /a/b%20c?x=1&y=%2F HTTP/1.1\r\nHost: Shop.Example.com:8080\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some(format!("https://shop.example.com:{tls_port}/a/b%20c?x=1&y=%2F").as_str()));
    assert_eq!(r.header("strict-transport-security"), None);
    let r = request(redirect, "POST", "/submit", &[], b"{}");
    assert_eq!(r.status, 308, "a POST is redirected as a POST");
    let r = raw_request(redirect, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad_request");
    assert!(r.json()["request_id"].as_str().is_some_and(|id| !id.is_empty()));

    let tls: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let (_, summary, out) = curl_https(tls, "a.test", "/x", &pki.ca(), &[]);
    assert_eq!(summary, "2 200", "{out}");
    assert_eq!(header_of(&out, "strict-transport-security").as_deref(), Some("max-age=31536000; includeSubDomains"));
}

#[test]
fn client_certificates_are_required_and_their_subject_forwarded() {
    let pki = Pki::new("Client CA");
    let server = pki.server("srv", &["api.test"], 365);
    let alice = pki.client("alice", "/CN=alice/O=Example");
    let stranger_ca = Pki::new("Stranger CA");
    let mallory = stranger_ca.client("mallory", "/CN=mallory");
    let echo = Echo::start("e1");
    let plain_port = free_port();
    let gw = Gateway::start_raw(&format!(
        "{SERVER}listen:\n  - {{addr: \"{{{{LISTEN}}}}\", cert: {}, key: {}, client_ca: {}}}\n  - \"127.0.0.1:{plain_port}\"\n{}",
        p(&server.cert),
        p(&server.key),
        p(&pki.ca()),
        routes(&format!("  web: {{targets: [\"{}\"]}}\n", echo.addr)),
    ));
    let (code, _, _) = curl_https(gw.addr, "api.test", "/x", &pki.ca(), &[]);
    assert_ne!(code, 0, "no client certificate: refused");
    let (code, _, _) = curl_https(
        gw.addr,
        "api.test",
        "/x",
        &pki.ca(),
        &["--cert", mallory.cert.to_str().unwrap(), "--key", mallory.key.to_str().unwrap()],
    );
    assert_ne!(code, 0, "a certificate from another CA: refused");
    let (code, summary, out) = curl_https(
        gw.addr,
        "api.test",
        "/x",
        &pki.ca(),
        &[
            "--cert",
            alice.cert.to_str().unwrap(),
            "--key",
            alice.key.to_str().unwrap(),
            "-H",
            "X-Client-Cert-Subject: CN=admin",
        ],
    );
    assert_eq!((code, summary.as_str()), (0, "2 200"), "{out}");
    let seen = json_body(&out);
    // RFC 4514: the last RDN first (alice's certificate lists CN, then O).
    assert_eq!(seen["headers"]["x-client-cert-subject"], serde_json::json!(["O=Example,CN=alice"]));
    assert!(
        metric_of(&gw, &format!("siger_tls_handshakes_total{{listener=\"{}\",result=\"client_cert\"}}", gw.addr))
            >= 1.0
    );

    // On a plain listener the header can only be a forgery: removed.
    let plain: SocketAddr = format!("127.0.0.1:{plain_port}").parse().unwrap();
    let r = get_with(plain, "/x", &[("X-Client-Cert-Subject", "CN=admin")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"].get("x-client-cert-subject"), None);
}

#[test]
fn client_certificate_subjects_are_escaped_so_no_value_passes_for_another_attribute() {
    let pki = Pki::new("Client CA");
    let server = pki.server("srv", &["api.test"], 365);
    // A CN that imitates another organisation; a multi-valued RDN; a value with a leading `#`,
    // a CR LF that would split the header, non-ASCII and a trailing space.
    let mallory = pki.client("mallory", "/O=Example/CN=mallory, O=Admins");
    let admins = pki.client("admins", "/O=Example/O=Admins/CN=mallory");
    let bob = pki.client_multivalued("bob", "/O=Example/CN=bob+UID=42");
    let carol = pki.client_multivalued("carol", "/O=Example/OU=#ops\r\nX-Admin: 1 é ");
    let echo = Echo::start("e1");
    let gw = Gateway::start_raw(&format!(
        "{SERVER}listen:\n  - {{addr: \"{{{{LISTEN}}}}\", cert: {}, key: {}, client_ca: {}}}\n{}",
        p(&server.cert),
        p(&server.key),
        p(&pki.ca()),
        routes(&format!("  web: {{targets: [\"{}\"]}}\n", echo.addr)),
    ));
    let subject_of = |who: &support::pki::Issued| {
        let (code, summary, out) = curl_https(
            gw.addr,
            "api.test",
            "/x",
            &pki.ca(),
            &["--cert", who.cert.to_str().unwrap(), "--key", who.key.to_str().unwrap()],
        );
        assert_eq!((code, summary.as_str()), (0, "2 200"), "{out}");
        let seen = json_body(&out);
        assert_eq!(seen["headers"].get("x-admin"), None, "{seen}");
        let values = seen["headers"]["x-client-cert-subject"].as_array().cloned().unwrap_or_default();
        assert_eq!(values.len(), 1, "{seen}");
        values[0].as_str().unwrap().to_string()
    };

    let forged = subject_of(&mallory);
    assert_eq!(forged, r"CN=mallory\, O=Admins,O=Example");
    assert_eq!(subject_of(&admins), "CN=mallory,O=Admins,O=Example");
    assert_ne!(forged, subject_of(&admins), "a common name cannot pass for an organisation");
    // The attributes of a multi-valued RDN in their (DER) order.
    assert_eq!(subject_of(&bob), "CN=bob+UID=42,O=Example");
    assert_eq!(subject_of(&carol), r"OU=\#ops\0D\0AX-Admin: 1 \C3\A9\ ,O=Example");
    // The string OpenSSL writes for these certificates (what backends' RFC 4514 parsers read).
    for who in [&mallory, &admins, &carol] {
        assert_eq!(subject_of(who), pki.rfc4514_subject(who));
    }
}

#[test]
fn certificates_replaced_on_disk_are_served_without_a_restart_and_bad_ones_refused() {
    let pki = Pki::new("Rotation CA");
    let v1 = pki.server("v1", &["a.test"], 365);
    let v2 = pki.server("v2", &["v2.a.test", "a.test"], 365);
    let v3 = pki.server("v3", &["v3.a.test", "a.test"], 365);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("site.pem"), dir.path().join("site.key"));
    std::fs::copy(&v1.cert, &cert).unwrap();
    std::fs::copy(&v1.key, &key).unwrap();
    let echo = Echo::start("e1");
    let gw = Gateway::start_raw(&format!(
        "{SERVER}listen:\n  - {{addr: \"{{{{LISTEN}}}}\", cert: {}, key: {}}}\n{}",
        p(&cert),
        p(&key),
        routes(&format!("  web: {{targets: [\"{}\"]}}\n", echo.addr)),
    ));
    let pid = gw.pid();
    assert_eq!(served_subject(gw.addr, Some("a.test")).as_deref(), Some("CN = a.test"));

    // A renewal: certificate then key, each by rename. In between the pair does not match;
    // it is refused, and the old one keeps serving until the key arrives.
    let started = std::time::Instant::now();
    replace_file(&cert, &std::fs::read(&v2.cert).unwrap());
    replace_file(&key, &std::fs::read(&v2.key).unwrap());
    assert!(
        eventually(Duration::from_secs(5), || served_subject(gw.addr, Some("a.test")).as_deref()
            == Some("CN = v2.a.test")),
        "the new certificate within 5 s:\n{}",
        gw.logs()
    );
    eprintln!("rotation served after {:?}", started.elapsed());
    assert_eq!(gw.pid(), pid);
    assert!(metric_of(&gw, "siger_tls_cert_reloads_total{result=\"ok\"}") >= 1.0);

    // A certificate whose key never comes: refused, v2 keeps serving.
    let refused_before = metric_of(&gw, "siger_tls_cert_reloads_total{result=\"refused\"}");
    replace_file(&cert, &std::fs::read(&v3.cert).unwrap());
    assert!(eventually(Duration::from_secs(5), || metric_of(&gw, "siger_tls_cert_reloads_total{result=\"refused\"}")
        > refused_before));
    assert!(
        eventually(Duration::from_secs(2), || gw.logs().contains("does not match the certificate's public key")),
        "{}",
        gw.logs()
    );
    assert_eq!(served_subject(gw.addr, Some("a.test")).as_deref(), Some("CN = v2.a.test"));
    // Garbage is refused the same way.
    replace_file(&key, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(served_subject(gw.addr, Some("a.test")).as_deref(), Some("CN = v2.a.test"));
    let (_, summary, _) = curl_https(gw.addr, "a.test", "/x", &pki.ca(), &[]);
    assert_eq!(summary, "2 200");
    // The matching key completes the pair.
    replace_file(&key, &std::fs::read(&v3.key).unwrap());
    assert!(eventually(Duration::from_secs(5), || served_subject(gw.addr, Some("a.test")).as_deref()
        == Some("CN = v3.a.test")));
    assert_eq!(gw.pid(), pid);
}

#[test]
fn upstream_tls_verifies_presents_client_certs_and_health_checks_over_tls() {
    let pki = Pki::new("Internal CA");
    let backend_cert = pki.server("backend", &["backend.internal", "127.0.0.1"], 365);
    let gw_cert = pki.client("gateway", "/CN=siger-gateway/O=Edge");
    let other = Pki::new("Other CA");
    let b = p(&backend_cert.cert);
    let k = p(&backend_cert.key);
    let ca = p(&pki.ca());
    let tls_echo = Echo::start_with("tls1", "127.0.0.1:0", &["--tls-cert", &b, "--tls-key", &k, "--client-ca", &ca]);
    let h2_echo = Echo::start_with("h2", "127.0.0.1:0", &["--tls-cert", &b, "--tls-key", &k, "--h2"]);
    let health = "health_check: {path: /health, interval: 200ms, timeout: 150ms}";
    let services = format!(
        "  web: {{targets: [\"{t}\"], tls: {{sni: backend.internal, ca: {ca}}}, {health}}}\n  by-ip: {{targets: [\"{t}\"], tls: {{ca: {ca}}}}}\n  mtls: {{targets: [\"{t}\"], tls: {{sni: backend.internal, ca: {ca}, client_cert: {}, client_key: {}}}}}\n  wrong-ca: {{targets: [\"{t}\"], tls: {{sni: backend.internal, ca: {}}}, {health}}}\n  h2: {{targets: [\"{}\"], http2: true, tls: {{sni: backend.internal, ca: {ca}}}}}\n",
        p(&gw_cert.cert),
        p(&gw_cert.key),
        p(&other.ca()),
        h2_echo.addr,
        t = tls_echo.addr,
    );
    let gw = Gateway::start(&format!(
        "services:\n{services}routes:\n  - {{path: /web/, service: web, auth: public}}\n  - {{path: /by-ip/, service: by-ip, auth: public}}\n  - {{path: /mtls/, service: mtls, auth: public}}\n  - {{path: /wrong/, service: wrong-ca, auth: public}}\n  - {{path: /h2/, service: h2, auth: public}}\n  - {{path: /ws, service: web, auth: public}}\n"
    ));
    assert!(eventually(Duration::from_secs(5), || get(gw.addr, "/web/x").status == 200), "{}", gw.logs());
    let r = get(gw.addr, "/web/x");
    assert_eq!(r.json()["tls"], true);
    assert_eq!(r.json()["tls_client"], serde_json::Value::Null, "no client certificate configured");
    assert_eq!(get(gw.addr, "/by-ip/x").status, 200, "the backend's IP is the server name when no sni is set");
    let r = get(gw.addr, "/mtls/x");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["tls_client"], "CN=siger-gateway, O=Edge");
    let r = get(gw.addr, "/h2/x");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], "HTTP/2.0");

    // Health: checked over TLS, so the right CA is healthy and the wrong one is not.
    assert!(eventually(Duration::from_secs(5), || {
        let m = scrape(&gw);
        metric(&m, "siger_backends{service=\"web\",state=\"healthy\"}") == Some(1.0)
            && metric(&m, "siger_backends{service=\"wrong-ca\",state=\"unhealthy\"}") == Some(1.0)
    }));
    let r = get(gw.addr, "/wrong/x");
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    // Without a health check the request itself fails verification: 502 JSON.
    let gw2 = Gateway::start(&format!(
        "services:\n  wrong-ca: {{targets: [\"{}\"], retries: 0, tls: {{sni: backend.internal, ca: {}}}}}\nroutes:\n  - {{path: /, service: wrong-ca, auth: public}}\n",
        tls_echo.addr,
        p(&other.ca())
    ));
    let r = get(gw2.addr, "/x");
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"], "bad_gateway");
    assert!(r.json()["request_id"].as_str().is_some());
    assert!(metric_of(&gw2, "siger_upstream_errors_total{kind=\"tls\",service=\"wrong-ca\"}") >= 1.0);

    // WebSocket to a TLS upstream.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use futures_util::{SinkExt, StreamExt};
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr)).await.unwrap();
        ws.send(tokio_tungstenite::tungstenite::Message::text("over tls")).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), "over tls");
    });
}

#[test]
fn wss_through_a_tls_listener() {
    let pki = Pki::new("Edge CA");
    let a = pki.server("a", &["a.test"], 365);
    let echo = Echo::start("e1");
    let gw = Gateway::start_raw(&format!(
        "{SERVER}listen:\n  - {{addr: \"{{{{LISTEN}}}}\", cert: {}, key: {}}}\n{}",
        p(&a.cert),
        p(&a.key),
        routes(&format!("  web: {{targets: [\"{}\"]}}\n", echo.addr)),
    ));
    let ca = pki.ca();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use futures_util::{SinkExt, StreamExt};
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_file_iter(&ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let config =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(rustls::pki_types::ServerName::try_from("a.test").unwrap(), tcp)
            .await
            .unwrap();
        let (mut ws, _) =
            tokio_tungstenite::client_async(format!("wss://a.test:{}/ws", gw.addr.port()), tls).await.unwrap();
        ws.send(tokio_tungstenite::tungstenite::Message::text("hello wss")).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), "hello wss");
    });
}

#[test]
fn grpc_calls_pass_through_with_their_trailers() {
    let pki = Pki::new("gRPC CA");
    let edge = pki.server("edge", &["api.test"], 365);
    let backend = pki.server("grpc", &["grpc.internal"], 365);
    let tls_backend = GrpcEcho::start_tls(&backend.cert, &backend.key);
    let plain_backend = GrpcEcho::start_plain();
    let h2c_port = free_port();
    let gw = Gateway::start_raw(&format!(
        "{SERVER}listen:\n  - {{addr: \"{{{{LISTEN}}}}\", cert: {}, key: {}}}\n  - {{addr: \"127.0.0.1:{h2c_port}\", h2c: true}}\nservices:\n  grpc-tls: {{targets: [\"{}\"], http2: true, tls: {{sni: grpc.internal, ca: {}}}}}\n  grpc-h2c: {{targets: [\"{}\"], http2: true}}\nroutes:\n  - {{path: /echo.Echo/, service: grpc-tls, auth: public, host: api.test}}\n  - {{path: /echo.Echo/, service: grpc-h2c, auth: public}}\n",
        p(&edge.cert),
        p(&edge.key),
        tls_backend.addr,
        p(&pki.ca()),
        plain_backend.addr,
    ));
    let authority = format!("api.test:{}", gw.addr.port());
    // TLS (ALPN h2) downstream → TLS h2 upstream.
    let unary = grpc::call(gw.addr, &authority, Some(&pki.ca()), "/echo.Echo/Unary", b"hello");
    assert_eq!(unary.status, 200);
    assert_eq!(unary.messages, vec![bytes::Bytes::from_static(b"hello")]);
    assert_eq!(unary.grpc_status().as_deref(), Some("0"));
    let trailers = unary.trailers.as_ref().expect("trailers");
    assert_eq!(trailers.get("x-echo-trailer").unwrap(), "done");
    assert_eq!(unary.headers.get("x-saw-te").unwrap(), "trailers", "te: trailers reaches the backend");
    let stream = grpc::call(gw.addr, &authority, Some(&pki.ca()), "/echo.Echo/Stream", b"tick");
    assert_eq!(stream.messages.len(), 3);
    assert_eq!(stream.grpc_status().as_deref(), Some("0"));
    let unknown = grpc::call(gw.addr, &authority, Some(&pki.ca()), "/echo.Echo/Nope", b"x");
    assert_eq!(unknown.grpc_status().as_deref(), Some("12"), "trailers-only answers pass too");

    // h2c downstream → h2c upstream.
    let h2c: SocketAddr = format!("127.0.0.1:{h2c_port}").parse().unwrap();
    assert!(eventually(Duration::from_secs(5), || http_get_status(h2c, "/").is_some()));
    let unary = grpc::call(h2c, &h2c.to_string(), None, "/echo.Echo/Unary", b"plain");
    assert_eq!(unary.messages, vec![bytes::Bytes::from_static(b"plain")]);
    assert_eq!(unary.grpc_status().as_deref(), Some("0"));

    // gRPC over HTTP/1.1 cannot carry its trailers: refused up front.
    let r = request(h2c, "POST", "/echo.Echo/Unary", &[("Content-Type", "application/grpc")], &grpc::frame(b"x"));
    assert_eq!(r.status, 505);
    assert_eq!(r.json()["error"], "http_version_not_supported");
}

/// `openssl s_client` with a forced protocol version: whether the handshake completed.
fn handshake_with(addr: SocketAddr, version_flag: &str) -> bool {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "a.test", version_flag])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("BEGIN CERTIFICATE")
}

#[test]
fn min_tls_and_listener_settings_follow_reloads() {
    let pki = Pki::new("Edge CA");
    let a = pki.server("a", &["a.test"], 365);
    let b = pki.server("b", &["a.test", "b.test"], 365);
    let alice = pki.client("alice", "/CN=alice");
    let echo = Echo::start("e1");
    let template = |cert: &support::pki::Issued, extra: &str| {
        format!(
            "{SERVER}listen:\n  - {{addr: \"{{{{LISTEN}}}}\", cert: {}, key: {}{extra}}}\n{}",
            p(&cert.cert),
            p(&cert.key),
            routes(&format!("  web: {{targets: [\"{}\"]}}\n", echo.addr)),
        )
    };
    let gw = Gateway::start_raw(&template(&a, ", min_tls: \"1.3\""));
    assert!(handshake_with(gw.addr, "-tls1_3"));
    assert!(!handshake_with(gw.addr, "-tls1_2"), "TLS 1.2 refused by a 1.3-only listener");
    assert!(
        metric_of(&gw, &format!("siger_tls_handshakes_total{{listener=\"{}\",result=\"tls_version\"}}", gw.addr))
            >= 1.0
    );

    // A reload brings another certificate, TLS 1.2 back, HSTS and client certificates.
    gw.rewrite(&template(&b, &format!(", hsts: 1h, client_ca: {}", p(&pki.ca()))));
    assert_eq!(gw.reload().status, 200, "{}", gw.logs());
    assert_eq!(served_subject(gw.addr, Some("a.test")).as_deref(), Some("CN = a.test"));
    let (code, _, _) = curl_https(gw.addr, "b.test", "/x", &pki.ca(), &[]);
    assert_ne!(code, 0, "a client certificate is now required");
    let (code, summary, out) = curl_https(
        gw.addr,
        "b.test",
        "/x",
        &pki.ca(),
        &[
            "--tlsv1.2",
            "--tls-max",
            "1.2",
            "--cert",
            alice.cert.to_str().unwrap(),
            "--key",
            alice.key.to_str().unwrap(),
        ],
    );
    assert_eq!((code, summary.as_str()), (0, "2 200"), "{out}");
    assert_eq!(header_of(&out, "strict-transport-security").as_deref(), Some("max-age=3600"));
    assert_eq!(json_body(&out)["headers"]["x-client-cert-subject"][0], "CN=alice");

    // Turning HTTP/2 off changes Pingora's listener: refused, the running settings stay.
    gw.rewrite(&template(&b, ", http2: false"));
    let r = gw.reload();
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("siger upgrade"));
}

#[test]
fn check_warns_about_certificates_close_to_expiry() {
    let pki = Pki::new("Edge CA");
    let soon = pki.server("soon", &["soon.test"], 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("siger.yaml");
    std::fs::write(
        &path,
        format!(
            "listen:\n  - {{addr: 127.0.0.1:8443, cert: {}, key: {}}}\nservices:\n  s: {{targets: [\"127.0.0.1:9000\"]}}\nroutes:\n  - {{path: /, service: s, auth: public}}\n",
            p(&soon.cert),
            p(&soon.key)
        ),
    )
    .unwrap();
    let out = Command::new(SIGER).arg("-t").arg("-c").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("warning: listen[0].cert (line 2)") && stderr.contains(" days)"), "{stderr}");
}
