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

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SIGER: &str = env!("CARGO_BIN_EXE_siger");
pub const ECHO: &str = env!("CARGO_BIN_EXE_siger-echo");

/// A free TCP port on 127.0.0.1 (bind :0, read, release), never the same one twice in this
/// test process (tests run in parallel; the kernel may hand a just-released port out again).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
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

/// A running `siger-echo` backend.
pub struct Echo {
    child: Child,
    pub addr: SocketAddr,
    pub name: String,
}

impl Echo {
    /// Start on an ephemeral port.
    pub fn start(name: &str) -> Echo {
        Self::start_on(name, "127.0.0.1:0")
    }

    /// Start on a given address (e.g. to restart on the same port).
    pub fn start_on(name: &str, listen: &str) -> Echo {
        Self::start_with(name, listen, &[])
    }

    /// Start with extra arguments (e.g. `--delay-ms 300`).
    pub fn start_with(name: &str, listen: &str, extra: &[&str]) -> Echo {
        let mut child = Command::new(ECHO)
            .args(["--listen", listen, "--name", name])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn siger-echo");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr =
            line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("echo said {line:?}")).parse().unwrap();
        Echo { child, addr, name: name.to_string() }
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

impl Gateway {
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
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config_path = dir.path().join("siger.yaml");
        std::fs::write(&config_path, render(template, addr, admin, dir.path())).unwrap();
        let mut gw = Gateway { child: None, addr, admin, dir, config_path };
        gw.spawn_within(&[], &[], wait);
        gw
    }

    /// Start with extra environment variables.
    pub fn start_env(template: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config_path = dir.path().join("siger.yaml");
        std::fs::write(&config_path, render(template, addr, admin, dir.path())).unwrap();
        let mut gw = Gateway { child: None, addr, admin, dir, config_path };
        gw.spawn(&[], env);
        gw
    }

    /// Start with a full template (placeholders as in [`render`]) that `place` writes where it
    /// likes under the gateway's temp dir (given the dir and the rendered text); `place`
    /// returns the path `-c` names. For layouts other than one plain file (e.g. a Kubernetes
    /// ConfigMap volume, with its symlinks).
    pub fn start_placed(template: &str, place: impl FnOnce(&Path, &str) -> PathBuf) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config_path = place(dir.path(), &render(template, addr, admin, dir.path()));
        let mut gw = Gateway { child: None, addr, admin, dir, config_path };
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
            http_get_status(admin, "/health") == Some(200)
        });
        assert!(ok, "siger did not come up:\n{}", self.logs());
        // Pingora starts its services independently: the admin listener can answer before the
        // public one accepts.
        let addr = self.addr;
        let ok =
            eventually(Duration::from_secs(10), || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok());
        assert!(ok, "siger's public listener did not come up:\n{}", self.logs());
        // Pingora installs its SIGTERM/SIGQUIT handlers after the services start; a signal
        // before that would kill the process outright.
        let pid = self.pid();
        // An upgrading process (`-u`) is still waiting for the old one's sockets here.
        let upgrading = args.contains(&"-u");
        assert!(
            upgrading || eventually(Duration::from_secs(5), || catches_signal(pid, 15) && catches_signal(pid, 3)),
            "signal handlers"
        );
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

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Send raw bytes and read one response (the request should carry `Connection: close`).
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(request).unwrap();
    if request.starts_with(b"HEAD ") {
        return read_response_head(&mut stream).expect("a response");
    }
    read_response(&mut stream).expect("a response")
}

/// Read the head of a response that has no body whatever its headers say (the answer to HEAD).
pub fn read_response_head(stream: &mut TcpStream) -> Option<RawResponse> {
    read_message(stream, false)
}

/// Read one response from a stream (Content-Length, chunked or close-delimited bodies).
pub fn read_response(stream: &mut TcpStream) -> Option<RawResponse> {
    read_message(stream, true)
}

fn read_message(stream: &mut TcpStream, with_body: bool) -> Option<RawResponse> {
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    if reader.read_line(&mut status_line).ok()? == 0 {
        return None;
    }
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if !with_body {
    } else if let Some(len) = get("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body).ok()?;
    } else if get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if status != 204 && status != 304 && !(100..200).contains(&status) {
        let _ = reader.read_to_end(&mut body);
    }
    Some(RawResponse { status, headers, body })
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
