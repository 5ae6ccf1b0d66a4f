//! `server`, `listen`, `admin`, `trusted_proxies` and `limits`: the process and its listeners.

use super::*;

/// Default place for the pid file and upgrade socket when the config names none: the system
/// temp dir (`TMPDIR`), as Pingora does. Production configs set both (systemd `RuntimeDirectory`).
pub(super) fn runtime_file(name: &str) -> String {
    std::env::temp_dir().join(name).to_string_lossy().into_owned()
}

pub(super) fn check_server(raw: &RawServer, p: &mut Problems) -> ServerSettings {
    let threads = raw.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    if threads == 0 || threads > 1024 {
        p.add("server.threads", "must be between 1 and 1024");
    }
    let grace_period = dur(&raw.grace_period, Duration::from_secs(5));
    let graceful_shutdown_timeout = dur(&raw.graceful_shutdown_timeout, Duration::from_secs(10));
    for (key, value) in [
        ("server.pid_file", &raw.pid_file),
        ("server.upgrade_sock", &raw.upgrade_sock),
        ("server.error_log", &raw.error_log),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            p.add(key, "must not be empty");
        }
    }
    if raw.upstream_keepalive_pool_size == Some(0) {
        p.add("server.upstream_keepalive_pool_size", "must be at least 1");
    }
    ServerSettings {
        threads: threads.max(1),
        pid_file: raw.pid_file.clone().unwrap_or_else(|| runtime_file("siger.pid")),
        upgrade_sock: raw.upgrade_sock.clone().unwrap_or_else(|| runtime_file("siger_upgrade.sock")),
        error_log: raw.error_log.clone(),
        user: raw.user.clone(),
        group: raw.group.clone(),
        grace_period,
        graceful_shutdown_timeout,
        work_stealing: raw.work_stealing.unwrap_or(true),
        upstream_keepalive_pool_size: raw.upstream_keepalive_pool_size.unwrap_or(128),
        watch_config: raw.watch_config.unwrap_or(false),
    }
}

pub(super) fn check_listeners(raw: &[RawListener], base: &Path, p: &mut Problems) -> Vec<Listener> {
    if raw.is_empty() {
        p.add("listen", "at least one listener is required");
    }
    let mut out: Vec<Listener> = Vec::new();
    for (i, l) in raw.iter().enumerate() {
        let (addr, cert, key, path) = match l {
            RawListener::Plain(a) => (a.clone(), None, None, format!("listen[{i}]")),
            RawListener::Detailed(d) => (d.addr.clone(), d.cert.clone(), d.key.clone(), format!("listen[{i}].addr")),
        };
        let Some(socket) = parse_socket(&path, &addr, p) else { continue };
        if out.iter().any(|o| o.socket == socket) {
            p.add(&path, format!("`{addr}` is listed twice"));
        }
        let tls = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert_ok = read_file(&format!("listen[{i}].cert"), base, &cert, p).map(|(path_buf, text)| {
                    if !text.contains("-----BEGIN CERTIFICATE-----") {
                        p.add(
                            format!("listen[{i}].cert"),
                            format!("`{}` holds no PEM certificate", path_buf.display()),
                        );
                    }
                    path_buf
                });
                let key_ok = read_file(&format!("listen[{i}].key"), base, &key, p).map(|(path_buf, text)| {
                    if !text.contains("PRIVATE KEY-----") {
                        p.add(format!("listen[{i}].key"), format!("`{}` holds no PEM private key", path_buf.display()));
                    }
                    path_buf
                });
                match (cert_ok, key_ok) {
                    (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                    _ => None,
                }
            }
            _ => {
                p.add(format!("listen[{i}]"), "a TLS listener needs both `cert` and `key`");
                None
            }
        };
        out.push(Listener { addr, socket, tls });
    }
    out
}

pub(super) fn check_trusted(raw: &[String], p: &mut Problems) -> TrustedProxies {
    let mut nets = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        if let Ok(net) = s.parse::<IpNet>() {
            nets.push(net.trunc());
        } else if let Ok(ip) = s.parse::<IpAddr>() {
            nets.push(IpNet::from(ip));
        } else {
            p.add(format!("trusted_proxies[{i}]"), format!("`{s}` is not a CIDR (e.g. 10.0.0.0/8) or an IP address"));
        }
    }
    TrustedProxies(nets)
}

pub(super) fn check_limits(raw: &RawLimits, p: &mut Problems) -> Limits {
    let max_body = raw.max_body.map(|s| s.0).unwrap_or(10 << 20);
    let max_header_bytes = raw.max_header_bytes.map(|s| s.0).unwrap_or(16 << 10);
    // Pingora reads at most 1 MiB of request header; a bigger limit could never be reached.
    if !(1024..=(1 << 20)).contains(&max_header_bytes) {
        p.add("limits.max_header_bytes", "must be between 1KiB and 1MiB");
    }
    let idle_timeout = dur(&raw.idle_timeout, Duration::from_secs(60));
    if idle_timeout < Duration::from_secs(1) {
        p.add("limits.idle_timeout", "must be at least 1s (keep-alive timeouts have second granularity)");
    }
    if raw.keepalive_requests == Some(0) {
        p.add("limits.keepalive_requests", "must be at least 1");
    }
    Limits {
        max_body,
        max_header_bytes: max_header_bytes as usize,
        idle_timeout,
        keepalive_requests: raw.keepalive_requests,
        underscores_in_headers: raw.underscores_in_headers.unwrap_or(false),
    }
}
