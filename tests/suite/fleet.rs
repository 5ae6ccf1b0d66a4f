//! One configuration for a fleet (docs/fleet.md): three real gateways follow a document in a
//! JetStream key-value bucket on a real three-node NATS cluster (the key-value capable
//! nats-server of tests/support/nats.rs, as the `config_store` tests use).
//!
//! Each push is made with `siger config push` (the operator's command) and each gateway is
//! watched from outside: the new route served, admin `GET /config`'s `source`, `/ready`, the
//! metrics, the status keys `siger config status` reads, the cache file. Cases: a push served by
//! all within 1 s (each measured), a compare-and-set conflict, a rollback, one gateway lacking
//! a certificate the revision names, the stream leader killed during a push, every NATS node
//! down (serving on, a restart from the cache file, readiness), a bucket made anew, an upgrade,
//! and 20 pushes under load (run with `--nocapture` for the `FIGURES` lines).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::nats::{cluster, kv_binary, NatsServer};
use crate::support::pki::Pki;
use crate::support::*;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BUCKET: &str = "cfg";
const KEY: &str = "gw";
/// What the issue promises: a pushed revision is served everywhere within a second.
const WITHIN: Duration = Duration::from_secs(1);

/// A gateway's bootstrap file (a template for [`Gateway::start_raw`]).
fn bootstrap(nats: &[NatsServer], id: &str) -> String {
    let urls: Vec<String> = nats.iter().map(|n| format!("\"{}\"", n.url())).collect();
    format!(
        "{HEAD}nats:\n  url: [{}]\n  connect_timeout: 1s\nconfig_source:\n  nats_kv: {{bucket: {BUCKET}, key: {KEY}, replicas: 3}}\n  cache_file: \"{{{{DIR}}}}/cache.json\"\n  gateway_id: {id}\n",
        urls.join(", ")
    )
}

/// A document: the `echo` service, a route kept by every revision (`/stable`) and `/<name>`,
/// which tells the revisions apart; `extra` is appended (more services).
fn document(echo: &Echo, name: &str, extra: &str) -> String {
    format!(
        "# pushed as {name}\nservices:\n  echo: {{targets: [\"{}\"]}}\n{extra}routes:\n  - {{path: /stable, service: echo, auth: public}}\n  - {{path: /{name}, service: echo, auth: public}}\n",
        echo.addr
    )
}

/// `siger config <args> -c <bootstrap>`: (exit code, stdout and stderr).
fn siger_config(bootstrap: &Path, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(SIGER)
        .arg("config")
        .args(args)
        .arg("-c")
        .arg(bootstrap)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "siger config {args:?} did not finish in 90 s");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut out).unwrap();
    (status.code().unwrap_or(-1), out)
}

