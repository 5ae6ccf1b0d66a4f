//! `services.<name>`: membership, balancing, health checks and timeouts.

use super::*;

/// `ip:port`, `[v6]:port` or `localhost:port`.
fn literal_target(addr: &str) -> Option<SocketAddr> {
    if let Ok(s) = addr.parse::<SocketAddr>() {
        return Some(s);
    }
    let port = addr.strip_prefix("localhost:")?.parse::<u16>().ok()?;
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// A target of a service: an address, or a host name resolved through DNS.
enum ParsedTarget {
    Addr(SocketAddr),
    Name(String, u16),
}

fn parse_service_target(path: &str, addr: &str, p: &mut Problems) -> Option<ParsedTarget> {
    if let Some(s) = literal_target(addr) {
        return Some(ParsedTarget::Addr(s));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        p.add(path, format!("`{addr}` needs a port: `host:port` or `ip:port`"));
        return None;
    };
    let port = match port.parse::<u16>() {
        Ok(port) if port > 0 => port,
        _ => {
            p.add(path, format!("`{addr}`: `{port}` is not a port (1-65535)"));
            return None;
        }
    };
    if let Err(why) = check_dns_name(host, false) {
        p.add(path, format!("`{addr}` is neither an IP:port address nor host:port ({why})"));
        return None;
    }
    Some(ParsedTarget::Name(host.trim_end_matches('.').to_ascii_lowercase(), port))
}

/// A DNS name as RFC 1035 allows it (letters, digits, `-` inside labels of at most 63
/// characters, 253 in all); `_` only where SRV names put it (`service_labels`).
fn check_dns_name(name: &str, service_labels: bool) -> Result<(), String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err("a host name has 1 to 253 characters".into());
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err("an IPv6 address goes in brackets: `[::1]:80`".into());
    }
    for (i, label) in name.split('.').enumerate() {
        let body = if service_labels && i < 2 { label.strip_prefix('_').unwrap_or(label) } else { label };
        if label.is_empty() || label.len() > 63 {
            return Err(format!("label `{label}` must have 1 to 63 characters"));
        }
        if !body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || body.starts_with('-') || body.ends_with('-')
        {
            return Err(format!("label `{label}` may only use letters, digits and inner `-`"));
        }
    }
    Ok(())
}

/// `dns_srv`: `_service._proto.name` (RFC 2782).
fn check_srv_name(path: &str, name: &str, p: &mut Problems) -> Option<String> {
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 3 || !labels[0].starts_with('_') || !labels[1].starts_with('_') {
        p.add(path, format!("`{name}` is not an SRV name like `_http._tcp.orders.internal`"));
        return None;
    }
    if let Err(why) = check_dns_name(name, true) {
        p.add(path, format!("`{name}`: {why}"));
        return None;
    }
    Some(name.trim_end_matches('.').to_ascii_lowercase())
}

pub(super) fn check_services(
    raw: &std::collections::BTreeMap<String, RawService>,
    have_consul: bool,
    base_dir: &Path,
    p: &mut Problems,
) -> Vec<ServiceSettings> {
    let mut out = Vec::new();
    for (name, s) in raw {
        let base = format!("services.{name}");
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            p.add(&base, format!("service name `{name}` may only use letters, digits, `-`, `_`, `.`"));
        }
        let Membership { targets, discovery, dns, one_host } = check_membership(&base, s, have_consul, p);
        let lb = check_balancing(&base, s, p);
        let transport = UpstreamTransport {
            tls: s
                .tls
                .as_ref()
                .and_then(|t| check_upstream_tls(&base, t, one_host.as_deref(), base_dir, p))
                .map(Arc::new),
            http2: s.http2.unwrap_or(false),
        };
        let health_check = s.health_check.as_ref().map(|h| check_health_check(&base, name, h, &transport, p));
        let timeouts = check_timeouts(&base, s, p);
        let retries = s.retries.unwrap_or(ServiceSettings::default().retries);
        if retries > 10 {
            p.add(format!("{base}.retries"), "must be at most 10");
        }
        check_slow_start(&base, s, &lb, p);
        let outlier_detection = s.outlier_detection.as_ref().map(|o| check_outlier(&base, o, p));
        let circuit_breaker = s.circuit_breaker.as_ref().map(|b| check_breaker(&base, b, p));
        let retry = check_retry(&base, s, p);
        out.push(ServiceSettings {
            name: name.clone(),
            targets,
            discovery,
            dns,
            lb,
            health_check,
            transport,
            outlier_detection,
            circuit_breaker,
            retry,
            connect_timeout: timeouts.connect,
            read_timeout: timeouts.read,
            write_timeout: timeouts.write,
            idle_timeout: timeouts.idle,
            retries,
            slow_start: s.slow_start.map(|d| d.0),
        });
    }
    out
}

