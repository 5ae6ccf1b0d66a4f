//! Raw file → validated model. Every `check_*` step records problems with their key path and
//! keeps going, so one run of `siger -t` shows all of them.

use super::model::*;
use super::raw::*;
use crate::routing::normalize_path;
use http::{HeaderName, Method};
use ipnet::IpNet;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Collects (key path, reason) pairs.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<(String, String)>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.0.push((path.into(), msg.into()));
    }
}

/// Turn the raw file into the model, or every problem found.
pub fn validate(raw: RawConfig, base: &Path) -> Result<Config, Problems> {
    let mut p = Problems::default();
    let server = check_server(&raw.server, &mut p);
    let listeners = check_listeners(&raw.listen, base, &mut p);
    let admin = raw.admin.as_ref().and_then(|a| {
        let socket = parse_socket("admin.listen", &a.listen, &mut p)?;
        if listeners.iter().any(|l| l.socket == socket) {
            p.add("admin.listen", "must differ from every public listener: admin endpoints are never served publicly");
        }
        Some(AdminSettings { listen: a.listen.clone(), socket })
    });
    let trusted_proxies = check_trusted(&raw.trusted_proxies, &mut p);
    let limits = check_limits(&raw.limits, &mut p);
    let auth = raw.auth.as_ref().and_then(|a| check_jwt(&a.jwt, base, &mut p));
    let rate_limit = check_rate_limit(raw.rate_limit.as_ref(), &mut p);
    let consul = raw.consul.as_ref().and_then(|c| check_consul(c, &mut p));
    let nats = raw.nats.as_ref().and_then(|n| check_nats(n, base, &mut p));
    let jobs = raw.jobs.as_ref().and_then(|j| check_jobs(j, &mut p));
    let services = check_services(&raw.services, consul.is_some(), &mut p);
    let routes = check_routes(&raw.routes, &services, &limits, auth.is_some(), &mut p);
    if let Some(auth) = &auth {
        check_identity_headers(auth, &services, &routes, &rate_limit, &mut p);
    }

    if let Some(jobs) = &jobs {
        if nats.is_none() {
            p.add("jobs", "needs a `nats` section to publish to");
        }
        if auth.is_none() {
            p.add("jobs", "job submission always requires authentication; configure `auth.jwt`");
        }
        let _ = jobs;
    }
    if consul.as_ref().is_some_and(|c| c.register.is_some()) && admin.is_none() {
        p.add("consul.register", "registration's health check targets the admin listener; configure `admin.listen`");
    }

    if !p.0.is_empty() {
        return Err(p);
    }
    Ok(Config {
        server,
        listeners,
        admin,
        trusted_proxies,
        limits,
        access_log: raw.access_log.enabled.unwrap_or(true),
        auth,
        rate_limit,
        consul,
        nats,
        jobs,
        services,
        routes,
    })
}

fn dur(d: &Option<super::units::ConfDuration>, default: Duration) -> Duration {
    d.map(|d| d.0).unwrap_or(default)
}

/// Default place for the pid file and upgrade socket when the config names none: the system
/// temp dir (`TMPDIR`), as Pingora does. Production configs set both (systemd `RuntimeDirectory`).
fn runtime_file(name: &str) -> String {
    std::env::temp_dir().join(name).to_string_lossy().into_owned()
}

fn check_server(raw: &RawServer, p: &mut Problems) -> ServerSettings {
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
    }
}

fn parse_socket(path: &str, text: &str, p: &mut Problems) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(s) => Some(s),
        Err(_) => {
            p.add(path, format!("`{text}` is not an IP:port address (e.g. \"0.0.0.0:8080\", \"[::1]:8080\")"));
            None
        }
    }
}

