//! `/jobs/submit` end to end against a real `nats-server -js`: 202 only after the JetStream ack,
//! the stored envelope and headers, every refusal (401/403/405/413/415/400), idempotency,
//! concurrency without loss or duplicates, NATS outages (stopped, frozen, down at start-up),
//! stream bootstrap and mismatch reporting, NATS credentials, drain on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use jsonwebtoken::{encode, EncodingKey, Header};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::nats::NatsServer;
use support::*;

const SECRET: &str = "jobs-test-secret-0123456789abcdef0123";
const ACK_TIMEOUT: Duration = Duration::from_secs(1);

fn token(sub: &str, roles: &[&str]) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({"sub": sub, "roles": roles, "iss": "siger", "iat": now, "exp": now + 600});
    format!("Bearer {}", encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap())
}

/// Config body for a gateway with jobs on `nats_url` and a catch-all route to `echo`.
fn config(nats_url: &str, echo: SocketAddr, nats_extra: &str, stream_extra: &str) -> String {
    format!(
        r#"
auth:
  jwt:
    algorithms: [HS256]
    secret: "{SECRET}"
    issuer: siger
nats:
  url: {nats_url}
{nats_extra}
jobs:
  path: /jobs/submit
  subject: jobs.submitted
  stream: {{name: JOBS, subjects: ["jobs.>"], duplicate_window: 2m{stream_extra}}}
  roles: [user]
  max_body: 4KiB
  ack_timeout: 1s
services:
  echo: {{targets: ["{echo}"]}}
routes:
  - {{path: /, service: echo, auth: public}}
"#
    )
}

fn ready_body(gw: &Gateway) -> serde_json::Value {
    get(gw.admin, "/ready").json()
}

fn wait_ready(gw: &Gateway) {
    let ok = eventually(Duration::from_secs(15), || get(gw.admin, "/ready").status == 200);
    assert!(ok, "gateway not ready: {}", ready_body(gw));
}

/// A gateway with jobs on `nats`, ready (NATS connected, stream verified).
fn start(nats: &NatsServer) -> (Echo, Gateway) {
    let echo = Echo::start("echo");
    let gw = Gateway::start(&config(&nats.url(), echo.addr, "", ""));
    wait_ready(&gw);
    (echo, gw)
}

fn submit_with(gw: &Gateway, auth: &str, body: &[u8], extra: &[(&str, &str)]) -> RawResponse {
    let mut headers = vec![("Authorization", auth), ("Content-Type", "application/json")];
    headers.extend_from_slice(extra);
    request(gw.addr, "POST", "/jobs/submit", &headers, body)
}

fn submit(gw: &Gateway, body: &str) -> RawResponse {
    submit_with(gw, &token("alice", &["user"]), body.as_bytes(), &[])
}

fn is_rfc3339_utc_millis(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn accepted_job_is_stored_once_with_envelope_and_headers() {
    let nats = NatsServer::start();
    let (_echo, gw) = start(&nats);
    let body = r#"{"image": "render:2", "args": ["--fast"], "cpu": 1.50}"#;
    let r = submit_with(&gw, &token("alice", &["user"]), body.as_bytes(), &[("X-Request-Id", "req-jobs-1")]);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let job_id = v["job_id"].as_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&job_id).unwrap().get_version_num(), 7, "UUIDv7 without Idempotency-Key");
    assert_eq!(v["stream"], "JOBS");
    assert_eq!(v["seq"], 1);
    assert_eq!(r.header("location"), Some(format!("/jobs/submit/{job_id}").as_str()));
    assert_eq!(r.header("x-request-id"), Some("req-jobs-1"));
    assert!(r.json().get("backend").is_none(), "answered by the gateway, not the catch-all backend");

    let stored = nats.messages("JOBS");
    assert_eq!(stored.len(), 1, "exactly one message: {stored:?}");
    let m = &stored[0];
    assert_eq!((m.seq, m.subject.as_str()), (1, "jobs.submitted"));
    assert_eq!(m.headers.get("Nats-Msg-Id"), Some(&job_id));
    assert_eq!(m.headers.get("Siger-User-Id").map(String::as_str), Some("alice"));
    assert_eq!(m.headers.get("Siger-Request-Id").map(String::as_str), Some("req-jobs-1"));
    let env = &m.payload;
    assert_eq!(env["job_id"], job_id.as_str());
    assert_eq!(env["user_id"], "alice");
    assert_eq!(env["request_id"], "req-jobs-1");
    assert!(is_rfc3339_utc_millis(env["submitted_at"].as_str().unwrap()), "{}", env["submitted_at"]);
    assert_eq!(env["job"], serde_json::from_str::<serde_json::Value>(body).unwrap());
    assert_eq!(env.as_object().unwrap().len(), 5, "envelope has exactly the contract fields: {env}");

    assert_eq!(metric_of(&gw, "siger_jobs_published_total"), 1.0);
    assert_eq!(metric_of(&gw, "siger_jobs_publish_seconds_count"), 1.0);
    // The access log is written in batches.
    let mut line = None;
    eventually(Duration::from_secs(5), || {
        line = gw.access_lines().into_iter().find(|l| l["request_id"] == "req-jobs-1");
        line.is_some()
    });
    let line = line.expect("access line");
    assert_eq!((line["status"].as_u64(), line["backend"].as_str()), (Some(202), Some("-")));
}