/// `siger -t -c <file>`: (exit code, stderr).
fn check(file: &Path) -> (i32, String) {
    let out = Command::new(SIGER).arg("-t").arg("-c").arg(file).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Three gateways following the bucket of a three-node cluster, and the echo backend the
/// documents route to.
struct Fleet {
    nats: Vec<NatsServer>,
    gateways: Vec<Gateway>,
    echo: Echo,
}

impl Fleet {
    /// The cluster and three gateways (`gw-0`…`gw-2`); `prepare` writes files into a gateway's
    /// directory before it starts (its host's files).
    fn start(prepare: impl Fn(usize, &Path)) -> Fleet {
        let nats = cluster(&kv_binary());
        let echo = Echo::start("fleet");
        let gateways = (0..3)
            .map(|i| {
                let template = bootstrap(&nats, &format!("gw-{i}"));
                Gateway::start_placed(&template, |dir, text| {
                    prepare(i, dir);
                    let path = dir.join("siger.yaml");
                    std::fs::write(&path, text).unwrap();
                    path
                })
            })
            .collect();
        Fleet { nats, gateways, echo }
    }

    /// Push `document` (written next to gateway 0's bootstrap file, which the push reads).
    fn push(&self, name: &str, document: &str, extra: &[&str]) -> (i32, String) {
        let gw = &self.gateways[0];
        let file = gw.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, document).unwrap();
        let mut args = vec!["push", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        siger_config(&gw.config_path, &args)
    }

    /// Push the revision that adds `/<name>`, and measure how long each gateway took to serve
    /// it after the push's write was confirmed (the command returned).
    fn push_and_measure(&self, name: &str, deadline: Duration) -> Measured {
        let started = Instant::now();
        let (code, out) = self.push(name, &document(&self.echo, name, ""), &[]);
        assert_eq!(code, 0, "push {name}: {out}");
        let push = started.elapsed();
        Measured { revision: written(&out), push, served: self.time_to_serve(&format!("/{name}"), deadline) }
    }

    /// For each gateway, how long until it answers `path` with 200 (polled every 5 ms from now).
    fn time_to_serve(&self, path: &str, deadline: Duration) -> Vec<Duration> {
        let pushed = Instant::now();
        std::thread::scope(|scope| {
            let waits: Vec<_> = self
                .gateways
                .iter()
                .map(|gw| {
                    scope.spawn(move || loop {
                        if http_get_status(gw.addr, path) == Some(200) {
                            return pushed.elapsed();
                        }
                        assert!(
                            pushed.elapsed() < deadline,
                            "{} does not serve {path} after {deadline:?}:\n{}",
                            gw.config_path.display(),
                            gw.logs()
                        );
                        std::thread::sleep(Duration::from_millis(5));
                    })
                })
                .collect();
            waits.into_iter().map(|w| w.join().unwrap()).collect()
        })
    }

    fn status(&self) -> String {
        let (code, out) = siger_config(&self.gateways[0].config_path, &["status"]);
        assert!(code == 0, "siger config status: {out}");
        out
    }
}

/// The revision a successful push wrote (`cfg/gw: revision N written, …`). Revisions are the
/// bucket stream's sequence numbers, which the gateways' status reports advance too.
fn written(out: &str) -> u64 {
    let after = out.split("revision ").nth(1).unwrap_or_else(|| panic!("no revision in: {out}"));
    after.split(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("no revision in: {out}"))
}

/// One push: how long the command took (its check and the confirmed write), and how long after
/// it returned each gateway served the new route.
#[derive(Debug)]
struct Measured {
    revision: u64,
    push: Duration,
    served: Vec<Duration>,
}

impl Measured {
    /// Applied on all: the slowest gateway.
    fn on_all(&self) -> Duration {
        self.served.iter().copied().max().unwrap_or_default()
    }
}

/// Admin `GET /config`'s `source`.
fn source(gw: &Gateway) -> serde_json::Value {
    get(gw.admin, "/config").json()["source"].clone()
}

fn ready(gw: &Gateway) -> u16 {
    get(gw.admin, "/ready").status
}

fn revision_metric(gw: &Gateway) -> f64 {
    metric_of(gw, &format!("siger_config_source_revision{{bucket=\"{BUCKET}\",key=\"{KEY}\"}}"))
}

#[test]
fn a_push_is_served_by_three_gateways_within_a_second() {
    let _measuring = exclusive();
    let fleet = Fleet::start(|_, _| {});
    for gw in &fleet.gateways {
        // Nothing pushed yet: the bootstrap file alone (no routes), not ready.
        let answer = get(gw.admin, "/ready");
        assert_eq!(answer.status, 503, "{}", String::from_utf8_lossy(&answer.body));
        assert!(
            String::from_utf8_lossy(&answer.body).contains("no configuration applied yet"),
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(http_get_status(gw.addr, "/stable"), Some(404));
        assert_eq!(source(gw)["revision"], serde_json::Value::Null);
    }

    let took = fleet.push_and_measure("v1", Duration::from_secs(10));
    eprintln!("push → served, per gateway: {took:?}");
    for (i, t) in took.served.iter().enumerate() {
        assert!(*t <= WITHIN, "gateway {i} served the pushed route after {t:?}, not within {WITHIN:?}");
    }
    let r1 = took.revision;
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(document(&fleet.echo, "v1", "").as_bytes()));
    for gw in &fleet.gateways {
        assert_eq!(ready(gw), 200);
        assert_eq!(get(gw.admin, "/config").json()["sha256"], digest.as_str(), "the document in force");
        let source = source(gw);
        assert_eq!((source["revision"].as_u64(), source["drift"].as_bool()), (Some(r1), Some(false)), "{source}");
        assert_eq!(source["from_cache"], false);
        // After the swap: the gauge, the cache file, the log line (the log is written in batches).
        let cached = || -> Option<u64> {
            let text = std::fs::read(gw.dir.path().join("cache.json")).ok()?;
            serde_json::from_slice::<serde_json::Value>(&text).ok()?["revision"].as_u64()
        };
        let line = format!("config store cfg/gw: revision {r1} applied");
        assert!(
            eventually(Duration::from_secs(5), || revision_metric(gw) == r1 as f64
                && cached() == Some(r1)
                && gw.logs().contains(&line)),
            "gauge {}, cache file {:?}:\n{}",
            revision_metric(gw),
            cached(),
            gw.logs()
        );
    }
    // A reload (SIGHUP, watch_config, the admin endpoint) merges the bootstrap file read again
    // with the revision in force: the routes stay.
    let gw = &fleet.gateways[2];
    let generation = gw.generation();
    let answer = gw.reload();
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(gw.generation(), generation + 1);
    assert_eq!(http_get_status(gw.addr, "/v1"), Some(200));
    assert_eq!(source(gw)["revision"], r1);
    // Every gateway reported it: `siger config status` sees the fleet in step.
    assert!(
        eventually(Duration::from_secs(10), || {
            let out = fleet.status();
            out.contains("gw-0") && out.contains("gw-1") && out.contains("gw-2") && out.contains("in step")
        }),
        "{}",
        fleet.status()
    );
    let page = String::from_utf8_lossy(&get(fleet.gateways[1].admin, "/").body).into_owned();
    assert!(page.contains(&format!("id=\"source-revision\">{r1}<")), "the status page shows the revision in force");
}

#[test]
fn of_two_pushes_against_the_same_revision_the_fleet_serves_the_one_that_won() {
    let fleet = Fleet::start(|_, _| {});
    let r1 = fleet.push_and_measure("v1", Duration::from_secs(10)).revision;
    let read = r1.to_string();
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| fleet.push("a", &document(&fleet.echo, "a", ""), &["--expect-revision", &read]));
        let b = scope.spawn(|| fleet.push("b", &document(&fleet.echo, "b", ""), &["--expect-revision", &read]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (winner, loser, won, lost) = match (a.0, b.0) {
        (0, 1) => ("/a", "/b", a.1, b.1),
        (1, 0) => ("/b", "/a", b.1, a.1),
        _ => panic!("one push wins, one is told it lost:\n{a:?}\n{b:?}"),
    };
    assert!(lost.contains(&format!("not at revision {r1} this push was made against")), "{lost}");
    assert!(lost.contains("nothing was written"), "{lost}");
    let r2 = written(&won);
    fleet.time_to_serve(winner, Duration::from_secs(10));
    for gw in &fleet.gateways {
        assert_eq!(http_get_status(gw.addr, loser), Some(404), "the losing push is nowhere");
        assert_eq!(source(gw)["revision"], r2);
    }
}

#[test]
fn a_rollback_is_served_by_every_gateway() {
    let _measuring = exclusive();
    let fleet = Fleet::start(|_, _| {});
    let r1 = fleet.push_and_measure("v1", Duration::from_secs(10)).revision;
    fleet.push_and_measure("v2", Duration::from_secs(10));
    let (code, out) = siger_config(&fleet.gateways[0].config_path, &["rollback", &r1.to_string()]);
    assert_eq!(code, 0, "{out}");
    let r3 = written(&out);
    let took = fleet.time_to_serve("/v1", Duration::from_secs(10));
    eprintln!("rollback → served, per gateway: {took:?}");
    assert!(took.iter().all(|t| *t <= WITHIN), "{took:?}");
    for gw in &fleet.gateways {
        // Revision 1's document written again as revision 3: /v2 is gone.
        assert!(eventually(Duration::from_secs(5), || http_get_status(gw.addr, "/v2") == Some(404)));
        assert_eq!(source(gw)["revision"], r3);
    }
}

#[test]
fn a_gateway_missing_a_certificate_refuses_and_reports_while_the_others_apply() {
    let pki = Pki::new("fleet upstream CA");
    // Gateways 0 and 1 hold the CA file the second revision names; gateway 2's host lacks it.
    let fleet = Fleet::start(|i, dir| {
        if i < 2 {
            std::fs::create_dir_all(dir.join("certs")).unwrap();
            std::fs::copy(pki.ca(), dir.join("certs/ca.pem")).unwrap();
        }
    });
    let r1 = fleet.push_and_measure("v1", Duration::from_secs(10)).revision;
    let secure = format!("  secure: {{targets: [\"{}\"], tls: {{ca: certs/ca.pem}}}}\n", fleet.echo.addr);
    let (code, out) = fleet.push("v2", &document(&fleet.echo, "v2", &secure), &[]);
    assert_eq!(code, 0, "{out}");
    let r2 = written(&out);
    let (applied, refused) = fleet.gateways.split_at(2);
    for gw in applied {
        assert!(eventually(WITHIN * 10, || http_get_status(gw.addr, "/v2") == Some(200)), "{}", gw.logs());
    }
    let gw = &refused[0];
    assert!(
        eventually(Duration::from_secs(10), || source(gw)["refused"]["revision"] == r2),
        "gateway 2 refuses revision {r2}: {}",
        source(gw)
    );
    let source = source(gw);
    let errors = source["refused"]["errors"].to_string();
    assert!(errors.contains(&format!("cfg/gw revision {r2}")) && errors.contains("certs/ca.pem"), "{errors}");
    assert!(errors.contains("services.secure.tls.ca"), "names the key: {errors}");
    assert_eq!((source["revision"].as_u64(), source["drift"].as_bool()), (Some(r1), Some(true)), "{source}");
    // It keeps serving revision 1, ready.
    assert_eq!(http_get_status(gw.addr, "/v1"), Some(200));
    assert_eq!(http_get_status(gw.addr, "/v2"), Some(404));
    assert_eq!(ready(gw), 200);
    let line = format!("revision {r2} refused; revision {r1} keeps serving");
    assert!(eventually(Duration::from_secs(5), || gw.logs().contains(&line)), "{}", gw.logs());
    let refusals = format!("siger_config_source_refused_total{{bucket=\"{BUCKET}\",key=\"{KEY}\"}}");
    assert_eq!(metric_of(gw, &refusals), 1.0);
    assert_eq!(metric_of(&applied[0], &refusals), 0.0);
    assert_eq!(revision_metric(gw), r1 as f64);
    // The store shows it: gateway 2 refused, with the file, and the fleet drifts.
    assert!(
        eventually(Duration::from_secs(10), || {
            let out = fleet.status();
            out.contains("refused") && out.contains("certs/ca.pem") && out.contains("drift")
        }),
        "{}",
        fleet.status()
    );
}

#[test]
fn a_revision_needing_a_restart_or_not_valid_is_refused_by_every_gateway_which_keeps_serving() {
    let fleet = Fleet::start(|_, _| {});
    let r1 = fleet.push_and_measure("v1", Duration::from_secs(10)).revision;
    // Valid (push checks it as -t does), but only a new process can change the read buffer.
    let restart = format!("limits: {{read_buffer: 8KiB}}\n{}", document(&fleet.echo, "v2", ""));
    let (code, out) = fleet.push("v2", &restart, &[]);
    assert_eq!(code, 0, "{out}");
    let r2 = written(&out);
    // Not a document at all, written behind `push`'s back.
    let r3 = fleet.nats[0].with_js(async |js| {
        let kv = js.get_key_value(BUCKET).await.unwrap();
        kv.put(KEY, "routes: [\n".into()).await.unwrap()
    });
    for gw in &fleet.gateways {
        assert!(eventually(Duration::from_secs(10), || source(gw)["refused"]["revision"] == r3), "{}", source(gw));
        let line = format!("revision {r2} refused; revision {r1} keeps serving");
        assert!(eventually(Duration::from_secs(5), || gw.logs().contains(&line)), "{}", gw.logs());
        assert!(gw.logs().contains("limits.read_buffer: changed; applies only to a new process"), "{}", gw.logs());
        let errors = source(gw)["refused"]["errors"].to_string();
        assert!(errors.contains(&format!("cfg/gw revision {r3}")) && errors.contains("not valid YAML"), "{errors}");
        assert_eq!(source(gw)["revision"], r1);
        assert_eq!(http_get_status(gw.addr, "/v1"), Some(200));
        assert_eq!(http_get_status(gw.addr, "/v2"), Some(404));
        assert_eq!(ready(gw), 200);
    }
}

#[test]
fn a_push_while_the_stream_leader_is_killed_reaches_every_gateway() {
    let mut fleet = Fleet::start(|_, _| {});
    fleet.push_and_measure("v1", Duration::from_secs(10));
    let leader = fleet.nats.iter().find_map(|n| n.stream_leader("KV_cfg")).expect("a stream leader");
    let index: usize = leader.trim_start_matches('n').parse().unwrap();
    fleet.nats[index].kill();
    eprintln!("killed the bucket's stream leader {leader}");
    let took = fleet.push_and_measure("v2", Duration::from_secs(30));
    eprintln!("push with the leader lost → served, per gateway: {took:?}");
    fleet.nats[index].start_again();
    for gw in &fleet.gateways {
        assert_eq!(source(gw)["revision"], took.revision);
        assert_eq!(http_get_status(gw.addr, "/v1"), Some(404));
    }
    // And the next push after the old leader is back.
    fleet.push_and_measure("v3", Duration::from_secs(30));
}

#[test]
fn with_every_nats_node_down_gateways_keep_serving_and_a_restart_starts_from_the_cache_file() {
    let mut fleet = Fleet::start(|_, _| {});
    let r1 = fleet.push_and_measure("v1", Duration::from_secs(10)).revision;
    for n in fleet.nats.iter_mut() {
        n.kill();
    }
    let connected = format!("siger_config_source_connected{{bucket=\"{BUCKET}\",key=\"{KEY}\"}}");
    for gw in &fleet.gateways {
        assert!(eventually(Duration::from_secs(20), || metric_of(gw, &connected) == 0.0), "{}", scrape(gw));
    }
    // An outage changes nothing: same revision, same routes, ready.
    for _ in 0..20 {
        for gw in &fleet.gateways {
            assert_eq!(http_get_status(gw.addr, "/v1"), Some(200));
            assert_eq!(ready(gw), 200);
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // A gateway restarted during the outage starts from its cache file, ready.
    let gw = &mut fleet.gateways[0];
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)).is_some());
    gw.spawn(&[], &[]);
    assert!(eventually(Duration::from_secs(10), || ready(gw) == 200), "{}", gw.logs());
    assert_eq!(http_get_status(gw.addr, "/v1"), Some(200));
    let source0 = source(gw);
    assert_eq!((source0["revision"].as_u64(), source0["from_cache"].as_bool()), (Some(r1), Some(true)), "{source0}");
    let line = format!("serving revision {r1} from the cache file");
    assert!(eventually(Duration::from_secs(5), || gw.logs().contains(&line)), "{}", gw.logs());
    assert!(gw.logs().contains("unreachable at start-up"), "{}", gw.logs());

    // `-t` checks the bootstrap file and the cache file's revision, without the store.
    let (code, out) = check(&gw.config_path);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("the cache file's revision {r1} OK")), "{out}");

    // A new gateway with no cache file serves nothing and is not ready until the store is back.
    let newcomer = Gateway::start_raw(&bootstrap(&fleet.nats, "gw-new"));
    assert_eq!(ready(&newcomer), 503);
    assert_eq!(http_get_status(newcomer.addr, "/v1"), Some(404));

    for n in fleet.nats.iter_mut() {
        n.start_again();
    }
    // The restarted gateway's revision from the cache file is confirmed by the store.
    let gw = &fleet.gateways[0];
    assert!(eventually(Duration::from_secs(30), || source(gw)["from_cache"] == false), "{}", source(gw));
    assert_eq!(source(gw)["drift"], false);
    // Back: the newcomer takes the store's revision 1 (it had none), everyone takes the next push.
    assert!(eventually(Duration::from_secs(30), || ready(&newcomer) == 200), "{}", newcomer.logs());
    fleet.gateways.push(newcomer);
    let took = fleet.push_and_measure("v2", Duration::from_secs(30));
    eprintln!("first push after the outage → served, per gateway: {took:?}");
    for gw in &fleet.gateways {
        // Each revision applied once: the watch resumed after the last one seen.
        let applied = |r: u64| gw.logs().matches(&format!("revision {r} applied (")).count();
        assert!(eventually(Duration::from_secs(5), || applied(took.revision) == 1), "{}", gw.logs());
        assert_eq!(applied(r1), 1, "revision {r1} is not applied again after the outage:\n{}", gw.logs());
        assert_eq!(source(gw)["revision"], took.revision);
        assert_eq!(source(gw)["from_cache"], false);
        assert_eq!(metric_of(gw, &connected), 1.0);
    }
}

