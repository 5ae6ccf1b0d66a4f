//! `siger config …` against a real three-node NATS JetStream cluster (a nats-server recent
//! enough for key-value buckets, see tests/support/nats.rs): push → history → diff → rollback,
//! compare-and-set between concurrent pushes, a push that fails `-t` writes nothing, the gateway
//! reports and drift in `status`, the stream leader killed during pushes (each push succeeds
//! once or fails clearly), and a follower that resumes after the whole cluster restarts without
//! missing or re-applying a revision (and sees a bucket made anew as a new history).
//! Also Debian's 2.9 server, where the bucket is created as a plain stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::nats::{cluster, kv_binary, NatsServer};
use support::*;

const BUCKET: &str = "cfg";
const KEY: &str = "gw";

/// A host: its bootstrap file (pointing at `servers`) in a directory of its own, so that a
/// relative file name in a document resolves there.
struct Host {
    dir: tempfile::TempDir,
    bootstrap: PathBuf,
}

impl Host {
    fn new(servers: &[&NatsServer], replicas: usize) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let urls: Vec<String> = servers.iter().map(|n| format!("\"{}\"", n.url())).collect();
        let text = format!(
            "# a gateway's bootstrap file\nserver: {{grace_period: 0s}}\nlisten: [\"127.0.0.1:{}\"]\nnats:\n  url: [{}]\n  connect_timeout: 2s\nconfig_source:\n  nats_kv: {{bucket: {BUCKET}, key: {KEY}, replicas: {replicas}}}\n  cache_file: {}/cache.json\n",
            free_port(),
            urls.join(", "),
            dir.path().display()
        );
        let bootstrap = dir.path().join("siger.yaml");
        std::fs::write(&bootstrap, text).unwrap();
        Host { dir, bootstrap }
    }

    /// Write `text` as `name` in the host's directory; its path.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(SIGER);
        cmd.arg("config").args(args).arg("-c").arg(&self.bootstrap);
        cmd
    }

    /// Run `siger config <args>`; (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        finish(self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
    }

    /// Push a document written to `name`; (exit code, stdout, stderr).
    fn push(&self, name: &str, document: &str, extra: &[&str]) -> (i32, String, String) {
        let path = self.file(name, document);
        let mut args = vec!["push", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

/// Wait for a `siger config` process (bounded: a push gives up after 30 s).
fn finish(mut child: Child) -> (i32, String, String) {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("siger config did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code().unwrap_or(-1), out, err)
}

/// A document with one route at `path` (to tell revisions apart) and `extra` route keys.
fn document(path: &str, extra: &str) -> String {
    format!(
        "# the fleet's routes\nservices:\n  echo: {{targets: [\"127.0.0.1:9\"]}}\nroutes:\n  - {{path: {path}, service: echo, auth: public{extra}}}\n"
    )
}

/// Every message of the bucket's stream: (sequence, subject, payload as text).
fn stored(nats: &NatsServer) -> Vec<(u64, String, String)> {
    nats.with_js(async |js| {
        let Ok(mut stream) = js.get_stream(format!("KV_{BUCKET}")).await else { return Vec::new() };
        let state = stream.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push((m.sequence, m.subject.to_string(), String::from_utf8_lossy(&m.payload).into_owned()));
            }
        }
        out
    })
}

/// The documents stored under the key, in order.
fn documents(nats: &NatsServer) -> Vec<(u64, String)> {
    let subject = format!("$KV.{BUCKET}.{KEY}");
    stored(nats).into_iter().filter(|(_, s, _)| *s == subject).map(|(seq, _, text)| (seq, text)).collect()
}

/// The first server of the cluster that answers.
fn live(nats: &[NatsServer]) -> &NatsServer {
    nats.iter().find(|n| n.pid() != 0).unwrap()
}

#[test]
fn push_history_diff_and_rollback_on_a_replicated_bucket() {
    let nats = cluster(&kv_binary());
    let host = Host::new(&nats.iter().collect::<Vec<_>>(), 3);

    let (code, out, err) = host.push("v1.yaml", &document("/v1", ""), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cfg/gw: revision 1 written, the first"), "{out}");
    assert!(err.contains("v1.yaml: configuration OK (1 listeners, 1 services, 1 routes"), "{err}");
    assert!(!err.contains("warning"), "{err}");
    let config = live(&nats).stream_config("KV_cfg").unwrap();
    assert_eq!((config.num_replicas, config.max_messages_per_subject), (3, 20), "the bucket: R3, history 20");

    let (code, out, err) = host.push("v2.yaml", &document("/v2", ""), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("revision 2 written, after revision 1"), "{out}");
    let (code, out, _) = host.push("v2.yaml", &document("/v2", ""), &[]);
    assert_eq!(code, 0);
    assert!(out.contains("revision 2 already holds this document; nothing written"), "{out}");
    assert_eq!(documents(live(&nats)).len(), 2, "the same document twice makes no revision");

    let (code, out, err) = host.run(&["history"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("REVISION") && lines[0].contains("PUSHED BY"), "{out}");
    assert!(
        lines[1].trim_start().starts_with("1 ") && lines[1].contains("push ") && lines[1].ends_with("v1.yaml"),
        "{out}"
    );
    assert!(lines[2].trim_start().starts_with("2 ") && lines[2].contains("v2.yaml"), "{out}");
    assert_eq!(lines.len(), 3, "{out}");

    let (code, out, _) = host.run(&["diff", "1"]);
    assert_eq!(code, 0);
    let expected = "--- cfg/gw revision 1\n+++ cfg/gw revision 2\n@@ -2,4 +2,4 @@\n services:\n   echo: {targets: [\"127.0.0.1:9\"]}\n routes:\n-  - {path: /v1, service: echo, auth: public}\n+  - {path: /v2, service: echo, auth: public}\n";
    assert_eq!(out, expected);
    let (_, same, _) = host.run(&["diff", "2", "2"]);
    assert_eq!(same, "", "no difference, no output");
    let (code, _, err) = host.run(&["diff", "9"]);
    assert_eq!(code, 1);
    assert!(err.contains("cfg/gw has no revision 9"), "{err}");

    let (code, out, err) = host.run(&["rollback", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("cfg/gw revision 1: configuration OK"), "{err}");
    assert!(out.contains("revision 3 written, after revision 2"), "{out}");
    let docs = documents(live(&nats));
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[2].1, docs[0].1, "the rollback wrote revision 1's document, byte for byte");
    let (_, out, _) = host.run(&["history"]);
    assert!(out.lines().nth(3).unwrap().ends_with("rollback to revision 1"), "{out}");
    let (code, out, _) = host.run(&["rollback", "3"]);
    assert_eq!(code, 0);
    assert!(out.contains("revision 3 already holds this document"), "{out}");
}

#[test]
fn of_two_pushes_made_against_the_same_revision_one_wins_and_the_other_is_told() {
    let nats = cluster(&kv_binary());
    let host = Host::new(&nats.iter().collect::<Vec<_>>(), 3);
    assert_eq!(host.push("base.yaml", &document("/base", ""), &[]).0, 0);

    // Both reviewed revision 1 and push against it, at the same moment.
    let a = host.file("a.yaml", &document("/a", ""));
    let b = host.file("b.yaml", &document("/b", ""));
    let spawn = |file: &Path| {
        host.command(&["push", file.to_str().unwrap(), "--expect-revision", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(&a), spawn(&b));
    let results = [finish(first), finish(second)];
    let won: Vec<_> = results.iter().filter(|r| r.0 == 0).collect();
    let lost: Vec<_> = results.iter().filter(|r| r.0 != 0).collect();
    assert_eq!((won.len(), lost.len()), (1, 1), "{results:?}");
    assert!(won[0].1.contains("revision 2 written, after revision 1"), "{results:?}");
    assert_eq!(lost[0].0, 1);
    assert!(
        lost[0].2.contains("conflict: the store is at revision 2, not at revision 1 this push was made against")
            && lost[0].2.contains("nothing was written"),
        "{}",
        lost[0].2
    );
    assert_eq!(documents(live(&nats)).len(), 2);

    // Without --expect-revision each push reads just before writing: pushes in pairs either
    // follow one another or one is refused; never a lost write.
    let mut conflicts = 0;
    let mut written = 2;
    for round in 0..5 {
        let files: Vec<PathBuf> = (0..2)
            .map(|i| host.file(&format!("r{round}-{i}.yaml"), &document(&format!("/r{round}/{i}"), "")))
            .collect();
        let children: Vec<Child> = files
            .iter()
            .map(|f| {
                host.command(&["push", f.to_str().unwrap()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (code, out, err) in children.into_iter().map(finish) {
            match code {
                0 => written += 1,
                1 if err.contains("conflict: the store is at revision") => conflicts += 1,
                _ => panic!("neither written nor a conflict: {code} {out} {err}"),
            }
        }
    }
    let docs = documents(live(&nats));
    assert_eq!(docs.len(), written, "every push reported written is stored, once");
    eprintln!("5 rounds of two concurrent pushes: {} written, {conflicts} refused as conflicts", written - 2);
}

#[test]
fn a_push_that_fails_the_check_writes_nothing() {
    let nats = cluster(&kv_binary());
    let host = Host::new(&nats.iter().collect::<Vec<_>>(), 3);

    let (code, _, err) = host.push("bad.yaml", &document("/a", "").replace("service: echo", "service: nope"), &[]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("bad.yaml: 1 configuration error"), "{err}");
    assert!(err.contains("routes[0].service (line 5): unknown service `nope`"), "the key and its line in FILE: {err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert!(live(&nats).stream_config("KV_cfg").is_none(), "not even the bucket was made");

    // A file the document names must exist where the push runs (relative names resolve
    // against the bootstrap file's directory, as on the gateways).
    let (code, _, err) = host.push("schema.yaml", &document("/a", ", validate: {schema: order.json}"), &[]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("routes[0].validate.schema (line 5)") && err.contains("order.json"), "{err}");

    // Keys a gateway needs to start stay in its bootstrap file.
    let (code, _, err) = host.push("listen.yaml", &format!("{}listen: [\"0.0.0.0:80\"]\n", document("/a", "")), &[]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("listen (line 6): stays in each gateway's bootstrap file"), "{err}");

    // The bootstrap file's own problems name its lines.
    let broken = Host::new(&nats.iter().collect::<Vec<_>>(), 3);
    let text = std::fs::read_to_string(&broken.bootstrap).unwrap().replace("key: gw", "key: \"gw.status.x\"");
    std::fs::write(&broken.bootstrap, text).unwrap();
    let (code, _, err) = broken.push("ok.yaml", &document("/a", ""), &[]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("config_source.nats_kv.key (line 8)"), "{err}");

    host.file("order.json", r#"{"type": "object"}"#);
    let (code, out, err) = host.push("schema.yaml", &document("/a", ", validate: {schema: order.json}"), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("1 files read"), "{err}");
    assert_eq!(documents(live(&nats)).len(), 1, "only the valid push was written");
}

/// Write a gateway's report straight into the bucket, as a gateway would.
fn report(nats: &NatsServer, gateway: &str, json: serde_json::Value) {
    let key = format!("{KEY}.status.{gateway}");
    nats.with_js(async move |js| {
        let kv = js.get_key_value(BUCKET).await.unwrap();
        kv.put(key, serde_json::to_vec(&json).unwrap().into()).await.unwrap();
    });
}

#[test]
fn status_lists_every_gateway_and_shows_drift() {
    let nats = cluster(&kv_binary());
    let host = Host::new(&nats.iter().collect::<Vec<_>>(), 3);
    assert_eq!(host.push("v1.yaml", &document("/v1", ""), &[]).0, 0);
    let (_, out, _) = host.run(&["status"]);
    assert_eq!(out, "cfg/gw: revision 1\nno gateway has reported\n");
    assert_eq!(host.push("v2.yaml", &document("/v2", ""), &[]).0, 0);
    let current = documents(live(&nats)).last().unwrap().0;

    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    report(
        live(&nats),
        "eu-1",
        serde_json::json!({"gateway": "eu-1", "revision": current, "result": "applied", "time": fmt(now),
                           "running": current, "version": "0.1.0"}),
    );
    report(
        live(&nats),
        "us-2",
        serde_json::json!({"gateway": "us-2", "revision": current, "result": "refused", "running": 1,
                           "errors": ["routes[0].validate.schema (line 5): cannot read /etc/siger/order.json"],
                           "time": fmt(now - time::Duration::seconds(20)), "version": "0.1.0"}),
    );
    let (code, out, err) = host.run(&["status"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("cfg/gw: revision {current}"), "{out}");
    assert!(lines[1].starts_with("GATEWAY") && lines[1].contains("RUNNING"), "{out}");
    let eu = lines.iter().find(|l| l.starts_with("eu-1")).unwrap();
    assert!(eu.contains("applied") && !eu.contains("behind"), "{out}");
    let us = lines.iter().position(|l| l.starts_with("us-2")).unwrap();
    assert!(
        lines[us].contains("refused") && lines[us].contains("behind the store") && lines[us].contains("20s"),
        "{out}"
    );
    assert!(lines[us + 1].contains("cannot read /etc/siger/order.json"), "the refusal's reason: {out}");
    assert!(out.contains(&format!("drift: 1 of 2 gateways do not run revision {current}: us-2 (1)")), "{out}");
    assert!(!out.contains("unreadable"), "{out}");
}

#[test]
fn a_push_survives_losing_the_stream_leader_once_or_fails_clearly() {
    let mut nats = cluster(&kv_binary());
    let host = Host::new(&nats.iter().collect::<Vec<_>>(), 3);
    assert_eq!(host.push("v0.yaml", &document("/v0", ""), &[]).0, 0);

    const PUSHES: usize = 12;
    let results = std::sync::Mutex::new(Vec::<(usize, i32, String, Duration)>::new());
    std::thread::scope(|scope| {
        let (host, results) = (&host, &results);
        scope.spawn(move || {
            for i in 1..=PUSHES {
                let started = Instant::now();
                let (code, out, err) = host.push(&format!("v{i}.yaml"), &document(&format!("/v{i}"), ""), &[]);
                results.lock().unwrap().push((i, code, format!("{out}{err}"), started.elapsed()));
            }
        });
        assert!(eventually(Duration::from_secs(60), || results.lock().unwrap().len() >= 3));
        let leader = nats.iter().find_map(|n| n.stream_leader("KV_cfg")).expect("a stream leader");
        let index: usize = leader.trim_start_matches('n').parse().unwrap();
        nats[index].kill();
        eprintln!("killed the bucket's stream leader {leader} after {} pushes", results.lock().unwrap().len());
        std::thread::sleep(Duration::from_secs(3));
        nats[index].start_again();
    });

    let results = results.into_inner().unwrap();
    let docs = documents(live(&nats));
    let mut written = 0;
    for (i, code, output, took) in &results {
        let path = format!("{{path: /v{i},");
        let copies = docs.iter().filter(|(_, d)| d.contains(&path)).count();
        eprintln!(
            "push {i}: exit {code} in {took:?}: {}",
            output.lines().find(|l| l.contains("written") || l.starts_with("siger config")).unwrap_or_default()
        );
        if *code == 0 {
            written += 1;
            assert_eq!(copies, 1, "push {i} succeeded: stored once, not {copies} times\n{output}");
        } else {
            assert!(copies <= 1, "push {i}: stored {copies} times\n{output}");
            assert!(
                output.contains("siger config: ") && (output.contains("did not confirm") || output.contains("cannot")),
                "push {i} failed without a clear message:\n{output}"
            );
        }
    }
    let mut seen: Vec<&String> = docs.iter().map(|(_, d)| d).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), docs.len(), "no document was stored twice: {docs:?}");
    // Reads and the bucket's opening wait out the election (before they did, a push in it
    // failed with "cannot open the bucket"): every push goes through.
    assert_eq!(written, PUSHES, "only {written} of {PUSHES} pushes went through: {results:?}");
}

/// `siger config watch` running with its output gathered into a file.
struct Watcher {
    child: Child,
    out: PathBuf,
}

impl Watcher {
    fn start(host: &Host) -> Watcher {
        let out = host.dir.path().join("watch.out");
        let err = std::fs::File::create(host.dir.path().join("watch.err")).unwrap();
        let child = host.command(&["watch"]).stdout(std::fs::File::create(&out).unwrap()).stderr(err).spawn().unwrap();
        Watcher { child, out }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The revisions it printed a verdict for, in order.
    fn revisions(&self) -> Vec<u64> {
        self.output().lines().filter_map(|l| l.strip_prefix("revision ")?.split(':').next()?.parse().ok()).collect()
    }

    fn wait_for(&self, what: &str) {
        assert!(
            eventually(Duration::from_secs(60), || self.output().contains(what)),
            "no {what:?}:\n{}",
            self.output()
        );
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_follower_resumes_after_a_cluster_restart_without_missing_or_reapplying() {
    let mut nats = cluster(&kv_binary());
    let servers: Vec<&NatsServer> = nats.iter().collect();
    let pusher = Host::new(&servers, 3);
    pusher.file("order.json", r#"{"type": "object"}"#);
    // The gateway's host lacks the schema file the second revision names.
    let gateway = Host::new(&servers, 3);
    assert_eq!(pusher.push("v1.yaml", &document("/v1", ""), &[]).0, 0);
    let watcher = Watcher::start(&gateway);
    watcher.wait_for("revision 1: would apply");

    assert_eq!(pusher.push("v2.yaml", &document("/v2", ", validate: {schema: order.json}"), &[]).0, 0);
    watcher.wait_for("revision 2: would refuse");
    let output = watcher.output();
    assert!(output.contains("cfg/gw revision 2: 1 configuration error"), "{output}");
    assert!(output.contains("routes[0].validate.schema (line 5)") && output.contains("order.json"), "{output}");

    // The whole cluster goes down and comes back; revisions pushed after are still seen once.
    for n in nats.iter_mut() {
        n.stop();
    }
    for n in nats.iter_mut() {
        n.start_again();
    }
    let host = Host::new(&nats.iter().collect::<Vec<_>>(), 3);
    host.file("order.json", r#"{"type": "object"}"#);
    let (code, out, err) = host.push("v3.yaml", &document("/v3", ""), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(host.push("v4.yaml", &document("/v4", ""), &[]).0, 0);
    watcher.wait_for("revision 4: would apply");
    // Revision 3 is applied, or skipped when the follower was still reconnecting and revision 4
    // came with it: the newest is applied, never an older one after it.
    assert_eq!(watcher.revisions(), [1, 2, 3, 4], "each revision once, in order:\n{}", watcher.output());
    let third = watcher.output().lines().find(|l| l.starts_with("revision 3:")).unwrap().to_string();
    assert!(third.contains("would apply") || third.contains("skipped, a newer revision follows"), "{third}");

    // The bucket made anew: its revision 1 is a new history, taken, not skipped as seen.
    live(&nats).delete_stream("KV_cfg");
    assert_eq!(host.push("v5.yaml", &document("/v5", ""), &[]).0, 0);
    watcher.wait_for("new history: revision 1 after 4");
    assert!(eventually(Duration::from_secs(30), || watcher.revisions() == [1, 2, 3, 4, 1]), "{}", watcher.output());
    let logged = std::fs::read_to_string(gateway.dir.path().join("watch.err")).unwrap();
    eprintln!("watch output:\n{}\nwatch log:\n{logged}", watcher.output());
    assert!(logged.contains("a new history (revision 1 after 4)"), "logged: {logged}");
}

#[test]
fn the_store_works_on_debians_nats_server_too() {
    // 2.9: the client's bucket creation fails there; the bucket is made as a plain stream.
    let nats = NatsServer::start();
    let host = Host::new(&[&nats], 1);
    let (code, out, err) = host.push("v1.yaml", &document("/v1", ""), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(host.push("v2.yaml", &document("/v2", ""), &[]).0, 0);
    let (_, out, _) = host.run(&["history"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let (_, out, _) = host.run(&["diff", "1", "2"]);
    assert!(out.contains("+  - {path: /v2,"), "{out}");
    assert_eq!(nats.stream_config("KV_cfg").map(|c| c.max_messages_per_subject), Some(20));
}

#[test]
fn a_push_sent_again_is_confirmed_not_stored_twice() {
    // What a push does when the server's answer is lost: it sends the same message again.
    use siger::config::{NatsKvSource, NatsSettings};
    use siger::config_store::store::{ConfigStore, PushError};
    let nats = NatsServer::start_binary_on(&kv_binary(), free_port(), &[]);
    let settings = NatsSettings {
        url: nats.url(),
        credentials_file: None,
        token: None,
        user_password: None,
        connect_timeout: Duration::from_secs(2),
        pending_buffer: 64,
    };
    let source = NatsKvSource { bucket: BUCKET.into(), key: KEY.into(), history: 20, replicas: 1 };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (store, _) = ConfigStore::connect(&settings, &source, true).await.unwrap();
        let first = store.push_as("push-1", "routes: []\n", 0, "test", Duration::from_secs(5)).await.unwrap();
        assert_eq!((first.revision, first.retried), (1, false));
        let again = store.push_as("push-1", "routes: []\n", 0, "test", Duration::from_secs(5)).await.unwrap();
        assert_eq!((again.revision, again.retried), (1, true), "the first write, confirmed");
        // Another push against revision 0 is a conflict naming both revisions.
        let other = store.push_as("push-2", "services: {}\n", 0, "test", Duration::from_secs(5)).await;
        assert_eq!(other.unwrap_err(), PushError::Conflict { read: 0, now: 1 });
        let history = store.history().await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].push_id.as_deref(), Some("push-1"));
        assert_eq!(history[0].note.as_deref(), Some("test"));
        store.close().await;
    });
    assert_eq!(documents(&nats).len(), 1);
}

#[test]
fn a_whole_file_splits_into_a_bootstrap_file_and_a_document_to_push() {
    let nats = NatsServer::start_binary_on(&kv_binary(), free_port(), &[]);
    let host = Host::new(&[&nats], 1);
    // Today's single file: the bootstrap keys and the document's, interleaved, with comments.
    let bootstrap = std::fs::read_to_string(&host.bootstrap).unwrap();
    let (head, source) = bootstrap.split_at(bootstrap.find("config_source:").unwrap());
    let whole = host.file("whole.yaml", &format!("{head}{}{source}", document("/w", "")));
    let (b, d) = (host.dir.path().join("b.yaml"), host.dir.path().join("d.yaml"));
    let (code, out, err) = finish(
        Command::new(SIGER)
            .args(["config", "split", whole.to_str().unwrap(), "--bootstrap", b.to_str().unwrap()])
            .args(["--document", d.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read_to_string(&b).unwrap(), bootstrap, "what stays on the host, comments included");
    assert_eq!(std::fs::read_to_string(&d).unwrap(), document("/w", ""), "the document with its comment");
    let (code, out, err) = host.run(&["push", d.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    // Split never overwrites.
    let again = Command::new(SIGER)
        .args(["config", "split", whole.to_str().unwrap(), "--bootstrap", b.to_str().unwrap()])
        .args(["--document", host.dir.path().join("d2.yaml").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"), "{again:?}");
}
