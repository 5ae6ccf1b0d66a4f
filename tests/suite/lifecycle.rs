//! Process lifecycle with real processes: graceful SIGTERM, zero-downtime upgrades under load,
//! refusing a broken config on reload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config(echo: SocketAddr, extra_routes: usize) -> String {
    let mut routes = String::from("  - {path: /, service: s, auth: public}\n");
    for v in 1..=extra_routes {
        routes.push_str(&format!("  - {{path: /v{v}, service: s, auth: public}}\n"));
    }
    format!(
        "server:\n  threads: 2\n  pid_file: {{{{DIR}}}}/siger.pid\n  upgrade_sock: {{{{DIR}}}}/upgrade.sock\n  grace_period: 1s\n  graceful_shutdown_timeout: 5s\nlisten: [\"{{{{LISTEN}}}}\"]\nadmin:\n  listen: \"{{{{ADMIN}}}}\"\nservices:\n  s: {{targets: [\"{echo}\"]}}\nroutes:\n{routes}"
    )
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

fn read_pid(gw: &Gateway) -> u32 {
    std::fs::read_to_string(gw.dir.path().join("siger.pid")).unwrap().trim().parse().unwrap()
}

fn kill_pid(pid: u32) {
    let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
}

#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    let echo = Echo::start("e");
    let mut gw = Gateway::start_raw(&config(echo.addr, 0));
    let addr = gw.addr;
    let slow = std::thread::spawn(move || get(addr, "/slow?delay_ms=2000"));
    let in_flight = || metric(&scrape(&gw), "siger_requests_in_flight");
    assert!(eventually(Duration::from_secs(5), || in_flight() == Some(1.0)), "the slow request is in flight");
    let sent = Instant::now();
    gw.signal("TERM");
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "the in-flight request completes");
    let code = gw.wait_exit(Duration::from_secs(8));
    let took = sent.elapsed();
    assert_eq!(code, Some(0), "exit status after SIGTERM:\n{}", gw.logs());
    assert!(took < Duration::from_secs(4), "exited {took:?} after SIGTERM (grace 1s + the 1.7s left of the request)");
    assert!(gw.logs().contains("drained after"), "{}", gw.logs());
}

#[test]
fn idle_gateway_stops_after_the_grace_period() {
    let echo = Echo::start("e");
    let mut gw = Gateway::start_raw(&config(echo.addr, 0));
    let sent = Instant::now();
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(8)), Some(0));
    let took = sent.elapsed();
    assert!(took < Duration::from_millis(2500), "idle shutdown took {took:?} with grace_period 1s");
}

/// One client: keep-alive or a new connection per request. Counts answers and failures.
/// A keep-alive request that finds its reused connection closed before any response byte is
/// sent again once on a new connection, as HTTP clients do for idempotent requests (RFC 9110
/// §9.2.2); a failure on a fresh connection is always counted.
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    resent: AtomicUsize,
    errors: std::sync::Mutex<Vec<String>>,
}