fn resolve_file(base: &Path, file: &str) -> PathBuf {
    let path = Path::new(file);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// The file must exist and be readable; returns its text.
fn read_file(path: &str, base: &Path, file: &str, p: &mut Problems) -> Option<(PathBuf, String)> {
    let resolved = resolve_file(base, file);
    match std::fs::read_to_string(&resolved) {
        Ok(text) => Some((resolved, text)),
        Err(e) => {
            p.add(path, format!("cannot read `{}`: {e}", resolved.display()));
            None
        }
    }
}

fn check_listeners(raw: &[RawListener], base: &Path, p: &mut Problems) -> Vec<Listener> {
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

fn check_trusted(raw: &[String], p: &mut Problems) -> TrustedProxies {
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

fn check_limits(raw: &RawLimits, p: &mut Problems) -> Limits {
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

/// Headers a claim may never be forwarded as: they define framing, routing or the client.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "authorization",
    "cookie",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-request-id",
];

fn check_header_name(path: &str, name: &str, p: &mut Problems) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            p.add(path, format!("`{name}` is not a valid header name"));
            None
        }
    }
}

fn check_jwt(raw: &RawJwt, base: &Path, p: &mut Problems) -> Option<JwtSettings> {
    let mut algorithms = Vec::new();
    if raw.algorithms.is_empty() {
        p.add("auth.jwt.algorithms", "list at least one algorithm (e.g. [HS256])");
    }
    for (i, a) in raw.algorithms.iter().enumerate() {
        match JwtAlgorithm::parse(a) {
            Some(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
            Some(_) => p.add(format!("auth.jwt.algorithms[{i}]"), format!("`{a}` is listed twice")),
            None if a.eq_ignore_ascii_case("none") => {
                p.add(format!("auth.jwt.algorithms[{i}]"), "`none` is never accepted: unsigned tokens prove nothing")
            }
            None => p.add(
                format!("auth.jwt.algorithms[{i}]"),
                format!(
                    "unknown algorithm `{a}` (HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)"
                ),
            ),
        }
    }
    let has_hmac = algorithms.iter().any(|a| a.is_hmac());
    let has_asym = algorithms.iter().any(|a| !a.is_hmac());
    if has_hmac {
        match raw.secret.as_deref() {
            None => p.add("auth.jwt.secret", "HS* algorithms need a `secret`"),
            Some(s) if s.len() < 32 => p.add(
                "auth.jwt.secret",
                "must be at least 32 bytes: a short HMAC secret can be brute-forced offline from one token",
            ),
            _ => {}
        }
    } else if raw.secret.is_some() {
        p.add("auth.jwt.secret", "set, but no HS* algorithm is allowed: remove it or add the algorithm");
    }
    let key_sources =
        [raw.public_key_file.is_some(), raw.jwks_file.is_some(), raw.jwks_url.is_some()].iter().filter(|b| **b).count();
    if has_asym && key_sources == 0 {
        p.add("auth.jwt", "asymmetric algorithms need `public_key_file`, `jwks_file` or `jwks_url`");
    }
    if !has_asym && key_sources > 0 {
        p.add("auth.jwt", "a public key or JWKS is configured but only HS* algorithms are allowed");
    }
    let jose: Vec<jsonwebtoken::Algorithm> = algorithms.iter().map(|a| crate::auth::jwt_algorithm(*a)).collect();
    let public_key_file = raw.public_key_file.as_ref().and_then(|f| {
        let (path, text) = read_file("auth.jwt.public_key_file", base, f, p)?;
        if !text.contains("-----BEGIN") {
            p.add("auth.jwt.public_key_file", format!("`{}` is not a PEM file", path.display()));
        } else if let Err(e) = crate::auth::keys::parse_pem(text.as_bytes(), &jose) {
            p.add("auth.jwt.public_key_file", format!("`{}`: {e}", path.display()));
        }
        Some(path)
    });
    let jwks_file = raw.jwks_file.as_ref().and_then(|f| {
        let (path, text) = read_file("auth.jwt.jwks_file", base, f, p)?;
        if let Err(e) = crate::auth::keys::parse_jwks(text.as_bytes()) {
            p.add("auth.jwt.jwks_file", format!("`{}`: {e}", path.display()));
        }
        Some(path)
    });
    if let Some(url) = &raw.jwks_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            p.add("auth.jwt.jwks_url", "must be an http(s) URL");
        }
    }
    let jwks_refresh = dur(&raw.jwks_refresh, Duration::from_secs(300));
    if jwks_refresh < Duration::from_secs(1) {
        p.add("auth.jwt.jwks_refresh", "must be at least 1s");
    }
    let leeway = dur(&raw.leeway, Duration::from_secs(30));
    if leeway > Duration::from_secs(300) {
        p.add("auth.jwt.leeway", "more than 5m of clock skew would keep expired tokens alive; use at most 5m");
    }
    let mut forward = Vec::new();
    let mut seen = HashSet::new();
    for (claim, header) in &raw.forward {
        let path = format!("auth.jwt.forward.{claim}");
        if let Some(h) = check_header_name(&path, header, p) {
            if RESERVED_HEADERS.contains(&h.as_str()) {
                p.add(&path, format!("`{header}` is reserved by the gateway and cannot carry a claim"));
            } else if !seen.insert(h.clone()) {
                p.add(&path, format!("header `{header}` already carries another claim"));
            } else {
                forward.push((claim.clone(), h));
            }
        }
    }
    let cache_size = raw.cache_size.unwrap_or(10_000);
    let max_token_bytes = raw.max_token_bytes.map(|s| s.0).unwrap_or(8 << 10) as usize;
    if algorithms.is_empty() {
        return None;
    }
    Some(JwtSettings {
        algorithms,
        secret: raw.secret.clone(),
        public_key_file,
        jwks_file,
        jwks_url: raw.jwks_url.clone(),
        jwks_refresh,
        issuer: raw.issuer.clone(),
        audience: raw.audience.clone(),
        leeway,
        roles_claim: raw.roles_claim.clone().unwrap_or_else(|| "roles".into()),
        forward,
        cache_size,
        max_token_bytes,
    })
}

