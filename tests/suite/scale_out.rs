//! Shared rate limits without a single Redis (ARCHITECTURE.md §7.7), against real processes:
//! a master, a replica and three `redis-server --sentinel` on loopback (the master is killed and
//! the sentinels fail over), and a three-master Redis Cluster made with `redis-cli --cluster`.
//! Two gateways share each limit. And one server over TLS with a password.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::support::redis_server::{RedisCluster, RedisServer};
use crate::support::*;
use std::time::{Duration, Instant};

/// Two gateways sharing a 30 per 10 s limit per `X-Client`, through the `redis` section given.
fn gateways(echo: &Echo, redis: &str) -> (Gateway, Gateway) {
    let config = format!(
        "rate_limit:\n  store: redis\n  redis: {redis}\n  on_store_error: deny\n  default: {{requests: 30, per: 10s, key: \"header:X-Client\"}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api, auth: public}}\n",
        echo.addr
    );
    (Gateway::start(&config), Gateway::start(&config))
}

/// `n` requests for `client`, alternating between the gateways: how many were admitted.
fn admitted(gws: (&Gateway, &Gateway), client: &str, n: usize) -> usize {
    (0..n)
        .filter(|i| {
            let gw = if i % 2 == 0 { gws.0 } else { gws.1 };
            let r = get_with(gw.addr, "/x", &[("X-Client", client)]);
            assert!(
                r.status == 200 || r.status == 429,
                "{} {}\n{}",
                r.status,
                String::from_utf8_lossy(&r.body),
                gw.logs()
            );
            r.status == 200
        })
        .count()
}

/// Wait until each gateway's store answers (its first check connects, which on a busy machine
/// can take longer than the store timeout), on a client key of its own.
fn warm_up(gws: &[&Gateway]) {
    for gw in gws {
        let ready = eventually(Duration::from_secs(15), || {
            get_with(gw.addr, "/x", &[("X-Client", "warm-up")]).status == 200 && node_in_use(gw).is_some()
        });
        assert!(ready, "the store never answered:\n{}", gw.logs());
    }
}

fn node_in_use(gw: &Gateway) -> Option<String> {
    let text = scrape(gw);
    text.lines()
        .find(|l| l.starts_with("siger_rate_limit_redis_node{") && l.ends_with(" 1"))
        .and_then(|l| l.split('"').nth(1).map(String::from))
}

/// A master, its replica and three sentinels (quorum 2) that agree on the master `siger`.
pub(crate) fn sentinel_deployment() -> (RedisServer, RedisServer, Vec<RedisServer>) {
    let master = RedisServer::start();
    let replica =
        RedisServer::start_with_own_port(&["--replicaof".into(), "127.0.0.1".into(), master.addr.port().to_string()]);
    let sentinels: Vec<RedisServer> = (0..3).map(|_| RedisServer::sentinel(master.addr, "siger")).collect();
    assert!(
        eventually(Duration::from_secs(15), || sentinels
            .iter()
            .all(|s| s.command("SENTINEL ckquorum siger").starts_with("+OK"))),
        "sentinels never agreed: {}",
        sentinels[0].command("SENTINEL ckquorum siger")
    );
    (master, replica, sentinels)
}

/// The `redis` section for `sentinels` with a check timeout of `timeout`.
pub(crate) fn sentinel_settings(sentinels: &[RedisServer], timeout: &str) -> String {
    let list: Vec<String> = sentinels.iter().map(|s| format!("\"{}\"", s.addr)).collect();
    format!("{{sentinels: [{}], master_name: siger, timeout: {timeout}}}", list.join(", "))
}

