//! Consul: where discovered services live, and this gateway's own registration.
//!
//! - [`watch`]: one blocking-query loop per Consul-backed service on
//!   `GET /v1/health/service/<name>?passing=true`, publishing into the pool's
//!   [`MembershipFeed`](crate::upstream::MembershipFeed). Errors keep the last known good set.
//! - [`persist`]: that set, saved per service under `consul.state_dir` and loaded at start-up.
//! - [`register`]: `consul.register` — register once the listeners answer, keep the
//!   registration in place, deregister on SIGTERM/SIGINT but not when handing over to a new
//!   process (SIGQUIT upgrade).
//!
//! The endpoints and Consul versions relied on are listed in `docs/consul.md`. Clients are
//! created inside Pingora services (after the daemon fork), never before.

mod pace;
mod persist;
mod register;
mod watch;

pub(crate) use persist::Store;
pub(crate) use register::{Registrar, ShutdownSignals};

use super::DiscoveryControl;
use crate::config::{Config, ConsulSettings, Target};
use crate::lifecycle::{spawn_supervised, Running};
use crate::observability::ConsulMetrics;
use async_trait::async_trait;
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for a non-blocking Consul request (registration, deregistration, reads).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect timeout to the agent (normally local).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest error body kept for a log line.
const MAX_ERROR_BODY: usize = 200;

/// A failed Consul request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsulError {
    /// No HTTP answer: connection refused, timeout, TLS, …
    #[error("cannot reach Consul at {url}: {reason}")]
    Transport {
        /// Request URL (no token: tokens travel in a header).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Consul answered with an error status.
    #[error("Consul answered {status} for {url}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Request URL.
        url: String,
        /// Start of the answer body (Consul puts the reason there, e.g. `ACL not found`).
        body: String,
    },
    /// The answer could not be decoded.
    #[error("unexpected answer from Consul for {url}: {reason}")]
    Decode {
        /// Request URL.
        url: String,
        /// Decoder message.
        reason: String,
    },
    /// An empty instance list that Consul says was filtered by ACLs: the token lacks
    /// `service:read`/`node:read`. Treated as an error so a token problem cannot empty a pool.
    #[error(
        "Consul filtered every instance of `{service}` by ACLs (X-Consul-Results-Filtered-By-ACLs); check consul.token"
    )]
    FilteredByAcls {
        /// Consul service name.
        service: String,
    },
    /// `consul.address` is not a usable base URL.
    #[error("consul.address `{0}` is not a valid URL")]
    BadAddress(String),
}

/// One entry of `/v1/health/service/<name>` (fields we use; Consul sends many more).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceEntry {
    /// The node the instance runs on.
    pub(crate) node: EntryNode,
    /// The service instance.
    pub(crate) service: EntryService,
    /// Node and service checks.
    #[serde(default)]
    pub(crate) checks: Option<Vec<EntryCheck>>,
}

/// `Node` of a health entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct EntryNode {
    /// Node name.
    pub(crate) node: String,
    /// Node address (used when the service has none).
    pub(crate) address: String,
}

/// `Service` of a health entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct EntryService {
    /// Instance id.
    #[serde(rename = "ID")]
    pub(crate) id: String,
    /// Service name.
    pub(crate) service: String,
    /// Tags (Consul may send `null`).
    pub(crate) tags: Option<Vec<String>>,
    /// Instance address; empty means "the node's address".
    pub(crate) address: String,
    /// Port.
    pub(crate) port: u32,
    /// Load-balancing weights.
    pub(crate) weights: Option<EntryWeights>,
}

/// `Service.Weights`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EntryWeights {
    /// Weight while all checks pass.
    #[serde(default)]
    pub(crate) passing: i64,
}

/// One check of a health entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct EntryCheck {
    /// Check id (`serfHealth`, `service:<id>`, …).
    #[serde(rename = "CheckID")]
    pub(crate) check_id: String,
    /// `passing`, `warning`, `critical` or `maintenance`.
    pub(crate) status: String,
}

/// A `/v1/health/service` answer.
#[derive(Debug, Clone)]
pub(crate) struct HealthAnswer {
    /// `X-Consul-Index`, if present and numeric.
    pub(crate) index: Option<u64>,
    /// Instances.
    pub(crate) entries: Vec<ServiceEntry>,
    /// `X-Consul-Results-Filtered-By-ACLs: true`.
    pub(crate) filtered_by_acls: bool,
}

