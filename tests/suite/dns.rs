//! Host names in `targets` and `dns_srv`, end to end: a real DNS server (dnsmasq, answering
//! from a hosts file and `--srv-host` records with a 1 s TTL) started by each test, real
//! `siger` and `siger-echo` processes. Backends that a name moves between listen on the same
//! port of different loopback addresses (127.0.0.2, 127.0.0.3, …), as pods behind one name do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::pki::Pki;
use crate::support::ports::Reserved;
use crate::support::*;
use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A dnsmasq answering only for `*.test`, from files the test rewrites.
struct Dns {
    child: Option<Child>,
    port: Reserved,
    dir: tempfile::TempDir,
}

fn dnsmasq_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("dnsmasq"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/dnsmasq"))
}

impl Dns {
    /// Start with `hosts` (lines of a hosts file) and SRV records (`--srv-host` values).
    fn start(hosts: &str, srv: &[String]) -> Dns {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hosts"), hosts).unwrap();
        let mut dns = Dns { child: None, port: Reserved::new(), dir };
        dns.spawn(srv);
        dns
    }

    fn spawn(&mut self, srv: &[String]) {
        let mut cmd = Command::new(dnsmasq_binary());
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--local=/test/",
            "--local-ttl=1",
            "--neg-ttl=1",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            "--pid-file=",
            "--log-facility=-",
        ])
        .arg(format!("--port={}", self.port.port()))
        .arg(format!("--addn-hosts={}", self.dir.path().join("hosts").display()));
        for s in srv {
            cmd.arg(format!("--srv-host={s}"));
        }
        let log = std::fs::File::create(self.dir.path().join("dnsmasq.log")).unwrap();
        cmd.stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().expect("dnsmasq (scripts/install-deps installs it)"));
        let addr = self.addr();
        assert!(
            eventually(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()),
            "dnsmasq did not start: {}",
            std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
        );
    }

    fn addr(&self) -> SocketAddr {
        self.port.addr()
    }

    /// Replace the hosts file and make dnsmasq read it again (SIGHUP).
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(self.dir.path().join("hosts"), hosts).unwrap();
        let pid = self.child.as_ref().unwrap().id();
        let status = Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Restart on the same port with other SRV records (dnsmasq reads `--srv-host` only at
    /// start; SIGHUP re-reads hosts files, not SRV records).
    fn restart_with_srv(&mut self, srv: &[String]) {
        self.stop();
        self.spawn(srv);
    }

    /// Stop the server: every query now fails (the port stays held, nothing answers).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An echo backend on `ip` and a port of its own, or the given one.
fn echo_at(name: &str, ip: &str, port: u16) -> Echo {
    Echo::start_on(name, &format!("{ip}:{port}"))
}

fn dns_head(dns: &Dns) -> String {
    format!("dns:\n  servers: [\"{}\"]\n  timeout: 500ms\n", dns.addr())
}

/// GET that reports failures instead of panicking (for load loops).
fn try_get(addr: SocketAddr, path: &str) -> Option<RawResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    read_response(&mut stream)
}

/// Requests sent one after another from a thread until stopped (at most `limit` of them, and
/// for at most a minute): which backend answered each, and the failures.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(Instant, String)>>>,
    failures: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, limit: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicUsize::new(0));
        let (s, a, f) = (stop.clone(), answers.clone(), failures.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            for _ in 0..limit {
                if s.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
                    break;
                }
                match try_get(addr, "/") {
                    Some(r) if r.status == 200 => a.lock().unwrap().push((Instant::now(), backend_of(&r))),
                    other => {
                        eprintln!(
                            "failed request: {:?}",
                            other.map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
                        );
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Load { stop, answers, failures, thread: Some(thread) }
    }

    /// When `backend` first answered after `since`.
    fn first_from(&self, backend: &str, since: Instant) -> Option<Instant> {
        self.answers.lock().unwrap().iter().find(|(t, b)| *t >= since && b == backend).map(|(t, _)| *t)
    }

    fn last_backend(&self) -> Option<String> {
        self.answers.lock().unwrap().last().map(|(_, b)| b.clone())
    }

    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (self.answers.lock().unwrap().len(), self.failures.load(Ordering::Relaxed))
    }
}

