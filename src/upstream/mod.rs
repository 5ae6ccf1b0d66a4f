//! Upstream pools: one Pingora `LoadBalancer` per service (membership, health, selection), plus
//! what Pingora lacks: least-connections selection and retry-aware picking.
//!
//! The proxy asks a [`Pool`] for a backend with [`Pool::select`], passing the backends already
//! tried for this request so a retry lands elsewhere, and builds the `HttpPeer` with
//! [`Pool::peer`].

mod balance;
mod health;

pub use balance::InflightGuard;

use crate::config::{Config, LbAlgorithm, ServiceSettings};
use async_trait::async_trait;
use balance::LeastConn;
use pingora::lb::discovery::{ServiceDiscovery, Static};
use pingora::lb::selection::{consistent::KetamaHashing, BackendIter, BackendSelection, Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Candidates examined before a selection gives up (Pingora's own examples use 256).
const MAX_SELECT_ITERATIONS: usize = 256;

/// The selection half of a pool, one variant per algorithm family.
enum Balancer {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Random(Arc<LoadBalancer<Random>>),
    Consistent(Arc<LoadBalancer<KetamaHashing>>),
    /// Membership and health from a round-robin balancer; the pick is ours.
    LeastConn(Arc<LoadBalancer<RoundRobin>>, LeastConn),
}

/// A chosen backend and what must live as long as the request to it.
#[derive(Debug)]
pub struct Selected {
    /// The backend's address.
    pub addr: SocketAddr,
    /// In-flight accounting for least_conn; released on drop.
    pub guard: Option<InflightGuard>,
}

/// One service's pool of backends.
pub struct Pool {
    /// Service settings (timeouts, retries, …).
    pub settings: ServiceSettings,
    balancer: Balancer,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("service", &self.settings.name).finish()
    }
}

fn static_discovery(settings: &ServiceSettings) -> Box<dyn ServiceDiscovery + Send + Sync> {
    let backends: BTreeSet<Backend> = settings
        .targets
        .iter()
        .map(|t| Backend {
            addr: pingora::protocols::l4::socket::SocketAddr::Inet(t.addr),
            weight: t.weight as usize,
            ext: Default::default(),
        })
        .collect();
    Static::new(backends)
}

fn build_lb<S>(settings: &ServiceSettings, discovery: Box<dyn ServiceDiscovery + Send + Sync>) -> Arc<LoadBalancer<S>>
where
    S: BackendSelection + Send + Sync + 'static,
    S::Iter: BackendIter,
{
    let mut lb = LoadBalancer::<S>::from_backends(Backends::new(discovery));
    if let Some(hc) = &settings.health_check {
        lb.set_health_check(health::build(hc));
        lb.health_check_frequency = Some(hc.interval);
        lb.parallel_health_check = true;
    }
    // Static membership is known now: load it before the first request can arrive.
    if settings.discovery.is_none() {
        let _ = futures::FutureExt::now_or_never(lb.update());
    }
    Arc::new(lb)
}

impl Pool {
    /// Build the pool of one service (not yet running its health checks).
    pub fn new(settings: &ServiceSettings) -> Self {
        Self::with_discovery(settings, static_discovery(settings))
    }

    /// Build a pool whose membership comes from `discovery`.
    pub fn with_discovery(settings: &ServiceSettings, discovery: Box<dyn ServiceDiscovery + Send + Sync>) -> Self {
        let balancer = match &settings.lb {
            LbAlgorithm::RoundRobin => Balancer::RoundRobin(build_lb(settings, discovery)),
            LbAlgorithm::Random => Balancer::Random(build_lb(settings, discovery)),
            LbAlgorithm::ConsistentHash(_) => Balancer::Consistent(build_lb(settings, discovery)),
            LbAlgorithm::LeastConn => Balancer::LeastConn(build_lb(settings, discovery), LeastConn::default()),
        };
        Pool { settings: settings.clone(), balancer }
    }

    fn backends(&self) -> &Backends {
        match &self.balancer {
            Balancer::RoundRobin(lb) | Balancer::LeastConn(lb, _) => lb.backends(),
            Balancer::Random(lb) => lb.backends(),
            Balancer::Consistent(lb) => lb.backends(),
        }
    }

    /// Pick a healthy backend not in `tried`. `key` feeds consistent hashing only.
    pub fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<Selected> {
        let accept = |b: &Backend, healthy: bool| healthy && !tried.iter().any(|t| inet(b) == Some(*t));
        let pick = |b: Option<Backend>| b.and_then(|b| inet(&b)).map(|addr| Selected { addr, guard: None });
        match &self.balancer {
            Balancer::RoundRobin(lb) => pick(lb.select_with(key, MAX_SELECT_ITERATIONS, accept)),
            Balancer::Random(lb) => pick(lb.select_with(key, MAX_SELECT_ITERATIONS, accept)),
            Balancer::Consistent(lb) => pick(lb.select_with(key, MAX_SELECT_ITERATIONS, accept)),
            Balancer::LeastConn(lb, least) => {
                let backends = lb.backends();
                let members = backends.get_backend();
                least.select(members.iter().filter(|b| accept(b, backends.ready(b))))
            }
        }
    }

    /// The peer for a selected backend, with this service's timeouts. `response_timeout`
    /// (the route's `timeout`) bounds the wait for the response when shorter than `read_timeout`.
    pub fn peer(&self, addr: SocketAddr, response_timeout: Option<Duration>) -> HttpPeer {
        let s = &self.settings;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(s.connect_timeout);
        peer.options.read_timeout = Some(response_timeout.map_or(s.read_timeout, |t| t.min(s.read_timeout)));
        peer.options.write_timeout = Some(s.write_timeout);
        peer.options.idle_timeout = Some(s.idle_timeout);
        peer
    }

    /// (healthy, unhealthy) backend counts.
    pub fn health_counts(&self) -> (usize, usize) {
        let backends = self.backends();
        let members = backends.get_backend();
        let healthy = members.iter().filter(|b| backends.ready(b)).count();
        (healthy, members.len() - healthy)
    }

    async fn run(&self, shutdown: ShutdownWatch) {
        match &self.balancer {
            Balancer::RoundRobin(lb) | Balancer::LeastConn(lb, _) => lb.run(shutdown, None).await,
            Balancer::Random(lb) => lb.run(shutdown, None).await,
            Balancer::Consistent(lb) => lb.run(shutdown, None).await,
        }
    }
}

fn inet(b: &Backend) -> Option<SocketAddr> {
    b.addr.as_inet().copied()
}

/// All pools, indexed by `ServiceId`.
#[derive(Debug, Default)]
pub struct Pools {
    pools: Vec<Arc<Pool>>,
}

impl Pools {
    /// One pool per configured service.
    pub fn new(config: &Config) -> Self {
        Pools { pools: config.services.iter().map(|s| Arc::new(Pool::new(s))).collect() }
    }

    /// Pools built by the caller (e.g. with discovery).
    pub fn from_pools(pools: Vec<Arc<Pool>>) -> Self {
        Pools { pools }
    }

    /// The pool of a service.
    pub fn get(&self, id: usize) -> &Pool {
        &self.pools[id]
    }

    /// Every pool.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.iter()
    }
}

/// Runs every pool's discovery and health checks in one background service, so a config with
/// many services does not cost one runtime thread each.
pub struct PoolsService {
    pools: Vec<Arc<Pool>>,
}

impl PoolsService {
    /// Drive these pools.
    pub fn new(pools: &Pools) -> Self {
        PoolsService { pools: pools.pools.clone() }
    }
}

#[async_trait]
impl BackgroundService for PoolsService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let runs = self.pools.iter().map(|p| p.run(shutdown.clone()));
        futures::future::join_all(runs).await;
    }
}