/// `/v1/agent/service/<id>` (fields we compare).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct AgentService {
    /// Instance id.
    #[serde(rename = "ID")]
    pub(crate) id: String,
    /// Service name.
    pub(crate) service: String,
    /// Tags.
    pub(crate) tags: Option<Vec<String>>,
    /// Address.
    pub(crate) address: String,
    /// Port.
    pub(crate) port: u32,
    /// Metadata.
    pub(crate) meta: Option<HashMap<String, String>>,
}

/// Body of `PUT /v1/agent/service/register`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RegisterBody {
    /// Instance id.
    #[serde(rename = "ID")]
    pub(crate) id: String,
    /// Service name.
    pub(crate) name: String,
    /// Advertised address.
    pub(crate) address: String,
    /// Advertised port.
    pub(crate) port: u16,
    /// Tags.
    pub(crate) tags: Vec<String>,
    /// Metadata.
    pub(crate) meta: HashMap<String, String>,
    /// The HTTP check Consul runs against us.
    pub(crate) check: CheckBody,
}

/// The check of a registration.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CheckBody {
    /// Check name.
    pub(crate) name: String,
    /// URL Consul GETs (2xx = passing).
    #[serde(rename = "HTTP")]
    pub(crate) http: String,
    /// Go duration between checks.
    pub(crate) interval: String,
    /// Go duration a check may take.
    pub(crate) timeout: String,
    /// Go duration after which Consul removes the instance while critical.
    pub(crate) deregister_critical_service_after: String,
}

/// A Consul duration (Go syntax): whole seconds as `30s`, otherwise milliseconds.
pub(crate) fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A small Consul HTTP API client (agent address, token, datacenter from the config).
#[derive(Debug, Clone)]
pub(crate) struct ConsulClient {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    datacenter: Option<String>,
}

impl ConsulClient {
    /// Build a client. Call only inside a running service (after the daemon fork).
    pub(crate) fn new(settings: &ConsulSettings) -> Result<Self, ConsulError> {
        let base = Url::parse(&settings.address).map_err(|_| ConsulError::BadAddress(settings.address.clone()))?;
        if base.cannot_be_a_base() {
            return Err(ConsulError::BadAddress(settings.address.clone()));
        }
        // Consul is reached directly: a proxy from the environment must not capture it.
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("siger/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConsulError::Transport { url: settings.address.clone(), reason: e.to_string() })?;
        Ok(ConsulClient { http, base, token: settings.token.clone(), datacenter: settings.datacenter.clone() })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v1").extend(segments);
        }
        url
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(token) => req.header("X-Consul-Token", token),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &Url) -> Result<reqwest::Response, ConsulError> {
        let resp = req.send().await.map_err(|e| ConsulError::Transport { url: url.to_string(), reason: chain(&e) })?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(ConsulError::Status { status: status.as_u16(), url: url.to_string(), body: truncate(body.trim()) })
    }

    /// Healthy instances of `service` carrying every tag in `tags`: a blocking query when
    /// `index > 0` (Consul holds it up to `wait` plus its own jitter of up to `wait/16`).
    pub(crate) async fn health_service(
        &self,
        service: &str,
        tags: &[String],
        index: u64,
        wait: Duration,
    ) -> Result<HealthAnswer, ConsulError> {
        let mut url = self.url(&["health", "service", service]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("passing", "true");
            for tag in tags {
                q.append_pair("tag", tag);
            }
            if let Some(dc) = &self.datacenter {
                q.append_pair("dc", dc);
            }
            if index > 0 {
                q.append_pair("index", &index.to_string());
                q.append_pair("wait", &go_duration(wait));
            }
        }
        let timeout = if index > 0 { wait + wait / 16 + REQUEST_TIMEOUT } else { REQUEST_TIMEOUT };
        let resp = self.send(self.request(reqwest::Method::GET, url.clone()).timeout(timeout), &url).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            let body = resp.text().await.unwrap_or_default();
            return Err(ConsulError::Status { status: 404, url: url.to_string(), body: truncate(body.trim()) });
        }
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let index = header("X-Consul-Index").and_then(|v| v.trim().parse().ok());
        let filtered_by_acls = header("X-Consul-Results-Filtered-By-ACLs").is_some_and(|v| v == "true");
        let body =
            resp.bytes().await.map_err(|e| ConsulError::Transport { url: url.to_string(), reason: chain(&e) })?;
        let entries: Option<Vec<ServiceEntry>> = serde_json::from_slice(&body)
            .map_err(|e| ConsulError::Decode { url: url.to_string(), reason: e.to_string() })?;
        Ok(HealthAnswer { index, entries: entries.unwrap_or_default(), filtered_by_acls })
    }

    /// The local agent's registration with this id, if any.
    pub(crate) async fn agent_service(&self, id: &str) -> Result<Option<AgentService>, ConsulError> {
        let url = self.url(&["agent", "service", id]);
        let resp = self.send(self.request(reqwest::Method::GET, url.clone()).timeout(REQUEST_TIMEOUT), &url).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        resp.json().await.map(Some).map_err(|e| ConsulError::Decode { url: url.to_string(), reason: e.to_string() })
    }

    /// Register (or replace) a service on the local agent.
    pub(crate) async fn register(&self, body: &RegisterBody) -> Result<(), ConsulError> {
        let url = self.url(&["agent", "service", "register"]);
        let req = self.request(reqwest::Method::PUT, url.clone()).timeout(REQUEST_TIMEOUT).json(body);
        let resp = self.send(req, &url).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(ConsulError::Status { status: 404, url: url.to_string(), body: String::new() });
        }
        Ok(())
    }

    /// Remove a service from the local agent (a no-op in Consul if it is not registered).
    pub(crate) async fn deregister(&self, id: &str) -> Result<(), ConsulError> {
        let url = self.url(&["agent", "service", "deregister", id]);
        self.send(self.request(reqwest::Method::PUT, url.clone()).timeout(REQUEST_TIMEOUT), &url).await.map(|_| ())
    }
}