/// A header that `forward` overwrites carries the gateway's word upstream, but the client's word
/// before that: hashing or rate-limiting on it would trust the client. Point at the claim.
fn check_identity_headers(
    auth: &JwtSettings,
    services: &[ServiceSettings],
    routes: &[RouteSettings],
    rate_limit: &RateLimitSettings,
    p: &mut Problems,
) {
    let claim_of = |h: &HeaderName| auth.forward.iter().find(|(_, fh)| fh == h).map(|(c, _)| c.clone());
    for s in services {
        if let LbAlgorithm::ConsistentHash(HashKey::Header(h)) = &s.lb {
            if let Some(claim) = claim_of(h) {
                p.add(
                    format!("services.{}.hash_key", s.name),
                    format!("`{h}` is an identity header set from claim `{claim}`; hash `claim:{claim}` instead"),
                );
            }
        }
    }
    let rules = rate_limit.default.iter().map(|r| ("rate_limit.default.key".to_string(), r)).chain(
        routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.rate_limit.as_ref().map(|l| (format!("routes[{i}].rate_limit.key"), l))),
    );
    for (path, rule) in rules {
        if let LimitKey::Header(h) = &rule.key {
            if let Some(claim) = claim_of(h) {
                p.add(
                    path,
                    format!("`{h}` is an identity header set from claim `{claim}`; use `key: consumer` instead"),
                );
            }
        }
    }
}

fn check_rule(path: &str, raw: &RawLimitRule, p: &mut Problems) -> Option<LimitRule> {
    if raw.requests == 0 {
        p.add(format!("{path}.requests"), "must be at least 1 (remove the limit to disable it)");
    }
    if raw.per.0 < Duration::from_secs(1) {
        p.add(format!("{path}.per"), "must be at least 1s");
    }
    let key = match raw.key.as_deref().unwrap_or("consumer") {
        "consumer" => LimitKey::Consumer,
        "ip" => LimitKey::Ip,
        "route" => LimitKey::Route,
        other => match other.strip_prefix("header:") {
            Some(name) => LimitKey::Header(check_header_name(&format!("{path}.key"), name, p)?),
            None => {
                p.add(format!("{path}.key"), format!("`{other}` is not one of consumer, ip, route, header:<Name>"));
                return None;
            }
        },
    };
    Some(LimitRule { requests: raw.requests, per: raw.per.0, key })
}

