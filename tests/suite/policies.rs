//! Edge policies (ARCHITECTURE §7.4) against real siger and siger-echo: header rules with every
//! template variable, on proxied and gateway answers; CORS preflights before authentication and
//! CORS headers on errors; compression decoded by curl; the response cache (hits, what is never
//! stored, per-user entries, one upstream request for a burst of misses, stale while
//! revalidating, the memory bound, purge, HEAD from GET, variants by encoding, the key's host and
//! scheme, callers that cannot be told apart, answers to requests with credentials, HTTP/2
//! clients that never read or whose entry went stale).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::jwt::{claims, hs256, hs_auth};
use crate::support::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn bearer(sub: &str, extra: serde_json::Value) -> String {
    let mut c = claims(sub, &["user"]);
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    format!("Bearer {}", hs256(&c))
}

#[test]
fn header_rules_shape_requests_and_every_answer() {
    let echo = Echo::start("e1");
    let gw = Gateway::start(&format!(
        "{}services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - path: /api\n    service: s\n    strip_prefix: true\n    rate_limit: {{requests: 3, per: 1m, key: consumer}}\n    request_headers:\n      set: {{X-Tenant: \"$claim_tenant\", X-Trace: \"$request_id|$client_ip|$route\"}}\n      add: {{Via: siger}}\n      remove: [Cookie]\n    response_headers:\n      set: {{X-Response-Time: \"$duration_ms\", X-Who: \"$claim_sub\"}}\n      remove: [X-Powered-By]\n",
        hs_auth(""),
        echo.addr
    ));
    let token = bearer("alice", serde_json::json!({"tenant": "acme"}));
    let r = get_with(
        gw.addr,
        "/api/x?respond_header=X-Powered-By:php",
        &[("Authorization", &token), ("Cookie", "session=1"), ("Via", "1.1 cdn")],
    );
    assert_eq!(r.status, 200);
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-tenant"][0], "acme");
    let request_id = r.header("x-request-id").unwrap();
    assert_eq!(seen["x-trace"][0], format!("{request_id}|127.0.0.1|/api"));
    assert_eq!(seen["via"], serde_json::json!(["1.1 cdn", "siger"]));
    assert!(seen.get("cookie").is_none());
    assert_eq!(r.header("x-who"), Some("alice"));
    assert!(r.header("x-response-time").unwrap().parse::<f64>().unwrap() > 0.0);
    assert_eq!(r.header("x-powered-by"), None);
    // The gateway's own answers carry the response rules too: 401 and 429.
    let r = get(gw.addr, "/api/x");
    assert_eq!(r.status, 401);
    assert!(r.header("x-response-time").is_some());
    let r = get_with(gw.addr, "/api/status/404", &[("Authorization", &token)]);
    assert_eq!(r.status, 404, "the backend's 404");
    assert_eq!(r.header("x-who"), Some("alice"));
    get_with(gw.addr, "/api/x", &[("Authorization", &token)]);
    let r = get_with(gw.addr, "/api/x", &[("Authorization", &token)]);
    assert_eq!(r.status, 429);
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("application/json")));
    assert_eq!(r.header("x-who"), Some("alice"));
}

