//! `server`, `listen`, `admin`, `trusted_proxies` and `limits`: the process and its listeners.

use super::*;

pub(super) fn check_server(raw: &RawServer, p: &mut Problems) -> ServerSettings {
    let d = ServerSettings::default();
    let threads = raw.threads.unwrap_or(d.threads);
    if threads == 0 || threads > 1024 {
        p.add("server.threads", "must be between 1 and 1024");
    }
    let grace_period = dur(&raw.grace_period, d.grace_period);
    let graceful_shutdown_timeout = dur(&raw.graceful_shutdown_timeout, d.graceful_shutdown_timeout);
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
        pid_file: raw.pid_file.clone().unwrap_or(d.pid_file),
        upgrade_sock: raw.upgrade_sock.clone().unwrap_or(d.upgrade_sock),
        error_log: raw.error_log.clone(),
        user: raw.user.clone(),
        group: raw.group.clone(),
        grace_period,
        graceful_shutdown_timeout,
        work_stealing: raw.work_stealing.unwrap_or(d.work_stealing),
        upstream_keepalive_pool_size: raw.upstream_keepalive_pool_size.unwrap_or(d.upstream_keepalive_pool_size),
        watch_config: raw.watch_config.unwrap_or(d.watch_config),
    }
}

pub(super) fn check_admin(raw: &RawAdmin, listeners: &[Listener], p: &mut Problems) -> Option<AdminSettings> {
    let socket = parse_socket("admin.listen", &raw.listen, p)?;
    if listeners.iter().any(|l| l.socket == socket) {
        p.add("admin.listen", "must differ from every public listener: admin endpoints are never served publicly");
    }
    if !socket.ip().is_loopback() {
        p.warn(
            "admin.listen",
            format!(
                "`{}` is not a loopback address: anyone who can reach it can reload the configuration, purge the cache and read /metrics and /status (no authentication); bind 127.0.0.1 or [::1], or firewall the port",
                raw.listen
            ),
        );
    }
    let mut allowed_hosts = Vec::with_capacity(raw.allowed_hosts.len());
    for (i, entry) in raw.allowed_hosts.iter().enumerate() {
        let key = format!("admin.allowed_hosts[{i}]");
        match admin_host_pattern(entry) {
            Ok(pattern) if is_always_allowed_host(&pattern) => p.warn(
                key,
                format!("`{entry}` is always allowed (IP addresses and localhost names are): listing it has no effect"),
            ),
            Ok(pattern) => allowed_hosts.push(pattern),
            Err(why) => p.add(key, format!("`{entry}` {why}")),
        }
    }
    Some(AdminSettings { listen: raw.listen.clone(), socket, allowed_hosts })
}

/// An `admin.allowed_hosts` entry as it is matched: a DNS name, optionally `*.` first (any name
/// under it), lower-case, without a trailing dot. IP literals pass (they are always allowed).
fn admin_host_pattern(entry: &str) -> Result<String, &'static str> {
    let name = entry.trim().trim_end_matches('.').to_ascii_lowercase();
    if is_always_allowed_host(&name) {
        return Ok(name);
    }
    if name.contains("://") || name.contains('/') {
        return Err("must be a host name, not a URL");
    }
    if name.contains(':') {
        return Err("must be a host name without a port (the port is not checked)");
    }
    let bare = name.strip_prefix("*.").unwrap_or(&name);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if bare.is_empty() || bare.len() > 253 || !bare.split('.').all(label_ok) {
        return Err("must be a DNS name such as `gw1.example.com`, or `*.example.com` for any name under it");
    }
    Ok(name)
}

