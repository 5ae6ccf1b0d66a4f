//! The partner program through the real binary (docs/plans.md): plans from the API-key file and
//! from a claim, quotas counted exactly across two gateways on a real `redis-server` (single
//! and Cluster) and reset at the calendar window's end, the 429 and its headers, the store's
//! outage under `on_store_error`, a reload changing the window in progress, usage records
//! equal to what was sent (admin `GET /usage`, CSV, `siger usage`), `$tenant`, and the status
//! page's usage view in Chromium.
//!
//! Windows: a debug build reads `SIGER_TEST_CLOCK_OFFSET_MS`, so the gateways stand a few
//! seconds before the top of an hour and the test watches the hour turn.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::jwt::{claims, hs256, hs_auth};
use crate::support::redis_server::{RedisCluster, RedisServer};
use crate::support::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ACME_KEY: &str = "sk_acme_test_key";
const GLOBEX_KEY: &str = "sk_globex_test_key";

/// A keys file: acme (plan `plan`, tenant `acme-corp`) and globex (no plan).
fn keys_file(dir: &Path, plan: &str) -> String {
    let digest = |key: &str| hex::encode(Sha256::digest(key.as_bytes()));
    let path = dir.join("keys.yaml");
    std::fs::write(
        &path,
        format!(
            "- {{sha256: {}, consumer: acme, plan: {plan}, tenant: acme-corp}}\n- {{sha256: {}, consumer: globex}}\n",
            digest(ACME_KEY),
            digest(GLOBEX_KEY)
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn header<'a>(r: &'a RawResponse, name: &str) -> Option<&'a str> {
    r.header(name)
}

fn number(r: &RawResponse, name: &str) -> u64 {
    header(r, name).unwrap_or_else(|| panic!("no {name}: {:?}", r.headers)).parse().unwrap()
}

fn key(key: &str) -> [(&'static str, &str); 1] {
    [("X-Api-Key", key)]
}

/// `n` requests of acme alternating over `gws`: the statuses.
fn statuses(gws: &[&Gateway], path: &str, n: usize) -> Vec<u16> {
    (0..n).map(|i| get_with(gws[i % gws.len()].addr, path, &key(ACME_KEY)).status).collect()
}

/// An hourly quota of 5 shared by two gateways through `redis`, their clocks `offset_ms` ahead.
fn quota_gateways(echo: &Echo, redis: &str, dir: &Path, offset_ms: i64) -> (Gateway, Gateway) {
    let keys = keys_file(dir, "free");
    let body = format!(
        "auth:\n  api_keys: {{file: {keys}}}\nrate_limit:\n  store: redis\n  redis: {redis}\n  on_store_error: deny\nplans:\n  free: {{quota: {{requests: 5, per: hour}}}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api, schemes: [api_key]}}\n",
        echo.addr
    );
    let offset = offset_ms.to_string();
    let env = [("SIGER_TEST_CLOCK_OFFSET_MS", offset.as_str())];
    let template = format!("{HEAD}{body}");
    (Gateway::start_env(&template, &env), Gateway::start_env(&template, &env))
}

/// The quota is exact across two gateways and the window ends at the top of the hour: 5 of 8
/// requests pass, the others get 429 `quota_exceeded` with `Retry-After` to the hour's end;
/// once the hour turns, 5 more pass.
fn exact_across_gateways_at_the_boundary(redis: &str) {
    let echo = Echo::start("api");
    let dir = tempfile::tempdir().unwrap();
    // The gateways' hour ends 30 s after the test starts them (room for a slow start).
    let start = now_ms();
    let boundary_wall = start + 30_000;
    let gateway_boundary = (boundary_wall / 3_600_000 + 1) * 3_600_000;
    let offset = gateway_boundary - boundary_wall;
    let (gw1, gw2) = quota_gateways(&echo, redis, dir.path(), offset);
    assert!(now_ms() < boundary_wall - 8_000, "the gateways took too long to start for this test");

    let got = statuses(&[&gw1, &gw2], "/x", 8);
    assert_eq!(got.iter().filter(|s| **s == 200).count(), 5, "{got:?}\n{}", gw1.logs());
    assert_eq!(got[5..], [429, 429, 429], "the quota's end is exact: {got:?}");
    let refused = get_with(gw2.addr, "/x", &key(ACME_KEY));
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"], "quota_exceeded");
    let message = refused.json()["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("quota of 5 requests per hour exceeded; it resets at "), "{message}");
    let left = (boundary_wall - now_ms() + 999) / 1000;
    let retry = number(&refused, "Retry-After") as i64;
    assert!((left - 2..=left + 1).contains(&retry), "Retry-After {retry}, the hour ends in {left} s");
    assert_eq!(number(&refused, "RateLimit-Reset") as i64, retry);
    assert_eq!((number(&refused, "RateLimit-Limit"), number(&refused, "RateLimit-Remaining")), (5, 0));
    // Refused requests are not counted; another consumer without a plan is not limited.
    assert_eq!(get_with(gw1.addr, "/x", &key(GLOBEX_KEY)).status, 200);

    // The hour turns (by the gateways' clocks): a new window.
    while now_ms() < boundary_wall + 500 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = statuses(&[&gw1, &gw2], "/x", 7);
    assert_eq!(got, [200, 200, 200, 200, 200, 429, 429], "a fresh window after the boundary");
    let allowed = metric_of(&gw1, "siger_quota_requests_total{plan=\"free\",result=\"allowed\"}")
        + metric_of(&gw2, "siger_quota_requests_total{plan=\"free\",result=\"allowed\"}");
    assert_eq!(allowed, 10.0);
    assert!(!scrape(&gw1).contains("consumer=\""), "never a consumer label");
}

#[test]
fn a_quota_is_exact_across_two_gateways_and_resets_at_the_hour() {
    let redis = RedisServer::start();
    exact_across_gateways_at_the_boundary(&format!("{{url: \"{}\", timeout: 2s}}", redis.url()));
}

#[test]
fn a_quota_is_exact_across_gateways_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    exact_across_gateways_at_the_boundary(&format!("{{cluster_nodes: [{}], timeout: 2s}}", cluster.node_list()));
}

/// Plans from the key file, a claim, the default; `quota_cost`; one set of `RateLimit-*`;
/// `$tenant` from the key file and from a claim.
#[test]
fn plans_come_from_the_key_file_then_the_claim_then_the_default() {
    let echo = Echo::start("api");
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), "pro");
    let gw = Gateway::start(&format!(
        "{}  api_keys: {{file: {keys}}}\nplans:\n  free: {{quota: {{requests: 3, per: day}}}}\n  pro: {{quota: {{requests: 100, per: month}}, rate_limit: {{requests: 50, per: 1m}}}}\n  tiny: {{rate_limit: {{requests: 2, per: 1m}}}}\nconsumers: {{plan_claim: tier, default_plan: free, tenant_claim: org}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /search, service: api, schemes: [api_key, jwt], quota_cost: 10, request_headers: {{set: {{X-Tenant: \"$tenant\"}}}}}}\n  - {{path: /, service: api, schemes: [api_key, jwt], request_headers: {{set: {{X-Tenant: \"$tenant\"}}}}}}\n",
        hs_auth(""),
        echo.addr
    ));
    // The key file's plan (pro), even though the token world would say otherwise; its tenant.
    let r = get_with(gw.addr, "/x", &[("X-Api-Key", ACME_KEY), ("X-Tenant", "spoofed")]);
    assert_eq!(r.status, 200, "{}", gw.logs());
    assert_eq!(r.json()["headers"]["x-tenant"], serde_json::json!(["acme-corp"]), "set, never the client's");
    // Closest to refusing: the plan's rate limit (49 left) rather than the quota (99 left).
    assert_eq!((number(&r, "RateLimit-Limit"), number(&r, "RateLimit-Remaining")), (50, 49));
    let r = get_with(gw.addr, "/search", &key(ACME_KEY));
    assert_eq!((number(&r, "RateLimit-Limit"), number(&r, "RateLimit-Remaining")), (50, 48));
    let limits = r.headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case("ratelimit-limit")).count();
    assert_eq!(limits, 1, "one set of RateLimit-* headers");

    // A token naming pro by claim; a token naming no plan gets the default (3 a day).
    let token = |claims: Value| format!("Bearer {}", hs256(&claims));
    let mut pro = claims("alice", &[]);
    pro["tier"] = "pro".into();
    pro["org"] = "wonka".into();
    let r = get_with(gw.addr, "/x", &[("Authorization", &token(pro))]);
    assert_eq!((r.status, number(&r, "RateLimit-Limit")), (200, 50));
    assert_eq!(r.json()["headers"]["x-tenant"][0], "wonka");
    let plain = token(claims("bob", &[]));
    let got: Vec<u16> = (0..4).map(|_| get_with(gw.addr, "/x", &[("Authorization", &plain)]).status).collect();
    assert_eq!(got, [200, 200, 200, 429]);
    // A plan this gateway does not offer falls back to the default, counted.
    let mut gold = claims("carol", &[]);
    gold["tier"] = "gold".into();
    let r = get_with(gw.addr, "/x", &[("Authorization", &token(gold))]);
    assert_eq!((r.status, number(&r, "RateLimit-Limit")), (200, 3));
    assert_eq!(metric_of(&gw, "siger_quota_unknown_plan_total"), 1.0);
    // A plan with only a rate limit: counted per consumer, refused as rate_limited.
    let mut tiny = claims("erin", &[]);
    tiny["tier"] = "tiny".into();
    let tiny = token(tiny);
    let got: Vec<RawResponse> = (0..3).map(|_| get_with(gw.addr, "/x", &[("Authorization", &tiny)])).collect();
    assert_eq!(got.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 200, 429]);
    assert_eq!((got[0].header("RateLimit-Limit"), got[2].json()["error"].as_str()), (Some("2"), Some("rate_limited")));
    // A tenant claim that is not a tenant name is refused, not forwarded without a tenant.
    let mut odd = claims("dave", &[]);
    odd["org"] = "a/b".into();
    let r = get_with(gw.addr, "/x", &[("Authorization", &token(odd))]);
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("forbidden")));
    // Without a plan (globex names none, and there is a default: free).
    let r = get_with(gw.addr, "/search", &key(GLOBEX_KEY));
    assert_eq!(r.status, 429, "quota_cost 10 never fits a quota of 3");
    // acme's 1 + 10 (`quota_cost`) and alice's 1.
    assert_eq!(metric_of(&gw, "siger_quota_units_total{plan=\"pro\"}"), 12.0);
}