#[test]
fn cors_preflights_are_answered_first_and_errors_carry_cors() {
    let echo = Echo::start("e1");
    let gw = Gateway::start(&format!(
        "{}services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - path: /api\n    service: s\n    methods: [GET, POST]\n    cors: {{origins: [\"https://app.example.com\"], methods: [GET, POST], headers: [Authorization, Content-Type], expose: [X-Request-Id], credentials: true, max_age: 10m}}\n  - {{path: /open, service: s, auth: public}}\n",
        hs_auth(""),
        echo.addr
    ));
    let before = echo.served();
    let preflight = |origin: &str| {
        request(
            gw.addr,
            "OPTIONS",
            "/api/items",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "authorization"),
            ],
            b"",
        )
    };
    let r = preflight("https://app.example.com");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(r.header("access-control-allow-headers"), Some("Authorization, Content-Type"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert_eq!(r.header("vary"), Some("Origin"));
    assert_eq!(r.header("content-length"), None, "204 has no body");
    let r = preflight("https://evil.example.com");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(echo.served(), before, "preflights never reach the backend");
    // A 401 for a listed origin still lets the browser read it.
    let r = get_with(gw.addr, "/api/items", &[("Origin", "https://app.example.com")]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(r.header("access-control-expose-headers"), Some("X-Request-Id"));
    let token = bearer("alice", serde_json::json!({}));
    let r = get_with(gw.addr, "/api/items", &[("Origin", "https://app.example.com"), ("Authorization", &token)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(r.header("vary"), Some("Origin"));
    // OPTIONS without the preflight headers, on a route without CORS, is proxied.
    let r = request(gw.addr, "OPTIONS", "/open/x", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "OPTIONS");
}

/// curl with `--compressed` decoding (`accept` as the offered encodings): (Content-Encoding, body).
fn curl_decoded(url: &str, accept: &str) -> (Option<String>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let out = Command::new("curl")
        .args(["-s", "--compressed", "-H", &format!("Accept-Encoding: {accept}"), "-D"])
        .arg(&headers)
        .arg(url)
        .output()
        .unwrap();
    let head = std::fs::read_to_string(&headers).unwrap();
    let encoding = head.lines().find_map(|l| {
        l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-encoding")).map(|(_, v)| v.trim().to_string())
    });
    (encoding, out.stdout)
}

#[test]
fn compression_is_negotiated_and_decodes_to_the_original() {
    let echo = Echo::start("e1");
    let gw = Gateway::start(&format!(
        "services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /z, service: s, auth: public, strip_prefix: true, compress: true}}\n  - {{path: /g, service: s, auth: public, strip_prefix: true, compress: {{algorithms: [gzip], min_size: 100, level: 6}}}}\n",
        echo.addr
    ));
    let original: Vec<u8> = (0..10_240u64).map(echo_pattern).collect();
    let url = |p: &str| format!("http://{}{p}", gw.addr);
    for (accept, expected) in
        [("gzip", "gzip"), ("br", "br"), ("zstd", "zstd"), ("gzip, br, zstd", "zstd"), ("gzip;q=0, br", "br")]
    {
        let (encoding, body) = curl_decoded(&url("/z/bytes/10240?respond_header=Content-Type:text/plain"), accept);
        assert_eq!(encoding.as_deref(), Some(expected), "Accept-Encoding: {accept}");
        assert!(body == original, "{accept}: decoded body differs");
    }
    // q=0 for everything offered: sent as it is.
    let r = get_with(
        gw.addr,
        "/z/bytes/10240?respond_header=Content-Type:text/plain",
        &[("Accept-Encoding", "gzip;q=0, br;q=0, zstd;q=0")],
    );
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, original);
    // Small bodies and images are left alone; so is what the upstream encoded itself.
    let r = get_with(gw.addr, "/z/small", &[("Accept-Encoding", "gzip")]);
    assert!(r.header("content-length").is_some_and(|l| l.parse::<u64>().unwrap() < 1024));
    assert_eq!(r.header("content-encoding"), None, "under min_size (1 KiB)");
    let r = get_with(gw.addr, "/z/bytes/10240?respond_header=Content-Type:image/png", &[("Accept-Encoding", "gzip")]);
    assert_eq!(r.header("content-encoding"), None, "images are not compressible");
    let r =
        get_with(gw.addr, "/z/bytes/10240?respond_header=Content-Encoding:gzip", &[("Accept-Encoding", "gzip, br")]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.body, original, "passed through untouched");
    let (encoding, body) =
        curl_decoded(&url("/g/bytes/10240?respond_header=Content-Type:text/plain"), "br, zstd, gzip");
    assert_eq!(encoding.as_deref(), Some("gzip"), "only gzip on /g");
    assert!(body == original);
}

#[test]
fn the_cache_serves_hits_and_never_stores_what_it_must_not() {
    let echo = Echo::start("e1");
    let gw = Gateway::start(&format!(
        "{}services:\n  s: {{targets: [\"{}\"], read_timeout: 10s}}\nroutes:\n  - {{path: /c, service: s, auth: public, cache: {{ttl: 60s}}}}\n  - {{path: /user, service: s, cache: {{ttl: 60s}}}}\n  - {{path: /swr, service: s, auth: public, cache: {{ttl: 1s, stale_while_revalidate: 30s}}}}\n  - {{path: /gz, service: s, auth: public, strip_prefix: true, compress: true, cache: {{ttl: 60s}}}}\n",
        hs_auth(""),
        echo.addr
    ));
    let n = echo.served();
    let first = get(gw.addr, "/c/a");
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let second = get(gw.addr, "/c/a");
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.body, first.body);
    assert_eq!(echo.served(), n + 1, "the hit did not reach the backend");
    let head = request(gw.addr, "HEAD", "/c/a", &[], b"");
    assert_eq!(head.header("x-cache"), Some("HIT"), "HEAD after GET from the cache");
    assert!(head.body.is_empty());

    for never in ["Cache-Control:no-store", "Cache-Control:private", "Set-Cookie:session=1"] {
        let path = format!("/c/never?respond_header={never}");
        get(gw.addr, &path);
        let again = get(gw.addr, &path);
        assert_ne!(again.header("x-cache"), Some("HIT"), "{never} must not be stored");
    }

    // A non-public route: each user their own entry, unless the response is public.
    let (alice, bob) = (bearer("alice", serde_json::json!({})), bearer("bob", serde_json::json!({})));
    let a1 = get_with(gw.addr, "/user/me", &[("Authorization", &alice)]);
    assert_eq!(a1.header("x-cache"), Some("MISS"));
    let b1 = get_with(gw.addr, "/user/me", &[("Authorization", &bob)]);
    assert_eq!(b1.header("x-cache"), Some("MISS"), "bob never gets alice's entry");
    assert_eq!(b1.json()["headers"]["x-user-id"][0], "bob");
    assert_eq!(get_with(gw.addr, "/user/me", &[("Authorization", &alice)]).header("x-cache"), Some("HIT"));
    let shared = "/user/catalog?respond_header=Cache-Control:public";
    get_with(gw.addr, shared, &[("Authorization", &alice)]);
    assert_eq!(
        get_with(gw.addr, shared, &[("Authorization", &bob)]).header("x-cache"),
        Some("HIT"),
        "public is shared"
    );

    // Purge.
    let r = request(gw.admin, "POST", "/cache/purge", &[("Content-Type", "application/json")], br#"{"path": "/c/a"}"#);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["purged"], 1);
    assert_eq!(get(gw.addr, "/c/a").header("x-cache"), Some("MISS"));

    // Stale while revalidating: the stale copy at once, one refresh behind it.
    get(gw.addr, "/swr/x");
    // The 1 s TTL must run out; asking meanwhile would be the revalidation under test.
    std::thread::sleep(Duration::from_millis(1300));
    let before = echo.served();
    let t = Instant::now();
    let stale = get(gw.addr, "/swr/x");
    assert_eq!(stale.header("x-cache"), Some("STALE"));
    assert!(t.elapsed() < Duration::from_millis(500));
    assert!(eventually(Duration::from_secs(3), || echo.served() == before + 1), "one background revalidation");
    assert!(eventually(Duration::from_secs(3), || get(gw.addr, "/swr/x").header("x-cache") == Some("HIT")));

    // A compressing, caching route stores the plain body and encodes per client.
    let original: Vec<u8> = (0..10_240u64).map(echo_pattern).collect();
    let gz =
        get_with(gw.addr, "/gz/bytes/10240?respond_header=Content-Type:text/plain", &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let plain = get(gw.addr, "/gz/bytes/10240?respond_header=Content-Type:text/plain");
    assert_eq!(plain.header("x-cache"), Some("HIT"));
    assert_eq!(plain.header("content-encoding"), None, "a client that accepts nothing gets the plain body");
    assert_eq!(plain.body, original);
}

#[test]
fn a_burst_of_misses_makes_one_upstream_request_and_memory_stays_bounded() {
    let _measuring = exclusive();
    let echo = Echo::start_with("slow", &["--delay-ms", "300"]);
    let gw = Gateway::start(&format!(
        "cache: {{max_memory: 2MiB}}\nservices:\n  s: {{targets: [\"{}\"], read_timeout: 10s}}\nroutes:\n  - {{path: /c, service: s, auth: public, strip_prefix: true, cache: {{ttl: 60s, max_entry: 120KiB}}}}\n",
        echo.addr
    ));
    let before = echo.served();
    let addr = gw.addr;
    let handles: Vec<_> = (0..100).map(|_| std::thread::spawn(move || get(addr, "/c/cold").status)).collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert_eq!(echo.served() - before, 1, "100 concurrent cold requests, one upstream request");

    // Fill 3x over: 60 distinct 100 KiB responses into 2 MiB.
    let fill = |range: std::ops::Range<usize>| {
        for i in range {
            let r = get(gw.addr, &format!("/c/bytes/102400?n={i}"));
            assert_eq!((r.status, r.body.len()), (200, 102_400));
        }
    };
    fill(0..60);
    let bytes = metric_of(&gw, "siger_cache_bytes");
    assert!(bytes > 1024.0 * 1024.0 && bytes <= 2.0 * 1024.0 * 1024.0, "{bytes}");
    assert_eq!(get(gw.addr, "/c/bytes/102400?n=59").header("x-cache"), Some("HIT"), "the newest entry stays");
    assert_eq!(get(gw.addr, "/c/bytes/102400?n=0").header("x-cache"), Some("MISS"), "the oldest was evicted");
    // The process does not grow with what passes through the full cache. RSS read at two
    // moments differs by several MiB with no trend (freed pages the allocator keeps per
    // thread, buffers of the request in flight; on a busy machine a worker thread that had
    // been idle warms its own arena late), so: 20 MiB first, to warm those, then twice 20 MiB
    // more. A leak of stored or evicted bodies adds what passed in each round; a late warm-up
    // shows in one round only. So the smaller of the two rounds' growth of peak RSS may not
    // reach a quarter of what passed.
    fill(100..300);
    let mut peaks = vec![gw.peak_rss_kib()];
    for round in [300..500, 500..700] {
        fill(round);
        peaks.push(gw.peak_rss_kib());
    }
    assert!(metric_of(&gw, "siger_cache_bytes") <= 2.0 * 1024.0 * 1024.0);
    // VmHWM is read from per-thread counters the kernel folds in lazily, so a later reading
    // can come out a few pages lower: growth is never negative.
    assert!(peaks.iter().all(|&p| p > 0), "peak RSS (KiB) read as {peaks:?}");
    let grown = peaks[1].saturating_sub(peaks[0]).min(peaks[2].saturating_sub(peaks[1]));
    assert!(grown < 5 * 1024, "peak RSS (KiB) after each 20 MiB round: {peaks:?}");
}

/// `GET path` sent with this exact `Host` line (or none: the absolute-form target names it).
fn get_for_host(addr: std::net::SocketAddr, target: &str, host: Option<&str>, headers: &[(&str, &str)]) -> RawResponse {
    let mut req = format!("GET {target} HTTP/1.1\r\nConnection: close\r\n");
    if let Some(host) = host {
        req.push_str(&format!("Host: {host}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw_request(addr, req.as_bytes())
}

#[test]
fn the_cache_key_is_the_host_and_scheme_the_backend_is_told() {
    let echo = Echo::start("e1");
    let gw = Gateway::start(&format!(
        "trusted_proxies: [127.0.0.1/32]\nservices:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /c, service: s, auth: public, cache: {{ttl: 60s}}}}\n",
        echo.addr
    ));
    let told = |r: &RawResponse, header: &str| r.json()["headers"][header][0].as_str().map(str::to_string);
    // A response built for one spelling of the host is never served to another: the backend
    // may have put that host (with its port) in links and redirects, or picked a vhost by it.
    let with_port = get_for_host(gw.addr, "/c/page", Some("a.example:1337"), &[]);
    assert_eq!(with_port.header("x-cache"), Some("MISS"));
    assert_eq!(told(&with_port, "host").as_deref(), Some("a.example:1337"));
    for host in ["a.example", "A.EXAMPLE", "a.example."] {
        let r = get_for_host(gw.addr, "/c/page", Some(host), &[]);
        assert_eq!(r.header("x-cache"), Some("MISS"), "Host: {host} is its own entry");
        assert_eq!(told(&r, "host").as_deref(), Some(host));
        assert_eq!(told(&r, "x-forwarded-host").as_deref(), Some(host));
        assert_eq!(get_for_host(gw.addr, "/c/page", Some(host), &[]).header("x-cache"), Some("HIT"));
    }
    // The absolute form names the host the upstream is told: the same entry as that Host.
    let absolute = get_for_host(gw.addr, "http://a.example:1337/c/page", None, &[]);
    assert_eq!(absolute.header("x-cache"), Some("HIT"));
    assert_eq!(told(&absolute, "host").as_deref(), Some("a.example:1337"));
    // The scheme the backend is told (here by a trusted proxy) is part of the key too.
    let https = get_for_host(gw.addr, "/c/page", Some("a.example"), &[("X-Forwarded-Proto", "https")]);
    assert_eq!(https.header("x-cache"), Some("MISS"), "a page built for https:// links is its own entry");
    assert_eq!(told(&https, "x-forwarded-proto").as_deref(), Some("https"));
    // A purge by path still removes the entry of every host.
    let r =
        request(gw.admin, "POST", "/cache/purge", &[("Content-Type", "application/json")], br#"{"path": "/c/page"}"#);
    assert_eq!(r.json()["purged"], 5, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(get_for_host(gw.addr, "/c/page", Some("a.example:1337"), &[]).header("x-cache"), Some("MISS"));
}

#[test]
fn callers_that_cannot_be_told_apart_never_share_a_cached_answer() {
    let echo = Echo::start("e1");
    let keys_dir = tempfile::tempdir().unwrap();
    let keys_file = keys_dir.path().join("keys.yaml");
    let out = Command::new(SIGER).args(["apikey", "--consumer", "acme", "--roles", "user"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().to_string();
    std::fs::write(&keys_file, format!("{}\n", field("entry:"))).unwrap();
    let gw = Gateway::start(&format!(
        "{}  api_keys: {{header: X-Api-Key, file: {}}}\nservices:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /user, service: s, schemes: [jwt, api_key], cache: {{ttl: 60s}}}}\n  - {{path: /opt, service: s, auth: optional, cache: {{ttl: 60s}}}}\n",
        hs_auth(""),
        keys_file.display(),
        echo.addr
    ));
    let token = |claims: serde_json::Value| format!("Bearer {}", hs256(&claims));
    let mut no_sub = claims("x", &["user"]);
    no_sub.as_object_mut().unwrap().remove("sub");
    let empty_sub = claims("", &["user"]);
    // Tokens without a `sub` (or an empty one) name nobody: never cached, never served one.
    for (what, claims) in [("no sub", &no_sub), ("empty sub", &empty_sub)] {
        for _ in 0..2 {
            let r = get_with(gw.addr, "/user/me", &[("Authorization", &token(claims.clone()))]);
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-cache"), Some("BYPASS"), "{what}");
        }
    }
    // On an optional route the anonymous entry is the anonymous callers' only.
    let n = echo.served();
    assert_eq!(get(gw.addr, "/opt/me").header("x-cache"), Some("MISS"));
    assert_eq!(get(gw.addr, "/opt/me").header("x-cache"), Some("HIT"));
    let r = get_with(gw.addr, "/opt/me", &[("Authorization", &token(no_sub.clone()))]);
    assert_eq!(r.header("x-cache"), Some("BYPASS"), "a token without sub is not the anonymous caller");
    assert_eq!(echo.served(), n + 2);
    // The same name from two schemes is two callers: JWT `sub: acme` and the API key of acme.
    let jwt_acme = token(claims("acme", &["user"]));
    assert_eq!(get_with(gw.addr, "/user/x", &[("Authorization", &jwt_acme)]).header("x-cache"), Some("MISS"));
    assert_eq!(get_with(gw.addr, "/user/x", &[("Authorization", &jwt_acme)]).header("x-cache"), Some("HIT"));
    let key = field("key:");
    let by_key = get_with(gw.addr, "/user/x", &[("X-Api-Key", &key)]);
    assert_eq!(by_key.header("x-cache"), Some("MISS"), "the consumer acme is not the user acme");
    assert_eq!(by_key.json()["headers"]["x-consumer"][0], "acme");
    assert_eq!(get_with(gw.addr, "/user/x", &[("X-Api-Key", &key)]).header("x-cache"), Some("HIT"));
}

#[test]
fn answers_to_requests_with_credentials_are_shared_only_when_the_response_allows_it() {
    let echo = Echo::start("e1");
    let gw = Gateway::start(&format!(
        "{}services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /c, service: s, auth: public, cache: {{ttl: 60s}}}}\n  - {{path: /nocookie, service: s, auth: public, request_headers: {{remove: [Cookie]}}, cache: {{ttl: 60s}}}}\n  - {{path: /user, service: s, cache: {{ttl: 60s}}}}\n",
        hs_auth(""),
        echo.addr
    ));
    // RFC 9111 §3.5: an answer to a request with Authorization (or, as browsers send them,
    // cookies) is shared only when it says so: public, s-maxage or must-revalidate.
    for (credential, value) in [("Cookie", "session=alice"), ("Authorization", "Basic YWxpY2U6cHc=")] {
        let path = format!("/c/{credential}");
        let personal = get_with(gw.addr, &path, &[(credential, value)]);
        assert_eq!(personal.status, 200);
        assert_eq!(personal.header("x-cache"), Some("BYPASS"), "{credential}: not stored");
        let anonymous = get(gw.addr, &path);
        assert_eq!(anonymous.header("x-cache"), Some("MISS"), "{credential}: not served to others");
        assert!(anonymous.json()["headers"].get(credential.to_ascii_lowercase()).is_none());
        // Nor does it make the path uncacheable for everyone else.
        assert_eq!(get(gw.addr, &path).header("x-cache"), Some("HIT"), "{credential}");
        for allowed in ["public", "s-maxage=60", "must-revalidate"] {
            let path = format!("/c/{credential}-{allowed}?respond_header=Cache-Control:{allowed}");
            assert_eq!(get_with(gw.addr, &path, &[(credential, value)]).header("x-cache"), Some("MISS"));
            assert_eq!(get(gw.addr, &path).header("x-cache"), Some("HIT"), "{credential} with {allowed}");
        }
    }
    // A cookie the backend never sees changes nothing.
    assert_eq!(get_with(gw.addr, "/nocookie/x", &[("Cookie", "session=alice")]).header("x-cache"), Some("MISS"));
    assert_eq!(get(gw.addr, "/nocookie/x").header("x-cache"), Some("HIT"));
    // Per-user entries are keyed by the token; a cookie beside it is still not the key.
    let alice = bearer("alice", serde_json::json!({}));
    get_with(gw.addr, "/user/me", &[("Authorization", &alice), ("Cookie", "tenant=a")]);
    assert_eq!(get_with(gw.addr, "/user/me", &[("Authorization", &alice)]).header("x-cache"), Some("MISS"));
    assert_eq!(get_with(gw.addr, "/user/me", &[("Authorization", &alice)]).header("x-cache"), Some("HIT"));
}

/// An HTTP/2 stream that asked for a path and never reads a byte of the answer (its
/// flow-control window is 0), its connection driven by a runtime while the test goes on.
struct StalledStream {
    _client: h2::client::SendRequest<bytes::Bytes>,
    _response: h2::client::ResponseFuture,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for StalledStream {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn h2_stalled_request(
    rt: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> StalledStream {
    let mut request = http::Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(()).unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, connection) = h2::client::Builder::new().initial_window_size(0).handshake(tcp).await.unwrap();
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        StalledStream { _client: client, _response: response, driver }
    })
}

#[test]
fn a_client_that_never_reads_holds_nobody_behind_the_cache_lock() {
    let echo = Echo::start("e1");
    let gw = Gateway::start_h2c(&format!(
        "services:\n  s: {{targets: [\"{}\"], read_timeout: 10s}}\nroutes:\n  - {{path: /c, service: s, auth: public, strip_prefix: true, cache: {{ttl: 60s}}}}\n  - {{path: /short, service: s, auth: public, strip_prefix: true, cache: {{ttl: 1s}}}}\n",
        echo.addr
    ));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let body_len = 300_000;
    // Another client of the key is answered from the cache at once (the lock waits up to 10 s).
    let prompt = |path: &str, headers: &[(&str, &str)], what: &str| {
        let started = Instant::now();
        let r = get_with(gw.addr, path, headers);
        let took = started.elapsed();
        assert_eq!((r.status, r.body.len()), (200, body_len), "{what}");
        assert!(took < Duration::from_secs(5), "{what}: answered after {took:?}");
        assert_eq!(r.header("x-cache"), Some("HIT"), "{what}");
    };
    let path = format!("/c/bytes/{body_len}");
    let before = echo.served();
    // 1. The miss of a new key is taken by a client that never reads.
    let _stalled = h2_stalled_request(&rt, gw.addr, &path, &[]);
    assert!(eventually(Duration::from_secs(5), || echo.served() == before + 1), "the miss went upstream");
    prompt(&path, &[], "a new key");
    assert_eq!(echo.served(), before + 1, "one upstream request");
    // 2. A variant (another set of accepted encodings) missing beside a cached one.
    let _stalled = h2_stalled_request(&rt, gw.addr, &path, &[("accept-encoding", "gzip")]);
    assert!(eventually(Duration::from_secs(5), || echo.served() == before + 2));
    prompt(&path, &[("Accept-Encoding", "gzip")], "a new variant");
    // 3. An entry past its freshness, fetched again.
    let short = format!("/short/bytes/{body_len}");
    assert_eq!(get(gw.addr, &short).header("x-cache"), Some("MISS"));
    // The 1 s TTL must run out; asking meanwhile would be the fetch under test.
    std::thread::sleep(Duration::from_millis(1300));
    let before = echo.served();
    let _stalled = h2_stalled_request(&rt, gw.addr, &short, &[]);
    assert!(eventually(Duration::from_secs(5), || echo.served() == before + 1));
    prompt(&short, &[], "an expired entry");
}

/// `GET path` over HTTP/2 (prior knowledge): the status and `X-Cache` of the answer, read whole.
fn h2_get(rt: &tokio::runtime::Runtime, addr: std::net::SocketAddr, path: &str) -> (u16, Option<String>) {
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.unwrap();
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.unwrap();
        let request = http::Request::get(format!("http://{addr}{path}")).body(()).unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = response.await.unwrap();
        let cache = response.headers().get("x-cache").map(|v| v.to_str().unwrap().to_string());
        let status = response.status().as_u16();
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        driver.abort();
        (status, cache)
    })
}

#[test]
fn stale_answers_to_http2_clients_are_refreshed_in_the_background() {
    let echo = Echo::start("e1");
    let gw = Gateway::start_h2c(&format!(
        "services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /swr, service: s, auth: public, cache: {{ttl: 1s, stale_while_revalidate: 30s}}}}\n",
        echo.addr
    ));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    assert_eq!(h2_get(&rt, gw.addr, "/swr/x"), (200, Some("MISS".into())));
    // The 1 s TTL must run out; asking meanwhile would be the revalidation under test.
    std::thread::sleep(Duration::from_millis(1300));
    let before = echo.served();
    assert_eq!(h2_get(&rt, gw.addr, "/swr/x"), (200, Some("STALE".into())));
    assert!(eventually(Duration::from_secs(5), || echo.served() == before + 1), "one background refresh");
    assert!(eventually(Duration::from_secs(5), || h2_get(&rt, gw.addr, "/swr/x").1.as_deref() == Some("HIT")));
}

#[test]
fn the_first_compressing_route_needs_a_new_process() {
    let echo = Echo::start("e1");
    let plain = format!(
        "services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /z, service: s, auth: public}}\n",
        echo.addr
    );
    let gw = Gateway::start(&plain);
    gw.rewrite(&format!("{HEAD}{}", plain.replace("auth: public}", "auth: public, compress: true}")));
    let r = gw.reload();
    assert_eq!(r.status, 422);
    let errors = r.json()["errors"].to_string();
    assert!(errors.contains("routes[0].compress") && errors.contains("siger upgrade"), "{errors}");
    assert_eq!(get(gw.addr, "/z/x").status, 200, "the running configuration keeps serving");
}
