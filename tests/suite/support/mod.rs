//! Test support: real `siger` and `siger-echo` processes on ephemeral 127.0.0.1 ports, killed
//! and reaped on drop, plus small HTTP helpers (a raw-bytes client for paths that a URL library
//! would normalise away).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod consul;
pub mod grpc;
pub mod http1;
pub mod jwt;
pub mod nats;
pub mod otlp;
pub mod pki;
pub mod ports;
pub mod redis_server;

pub use ports::{DeadPort, Reserved};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SIGER: &str = env!("CARGO_BIN_EXE_siger");
pub const ECHO: &str = env!("CARGO_BIN_EXE_siger-echo");

/// Held by every test that measures time or memory, for its whole run: all the tests share one
/// process (and run side by side), so without it two measurements could load the machine for
/// each other. Tests that only check behaviour do not take it.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A measuring test that failed poisons the lock; the next one may still measure.
    MEASURING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How many of `durations` exceed `bound` (a few slow ones are a loaded machine; most of them a
/// wait in the code under test).
pub fn slower_than(durations: &[Duration], bound: Duration) -> usize {
    durations.iter().filter(|d| **d > bound).count()
}

/// The median of `durations`.
pub fn median(durations: &[Duration]) -> Duration {
    let mut sorted = durations.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// Poll `check` every 20 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `siger-echo` backend. Started on a [`Reserved`] port it keeps: once killed, its
/// address refuses connections (no other test's server can take it) until it is started again.
pub struct Echo {
    child: Child,
    pub addr: SocketAddr,
    pub name: String,
    args: Vec<String>,
    _port: Option<Reserved>,
}

impl Echo {
    /// Start on a port of its own.
    /// How many requests this echo has answered (its control endpoint does not count itself).
    pub fn served(&self) -> u64 {
        get(self.addr, "/__control/served").json()["served"].as_u64().unwrap()
    }

    pub fn start(name: &str) -> Echo {
        Self::start_with(name, &[])
    }

    /// Start on a port of its own with extra arguments (e.g. `--delay-ms 300`).
    pub fn start_with(name: &str, extra: &[&str]) -> Echo {
        let port = Reserved::new();
        let mut echo = Self::spawn(name, port.addr(), extra);
        echo._port = Some(port);
        echo
    }

    /// Start on a given address, which the caller holds (e.g. a [`Reserved`] port).
    /// Port 0 lets the echo pick its own port (no race: it binds it itself).
    pub fn start_on(name: &str, listen: &str) -> Echo {
        Self::start_on_with(name, listen, &[])
    }

    /// [`start_on`](Self::start_on) with extra arguments.
    pub fn start_on_with(name: &str, listen: &str, extra: &[&str]) -> Echo {
        Self::spawn(name, listen.parse().expect("a socket address"), extra)
    }

    fn spawn(name: &str, listen: SocketAddr, extra: &[&str]) -> Echo {
        let args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let (child, addr) = Self::run(name, listen, &args);
        Echo { child, addr, name: name.to_string(), args, _port: None }
    }

    /// Run siger-echo and wait for it to say where it listens.
    fn run(name: &str, listen: SocketAddr, args: &[String]) -> (Child, SocketAddr) {
        let mut child = Command::new(ECHO)
            .args(["--listen", &listen.to_string(), "--name", name])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn siger-echo");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let said: Option<SocketAddr> = line.trim().strip_prefix("listening on ").and_then(|a| a.parse().ok());
        let addr = said.unwrap_or_else(|| panic!("siger-echo said {line:?}"));
        if listen.port() != 0 {
            assert_eq!(addr, listen, "siger-echo said {line:?}");
        }
        (child, addr)
    }

    /// Start again (after [`kill`](Self::kill)) on the same address with the same arguments.
    pub fn start_again(&mut self) {
        self.kill();
        self.child = Self::run(&self.name, self.addr, &self.args).0;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop the backend now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running gateway with its own temp dir (config, pid file, upgrade socket, stderr log).
pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// The listener and admin ports, held for the gateway's life (restarts and upgrades too).
    _ports: [Reserved; 2],
}

/// Replace `{{LISTEN}}`, `{{ADMIN}}`, `{{DIR}}` (and `{{LISTEN_PORT}}`, `{{ADMIN_PORT}}`) in a
/// config template.
pub fn render(template: &str, listen: SocketAddr, admin: SocketAddr, dir: &Path) -> String {
    template
        .replace("{{LISTEN_PORT}}", &listen.port().to_string())
        .replace("{{ADMIN_PORT}}", &admin.port().to_string())
        .replace("{{LISTEN}}", &listen.to_string())
        .replace("{{ADMIN}}", &admin.to_string())
        .replace("{{DIR}}", &dir.display().to_string())
}

/// The standard head of a test config: server settings, one listener, the admin listener.
pub const HEAD: &str = "server:\n  threads: 2\n  pid_file: {{DIR}}/siger.pid\n  upgrade_sock: {{DIR}}/upgrade.sock\n  grace_period: 0s\n  graceful_shutdown_timeout: 2s\nlisten: [\"{{LISTEN}}\"]\nadmin:\n  listen: \"{{ADMIN}}\"\n";

/// `HEAD` with its one listener serving HTTP/2 without TLS (h2c; HTTP/1 is served on it too).
pub const H2C_HEAD: &str = "server:\n  threads: 2\n  pid_file: {{DIR}}/siger.pid\n  upgrade_sock: {{DIR}}/upgrade.sock\n  grace_period: 0s\n  graceful_shutdown_timeout: 2s\nlisten:\n  - {addr: \"{{LISTEN}}\", h2c: true}\nadmin:\n  listen: \"{{ADMIN}}\"\n";

impl Gateway {
    /// Start with `H2C_HEAD` + `body` and wait until the admin `/health` answers.
    pub fn start_h2c(body: &str) -> Gateway {
        Self::start_raw(&format!("{H2C_HEAD}{body}"))
    }

    /// Start with `HEAD` + `body` and wait until the admin `/health` answers.
    pub fn start(body: &str) -> Gateway {
        Self::start_raw(&format!("{HEAD}{body}"))
    }

    /// Start with a full template (placeholders as in [`render`]).
    pub fn start_raw(template: &str) -> Gateway {
        Self::start_env(template, &[])
    }

    /// Start with a full template, allowing `wait` for the start (a config that compiles the
    /// WAF's rule set takes seconds in a debug build on a busy machine).
    pub fn start_raw_within(template: &str, wait: Duration) -> Gateway {
        Self::launch_within(template, &[], [Reserved::new(), Reserved::new()], wait)
    }

    /// Start with extra environment variables.
    pub fn start_env(template: &str, env: &[(&str, &str)]) -> Gateway {
        Self::launch(template, env, [Reserved::new(), Reserved::new()])
    }

    /// Start with a full template on ports the caller reserved: the listener's, the admin's.
    pub fn start_on(template: &str, ports: [Reserved; 2]) -> Gateway {
        Self::launch(template, &[], ports)
    }

    fn launch(template: &str, env: &[(&str, &str)], ports: [Reserved; 2]) -> Gateway {
        Self::launch_within(template, env, ports, Duration::from_secs(20))
    }

    fn launch_within(template: &str, env: &[(&str, &str)], ports: [Reserved; 2], wait: Duration) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let (addr, admin) = (ports[0].addr(), ports[1].addr());
        let config_path = dir.path().join("siger.yaml");
        std::fs::write(&config_path, render(template, addr, admin, dir.path())).unwrap();
        let mut gw = Gateway { child: None, addr, admin, dir, config_path, _ports: ports };
        gw.spawn_within(&[], env, wait);
        gw
    }

    /// Start with a full template (placeholders as in [`render`]) that `place` writes where it
    /// likes under the gateway's temp dir (given the dir and the rendered text); `place`
    /// returns the path `-c` names. For layouts other than one plain file (e.g. a Kubernetes
    /// ConfigMap volume, with its symlinks).
    pub fn start_placed(template: &str, place: impl FnOnce(&Path, &str) -> PathBuf) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let ports = [Reserved::new(), Reserved::new()];
        let (addr, admin) = (ports[0].addr(), ports[1].addr());
        let config_path = place(dir.path(), &render(template, addr, admin, dir.path()));
        let mut gw = Gateway { child: None, addr, admin, dir, config_path, _ports: ports };
        gw.spawn(&[], &[]);
        gw
    }

    /// Replace the config file with `template` (placeholders as in [`render`], with this
    /// gateway's addresses), written to a temporary file and renamed into place, as editors
    /// and deploy tools do.
    pub fn rewrite(&self, template: &str) {
        let text = render(template, self.addr, self.admin, self.dir.path());
        let tmp = self.dir.path().join(".siger.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    /// `POST /config/reload` on the admin listener.
    pub fn reload(&self) -> RawResponse {
        request(self.admin, "POST", "/config/reload", &[("Content-Type", "application/json")], b"")
    }

    /// The config generation in force (admin `GET /config`).
    pub fn generation(&self) -> u64 {
        get(self.admin, "/config").json()["generation"].as_u64().unwrap()
    }

    /// Path of the gateway's stderr (logs, access log).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// Launch the binary with extra args and wait for the admin listener.
    pub fn spawn(&mut self, args: &[&str], env: &[(&str, &str)]) {
        self.spawn_within(args, env, Duration::from_secs(20));
    }

    /// [`Gateway::spawn`], waiting at most `wait` for the admin listener.
    pub fn spawn_within(&mut self, args: &[&str], env: &[(&str, &str)], wait: Duration) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut cmd = Command::new(SIGER);
        cmd.arg("-c").arg(&self.config_path).args(args).stdout(Stdio::null()).stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        self.child = Some(cmd.spawn().expect("spawn siger"));
        let admin = self.admin;
        let ok = eventually(wait, || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("siger exited with {status} during start-up:\n{}", self.logs());
            }
            self.assert_ports_free();
            http_get_status(admin, "/health") == Some(200)
        });
        assert!(ok, "siger did not come up:\n{}", self.logs());
        let pid = self.pid();
        // An upgrading process (`-u`) is still waiting for the old one's sockets here: the old
        // one answers.
        let upgrading = args.contains(&"-u");
        // Pingora starts its services independently: the admin listener can answer before the
        // public one accepts. Both must be this process's own sockets (not another's that took
        // the port).
        let (addr, admin) = (self.addr, self.admin);
        let ok = eventually(Duration::from_secs(10), || {
            self.assert_ports_free();
            if upgrading {
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            } else {
                ports::listens(pid, addr) && ports::listens(pid, admin)
            }
        });
        assert!(ok, "siger's public listener did not come up:\n{}", self.logs());
        // Pingora installs its SIGTERM/SIGQUIT handlers after the services start; a signal
        // before that would kill the process outright.
        assert!(
            upgrading || eventually(Duration::from_secs(5), || catches_signal(pid, 15) && catches_signal(pid, 3)),
            "signal handlers"
        );
    }

    /// Pingora retries a bind that fails with EADDRINUSE for 30 s, logging each try: on a port
    /// the harness reserved, another process listens there (what a port race leaves; waiting
    /// would not cure it). Fail now and say so.
    fn assert_ports_free(&self) {
        let logs = self.logs();
        assert!(!logs.contains(" is in use, will try again"), "a port of the gateway is taken:\n{logs}");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Detach the running process (e.g. the old one of an upgrade); the caller reaps it.
    pub fn take_child(&mut self) -> Child {
        self.child.take().expect("a running gateway")
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Parsed access-log lines (those with a `request_id` and `status`).
    pub fn access_lines(&self) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("request_id").is_some() && v.get("status").is_some())
            .collect()
    }

    /// Send a signal to the gateway process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Wait for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().ok().flatten() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// VmHWM (peak RSS) of the gateway in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- siger log ----\n{}", self.logs());
        }
    }
}