#[test]
fn limits_stay_shared_through_a_sentinel_failover() {
    let _measuring = exclusive();
    let (mut master, replica, sentinels) = sentinel_deployment();
    let echo = Echo::start("api");
    let (gw1, gw2) = gateways(&echo, &sentinel_settings(&sentinels, "100ms"));
    warm_up(&[&gw1, &gw2]);

    let before = admitted((&gw1, &gw2), "before", 60);
    assert!((30..=33).contains(&before), "admitted {before} of 60 for a limit of 30 across two gateways");
    assert_eq!(node_in_use(&gw1), Some(master.addr.to_string()));

    // The master dies; the sentinels promote the replica.
    master.kill();
    let killed = Instant::now();
    let mut took = Vec::new();
    let mut refused = 0;
    let mut resumed = None;
    let mut i = 0;
    while killed.elapsed() < Duration::from_secs(20) {
        i += 1;
        let gw = if i % 2 == 0 { &gw1 } else { &gw2 };
        let started = Instant::now();
        let r = get_with(gw.addr, "/x", &[("X-Client", &format!("during-{i}"))]);
        took.push(started.elapsed());
        match r.status {
            200 => {
                if resumed.is_none() {
                    resumed = Some(killed.elapsed());
                }
            }
            // `on_store_error: deny`, and nothing else.
            503 => {
                assert!(String::from_utf8_lossy(&r.body).contains("rate limit store unavailable"));
                refused += 1;
                resumed = None;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&r.body)),
        }
        if resumed.is_some_and(|at| killed.elapsed() > at + Duration::from_secs(1)) {
            break;
        }
        // Pacing of the measuring loop: every request is a sample.
        std::thread::sleep(Duration::from_millis(20));
    }
    let resumed = resumed.expect("shared limiting never resumed");
    let slowest = took.iter().max().copied().unwrap_or_default();
    eprintln!("failover: shared limiting resumed {resumed:?} after the kill; {refused} requests refused 503 (on_store_error: deny) of {i}; slowest request {slowest:?}");
    // Down after 1 s, failover within the sentinels' timeout (3 s), plus 2 s.
    assert!(resumed < Duration::from_secs(6), "resumed {resumed:?} after the kill");
    assert!(refused > 0, "the store was unavailable for a while");
    // No request waits out the failover (store timeout 100 ms): a stall would hold every
    // request of those seconds; a busy machine makes one in fifty slow at most.
    let stalled = slower_than(&took, Duration::from_millis(600));
    assert!(stalled <= took.len() / 50, "{stalled} of {} requests over 600 ms (slowest {slowest:?})", took.len());
    assert!(eventually(Duration::from_secs(5), || node_in_use(&gw1) == Some(replica.addr.to_string())));
    assert!(eventually(Duration::from_secs(5), || node_in_use(&gw2) == Some(replica.addr.to_string())));

    let after = admitted((&gw1, &gw2), "after", 60);
    assert!((30..=33).contains(&after), "admitted {after} of 60 after the failover");
    assert!(metric_of(&gw1, "siger_rate_limit_store_errors_total") > 0.0);
}

/// Two gateways idle through a failover, then a burst: counted exactly on the new master.
/// `planned`: `SENTINEL FAILOVER` demotes the live master (checks there fail read-only);
/// otherwise the master is killed (the connection to it is dead).
fn idle_gateways_count_on_the_new_master_at_once(planned: bool) {
    let (mut master, replica, sentinels) = sentinel_deployment();
    let echo = Echo::start("api");
    // `allow`: a check that fails lets the request through uncounted, so any failed check after
    // the failover shows as over-admission. A 1 h window: no boundary falls inside a burst.
    let config = format!(
        "rate_limit:\n  store: redis\n  redis: {}\n  on_store_error: allow\n  default: {{requests: 30, per: 1h, key: \"header:X-Client\"}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api, auth: public}}\n",
        sentinel_settings(&sentinels, "250ms"),
        echo.addr
    );
    let (gw1, gw2) = (Gateway::start(&config), Gateway::start(&config));
    warm_up(&[&gw1, &gw2]);
    let errors = |gw: &Gateway| metric_of(gw, "siger_rate_limit_store_errors_total");
    let errors_before = (errors(&gw1), errors(&gw2));
    assert_eq!(admitted((&gw1, &gw2), "before", 60), 30);
    assert_eq!(node_in_use(&gw1), Some(master.addr.to_string()));
    assert_eq!(node_in_use(&gw2), Some(master.addr.to_string()));

    // The sentinels promote the replica while neither gateway has traffic: both still hold a
    // connection to the old master.
    if planned {
        assert!(sentinels[0].command("SENTINEL FAILOVER siger").starts_with("+OK"));
    } else {
        master.kill();
    }
    let promoted = |s: &RedisServer| {
        s.command("SENTINEL get-master-addr-by-name siger").contains(&replica.addr.port().to_string())
    };
    assert!(
        eventually(Duration::from_secs(20), || sentinels.iter().all(promoted)
            && replica.command("ROLE").contains("master")
            && (!planned || master.command("ROLE").contains("slave"))),
        "no failover: {}",
        sentinels[0].command("SENTINEL get-master-addr-by-name siger")
    );

    // The first check of each meets the old master's error, learns the new master and counts there.
    let after = admitted((&gw1, &gw2), "after", 60);
    assert_eq!(after, 30, "admitted {after} of 60 right after the failover (limit 30)\n{}", gw1.logs());
    assert_eq!(node_in_use(&gw1), Some(replica.addr.to_string()));
    assert_eq!(node_in_use(&gw2), Some(replica.addr.to_string()));
    assert_eq!((errors(&gw1), errors(&gw2)), errors_before, "no check failed after the warm-up");
}

#[test]
fn gateways_idle_while_the_master_dies_count_on_the_new_one_at_once() {
    idle_gateways_count_on_the_new_master_at_once(false);
}

#[test]
fn gateways_idle_while_the_master_is_demoted_count_on_the_new_one_at_once() {
    idle_gateways_count_on_the_new_master_at_once(true);
}

