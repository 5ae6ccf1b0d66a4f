//! Registering this gateway in Consul (`consul.register`), and taking it out again.
//!
//! - **When.** Only once every public listener and the admin listener accept connections, so
//!   Consul never advertises an instance that refuses traffic.
//! - **Kept in place.** The registration is re-checked every [`VERIFY_EVERY`]
//!   (`GET /v1/agent/service/<id>`) and re-sent if the agent lost it (agent restarted without
//!   its data, or `DeregisterCriticalServiceAfter` reaped us) or if it differs from the config.
//!   An identical registration is left alone: re-sending it would reset the check to critical
//!   in Consul versions that do not carry the status over. Consul down: retried in the
//!   background with back-off; the gateway serves regardless.
//! - **Removed.** On SIGTERM (and SIGINT) the instance is deregistered *before* Pingora stops
//!   accepting, so clients following Consul move away while this process still answers. On
//!   SIGQUIT (graceful upgrade) it is not: the new process, started with the same config,
//!   owns the same ID `<name>-<address>-<port>` and keeps the registration; the old process
//!   only stops maintaining it.

use super::{go_duration, CheckBody, ConsulClient, RegisterBody};
use crate::backoff::Backoff;
use crate::config::{Config, ConsulRegistration, ConsulSettings};
use crate::observability::ConsulMetrics;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, ShutdownWatch, UnixShutdownSignalWatch};
use pingora::services::background::BackgroundService;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify};

/// How often an established registration is confirmed.
const VERIFY_EVERY: Duration = Duration::from_secs(30);
/// Longest a shutdown waits for an in-flight registration request before deregistering.
const STOP_LOCK_WAIT: Duration = Duration::from_secs(2);
/// Longest a shutdown waits for the deregistration itself.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(3);
/// Meta key carrying a digest of what we register (to detect a changed definition).
const META_DIGEST: &str = "siger_registration";

/// This instance's registration and its lifecycle.
#[derive(Debug)]
pub(crate) struct Registrar {
    settings: ConsulSettings,
    body: RegisterBody,
    /// Addresses that must accept connections before registering.
    listeners: Vec<SocketAddr>,
    /// Set once the process is going away: nothing is (re-)registered after it.
    stopped: AtomicBool,
    wake: Notify,
    /// Serialises registration requests with the final deregistration, so a registration
    /// already on the wire cannot land after it.
    ops: Mutex<()>,
}

/// Where Consul should check us: the configured URL, else the admin `/health` (on the
/// registration address when the admin listener is bound to a wildcard address).
fn check_url(reg: &ConsulRegistration, admin: Option<SocketAddr>) -> String {
    if let Some(url) = &reg.check_http {
        return url.clone();
    }
    let Some(admin) = admin else { return format!("http://{}/health", reg.address) };
    let host = match admin.ip() {
        ip if ip.is_unspecified() => reg.address.clone(),
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}/health", admin.port())
}

/// The address to probe for a listener bound to `addr` (wildcards are probed on loopback).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

/// What we send, with a digest of it in `Meta` so a changed definition is noticed.
fn register_body(reg: &ConsulRegistration, check: String) -> RegisterBody {
    let mut body = RegisterBody {
        id: reg.service_id(),
        name: reg.name.clone(),
        address: reg.address.clone(),
        port: reg.port,
        tags: reg.tags.clone(),
        meta: HashMap::from([("siger_version".to_string(), env!("CARGO_PKG_VERSION").to_string())]),
        check: CheckBody {
            name: "Siger admin /health".to_string(),
            http: check,
            interval: go_duration(reg.check_interval),
            timeout: go_duration(reg.check_timeout),
            deregister_critical_service_after: go_duration(reg.deregister_after),
        },
    };
    let digest = Sha256::digest(serde_json::to_vec(&body).unwrap_or_default());
    body.meta.insert(META_DIGEST.to_string(), hex::encode(&digest[..8]));
    body
}

