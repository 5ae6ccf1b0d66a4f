//! A real `redis-server` on a 127.0.0.1 port of its own (held while it is stopped, so it can be
//! started again there) with its own temp dir, no persistence; killed and reaped on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::eventually;
use super::ports::Reserved;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    args: Vec<std::ffi::OsString>,
    ready: fn(&RedisServer) -> bool,
    _port: Option<Reserved>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with_own_port(&[])
    }

    /// Start with extra arguments on a port of its own.
    pub fn start_with_own_port(extra: &[String]) -> RedisServer {
        let port = Reserved::new();
        let mut server = Self::start_with(port.addr(), extra);
        server._port = Some(port);
        server
    }

    /// Start on a given address, which the caller holds (e.g. a [`Reserved`] port).
    pub fn start_on(addr: SocketAddr) -> RedisServer {
        Self::start_with(addr, &[])
    }

    /// Start with extra arguments (e.g. `--replicaof`, `--cluster-enabled`).
    pub fn start_with(addr: SocketAddr, extra: &[String]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let port = addr.port().to_string();
        let mut args: Vec<std::ffi::OsString> =
            ["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                .iter()
                .map(Into::into)
                .collect();
        args.extend(["--dir".into(), dir.path().into()]);
        args.extend(extra.iter().map(Into::into));
        Self::spawn(addr, dir, &args, RedisServer::ping)
    }

    /// Run `redis-server` with `args` and wait until `ready` says it serves.
    fn spawn(
        addr: SocketAddr,
        dir: tempfile::TempDir,
        args: &[std::ffi::OsString],
        ready: fn(&RedisServer) -> bool,
    ) -> RedisServer {
        let mut server = RedisServer { child: None, addr, dir, args: args.to_vec(), ready, _port: None };
        server.start_again();
        server
    }

    /// Start a killed server again with the same arguments, on the same port; once more if the
    /// port was in use (a port the harness did not hold).
    pub fn start_again(&mut self) {
        if !self.try_start() && self.log().contains("Address already in use") {
            self.kill();
            if self.try_start() {
                return;
            }
        }
        assert!(
            self.child.is_some() && (self.ready)(self),
            "redis-server {:?} did not start:\n{}",
            self.args,
            self.log()
        );
    }

    /// Start the process (logging to its dir); whether it serves within 10 s.
    fn try_start(&mut self) -> bool {
        self.kill();
        let log = self.dir.path().join("redis.log");
        let _ = std::fs::remove_file(&log);
        // A sentinel's first argument is its config file; options follow it.
        let child = Command::new("redis-server")
            .args(&self.args)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (install it with ./scripts/install-deps)");
        self.child = Some(child);
        let mut exited = false;
        let ready = eventually(Duration::from_secs(10), || {
            exited = self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some());
            exited || (self.ready)(self)
        });
        ready && !exited
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// TLS only (no plain port), clients not asked for certificates, `AUTH` with `password`.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, password: &str) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let reserved = Reserved::new();
        let addr = reserved.addr();
        let port = addr.port().to_string();
        let mut args: Vec<std::ffi::OsString> = [
            "--port",
            "0",
            "--tls-port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
        ]
        .iter()
        .map(Into::into)
        .collect();
        args.extend(["--tls-cert-file".into(), cert.into(), "--tls-key-file".into(), key.into()]);
        args.extend(["--dir".into(), dir.path().into()]);
        // No plain port to PING: ready when the TLS port accepts.
        let mut server = Self::spawn(addr, dir, &args, |s| TcpStream::connect(s.addr).is_ok());
        server._port = Some(reserved);
        server
    }

    /// A sentinel watching `master` under `name`: quorum 2, down after 1 s, failover timeout 3 s.
    pub fn sentinel(master: SocketAddr, name: &str) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let reserved = Reserved::new();
        let addr = reserved.addr();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel monitor {name} {ip} {mport} 2\nsentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 3000\nsentinel parallel-syncs {name} 1\n",
                port = addr.port(),
                dir = dir.path().display(),
                ip = master.ip(),
                mport = master.port()
            ),
        )
        .unwrap();
        let mut server = Self::spawn(addr, dir, &[conf.into(), "--sentinel".into()], RedisServer::ping);
        server._port = Some(reserved);
        server
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Whether the server answers PING.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Run a command (inline protocol) and return the raw reply.
    pub fn command(&self, cmd: &str) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Stop the server now (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of three masters, each with its cluster bus on a held port, created with
/// `redis-cli --cluster create` and ready (`cluster_state:ok` on every node).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    _buses: Vec<Reserved>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        // Each node's cluster bus port too (by default its port + 10000, which nobody holds).
        let buses: Vec<Reserved> = (0..3).map(|_| Reserved::new()).collect();
        let nodes: Vec<RedisServer> = buses
            .iter()
            .map(|bus| {
                RedisServer::start_with_own_port(&[
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    "nodes.conf".into(),
                    "--cluster-port".into(),
                    bus.port().to_string(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ])
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
        RedisCluster { nodes, _buses: buses }
    }

    /// The nodes as `rate_limit.redis.cluster_nodes` lists them: `"a:1", "b:2", "c:3"`.
    pub fn node_list(&self) -> String {
        let quoted: Vec<String> = self.nodes.iter().map(|n| format!("\"{}\"", n.addr)).collect();
        quoted.join(", ")
    }
}
