//! Shared rate limits without a single Redis (ARCHITECTURE.md §7.7), against real processes:
//! a master, a replica and three `redis-server --sentinel` on loopback (the master is killed and
//! the sentinels fail over), and a three-master Redis Cluster made with `redis-cli --cluster`.
//! Two gateways share each limit. And one server over TLS with a password.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use support::redis_server::RedisServer;
use support::*;

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

fn node_in_use(gw: &Gateway) -> Option<String> {
    let text = scrape(gw);
    text.lines()
        .find(|l| l.starts_with("siger_rate_limit_redis_node{") && l.ends_with(" 1"))
        .and_then(|l| l.split('"').nth(1).map(String::from))
}

#[test]
fn limits_stay_shared_through_a_sentinel_failover() {
    let mut master = RedisServer::start();
    let replica_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let replica = RedisServer::start_with(
        replica_addr,
        &["--replicaof".into(), "127.0.0.1".into(), master.addr.port().to_string()],
    );
    let sentinels: Vec<RedisServer> = (0..3).map(|_| RedisServer::sentinel(master.addr, "siger")).collect();
    assert!(
        eventually(Duration::from_secs(15), || sentinels
            .iter()
            .all(|s| s.command("SENTINEL ckquorum siger").starts_with("+OK"))),
        "sentinels never agreed: {}",
        sentinels[0].command("SENTINEL ckquorum siger")
    );
    let list: Vec<String> = sentinels.iter().map(|s| format!("\"{}\"", s.addr)).collect();
    let echo = Echo::start("api");
    let (gw1, gw2) =
        gateways(&echo, &format!("{{sentinels: [{}], master_name: siger, timeout: 100ms}}", list.join(", ")));

    let before = admitted((&gw1, &gw2), "before", 60);
    assert!((30..=33).contains(&before), "admitted {before} of 60 for a limit of 30 across two gateways");
    assert_eq!(node_in_use(&gw1), Some(master.addr.to_string()));

    // The master dies; the sentinels promote the replica.
    master.kill();
    let killed = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut refused = 0;
    let mut resumed = None;
    let mut i = 0;
    while killed.elapsed() < Duration::from_secs(20) {
        i += 1;
        let gw = if i % 2 == 0 { &gw1 } else { &gw2 };
        let started = Instant::now();
        let r = get_with(gw.addr, "/x", &[("X-Client", &format!("during-{i}"))]);
        slowest = slowest.max(started.elapsed());
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
        std::thread::sleep(Duration::from_millis(20));
    }
    let resumed = resumed.expect("shared limiting never resumed");
    eprintln!("failover: shared limiting resumed {resumed:?} after the kill; {refused} requests refused 503 (on_store_error: deny) of {i}; slowest request {slowest:?}");
    // Down after 1 s, failover within the sentinels' timeout (3 s), plus 2 s.
    assert!(resumed < Duration::from_secs(6), "resumed {resumed:?} after the kill");
    assert!(refused > 0, "the store was unavailable for a while");
    assert!(slowest < Duration::from_millis(600), "a request stalled {slowest:?} (store timeout 100 ms)");
    assert!(eventually(Duration::from_secs(5), || node_in_use(&gw1) == Some(replica.addr.to_string())));
    assert!(eventually(Duration::from_secs(5), || node_in_use(&gw2) == Some(replica.addr.to_string())));

    let after = admitted((&gw1, &gw2), "after", 60);
    assert!((30..=33).contains(&after), "admitted {after} of 60 after the failover");
    assert!(metric_of(&gw1, "siger_rate_limit_store_errors_total") > 0.0);
}

#[test]
fn limits_are_shared_across_a_redis_cluster() {
    let nodes: Vec<RedisServer> = (0..3)
        .map(|_| {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            RedisServer::start_with(
                addr,
                &[
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    format!("nodes-{}.conf", addr.port()),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ],
            )
        })
        .collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
    assert!(eventually(Duration::from_secs(15), || nodes
        .iter()
        .all(|n| n.command("CLUSTER INFO").contains("cluster_state:ok"))));
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let echo = Echo::start("api");
    let (gw1, gw2) = gateways(&echo, &format!("{{cluster_nodes: [{}], timeout: 200ms}}", list.join(", ")));

    for client in 0..12 {
        let n = admitted((&gw1, &gw2), &format!("client-{client}"), 40);
        assert!((30..=33).contains(&n), "client-{client}: admitted {n} of 40 for a limit of 30");
    }
    // The limits' keys are spread over the cluster's slots.
    let holding = nodes.iter().filter(|n| !n.command("DBSIZE").starts_with(":0")).count();
    assert!(holding >= 2, "keys on {holding} of 3 masters");
    assert_eq!(node_in_use(&gw1).as_deref(), Some("cluster"));
    assert_eq!(metric_of(&gw1, "siger_rate_limit_store_errors_total"), 0.0);
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