fn check_rate_limit(raw: Option<&RawRateLimit>, p: &mut Problems) -> RateLimitSettings {
    let Some(raw) = raw else {
        return RateLimitSettings { store: RateLimitStore::Local, on_store_error: OnStoreError::Allow, default: None };
    };
    let store = match raw.store.as_deref().unwrap_or("local") {
        "local" => {
            if raw.redis_url.is_some() {
                p.add("rate_limit.redis_url", "set, but `store` is local: set `store: redis` to share limits");
            }
            RateLimitStore::Local
        }
        "redis" => match &raw.redis_url {
            Some(url) if url.starts_with("rediss://") => {
                p.add("rate_limit.redis_url", "TLS to Redis (`rediss://`) is not supported by this build; use `redis://` on a trusted network or a local TLS tunnel");
                RateLimitStore::Local
            }
            Some(url) if url.starts_with("redis://") && redis::Client::open(url.as_str()).is_ok() => {
                RateLimitStore::Redis { url: url.clone(), timeout: dur(&raw.redis_timeout, Duration::from_millis(50)) }
            }
            Some(url) => {
                p.add("rate_limit.redis_url", format!("`{url}` is not a redis:// URL"));
                RateLimitStore::Local
            }
            None => {
                p.add("rate_limit.redis_url", "`store: redis` needs `redis_url`");
                RateLimitStore::Local
            }
        },
        other => {
            p.add("rate_limit.store", format!("`{other}` is not one of local, redis"));
            RateLimitStore::Local
        }
    };
    let on_store_error = match raw.on_store_error.as_deref().unwrap_or("allow") {
        "allow" => OnStoreError::Allow,
        "deny" => OnStoreError::Deny,
        other => {
            p.add("rate_limit.on_store_error", format!("`{other}` is not one of allow, deny"));
            OnStoreError::Allow
        }
    };
    let default = raw.default.as_ref().and_then(|r| check_rule("rate_limit.default", r, p));
    RateLimitSettings { store, on_store_error, default }
}

fn check_http_url(path: &str, url: &str, p: &mut Problems) -> bool {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
    if !ok {
        p.add(path, format!("`{url}` is not an http(s) URL"));
    }
    ok
}

