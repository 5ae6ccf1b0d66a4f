//! Upstream pools: one Pingora `LoadBalancer` per service and config generation ([`Pool`]),
//! over per-service state that lasts across reloads ([`ServiceState`]: health, least-conn
//! counters, the Consul feed).
//!
//! The proxy asks a [`Pool`] for a backend with [`Pool::select`], passing the backends already
//! tried for this request so a retry lands elsewhere, and builds the `HttpPeer` with
//! [`Pool::peer`].
//!
//! [`Upstreams`] is the process-wide registry: [`Upstreams::plan`] builds the pools of a new
//! config (keeping the pool of every service whose membership and balancing did not change),
//! [`Upstreams::commit`] makes them current once the config is swapped in, and
//! [`PoolsService`] runs what they need in the background: one health-check loop per service
//! and, for discovered pools, the loop that applies membership changes and probes newcomers.

mod admission;
pub(crate) mod attempt;
mod balance;
pub(crate) mod breaker;
mod feed;
pub(crate) mod fetch;
mod health;
pub(crate) mod outlier;
mod pool;
mod retry;
mod service;
pub(crate) mod split;

pub(crate) use balance::{hash_key, InFlightGuard};
pub(crate) use feed::MembershipFeed;
pub(crate) use pool::{Pool, PoolKey, Selected};
pub(crate) use service::ServiceState;

use crate::config::ServiceSettings;
use crate::lifecycle::{spawn_supervised, Running};
use crate::tls::UpstreamTlsMaterial;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Milliseconds on the process's monotonic clock, from 1: the time base of outlier ejections,
/// circuit breakers and retry budgets (0 means "never" in their records).
pub(crate) fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    start.elapsed().as_millis() as u64 + 1
}

/// The pools of the config in force, shared with the background loops.
type Current = Arc<Vec<Arc<Pool>>>;

/// The TLS material a snapshot built for one service (`None`: plain TCP).
pub(crate) type TlsSlot = Option<Arc<UpstreamTlsMaterial>>;

/// Every service's lasting state and the pools in force.
pub(crate) struct Upstreams {
    states: Mutex<HashMap<String, Arc<ServiceState>>>,
    current: watch::Sender<Current>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").field("pools", &self.current.borrow().len()).finish()
    }
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams { states: Mutex::new(HashMap::new()), current: watch::channel(Arc::new(Vec::new())).0 }
    }
}

impl Upstreams {
    /// The pools for `services` (in their order; `tls`: the material the snapshot built for
    /// each service's TLS): a service whose [`PoolKey`] is the same as in `previous` keeps that
    /// pool; any other gets a new one on the service's lasting state. Changes nothing yet (see
    /// [`Upstreams::commit`]).
    pub(crate) fn plan(&self, services: &[ServiceSettings], tls: &[TlsSlot], previous: &[Arc<Pool>]) -> Vec<Arc<Pool>> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        services
            .iter()
            .enumerate()
            .map(|(id, s)| {
                let tls = tls.get(id).and_then(Option::as_ref);
                let before = previous.iter().find(|p| p.name() == s.name);
                if let Some(pool) = before.filter(|p| p.key == PoolKey::of(s)) {
                    return pool.clone();
                }
                let state = states
                    .get(&s.name)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(ServiceState::new(&s.name, s.health_check.as_ref(), tls)));
                let feed = s.member_source().map(|source| state.feed_for(&source));
                Arc::new(Pool::build(s, tls, state, feed, before.map(|p| p.as_ref())))
            })
            .collect()
    }

    /// Make `pools` (built by [`Upstreams::plan`] for `services`) the ones in force: services
    /// no longer configured are forgotten, health checks follow their new settings, and the
    /// background loops are told.
    pub(crate) fn commit(&self, services: &[ServiceSettings], tls: &[TlsSlot], pools: &[Arc<Pool>]) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.clear();
        let before = self.current.borrow().clone();
        for (id, (settings, pool)) in services.iter().zip(pools).enumerate() {
            pool.state.set_health_settings(settings.health_check.as_ref(), tls.get(id).and_then(Option::as_ref));
            // Ejections end with outlier detection, and with the backend's membership.
            match (&settings.outlier_detection, &settings.member_source()) {
                (None, _) => pool.state.outliers.retain(|_| false),
                (Some(_), None) => pool.state.outliers.retain(|a| settings.targets.iter().any(|t| t.addr == *a)),
                (Some(_), Some(_)) => {}
            }
            // A rebuilt pool may have new backends: check them now rather than at the next tick
            // (until then Pingora counts a never-checked backend healthy).
            if !before.iter().any(|p| Arc::ptr_eq(p, pool)) {
                pool.state.health_changed.notify_one();
            }
            let discovered = settings.member_source().zip(pool.feed().cloned());
            pool.state.follow(discovered);
            states.insert(settings.name.clone(), pool.state.clone());
        }
        drop(states);
        self.current.send_replace(Arc::new(pools.to_vec()));
    }

    fn subscribe(&self) -> watch::Receiver<Current> {
        self.current.subscribe()
    }
}

/// Runs, for the pools in force, one health-check loop per service and the membership loop of
/// every discovered pool, starting and stopping them as reloads change the pools. Each loop
/// is a task of its own, restarted a second after a panic: one pool's bug must not freeze the
/// health of every service.
pub(crate) struct PoolsService {
    current: watch::Receiver<Current>,
}

impl PoolsService {
    /// Drive the pools of `upstreams`.
    pub(crate) fn new(upstreams: &Upstreams) -> Self {
        PoolsService { current: upstreams.subscribe() }
    }
}

#[async_trait]
impl BackgroundService for PoolsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut current = self.current.clone();
        // Keyed by the object they serve, so a rebuilt pool gets a new loop.
        let mut health: HashMap<usize, Running> = HashMap::new();
        let mut membership: HashMap<usize, Running> = HashMap::new();
        loop {
            let pools = current.borrow_and_update().clone();
            let mut keep_health = HashMap::new();
            let mut keep_membership = HashMap::new();
            for pool in pools.iter() {
                let state_key = Arc::as_ptr(&pool.state) as usize;
                if let std::collections::hash_map::Entry::Vacant(slot) = keep_health.entry(state_key) {
                    let running = health.remove(&state_key).unwrap_or_else(|| {
                        let state = pool.state.clone();
                        spawn_supervised(pool.name().to_string(), move |stop| service::health_loop(state.clone(), stop))
                    });
                    slot.insert(running);
                }
                if pool.feed().is_some() {
                    let pool_key = Arc::as_ptr(pool) as usize;
                    let running = membership.remove(&pool_key).unwrap_or_else(|| {
                        let pool = pool.clone();
                        spawn_supervised(pool.name().to_string(), move |stop| {
                            let pool = pool.clone();
                            async move { pool.drive(stop).await }
                        })
                    });
                    keep_membership.insert(pool_key, running);
                }
            }
            // Dropping the rest stops them.
            health = keep_health;
            membership = keep_membership;
            tokio::select! {
                changed = current.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests;