/// A reload that raises the plan's quota applies to the window in progress.
#[test]
fn a_reloaded_quota_applies_to_the_current_window() {
    let echo = Echo::start("api");
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), "free");
    let config = |quota: u32| {
        format!(
            "{HEAD}auth:\n  api_keys: {{file: {keys}}}\nplans:\n  free: {{quota: {{requests: {quota}, per: month}}}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api, schemes: [api_key]}}\n",
            echo.addr
        )
    };
    let gw = Gateway::start_raw(&config(2));
    assert_eq!(statuses(&[&gw], "/x", 3), [200, 200, 429]);
    gw.rewrite(&config(4));
    let reloaded = gw.reload();
    assert_eq!(reloaded.status, 200, "{}", String::from_utf8_lossy(&reloaded.body));
    let r = get_with(gw.addr, "/x", &key(ACME_KEY));
    assert_eq!((r.status, number(&r, "RateLimit-Remaining")), (200, 1), "the two used are kept");
    assert_eq!(statuses(&[&gw], "/x", 2), [200, 429]);
}

/// A store that cannot answer: `deny` refuses with 503, `allow` lets requests through uncounted.
#[test]
fn a_store_outage_follows_on_store_error() {
    let echo = Echo::start("api");
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), "free");
    let mut redis = RedisServer::start();
    let url = redis.url();
    let config = |policy: &str| {
        format!(
            "{HEAD}auth:\n  api_keys: {{file: {keys}}}\nrate_limit:\n  store: redis\n  redis: {{url: \"{}\", timeout: 300ms}}\n  on_store_error: {policy}\nplans:\n  free: {{quota: {{requests: 100, per: day}}}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api, schemes: [api_key]}}\n",
            url,
            echo.addr
        )
    };
    let gw = Gateway::start_raw(&config("deny"));
    assert!(eventually(Duration::from_secs(15), || get_with(gw.addr, "/x", &key(ACME_KEY)).status == 200));
    redis.kill();
    let r = get_with(gw.addr, "/x", &key(ACME_KEY));
    assert_eq!((r.status, r.json()["error"].as_str()), (503, Some("service_unavailable")), "{}", gw.logs());
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert!(metric_of(&gw, "siger_quota_requests_total{plan=\"free\",result=\"store_error_denied\"}") >= 1.0);
    gw.rewrite(&config("allow"));
    assert_eq!(gw.reload().status, 200);
    // Past the cool-down the store is asked again, fails, and the request passes uncounted.
    assert!(eventually(Duration::from_secs(10), || get_with(gw.addr, "/x", &key(ACME_KEY)).status == 200));
    assert!(metric_of(&gw, "siger_quota_requests_total{plan=\"free\",result=\"store_error_allowed\"}") >= 1.0);
}