#[test]
fn twenty_pushes_under_load_fail_no_request() {
    let _measuring = exclusive();
    const PUSHES: usize = 20;
    /// The push during which the bucket's stream leader is killed.
    const LEADER_LOST: usize = 10;
    let mut fleet = Fleet::start(|_, _| {});
    fleet.push_and_measure("v0", Duration::from_secs(10));

    let stop = AtomicBool::new(false);
    let (sent, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut latencies = Vec::new();
    let mut pushes = Vec::new();
    let mut last = 0;
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|scope| {
        // Bounded load: one keep-alive client per gateway, for at most 3 minutes.
        for gw in &fleet.gateways {
            let (stop, sent, failed, failures) = (&stop, &sent, &failed, &failures);
            let url = gw.url("/stable");
            scope.spawn(move || {
                let client = client();
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(180) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    match client.get(&url).send() {
                        Ok(r) if r.status() == 200 => {}
                        other => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            failures.lock().unwrap().push(format!("{url}: {other:?}"));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
        }
        for i in 1..=PUSHES {
            let killed = (i == LEADER_LOST).then(|| {
                let leader = fleet.nats.iter().find_map(|n| n.stream_leader("KV_cfg")).expect("a stream leader");
                let index: usize = leader.trim_start_matches('n').parse().unwrap();
                fleet.nats[index].kill();
                index
            });
            let took = fleet.push_and_measure(&format!("v{i}"), Duration::from_secs(30));
            latencies.push(took.on_all());
            last = took.revision;
            pushes.push(took.push);
            if let Some(index) = killed {
                fleet.nats[index].start_again();
            }
        }
        stop.store(true, Ordering::Relaxed);
    });

    let max = |d: &[Duration]| d.iter().copied().max().unwrap_or_default();
    eprintln!(
        "FIGURES {PUSHES} pushes, 3 gateways: confirmed push → applied on all: median {:?}, max {:?}, push {LEADER_LOST} \
         (stream leader killed) {:?}; the push command itself (check + confirmed write): median {:?}, max {:?}, push \
         {LEADER_LOST} {:?}",
        median(&latencies),
        max(&latencies),
        latencies[LEADER_LOST - 1],
        median(&pushes),
        max(&pushes),
        pushes[LEADER_LOST - 1],
    );
    eprintln!("FIGURES applied on all, per push: {latencies:?}");
    eprintln!("FIGURES push command, per push: {pushes:?}");
    let (sent, failed) = (sent.into_inner(), failed.into_inner());
    eprintln!("load: {sent} requests, {failed} failed");
    assert!(sent > 100, "the load ran ({sent} requests)");
    assert_eq!(failed, 0, "{:?}", failures.into_inner().unwrap());
    for gw in &fleet.gateways {
        assert_eq!(source(gw)["revision"].as_u64(), Some(last));
    }
    assert!(median(&latencies) <= WITHIN, "median push → applied on all: {:?}", median(&latencies));
}

#[test]
fn a_bucket_made_anew_is_a_new_history_that_every_gateway_follows() {
    let fleet = Fleet::start(|_, _| {});
    let old = fleet.push_and_measure("v1", Duration::from_secs(10)).revision;
    fleet.push_and_measure("v2", Duration::from_secs(10));
    fleet.nats[0].delete_stream("KV_cfg");
    // The push makes the bucket again: its revisions start over, below those seen.
    let took = fleet.push_and_measure("v3", Duration::from_secs(30));
    eprintln!("first push to the new bucket → served, per gateway: {took:?}");
    assert!(took.revision <= old, "a new history starts over ({} after {old})", took.revision);
    for gw in &fleet.gateways {
        assert_eq!(source(gw)["revision"], took.revision);
        assert_eq!(http_get_status(gw.addr, "/v2"), Some(404));
        assert!(eventually(Duration::from_secs(5), || gw.logs().contains("a new history")), "{}", gw.logs());
    }
}

#[test]
fn a_bootstrap_file_holding_a_key_of_the_store_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("siger.yaml");
    let cache = dir.path().join("cache.json");
    let text = format!(
        "listen: [\"127.0.0.1:1\"]\nnats: {{url: \"nats://127.0.0.1:1\"}}\nconfig_source:\n  nats_kv: {{bucket: {BUCKET}, key: {KEY}}}\n  cache_file: {}\nroutes: []\n",
        cache.display()
    );
    std::fs::write(&file, text).unwrap();
    let (code, out) = check(&file);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("routes (line 6): belongs in the store"), "{out}");
    // A start refuses it the same way, before it reaches for the store.
    let start = Command::new(SIGER).arg("-c").arg(&file).output().unwrap();
    assert_eq!(start.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&start.stderr).contains("routes (line 6): belongs in the store"));

    // Without `nats` there is no way to the store.
    std::fs::write(&file, format!("listen: [\"127.0.0.1:1\"]\nconfig_source:\n  nats_kv: {{bucket: {BUCKET}, key: {KEY}}}\n  cache_file: {}\n", cache.display())).unwrap();
    let (code, out) = check(&file);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("needs a `nats` section"), "{out}");
    // Fixed, and with no cache file yet: OK.
    std::fs::write(&file, format!("listen: [\"127.0.0.1:1\"]\nnats: {{url: \"nats://127.0.0.1:1\"}}\nconfig_source:\n  nats_kv: {{bucket: {BUCKET}, key: {KEY}}}\n  cache_file: {}\n", cache.display())).unwrap();
    let (code, out) = check(&file);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("bootstrap file OK (store cfg/gw; no cache file yet)"), "{out}");
}

