//! A real `redis-server` on an ephemeral 127.0.0.1 port with its own temp dir, no persistence;
//! killed and reaped on drop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::{eventually, free_port};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_on(format!("127.0.0.1:{}", free_port()).parse().unwrap())
    }

    /// Start on a given address (e.g. to restart on the same port).
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
        let child = Command::new("redis-server")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (install it with ./scripts/install-deps)");
        let server = RedisServer { child: Some(child), addr, dir };
        assert!(eventually(Duration::from_secs(10), || ready(&server)), "redis-server {args:?} did not start");
        server
    }

    /// TLS only (no plain port), clients not asked for certificates, `AUTH` with `password`.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, password: &str) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
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
        Self::spawn(addr, dir, &args, |s| TcpStream::connect(s.addr).is_ok())
    }

    /// A sentinel watching `master` under `name`: quorum 2, down after 1 s, failover timeout 3 s.
    pub fn sentinel(master: SocketAddr, name: &str) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
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
        Self::spawn(addr, dir, &[conf.into(), "--sentinel".into()], RedisServer::ping)
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