/// Usage equals what was sent: requests by status class, request and response body bytes;
/// read through `GET /usage` (JSON and CSV) and `siger usage`, from Redis.
#[test]
fn usage_records_what_was_sent_and_the_api_and_cli_read_it() {
    let echo = Echo::start("api");
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), "pro");
    let redis = RedisServer::start();
    let gw = Gateway::start(&format!(
        "auth:\n  api_keys: {{file: {keys}}}\nrate_limit:\n  store: redis\n  redis: {{url: \"{}\", timeout: 2s}}\nplans:\n  pro: {{quota: {{requests: 1000, per: month}}}}\nusage: {{store: redis, flush_interval: 1s}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{name: orders, path: /orders, service: api, schemes: [api_key], strip_prefix: true}}\n  - {{path: /, service: api, auth: public}}\n",
        redis.url(),
        echo.addr
    ));
    let (mut sent, mut received) = (0u64, 0u64);
    let mut classes = [0u64; 4];
    for i in 0..12u64 {
        let body = vec![b'x'; (i * 10) as usize];
        let path = match i % 4 {
            0 => "/orders/a",
            1 => "/orders/status/404",
            2 => "/orders/status/503",
            _ => "/orders/status/302",
        };
        let r = request(gw.addr, "POST", path, &key(ACME_KEY), &body);
        classes[(r.status / 100 - 2) as usize] += 1;
        sent += body.len() as u64;
        received += r.body.len() as u64;
    }
    // The public route is in the metrics, not in usage (no consumer).
    assert_eq!(get(gw.addr, "/public").status, 200);
    // The day as the gateway names it: today, UTC.
    let day = date_of(now_ms() / 86_400_000);
    let query = format!("/usage?consumer=acme&from={day}");
    let usage = |path: &str| -> Value {
        let r = request(gw.admin, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    assert!(
        eventually(Duration::from_secs(15), || usage(&query)["totals"]["requests"] == 12),
        "{}\n{}",
        usage(&query),
        gw.logs()
    );
    let body = usage(&query);
    let totals = &body["totals"];
    assert_eq!(
        [&totals["status"]["2xx"], &totals["status"]["3xx"], &totals["status"]["4xx"], &totals["status"]["5xx"]]
            .map(|v| v.as_u64().unwrap()),
        classes
    );
    assert_eq!((totals["bytes_in"].as_u64(), totals["bytes_out"].as_u64()), (Some(sent), Some(received)));
    assert_eq!(body["rows"][0]["route"], "orders");
    assert_eq!(body["rows"].as_array().unwrap().len(), 1);
    // A bad query is a JSON 400 through the one error mapping.
    let bad = request(gw.admin, "GET", "/usage?from=yesterday", &[], b"");
    assert_eq!((bad.status, bad.json()["error"].as_str()), (400, Some("bad_request")));
    // CSV.
    let csv = request(gw.admin, "GET", &format!("{query}&format=csv"), &[], b"");
    let text = String::from_utf8_lossy(&csv.body).to_string();
    assert!(csv.header("Content-Disposition").is_some_and(|d| d.contains("usage-")));
    let line =
        format!("{day},acme,orders,12,{},{},{},{},{sent},{received}", classes[0], classes[1], classes[2], classes[3]);
    assert!(text.contains(&line), "{text}");
    // `siger usage` against the same endpoint (the admin listener of the configuration).
    let out = Command::new(SIGER)
        .args(["usage", "-c"])
        .arg(&gw.config_path)
        .args(["--consumer", "acme", "--from", &day])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
    let total = table.lines().find(|l| l.starts_with("TOTAL")).unwrap_or_else(|| panic!("{table}"));
    let fields: Vec<&str> = total.split_whitespace().collect();
    let expected: Vec<String> =
        [12, classes[0], classes[1], classes[2], classes[3]].iter().map(u64::to_string).collect();
    assert_eq!(fields[1..6], expected.iter().map(String::as_str).collect::<Vec<_>>()[..], "{table}");
    let out = Command::new(SIGER)
        .args(["usage", "-c"])
        .arg(&gw.config_path)
        .args(["--consumer", "acme", "--from", &day, "--csv"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&line));
    // The records are in Redis, under the consumer's hash tag.
    assert!(redis.command(&format!("EXISTS siger:usage:{{c:acme}}:{day}")).contains('1'));
}

/// `YYYY-MM-DD` of the `days`-th day since 1970-01-01.
fn date_of(days: i64) -> String {
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The status page's usage section in Chromium: today's top consumers, a quota bar per
/// consumer, requests per route as inline SVG; nothing loaded from elsewhere.
#[test]
fn the_status_page_shows_usage_in_a_browser() {
    let echo = Echo::start("api");
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), "free");
    let gw = Gateway::start(&format!(
        "auth:\n  api_keys: {{file: {keys}}}\nplans:\n  free: {{quota: {{requests: 10, per: day}}}}\nusage: {{flush_interval: 1s}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{name: orders, path: /orders, service: api, schemes: [api_key]}}\n",
        echo.addr
    ));
    for _ in 0..9 {
        assert_eq!(get_with(gw.addr, "/orders/1", &key(ACME_KEY)).status, 200);
    }
    let status = || request(gw.admin, "GET", "/status", &[], b"").json();
    assert!(eventually(Duration::from_secs(15), || status()["usage"]["top"][0]["requests"] == 9), "{}", status());
    let page = request(gw.admin, "GET", "/", &[], b"");
    let csp = page.header("Content-Security-Policy").unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let dom = crate::status_page::rendered_dom(&format!("http://{}/", gw.admin), &[]);
    let section = &dom[dom.find("id=\"usage\"").unwrap_or_else(|| panic!("{dom}"))..];
    assert!(section.contains("<td>acme</td><td>9</td>"), "{section}");
    // acme used 9 of 10: an amber bar 90 % wide.
    assert!(section.contains("data-consumer=\"acme\""), "{section}");
    assert!(section.contains("9 of 10 per day (90%)"), "{section}");
    assert!(section.contains("fill=\"#b26a00\""), "{section}");
    assert!(section.contains("data-route=\"orders\""), "{section}");
    assert!(section.contains("<svg"), "{section}");
    assert!(!dom.contains("src=\"http") && !dom.contains("href=\"http"), "no external assets");
}