pub(super) fn check_listeners(raw: &[RawListener], base: &Path, p: &mut Problems) -> Vec<Listener> {
    if raw.is_empty() {
        p.add("listen", "at least one listener is required");
    }
    let mut out: Vec<Listener> = Vec::new();
    for (i, l) in raw.iter().enumerate() {
        let (addr, detail, path) = match l {
            RawListener::Plain(a) => (a.clone(), None, format!("listen[{i}]")),
            RawListener::Detailed(d) => (d.addr.clone(), Some(d), format!("listen[{i}].addr")),
        };
        let Some(socket) = parse_socket(&path, &addr, p) else { continue };
        if out.iter().any(|o| o.socket == socket) {
            p.add(&path, format!("`{addr}` is listed twice"));
        }
        let mode = match detail {
            None => ListenerMode::Plain { h2c: false },
            Some(d) => match listener_mode(d, &format!("listen[{i}]"), base, p) {
                Some(mode) => mode,
                None => continue,
            },
        };
        let proxy_protocol = detail.and_then(|d| d.proxy_protocol).unwrap_or(false);
        if proxy_protocol && matches!(mode, ListenerMode::RedirectHttps { .. }) {
            p.add(
                format!("listen[{i}].proxy_protocol"),
                "is not supported on a redirect listener yet; redirect in the load balancer, or send this port without the PROXY protocol",
            );
        }
        let from = detail.and_then(|d| d.proxy_protocol_from.as_deref());
        let from_key = format!("listen[{i}].proxy_protocol_from");
        let proxy_protocol_from = from.map(|list| check_nets(&from_key, list, p)).unwrap_or_default();
        match from {
            Some(_) if !proxy_protocol => p.add(&from_key, "only applies with `proxy_protocol: true`"),
            Some([]) => {
                p.add(&from_key, "list the load balancers' CIDRs, or leave the key out to read headers from any peer")
            }
            _ => {}
        }
        out.push(Listener { addr, socket, mode, proxy_protocol, proxy_protocol_from });
    }
    for (i, l) in out.iter().enumerate() {
        if let ListenerMode::RedirectHttps { port } = l.mode {
            if !out.iter().any(|o| o.tls().is_some() && o.socket.port() == port) {
                p.warn(
                    format!("listen[{i}].redirect_https"),
                    format!("no TLS listener here has port {port}; redirects go to a TLS endpoint in front of Siger"),
                );
            }
        }
    }
    out
}