/// A service's members: static `targets`, Consul `discovery`, or DNS (host names in
/// `targets`, `dns_srv`).
struct Membership {
    targets: Vec<Target>,
    discovery: Option<ConsulDiscovery>,
    dns: Option<DnsDiscovery>,
    /// The one host name all backends are reached through (the default SNI), if there is one.
    one_host: Option<String>,
}

/// `targets` (addresses or host names, weights 1–1000, each once), `dns_srv` or `discovery`
/// (Consul): exactly one.
fn check_membership(base: &str, s: &RawService, have_consul: bool, p: &mut Problems) -> Membership {
    let (mut targets, names) = check_targets(base, s, p);
    let srv = s.dns_srv.as_deref().and_then(|n| check_srv_name(&format!("{base}.dns_srv"), n, p));
    // Backends reached through one host name are that host to TLS: it is the default SNI
    // and the name their certificates are checked against (not the address it resolved to).
    let one_host = match names.as_slice() {
        [first, rest @ ..] if targets.is_empty() && srv.is_none() && rest.iter().all(|n| n.host == first.host) => {
            Some(first.host.clone())
        }
        _ => None,
    };
    let dns =
        (!names.is_empty() || srv.is_some()).then(|| DnsDiscovery { fixed: std::mem::take(&mut targets), names, srv });
    let discovery = s.discovery.as_ref().map(|d| {
        if !have_consul {
            p.add(format!("{base}.discovery"), "Consul discovery needs a top-level `consul` section");
        }
        if d.consul.trim().is_empty() {
            p.add(format!("{base}.discovery.consul"), "must name the Consul service");
        }
        ConsulDiscovery { service: d.consul.clone(), tags: d.tags.clone() }
    });
    match (&s.targets, &discovery, &s.dns_srv) {
        (None, None, None) => p.add(base, "needs `targets`, `dns_srv` or `discovery`"),
        (Some(_), Some(_), _) => p.add(base, "has both `targets` and `discovery`; choose one"),
        (_, Some(_), Some(_)) => p.add(base, "has both `dns_srv` and `discovery`; choose one"),
        (Some(_), None, Some(_)) => {
            p.add(base, "has both `targets` and `dns_srv` (SRV records name the targets); choose one")
        }
        _ => {}
    }
    Membership { targets, discovery, dns, one_host }
}

/// `targets`: the IP addresses and the host names listed, each with its weight.
fn check_targets(base: &str, s: &RawService, p: &mut Problems) -> (Vec<Target>, Vec<DnsName>) {
    let mut targets = Vec::new();
    let mut names: Vec<DnsName> = Vec::new();
    let Some(list) = &s.targets else { return (targets, names) };
    if list.is_empty() {
        p.add(format!("{base}.targets"), "list at least one target");
    }
    for (i, t) in list.iter().enumerate() {
        let (addr, weight, path) = match t {
            RawTarget::Plain(a) => (a.as_str(), 1, format!("{base}.targets[{i}]")),
            RawTarget::Weighted(w) => (w.addr.as_str(), w.weight.unwrap_or(1), format!("{base}.targets[{i}].addr")),
        };
        if weight == 0 || weight > 1000 {
            p.add(format!("{base}.targets[{i}].weight"), "must be between 1 and 1000");
        }
        let weight = weight.clamp(1, 1000);
        match parse_service_target(&path, addr, p) {
            Some(ParsedTarget::Addr(addr)) => {
                if targets.iter().any(|t: &Target| t.addr == addr) {
                    p.add(&path, format!("`{addr}` is listed twice"));
                }
                targets.push(Target { addr, weight });
            }
            Some(ParsedTarget::Name(host, port)) => {
                if names.iter().any(|n| n.host == host && n.port == port) {
                    p.add(&path, format!("`{host}:{port}` is listed twice"));
                }
                names.push(DnsName { host, port, weight });
            }
            None => {}
        }
    }
    (targets, names)
}

