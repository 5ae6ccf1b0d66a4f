//! Live configuration (issue 11, ARCHITECTURE §7.1): the real gateway reloads its file on
//! `watch_config`, SIGHUP and `POST /config/reload`, all or nothing, with the same PID, keeping
//! health and counters of what did not change and finishing requests in flight on the config
//! they started with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::jwt::*;
use support::*;

/// The standard head with `server.watch_config` on.
fn watched() -> String {
    HEAD.replace("server:\n", "server:\n  watch_config: true\n")
}

fn routes(echo: &Echo, routes: &str) -> String {
    format!("services:\n  api: {{targets: [\"{}\"]}}\nroutes:\n{routes}", echo.addr)
}

#[test]
fn a_route_added_to_the_file_answers_within_a_second_with_the_same_pid() {
    let echo = Echo::start("api");
    let gw =
        Gateway::start_raw(&format!("{}{}", watched(), routes(&echo, "  - {path: /a, service: api, auth: public}\n")));
    let pid = gw.pid();
    assert_eq!(get(gw.addr, "/b/x").status, 404);
    let written = Instant::now();
    gw.rewrite(&format!(
        "{}{}",
        watched(),
        routes(&echo, "  - {path: /a, service: api, auth: public}\n  - {path: /b, service: api, auth: public}\n")
    ));
    assert!(eventually(Duration::from_secs(3), || get(gw.addr, "/b/x").status == 200));
    let took = written.elapsed();
    assert!(took < Duration::from_secs(1), "watch_config applied the edit after {took:?}");
    assert_eq!(gw.pid(), pid);
    assert_eq!(gw.generation(), 2);
    let text = scrape(&gw);
    assert_eq!(metric(&text, "siger_config_reloads_total{result=\"ok\"}"), Some(1.0));
    assert_eq!(metric(&text, "siger_config_generation"), Some(2.0));
    assert!(metric(&text, "siger_config_last_reload_timestamp_seconds").is_some_and(|t| t > 1.7e9));
    // A removed route answers 404 again.
    gw.rewrite(&format!("{}{}", watched(), routes(&echo, "  - {path: /b, service: api, auth: public}\n")));
    assert!(eventually(Duration::from_secs(3), || get(gw.addr, "/a/x").status == 404));
    assert_eq!(get(gw.addr, "/b/x").status, 200);
}

#[test]
fn sighup_and_the_admin_endpoint_reload_without_watching() {
    let echo = Echo::start("api");
    let gw = Gateway::start(&routes(&echo, "  - {path: /a, service: api, auth: public}\n"));
    assert!(
        eventually(Duration::from_secs(5), || gw.logs().contains("SIGHUP reloads the configuration")),
        "SIGHUP handler installed"
    );
    gw.rewrite(&format!("{HEAD}{}", routes(&echo, "  - {path: /b, service: api, auth: public}\n")));
    // Not watched: nothing changes until asked.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(get(gw.addr, "/b").status, 404);
    let asked = Instant::now();
    gw.signal("HUP");
    assert!(eventually(Duration::from_secs(3), || get(gw.addr, "/b").status == 200));
    assert!(asked.elapsed() < Duration::from_secs(1));
    assert_eq!(get(gw.addr, "/a").status, 404);
    gw.rewrite(&format!("{HEAD}{}", routes(&echo, "  - {path: /c, service: api, auth: public}\n")));
    let r = gw.reload();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["generation"], 3);
    assert_eq!(get(gw.addr, "/c").status, 200);
    let config = get(gw.admin, "/config").json();
    assert_eq!(config["generation"], 3);
    assert_eq!(config["last_reload"]["result"], "ok");
    assert_eq!(config["last_reload"]["trigger"], "admin");
    let text = std::fs::read(&gw.config_path).unwrap();
    use sha2::Digest;
    assert_eq!(config["sha256"], hex::encode(sha2::Sha256::digest(&text)));
    assert!(eventually(Duration::from_secs(2), || gw.logs().contains("configuration reloaded (SIGHUP)")));
}