fn check_consul(raw: &RawConsul, p: &mut Problems) -> Option<ConsulSettings> {
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

fn check_nats(raw: &RawNats, base: &Path, p: &mut Problems) -> Option<NatsSettings> {
    for (i, url) in raw.url.split(',').enumerate() {
        let url = url.trim();
        let scheme_ok = ["nats://", "tls://", "ws://", "wss://"].iter().any(|s| url.starts_with(s));
        if !scheme_ok {
            p.add("nats.url", format!("`{url}` (entry {i}) is not a nats:// or tls:// URL"));
        }
    }
    let credentials_file = raw.credentials_file.as_ref().and_then(|f| {
        let (path, text) = read_file("nats.credentials_file", base, f, p)?;
        if !text.contains("BEGIN NATS USER JWT") {
            p.add("nats.credentials_file", format!("`{}` is not a NATS .creds file", path.display()));
        }
        Some(path)
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
        url: raw.url.clone(),
        credentials_file,
        token: raw.token.clone(),
        user_password,
        connect_timeout: dur(&raw.connect_timeout, Duration::from_secs(2)),
        pending_buffer,
    })
}

/// Whether NATS subject `subject` is matched by `pattern` (`*` one token, `>` the rest).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pt = pattern.split('.');
    let mut st = subject.split('.');
    loop {
        match (pt.next(), st.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn valid_subject(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|t| !t.is_empty() && !t.contains(char::is_whitespace))
}

fn check_jobs(raw: &RawJobs, p: &mut Problems) -> Option<JobsSettings> {
    let path = raw.path.clone().unwrap_or_else(|| "/jobs/submit".into());
    match normalize_path(&path) {
        Ok(n) if n == path && path != "/" => {}
        _ => p.add("jobs.path", format!("`{path}` must be a normalised absolute path other than `/`")),
    }
    if path == "/health" {
        p.add("jobs.path", "`/health` is the public health check");
    }
    if !valid_subject(&raw.subject) || raw.subject.contains(['*', '>']) {
        p.add("jobs.subject", format!("`{}` is not a concrete NATS subject (no wildcards)", raw.subject));
    }
    let s = &raw.stream;
    if s.name.is_empty() || s.name.contains(['.', '*', '>', ' ', '/', '\\']) {
        p.add("jobs.stream.name", format!("`{}` is not a valid stream name (no . * > / \\ or spaces)", s.name));
    }
    if s.subjects.is_empty() {
        p.add("jobs.stream.subjects", "list at least one subject");
    }
    for (i, subj) in s.subjects.iter().enumerate() {
        if !valid_subject(subj) {
            p.add(format!("jobs.stream.subjects[{i}]"), format!("`{subj}` is not a valid subject"));
        }
    }
    if !s.subjects.iter().any(|pat| subject_matches(pat, &raw.subject)) {
        p.add("jobs.subject", format!("`{}` is not captured by any of jobs.stream.subjects", raw.subject));
    }
    let storage = match s.storage.as_deref().unwrap_or("file") {
        "file" => StreamStorage::File,
        "memory" => StreamStorage::Memory,
        other => {
            p.add("jobs.stream.storage", format!("`{other}` is not one of file, memory"));
            StreamStorage::File
        }
    };
    let replicas = s.replicas.unwrap_or(1);
    if !(1..=5).contains(&replicas) {
        p.add("jobs.stream.replicas", "must be between 1 and 5");
    }
    let duplicate_window = dur(&s.duplicate_window, Duration::from_secs(120));
    if duplicate_window < Duration::from_secs(1) {
        p.add("jobs.stream.duplicate_window", "must be at least 1s: it is what makes Idempotency-Key retries safe");
    }
    let max_age = dur(&s.max_age, Duration::from_secs(7 * 86_400));
    if max_age != Duration::ZERO && max_age < duplicate_window {
        p.add("jobs.stream.max_age", "must not be shorter than duplicate_window");
    }
    let ack_timeout = dur(&raw.ack_timeout, Duration::from_secs(5));
    if ack_timeout < Duration::from_millis(10) || ack_timeout > Duration::from_secs(60) {
        p.add("jobs.ack_timeout", "must be between 10ms and 60s");
    }
    let max_body = raw.max_body.map(|b| b.0).unwrap_or(1 << 20);
    if max_body == 0 {
        p.add("jobs.max_body", "must be at least 1 byte");
    }
    let body_timeout = dur(&raw.body_timeout, Duration::from_secs(10));
    if body_timeout < Duration::from_millis(100) || body_timeout > Duration::from_secs(300) {
        p.add("jobs.body_timeout", "must be between 100ms and 5m");
    }
    for (i, role) in raw.roles.iter().enumerate() {
        if role.trim().is_empty() {
            p.add(format!("jobs.roles[{i}]"), "role names cannot be empty");
        }
    }
    Some(JobsSettings {
        path,
        subject: raw.subject.clone(),
        stream: StreamSettings {
            name: s.name.clone(),
            subjects: s.subjects.clone(),
            create: s.create.unwrap_or(true),
            storage,
            replicas,
            max_age,
            duplicate_window,
        },
        roles: raw.roles.clone(),
        max_body,
        ack_timeout,
        body_timeout,
    })
}

fn parse_target(path: &str, addr: &str, p: &mut Problems) -> Option<SocketAddr> {
    if let Ok(s) = addr.parse::<SocketAddr>() {
        return Some(s);
    }
    if let Some(port) = addr.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Some(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    p.add(
        path,
        format!("`{addr}` is not an IP:port address (hostnames are not resolved; use Consul discovery for names)"),
    );
    None
}

fn check_services(
    raw: &std::collections::BTreeMap<String, RawService>,
    have_consul: bool,
    p: &mut Problems,
) -> Vec<ServiceSettings> {
    let mut out = Vec::new();
    for (name, s) in raw {
        let base = format!("services.{name}");
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            p.add(&base, format!("service name `{name}` may only use letters, digits, `-`, `_`, `.`"));
        }
        let mut targets = Vec::new();
        if let Some(list) = &s.targets {
            if list.is_empty() {
                p.add(format!("{base}.targets"), "list at least one target");
            }
            for (i, t) in list.iter().enumerate() {
                let (addr, weight, path) = match t {
                    RawTarget::Plain(a) => (a.as_str(), 1, format!("{base}.targets[{i}]")),
                    RawTarget::Weighted(w) => {
                        (w.addr.as_str(), w.weight.unwrap_or(1), format!("{base}.targets[{i}].addr"))
                    }
                };
                if weight == 0 || weight > 1000 {
                    p.add(format!("{base}.targets[{i}].weight"), "must be between 1 and 1000");
                }
                if let Some(addr) = parse_target(&path, addr, p) {
                    if targets.iter().any(|t: &Target| t.addr == addr) {
                        p.add(&path, format!("`{addr}` is listed twice"));
                    }
                    targets.push(Target { addr, weight: weight.clamp(1, 1000) });
                }
            }
        }
        let discovery = s.discovery.as_ref().map(|d| {
            if !have_consul {
                p.add(format!("{base}.discovery"), "Consul discovery needs a top-level `consul` section");
            }
            if d.consul.trim().is_empty() {
                p.add(format!("{base}.discovery.consul"), "must name the Consul service");
            }
            ConsulDiscovery { service: d.consul.clone(), tags: d.tags.clone() }
        });
        match (&s.targets, &discovery) {
            (None, None) => p.add(&base, "needs `targets` or `discovery`"),
            (Some(_), Some(_)) => p.add(&base, "has both `targets` and `discovery`; choose one"),
            _ => {}
        }
        let lb = match s.lb.as_deref().unwrap_or("round_robin") {
            "round_robin" => LbAlgorithm::RoundRobin,
            "random" => LbAlgorithm::Random,
            "least_conn" => LbAlgorithm::LeastConn,
            "consistent_hash" => {
                let key = match s.hash_key.as_deref().unwrap_or("ip") {
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
                };
                LbAlgorithm::ConsistentHash(key)
            }
            other => {
                p.add(
                    format!("{base}.lb"),
                    format!("`{other}` is not one of round_robin, least_conn, random, consistent_hash"),
                );
                LbAlgorithm::RoundRobin
            }
        };
        if s.hash_key.is_some() && !matches!(lb, LbAlgorithm::ConsistentHash(_)) {
            p.add(format!("{base}.hash_key"), "only used with `lb: consistent_hash`");
        }
        let health_check = s.health_check.as_ref().map(|h| {
            if let Some(path) = &h.path {
                if !path.starts_with('/') {
                    p.add(format!("{base}.health_check.path"), "must start with `/`");
                }
            }
            let interval = dur(&h.interval, Duration::from_secs(5));
            let timeout = dur(&h.timeout, Duration::from_secs(1));
            if interval < Duration::from_millis(100) {
                p.add(format!("{base}.health_check.interval"), "must be at least 100ms");
            }
            if timeout.is_zero() || timeout > interval {
                p.add(format!("{base}.health_check.timeout"), "must be positive and not longer than the interval");
            }
            let healthy = h.healthy.unwrap_or(1);
            let unhealthy = h.unhealthy.unwrap_or(2);
            if healthy == 0 || healthy > 100 {
                p.add(format!("{base}.health_check.healthy"), "must be between 1 and 100");
            }
            if unhealthy == 0 || unhealthy > 100 {
                p.add(format!("{base}.health_check.unhealthy"), "must be between 1 and 100");
            }
            HealthCheckSettings {
                path: h.path.clone(),
                host: h.host.clone().unwrap_or_else(|| name.clone()),
                interval,
                timeout,
                healthy: healthy.max(1),
                unhealthy: unhealthy.max(1),
            }
        });
        let connect_timeout = dur(&s.connect_timeout, Duration::from_secs(1));
        let read_timeout = dur(&s.read_timeout, Duration::from_secs(30));
        let write_timeout = s.write_timeout.map(|d| d.0);
        let idle_timeout = s.idle_timeout.map(|d| d.0);
        for (k, v) in [
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("write_timeout", write_timeout.unwrap_or(Duration::from_secs(1))),
            ("idle_timeout", idle_timeout.unwrap_or(Duration::from_secs(1))),
        ] {
            if v.is_zero() {
                p.add(format!("{base}.{k}"), "must be positive");
            }
        }
        let retries = s.retries.unwrap_or(1);
        if retries > 10 {
            p.add(format!("{base}.retries"), "must be at most 10");
        }
        if let Some(ss) = s.slow_start {
            if matches!(lb, LbAlgorithm::ConsistentHash(_)) {
                p.add(
                    format!("{base}.slow_start"),
                    "ramping weights would move consistent-hash keys; use it with round_robin, least_conn or random",
                );
            }
            if ss.0 < Duration::from_secs(1) {
                p.add(format!("{base}.slow_start"), "must be at least 1s");
            }
        }
        out.push(ServiceSettings {
            name: name.clone(),
            targets,
            discovery,
            lb,
            health_check,
            connect_timeout,
            read_timeout,
            write_timeout,
            idle_timeout,
            retries,
            slow_start: s.slow_start.map(|d| d.0),
        });
    }
    out
}

fn check_routes(
    raw: &[RawRoute],
    services: &[ServiceSettings],
    limits: &Limits,
    have_auth: bool,
    p: &mut Problems,
) -> Vec<RouteSettings> {
    let index: HashMap<&str, usize> = services.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    let mut out: Vec<RouteSettings> = Vec::new();
    let mut names = HashSet::new();
    // Routes by (path, host): only those can conflict, so the check stays linear in routes.
    let mut same_place: HashMap<(String, Option<String>), Vec<usize>> = HashMap::new();
    for (i, r) in raw.iter().enumerate() {
        let base = format!("routes[{i}]");
        let path = match normalize_path(&r.path) {
            Ok(_) if r.path.contains(';') => {
                p.add(
                    format!("{base}.path"),
                    format!("`{}`: routes match paths without their `;` parameters; remove them", r.path),
                );
                r.path.clone()
            }
            Ok(n) if r.path.starts_with('/') && (n == r.path || format!("{n}/") == r.path) => {
                if n.len() > 1 {
                    n.trim_end_matches('/').to_string()
                } else {
                    n.into_owned()
                }
            }
            _ => {
                p.add(format!("{base}.path"), format!("`{}` must be an absolute, normalised path (no `.`/`..` segments, `//` or %-escapes of unreserved characters)", r.path));
                r.path.clone()
            }
        };
        let methods = r.methods.as_ref().map(|ms| {
            if ms.is_empty() {
                p.add(format!("{base}.methods"), "list at least one method, or remove the key to allow all");
            }
            let mut out: Vec<Method> = Vec::new();
            for (j, m) in ms.iter().enumerate() {
                let upper = m.to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(method) if upper == *m && !out.contains(&method) => out.push(method),
                    Ok(_) if upper != *m => {
                        p.add(format!("{base}.methods[{j}]"), format!("write methods in upper case: `{upper}`"))
                    }
                    Ok(_) => p.add(format!("{base}.methods[{j}]"), format!("`{m}` is listed twice")),
                    Err(_) => p.add(format!("{base}.methods[{j}]"), format!("`{m}` is not an HTTP method")),
                }
            }
            out
        });
        let host = r.host.as_ref().map(|h| {
            let h = h.trim().to_ascii_lowercase();
            let valid = !h.is_empty()
                && !h.contains(['/', ' ', '@'])
                && h.parse::<http::uri::Authority>().is_ok()
                && !h.contains(':');
            if !valid {
                p.add(format!("{base}.host"), format!("`{h}` is not a host name (no port, scheme or path)"));
            }
            h
        });
        let service = match index.get(r.service.as_str()) {
            Some(id) => *id,
            None => {
                let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
                p.add(
                    format!("{base}.service"),
                    format!(
                        "unknown service `{}` (defined: {})",
                        r.service,
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    ),
                );
                0
            }
        };
        let auth = match r.auth.as_deref().unwrap_or("required") {
            "required" => AuthMode::Required,
            "optional" => AuthMode::Optional,
            "public" => AuthMode::Public,
            other => {
                p.add(format!("{base}.auth"), format!("`{other}` is not one of required, optional, public"));
                AuthMode::Required
            }
        };
        if auth != AuthMode::Public && !have_auth {
            p.add(format!("{base}.auth"), format!("route is `{}` (the default is required) but no `auth.jwt` is configured; set `auth: public` or configure JWT", r.auth.as_deref().unwrap_or("required")));
        }
        if !r.roles.is_empty() && auth == AuthMode::Public {
            p.add(format!("{base}.roles"), "a public route has no identity to check roles against");
        }
        if let Some(name) = &r.name {
            if !names.insert(name.clone()) {
                p.add(format!("{base}.name"), format!("route name `{name}` is used twice"));
            }
        }
        let rate_limit = r.rate_limit.as_ref().and_then(|rl| check_rule(&format!("{base}.rate_limit"), rl, p));
        let max_body = r.max_body.map(|b| b.0).unwrap_or(limits.max_body);
        if let Some(t) = r.timeout {
            if t.0.is_zero() {
                p.add(format!("{base}.timeout"), "must be positive");
            }
        }
        let route = RouteSettings {
            name: r.name.clone(),
            label: r.name.clone().unwrap_or_else(|| r.path.clone()),
            path,
            methods,
            host,
            service,
            auth,
            roles: r.roles.clone(),
            strip_prefix: r.strip_prefix.unwrap_or(false),
            rate_limit,
            max_body,
            timeout: r.timeout.map(|t| t.0),
            forward_authorization: r.forward_authorization.unwrap_or(true),
        };
        let peers = same_place.entry((route.path.clone(), route.host.clone())).or_default();
        if let Some(j) = peers.iter().copied().find(|j| overlaps(&out[*j], &route)) {
            p.add(
                format!("{base}.path"),
                format!("`{}` duplicates routes[{j}] for the same host and method", route.path),
            );
        }
        peers.push(out.len());
        out.push(route);
    }
    out
}

/// Two routes conflict when the same request could match both with equal specificity.
fn overlaps(a: &RouteSettings, b: &RouteSettings) -> bool {
    if a.path != b.path || a.host != b.host {
        return false;
    }
    match (&a.methods, &b.methods) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            let x: BTreeSet<&str> = x.iter().map(Method::as_str).collect();
            y.iter().any(|m| x.contains(m.as_str()))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert!(subject_matches("jobs.>", "jobs.submitted"));
        assert!(subject_matches("jobs.*", "jobs.submitted"));
        assert!(!subject_matches("jobs.*", "jobs.a.b"));
        assert!(subject_matches("jobs.submitted", "jobs.submitted"));
        assert!(!subject_matches("jobs", "jobs.submitted"));
        assert!(!subject_matches("jobs.>", "jobs"));
    }

    fn problems(yaml: &str, base: &Path) -> Vec<String> {
        match super::super::parse(yaml, base, &HashMap::new()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| format!("{}: {}", e.path, e.message)).collect(),
        }
    }

    const JWT: &str = "auth:\n  jwt:\n    algorithms: [HS256]\n    secret: 0123456789abcdef0123456789abcdef\n    forward: {sub: X-User-Id}\n";

    #[test]
    fn identity_headers_cannot_key_hashing_or_limits() {
        let yaml = format!(
            "listen: [\"127.0.0.1:1\"]\n{JWT}rate_limit:\n  default: {{requests: 5, per: 1s, key: \"header:X-User-Id\"}}\nservices:\n  s: {{targets: [\"127.0.0.1:2\"], lb: consistent_hash, hash_key: \"header:x-user-id\"}}\nroutes:\n  - {{path: /, service: s, rate_limit: {{requests: 1, per: 1s, key: \"header:X-User-Id\"}}}}\n"
        );
        let found = problems(&yaml, Path::new("."));
        for key in ["services.s.hash_key", "rate_limit.default.key", "routes[0].rate_limit.key"] {
            assert!(found.iter().any(|p| p.starts_with(key) && p.contains("claim")), "{key}: {found:?}");
        }
    }

    #[test]
    fn redis_url_and_key_files_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("bad.pem"), "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
            .expect("write");
        std::fs::write(dir.path().join("empty.json"), r#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#).expect("write");
        let yaml = "listen: [\"127.0.0.1:1\"]\nauth:\n  jwt:\n    algorithms: [RS256]\n    public_key_file: bad.pem\n    jwks_file: empty.json\nrate_limit:\n  store: redis\n  redis_url: rediss://cache:6380\nservices:\n  s: {targets: [\"127.0.0.1:2\"]}\nroutes:\n  - {path: /, service: s}\n";
        let found = problems(yaml, dir.path());
        assert!(found.iter().any(|p| p.starts_with("auth.jwt.public_key_file") && p.contains("RSA")), "{found:?}");
        assert!(found.iter().any(|p| p.starts_with("auth.jwt.jwks_file") && p.contains("no usable")), "{found:?}");
        assert!(found.iter().any(|p| p.starts_with("rate_limit.redis_url") && p.contains("rediss")), "{found:?}");
    }
}
