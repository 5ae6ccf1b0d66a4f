//! Raw file → validated model. Every `check_*` step records problems with their key path and
//! keeps going, so one run of `siger -t` shows all of them.

use super::model::*;
use super::raw::*;
use crate::normalize::normalize_path;
use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod auth;
mod dependencies;
mod jobs;
mod limits;
mod plans;
mod policies;
mod routes;
mod server;
mod services;
mod waf;

use auth::{check_api_keys, check_identity_headers, check_jwt, check_telegram};
use dependencies::{check_consul, check_dns, check_nats};
use jobs::check_jobs;
pub(crate) use jobs::subject_matches;
use limits::{check_rate_limit, check_rule};
use routes::check_routes;
pub(crate) use server::is_always_allowed_host;
use server::{check_admin, check_limits, check_listeners, check_server, check_trusted};
use services::check_services;

/// What checking the file found: errors and warnings as (key path, reason), and every file
/// the config names (read while checking).
#[derive(Debug, Default)]
pub(crate) struct Problems {
    /// Contradictions and unusable values: the config is refused.
    pub(crate) errors: Vec<(String, String)>,
    /// Settings that have no effect: reported, not refused.
    pub(crate) warnings: Vec<(String, String)>,
    /// Files named by the config that were read.
    pub(crate) files: Vec<FileDigest>,
}

impl Problems {
    fn add(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.errors.push((path.into(), msg.into()));
    }

    fn warn(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.warnings.push((path.into(), msg.into()));
    }
}

/// Turn the raw file into the model (with its warnings and named files in `Problems`), or
/// every problem found.
pub(crate) fn validate(raw: RawConfig, base: &Path) -> Result<(Config, Problems), Problems> {
    let mut p = Problems::default();
    let server = check_server(&raw.server, &mut p);
    let listeners = check_listeners(&raw.listen, base, &mut p);
    let admin = raw.admin.as_ref().and_then(|a| check_admin(a, &listeners, &mut p));
    let trusted_proxies = check_trusted(&raw.trusted_proxies, &mut p);
    let limits = check_limits(&raw.limits, &mut p);
    let auth = raw.auth.as_ref().and_then(|a| a.jwt.as_ref()).and_then(|j| check_jwt(j, base, &mut p));
    let api_keys = raw.auth.as_ref().and_then(|a| a.api_keys.as_ref()).and_then(|k| check_api_keys(k, base, &mut p));
    let telegram = raw.auth.as_ref().and_then(|a| a.telegram.as_ref()).and_then(|t| check_telegram(t, base, &mut p));
    if raw.auth.as_ref().is_some_and(|a| a.jwt.is_none() && a.api_keys.is_none() && a.telegram.is_none()) {
        p.add("auth", "configure at least one of `jwt`, `api_keys`, `telegram` (or remove `auth`)");
    }
    // The schemes routes may name: those configured (a section with errors counts, so its
    // routes are not reported a second time).
    let schemes: Vec<Scheme> = [
        (Scheme::Jwt, raw.auth.as_ref().is_some_and(|a| a.jwt.is_some())),
        (Scheme::ApiKey, raw.auth.as_ref().is_some_and(|a| a.api_keys.is_some())),
        (Scheme::Telegram, raw.auth.as_ref().is_some_and(|a| a.telegram.is_some())),
    ]
    .into_iter()
    .filter_map(|(s, on)| on.then_some(s))
    .collect();
    let rate_limit = check_rate_limit(raw.rate_limit.as_ref(), base, &mut p);
    let consul = raw.consul.as_ref().and_then(|c| check_consul(c, &mut p));
    let dns = check_dns(raw.dns.as_ref(), &mut p);
    let nats = raw.nats.as_ref().and_then(|n| check_nats(n, base, &mut p));
    let jobs = raw.jobs.as_ref().and_then(|j| check_jobs(j, base, &mut p));
    let services = check_services(&raw.services, consul.is_some(), base, &mut p);
    let identity = identity_headers(auth.as_ref(), telegram.as_ref(), api_keys.is_some());
    let (mut routes, splits, aggregates) =
        check_routes(&raw.routes, &services, &limits, &schemes, &identity, base, &mut p);
    let cache = policies::check_cache(raw.cache.as_ref(), &routes, &mut p);
    let tracing = raw.tracing.as_ref().map(|t| dependencies::check_tracing(t, &mut p));
    let waf = waf::check_waf(raw.waf.as_ref(), &routes, base, &mut p);
    plans::check_plans(&raw, &routes, &rate_limit, &mut p);
    if let Some(jobs) = &jobs {
        let [submit, status] = jobs_routes(jobs, &routes, &rate_limit, &mut p);
        routes.push(submit);
        routes.push(status);
    }
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
    if nats.is_some() && jobs.is_none() {
        p.warn("nats", "configured, but only `jobs` uses NATS and there is no `jobs` section");
    }
    if raw.dns.is_some() && services.iter().all(|s| s.dns.is_none()) {
        p.warn("dns", "configured, but no service names a host in `targets` or uses `dns_srv`");
    }
    if consul.as_ref().is_some_and(|c| c.register.is_none()) && services.iter().all(|s| s.discovery.is_none()) {
        p.warn("consul", "configured, but no service uses `discovery.consul` and there is no `register`");
    }

    if !p.errors.is_empty() {
        return Err(p);
    }
    let config = Config {
        server,
        listeners,
        admin,
        trusted_proxies,
        limits,
        access_log: raw.access_log.enabled.unwrap_or(true),
        auth,
        api_keys,
        telegram,
        rate_limit,
        consul,
        dns,
        nats,
        jobs,
        services,
        routes,
        splits,
        aggregates,
        cache,
        tracing,
        waf,
        plans: raw.plans,
        consumers: raw.consumers.unwrap_or_default(),
        usage: raw.usage,
        warnings: Vec::new(),
        files: p.files.clone(),
    };
    Ok((config, p))
}