#[test]
fn a_changed_target_list_moves_traffic() {
    let (one, two) = (Echo::start("one"), Echo::start("two"));
    let body = |e: &Echo| {
        format!(
            "services:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api, auth: public}}\n",
            e.addr
        )
    };
    let gw = Gateway::start(&body(&one));
    assert_eq!(backend_of(&get(gw.addr, "/x")), "one");
    gw.rewrite(&format!("{HEAD}{}", body(&two)));
    assert_eq!(gw.reload().status, 200);
    let seen = spread(gw.addr, "/x", 20);
    assert_eq!(seen.get("two"), Some(&20), "{seen:?}");
}

#[test]
fn invalid_edits_leave_the_old_config_serving_and_say_why() {
    let echo = Echo::start("api");
    let good = format!("{}{}", watched(), routes(&echo, "  - {path: /a, service: api, auth: public}\n"));
    let gw = Gateway::start_raw(&good);
    let failed = |gw: &Gateway| metric_of(gw, "siger_config_reloads_total{result=\"failed\"}");
    let cases: Vec<(&str, String, &str)> = vec![
        ("bad YAML", format!("{good}  - {{path: [\n"), "not valid YAML"),
        ("unknown key", format!("{good}limitz: {{}}\n"), "limitz"),
        (
            "unknown service",
            good.replace("routes:\n", "routes:\n  - {path: /b, service: nope, auth: public}\n"),
            "routes[0].service (line",
        ),
        (
            "missing key file",
            good.replace(
                "routes:\n",
                "auth:\n  jwt: {algorithms: [ES256], public_key_file: /nonexistent/key.pem}\nroutes:\n",
            ),
            "auth.jwt.public_key_file",
        ),
        // What a copy interrupted half-way leaves: the file ends inside a route.
        ("half-written file", good[..good.len() - 12].to_string(), "line"),
    ];
    for (what, text, says) in cases {
        let before = failed(&gw);
        gw.rewrite(&text);
        assert!(
            eventually(Duration::from_secs(3), || failed(&gw) > before),
            "{what}: the reload must be tried and fail\n{}",
            gw.logs()
        );
        assert!(
            eventually(Duration::from_secs(2), || gw.logs().contains(says)),
            "{what}: the log must say `{says}`:\n{}",
            gw.logs()
        );
        assert_eq!(get(gw.addr, "/a").status, 200, "{what}: the old config keeps serving");
        assert_eq!(gw.generation(), 1);
        let r = gw.reload();
        assert_eq!(r.status, 422, "{what}");
        assert!(r.json()["errors"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains(says)), "{what}");
    }
    // Fixing the file is picked up like any edit.
    gw.rewrite(&good.replace("/a", "/fixed"));
    assert!(eventually(Duration::from_secs(3), || get(gw.addr, "/fixed").status == 200));
}

#[test]
fn changes_a_running_process_cannot_apply_are_refused_with_the_upgrade_hint() {
    let echo = Echo::start("api");
    let body = routes(&echo, "  - {path: /a, service: api, auth: public}\n");
    let gw = Gateway::start(&body);
    let other = free_port();
    gw.rewrite(&format!(
        "{}{body}",
        HEAD.replace("listen: [\"{{LISTEN}}\"]", &format!("listen: [\"{{{{LISTEN}}}}\", \"127.0.0.1:{other}\"]"))
    ));
    let r = gw.reload();
    assert_eq!(r.status, 422);
    let errors = r.json()["errors"].to_string();
    assert!(errors.contains("listen: changed") && errors.contains("siger upgrade"), "{errors}");
    gw.rewrite(&format!("{}{body}", HEAD.replace("grace_period: 0s", "grace_period: 1s")));
    let errors = gw.reload().json()["errors"].to_string();
    assert!(errors.contains("server: changed") && errors.contains("siger upgrade"), "{errors}");
    assert!(TcpStream::connect(("127.0.0.1", other)).is_err(), "no listener was added");
    assert_eq!(get(gw.addr, "/a").status, 200);
}