/// What a gateway gathered since its last flush is written when it hands over to an upgraded
/// process and when it stops (SIGTERM), however long `flush_interval` is.
#[test]
fn usage_is_written_before_an_upgrade_hands_over_and_at_shutdown() {
    let echo = Echo::start("api");
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), "pro");
    let redis = RedisServer::start();
    let mut gw = Gateway::start(&format!(
        "auth:\n  api_keys: {{file: {keys}}}\nrate_limit:\n  store: redis\n  redis: {{url: \"{}\", timeout: 2s}}\nplans:\n  pro: {{quota: {{requests: 1000, per: month}}}}\nusage: {{store: redis, flush_interval: 5m}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api, schemes: [api_key]}}\n",
        redis.url(),
        echo.addr
    ));
    let day = date_of(now_ms() / 86_400_000);
    let written = || {
        let value = redis.command(&format!("HGET siger:usage:{{c:acme}}:{day} 2xx|/"));
        value.lines().find_map(|l| l.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    assert_eq!(statuses(&[&gw], "/x", 3), [200, 200, 200]);
    assert_eq!(written(), 0, "nothing is written before the interval");

    let log = gw.dir.path().join("upgrade.log");
    let old = gw.pid();
    let status = Command::new(SIGER)
        .arg("upgrade")
        .arg("-c")
        .arg(&gw.config_path)
        .arg("--pid")
        .arg(gw.pid().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    assert!(gw.wait_exit(Duration::from_secs(20)).is_some(), "the old process exits");
    assert_eq!(written(), 3, "the old process wrote its requests before it left\n{}", gw.logs());

    let pid_file = gw.dir.path().join("siger.pid");
    let pid_in_file = || std::fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse::<u32>().ok());
    // The new process writes its pid once it runs (the old one's may still be there).
    assert!(eventually(Duration::from_secs(20), || pid_in_file().is_some_and(|p| p != old)));
    let daemon = pid_in_file().unwrap();
    assert_eq!(statuses(&[&gw], "/x", 2), [200, 200]);
    assert!(Command::new("kill").args(["-TERM", &daemon.to_string()]).status().unwrap().success());
    // Gone, or a zombie its adoptive parent has not reaped yet.
    let stopped = || std::fs::read_to_string(format!("/proc/{daemon}/stat")).map_or(true, |s| s.contains(") Z "));
    assert!(eventually(Duration::from_secs(20), stopped), "the upgraded process stops");
    assert_eq!(
        written(),
        5,
        "the upgraded process wrote its requests at shutdown\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Behind Sentinel, a quota keeps counting on the promoted replica: what was used before the
/// master died still counts (the checks during the failover follow `on_store_error: deny`).
#[test]
fn a_quota_keeps_counting_through_a_sentinel_failover() {
    let (mut master, replica, sentinels) = crate::scale_out::sentinel_deployment();
    let echo = Echo::start("api");
    let dir = tempfile::tempdir().unwrap();
    // The gateways stand at half past the hour: the hourly window does not turn during the test.
    let now = now_ms();
    let offset = (now / 3_600_000 * 3_600_000 + 1_800_000) - now;
    let redis = crate::scale_out::sentinel_settings(&sentinels, "2s");
    let (gw1, gw2) = quota_gateways(&echo, &redis, dir.path(), offset);
    let admitted = std::cell::Cell::new(0usize);
    let send = |gw: &Gateway| {
        let status = get_with(gw.addr, "/x", &key(ACME_KEY)).status;
        assert!(matches!(status, 200 | 429 | 503), "{status}\n{}", gw.logs());
        admitted.set(admitted.get() + usize::from(status == 200));
        status
    };
    // The first checks may wait for the sentinels to name the master.
    assert!(eventually(Duration::from_secs(20), || send(&gw1) == 200 && send(&gw2) == 200), "{}", gw1.logs());
    while admitted.get() < 3 {
        send(&gw1);
    }
    assert_eq!(admitted.get(), 3);
    let replicated = || replica.command("KEYS siger:quota:*").contains("siger:quota:{c:acme}:hour:");
    assert!(eventually(Duration::from_secs(10), replicated), "the counter reached the replica");
    master.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = 0;
    while std::time::Instant::now() < deadline {
        let gw = if admitted.get() % 2 == 0 { &gw1 } else { &gw2 };
        last = send(gw);
        if last == 429 {
            break;
        }
        if last == 503 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!((last, admitted.get()), (429, 5), "the promoted replica kept the 3 used before the failover");
}

/// Without a default plan, a token naming a plan the gateway does not offer is refused (403),
/// never let through unmetered; a token naming none has no plan and no quota.
#[test]
fn an_unknown_plan_without_a_default_is_refused() {
    let echo = Echo::start("api");
    let gw = Gateway::start(&format!(
        "{}plans:\n  free: {{quota: {{requests: 1, per: day}}}}\nconsumers: {{plan_claim: tier}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api}}\n",
        hs_auth(""),
        echo.addr
    ));
    let mut gold = claims("carol", &[]);
    gold["tier"] = "gold".into();
    let r = get_with(gw.addr, "/x", &[("Authorization", &format!("Bearer {}", hs256(&gold)))]);
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("forbidden")), "{}", gw.logs());
    assert_eq!(metric_of(&gw, "siger_quota_unknown_plan_total"), 1.0);
    let plain = format!("Bearer {}", hs256(&claims("dave", &[])));
    let got: Vec<u16> = (0..3).map(|_| get_with(gw.addr, "/x", &[("Authorization", &plain)]).status).collect();
    assert_eq!(got, [200, 200, 200], "no plan: no quota");
}