/// Scripts the server ran or refused (`EVAL` and `EVALSHA`), from `INFO commandstats`.
fn script_calls(server: &RedisServer) -> u64 {
    server
        .command("INFO commandstats")
        .lines()
        .filter(|l| l.starts_with("cmdstat_eval:") || l.starts_with("cmdstat_evalsha:"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_master_answering_errors_is_asked_once_per_cool_down() {
    let _measuring = exclusive();
    let (master, _replica, sentinels) = sentinel_deployment();
    let echo = Echo::start("api");
    let gw = Gateway::start(&format!(
        "rate_limit:\n  store: redis\n  redis: {}\n  on_store_error: allow\n  default: {{requests: 1000, per: 1h, key: \"header:X-Client\"}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api, auth: public}}\n",
        sentinel_settings(&sentinels, "250ms"),
        echo.addr
    ));
    assert_eq!(get_with(gw.addr, "/x", &[("X-Client", "c")]).status, 200);
    assert_eq!(node_in_use(&gw), Some(master.addr.to_string()));
    // The master stays the master (the sentinels see it answer) but refuses every write.
    assert!(master.command("CONFIG SET maxmemory 1").starts_with("+OK"));
    let before = script_calls(&master);
    let started = Instant::now();
    for _ in 0..60 {
        assert_eq!(get_with(gw.addr, "/x", &[("X-Client", "c")]).status, 200, "on_store_error: allow");
    }
    let took = started.elapsed();
    let calls = script_calls(&master) - before;
    // One failed check per 250 ms cool-down: finding the same master again is no reason to
    // ask it again at once.
    let bound = took.as_millis() as u64 / 250 + 2;
    assert!(calls <= bound, "{calls} scripts in {took:?} against a failing master (at most {bound})");
    assert!(metric_of(&gw, "siger_rate_limit_store_errors_total") >= 60.0);
    assert!(master.command("CONFIG SET maxmemory 0").starts_with("+OK"));
    assert!(eventually(Duration::from_secs(5), || {
        let errors = metric_of(&gw, "siger_rate_limit_store_errors_total");
        get_with(gw.addr, "/x", &[("X-Client", "c")]);
        metric_of(&gw, "siger_rate_limit_store_errors_total") == errors
    }));
}

#[test]
fn limits_are_shared_across_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let nodes = &cluster.nodes;
    let echo = Echo::start("api");
    let (gw1, gw2) = gateways(&echo, &format!("{{cluster_nodes: [{}], timeout: 200ms}}", cluster.node_list()));
    warm_up(&[&gw1, &gw2]);
    let errors_before = metric_of(&gw1, "siger_rate_limit_store_errors_total");

    for client in 0..12 {
        let n = admitted((&gw1, &gw2), &format!("client-{client}"), 40);
        assert!((30..=33).contains(&n), "client-{client}: admitted {n} of 40 for a limit of 30");
    }
    // The limits' keys are spread over the cluster's slots.
    let holding = nodes.iter().filter(|n| !n.command("DBSIZE").starts_with(":0")).count();
    assert!(holding >= 2, "keys on {holding} of 3 masters");
    assert_eq!(node_in_use(&gw1).as_deref(), Some("cluster"));
    assert_eq!(metric_of(&gw1, "siger_rate_limit_store_errors_total"), errors_before, "no check failed");
}

#[test]
fn limits_are_shared_over_tls_with_a_password() {
    let pki = support::pki::Pki::new("redis-test-ca");
    let issued = pki.server("redis", &["127.0.0.1"], 30);
    let server = RedisServer::start_tls(&issued.cert, &issued.key, "s3cret-pw");
    let echo = Echo::start("api");
    let ca = pki.ca().display().to_string();
    let url = format!("rediss://{}", server.addr);
    // The first check makes the connection: a TLS handshake in a debug build takes longer than
    // the default 50 ms.
    let (gw1, gw2) =
        gateways(&echo, &format!("{{url: \"{url}\", password: s3cret-pw, ca_file: \"{ca}\", timeout: 1s}}"));
    let n = admitted((&gw1, &gw2), "tls", 60);
    assert!((30..=33).contains(&n), "admitted {n} of 60 over TLS");
    assert_eq!(node_in_use(&gw1), Some(server.addr.to_string()));
    // A wrong password, or a certificate the gateway cannot verify: the store fails, and
    // `on_store_error: deny` answers.
    let (wrong, _) = gateways(&echo, &format!("{{url: \"{url}\", password: nope, ca_file: \"{ca}\"}}"));
    let (untrusted, _) = gateways(&echo, &format!("{{url: \"{url}\", password: s3cret-pw}}"));
    for gw in [&wrong, &untrusted] {
        let r = get_with(gw.addr, "/x", &[("X-Client", "tls")]);
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert!(metric_of(gw, "siger_rate_limit_store_errors_total") >= 1.0);
    }
}

const JOBS_SECRET: &str = "scale-out-jobs-secret-0123456789abcdef";

fn job_token() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({"sub": "alice", "roles": ["user"], "iat": now, "exp": now + 600});
    let key = jsonwebtoken::EncodingKey::from_secret(JOBS_SECRET.as_bytes());
    format!("Bearer {}", jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap())
}

#[test]
fn jobs_survive_losing_the_stream_leader_of_a_nats_cluster() {
    let _measuring = exclusive();
    let mut nats = support::nats::cluster("nats-server");
    let urls: Vec<String> = nats.iter().map(|n| format!("\"{}\"", n.url())).collect();
    let echo = Echo::start("api");
    let config = format!(
        "auth:\n  jwt: {{algorithms: [HS256], secret: \"{JOBS_SECRET}\"}}\nnats:\n  url: [{}]\njobs:\n  subject: jobs.submitted\n  stream: {{name: JOBS, subjects: [\"jobs.>\"], replicas: 3, duplicate_window: 5m}}\n  roles: [user]\n  ack_timeout: 1s\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api, auth: public}}\n",
        urls.join(", "),
        echo.addr
    );
    let gws = [Gateway::start(&config), Gateway::start(&config)];
    for gw in &gws {
        assert!(
            eventually(Duration::from_secs(30), || get(gw.admin, "/ready").status == 200),
            "not ready: {}",
            String::from_utf8_lossy(&get(gw.admin, "/ready").body)
        );
    }
    assert_eq!(nats[0].stream_config("JOBS").map(|c| c.num_replicas), Some(3));

    // 2,000 jobs from four clients, each retried (same Idempotency-Key, the other gateway)
    // until it gets its 202; the stream leader is killed when 500 are in, restarted 3 s later.
    let token = job_token();
    let accepted = std::sync::Mutex::new(Vec::<(usize, String, Instant)>::new());
    let failures = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let (gws, token, accepted, failures) = (&gws, &token, &accepted, &failures);
            scope.spawn(move || {
                for job in (worker..2000).step_by(4) {
                    let key = format!("job-{job}");
                    let body = format!("{{\"n\": {job}}}");
                    let mut attempt = 0;
                    loop {
                        let gw = &gws[(job + attempt) % 2];
                        let headers = [
                            ("Authorization", token.as_str()),
                            ("Content-Type", "application/json"),
                            ("Idempotency-Key", &key),
                        ];
                        let r = request(gw.addr, "POST", "/jobs/submit", &headers, body.as_bytes());
                        if r.status == 202 {
                            let id = r.json()["job_id"].as_str().unwrap().to_string();
                            accepted.lock().unwrap().push((job, id, Instant::now()));
                            break;
                        }
                        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        attempt += 1;
                        assert!(started.elapsed() < Duration::from_secs(120), "job {job} never accepted");
                        // A client's back-off before it retries.
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            });
        }
        assert!(eventually(Duration::from_secs(60), || accepted.lock().unwrap().len() >= 500));
        let leader = nats[0].stream_leader("JOBS").or_else(|| nats[1].stream_leader("JOBS")).expect("a stream leader");
        let index: usize = leader.trim_start_matches('n').parse().unwrap();
        nats[index].kill();
        eprintln!("killed the stream leader {leader} after {} jobs", accepted.lock().unwrap().len());
        // The leader's outage lasts 3 s (the duration is what is checked).
        std::thread::sleep(Duration::from_secs(3));
        nats[index].start_again();
    });

    let mut accepted = accepted.into_inner().unwrap();
    assert_eq!(accepted.len(), 2000);
    accepted.sort_by_key(|(_, _, at)| *at);
    let longest_gap = accepted.windows(2).map(|w| w[1].2 - w[0].2).max().unwrap();
    let failed = failures.into_inner();
    eprintln!(
        "2000 jobs in {:?}; {failed} submissions answered 503 and retried; longest gap between 202s {longest_gap:?}",
        started.elapsed()
    );
    assert!(longest_gap < Duration::from_secs(10), "submissions stalled {longest_gap:?}");

    // Every accepted job is stored exactly once.
    let live = nats.iter().position(|n| n.stream_leader("JOBS").is_some()).unwrap_or(0);
    let stored = nats[live].messages("JOBS");
    let mut ids: Vec<&str> = stored.iter().map(|m| m.headers["Nats-Msg-Id"].as_str()).collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "{} duplicates in the stream", before - ids.len());
    for (job, id, _) in &accepted {
        assert!(ids.binary_search(&id.as_str()).is_ok(), "job {job} ({id}) got 202 but is not in the stream");
    }
    assert_eq!(stored.len(), 2000);
}