/// A backend whose health checks time out (it answers after 500 ms, the check gives up after
/// 200 ms) but which would serve a request sent to it: a reload that forgot health would send it
/// traffic until the next check.
#[test]
fn health_of_kept_and_shared_backends_survives_a_reload() {
    let good = Echo::start("good");
    let slow = Echo::start_with("slow", "127.0.0.1:0", &["--delay-ms", "500"]);
    let third = Echo::start("third");
    // `/status/200` goes through the echo's delay (its `/health` does not).
    let hc = "health_check: {path: /status/200, interval: 3s, timeout: 200ms, unhealthy: 1, healthy: 1}";
    let body = |targets: String, extra_route: &str| {
        format!("services:\n  s: {{targets: [{targets}], {hc}}}\nroutes:\n  - {{path: /, service: s, auth: public}}\n{extra_route}")
    };
    let two = format!("\"{}\", \"{}\"", good.addr, slow.addr);
    let gw = Gateway::start(&body(two.clone(), ""));
    assert!(eventually(Duration::from_secs(5), || metric_of(&gw, "siger_backends{service=\"s\",state=\"unhealthy\"}")
        == 1.0));
    // Unchanged service, another route added: the pool and its health are the same.
    gw.rewrite(&format!("{HEAD}{}", body(two.clone(), "  - {path: /other, service: s, auth: public}\n")));
    assert_eq!(gw.reload().status, 200);
    let seen = spread(gw.addr, "/x", 30);
    assert_eq!(seen.get("good"), Some(&30), "the slow backend stays out: {seen:?}");
    // Changed service (a target added): the new pool starts from the health of the old one.
    let three = format!("{two}, \"{}\"", third.addr);
    gw.rewrite(&format!("{HEAD}{}", body(three, "")));
    assert_eq!(gw.reload().status, 200);
    let seen = spread(gw.addr, "/x", 30);
    assert!(!seen.contains_key("slow"), "{seen:?}");
    assert!(seen.get("good").is_some_and(|n| *n >= 10) && seen.get("third").is_some_and(|n| *n >= 10), "{seen:?}");
}

#[test]
fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let old = Echo::start_with("old", "127.0.0.1:0", &["--delay-ms", "1500"]);
    let new = Echo::start("new");
    let body = |e: &Echo| {
        format!(
            "services:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api, auth: public}}\n",
            e.addr
        )
    };
    let gw = Gateway::start(&body(&old));
    let addr = gw.addr;
    let slow = std::thread::spawn(move || get(addr, "/slow"));
    std::thread::sleep(Duration::from_millis(300));
    gw.rewrite(&format!("{HEAD}{}", body(&new)));
    assert_eq!(gw.reload().status, 200);
    assert_eq!(backend_of(&get(gw.addr, "/x")), "new");
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(backend_of(&r), "old", "the request in flight kept its snapshot");
}

#[test]
fn key_changes_apply_on_reload_and_unchanged_limits_keep_their_counters() {
    let echo = Echo::start("api");
    let body = |secret: &str, limit: &str| {
        format!(
            "auth:\n  jwt: {{algorithms: [HS256], secret: \"{secret}\", issuer: siger, audience: api}}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /limited, service: api, auth: public, rate_limit: {{requests: 3, per: 1m, key: ip}}}}\n  - {{path: /, service: api{limit}}}\n",
            echo.addr
        )
    };
    let gw = Gateway::start(&body(SECRET, ""));
    let token = hs256(&claims("alice", &[]));
    let call = |path: &str| get_with(gw.addr, path, &[("Authorization", &format!("Bearer {token}"))]).status;
    assert_eq!(call("/x"), 200);
    assert_eq!((0..2).filter(|_| get(gw.addr, "/limited").status == 200).count(), 2);
    // New secret: the old token is refused at once (no stale validation cache).
    gw.rewrite(&format!("{HEAD}{}", body("another-secret-0123456789-abcdefghijklmnop", "")));
    assert_eq!(gw.reload().status, 200);
    assert_eq!(call("/x"), 401);
    // The unchanged limit kept its count: one request left, not three.
    assert_eq!((0..3).filter(|_| get(gw.addr, "/limited").status == 200).count(), 1);
    // A changed limit starts afresh.
    gw.rewrite(&format!(
        "{HEAD}{}",
        body("another-secret-0123456789-abcdefghijklmnop", "").replace("requests: 3", "requests: 4")
    ));
    assert_eq!(gw.reload().status, 200);
    assert_eq!((0..5).filter(|_| get(gw.addr, "/limited").status == 200).count(), 4);
}