impl Registrar {
    /// The registration described by the config.
    pub(crate) fn new(settings: &ConsulSettings, reg: &ConsulRegistration, config: &Config) -> Self {
        let mut listeners: Vec<SocketAddr> = config.listeners.iter().map(|l| reachable(l.socket)).collect();
        listeners.extend(config.admin.as_ref().map(|a| reachable(a.socket)));
        Registrar {
            settings: settings.clone(),
            body: register_body(reg, check_url(reg, config.admin.as_ref().map(|a| a.socket))),
            listeners,
            stopped: AtomicBool::new(false),
            wake: Notify::new(),
            ops: Mutex::new(()),
        }
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    /// Whether the agent's copy matches what we would register.
    fn matches(&self, existing: &super::AgentService) -> bool {
        let tags = |t: &[String]| t.iter().cloned().collect::<BTreeSet<_>>();
        existing.service == self.body.name
            && existing.address == self.body.address
            && existing.port == u32::from(self.body.port)
            && tags(existing.tags.as_deref().unwrap_or_default()) == tags(&self.body.tags)
            && existing.meta.as_ref().and_then(|m| m.get(META_DIGEST)) == self.body.meta.get(META_DIGEST)
    }

    /// Make sure the agent has our registration; returns whether it had to be (re)sent.
    async fn ensure(&self, client: &ConsulClient) -> Result<bool, super::ConsulError> {
        let _op = self.ops.lock().await;
        if self.is_stopped() {
            return Ok(false);
        }
        if client.agent_service(&self.body.id).await?.is_some_and(|s| self.matches(&s)) {
            return Ok(false);
        }
        client.register(&self.body).await.map(|_| true)
    }

    /// Sleep, cut short when the registrar is stopped.
    async fn pause(&self, d: Duration) {
        let woken = self.wake.notified();
        if self.is_stopped() {
            return;
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(d) => {}
        }
    }

    async fn wait_for_listeners(&self) {
        let started = Instant::now();
        let mut warned = false;
        while !self.is_stopped() {
            let mut all_up = true;
            for addr in &self.listeners {
                let connect = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await;
                if !matches!(connect, Ok(Ok(_))) {
                    all_up = false;
                    break;
                }
            }
            if all_up {
                return;
            }
            if !warned && started.elapsed() > Duration::from_secs(10) {
                warned = true;
                log::warn!("consul registration: still waiting for the listeners {:?} to accept", self.listeners);
            }
            self.pause(Duration::from_millis(100)).await;
        }
    }

    /// Keep the registration in place until stopped.
    async fn maintain(&self, metrics: &ConsulMetrics) {
        self.wait_for_listeners().await;
        let client = match ConsulClient::new(&self.settings) {
            Ok(c) => c,
            Err(e) => {
                log::error!("consul registration disabled: {e}");
                return;
            }
        };
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        while !self.is_stopped() {
            match self.ensure(&client).await {
                Ok(sent) => {
                    if sent {
                        log::info!("registered in Consul as {} (check {})", self.body.id, self.body.check.http);
                    } else if backoff.failures() > 0 {
                        log::info!("Consul registration {} confirmed", self.body.id);
                    }
                    backoff.reset();
                    self.pause(VERIFY_EVERY).await;
                }
                Err(e) => {
                    metrics.errors.inc();
                    if backoff.failures() == 0 {
                        log::warn!("consul registration of {} failed, retrying in the background: {e}", self.body.id);
                    } else {
                        log::debug!("consul registration of {} failed: {e}", self.body.id);
                    }
                    let delay = backoff.next();
                    self.pause(delay).await;
                }
            }
        }
    }

    /// Graceful terminate: stop maintaining, then deregister (bounded in time; on failure
    /// Consul's check turns critical and `DeregisterCriticalServiceAfter` cleans up).
    pub(crate) async fn deregister(&self) {
        self.stop();
        let _op = tokio::time::timeout(STOP_LOCK_WAIT, self.ops.lock()).await;
        // A fresh client: this runs on Pingora's signal runtime, not the registration one.
        let result = match ConsulClient::new(&self.settings) {
            Ok(client) => {
                tokio::time::timeout(DEREGISTER_TIMEOUT, client.deregister(&self.body.id)).await.unwrap_or_else(|_| {
                    Err(super::ConsulError::Transport {
                        url: self.settings.address.clone(),
                        reason: "timed out".into(),
                    })
                })
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => log::info!("deregistered {} from Consul", self.body.id),
            Err(e) => {
                log::warn!("could not deregister {} from Consul (its check will fail instead): {e}", self.body.id)
            }
        }
    }

    /// Graceful upgrade: the new process keeps the registration; only stop maintaining it.
    pub(crate) fn hand_over(&self) {
        self.stop();
        log::info!("upgrade: leaving Consul registration {} to the new process", self.body.id);
    }
}

/// Background service keeping the registration alive.
pub(crate) struct RegistrationService {
    registrar: Arc<Registrar>,
    metrics: ConsulMetrics,
}

impl RegistrationService {
    /// Maintain `registrar`, counting failed requests into `metrics`.
    pub(crate) fn new(registrar: Arc<Registrar>, metrics: ConsulMetrics) -> Self {
        RegistrationService { registrar, metrics }
    }
}

#[async_trait]
impl BackgroundService for RegistrationService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = self.registrar.maintain(&self.metrics) => {}
            _ = async { while !*shutdown.borrow_and_update() { if shutdown.changed().await.is_err() { break } } } => {}
        }
    }
}