#[test]
fn refusals_are_json_with_the_right_status_and_nothing_is_published() {
    let nats = NatsServer::start();
    let (_echo, gw) = start(&nats);
    let alice = token("alice", &["user"]);
    let check = |r: RawResponse, status: u16, code: &str| -> serde_json::Value {
        assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["error"], code, "{v}");
        assert!(v["request_id"].as_str().is_some_and(|s| !s.is_empty()));
        v
    };

    // 401: no token, a bad signature, an expired token.
    let r = request(gw.addr, "POST", "/jobs/submit", &[("Content-Type", "application/json")], b"{}");
    assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
    check(r, 401, "missing_token");
    let forged = token("alice", &["user"]).replace("Bearer ", "Bearer x");
    check(submit_with(&gw, &forged, b"{}", &[]), 401, "invalid_token");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({"sub": "alice", "roles": ["user"], "iss": "siger", "exp": now - 600});
    let expired = format!(
        "Bearer {}",
        encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    );
    let v = check(submit_with(&gw, &expired, b"{}", &[]), 401, "invalid_token");
    assert!(v["message"].as_str().unwrap().contains("expired"));
    // 403: authenticated without the `user` role.
    check(submit_with(&gw, &token("mallory", &["guest"]), b"{}", &[]), 403, "forbidden");

    // 405 for other methods, with Allow; also on the trailing-slash form, under the catch-all.
    for (method, path) in
        [("GET", "/jobs/submit"), ("PUT", "/jobs/submit"), ("GET", "/jobs/submit/"), ("GET", "/jobs/./submit")]
    {
        let r = request(gw.addr, method, path, &[("Authorization", &alice)], b"");
        assert_eq!(r.header("allow"), Some("POST"), "{method} {path}");
        check(r, 405, "method_not_allowed");
    }

    // 415: wrong or missing content type.
    let r =
        request(gw.addr, "POST", "/jobs/submit", &[("Authorization", &alice), ("Content-Type", "text/plain")], b"{}");
    check(r, 415, "unsupported_media_type");
    let r = request(gw.addr, "POST", "/jobs/submit", &[("Authorization", &alice)], b"{}");
    check(r, 415, "unsupported_media_type");

    // 400: empty, array, invalid JSON (with line/column), a bad Idempotency-Key.
    check(submit(&gw, ""), 400, "bad_request");
    let v = check(submit(&gw, "[1, 2]"), 400, "bad_request");
    assert!(v["message"].as_str().unwrap().contains("object"), "{v}");
    let v = check(submit(&gw, "{\"a\": 1,\n \"b\": }"), 400, "bad_request");
    assert!(v["message"].as_str().unwrap().contains("line 2 column 7"), "{v}");
    let long_key = "k".repeat(129);
    check(submit_with(&gw, &alice, b"{}", &[("Idempotency-Key", &long_key)]), 400, "bad_request");

    // 413 by Content-Length, without reading the body.
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(5000));
    check(submit(&gw, &big), 413, "payload_too_large");

    assert!(nats.messages("JOBS").is_empty(), "no refused request was published");
    assert_eq!(metric_of(&gw, "siger_jobs_failed_total{reason=\"invalid_request\"}"), 4.0);
    assert_eq!(metric_of(&gw, "siger_jobs_failed_total{reason=\"unsupported_media_type\"}"), 2.0);
    assert_eq!(metric_of(&gw, "siger_auth_failures_total{reason=\"missing_token\"}"), 1.0);
}

fn chunked_head(gw: &Gateway, auth: &str) -> String {
    format!(
        "POST /jobs/submit HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        gw.addr
    )
}