/// Keep-alive and new-connection clients at ≥ 1,000 requests/s for 30 s while the config is
/// swapped 20 times between two versions: no request may fail.
#[test]
fn twenty_reloads_under_load_fail_no_request() {
    let (one, two) = (Echo::start("one"), Echo::start("two"));
    let version = |n: usize| {
        let (a, b) = if n % 2 == 0 { (&one, &two) } else { (&two, &one) };
        format!(
            "access_log: {{enabled: false}}\nservices:\n  x: {{targets: [\"{}\"]}}\n  y: {{targets: [\"{}\"], health_check: {{path: /health, interval: 1s}}}}\nroutes:\n  - {{path: /, service: x, auth: public, rate_limit: {{requests: 1000000, per: 1m, key: route}}}}\n  - {{path: /v{n}, service: y, auth: public}}\n",
            a.addr, b.addr
        )
    };
    let gw = Gateway::start(&version(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for keepalive in [true, true, true, false] {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), gw.addr);
        clients.push(std::thread::spawn(move || {
            let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
            while !stop.load(Ordering::Relaxed) {
                let (stream, reader) = conn.get_or_insert_with(|| {
                    let s = TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let r = BufReader::new(s.try_clone().unwrap());
                    (s, r)
                });
                let close = if keepalive { "" } else { "Connection: close\r\n" };
                let sent = stream.write_all(format!("GET /x?fixed=1 HTTP/1.1\r\nHost: a\r\n{close}\r\n").as_bytes());
                let status = sent.ok().and_then(|_| read_status(reader));
                match status {
                    Some(200) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                if !keepalive || status.is_none() {
                    conn = None;
                }
            }
        }));
    }
    let started = Instant::now();
    for n in 1..=20 {
        std::thread::sleep(Duration::from_millis(1500));
        gw.rewrite(&format!("{HEAD}{}", version(n)));
        assert_eq!(gw.reload().status, 200, "reload {n}");
    }
    std::thread::sleep(Duration::from_secs(30).saturating_sub(started.elapsed()));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let rate = ok as f64 / started.elapsed().as_secs_f64();
    assert_eq!(failed, 0, "{ok} ok");
    assert!(rate >= 1000.0, "{rate:.0} requests/s");
    assert_eq!(gw.generation(), 21);
}

/// Status of one response read from a kept-alive connection (Content-Length bodies).
fn read_status(reader: &mut BufReader<TcpStream>) -> Option<u16> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        if line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    std::io::Read::read_exact(reader, &mut body).ok()?;
    Some(status)
}

#[test]
fn every_other_upgrade_only_change_is_refused_and_config_shows_no_secret() {
    let echo = Echo::start("api");
    let secret = "a-secret-that-must-not-leak-0123456789abcdef";
    let body = |extra: &str| {
        format!(
            "auth:\n  jwt: {{algorithms: [HS256], secret: \"{secret}\"}}\n{extra}{}",
            routes(&echo, "  - {path: /a, service: api, auth: public}\n")
        )
    };
    let gw = Gateway::start(&body(""));
    let other_admin = free_port();
    for (change, key) in [
        (
            HEAD.replace("admin:\n  listen: \"{{ADMIN}}\"", &format!("admin:\n  listen: \"127.0.0.1:{other_admin}\""))
                + &body(""),
            "admin.listen: changed",
        ),
        (format!("{HEAD}limits: {{keepalive_requests: 10}}\n{}", body("")), "limits.keepalive_requests: changed"),
        (format!("{HEAD}nats: {{url: \"nats://127.0.0.1:4222\"}}\n{}", body("")), "nats: changed"),
    ] {
        gw.rewrite(&change);
        let r = gw.reload();
        assert_eq!(r.status, 422, "{key}");
        assert!(r.json()["errors"].to_string().contains(key), "{key}: {}", r.json());
    }
    // Turning jobs on needs the NATS connection a running process does not have.
    gw.rewrite(&format!(
        "{HEAD}nats: {{url: \"nats://127.0.0.1:4222\"}}\njobs: {{subject: jobs.x, stream: {{name: J, subjects: [\"jobs.>\"]}}}}\n{}",
        body("")
    ));
    let errors = gw.reload().json()["errors"].to_string();
    assert!(errors.contains("jobs: enabled"), "{errors}");
    let config = get(gw.admin, "/config");
    assert!(!String::from_utf8_lossy(&config.body).contains(secret));
    assert!(!gw.reload().body.windows(secret.len()).any(|w| w == secret.as_bytes()));
}