/// The error and its causes on one line (reqwest's top-level message alone rarely says why).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR_BODY) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Wire Consul into the server: add the discovery and registration background services, and
/// return run arguments whose signal handling deregisters on shutdown but not on upgrade.
/// Without a `consul` section this only returns the defaults. (Discovered pools were seeded
/// from their state files when the runtime was built.) `config` is the starting one: the
/// registration advertises its listeners.
pub(crate) fn install(
    server: &mut Server,
    control: &DiscoveryControl,
    config: &Config,
    metrics: &ConsulMetrics,
) -> RunArgs {
    let Some(settings) = control.settings().cloned() else { return RunArgs::default() };
    let service = DiscoveryService { settings: settings.clone(), control: control.clone(), metrics: metrics.clone() };
    server.add_service(background_service("consul discovery", service));
    let registrar = settings.register.as_ref().map(|r| Arc::new(Registrar::new(&settings, r, config)));
    if let Some(registrar) = &registrar {
        let service = register::RegistrationService::new(registrar.clone(), metrics.clone());
        server.add_service(background_service("consul registration", service));
    }
    RunArgs { shutdown_signal: Box::new(ShutdownSignals::new(registrar)) }
}

/// Runs the watch of every discovered service the configuration in force wants, on one
/// client (one connection per blocking query); a reload starts and stops watches, and leaves
/// those of unchanged services running.
struct DiscoveryService {
    settings: ConsulSettings,
    control: DiscoveryControl,
    metrics: ConsulMetrics,
}

#[async_trait]
impl BackgroundService for DiscoveryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = match ConsulClient::new(&self.settings) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                log::error!("consul discovery disabled: {e}");
                return;
            }
        };
        let mut wanted = self.control.subscribe();
        // Each watch is supervised (restarted after a panic) and stopped by dropping its handle.
        let mut running: HashMap<String, (watch::WatchKey, Running)> = HashMap::new();
        loop {
            let specs = wanted.borrow_and_update().clone();
            let mut keep = HashMap::new();
            for spec in specs.iter() {
                let key = watch::WatchKey::of(spec);
                let handle = match running.remove(&spec.name) {
                    Some((k, handle)) if k == key => handle,
                    _ => {
                        let w = Arc::new(watch::Watch::new(spec, self.control.store(spec)));
                        let (client, metrics, wait) = (client.clone(), self.metrics.clone(), self.settings.wait);
                        spawn_supervised(spec.name.clone(), move |mut stop| {
                            let (w, client, metrics) = (w.clone(), client.clone(), metrics.clone());
                            async move {
                                tokio::select! {
                                    _ = w.run(&client, wait, &metrics) => {}
                                    _ = stop.changed() => {}
                                }
                            }
                        })
                    }
                };
                keep.insert(spec.name.clone(), (key, handle));
            }
            // Dropping the rest stops them.
            running = keep;
            tokio::select! {
                changed = wanted.changed() => if changed.is_err() { break },
                _ = shutdown.changed() => break,
            }
        }
    }
}

