//! What one service keeps for as long as its name stays in the config, across reloads: the
//! health of its backends (a Pingora `HealthRegistry` every generation's pool contributes to),
//! the check that probes them (swapped in place when its settings change), least-conn
//! counters, and the membership feed of a Consul- or DNS-backed service.
//!
//! Pools are rebuilt when a service's membership or balancing changes; because they all
//! register with this one registry, a backend a new pool shares with the old one keeps the
//! health the old one observed, and a backend marked down stays down across a reload.

use super::balance::LeastConn;
use super::breaker::Breaker;
use super::feed::MembershipFeed;
use super::health;
use super::outlier::OutlierTable;
use super::retry::RetryBudget;
use crate::config::{HealthCheckSettings, MemberSource};
use crate::tls::UpstreamTlsMaterial;
use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::{Backend, HealthRegistry};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The per-name state of a service.
pub(crate) struct ServiceState {
    pub(crate) name: String,
    pub(crate) health: Arc<HealthRegistry>,
    check: Arc<ArcSwap<Box<dyn HealthCheck + Send + Sync>>>,
    settings: ArcSwapOption<HealthCheckSettings>,
    pub(crate) least_conn: Arc<LeastConn>,
    discovered: Mutex<Option<(MemberSource, MembershipFeed)>>,
    /// Wakes the health loop when its settings change.
    pub(crate) health_changed: Notify,
    /// Passive outlier detection's per-backend records.
    pub(crate) outliers: OutlierTable,
    /// The circuit breaker.
    pub(crate) breaker: Breaker,
    /// The retry budget.
    pub(crate) retry_budget: RetryBudget,
}

impl std::fmt::Debug for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceState").field("name", &self.name).finish()
    }
}

impl ServiceState {
    /// A fresh state; its health check is `settings` (or none), over the service's `tls`.
    pub(crate) fn new(
        name: &str,
        settings: Option<&HealthCheckSettings>,
        tls: Option<&Arc<UpstreamTlsMaterial>>,
    ) -> Self {
        // Health follows the address alone: a weight change must not reset it.
        let health = Arc::new(HealthRegistry::with_equivalence(|b: &Backend| {
            let mut hasher = DefaultHasher::new();
            b.addr.hash(&mut hasher);
            hasher.finish()
        }));
        let check = Arc::new(ArcSwap::from_pointee(build_check(settings, tls)));
        health.set_health_check(Box::new(SwappableCheck { service: name.to_string(), current: check.clone() }));
        ServiceState {
            name: name.to_string(),
            health,
            check,
            settings: ArcSwapOption::from(settings.cloned().map(Arc::new)),
            least_conn: Arc::new(LeastConn::default()),
            discovered: Mutex::new(None),
            health_changed: Notify::new(),
            outliers: OutlierTable::default(),
            breaker: Breaker::default(),
            retry_budget: RetryBudget::default(),
        }
    }

    /// Apply changed health-check settings (on a reload that keeps this service). The TLS
    /// material is built from files the settings hold, so equal settings mean equal material.
    pub(crate) fn set_health_settings(
        &self,
        settings: Option<&HealthCheckSettings>,
        tls: Option<&Arc<UpstreamTlsMaterial>>,
    ) {
        if self.settings.load().as_deref() == settings {
            return;
        }
        self.check.store(Arc::new(build_check(settings, tls)));
        self.settings.store(settings.cloned().map(Arc::new));
        self.health_changed.notify_one();
    }

    /// The feed for a member source (a Consul query, DNS names): the one this service already
    /// follows when the source is the same (its members are known), else a new, empty one. Nothing is recorded until
    /// [`ServiceState::follow`], so a reload that is refused changes nothing.
    pub(crate) fn feed_for(&self, query: &MemberSource) -> MembershipFeed {
        let current = self.discovered.lock().unwrap_or_else(|p| p.into_inner());
        match current.as_ref() {
            Some((q, feed)) if q == query => feed.clone(),
            _ => MembershipFeed::new(),
        }
    }

    /// Record the query and feed the current config uses (or none).
    pub(crate) fn follow(&self, discovered: Option<(MemberSource, MembershipFeed)>) {
        *self.discovered.lock().unwrap_or_else(|p| p.into_inner()) = discovered;
    }

    /// One health-check pass over every backend of every pool of this service.
    pub(crate) async fn check_once(&self) {
        self.health.run_health_check(true).await;
    }

    /// Time until the next health-check pass, `None` without health checks.
    pub(crate) fn check_interval(&self) -> Option<Duration> {
        self.settings.load().as_ref().map(|s| s.interval)
    }
}

fn build_check(
    settings: Option<&HealthCheckSettings>,
    tls: Option<&Arc<UpstreamTlsMaterial>>,
) -> Box<dyn HealthCheck + Send + Sync> {
    match settings {
        Some(s) => health::build(s, tls.cloned()),
        None => Box::new(Unchecked),
    }
}

/// The registry's check: whatever the service's settings currently say.
struct SwappableCheck {
    service: String,
    current: Arc<ArcSwap<Box<dyn HealthCheck + Send + Sync>>>,
}

#[async_trait]
impl HealthCheck for SwappableCheck {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let check = self.current.load_full();
        check.check(target).await
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.current.load().health_threshold(success)
    }

    fn backend_summary(&self, target: &Backend) -> String {
        format!("service {}: backend {}", self.service, target.addr)
    }
}

/// The check of a service without health checks: every backend passes, and one pass turns
/// any backend an earlier check marked down healthy again (health checks were removed, so
/// nothing may keep it down).
struct Unchecked;

#[async_trait]
impl HealthCheck for Unchecked {
    async fn check(&self, _target: &Backend) -> pingora::Result<()> {
        Ok(())
    }

    fn health_threshold(&self, _success: bool) -> usize {
        1
    }
}

/// Run a service's health checks until `stop` fires: a pass every `interval`, at once when the
/// settings change, and one last pass when checks are removed (see [`Unchecked`]).
pub(crate) async fn health_loop(state: Arc<ServiceState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let wait = match state.check_interval() {
            Some(interval) => {
                state.check_once().await;
                interval
            }
            None => {
                state.check_once().await;
                Duration::from_secs(3600)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.health_changed.notified() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}