#[test]
fn an_upgraded_gateway_starts_from_the_store_and_follows_it() {
    let mut fleet = Fleet::start(|_, _| {});
    let r1 = fleet.push_and_measure("v1", Duration::from_secs(10)).revision;
    let gw = &mut fleet.gateways[0];
    let old = gw.pid();
    let log = gw.dir.path().join("upgrade.log");
    let status = Command::new(SIGER)
        .arg("upgrade")
        .arg("-c")
        .arg(&gw.config_path)
        .arg("--pid")
        .arg(old.to_string())
        .stdout(Stdio::null())
        // The new daemon inherits stderr: a file, not a pipe that stays open while it lives.
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let new: u32 = std::fs::read_to_string(gw.dir.path().join("siger.pid")).unwrap().trim().parse().unwrap();
    assert_ne!(new, old);
    assert_eq!(gw.wait_exit(Duration::from_secs(20)), Some(0), "the old process hands over and exits");
    let kill_new = || {
        let _ = Command::new("kill").arg("-KILL").arg(new.to_string()).status();
    };
    let served = eventually(Duration::from_secs(10), || http_get_status(gw.addr, "/v1") == Some(200));
    let source0 = source(gw);
    if !served || source0["revision"] != r1 || source0["from_cache"] != false {
        kill_new();
        panic!("the new process serves revision {r1} from the store: {source0}");
    }
    // It follows the store: the next push reaches it.
    let took = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fleet.push_and_measure("v2", Duration::from_secs(10))
    }));
    kill_new();
    assert!(took.is_ok(), "the upgraded gateway follows the store");
}