/// Whether the process has a handler installed for signal `sig` (SigCgt in /proc/<pid>/status).
pub fn catches_signal(pid: u32, sig: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

/// A field of /proc/<pid>/status in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A response as the tests read it ([`http1::read_response`]): status, headers, de-chunked body.
pub type RawResponse = http1::Response;

/// Send raw bytes and read one response (the request should carry `Connection: close`).
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(request).unwrap();
    let method = request.split(|b| *b == b' ').next().unwrap_or_default();
    read_message(&mut stream, &String::from_utf8_lossy(method)).expect("a response")
}

/// Read a response that has no body whatever its headers say: the answer to HEAD, or an
/// interim `100 Continue`.
pub fn read_response_head(stream: &mut TcpStream) -> Option<RawResponse> {
    read_message(stream, "HEAD")
}

/// Read one response to a GET-like request from a stream (Content-Length, chunked or
/// close-delimited bodies).
pub fn read_response(stream: &mut TcpStream) -> Option<RawResponse> {
    read_message(stream, "GET")
}

/// One response, or `None` when the connection ends (closed, reset, timed out) before a whole
/// one arrived. Framing the reader refuses is a failure of the server under test, not an end.
fn read_message(stream: &mut TcpStream, method: &str) -> Option<RawResponse> {
    match http1::read_response(&mut BufReader::new(stream), method) {
        Ok(response) => response,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => panic!("a response that is not HTTP/1: {e}"),
        Err(_) => None,
    }
}

