//! `consul` and `nats`: the servers the gateway talks to.

use super::*;

/// `dns`: the name servers DNS-backed services ask (default: the system's resolv.conf).
pub(super) fn check_dns(raw: Option<&RawDns>, p: &mut Problems) -> DnsSettings {
    let Some(raw) = raw else { return DnsSettings { servers: Vec::new(), timeout: DNS_TIMEOUT } };
    let mut servers = Vec::new();
    for (i, text) in raw.servers.iter().enumerate() {
        let path = format!("dns.servers[{i}]");
        match text.parse::<SocketAddr>().or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53))) {
            Ok(addr) if servers.contains(&addr) => p.add(path, format!("`{addr}` is listed twice")),
            Ok(addr) => servers.push(addr),
            Err(_) => p.add(path, format!("`{text}` is not an IP address or IP:port")),
        }
    }
    let timeout = dur(&raw.timeout, DNS_TIMEOUT);
    if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(30) {
        p.add("dns.timeout", "must be between 100ms and 30s");
    }
    DnsSettings { servers, timeout }
}

/// Longest wait for one DNS answer by default.
const DNS_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn check_consul(raw: &RawConsul, p: &mut Problems) -> Option<ConsulSettings> {
    check_http_url("consul.address", &raw.address, p);
    let wait = dur(&raw.wait, Duration::from_secs(30));
    if wait < Duration::from_secs(1) || wait > Duration::from_secs(600) {
        p.add("consul.wait", "must be between 1s and 10m (Consul caps blocking queries at 10m)");
    }
    let register = raw.register.as_ref().map(|r| {
        if r.name.trim().is_empty() {
            p.add("consul.register.name", "must not be empty");
        }
        if r.address.parse::<IpAddr>().is_err() && r.address.trim().is_empty() {
            p.add("consul.register.address", "must not be empty");
        }
        if r.port == 0 {
            p.add("consul.register.port", "must not be 0");
        }
        let check = r.check.as_ref();
        if let Some(c) = check {
            check_http_url("consul.register.check.http", &c.http, p);
        }
        ConsulRegistration {
            name: r.name.clone(),
            address: r.address.clone(),
            port: r.port,
            tags: r.tags.clone(),
            check_http: check.map(|c| c.http.clone()),
            check_interval: check.map(|c| dur(&c.interval, Duration::from_secs(10))).unwrap_or(Duration::from_secs(10)),
            check_timeout: check.map(|c| dur(&c.timeout, Duration::from_secs(2))).unwrap_or(Duration::from_secs(2)),
            deregister_after: check
                .map(|c| dur(&c.deregister_after, Duration::from_secs(60)))
                .unwrap_or(Duration::from_secs(60)),
        }
    });
    Some(ConsulSettings {
        address: raw.address.trim_end_matches('/').to_string(),
        token: raw.token.clone().filter(|t| !t.is_empty()),
        datacenter: raw.datacenter.clone().filter(|d| !d.is_empty()),
        wait,
        state_dir: raw.state_dir.as_ref().map(PathBuf::from),
        register,
    })
}

pub(super) fn check_nats(raw: &RawNats, base: &Path, p: &mut Problems) -> Option<NatsSettings> {
    let urls = raw.url.list();
    if urls.is_empty() {
        p.add("nats.url", "name at least one server");
    }
    for (i, url) in urls.iter().enumerate() {
        let scheme_ok = ["nats://", "tls://", "ws://", "wss://"].iter().any(|s| url.starts_with(s));
        if !scheme_ok {
            p.add("nats.url", format!("`{}` (entry {i}) is not a nats:// or tls:// URL", redact_url(url)));
        }
    }
    let credentials_file = raw.credentials_file.as_ref().and_then(|f| {
        let file = read_file("nats.credentials_file", base, f, p)?;
        if !text(&file).contains("BEGIN NATS USER JWT") {
            p.add("nats.credentials_file", format!("{} is not a NATS .creds file", file.shown()));
        }
        Some(file.path)
    });
    let user_password = match (&raw.user, &raw.password) {
        (Some(u), Some(pw)) => Some((u.clone(), pw.clone())),
        (None, None) => None,
        _ => {
            p.add("nats", "`user` and `password` go together");
            None
        }
    };
    let methods =
        [credentials_file.is_some() || raw.credentials_file.is_some(), raw.token.is_some(), user_password.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
    if methods > 1 {
        p.add("nats", "choose one of `credentials_file`, `token`, `user`+`password`");
    }
    let pending_buffer = raw.pending_buffer.unwrap_or(1024);
    if !(1..=1_000_000).contains(&pending_buffer) {
        p.add("nats.pending_buffer", "must be between 1 and 1000000 messages");
    }
    Some(NatsSettings {
        url: urls.join(","),
        credentials_file,
        token: raw.token.clone(),
        user_password,
        connect_timeout: dur(&raw.connect_timeout, Duration::from_secs(2)),
        pending_buffer,
    })
}

/// `tracing`: an http(s) collector URL, a ratio in [0, 1], a queue between 64 and 1,000,000.
pub(super) fn check_tracing(raw: &RawTracing, p: &mut Problems) -> TracingSettings {
    check_http_url("tracing.otlp_endpoint", &raw.otlp_endpoint, p);
    let d = TracingSettings::default();
    let sample_ratio = raw.sample_ratio.unwrap_or(d.sample_ratio);
    if !(0.0..=1.0).contains(&sample_ratio) {
        p.add("tracing.sample_ratio", "must be between 0 and 1");
    }
    let service_name = raw.service_name.clone().unwrap_or(d.service_name);
    if service_name.trim().is_empty() {
        p.add("tracing.service_name", "must not be empty");
    }
    let queue_size = raw.queue_size.unwrap_or(d.queue_size);
    if !(64..=1_000_000).contains(&queue_size) {
        p.add("tracing.queue_size", "must be between 64 and 1000000 spans");
    }
    TracingSettings { otlp_endpoint: raw.otlp_endpoint.clone(), service_name, sample_ratio, queue_size }
}