/// Turn health entries into backends: `Service.Address`, else `Node.Address`; weight from
/// `Service.Weights.Passing` (missing → 1, clamped to 1..=[`MAX_WEIGHT`]). Entries with a
/// non-passing check (Consul already filters with `passing=true`; this guards against an
/// agent or proxy that ignores it), no address or no port are skipped, with a reason.
pub(crate) fn candidates(entries: &[ServiceEntry]) -> (Vec<Candidate>, Vec<String>) {
    let mut out = Vec::with_capacity(entries.len());
    let mut skipped = Vec::new();
    for e in entries {
        let id = if e.service.id.is_empty() { &e.service.service } else { &e.service.id };
        if let Some(c) = e.checks.iter().flatten().find(|c| c.status != "passing") {
            skipped.push(format!("{id}: check {} is {}", c.check_id, c.status));
            continue;
        }
        let host = if e.service.address.trim().is_empty() { e.node.address.trim() } else { e.service.address.trim() };
        if host.is_empty() {
            skipped.push(format!("{id}: neither Service.Address nor Node.Address is set"));
            continue;
        }
        let Ok(port) = u16::try_from(e.service.port) else {
            skipped.push(format!("{id}: port {} is out of range", e.service.port));
            continue;
        };
        if port == 0 {
            skipped.push(format!("{id}: no port"));
            continue;
        }
        let passing = e.service.weights.map_or(1, |w| w.passing);
        let weight = passing.clamp(1, MAX_WEIGHT as i64) as u32;
        if weight as i64 != passing && e.service.weights.is_some() {
            skipped.push(format!("{id}: weight {passing} clamped to {weight}"));
        }
        out.push(Candidate { host: host.trim_start_matches('[').trim_end_matches(']').to_string(), port, weight });
    }
    (out, skipped)
}

/// Largest weight taken from Consul: Pingora expands each backend `weight` times into its
/// selection table, so an absurd weight would cost memory, not precision.
pub(crate) const MAX_WEIGHT: u32 = 1000;

/// An instance before address resolution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Candidate {
    /// IP literal or host name.
    pub(crate) host: String,
    /// Port.
    pub(crate) port: u16,
    /// Weight (1..=1000).
    pub(crate) weight: u32,
}

impl Candidate {
    /// The target when `host` is an IP literal.
    pub(crate) fn literal(&self) -> Option<Target> {
        let ip: std::net::IpAddr = self.host.parse().ok()?;
        Some(Target { addr: std::net::SocketAddr::new(ip, self.port), weight: self.weight })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> ServiceEntry {
        serde_json::from_str(json).expect("entry")
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(go_duration(Duration::from_secs(600)), "600s");
    }

    #[test]
    fn address_falls_back_to_the_node_and_weights_apply() {
        let entries = vec![
            entry(
                r#"{"Node":{"Node":"n1","Address":"10.0.0.1"},"Service":{"ID":"a","Service":"s","Tags":null,
                   "Address":"","Port":8080,"Weights":{"Passing":3,"Warning":1}},
                   "Checks":[{"CheckID":"serfHealth","Status":"passing"}]}"#,
            ),
            entry(
                r#"{"Node":{"Node":"n2","Address":"10.0.0.2"},"Service":{"ID":"b","Service":"s",
                   "Address":"10.9.9.9","Port":9090},"Checks":[]}"#,
            ),
        ];
        let (c, skipped) = candidates(&entries);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(c[0], Candidate { host: "10.0.0.1".into(), port: 8080, weight: 3 });
        assert_eq!(c[1], Candidate { host: "10.9.9.9".into(), port: 9090, weight: 1 }, "no Weights → 1");
        assert_eq!(c[1].literal().expect("ip").addr.to_string(), "10.9.9.9:9090");
    }

    #[test]
    fn unusable_entries_are_skipped_with_a_reason() {
        let entries = vec![
            entry(
                r#"{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"crit","Port":1},"Checks":[{"CheckID":"service:crit","Status":"critical"}]}"#,
            ),
            entry(r#"{"Node":{"Address":""},"Service":{"ID":"noaddr","Port":1}}"#),
            entry(r#"{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"noport","Port":0}}"#),
            entry(r#"{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"heavy","Port":5,"Weights":{"Passing":1000000}}}"#),
            entry(r#"{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"v6","Address":"::1","Port":5}}"#),
        ];
        let (c, skipped) = candidates(&entries);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].weight, MAX_WEIGHT);
        assert_eq!(c[1].literal().expect("v6").addr.to_string(), "[::1]:5");
        assert_eq!(skipped.len(), 4, "{skipped:?}");
        assert!(skipped[0].contains("critical"));
    }

    #[test]
    fn urls_escape_the_service_name_and_keep_a_base_path() {
        let settings = ConsulSettings {
            address: "http://127.0.0.1:8500/prefix".into(),
            token: None,
            datacenter: None,
            wait: Duration::from_secs(30),
            state_dir: None,
            register: None,
        };
        let client = ConsulClient::new(&settings).expect("client");
        assert_eq!(
            client.url(&["health", "service", "a b/c"]).as_str(),
            "http://127.0.0.1:8500/prefix/v1/health/service/a%20b%2Fc"
        );
    }
}