#[test]
fn commands_beside_a_following_gateway_read_what_it_last_applied() {
    // No store is needed: `siger token` reads the bootstrap file and the cache file.
    let dir = tempfile::tempdir().unwrap();
    let (listen, dead) = (Reserved::new(), DeadPort::new());
    let cache = dir.path().join("cache.json");
    let bootstrap = dir.path().join("siger.yaml");
    let text = format!(
        "listen: [\"127.0.0.1:{}\"]\nnats:\n  url: nats://127.0.0.1:{}\nconfig_source:\n  nats_kv: {{bucket: {BUCKET}, key: {KEY}}}\n  cache_file: {}\n",
        listen.port(),
        dead.port(),
        cache.display()
    );
    std::fs::write(&bootstrap, text).unwrap();
    let token = |dir: &Path| {
        let out = Command::new(SIGER).args(["token", "--sub", "alice", "-c"]).arg(dir).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Nothing applied yet: the bootstrap file alone, which has no `auth` — said as such.
    let (code, _, err) = token(&bootstrap);
    assert_eq!(code, Some(78), "{err}");
    assert!(!err.contains("unknown key"), "the bootstrap file is read as one: {err}");
    // The last applied revision holds the signing key: a token it verifies.
    let document = "auth:\n  jwt: {algorithms: [HS256], secret: \"fleet-secret-0123456789abcdef0123456789\", issuer: fleet}\nroutes: []\n";
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(document.as_bytes()))
    };
    let cached = serde_json::json!({
        "bucket": BUCKET, "key": KEY, "revision": 7, "applied_at": "2026-12-07T00:00:00Z",
        "sha256": sha, "document": document,
    });
    std::fs::write(&cache, cached.to_string()).unwrap();
    let (code, jwt, err) = token(&bootstrap);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(jwt.split('.').count(), 3, "a JWT on stdout: {jwt:?}");
}
