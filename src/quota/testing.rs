//! Test support for quotas and usage against a real `redis-server` (single, or a three-master
//! Cluster made with `redis-cli --cluster create`), and a [`Scripts`] over a plain connection
//! standing in for the rate limiter's store until the wiring gives it `invoke`.
//!
//! The servers run on ports held with `SO_REUSEADDR` until they listen (as
//! `tests/support/ports.rs` does), in their own temp dir, without persistence; killed on drop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::scripts::Scripts;
use crate::ratelimit::StoreError;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use socket2::{Domain, SockAddr, Socket, Type};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 no other test is given while the socket lives.
fn reserve() -> (Socket, SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.bind(&SockAddr::from(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))).expect("bind 127.0.0.1:0");
    let addr = socket.local_addr().expect("local address").as_socket().expect("an inet address");
    (socket, addr)
}

/// Poll `check` every 20 ms until it holds or `timeout` passes.
pub(crate) fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
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

/// A running `redis-server`.
pub(crate) struct TestRedis {
    child: Option<Child>,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    _dir: tempfile::TempDir,
    _reserved: Vec<Socket>,
}

impl TestRedis {
    /// One server.
    pub(crate) fn start() -> TestRedis {
        Self::start_with(&[], Vec::new())
    }

    fn start_with(extra: &[String], mut reserved: Vec<Socket>) -> TestRedis {
        let (socket, addr) = reserve();
        reserved.push(socket);
        let dir = tempfile::tempdir().unwrap();
        let mut server = TestRedis { child: None, addr, _dir: dir, _reserved: reserved };
        server.run(extra);
        server
    }

    fn run(&mut self, extra: &[String]) {
        let child = Command::new("redis-server")
            .args(["--port", &self.addr.port().to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self._dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (install it with ./scripts/install-deps)");
        self.child = Some(child);
        assert!(eventually(Duration::from_secs(15), || self.query(&["PING"]).is_some()), "redis-server did not start");
    }

    /// Start a killed single server again on its port (empty: nothing is persisted).
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.run(&[]);
    }

    /// Three masters in a Cluster, every slot served.
    pub(crate) fn cluster() -> Vec<TestRedis> {
        let nodes: Vec<TestRedis> = (0..3)
            .map(|_| {
                // The cluster bus port is held too (else it is port + 10000, unguarded).
                let (bus, bus_addr) = reserve();
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus_addr.port().to_string(),
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ]
                .map(String::from);
                TestRedis::start_with(&extra, vec![bus])
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
        let ok = |n: &TestRedis| n.query(&["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok"));
        assert!(eventually(Duration::from_secs(20), || nodes.iter().all(ok)), "the cluster did not form");
        nodes
    }

    /// `redis://127.0.0.1:port`.
    pub(crate) fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Run a command on this node; the reply as text (`None`: no answer).
    pub(crate) fn query(&self, args: &[&str]) -> Option<String> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut conn = client.get_connection_with_timeout(Duration::from_millis(500)).ok()?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let value: redis::Value = cmd.query(&mut conn).ok()?;
        Some(match value {
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::VerbatimString { text, .. } => text,
            redis::Value::SimpleString(s) => s,
            redis::Value::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        })
    }

    /// Stop it now (SIGKILL).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain connection that runs scripts (the shape of the rate limiter's store: timeouts and
/// failures come back as its [`StoreError`]s).
pub(crate) struct PlainScripts {
    link: Link,
    timeout: Duration,
}

#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for PlainScripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlainScripts")
    }
}

impl PlainScripts {
    /// To one server (reconnecting by itself, as the production pool does).
    pub(crate) async fn single(url: &str, timeout: Duration) -> PlainScripts {
        let client = redis::Client::open(url).unwrap();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, config).unwrap();
        PlainScripts { link: Link::Single(conn), timeout }
    }

    /// To a Cluster through its seed nodes.
    pub(crate) async fn cluster(nodes: &[TestRedis], timeout: Duration) -> PlainScripts {
        let urls: Vec<String> = nodes.iter().map(TestRedis::url).collect();
        let client = redis::cluster::ClusterClient::builder(urls).response_timeout(timeout).build().unwrap();
        PlainScripts { link: Link::Cluster(client.get_async_connection().await.unwrap()), timeout }
    }

    async fn run<C: ConnectionLike>(
        &self,
        conn: &mut C,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> Result<redis::Value, StoreError> {
        let mut call = script.prepare_invoke();
        for k in keys {
            call.key(k);
        }
        for a in args {
            call.arg(a);
        }
        tokio::time::timeout(self.timeout, call.invoke_async(conn))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
            .map_err(|e| StoreError::Redis(e.to_string()))
    }
}

#[async_trait::async_trait]
impl Scripts for PlainScripts {
    async fn invoke(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> Result<redis::Value, StoreError> {
        match self.link.clone() {
            Link::Single(mut conn) => self.run(&mut conn, script, keys, args).await,
            Link::Cluster(mut conn) => self.run(&mut conn, script, keys, args).await,
        }
    }
}