/// `lb` and, for `consistent_hash`, `hash_key`.
fn check_balancing(base: &str, s: &RawService, p: &mut Problems) -> LbAlgorithm {
    let lb = match s.lb.as_deref().unwrap_or("round_robin") {
        "round_robin" => LbAlgorithm::RoundRobin,
        "random" => LbAlgorithm::Random,
        "least_conn" => LbAlgorithm::LeastConn,
        "consistent_hash" => LbAlgorithm::ConsistentHash(check_hash_key(base, s.hash_key.as_deref(), p)),
        other => {
            p.add(
                format!("{base}.lb"),
                format!("`{other}` is not one of round_robin, least_conn, random, consistent_hash"),
            );
            LbAlgorithm::RoundRobin
        }
    };
    if s.hash_key.is_some() && !matches!(lb, LbAlgorithm::ConsistentHash(_)) {
        p.warn(format!("{base}.hash_key"), "has no effect without `lb: consistent_hash`");
    }
    lb
}

/// `hash_key`: `ip` (the default), `path`, `header:<Name>` or `claim:<name>`.
fn check_hash_key(base: &str, hash_key: Option<&str>, p: &mut Problems) -> HashKey {
    match hash_key.unwrap_or("ip") {
        "ip" => HashKey::Ip,
        "path" => HashKey::Path,
        other => {
            if let Some(claim) = other.strip_prefix("claim:").filter(|c| !c.is_empty()) {
                HashKey::Claim(claim.to_string())
            } else if let Some(h) = other.strip_prefix("header:") {
                match check_header_name(&format!("{base}.hash_key"), h, p) {
                    Some(h) => HashKey::Header(h),
                    None => HashKey::Ip,
                }
            } else {
                p.add(
                    format!("{base}.hash_key"),
                    format!("`{other}` is not one of claim:<name>, header:<Name>, ip, path"),
                );
                HashKey::Ip
            }
        }
    }
}

/// `health_check`: path, interval (≥ 100 ms), timeout (within the interval), thresholds.
fn check_health_check(
    base: &str,
    name: &str,
    h: &RawHealthCheck,
    transport: &UpstreamTransport,
    p: &mut Problems,
) -> HealthCheckSettings {
    if let Some(path) = &h.path {
        if !path.starts_with('/') {
            p.add(format!("{base}.health_check.path"), "must start with `/`");
        }
    }
    let d = HealthCheckSettings::default();
    let interval = dur(&h.interval, d.interval);
    let timeout = dur(&h.timeout, d.timeout);
    if interval < Duration::from_millis(100) {
        p.add(format!("{base}.health_check.interval"), "must be at least 100ms");
    }
    if timeout.is_zero() || timeout > interval {
        p.add(format!("{base}.health_check.timeout"), "must be positive and not longer than the interval");
    }
    let healthy = h.healthy.unwrap_or(d.healthy);
    let unhealthy = h.unhealthy.unwrap_or(d.unhealthy);
    if healthy == 0 || healthy > 100 {
        p.add(format!("{base}.health_check.healthy"), "must be between 1 and 100");
    }
    if unhealthy == 0 || unhealthy > 100 {
        p.add(format!("{base}.health_check.unhealthy"), "must be between 1 and 100");
    }
    HealthCheckSettings {
        path: h.path.clone(),
        host: h.host.clone().unwrap_or_else(|| name.to_string()),
        interval,
        timeout,
        healthy: healthy.max(1),
        unhealthy: unhealthy.max(1),
        transport: transport.clone(),
    }
}

/// A service's timeouts (each positive).
struct Timeouts {
    connect: Duration,
    read: Duration,
    write: Option<Duration>,
    idle: Option<Duration>,
}

fn check_timeouts(base: &str, s: &RawService, p: &mut Problems) -> Timeouts {
    let d = ServiceSettings::default();
    let t = Timeouts {
        connect: dur(&s.connect_timeout, d.connect_timeout),
        read: dur(&s.read_timeout, d.read_timeout),
        write: s.write_timeout.map(|d| d.0),
        idle: s.idle_timeout.map(|d| d.0),
    };
    for (k, v) in [
        ("connect_timeout", t.connect),
        ("read_timeout", t.read),
        ("write_timeout", t.write.unwrap_or(Duration::from_secs(1))),
        ("idle_timeout", t.idle.unwrap_or(Duration::from_secs(1))),
    ] {
        if v.is_zero() {
            p.add(format!("{base}.{k}"), "must be positive");
        }
    }
    t
}