/// The reserved jobs path as a route: matched like any route (other methods get 405 with
/// `Allow: POST`, even under a catch-all), authenticated, role-checked and rate-limited like
/// one, and answered by publishing instead of proxying.
/// The submission route (`POST <jobs.path>`) and the status route (`GET <jobs.path>/<job_id>`),
/// both owning the jobs path and what is under it.
fn jobs_routes(
    jobs: &JobsSettings,
    routes: &[RouteSettings],
    rate_limit: &RateLimitSettings,
    p: &mut Problems,
) -> [RouteSettings; 2] {
    let under = format!("{}/", jobs.path);
    if let Some(i) = routes.iter().position(|r| (r.path == jobs.path || r.path.starts_with(&under)) && r.host.is_none())
    {
        p.add(
            "jobs.path",
            format!(
                "`{}` is reserved (job status lives under it), but routes[{i}].path is `{}`",
                jobs.path, routes[i].path
            ),
        );
    }
    let submit = RouteSettings {
        label: jobs.path.clone(),
        path: jobs.path.clone(),
        methods: Some(vec![Method::POST]),
        target: RouteTarget::Jobs,
        roles: jobs.roles.clone(),
        rate_limit: jobs.rate_limit.clone().or_else(|| rate_limit.default.clone()),
        max_body: jobs.max_body,
        forward_authorization: false,
        ..RouteSettings::default()
    };
    // Every method but POST: the jobs handler answers a status for GET and HEAD under the
    // path, and 405 with the resource's own `Allow` for the rest (the route table would list
    // both routes' methods).
    let status = RouteSettings {
        label: format!("{}/{{job_id}}", jobs.path),
        methods: None,
        target: RouteTarget::JobStatus,
        // Who may read is decided per job: its submitter, or a role in `jobs.status_roles`.
        roles: Vec::new(),
        rate_limit: rate_limit.default.clone(),
        ..submit.clone()
    };
    [submit, status]
}

/// A URL for an error message: credentials (`user:pass@`) and the query are left out.
pub(crate) fn redact_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    match without_query.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://…@{host}"),
            None => without_query.to_string(),
        },
        None => without_query.rsplit_once('@').map_or_else(|| without_query.to_string(), |(_, h)| format!("…@{h}")),
    }
}

fn dur(d: &Option<super::units::ConfDuration>, default: Duration) -> Duration {
    d.map(|d| d.0).unwrap_or(default)
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

/// The file at `key` must exist and be readable text; returns it as read (and remembers its
/// digest for `watch_config`). What it holds is checked by the module that uses it.
fn read_file(key: &str, base: &Path, file: &str, p: &mut Problems) -> Option<LoadedFile> {
    let resolved = resolve_file(base, file);
    match std::fs::read_to_string(&resolved) {
        Ok(text) => {
            use sha2::Digest;
            p.files.push(FileDigest { path: resolved.clone(), sha256: sha2::Sha256::digest(text.as_bytes()).into() });
            Some(LoadedFile { key: key.to_string(), path: resolved, bytes: Arc::from(text.into_bytes()) })
        }
        Err(e) => {
            p.add(key, format!("cannot read `{}`: {e}", resolved.display()));
            None
        }
    }
}

/// The text of a file [`read_file`] read (it was read as UTF-8).
fn text(file: &LoadedFile) -> &str {
    std::str::from_utf8(&file.bytes).unwrap_or_default()
}

fn check_header_name(path: &str, name: &str, p: &mut Problems) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            p.add(path, format!("`{name}` is not a valid header name"));
            None
        }
    }
}

fn check_http_url(path: &str, url: &str, p: &mut Problems) -> bool {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
    if !ok {
        p.add(path, format!("`{}` is not an http(s) URL", redact_url(url)));
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_messages_lose_their_credentials() {
        assert_eq!(redact_url("redis://:pa@ss@cache:6379/0?x=1"), "redis://…@cache:6379/0");
        assert_eq!(redact_url("nats://token@host:4222"), "nats://…@host:4222");
        assert_eq!(redact_url("http://consul:8500"), "http://consul:8500");
    }

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
        let yaml = "listen: [\"127.0.0.1:1\"]\nauth:\n  jwt:\n    algorithms: [RS256]\n    public_key_file: bad.pem\n    jwks_file: empty.json\nrate_limit:\n  store: redis\n  redis_url: http://cache:6380\nservices:\n  s: {targets: [\"127.0.0.1:2\"]}\nroutes:\n  - {path: /, service: s}\n";
        let found = problems(yaml, dir.path());
        assert!(found.iter().any(|p| p.starts_with("auth.jwt.public_key_file") && p.contains("RSA")), "{found:?}");
        assert!(found.iter().any(|p| p.starts_with("auth.jwt.jwks_file") && p.contains("no usable")), "{found:?}");
        assert!(
            found.iter().any(|p| p.starts_with("rate_limit.redis_url") && p.contains("not a redis://")),
            "{found:?}"
        );
    }
}