/// Plain, TLS or redirect, from the detailed form. TLS-only settings on a plain listener are
/// errors, not ignored.
fn listener_mode(d: &RawListenerDetail, base_key: &str, base: &Path, p: &mut Problems) -> Option<ListenerMode> {
    let mut pairs: Vec<(String, &str, &str)> = Vec::new();
    match (&d.cert, &d.key, &d.certs) {
        (None, None, None) => {}
        (Some(cert), Some(key), None) => pairs.push((base_key.to_string(), cert, key)),
        (_, _, Some(list)) if d.cert.is_none() && d.key.is_none() => {
            if list.is_empty() {
                p.add(format!("{base_key}.certs"), "list at least one {cert, key} pair");
            }
            for (j, pair) in list.iter().enumerate() {
                pairs.push((format!("{base_key}.certs[{j}]"), &pair.cert, &pair.key));
            }
        }
        (_, _, Some(_)) => {
            p.add(base_key, "use either `cert`/`key` or `certs`, not both");
            return None;
        }
        _ => {
            p.add(base_key, "a TLS listener needs both `cert` and `key`");
            return None;
        }
    }
    let tls_only = [
        ("http2", d.http2.is_some()),
        ("min_tls", d.min_tls.is_some()),
        ("client_ca", d.client_ca.is_some()),
        ("hsts", d.hsts.is_some()),
    ];
    if let Some(port) = d.redirect_https {
        if port == 0 {
            p.add(format!("{base_key}.redirect_https"), "must be a port between 1 and 65535");
        }
        let extra: Vec<&str> = tls_only
            .iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| *k)
            .chain(d.h2c.is_some().then_some("h2c"))
            .chain((!pairs.is_empty()).then_some("cert"))
            .collect();
        if !extra.is_empty() {
            p.add(
                format!("{base_key}.redirect_https"),
                format!("a redirect listener answers every request with a redirect; remove `{}`", extra.join("`, `")),
            );
        }
        return Some(ListenerMode::RedirectHttps { port });
    }
    if pairs.is_empty() {
        for (key, set) in tls_only {
            if set {
                p.add(format!("{base_key}.{key}"), "only applies to TLS listeners (add `cert` and `key`)");
            }
        }
        return Some(ListenerMode::Plain { h2c: d.h2c.unwrap_or(false) });
    }
    if d.h2c.is_some() {
        p.add(format!("{base_key}.h2c"), "is for plain listeners; TLS listeners offer HTTP/2 through `http2`");
    }
    let certs: Vec<CertFiles> =
        pairs.iter().filter_map(|(key, cert, k)| check_cert_pair(key, cert, k, base, p)).collect();
    let min_tls = match &d.min_tls {
        None => MinTls::Tls12,
        Some(v) => {
            let text = match v {
                RawVersion::Text(t) => t.trim().trim_start_matches("TLSv").to_string(),
                RawVersion::Number(n) => format!("{n:.1}"),
            };
            match text.as_str() {
                "1.2" => MinTls::Tls12,
                "1.3" => MinTls::Tls13,
                "1.0" | "1.1" => {
                    p.add(format!("{base_key}.min_tls"), "TLS 1.0 and 1.1 are not supported; use \"1.2\" or \"1.3\"");
                    MinTls::Tls12
                }
                _ => {
                    p.add(format!("{base_key}.min_tls"), format!("`{text}` is not \"1.2\" or \"1.3\""));
                    MinTls::Tls12
                }
            }
        }
    };
    let client_ca = d.client_ca.as_ref().and_then(|f| check_ca_file(&format!("{base_key}.client_ca"), f, base, p));
    let hsts = d.hsts.as_ref().map(|h| hsts_value(h, &format!("{base_key}.hsts"), p));
    if certs.len() != pairs.len() {
        return None;
    }
    Some(ListenerMode::Tls(TlsListener { certs, http2: d.http2.unwrap_or(true), min_tls, client_ca, hsts }))
}

/// `Strict-Transport-Security` from `hsts`.
fn hsts_value(raw: &RawHsts, key: &str, p: &mut Problems) -> http::HeaderValue {
    let (max_age, subdomains, preload) = match raw {
        RawHsts::MaxAge(d) => (d.0, false, false),
        RawHsts::Detailed(d) => (d.max_age.0, d.include_subdomains.unwrap_or(false), d.preload.unwrap_or(false)),
    };
    // Browsers' preload list requires a year and includeSubDomains.
    if preload && (!subdomains || max_age < Duration::from_secs(365 * 86_400)) {
        p.add(format!("{key}.preload"), "needs `include_subdomains: true` and a max_age of at least 365d");
    }
    let mut value = format!("max-age={}", max_age.as_secs());
    if subdomains {
        value.push_str("; includeSubDomains");
    }
    if preload {
        value.push_str("; preload");
    }
    http::HeaderValue::from_str(&value).unwrap_or(http::HeaderValue::from_static("max-age=0"))
}

/// Read a certificate chain and its key (`key_base.cert`, `key_base.key`); the `tls` module
/// checks that they belong together.
fn check_cert_pair(key_base: &str, cert: &str, key: &str, base: &Path, p: &mut Problems) -> Option<CertFiles> {
    let cert = read_file(&format!("{key_base}.cert"), base, cert, p);
    let key = read_file(&format!("{key_base}.key"), base, key, p);
    Some(CertFiles { cert: cert?, key: key? })
}

/// Read a CA bundle (the `tls` module parses it).
pub(super) fn check_ca_file(key: &str, file: &str, base: &Path, p: &mut Problems) -> Option<CaFile> {
    read_file(key, base, file, p)
}

pub(super) fn check_trusted(raw: &[String], p: &mut Problems) -> TrustedProxies {
    check_nets("trusted_proxies", raw, p)
}