fn client_loop(addr: SocketAddr, keep_alive: bool, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let req = format!("GET /?n=1 HTTP/1.1\r\nHost: {addr}\r\nConnection: {connection}\r\n\r\n");
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let reused = conn.is_some();
            let mut stream = match conn.take() {
                Some(s) => s,
                None => match TcpStream::connect(addr) {
                    Ok(s) => s,
                    Err(e) => break Err(format!("connect: {e}")),
                },
            };
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let written = stream.write_all(req.as_bytes());
            let resp = if written.is_ok() { read_response(&mut stream) } else { None };
            match resp {
                Some(r) => {
                    let close = r.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
                    if keep_alive && !close {
                        conn = Some(stream);
                    }
                    break Ok(r.status);
                }
                None if reused && attempt == 1 => {
                    tally.resent.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                None => break Err(format!("no response (reused connection: {reused})")),
            }
        };
        match outcome {
            Ok(200) => tally.ok.fetch_add(1, Ordering::Relaxed),
            Ok(status) => {
                tally.errors.lock().unwrap().push(format!("status {status}"));
                tally.failed.fetch_add(1, Ordering::Relaxed)
            }
            Err(e) => {
                tally.errors.lock().unwrap().push(e);
                tally.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

#[test]
fn three_upgrades_under_load_lose_no_request() {
    let _measuring = exclusive();
    let echo = Echo::start("e");
    let mut gw = Gateway::start_raw(&config(echo.addr, 0));
    let first_pid = gw.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally {
        ok: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        resent: AtomicUsize::new(0),
        errors: std::sync::Mutex::new(Vec::new()),
    });
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let (stop, tally) = (stop.clone(), tally.clone());
            let addr = gw.addr;
            std::thread::spawn(move || client_loop(addr, i % 2 == 0, stop, tally))
        })
        .collect();

    let mut pids = vec![first_pid];
    for v in 1..=3 {
        // 3 s of traffic on each generation (the window is what is checked).
        std::thread::sleep(Duration::from_secs(3));
        // The new config adds a route; the binary is the same.
        let text = render(&config(echo.addr, v), gw.addr, gw.admin, gw.dir.path());
        std::fs::write(&gw.config_path, text).unwrap();
        // The first instance runs in the foreground (no pid file); later ones are daemons.
        let mut cmd = Command::new(SIGER);
        cmd.arg("upgrade").arg("-c").arg(&gw.config_path);
        if v == 1 {
            cmd.arg("--pid").arg(first_pid.to_string());
        }
        // The new daemon inherits stderr (no error_log here): send it to a file, not a pipe
        // that would stay open as long as the daemon lives.
        let log = gw.dir.path().join(format!("upgrade-{v}.log"));
        cmd.stdout(std::process::Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        let status = cmd.status().unwrap();
        assert!(status.success(), "upgrade {v}: {}", std::fs::read_to_string(&log).unwrap_or_default());
        let new_pid = read_pid(&gw);
        assert!(!pids.contains(&new_pid), "upgrade {v} produced a new process");
        pids.push(new_pid);
        assert_eq!(get(gw.addr, &format!("/v{v}")).status, 200, "route /v{v} answers after upgrade {v}");
    }
    // And 3 s on the last one.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed, resent) =
        (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed), tally.resent.load(Ordering::Relaxed));
    eprintln!("upgrades under load: {ok} answered, {failed} failed, {resent} re-sent after an idle keep-alive close");
    let last = *pids.last().unwrap();
    // The foreground first process has exited; daemonised intermediates drain and exit too.
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0), "the original process exits cleanly");
    assert!(
        eventually(Duration::from_secs(10), || pids[1..pids.len() - 1].iter().all(|p| !pid_alive(*p))),
        "old processes exit"
    );
    assert!(pid_alive(last));
    assert_eq!(get(gw.addr, "/v3").status, 200);
    kill_pid(last);
    assert_eq!(failed, 0, "failed requests: {:?}", &tally.errors.lock().unwrap()[..failed.min(10)]);
    assert!(ok > 1000, "the load really ran ({ok} requests)");
}

#[test]
fn broken_config_on_reload_keeps_the_old_process() {
    let echo = Echo::start("e");
    let gw = Gateway::start_raw(&config(echo.addr, 0));
    let good = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(&gw.config_path, good.replace("service: s", "service: missing")).unwrap();
    let out = Command::new(SIGER)
        .arg("upgrade")
        .arg("-c")
        .arg(&gw.config_path)
        .arg("--pid")
        .arg(gw.pid().to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("routes[0].service") && stderr.contains("keeps serving"), "{stderr}");
    // Absence: the old process is still there half a second later.
    std::thread::sleep(Duration::from_millis(500));
    assert!(pid_alive(gw.pid()));
    assert_eq!(get(gw.addr, "/").status, 200, "the old process still serves");
}