#[test]
fn a_file_the_config_names_is_watched_too() {
    let echo = Echo::start("api");
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("jwt.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let gw = Gateway::start_raw(&format!(
        "{}auth:\n  jwt: {{algorithms: [HS256], secret_file: \"{}\", issuer: siger, audience: api}}\n{}",
        watched(),
        secret_file.display(),
        routes(&echo, "  - {path: /, service: api}\n")
    ));
    let token = hs256(&claims("alice", &[]));
    let call = |t: &str| get_with(gw.addr, "/x", &[("Authorization", &format!("Bearer {t}"))]).status;
    assert_eq!(call(&token), 200);
    // Rotate the secret: only the named file changes.
    let rotated = "rotated-secret-0123456789-abcdefghijklmnop";
    std::fs::write(&secret_file, format!("{rotated}\n")).unwrap();
    assert!(eventually(Duration::from_secs(3), || call(&token) == 401), "the old secret stops working");
    let new_token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims("alice", &[]),
        &jsonwebtoken::EncodingKey::from_secret(rotated.as_bytes()),
    )
    .unwrap();
    assert_eq!(call(&new_token), 200);
}

#[test]
fn a_file_written_in_pieces_is_applied_once_whole() {
    let echo = Echo::start("api");
    let v1 = format!("{}{}", watched(), routes(&echo, "  - {path: /a, service: api, auth: public}\n"));
    let gw = Gateway::start_raw(&v1);
    // A longer file written in place in three pieces, 150 ms apart: each prefix is valid YAML
    // that would drop routes if it were applied.
    let v2 = format!(
        "{}{}",
        watched(),
        routes(
            &echo,
            "  - {path: /a, service: api, auth: public}\n  - {path: /b, service: api, auth: public}\n  - {path: /c, service: api, auth: public}\n"
        )
    );
    let text = render(&v2, gw.addr, gw.admin, gw.dir.path());
    let cut = |route: &str| text.find(route).unwrap();
    let pieces = [
        &text[..cut("  - {path: /a")],
        &text[cut("  - {path: /a")..cut("  - {path: /c")],
        &text[cut("  - {path: /c")..],
    ];
    let mut file = std::fs::File::create(&gw.config_path).unwrap();
    let watch_a = std::thread::spawn({
        let addr = gw.addr;
        move || {
            // /a must answer throughout: a prefix without routes would make it 404.
            let until = Instant::now() + Duration::from_millis(1500);
            let mut missing = 0;
            while Instant::now() < until {
                if get(addr, "/a").status != 200 {
                    missing += 1;
                }
            }
            missing
        }
    });
    for piece in pieces {
        file.write_all(piece.as_bytes()).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    drop(file);
    assert!(eventually(Duration::from_secs(3), || get(gw.addr, "/c").status == 200));
    assert_eq!(watch_a.join().unwrap(), 0, "a partial file was applied");
    assert_eq!(gw.generation(), 2, "applied once, whole");
}

/// Longer than the watcher needs to take up a new generation and check its files once (two
/// 250 ms polls to settle, with room for a loaded machine); shorter than its periodic content
/// check (every 5 s).
const SETTLED: Duration = Duration::from_millis(1200);

/// A directory laid out as the kubelet lays out a ConfigMap volume, updated as its atomic writer
/// updates it: each version's files in a new `..<timestamp>` directory, the `..data` symlink
/// swapped to it by a rename, the old directory removed; the names the pod sees are symlinks
/// through `..data` and never change themselves.
struct ConfigMapVolume {
    dir: std::path::PathBuf,
    versions: u32,
}

impl ConfigMapVolume {
    fn new(dir: &std::path::Path) -> ConfigMapVolume {
        std::fs::create_dir(dir).unwrap();
        ConfigMapVolume { dir: dir.to_path_buf(), versions: 0 }
    }

    /// Publish a new version holding exactly `files` (name, contents).
    fn publish(&mut self, files: &[(&str, &str)]) {
        use std::os::unix::fs::symlink;
        self.versions += 1;
        let version = format!("..2026_12_06_12_00_{:02}.{:09}", self.versions, self.versions * 1_000_003);
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        for (name, text) in files {
            std::fs::write(self.dir.join(&version).join(name), text).unwrap();
        }
        let data = self.dir.join("..data");
        let old = std::fs::read_link(&data).ok();
        symlink(&version, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), &data).unwrap();
        for (name, _) in files {
            if std::fs::symlink_metadata(self.dir.join(name)).is_err() {
                symlink(format!("..data/{name}"), self.dir.join(name)).unwrap();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

#[test]
fn a_kubernetes_configmap_update_is_picked_up_through_the_data_symlink_swap() {
    let echo = Echo::start("api");
    let config = |routes_yaml: &str| {
        format!(
            "{}auth:\n  jwt: {{algorithms: [HS256], secret_file: jwt.secret, issuer: siger, audience: api}}\n{}",
            watched(),
            routes(&echo, routes_yaml)
        )
    };
    let one_route = "  - {path: /a, service: api}\n";
    let mut volume = None;
    let gw = Gateway::start_placed(&config(one_route), |dir, text| {
        let mut v = ConfigMapVolume::new(&dir.join("configmap"));
        v.publish(&[("siger.yaml", text), ("jwt.secret", SECRET)]);
        let path = v.dir.join("siger.yaml");
        volume = Some(v);
        path
    });
    let mut volume = volume.unwrap();
    let pid = gw.pid();
    let token = format!("Bearer {}", hs256(&claims("alice", &[])));
    let call = |path: &str, auth: &str| get_with(gw.addr, path, &[("Authorization", auth)]).status;
    assert_eq!(call("/a/x", &token), 200);
    assert_eq!(call("/b/x", &token), 404);

    // `kubectl apply` of a ConfigMap with a second route: the kubelet swaps `..data`.
    let two_routes = render(
        &config("  - {path: /a, service: api}\n  - {path: /b, service: api}\n"),
        gw.addr,
        gw.admin,
        gw.dir.path(),
    );
    // The watcher compares contents once after taking up a generation, which would catch even
    // a swap it cannot see; to prove it sees the swap, publish after that first check.
    std::thread::sleep(SETTLED);
    let swapped = Instant::now();
    volume.publish(&[("siger.yaml", &two_routes), ("jwt.secret", SECRET)]);
    assert!(
        eventually(Duration::from_secs(6), || call("/b/x", &token) == 200),
        "the swap to a new ..data directory was not applied:\n{}",
        gw.logs()
    );
    // Seen as a change by the stat poll (0.5 s to settle), not by the content check that
    // runs every 5 s whatever happens.
    let took = swapped.elapsed();
    assert!(took < Duration::from_millis(1500), "watch_config applied the swap after {took:?}");
    assert_eq!(gw.generation(), 2);

    // A version where only a file the config names (the JWT secret) changed.
    let rotated = "rotated-secret-0123456789-abcdefghijklmnop";
    std::thread::sleep(SETTLED);
    let swapped = Instant::now();
    volume.publish(&[("siger.yaml", &two_routes), ("jwt.secret", rotated)]);
    assert!(eventually(Duration::from_secs(6), || call("/a/x", &token) == 401), "the old secret stops working");
    let took = swapped.elapsed();
    assert!(took < Duration::from_millis(1500), "watch_config applied the secret's swap after {took:?}");
    let new_token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims("alice", &[]),
        &jsonwebtoken::EncodingKey::from_secret(rotated.as_bytes()),
    )
    .unwrap();
    assert_eq!(call("/b/x", &format!("Bearer {new_token}")), 200);
    assert_eq!((gw.generation(), gw.pid()), (3, pid), "reloaded in place, once per version");
    assert!(gw.logs().contains("watch_config"), "{}", gw.logs());
}