/// A list of CIDRs or IP addresses at `key`.
fn check_nets(key: &str, raw: &[String], p: &mut Problems) -> TrustedProxies {
    let mut nets = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        if let Ok(net) = s.parse::<IpNet>() {
            nets.push(net.trunc());
        } else if let Ok(ip) = s.parse::<IpAddr>() {
            nets.push(IpNet::from(ip));
        } else {
            p.add(format!("{key}[{i}]"), format!("`{s}` is not a CIDR (e.g. 10.0.0.0/8) or an IP address"));
        }
    }
    TrustedProxies(nets)
}

pub(super) fn check_limits(raw: &RawLimits, p: &mut Problems) -> Limits {
    let d = Limits::default();
    let max_body = raw.max_body.map_or(d.max_body, |s| s.0);
    let max_header_bytes = raw.max_header_bytes.map_or(d.max_header_bytes as u64, |s| s.0);
    // Pingora reads at most 1 MiB of request header; a bigger limit could never be reached.
    if !(1024..=(1 << 20)).contains(&max_header_bytes) {
        p.add("limits.max_header_bytes", "must be between 1KiB and 1MiB");
    }
    let idle_timeout = dur(&raw.idle_timeout, d.idle_timeout);
    if idle_timeout < Duration::from_secs(1) {
        p.add("limits.idle_timeout", "must be at least 1s (keep-alive timeouts have second granularity)");
    }
    if raw.keepalive_requests == Some(0) {
        p.add("limits.keepalive_requests", "must be at least 1");
    }
    let read_buffer = raw.read_buffer.map_or(d.read_buffer as u64, |s| s.0);
    if !(1024..=(64 << 10)).contains(&read_buffer) {
        p.add("limits.read_buffer", "must be between 1KiB and 64KiB");
    }
    let max_connections = raw.max_connections.unwrap_or(d.max_connections as u64);
    if !(1..=10_000_000).contains(&max_connections) {
        p.add("limits.max_connections", "must be between 1 and 10000000");
    }
    if matches!(raw.max_connections_per_ip, Some(n) if n == 0 || n > max_connections) {
        p.add("limits.max_connections_per_ip", "must be at least 1 and at most limits.max_connections");
    }
    let header_timeout = dur(&raw.header_timeout, d.header_timeout);
    if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&header_timeout) {
        p.add("limits.header_timeout", "must be between 100ms and 5m");
    }
    let body_timeout = dur(&raw.body_timeout, d.body_timeout);
    if !(Duration::from_millis(100)..=Duration::from_secs(86_400)).contains(&body_timeout) {
        p.add("limits.body_timeout", "must be between 100ms and 24h");
    }
    let send_timeout = dur(&raw.send_timeout, d.send_timeout);
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&send_timeout) {
        p.add("limits.send_timeout", "must be between 1s and 1h");
    }
    let h2_max_concurrent_streams = raw.h2_max_concurrent_streams.unwrap_or(d.h2_max_concurrent_streams);
    if !(1..=65_535).contains(&h2_max_concurrent_streams) {
        p.add("limits.h2_max_concurrent_streams", "must be between 1 and 65535");
    }
    Limits {
        max_connections: max_connections as usize,
        max_connections_per_ip: raw.max_connections_per_ip.map(|n| n as usize),
        header_timeout,
        body_timeout,
        send_timeout,
        h2_max_concurrent_streams,
        max_body,
        max_header_bytes: max_header_bytes as usize,
        idle_timeout,
        keepalive_requests: raw.keepalive_requests,
        underscores_in_headers: raw.underscores_in_headers.unwrap_or(d.underscores_in_headers),
        read_buffer: read_buffer as usize,
    }
}

/// Hosts the admin listener answers for whatever `admin.allowed_hosts` lists (and that listing
/// there only earns a `-t` warning): IP literals (a rebinding attack needs a name: a page whose origin is an IP address was
/// served by that address) and `localhost` names (RFC 6761: they only ever mean loopback).
pub(crate) fn is_always_allowed_host(name: &str) -> bool {
    name.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
}
