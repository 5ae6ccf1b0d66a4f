//! Request inspection (`waf`, docs/waf.md) through the real binary: Debian's CRS 3.3.4 at
//! paranoia level 1 in front of a real siger-echo, over HTTP/1.1 and prior-knowledge HTTP/2.
//! Attacks in the query, a JSON body, a form body, a cookie and a header are refused with 403
//! `request_blocked` (request id, never the rule); `detect` forwards and logs; `waf_exclude`
//! lets a false positive through; bodies past `waf.max_body` follow `on_large_body`; the rules
//! reload with the config and a rule file that does not compile is named with its line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Duration;

/// One listener speaking HTTP/1 and prior-knowledge HTTP/2; routes in every mode.
fn config(echo: SocketAddr, waf: &str) -> String {
    format!(
        "server:\n  threads: 2\n  pid_file: {{{{DIR}}}}/siger.pid\n  upgrade_sock: {{{{DIR}}}}/upgrade.sock\n  grace_period: 0s\n\
         listen:\n  - {{addr: \"{{{{LISTEN}}}}\", h2c: true}}\nadmin:\n  listen: \"{{{{ADMIN}}}}\"\n\
         {waf}\
         services:\n  s: {{targets: [\"{echo}\"], read_timeout: 10s}}\n\
         routes:\n\
         \x20 - {{path: /block, service: s, auth: public, strip_prefix: true, waf: block}}\n\
         \x20 - {{path: /detect, service: s, auth: public, strip_prefix: true, waf: detect}}\n\
         \x20 - {{path: /excluded, service: s, auth: public, strip_prefix: true, waf: block, waf_exclude: [942100]}}\n\
         \x20 - {{path: /plain, service: s, auth: public, strip_prefix: true}}\n"
    )
}

const WAF: &str = "waf:\n  max_body: 4KiB\n";

/// Loading the CRS takes seconds in a debug build (tens on a busy machine): wait for it
/// longer than a plain start.
fn start(echo: &Echo, waf: &str) -> Gateway {
    Gateway::start_raw_within(&config(echo.addr, waf), Duration::from_secs(180))
}

/// The access-log line of the request with this id (written after the answer: poll).
fn access_line(gw: &Gateway, request_id: &str) -> serde_json::Value {
    let mut found = None;
    let ok = eventually(Duration::from_secs(10), || {
        found = gw.access_lines().into_iter().find(|l| l["request_id"] == request_id);
        found.is_some()
    });
    assert!(ok, "no access line for {request_id}:\n{}", gw.logs());
    found.unwrap()
}

/// A refusal by inspection: 403 `request_blocked` with the request id, naming no rule, and
/// the backend never asked.
fn assert_blocked(gw: &Gateway, what: &str, r: &RawResponse) {
    assert_eq!(r.status, 403, "{what}: {}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    assert_eq!(body["error"], "request_blocked", "{what}");
    let id = r.header("x-request-id").expect("a request id header");
    assert_eq!(body["request_id"], id, "{what}");
    // Nothing but the code, a fixed message and the id: no rule, score or matched data.
    let keys: Vec<&String> = body.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["error", "message", "request_id"], "{what}");
    assert_eq!(body["message"], "the request was refused by request inspection", "{what}");
    let line = access_line(gw, id);
    assert_eq!(line["status"], 403, "{what}");
    assert_eq!(line["error"], "request_blocked", "{what}");
    assert_eq!(line["backend"], "-", "{what}: the backend was asked");
    assert!(line["waf_score"].as_u64().unwrap_or(0) >= 5, "{what}: {line}");
    assert!(!line["waf_rules"].as_array().expect("waf_rules").is_empty(), "{what}: {line}");
}