#[test]
fn chunked_bodies_are_counted_while_streaming() {
    let nats = NatsServer::start();
    let (_echo, gw) = start(&nats);
    let alice = token("alice", &["user"]);

    // Under the limit: accepted.
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let job = format!("{{\"pad\": \"{}\"}}", "y".repeat(3000));
    let (a, b) = job.split_at(1500);
    let req = format!("{}{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", chunked_head(&gw, &alice), a.len(), b.len());
    s.write_all(req.as_bytes()).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));

    // Over the limit: 413 as soon as the count passes 4 KiB, before the body even ends, and the
    // connection is closed (the rest is never read).
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(chunked_head(&gw, &alice).as_bytes()).unwrap();
    let chunk = format!("400\r\n{}\r\n", "z".repeat(1024));
    for _ in 0..5 {
        s.write_all(chunk.as_bytes()).unwrap();
    }
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "payload_too_large");
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0, "connection closed after the 413");
    assert_eq!(nats.messages("JOBS").len(), 1);
}

#[test]
fn expect_100_continue_only_after_the_header_checks() {
    let nats = NatsServer::start();
    let (_echo, gw) = start(&nats);
    let body = br#"{"k": "v"}"#;
    let head = |auth: &str| {
        format!(
            "POST /jobs/submit HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            gw.addr,
            body.len()
        )
    };
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head(&token("alice", &["user"])).as_bytes()).unwrap();
    let interim = read_response(&mut s).unwrap();
    assert_eq!(interim.status, 100);
    s.write_all(body).unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 202);

    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head("Bearer nope").as_bytes()).unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 401, "refused without inviting the body");
}

/// `config` with extra lines in the `jobs` section (e.g. `status_roles`, `consumer`).
fn config_jobs(nats_url: &str, echo: SocketAddr, stream_extra: &str, jobs_extra: &str) -> String {
    config(nats_url, echo, "", stream_extra).replace("  ack_timeout: 1s\n", &format!("  ack_timeout: 1s\n{jobs_extra}"))
}