/// `slow_start`: at least 1 s; said to do nothing with `consistent_hash`.
fn check_slow_start(base: &str, s: &RawService, lb: &LbAlgorithm, p: &mut Problems) {
    let Some(ss) = s.slow_start else { return };
    if matches!(lb, LbAlgorithm::ConsistentHash(_)) {
        p.warn(
            format!("{base}.slow_start"),
            "has no effect with consistent_hash (ramping weights would move keys); it applies to round_robin, least_conn and random",
        );
    }
    if ss.0 < Duration::from_secs(1) {
        p.add(format!("{base}.slow_start"), "must be at least 1s");
    }
}

/// `services.<name>.tls`. Verification is never off by accident: `verify: false` needs
/// `accept_unverified: true` beside it.
fn check_upstream_tls(
    base: &str,
    raw: &RawUpstreamTls,
    default_sni: Option<&str>,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<UpstreamTls> {
    let default = RawUpstreamTlsDetail::default();
    let t = match raw {
        RawUpstreamTls::Enabled(false) => return None,
        RawUpstreamTls::Enabled(true) => &default,
        RawUpstreamTls::Detailed(d) => d,
    };
    let key = format!("{base}.tls");
    let sni = t.sni.as_ref().map(|s| s.trim().to_ascii_lowercase()).or_else(|| default_sni.map(str::to_string));
    if let Some(sni) = &sni {
        if rustls::pki_types::ServerName::try_from(sni.as_str()).is_err() {
            p.add(format!("{key}.sni"), format!("`{sni}` is not a DNS name or IP address"));
        }
    }
    let verify = t.verify.unwrap_or(true);
    match (verify, t.accept_unverified.unwrap_or(false)) {
        (false, false) => p.add(
            format!("{key}.verify"),
            "`verify: false` accepts any certificate, a man in the middle's included; set `accept_unverified: true` beside it to confirm",
        ),
        (true, true) => p.add(format!("{key}.accept_unverified"), "only applies with `verify: false`"),
        (false, true) => p.warn(format!("{key}.verify"), "backend certificates are not verified"),
        (true, false) => {}
    }
    if !verify && t.ca.is_some() {
        p.add(format!("{key}.ca"), "has no effect with `verify: false`");
    }
    let ca = t.ca.as_ref().and_then(|f| super::server::check_ca_file(&format!("{key}.ca"), f, base_dir, p));
    // The `tls` module checks what the files hold.
    let client = match (&t.client_cert, &t.client_key) {
        (None, None) => None,
        (Some(cert), Some(k)) => {
            let cert = read_file(&format!("{key}.client_cert"), base_dir, cert, p);
            let key = read_file(&format!("{key}.client_key"), base_dir, k, p);
            Some(ClientCertFiles { cert: cert?, key: key? })
        }
        _ => {
            p.add(&key, "mutual TLS needs both `client_cert` and `client_key`");
            None
        }
    };
    Some(UpstreamTls { sni, verify, ca, client })
}

/// `"20%"` → 0.2, for keys whose value is a share.
fn percent(key: &str, raw: &RawPercent, p: &mut Problems) -> Option<f64> {
    let text = match raw {
        RawPercent::Text(t) => t.as_str(),
        RawPercent::Number(n) => {
            p.add(key, format!("`{n}`: write a percentage with its sign, e.g. `20%`"));
            return None;
        }
    };
    let value = text.trim().strip_suffix('%').and_then(|n| n.trim().parse::<f64>().ok());
    match value {
        Some(v) if (0.0..=100.0).contains(&v) => Some(v / 100.0),
        _ => {
            p.add(key, format!("`{text}` is not a percentage between 0% and 100% (e.g. `20%`)"));
            None
        }
    }
}

fn check_outlier(base: &str, raw: &RawOutlier, p: &mut Problems) -> OutlierSettings {
    let key = format!("{base}.outlier_detection");
    let d = OutlierSettings::default();
    let consecutive_failures = raw.consecutive_failures.unwrap_or(d.consecutive_failures);
    if consecutive_failures == 0 {
        p.add(format!("{key}.consecutive_failures"), "must be at least 1");
    }
    let base_ejection = dur(&raw.base_ejection, d.base_ejection);
    let max_ejection = dur(&raw.max_ejection, d.max_ejection.max(base_ejection));
    if base_ejection < Duration::from_millis(100) {
        p.add(format!("{key}.base_ejection"), "must be at least 100ms");
    }
    if max_ejection < base_ejection {
        p.add(format!("{key}.max_ejection"), "must not be shorter than base_ejection");
    }
    let max_ejected_percent = raw.max_ejected_percent.unwrap_or(d.max_ejected_percent);
    if max_ejected_percent > 100 {
        p.add(format!("{key}.max_ejected_percent"), "must be between 0 and 100");
    }
    OutlierSettings {
        consecutive_failures: consecutive_failures.max(1),
        base_ejection,
        max_ejection,
        max_ejected_percent: max_ejected_percent.min(100),
    }
}

fn check_breaker(base: &str, raw: &RawBreaker, p: &mut Problems) -> BreakerSettings {
    let key = format!("{base}.circuit_breaker");
    let d = BreakerSettings::default();
    if raw.max_in_flight == Some(0) {
        p.add(format!("{key}.max_in_flight"), "must be at least 1");
    }
    let failure_rate = raw
        .failure_rate
        .as_ref()
        .map_or(Some(d.failure_rate), |r| percent(&format!("{key}.failure_rate"), r, p))
        .unwrap_or(d.failure_rate);
    if failure_rate == 0.0 {
        p.add(format!("{key}.failure_rate"), "0% would open the circuit on any request");
    }
    let window = dur(&raw.window, d.window);
    if window < Duration::from_secs(1) {
        p.add(format!("{key}.window"), "must be at least 1s");
    }
    let open_for = dur(&raw.open_for, d.open_for);
    if open_for < Duration::from_millis(100) {
        p.add(format!("{key}.open_for"), "must be at least 100ms");
    }
    let half_open_requests = raw.half_open_requests.unwrap_or(d.half_open_requests);
    if half_open_requests == 0 {
        p.add(format!("{key}.half_open_requests"), "must be at least 1");
    }
    let min_requests = raw.min_requests.unwrap_or(d.min_requests);
    if min_requests == 0 {
        p.add(format!("{key}.min_requests"), "must be at least 1");
    }
    BreakerSettings {
        max_in_flight: raw.max_in_flight,
        failure_rate,
        min_requests: min_requests.max(1),
        window,
        open_for,
        half_open_requests: half_open_requests.max(1),
    }
}

fn check_retry(base: &str, s: &RawService, p: &mut Problems) -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    if let Some(list) = &s.retry_on {
        policy.connect = false;
        for (i, item) in list.iter().enumerate() {
            let key = format!("{base}.retry_on[{i}]");
            match item {
                RawRetryOn::Event(e) if e == "connect" => policy.connect = true,
                RawRetryOn::Event(e) if e == "reset" => policy.reset = true,
                RawRetryOn::Status(code) if (500..=599).contains(code) => {
                    if policy.statuses.contains(code) {
                        p.add(key, format!("`{code}` is listed twice"));
                    } else {
                        policy.statuses.push(*code);
                    }
                }
                RawRetryOn::Status(code) => p.add(key, format!("`{code}`: only 5xx statuses are retried")),
                RawRetryOn::Event(other) => {
                    p.add(key, format!("`{other}` is not one of connect, reset or a 5xx status code"))
                }
            }
        }
        if list.is_empty() {
            p.add(format!("{base}.retry_on"), "list what to retry, or remove the key (default: [connect])");
        }
    }
    if let Some(raw) = &s.retry_budget {
        policy.budget_milli =
            percent(&format!("{base}.retry_budget"), raw, p).map(|share| (share * 1000.0).round() as u64);
    }
    let retries = s.retries.unwrap_or(1);
    if retries == 0 && (policy.reset || !policy.statuses.is_empty()) {
        p.warn(format!("{base}.retry_on"), "has no effect with `retries: 0`");
    }
    policy
}