fn status_json(gw: &Gateway) -> serde_json::Value {
    get_with(gw.admin, "/status", &[("Accept", "application/json")]).json()
}

/// The `/status` entry of service `name`.
fn service_status(gw: &Gateway, name: &str) -> serde_json::Value {
    let status = status_json(gw);
    status["services"].as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap()
}

fn backends_of(gw: &Gateway, name: &str) -> Vec<String> {
    let s = service_status(gw, name);
    let mut out: Vec<String> =
        s["backends"].as_array().unwrap().iter().map(|b| b["address"].as_str().unwrap().to_string()).collect();
    out.sort();
    out
}

#[test]
fn a_name_moves_to_a_new_address_within_its_ttl_while_requests_flow() {
    let a = echo_at("a", "127.0.0.2", 0);
    let port = a.addr.port();
    let b = echo_at("b", "127.0.0.3", port);
    let dns = Dns::start("127.0.0.2 api.test\n", &[]);
    let gw = Gateway::start(&format!(
        "{}services:\n  web: {{targets: [\"api.test:{port}\"]}}\nroutes:\n  - {{path: /, service: web, auth: public}}\n",
        dns_head(&dns)
    ));
    // Resolved before the listeners opened: the first request already works.
    assert_eq!(backend_of(&get(gw.addr, "/")), "a");
    let web = service_status(&gw, "web");
    assert_eq!(web["discovery"], "dns");
    assert_eq!(web["dns"][0]["name"], format!("api.test:{port}"));
    assert_eq!(web["dns"][0]["kind"], "A/AAAA");
    assert_eq!(web["dns"][0]["addresses"], serde_json::json!([a.addr.to_string()]));
    assert_eq!(web["dns"][0]["ttl_secs"], 1);
    // The status page (admin `/`) shows it too.
    let page = String::from_utf8_lossy(&get(gw.admin, "/").body).into_owned();
    assert!(page.contains(&format!("A/AAAA api.test:{port} → {}", a.addr)), "{page}");

    let load = Load::start(gw.addr, 20_000);
    std::thread::sleep(Duration::from_millis(500));
    let moved = Instant::now();
    dns.set_hosts("127.0.0.3 api.test\n");
    assert!(eventually(Duration::from_secs(10), || load.first_from("b", moved).is_some()), "never reached b");
    let took = load.first_from("b", moved).unwrap() - moved;
    // Then every request goes to the new address.
    assert!(eventually(Duration::from_secs(5), || {
        std::thread::sleep(Duration::from_millis(300));
        load.last_backend().as_deref() == Some("b")
    }));
    std::thread::sleep(Duration::from_millis(300));
    let (answered, failed) = load.finish();
    eprintln!("the move reached routing after {took:?} ({answered} requests, {failed} failed)");
    assert_eq!(failed, 0, "no request may fail while the name moves");
    assert!(took <= Duration::from_secs(2), "TTL 1 s + 1 s, took {took:?}");
    assert_eq!(backends_of(&gw, "web"), vec![b.addr.to_string()]);
    let web = service_status(&gw, "web");
    assert_eq!(web["dns"][0]["addresses"], serde_json::json!([b.addr.to_string()]));
    drop(a);
}