#[test]
fn same_idempotency_key_gives_same_job_and_one_message() {
    let nats = NatsServer::start();
    let (echo, gw) = start(&nats);
    let alice = token("alice", &["user"]);
    let first = submit_with(&gw, &alice, br#"{"n": 1}"#, &[("Idempotency-Key", "order-42")]);
    assert_eq!(first.status, 202);
    let retry = submit_with(&gw, &alice, br#"{"n": 1}"#, &[("Idempotency-Key", "order-42")]);
    assert_eq!(retry.status, 202, "{}", String::from_utf8_lossy(&retry.body));
    let (a, b) = (first.json(), retry.json());
    assert_eq!(a["job_id"], b["job_id"], "same job id for the retry");
    assert_eq!(a["seq"], b["seq"], "the duplicate reports the original seq");
    assert_eq!((a["duplicate"].as_bool(), b["duplicate"].as_bool()), (Some(false), Some(true)));
    assert_eq!(uuid::Uuid::parse_str(a["job_id"].as_str().unwrap()).unwrap().get_version_num(), 8);

    // The same key with another job is a conflict, never a silent duplicate: on this gateway,
    // on another one, and on one started afterwards (nothing is remembered in memory).
    let other = Gateway::start(&config(&nats.url(), echo.addr, "", ""));
    wait_ready(&other);
    for (gw, body) in [(&gw, &br#"{"n": 2}"#[..]), (&other, br#"{"n": 2}"#), (&gw, br#"{"n":1}"#)] {
        let r = submit_with(gw, &alice, body, &[("Idempotency-Key", "order-42")]);
        assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["error"], "conflict", "{v}");
        assert!(v["message"].as_str().unwrap().contains(a["job_id"].as_str().unwrap()), "{v}");
        assert!(v["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    }
    let same_elsewhere = submit_with(&other, &alice, br#"{"n": 1}"#, &[("Idempotency-Key", "order-42")]);
    assert_eq!((same_elsewhere.status, same_elsewhere.json()["duplicate"].as_bool()), (202, Some(true)));

    // The key is scoped per user.
    let bob = submit_with(&gw, &token("bob", &["user"]), br#"{"n": 3}"#, &[("Idempotency-Key", "order-42")]);
    assert_eq!(bob.status, 202);
    assert_ne!(bob.json()["job_id"], a["job_id"]);

    let stored = nats.messages("JOBS");
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0].payload["job"], serde_json::json!({"n": 1}), "the first body stays");
    assert_eq!(metric_of(&gw, "siger_jobs_published_total"), 2.0, "duplicates are not counted as published");
    assert_eq!(metric_of(&gw, "siger_jobs_failed_total{reason=\"idempotency_conflict\"}"), 2.0);
}

#[test]
fn a_conflict_is_told_even_once_a_work_queue_consumed_the_job() {
    let nats = NatsServer::start();
    // A work-queue stream: a job leaves the stream when the scheduler acknowledges it.
    nats.create_stream(async_nats::jetstream::stream::Config {
        name: "JOBS".into(),
        subjects: vec!["jobs.>".into()],
        retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    });
    let echo = Echo::start("echo");
    let gw = Gateway::start(&config(&nats.url(), echo.addr, "", ", create: false"));
    wait_ready(&gw);
    let alice = token("alice", &["user"]);
    let first = submit_with(&gw, &alice, br#"{"render": 1}"#, &[("Idempotency-Key", "wq-1")]);
    assert_eq!(first.status, 202, "{}", String::from_utf8_lossy(&first.body));
    nats.take_and_ack("JOBS", "scheduler", |_| {}, |_| {});
    assert!(nats.messages("JOBS").is_empty(), "consumed");

    let other = submit_with(&gw, &alice, br#"{"render": 2}"#, &[("Idempotency-Key", "wq-1")]);
    assert_eq!(other.status, 409, "{}", String::from_utf8_lossy(&other.body));
    let retry = submit_with(&gw, &alice, br#"{"render": 1}"#, &[("Idempotency-Key", "wq-1")]);
    assert_eq!(retry.status, 202, "{}", String::from_utf8_lossy(&retry.body));
    assert_eq!(retry.json()["duplicate"], true);
    assert!(nats.messages("JOBS").is_empty(), "nothing stored again");
}

#[test]
fn the_location_of_a_202_answers_the_jobs_status() {
    let nats = NatsServer::start();
    let (echo, gw) = start(&nats);
    let alice = token("alice", &["user"]);
    let r = submit_with(&gw, &alice, br#"{"render": "frame-1"}"#, &[]);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let job_id = r.json()["job_id"].as_str().unwrap().to_string();
    let location = r.header("location").unwrap().to_string();
    let read = |gw: &Gateway, auth: &str| request(gw.addr, "GET", &location, &[("Authorization", auth)], b"");

    let status = read(&gw, &alice);
    assert_eq!(status.status, 200, "{}", String::from_utf8_lossy(&status.body));
    let v = status.json();
    let submitted_at = nats.messages("JOBS")[0].payload["submitted_at"].clone();
    assert_eq!(
        v,
        serde_json::json!({"job_id": job_id, "stream": "JOBS", "seq": 1, "submitted_at": submitted_at, "state": "stored"})
    );
    assert!(status.header("x-request-id").is_some());

    // Only its submitter (or a role in jobs.status_roles, below); anyone else is told it does
    // not exist.
    let ops = token("carol", &["ops"]);
    assert_eq!(read(&gw, &ops).status, 404);
    let bob = read(&gw, &token("bob", &["user"]));
    assert_eq!((bob.status, bob.json()["error"].as_str()), (404, Some("not_found")));
    let unknown =
        request(gw.addr, "GET", &format!("/jobs/submit/{}", uuid::Uuid::now_v7()), &[("Authorization", &alice)], b"");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "not_found");
    assert_eq!(request(gw.addr, "GET", "/jobs/submit/not-a-job", &[("Authorization", &alice)], b"").status, 404);
    assert_eq!(request(gw.addr, "GET", &location, &[], b"").status, 401, "same authentication as submissions");
    let head = request(gw.addr, "HEAD", &location, &[("Authorization", &alice)], b"");
    assert_eq!(head.status, 200);
    let post =
        request(gw.addr, "POST", &location, &[("Authorization", &alice), ("Content-Type", "application/json")], b"{}");
    assert_eq!((post.status, post.header("allow")), (405, Some("GET, HEAD")));

    // Status roles and the scheduler's consumer apply on reload; the consumer has taken
    // nothing yet: stored.
    let text = config_jobs(&nats.url(), echo.addr, "", "  status_roles: [ops]\n  consumer: scheduler\n");
    gw.rewrite(&format!("{HEAD}{text}"));
    assert_eq!(gw.reload().status, 200, "{}", gw.logs());
    nats.create_consumer("JOBS", "scheduler");
    assert_eq!(read(&gw, &ops).json()["job_id"], job_id.as_str());
    assert_eq!(read(&gw, &alice).json()["state"], "stored");

    // Any gateway of the fleet answers, including one started after the submission.
    let other = Gateway::start(&text);
    wait_ready(&other);
    assert_eq!(read(&other, &alice).json()["state"], "stored");

    // The scheduler takes it (delivered), then acknowledges it.
    let (addr, location2, alice2) = (gw.addr, location.clone(), alice.clone());
    let state = move || {
        request(addr, "GET", &location2, &[("Authorization", &alice2)], b"").json()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let state2 = state.clone();
    nats.take_and_ack(
        "JOBS",
        "scheduler",
        move |_| assert_eq!(state(), "delivered"),
        move |_| assert_eq!(state2(), "acknowledged"),
    );

    // A consumer the config names but JetStream does not have: 503, not a guess.
    other.rewrite(&format!("{HEAD}{}", config_jobs(&nats.url(), echo.addr, "", "  consumer: nobody\n")));
    assert_eq!(other.reload().status, 200, "{}", other.logs());
    let missing = read(&other, &alice);
    assert_eq!(missing.status, 503, "{}", String::from_utf8_lossy(&missing.body));
    assert!(missing.json()["message"].as_str().unwrap().contains("jobs.consumer `nobody`"), "{}", missing.json());
}

#[test]
fn two_hundred_concurrent_submissions_from_twenty_clients() {
    let nats = NatsServer::start();
    let (_echo, gw) = start(&nats);
    let url = gw.url("/jobs/submit");
    let auth = token("alice", &["user"]);
    let threads: Vec<_> = (0..20)
        .map(|c| {
            let (url, auth) = (url.clone(), auth.clone());
            std::thread::spawn(move || {
                let http = client();
                (0..10)
                    .map(|i| {
                        let r = http
                            .post(&url)
                            .header("Authorization", &auth)
                            .header("Content-Type", "application/json")
                            .body(format!("{{\"client\": {c}, \"i\": {i}}}"))
                            .send()
                            .unwrap();
                        assert_eq!(r.status().as_u16(), 202);
                        let v: serde_json::Value = r.json().unwrap();
                        v["job_id"].as_str().unwrap().to_string()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<String> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(ids.len(), 200);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 200, "job ids are unique");

    let stored = nats.messages("JOBS");
    assert_eq!(stored.len(), 200, "exactly 200 messages");
    let stored_ids: HashSet<String> = stored.iter().map(|m| m.headers["Nats-Msg-Id"].clone()).collect();
    assert_eq!(stored_ids.len(), 200, "no duplicates in the stream");
    assert_eq!(stored_ids, ids.into_iter().collect::<HashSet<_>>(), "every 202'd job is stored");
    let pairs: HashSet<(i64, i64)> = stored
        .iter()
        .map(|m| (m.payload["job"]["client"].as_i64().unwrap(), m.payload["job"]["i"].as_i64().unwrap()))
        .collect();
    assert_eq!(pairs.len(), 200);
}

#[test]
fn nats_outage_gives_fast_503_and_recovers_without_restarting_the_gateway() {
    let mut nats = NatsServer::start();
    let (_echo, gw) = start(&nats);
    let mut accepted: Vec<String> = (0..5)
        .map(|i| {
            let r = submit(&gw, &format!("{{\"before\": {i}}}"));
            assert_eq!(r.status, 202);
            r.json()["job_id"].as_str().unwrap().to_string()
        })
        .collect();

    nats.stop();
    let started = Instant::now();
    let r = submit(&gw, r#"{"during": 1}"#);
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(took <= ACK_TIMEOUT + Duration::from_secs(1), "answered in {took:?}");
    assert!(r.header("retry-after").is_some_and(|v| v.parse::<u64>().unwrap() >= 1));
    assert_eq!(r.json()["error"], "service_unavailable");

    // The gateway and its other routes are unaffected.
    let echo = get(gw.addr, "/anything");
    assert_eq!((echo.status, backend_of(&echo).as_str()), (200, "echo"));
    assert_eq!(get(gw.addr, "/health").status, 200);
    let ready = get(gw.admin, "/ready");
    assert_eq!(ready.status, 503);
    assert!(ready.json()["missing"].as_array().unwrap().iter().any(|m| m == "nats: disconnected"), "{}", ready.json());
    // Several refusals in a row stay fast (no pile-up behind the dead connection).
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(submit(&gw, "{}").status, 503);
        assert!(t.elapsed() <= ACK_TIMEOUT + Duration::from_secs(1));
    }

    nats.restart();
    let restarted = Instant::now();
    let mut recovered = None;
    while restarted.elapsed() < Duration::from_secs(10) {
        let r = submit(&gw, r#"{"after": 1}"#);
        if r.status == 202 {
            recovered = Some(r.json()["job_id"].as_str().unwrap().to_string());
            break;
        }
        assert_eq!(r.status, 503);
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = recovered.unwrap_or_else(|| panic!("no 202 within 10 s of the restart:\n{}", gw.logs()));
    accepted.push(id);
    wait_ready(&gw);

    let stored: HashSet<String> = nats.messages("JOBS").iter().map(|m| m.headers["Nats-Msg-Id"].clone()).collect();
    for id in &accepted {
        assert!(stored.contains(id), "202'd job {id} missing after the restart");
    }
    assert!(metric_of(&gw, "siger_jobs_failed_total{reason=\"nats_disconnected\"}") >= 6.0);
    assert_eq!(
        metric_of(&gw, "siger_jobs_failed_total{reason=\"invalid_request\"}"),
        0.0,
        "counted once, by its reason"
    );
}

#[test]
fn frozen_nats_times_out_within_ack_timeout_and_a_keyed_retry_stays_exactly_once() {
    let mut nats = NatsServer::start();
    let (_echo, gw) = start(&nats);
    let alice = token("alice", &["user"]);
    nats.pause();
    let started = Instant::now();
    let r = submit_with(&gw, &alice, br#"{"frozen": true}"#, &[("Idempotency-Key", "frozen-1")]);
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(took <= ACK_TIMEOUT + Duration::from_secs(1), "no hang beyond ack_timeout: {took:?}");
    assert!(r.json()["message"].as_str().unwrap().contains("Idempotency-Key"));
    assert!(r.header("retry-after").is_some());
    assert_eq!(get(gw.addr, "/other").status, 200, "proxying is unaffected");
    nats.resume();

    // The timed-out publish may have been stored after all; the retry must not add a second one.
    let ok = eventually(Duration::from_secs(10), || {
        submit_with(&gw, &alice, br#"{"frozen": true}"#, &[("Idempotency-Key", "frozen-1")]).status == 202
    });
    assert!(ok);
    let stored = nats.messages("JOBS");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(metric_of(&gw, "siger_jobs_failed_total{reason=\"ack_timeout\"}"), 1.0);
    assert_eq!(
        metric_of(&gw, "siger_jobs_failed_total{reason=\"invalid_request\"}"),
        0.0,
        "counted once, by its reason"
    );
}

#[test]
fn nats_down_at_start_up_then_arriving() {
    let port = free_port();
    let echo = Echo::start("echo");
    let gw = Gateway::start(&config(&format!("nats://127.0.0.1:{port}"), echo.addr, "", ""));
    assert_eq!(get(gw.admin, "/health").status, 200, "siger starts without NATS");
    let ready = get(gw.admin, "/ready");
    assert_eq!(ready.status, 503);
    assert!(ready.json()["missing"].as_array().unwrap().iter().any(|m| m == "nats: disconnected"));
    let t = Instant::now();
    assert_eq!(submit(&gw, "{}").status, 503);
    assert!(t.elapsed() < ACK_TIMEOUT + Duration::from_secs(1));
    assert_eq!(get(gw.addr, "/x").status, 200);

    let nats = NatsServer::start_on(port, &[]);
    wait_ready(&gw);
    assert_eq!(submit(&gw, "{}").status, 202);
    let config = nats.stream_config("JOBS").expect("stream created at bootstrap");
    assert_eq!(config.storage, async_nats::jetstream::stream::StorageType::File);
    assert_eq!(config.duplicate_window, Duration::from_secs(120));
    assert_eq!(config.max_age, Duration::from_secs(7 * 86_400));
    assert_eq!(config.subjects, ["jobs.>"]);
    assert!(eventually(Duration::from_secs(5), || gw.logs().contains("jobs stream JOBS: created")));
}

#[test]
fn an_existing_stream_that_differs_is_reported_and_left_unchanged() {
    let nats = NatsServer::start();
    nats.create_stream(async_nats::jetstream::stream::Config {
        name: "JOBS".into(),
        subjects: vec!["jobs.>".into()],
        storage: async_nats::jetstream::stream::StorageType::Memory,
        max_age: Duration::from_secs(3600),
        duplicate_window: Duration::from_secs(60),
        ..Default::default()
    });
    let echo = Echo::start("echo");
    let gw = Gateway::start(&config(&nats.url(), echo.addr, "", ""));
    let reported = eventually(Duration::from_secs(10), || {
        let r = get(gw.admin, "/ready");
        r.status == 503
            && r.json()["missing"].as_array().unwrap().iter().any(|m| {
                m.as_str().is_some_and(|m| {
                    m.starts_with("jobs stream JOBS: differs") && m.contains("storage is memory (config: file)")
                })
            })
    });
    assert!(reported, "{}", ready_body(&gw));
    let missing = ready_body(&gw)["missing"].to_string();
    assert!(
        missing.contains("max_age is 1h (config: 7d)") && missing.contains("duplicate_window is 1m (config: 2m)"),
        "{missing}"
    );
    assert!(eventually(Duration::from_secs(5), || gw.logs().contains("left unchanged")), "{}", gw.logs());
    let config = nats.stream_config("JOBS").unwrap();
    assert_eq!(config.storage, async_nats::jetstream::stream::StorageType::Memory, "never silently changed");
    assert_eq!(config.max_age, Duration::from_secs(3600));
    // It still captures the subject, so jobs are accepted (the operator decides what to do).
    assert_eq!(submit(&gw, "{}").status, 202);
}

#[test]
fn nats_user_password_and_token_credentials() {
    let nats = NatsServer::start_with(&["--user", "siger", "--pass", "s3cret-pw"]);
    let echo = Echo::start("echo");
    let gw = Gateway::start(&config(&nats.url(), echo.addr, "  user: siger\n  password: s3cret-pw", ""));
    wait_ready(&gw);
    assert_eq!(submit(&gw, r#"{"auth": "user"}"#).status, 202);
    assert_eq!(nats.messages("JOBS").len(), 1);

    let wrong = Gateway::start(&config(&nats.url(), echo.addr, "  user: siger\n  password: wrong", ""));
    std::thread::sleep(Duration::from_millis(500));
    assert!(ready_body(&wrong)["missing"].as_array().unwrap().iter().any(|m| m == "nats: disconnected"));
    assert_eq!(submit(&wrong, "{}").status, 503);

    let tok = NatsServer::start_with(&["--auth", "nats-token-123"]);
    let gw = Gateway::start(&config(&tok.url(), echo.addr, "  token: nats-token-123", ""));
    wait_ready(&gw);
    assert_eq!(submit(&gw, r#"{"auth": "token"}"#).status, 202);
    assert_eq!(tok.messages("JOBS").len(), 1);
}

#[test]
fn sigterm_drains_the_nats_connection_and_exits_cleanly() {
    let nats = NatsServer::start();
    let echo = Echo::start("echo");
    // Pingora drops the runtimes right after grace_period: the drain happens within it.
    let head = HEAD.replace("grace_period: 0s", "grace_period: 1s");
    let mut gw = Gateway::start_raw(&format!("{head}{}", config(&nats.url(), echo.addr, "", "")));
    wait_ready(&gw);
    for i in 0..3 {
        assert_eq!(submit(&gw, &format!("{{\"i\": {i}}}")).status, 202);
    }
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(15)), Some(0), "{}", gw.logs());
    assert!(gw.logs().contains("nats: drained"), "{}", gw.logs()); // flushed at exit
    assert_eq!(nats.messages("JOBS").len(), 3);
}

#[test]
fn a_job_over_the_servers_max_payload_is_413_not_503() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, "max_payload: 2048\n").unwrap();
    let nats = NatsServer::start_with(&["-c", conf.to_str().unwrap()]);
    let (_echo, gw) = start(&nats);
    let r = submit(&gw, &format!("{{\"pad\": \"{}\"}}", "p".repeat(3000)));
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    let limit: u64 = r.json()["message"].as_str().unwrap().split_whitespace().find_map(|w| w.parse().ok()).unwrap();
    assert!(limit < 2048, "the message names what fits: {limit}");
    assert_eq!(submit(&gw, r#"{"small": true}"#).status, 202);
    assert_eq!(metric_of(&gw, "siger_jobs_failed_total{reason=\"too_large\"}"), 1.0);
}

#[test]
fn a_deleted_stream_gives_503_and_is_recreated() {
    let nats = NatsServer::start();
    let (_echo, gw) = start(&nats);
    assert_eq!(submit(&gw, "{}").status, 202);
    nats.delete_stream("JOBS");
    let r = submit(&gw, r#"{"lost": false}"#);
    assert_eq!(r.status, 503, "no 202 when nothing stores the job");
    assert_eq!(r.json()["error"], "service_unavailable");
    let ok = eventually(Duration::from_secs(10), || submit(&gw, r#"{"again": true}"#).status == 202);
    assert!(ok, "the stream is recreated (jobs.stream.create) without a restart");
    assert!(nats.stream_config("JOBS").is_some());
    assert!(metric_of(&gw, "siger_jobs_failed_total{reason=\"no_stream\"}") >= 1.0);
}

/// Kills a daemonised gateway (by the PID in its pid file) even if the test fails.
struct Daemon(std::path::PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[test]
fn daemonised_gateway_connects_after_the_fork() {
    let nats = NatsServer::start();
    let echo = Echo::start("echo");
    let dir = tempfile::tempdir().unwrap();
    let (addr, admin): (SocketAddr, SocketAddr) =
        (format!("127.0.0.1:{}", free_port()).parse().unwrap(), format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let text = render(&format!("{HEAD}{}", config(&nats.url(), echo.addr, "", "")), addr, admin, dir.path());
    let conf = dir.path().join("siger.yaml");
    std::fs::write(&conf, text).unwrap();
    let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let status = std::process::Command::new(SIGER).arg("-d").arg("-c").arg(&conf).stderr(log).status().unwrap();
    assert!(status.success(), "the launcher exits 0 after forking");
    let _daemon = Daemon(dir.path().join("siger.pid"));
    let ready = eventually(Duration::from_secs(15), || http_get_status(admin, "/ready") == Some(200));
    let logs = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(ready, "the daemon's NATS client connected after the fork:\n{}", logs());
    let r = request(
        addr,
        "POST",
        "/jobs/submit",
        &[("Authorization", &token("alice", &["user"])), ("Content-Type", "application/json")],
        br#"{"daemon": true}"#,
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(nats.messages("JOBS").len(), 1);
}

#[test]
fn submissions_share_the_routes_rate_limits() {
    let nats = NatsServer::start();
    let echo = Echo::start("echo");
    let text = config(&nats.url(), echo.addr, "", "")
        .replace("  ack_timeout: 1s\n", "  ack_timeout: 1s\n  rate_limit: {requests: 2, per: 1m, key: consumer}\n");
    let gw = Gateway::start(&text);
    wait_ready(&gw);
    let statuses: Vec<u16> = (0..3).map(|_| submit(&gw, "{\"n\": 1}").status).collect();
    assert_eq!(statuses, [202, 202, 429]);
    let r = submit(&gw, "{}");
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.json()["error"], "rate_limited");
    // Another user has a bucket of its own.
    assert_eq!(submit_with(&gw, &token("bob", &["user"]), b"{}", &[]).status, 202);
    assert_eq!(metric_of(&gw, "siger_rate_limited_total{route=\"/jobs/submit\"}"), 2.0);
}

#[test]
fn job_payloads_are_checked_against_jobs_schema() {
    let nats = NatsServer::start();
    let echo = Echo::start("echo");
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("job.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "required": ["kind"], "properties": {"kind": {"enum": ["resize", "transcode"]}}}"#,
    )
    .unwrap();
    let text = config(&nats.url(), echo.addr, "", "")
        .replace("  ack_timeout: 1s\n", &format!("  ack_timeout: 1s\n  schema: {}\n", schema.display()));
    let gw = Gateway::start(&text);
    wait_ready(&gw);
    assert_eq!(submit(&gw, r#"{"kind": "resize", "w": 100}"#).status, 202);
    let r = submit(&gw, r#"{"kind": "delete-everything"}"#);
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("bad_request")));
    assert!(r.json()["message"].as_str().unwrap().contains("/kind"), "{}", r.json());
    let r = submit(&gw, r#"{"w": 1}"#);
    assert_eq!(r.status, 400, "{}", r.json());
    // Strict JSON as on validating routes: a consumer reading the first `kind` would run a
    // job the schema never saw; a decimal consumer reads more than a double holds.
    let r = submit(&gw, r#"{"kind": "delete-everything", "kind": "resize"}"#);
    assert_eq!(r.status, 400, "{}", r.json());
    assert!(r.json()["message"].as_str().unwrap().contains("duplicate name at `/kind`"), "{}", r.json());
    let r = submit(&gw, r#"{"kind": "resize", "w": 100.0000000000000001}"#);
    assert_eq!(r.status, 400, "{}", r.json());
    assert!(r.json()["message"].as_str().unwrap().contains("/w"), "{}", r.json());
}

#[test]
fn a_job_carries_the_trace_context_to_its_consumer() {
    let nats = NatsServer::start();
    let otlp = support::otlp::OtlpReceiver::start();
    let echo = Echo::start("echo");
    let tracing = format!("tracing: {{otlp_endpoint: \"{}\", sample_ratio: 0.0}}\n", otlp.endpoint());
    let gw = Gateway::start(&format!("{tracing}{}", config(&nats.url(), echo.addr, "", "")));
    wait_ready(&gw);
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let parent = format!("00-{trace}-b7ad6b7169203331-01");
    let r = submit_with(
        &gw,
        &token("alice", &["user"]),
        br#"{"image": "x"}"#,
        &[("traceparent", &parent), ("tracestate", "vendor=1")],
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let stored = nats.messages("JOBS");
    assert_eq!(stored.len(), 1);
    let sent = stored[0].headers.get("traceparent").expect("traceparent header on the message");
    assert!(sent.starts_with(&format!("00-{trace}-")) && sent.ends_with("-01"), "{sent}");
    assert_eq!(stored[0].headers.get("tracestate").map(String::as_str), Some("vendor=1"));
    // The consumer continues from the gateway's server span.
    let server_span = &sent[36..52];
    let ok = eventually(Duration::from_secs(10), || {
        otlp.trace(trace).iter().any(|s| s.span_id() == server_span && s.parent_span_id() == "b7ad6b7169203331")
    });
    assert!(ok, "{:?}", otlp.trace(trace));
}