/// One gateway for the checks that do not change its config: each start compiles the CRS,
/// seconds of CPU in a debug build.
#[test]
fn inspection_on_block_detect_and_excluding_routes() {
    let echo = Echo::start("b1");
    let gw = start(&echo, WAF);
    attacks_in_query_body_cookie_and_header_are_refused_without_naming_the_rule(&gw);
    detect_forwards_and_logs_what_matched(&gw);
    ordinary_json_api_traffic_passes_a_block_route_and_an_exclusion_lets_a_false_positive_through(&gw);
    an_http2_body_without_content_length_is_inspected(&gw);
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
const JSON: (&str, &str) = ("Content-Type", "application/json");
const BROWSER: (&str, &str) = ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0");

fn attacks_in_query_body_cookie_and_header_are_refused_without_naming_the_rule(gw: &Gateway) {
    let a = gw.addr;
    let sqli_query = "/block/items?id=1%27%20UNION%20SELECT%20password%20FROM%20users--";
    let xss_query = "/block/search?q=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E";
    let cases: Vec<(&str, RawResponse)> = vec![
        ("SQL injection in the query", get_with(a, sqli_query, &[BROWSER])),
        ("XSS in the query", get_with(a, xss_query, &[BROWSER])),
        (
            "SQL injection in a JSON body",
            request(
                a,
                "POST",
                "/block/items",
                &[BROWSER, JSON],
                br#"{"name":"x","id":"1' UNION SELECT password FROM users--"}"#,
            ),
        ),
        (
            "XSS in a JSON body",
            request(
                a,
                "PUT",
                "/block/items/7",
                &[BROWSER, JSON],
                br#"{"bio":"<script>alert(document.cookie)</script>"}"#,
            ),
        ),
        (
            "SQL injection in a form body",
            request(a, "POST", "/block/login", &[BROWSER, FORM], b"user=admin%27%20OR%20%271%27%3D%271&password=x"),
        ),
        ("XSS in a cookie", get_with(a, "/block/me", &[BROWSER, ("Cookie", "theme=<script>alert(1)</script>")])),
        (
            "XSS in the Referer header",
            get_with(a, "/block/me", &[BROWSER, ("Referer", "http://example.com/?q=<script>alert(1)</script>")]),
        ),
        (
            "a scanner's User-Agent",
            get_with(a, "/block/me", &[("User-Agent", "sqlmap/1.7.2#stable (https://sqlmap.org)")]),
        ),
    ];
    for (what, r) in &cases {
        assert_blocked(gw, what, r);
    }
    // The same requests on a route without inspection reach the backend.
    let plain = get_with(a, &sqli_query.replacen("/block", "/plain", 1), &[BROWSER]);
    assert_eq!(plain.status, 200);
    let line = access_line(gw, plain.header("x-request-id").unwrap());
    assert!(line.get("waf_score").is_none() && line.get("waf_rules").is_none(), "{line}");
    // Counted by route and action.
    let n = metric_of(gw, "siger_waf_matches_total{action=\"block\",route=\"/block\"}");
    assert_eq!(n, cases.len() as f64, "{}", scrape(gw));
}

fn detect_forwards_and_logs_what_matched(gw: &Gateway) {
    let r = get_with(gw.addr, "/detect/items?id=1%27%20UNION%20SELECT%20password%20FROM%20users--", &[BROWSER]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let line = access_line(gw, r.header("x-request-id").unwrap());
    assert!(line["waf_score"].as_u64().unwrap_or(0) >= 5, "{line}");
    assert!(
        line["waf_rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_u64().is_some_and(|id| (942000..943000).contains(&id))),
        "{line}"
    );
    assert_ne!(line["backend"], "-");
    assert!(gw.logs().contains("matched, forwarded"), "{}", gw.logs());
    assert_eq!(metric_of(gw, "siger_waf_matches_total{action=\"detect\",route=\"/detect\"}"), 1.0);
    // A clean request is logged below the threshold and counted nowhere: only 920350 (the
    // test's numeric Host, 127.0.0.1:port) matches.
    let r = get_with(gw.addr, "/detect/items?page=2", &[BROWSER]);
    let line = access_line(gw, r.header("x-request-id").unwrap());
    assert_eq!(
        (line["waf_score"].as_u64(), line["waf_rules"].clone()),
        (Some(3), serde_json::json!([920350])),
        "{line}"
    );
    assert_eq!(metric_of(gw, "siger_waf_matches_total{action=\"detect\",route=\"/detect\"}"), 1.0);
}

fn ordinary_json_api_traffic_passes_a_block_route_and_an_exclusion_lets_a_false_positive_through(gw: &Gateway) {
    let a = gw.addr;
    let order = br#"{"id":42,"name":"Ada Lovelace","email":"ada@example.com","created_at":"2026-12-07T00:50:00Z","tags":["a","b"],"address":{"city":"London","zip":"NW1 6XE"},"note":"Leave it at the door, please.","amount":12.5,"paid":true}"#;
    let cases: Vec<(&str, RawResponse)> = vec![
        ("GET with a query", get_with(a, "/block/orders?page=2&per_page=50&sort=-created_at&q=blue+shoes", &[BROWSER])),
        ("GET by id", get_with(a, "/block/orders/42", &[("User-Agent", "curl/8.5.0"), ("Accept", "application/json")])),
        ("POST JSON", request(a, "POST", "/block/orders", &[BROWSER, JSON], order)),
        ("PUT JSON", request(a, "PUT", "/block/orders/42", &[BROWSER, JSON], order)),
        ("PATCH JSON", request(a, "PATCH", "/block/orders/42", &[BROWSER, JSON], br#"{"paid":false}"#)),
        ("DELETE", request(a, "DELETE", "/block/orders/42", &[BROWSER], b"")),
        ("POST form", request(a, "POST", "/block/login", &[BROWSER, FORM], b"user=ada&password=s3cret%21&remember=1")),
        (
            "a bearer token and cookies",
            get_with(
                a,
                "/block/me",
                &[
                    BROWSER,
                    ("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJl"),
                    ("Cookie", "session=6f1c2a9e; theme=dark"),
                ],
            ),
        ),
    ];
    for (what, r) in &cases {
        assert_eq!(r.status, 200, "{what}: {}", String::from_utf8_lossy(&r.body));
        let line = access_line(gw, r.header("x-request-id").unwrap());
        assert!(line["waf_score"].as_u64().unwrap_or(99) < 5, "{what}: {line}");
    }
    // English prose this engine reads as SQL (942100, libinjection): refused on the block
    // route, passed where the route excludes the rule.
    let prose = br#"{"text":"Please select the best option, or order by date"}"#;
    let r = request(a, "POST", "/block/notes", &[BROWSER, JSON], prose);
    assert_blocked(gw, "the false positive", &r);
    let r = request(a, "POST", "/excluded/upload", &[BROWSER, JSON], prose);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["bytes"].as_u64(), Some(prose.len() as u64));
    // The exclusion removes one rule: other attacks on that route are still refused.
    let r = get_with(a, "/excluded/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", &[BROWSER]);
    assert_blocked(gw, "XSS on the route with an exclusion", &r);
}

/// A chunked HTTP/1.1 body (no Content-Length).
fn chunked(addr: SocketAddr, path: &str, body: &[u8]) -> RawResponse {
    let mut bytes = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        BROWSER.1
    )
    .into_bytes();
    for part in body.chunks(1000) {
        bytes.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        bytes.extend_from_slice(part);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    raw_request(addr, &bytes)
}

/// Clean JSON of about `size` bytes.
fn clean_json(size: usize) -> Vec<u8> {
    let mut s = String::from("{\"items\":[");
    let mut i = 0;
    while s.len() + 40 < size {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{{\"sku\":\"SKU-{i:05}\",\"qty\":{}}}", i % 7 + 1));
        i += 1;
    }
    s.push_str("]}");
    s.into_bytes()
}

#[test]
fn bodies_past_max_body_follow_on_large_body_and_rules_reload_with_the_config() {
    let echo = Echo::start("b1");
    let gw = start(&echo, WAF);
    let a = gw.addr;
    let small = clean_json(3000);
    let large = clean_json(6000);
    // Within max_body, with and without Content-Length: inspected and delivered whole.
    let r = request(a, "POST", "/block/upload", &[BROWSER, JSON], &small);
    assert_eq!((r.status, r.json()["bytes"].as_u64()), (200, Some(small.len() as u64)));
    let r = chunked(a, "/block/upload", &small);
    assert_eq!((r.status, r.json()["bytes"].as_u64()), (200, Some(small.len() as u64)));
    // An attack at the end of a chunked body within max_body is seen.
    let mut attack = small[..small.len() - 2].to_vec();
    attack.extend_from_slice(br#"],"q":"1' UNION SELECT password FROM users--"}"#);
    assert_blocked(&gw, "an attack at the end of a chunked body", &chunked(a, "/block/upload", &attack));
    // Past it: refused (on_large_body: block), by Content-Length or as it streams.
    assert_blocked_large(&gw, "a large body", &request(a, "POST", "/block/upload", &[BROWSER, JSON], &large));
    assert_blocked_large(&gw, "a large chunked body", &chunked(a, "/block/upload", &large));

    // A reload to `on_large_body: pass` applies: the large body passes whole, uninspected.
    gw.rewrite(&config(echo.addr, "waf:\n  max_body: 4KiB\n  on_large_body: pass\n"));
    let r = reload(&gw);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    for r in [request(a, "POST", "/block/upload", &[BROWSER, JSON], &large), chunked(a, "/block/upload", &large)] {
        assert_eq!((r.status, r.json()["bytes"].as_u64()), (200, Some(large.len() as u64)));
    }

    // A rule file that does not compile: the reload is refused naming the file and line, and
    // the running rules keep serving.
    let bad = gw.dir.path().join("local.conf");
    std::fs::write(&bad, "# local rules\n\nSecRule ARGS \"@rx evil\" \"id:1000001,phase:2,deny,bogus_action\"\n")
        .unwrap();
    let with_local = "waf:\n  max_body: 4KiB\n  rules:\n    - /etc/modsecurity/crs/crs-setup.conf\n    - local.conf\n    - /usr/share/modsecurity-crs/rules/REQUEST-*.conf\n";
    gw.rewrite(&config(echo.addr, with_local));
    let r = reload(&gw);
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(text.contains("local.conf:3") && text.contains("waf.rules"), "{text}");
    let r = get_with(a, "/block/items?id=1%27%20UNION%20SELECT%20password%20FROM%20users--", &[BROWSER]);
    assert_blocked(&gw, "after a refused reload", &r);
    let check = std::process::Command::new(SIGER).arg("-t").arg("-c").arg(&gw.config_path).output().unwrap();
    let said = String::from_utf8_lossy(&check.stderr).to_string() + &String::from_utf8_lossy(&check.stdout);
    // Both places: the entry of `waf.rules` that loads the file (its line in the config), and
    // the rule file's line.
    let written = std::fs::read_to_string(&gw.config_path).unwrap();
    let entry_line = written.lines().position(|l| l.trim() == "- local.conf").expect("the entry") + 1;
    let key = format!("waf.rules[1] (line {entry_line})");
    assert!(!check.status.success() && said.contains(&key) && said.contains("local.conf:3"), "{key}: {said}");

    // Fixed, the local rule loads with the CRS and is enforced after the reload.
    std::fs::write(&bad, "# local rules\n\nSecRule ARGS \"@streq forbidden-value\" \"id:1000001,phase:2,deny,status:403,log,msg:'local'\"\n").unwrap();
    assert_eq!(reload(&gw).status, 200, "{}", gw.logs());
    let r = get_with(a, "/block/items?x=forbidden-value", &[BROWSER]);
    assert_blocked_any_score(&gw, "the local rule", &r);
}

/// `POST /config/reload`, waiting as long as compiling the CRS may take on a busy machine.
fn reload(gw: &Gateway) -> RawResponse {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(gw.admin).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
    let req = format!("POST /config/reload HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n", gw.admin);
    stream.write_all(req.as_bytes()).unwrap();
    read_response(&mut stream).expect("an answer to the reload")
}

/// Refused for its size: 403 `request_blocked`, nothing matched necessarily.
fn assert_blocked_large(gw: &Gateway, what: &str, r: &RawResponse) {
    assert_eq!(r.status, 403, "{what}: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"], "request_blocked", "{what}");
    let _ = access_line(gw, r.header("x-request-id").expect("a request id"));
}

fn assert_blocked_any_score(gw: &Gateway, what: &str, r: &RawResponse) {
    assert_eq!(r.status, 403, "{what}: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"], "request_blocked", "{what}");
    let line = access_line(gw, r.header("x-request-id").expect("a request id"));
    assert!(line["waf_rules"].as_array().unwrap().iter().any(|r| r == 1000001), "{what}: {line}");
}

/// An HTTP/2 request over a prior-knowledge connection, its body in DATA frames of `frame`
/// bytes without `content-length`: (status, body).
async fn h2_post(addr: SocketAddr, path: &str, body: &[u8], frame: usize) -> (u16, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("user-agent", BROWSER.1)
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    let parts: Vec<&[u8]> = body.chunks(frame).collect();
    let last = parts.len() - 1;
    for (i, part) in parts.into_iter().enumerate() {
        send.send_data(Bytes::copy_from_slice(part), i == last).unwrap();
    }
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let mut recv = response.into_body();
    let mut answer = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.unwrap();
        let _ = recv.flow_control().release_capacity(chunk.len());
        answer.extend_from_slice(&chunk);
    }
    (status, answer)
}

fn an_http2_body_without_content_length_is_inspected(gw: &Gateway) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let attack = br#"{"name":"x","id":"1' UNION SELECT password FROM users--"}"#;
    let (status, body) = rt.block_on(h2_post(gw.addr, "/block/upload", attack, 16));
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"], "request_blocked");
    assert!(json["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    // A clean body arrives whole, over several frames.
    let clean = clean_json(3000);
    let (status, body) = rt.block_on(h2_post(gw.addr, "/block/upload", &clean, 1000));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, json["bytes"].as_u64()), (200, Some(clean.len() as u64)));
    // Past max_body without a length: refused (on_large_body: block).
    let (status, _) = rt.block_on(h2_post(gw.addr, "/block/upload", &clean_json(6000), 1000));
    assert_eq!(status, 403);
}