#[test]
fn srv_records_give_targets_ports_and_weights() {
    let a = echo_at("a", "127.0.0.2", 0);
    let b = echo_at("b", "127.0.0.3", 0);
    let fallback = echo_at("fallback", "127.0.0.4", 0);
    let mut dns = Dns::start(
        "127.0.0.2 a.test\n127.0.0.3 b.test\n127.0.0.4 c.test\n",
        &[
            format!("_http._tcp.search.test,a.test,{},0,1", a.addr.port()),
            format!("_http._tcp.search.test,b.test,{},0,3", b.addr.port()),
            // A higher priority number: a fallback, not used while the first group exists.
            format!("_http._tcp.search.test,c.test,{},10,100", fallback.addr.port()),
        ],
    );
    let gw = Gateway::start(&format!(
        "{}services:\n  search: {{dns_srv: _http._tcp.search.test}}\nroutes:\n  - {{path: /, service: search, auth: public}}\n",
        dns_head(&dns)
    ));
    let counts = spread(gw.addr, "/", 400);
    eprintln!("split over SRV weights 1:3: {counts:?}");
    assert_eq!(counts.get("fallback"), None, "priority 10 is a fallback");
    let share_b = *counts.get("b").unwrap_or(&0) as f64 / 400.0;
    assert!((0.70..=0.80).contains(&share_b), "weight 3 of 4 → 75 %, got {share_b}");
    let search = service_status(&gw, "search");
    assert_eq!(search["dns"][0]["kind"], "SRV");
    assert_eq!(search["dns"][0]["name"], "_http._tcp.search.test");
    let mut shown: Vec<String> =
        search["dns"][0]["addresses"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    shown.sort();
    assert_eq!(shown, vec![format!("{}×1", a.addr), format!("{}×3", b.addr)]);

    // The records change (new weights, the first group gone): the split follows within the TTL.
    dns.restart_with_srv(&[
        format!("_http._tcp.search.test,b.test,{},0,1", b.addr.port()),
        format!("_http._tcp.search.test,c.test,{},0,1", fallback.addr.port()),
    ]);
    assert!(
        eventually(Duration::from_secs(10), || backends_of(&gw, "search").len() == 2
            && backends_of(&gw, "search").contains(&fallback.addr.to_string())),
        "{:?}",
        backends_of(&gw, "search")
    );
    let counts = spread(gw.addr, "/", 200);
    assert_eq!(
        (counts.get("b"), counts.get("fallback"), counts.get("a")),
        (Some(&100), Some(&100), None),
        "{counts:?}"
    );
}

#[test]
fn nxdomain_and_a_dead_server_keep_the_last_addresses() {
    let a = echo_at("a", "127.0.0.2", 0);
    let port = a.addr.port();
    let mut dns = Dns::start("127.0.0.2 api.test\n", &[]);
    let gw = Gateway::start(&format!(
        "{}services:\n  web: {{targets: [\"api.test:{port}\"]}}\nroutes:\n  - {{path: /, service: web, auth: public}}\n",
        dns_head(&dns)
    ));
    let failures = "siger_dns_lookup_failures_total{service=\"web\"}";
    assert_eq!(metric_of(&gw, failures), 0.0);
    let load = Load::start(gw.addr, 20_000);

    // The name disappears: NXDOMAIN (dnsmasq answers for *.test from its hosts file only).
    dns.set_hosts("");
    assert!(eventually(Duration::from_secs(10), || metric_of(&gw, failures) >= 2.0), "NXDOMAIN not counted");
    let web = service_status(&gw, "web");
    eprintln!("while the name is gone: {}", web["dns"][0]["error"]);
    assert!(web["dns"][0]["error"].as_str().is_some_and(|e| e.contains("NXDOMAIN")), "{web}");
    assert_eq!(web["dns"][0]["addresses"], serde_json::json!([a.addr.to_string()]), "last good set kept");
    assert_eq!(backends_of(&gw, "web"), vec![a.addr.to_string()]);

    // The DNS server dies: time-outs and refusals keep the set too.
    dns.stop();
    let before = metric_of(&gw, failures);
    // Retries back off (1 s, 2 s, 4 s, … 30 s): two more failures may take a while.
    assert!(
        eventually(Duration::from_secs(45), || metric_of(&gw, failures) >= before + 2.0),
        "dead server not counted"
    );
    assert_eq!(backends_of(&gw, "web"), vec![a.addr.to_string()]);
    eprintln!("while the server is dead: {}", service_status(&gw, "web")["dns"][0]["error"]);
    let (answered, failed) = load.finish();
    assert_eq!(failed, 0, "requests kept flowing to the last good address");
    assert!(answered > 50, "{answered}");
    let logs = gw.logs();
    assert!(logs.contains("keeping its last addresses"), "{logs}");
}

#[test]
fn an_unresolvable_name_at_start_is_reported_and_joins_when_it_resolves() {
    let a = echo_at("a", "127.0.0.2", 0);
    let port = a.addr.port();
    let dns = Dns::start("", &[]);
    let gw = Gateway::start(&format!(
        "{}services:\n  web: {{targets: [\"api.test:{port}\"]}}\n  other: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /web, service: web, auth: public}}\n  - {{path: /other, service: other, auth: public}}\n",
        dns_head(&dns),
        a.addr
    ));
    // The gateway serves what it can; the service without addresses answers 503.
    assert_eq!(get(gw.addr, "/other").status, 200);
    assert_eq!(get(gw.addr, "/web").status, 503);
    assert_ne!(http_get_status(gw.admin, "/ready"), Some(200));
    let logs = gw.logs();
    assert!(logs.contains(&format!("`api.test:{port}` does not resolve at start")), "{logs}");
    dns.set_hosts("127.0.0.2 api.test\n");
    assert!(eventually(Duration::from_secs(10), || get(gw.addr, "/web").status == 200), "name never joined");
    assert!(eventually(Duration::from_secs(5), || http_get_status(gw.admin, "/ready") == Some(200)));
}

#[test]
fn reload_applies_new_names_and_servers() {
    let a = echo_at("a", "127.0.0.2", 0);
    let port = a.addr.port();
    let b = echo_at("b", "127.0.0.3", port);
    let dns = Dns::start("127.0.0.2 one.test\n127.0.0.3 two.test\n", &[]);
    let config = |dns: &Dns, name: &str| {
        format!(
            "{}services:\n  web: {{targets: [\"{name}:{port}\"]}}\nroutes:\n  - {{path: /, service: web, auth: public}}\n",
            dns_head(dns)
        )
    };
    let gw = Gateway::start(&config(&dns, "one.test"));
    assert_eq!(backend_of(&get(gw.addr, "/")), "a");
    gw.rewrite(&format!("{HEAD}{}", config(&dns, "two.test")));
    assert_eq!(gw.reload().status, 200);
    // Primed during the reload: the new name answers from the first request on.
    assert_eq!(backend_of(&get(gw.addr, "/")), "b");
    assert_eq!(service_status(&gw, "web")["dns"][0]["name"], format!("two.test:{port}"));
    // Another server, which says two.test is elsewhere: `dns.servers` applies on reload.
    let other = Dns::start("127.0.0.2 two.test\n", &[]);
    gw.rewrite(&format!("{HEAD}{}", config(&other, "two.test")));
    assert_eq!(gw.reload().status, 200);
    assert!(eventually(Duration::from_secs(5), || backend_of(&get(gw.addr, "/")) == "a"), "new server not asked");
    drop((a, b));
}

#[test]
fn addresses_that_stay_keep_their_health() {
    let a = echo_at("a", "127.0.0.2", 0);
    let port = a.addr.port();
    // 127.0.0.4 listens nowhere: its health check fails.
    let dns = Dns::start("127.0.0.2 api.test\n127.0.0.4 api.test\n", &[]);
    let gw = Gateway::start(&format!(
        "{}services:\n  web:\n    targets: [\"api.test:{port}\"]\n    health_check: {{path: /health, interval: 300ms, timeout: 200ms, unhealthy: 1}}\nroutes:\n  - {{path: /, service: web, auth: public}}\n",
        dns_head(&dns)
    ));
    let down = format!("127.0.0.4:{port}");
    let health = |gw: &Gateway| -> HashMap<String, bool> {
        service_status(gw, "web")["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["address"].as_str().unwrap().to_string(), b["healthy"].as_bool().unwrap()))
            .collect()
    };
    assert!(eventually(Duration::from_secs(10), || health(&gw).get(&down) == Some(&false)));
    let b = echo_at("b", "127.0.0.3", port);
    dns.set_hosts("127.0.0.2 api.test\n127.0.0.3 api.test\n127.0.0.4 api.test\n");
    let load = Load::start(gw.addr, 5_000);
    assert!(eventually(Duration::from_secs(10), || health(&gw).len() == 3), "b never joined");
    // The address that stayed kept its record: still down, never routed to.
    assert_eq!(health(&gw).get(&down), Some(&false));
    assert!(eventually(Duration::from_secs(10), || health(&gw).get(&b.addr.to_string()) == Some(&true)));
    let (_, failed) = load.finish();
    assert_eq!(failed, 0);
}

#[test]
fn a_new_address_ramps_up_with_slow_start() {
    let a = echo_at("a", "127.0.0.2", 0);
    let port = a.addr.port();
    let dns = Dns::start("127.0.0.2 api.test\n", &[]);
    let gw = Gateway::start(&format!(
        "{}services:\n  web: {{targets: [\"api.test:{port}\"], slow_start: 30s}}\nroutes:\n  - {{path: /, service: web, auth: public}}\n",
        dns_head(&dns)
    ));
    let b = echo_at("b", "127.0.0.3", port);
    dns.set_hosts("127.0.0.2 api.test\n127.0.0.3 api.test\n");
    assert!(eventually(Duration::from_secs(10), || backends_of(&gw, "web").len() == 2), "b never joined");
    // Early in its 30 s ramp the newcomer gets far less than the half round robin would give.
    let counts = spread(gw.addr, "/", 200);
    eprintln!("first seconds of slow start: {counts:?}");
    let to_b = *counts.get("b").unwrap_or(&0);
    assert!(to_b < 60, "b took {to_b} of 200 right after joining");
    drop(b);
}

#[test]
fn a_and_aaaa_records_both_become_backends() {
    let v4 = echo_at("v4", "127.0.0.2", 0);
    let port = v4.addr.port();
    let v6 = Echo::start_on("v6", &format!("[::1]:{port}"));
    let dns = Dns::start("127.0.0.2 dual.test\n::1 dual.test\n", &[]);
    let gw = Gateway::start(&format!(
        "{}services:\n  web: {{targets: [\"dual.test:{port}\"]}}\nroutes:\n  - {{path: /, service: web, auth: public}}\n",
        dns_head(&dns)
    ));
    let mut expected = vec![v4.addr.to_string(), v6.addr.to_string()];
    expected.sort();
    assert_eq!(backends_of(&gw, "web"), expected);
    let counts = spread(gw.addr, "/", 20);
    assert_eq!((counts.get("v4"), counts.get("v6")), (Some(&10), Some(&10)), "{counts:?}");
}

#[test]
fn least_conn_counts_survive_a_change_of_answer() {
    let a = echo_at("a", "127.0.0.2", 0);
    let port = a.addr.port();
    let dns = Dns::start("127.0.0.2 api.test\n", &[]);
    let gw = Gateway::start(&format!(
        "{}services:\n  web: {{targets: [\"api.test:{port}\"], lb: least_conn, read_timeout: 20s}}\nroutes:\n  - {{path: /, service: web, auth: public}}\n",
        dns_head(&dns)
    ));
    let in_flight = |gw: &Gateway, addr: &str| -> Option<u64> {
        service_status(gw, "web")["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == addr)
            .and_then(|b| b["in_flight"].as_u64())
    };
    let gw_addr = gw.addr;
    let slow = std::thread::spawn(move || try_get(gw_addr, "/slow?delay_ms=7000").map(|r| r.status));
    let a_addr = a.addr.to_string();
    assert!(eventually(Duration::from_secs(5), || in_flight(&gw, &a_addr) == Some(1)), "slow request not in flight");
    let b = echo_at("b", "127.0.0.3", port);
    dns.set_hosts("127.0.0.2 api.test\n127.0.0.3 api.test\n");
    assert!(eventually(Duration::from_secs(5), || backends_of(&gw, "web").len() == 2), "b never joined");
    // a still counts its request: the next ones go to b, the least loaded.
    assert_eq!(in_flight(&gw, &a_addr), Some(1));
    assert_eq!(backend_of(&get(gw.addr, "/")), "b");
    assert_eq!(slow.join().unwrap(), Some(200));
    drop(b);
}

#[test]
fn tls_to_a_host_name_checks_the_certificate_against_the_name() {
    let pki = Pki::new("Internal CA");
    // A certificate for the name only: no IP SAN, as a service's certificate usually is.
    let cert = pki.server("api", &["api.test"], 365);
    let path = |p: &std::path::Path| p.display().to_string();
    let (c, k) = (path(&cert.cert), path(&cert.key));
    let backend = Echo::start_on_with("tls", "127.0.0.2:0", &["--tls-cert", &c, "--tls-key", &k]);
    let port = backend.addr.port();
    let dns = Dns::start("127.0.0.2 api.test\n", &[]);
    let gw = Gateway::start(&format!(
        "{}services:\n  web: {{targets: [\"api.test:{port}\"], tls: {{ca: {}}}}}\nroutes:\n  - {{path: /, service: web, auth: public}}\n",
        dns_head(&dns),
        path(&pki.ca())
    ));
    let r = get(gw.addr, "/");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(backend_of(&r), "tls");
}