/// `GET path` with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> RawResponse {
    get_with(addr, path, &[])
}

/// `GET path` with extra header lines.
pub fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    request(addr, "GET", path, headers, b"")
}

/// Any method, with a body (sent with Content-Length).
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> RawResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw_request(addr, &bytes)
}

/// Status of a GET, or None if the connection failed.
pub fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    read_response(&mut stream).map(|r| r.status)
}

/// A blocking reqwest client that ignores proxy environment variables.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap()
}

/// Which echo backend answered (the `backend` field of its JSON).
pub fn backend_of(resp: &RawResponse) -> String {
    resp.json()["backend"].as_str().unwrap_or("").to_string()
}

/// Byte `i` of siger-echo's `/bytes/<n>` pattern.
pub fn echo_pattern(i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(7) % 256) as u8
}

/// Value of one sample in a Prometheus text exposition, e.g.
/// `metric(&text, "siger_backends{service=\"s\",state=\"unhealthy\"}")`.
pub fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

/// The admin `/metrics` text.
pub fn scrape(gw: &Gateway) -> String {
    String::from_utf8_lossy(&get(gw.admin, "/metrics").body).into_owned()
}

/// Count how many of `n` sequential GETs each backend answered.
pub fn spread(addr: SocketAddr, path: &str, n: usize) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for _ in 0..n {
        let r = get(addr, path);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        *counts.entry(backend_of(&r)).or_insert(0) += 1;
    }
    counts
}

/// The value of one Prometheus series (exact name with labels) from the admin `/metrics`; 0 when absent.
pub fn metric_of(gw: &Gateway, series: &str) -> f64 {
    metric(&scrape(gw), series).unwrap_or(0.0)
}