/// Pingora's Unix signal handling plus Consul deregistration: SIGTERM and SIGINT deregister
/// before the shutdown starts; SIGQUIT (upgrade) leaves the registration to the new process.
#[derive(Debug)]
pub(crate) struct ShutdownSignals {
    registrar: Option<Arc<Registrar>>,
}

impl ShutdownSignals {
    /// Signals for a process with (or without) a registration.
    pub(crate) fn new(registrar: Option<Arc<Registrar>>) -> Self {
        ShutdownSignals { registrar }
    }
}

#[async_trait]
impl ShutdownSignalWatch for ShutdownSignals {
    async fn recv(&self) -> ShutdownSignal {
        let signal = UnixShutdownSignalWatch.recv().await;
        if let Some(registrar) = &self.registrar {
            match signal {
                ShutdownSignal::GracefulTerminate | ShutdownSignal::FastShutdown => registrar.deregister().await,
                ShutdownSignal::GracefulUpgrade => registrar.hand_over(),
            }
        }
        signal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> ConsulRegistration {
        ConsulRegistration {
            name: "siger".into(),
            address: "10.0.0.5".into(),
            port: 8080,
            tags: vec!["edge".into()],
            check_http: None,
            check_interval: Duration::from_secs(10),
            check_timeout: Duration::from_secs(2),
            deregister_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn body_follows_the_contract() {
        let body = register_body(&reg(), "http://10.0.0.5:9901/health".into());
        let json = serde_json::to_value(&body).expect("json");
        assert_eq!(json["ID"], "siger-10.0.0.5-8080");
        assert_eq!(json["Name"], "siger");
        assert_eq!(json["Port"], 8080);
        assert_eq!(json["Tags"][0], "edge");
        assert_eq!(json["Check"]["HTTP"], "http://10.0.0.5:9901/health");
        assert_eq!(json["Check"]["Interval"], "10s");
        assert_eq!(json["Check"]["Timeout"], "2s");
        assert_eq!(json["Check"]["DeregisterCriticalServiceAfter"], "60s");
        assert!(json["Meta"][META_DIGEST].as_str().is_some_and(|d| d.len() == 16));
        let mut changed = reg();
        changed.check_interval = Duration::from_secs(5);
        assert_ne!(
            register_body(&changed, "http://10.0.0.5:9901/health".into()).meta[META_DIGEST],
            body.meta[META_DIGEST],
            "a changed check changes the digest"
        );
    }

    #[test]
    fn the_check_defaults_to_the_admin_health_endpoint() {
        let admin = |a: &str| Some(a.parse::<SocketAddr>().expect("addr"));
        assert_eq!(check_url(&reg(), admin("10.0.0.5:9901")), "http://10.0.0.5:9901/health");
        assert_eq!(check_url(&reg(), admin("0.0.0.0:9901")), "http://10.0.0.5:9901/health", "wildcard → advertised");
        assert_eq!(check_url(&reg(), admin("[fd00::1]:9901")), "http://[fd00::1]:9901/health");
        let mut explicit = reg();
        explicit.check_http = Some("http://lb.internal/health".into());
        assert_eq!(check_url(&explicit, admin("10.0.0.5:9901")), "http://lb.internal/health");
    }

    #[test]
    fn wildcard_listeners_are_probed_on_loopback() {
        assert_eq!(reachable("0.0.0.0:80".parse().expect("a")), "127.0.0.1:80".parse().expect("a"));
        assert_eq!(reachable("[::]:80".parse().expect("a")), "[::1]:80".parse().expect("a"));
        assert_eq!(reachable("10.1.1.1:80".parse().expect("a")), "10.1.1.1:80".parse().expect("a"));
    }
}
