//! Upstream pools: one Pingora `LoadBalancer` per service (membership, health, selection), plus
//! what Pingora lacks: least-connections selection and retry-aware picking.
//!
//! The proxy asks a [`Pool`] for a backend with [`Pool::select`], passing the backends already
//! tried for this request so a retry lands elsewhere, and builds the `HttpPeer` with
//! [`Pool::peer`].
//!
//! Pools of discovered services ([`Pool::with_feed`]) are driven by their [`MembershipFeed`]
//! instead of Pingora's polling loop: a published change triggers `LoadBalancer::update` at
//! once, health checks run on their own schedule alongside, and new backends pass through
//! [`admission`] (first probe, slow start) before they take their full share. Backends that
//! leave are dropped from selection immediately; requests already sent to them finish.

mod admission;
mod balance;
mod feed;
mod health;

pub use balance::InflightGuard;
pub use feed::{Members, MembershipFeed};

use crate::config::{Config, HealthCheckSettings, LbAlgorithm, ServiceSettings};
use admission::Admission;
use async_trait::async_trait;
use balance::LeastConn;
use pingora::lb::discovery::{ServiceDiscovery, Static};
use pingora::lb::health_check::HealthCheck;
use pingora::lb::selection::{consistent::KetamaHashing, BackendIter, BackendSelection, Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::HttpPeer;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Candidates examined before a selection gives up (Pingora's own examples use 256).
const MAX_SELECT_ITERATIONS: usize = 256;

/// least_conn weights are multiplied by this so a slow-start factor keeps its precision.
const WEIGHT_SCALE: u64 = 1000;

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
    dynamic: Option<Dynamic>,
}

/// What a discovered (not static) pool adds.
struct Dynamic {
    feed: MembershipFeed,
    admission: Arc<Admission>,
    /// Our own first probe of new backends (the configured health check).
    probe: Option<Box<dyn HealthCheck + Send + Sync>>,
}

/// Pingora `ServiceDiscovery` over a feed: reads what was published (no I/O, never blocks) and
/// tells the admission table about the membership before Pingora publishes it, so no backend
/// is ever selectable without an admission entry.
struct FeedDiscovery {
    feed: MembershipFeed,
    admission: Arc<Admission>,
}

#[async_trait]
impl ServiceDiscovery for FeedDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let members = self.feed.current();
        let addrs: Option<Vec<SocketAddr>> = members.as_ref().map(|m| m.iter().map(|t| t.addr).collect());
        self.admission.observe(addrs.as_deref(), Instant::now());
        let backends = members
            .iter()
            .flat_map(|m| m.iter())
            .map(|t| Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(t.addr),
                weight: t.weight.max(1) as usize,
                ext: Default::default(),
            })
            .collect();
        Ok((backends, HashMap::new()))
    }
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
        Pool { settings: settings.clone(), balancer, dynamic: None }
    }

    /// Build a pool whose membership is pushed through `feed` (e.g. by Consul discovery).
    /// Until something is published the pool is empty and reported not ready.
    pub fn with_feed(settings: &ServiceSettings, feed: MembershipFeed) -> Self {
        let admission = Arc::new(Admission::new(settings.slow_start, settings.health_check.is_some()));
        let discovery = Box::new(FeedDiscovery { feed: feed.clone(), admission: admission.clone() });
        let mut pool = Self::with_discovery(settings, discovery);
        let probe = settings.health_check.as_ref().map(health::build);
        pool.dynamic = Some(Dynamic { feed, admission, probe });
        pool.refresh_now();
        pool
    }

    /// The feed of a discovered pool.
    pub fn feed(&self) -> Option<&MembershipFeed> {
        self.dynamic.as_ref().map(|d| &d.feed)
    }

    /// Apply what the feed holds right now, without waiting for the pool's background loop
    /// (used at start-up after a state file was loaded). A no-op for static pools.
    pub fn refresh_now(&self) {
        if self.dynamic.is_none() {
            return;
        }
        // FeedDiscovery does no I/O, so the update completes in this poll.
        let _ = match &self.balancer {
            Balancer::RoundRobin(lb) | Balancer::LeastConn(lb, _) => futures::FutureExt::now_or_never(lb.update()),
            Balancer::Random(lb) => futures::FutureExt::now_or_never(lb.update()),
            Balancer::Consistent(lb) => futures::FutureExt::now_or_never(lb.update()),
        };
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
        let Some(dynamic) = &self.dynamic else {
            let accept = |b: &Backend, healthy: bool| healthy && !tried.iter().any(|t| inet(b) == Some(*t));
            return self.select_with(key, accept);
        };
        let view = dynamic.admission.view(Instant::now());
        let usable = |b: &Backend, healthy: bool| -> Option<f64> {
            let addr = inet(b)?;
            if !healthy || tried.contains(&addr) {
                return None;
            }
            view.factor(&addr)
        };
        if let Balancer::LeastConn(lb, least) = &self.balancer {
            return select_least_conn(lb, least, usable);
        }
        let picked = self.select_with(key, |b, healthy| usable(b, healthy).is_some())?;
        let factor = view.factor(&picked.addr).unwrap_or(1.0);
        if factor >= 1.0 || rand::random::<f64>() < factor {
            return Some(picked);
        }
        // Held back this time. The stand-in is drawn here (by weight among the other usable
        // backends) rather than by asking the balancer again: a second round-robin step would
        // shift the rotation and bring the ramping backend's next turn early, giving it more
        // than `factor` of its share.
        Some(self.stand_in(picked.addr, &usable).unwrap_or(picked))
    }

    /// A weighted-random usable backend other than `skip` (ramping ones by weight × factor).
    fn stand_in(&self, skip: SocketAddr, usable: &impl Fn(&Backend, bool) -> Option<f64>) -> Option<Selected> {
        let backends = self.backends();
        let members = backends.get_backend();
        let weight = |b: &Backend| match inet(b) {
            Some(addr) if addr != skip => usable(b, backends.ready(b)).map_or(0.0, |f| b.weight as f64 * f),
            _ => 0.0,
        };
        let total: f64 = members.iter().map(weight).sum();
        let mut point = rand::random::<f64>() * total;
        for b in members.iter() {
            let w = weight(b);
            if w > 0.0 && point < w {
                return inet(b).map(|addr| Selected { addr, guard: None });
            }
            point -= w;
        }
        None
    }

    fn select_with(&self, key: &[u8], accept: impl Fn(&Backend, bool) -> bool) -> Option<Selected> {
        let pick = |b: Option<Backend>| b.and_then(|b| inet(&b)).map(|addr| Selected { addr, guard: None });
        match &self.balancer {
            Balancer::RoundRobin(lb) => pick(lb.select_with(key, MAX_SELECT_ITERATIONS, accept)),
            Balancer::Random(lb) => pick(lb.select_with(key, MAX_SELECT_ITERATIONS, accept)),
            Balancer::Consistent(lb) => pick(lb.select_with(key, MAX_SELECT_ITERATIONS, accept)),
            Balancer::LeastConn(lb, least) => {
                let backends = lb.backends();
                let members = backends.get_backend();
                least.select(
                    members
                        .iter()
                        .filter(|b| accept(b, backends.ready(b)))
                        .filter_map(|b| inet(b).map(|a| (a, b.weight as u64 * WEIGHT_SCALE))),
                )
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
        peer.options.write_timeout = s.write_timeout;
        peer.options.idle_timeout = s.idle_timeout;
        peer
    }

    /// (healthy, unhealthy) backend counts. A discovered backend still waiting for its first
    /// probe counts as unhealthy: it takes no traffic.
    pub fn health_counts(&self) -> (usize, usize) {
        let backends = self.backends();
        let members = backends.get_backend();
        let admitted =
            |b: &Backend| self.dynamic.as_ref().is_none_or(|d| inet(b).is_some_and(|a| d.admission.is_admitted(&a)));
        let healthy = members.iter().filter(|b| backends.ready(b) && admitted(b)).count();
        (healthy, members.len() - healthy)
    }

    /// Why this pool makes the gateway not ready, if it does.
    pub fn readiness_problem(&self) -> Option<String> {
        let name = &self.settings.name;
        if self.dynamic.as_ref().is_some_and(|d| d.feed.current().is_none()) {
            return Some(format!("service {name}: no answer from discovery yet and no saved state"));
        }
        (self.health_counts().0 == 0).then(|| format!("service {name}: no healthy backend"))
    }

    /// Time since discovery last confirmed this pool's membership (discovered pools only).
    pub fn discovery_sync_age(&self) -> Option<Duration> {
        self.dynamic.as_ref().map(|d| d.feed.sync_age())
    }

    async fn run(&self, shutdown: ShutdownWatch) {
        let hc = self.settings.health_check.as_ref();
        let name = self.settings.name.as_str();
        match (&self.balancer, &self.dynamic) {
            (Balancer::RoundRobin(lb), Some(d)) => drive(name, lb, d, None, hc, shutdown).await,
            (Balancer::LeastConn(lb, least), Some(d)) => drive(name, lb, d, Some(least), hc, shutdown).await,
            (Balancer::Random(lb), Some(d)) => drive(name, lb, d, None, hc, shutdown).await,
            (Balancer::Consistent(lb), Some(d)) => drive(name, lb, d, None, hc, shutdown).await,
            (Balancer::RoundRobin(lb) | Balancer::LeastConn(lb, _), None) => lb.run(shutdown, None).await,
            (Balancer::Random(lb), None) => lb.run(shutdown, None).await,
            (Balancer::Consistent(lb), None) => lb.run(shutdown, None).await,
        }
    }
}

/// least_conn over a discovered pool: ramping backends are offered with probability = factor
/// (so they get their share when idle) and divide their load by a scaled-down weight (so they
/// hold proportionally fewer requests under load).
fn select_least_conn(
    lb: &LoadBalancer<RoundRobin>,
    least: &LeastConn,
    usable: impl Fn(&Backend, bool) -> Option<f64>,
) -> Option<Selected> {
    let backends = lb.backends();
    let members = backends.get_backend();
    let candidates: Vec<(SocketAddr, u64, f64)> = members
        .iter()
        .filter_map(|b| {
            let f = usable(b, backends.ready(b))?;
            let weight = ((b.weight as u64 * WEIGHT_SCALE) as f64 * f).round() as u64;
            Some((inet(b)?, weight, f))
        })
        .collect();
    let offered = candidates.iter().filter(|(_, _, f)| *f >= 1.0 || rand::random::<f64>() < *f);
    let chosen: Vec<(SocketAddr, u64)> = offered.map(|(a, w, _)| (*a, *w)).collect();
    if chosen.is_empty() {
        least.select(candidates.iter().map(|(a, w, _)| (*a, *w)))
    } else {
        least.select(chosen.into_iter())
    }
}

/// The background loop of a discovered pool: apply every published change at once, run the
/// configured health checks on their own schedule, and probe new backends before admitting
/// them. Runs until shutdown.
async fn drive<S>(
    name: &str,
    lb: &LoadBalancer<S>,
    dynamic: &Dynamic,
    least: Option<&LeastConn>,
    hc: Option<&HealthCheckSettings>,
    mut shutdown: ShutdownWatch,
) where
    S: BackendSelection + Send + Sync + 'static,
    S::Iter: BackendIter,
{
    let mut changes = dynamic.feed.subscribe();
    let applied = Notify::new();
    let updates = async {
        loop {
            changes.borrow_and_update();
            // FeedDiscovery cannot fail; an error would keep the previous membership anyway.
            let _ = lb.update().await;
            if let Some(least) = least {
                let members = lb.backends().get_backend();
                least.retain(|addr| members.iter().any(|b| inet(b) == Some(*addr)));
            }
            applied.notify_one();
            if changes.changed().await.is_err() {
                return;
            }
        }
    };
    let checks = async {
        let Some(hc) = hc else { return std::future::pending::<()>().await };
        loop {
            lb.backends().run_health_check(true).await;
            tokio::time::sleep(hc.interval).await;
        }
    };
    let probes = async {
        let (Some(check), Some(hc)) = (&dynamic.probe, hc) else { return std::future::pending::<()>().await };
        // Consecutive successful probes per pending backend: `healthy` of them admit it, as
        // they would turn an unhealthy backend healthy.
        let mut streaks: HashMap<SocketAddr, usize> = HashMap::new();
        loop {
            let pending = dynamic.admission.pending();
            streaks.retain(|addr, _| pending.contains(addr));
            let results = futures::future::join_all(pending.iter().map(|addr| async move {
                let backend = Backend {
                    addr: pingora::protocols::l4::socket::SocketAddr::Inet(*addr),
                    weight: 1,
                    ext: Default::default(),
                };
                let ok = matches!(tokio::time::timeout(hc.timeout * 2, check.check(&backend)).await, Ok(Ok(())));
                (*addr, ok)
            }))
            .await;
            let mut still_pending = false;
            for (addr, ok) in results {
                let streak = streaks.entry(addr).or_default();
                *streak = if ok { *streak + 1 } else { 0 };
                if *streak >= hc.healthy.max(1) {
                    streaks.remove(&addr);
                    dynamic.admission.admit(addr, Instant::now());
                    log::info!("service {name}: new backend {addr} passed its health check; taking traffic");
                } else {
                    still_pending = true;
                }
            }
            // A booting instance usually answers within seconds: retry pending ones every
            // second (at most every `interval`), and wake at once for new members.
            let retry = if still_pending { hc.interval.min(Duration::from_secs(1)) } else { Duration::MAX };
            tokio::select! {
                _ = applied.notified() => {}
                _ = tokio::time::sleep(retry.min(Duration::from_secs(3600))) => {}
            }
        }
    };
    let work = async {
        tokio::join!(updates, checks, probes);
    };
    tokio::select! {
        _ = work => {}
        _ = async { while !*shutdown.borrow_and_update() { if shutdown.changed().await.is_err() { break } } } => {}
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
    /// One pool per configured service; services with `discovery` get an empty feed that the
    /// discovery service fills.
    pub fn new(config: &Config) -> Self {
        let build = |s: &ServiceSettings| match &s.discovery {
            Some(_) => Pool::with_feed(s, MembershipFeed::new()),
            None => Pool::new(s),
        };
        Pools { pools: config.services.iter().map(|s| Arc::new(build(s))).collect() }
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
        let runs = self.pools.iter().map(|p| supervise(p.clone(), shutdown.clone()));
        futures::future::join_all(runs).await;
    }
}

/// Run a pool's discovery and health checks in a task of its own, restarted a second after a
/// panic: one pool's bug must not freeze the health of every service.
async fn supervise(pool: Arc<Pool>, mut shutdown: ShutdownWatch) {
    loop {
        let (task_pool, task_shutdown) = (pool.clone(), shutdown.clone());
        match tokio::spawn(async move { task_pool.run(task_shutdown).await }).await {
            Err(e) if e.is_panic() => {
                log::error!("service {}: its health-check task panicked; restarting it in 1s", pool.settings.name);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConsulDiscovery, Target};

    fn settings(lb: LbAlgorithm, slow_start: Option<Duration>) -> ServiceSettings {
        ServiceSettings {
            name: "web".into(),
            targets: Vec::new(),
            discovery: Some(ConsulDiscovery { service: "web".into(), tags: Vec::new() }),
            lb,
            health_check: None,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: None,
            idle_timeout: None,
            retries: 1,
            slow_start,
        }
    }

    fn t(port: u16) -> Target {
        Target { addr: SocketAddr::from(([127, 0, 0, 1], port)), weight: 1 }
    }

    /// Share of picks landing on port 3 after it joined 1 and 2 (ramp factor ≈ 0.1 for the
    /// whole run: the window is far longer than the test).
    fn ramping_share(lb: LbAlgorithm, slow_start: Option<Duration>) -> f64 {
        let feed = MembershipFeed::new();
        let pool = Pool::with_feed(&settings(lb, slow_start), feed.clone());
        assert!(pool.select(b"", &[]).is_none(), "empty before anything is published");
        feed.publish(vec![t(1), t(2)]);
        pool.refresh_now();
        feed.publish(vec![t(1), t(2), t(3)]);
        pool.refresh_now();
        let n = 30_000;
        let on_new = (0..n).filter(|_| pool.select(b"", &[]).expect("pick").addr.port() == 3).count();
        on_new as f64 / n as f64
    }

    #[test]
    fn slow_start_scales_the_share_of_a_new_backend() {
        let ramp = Some(Duration::from_secs(3600));
        for lb in [LbAlgorithm::RoundRobin, LbAlgorithm::Random, LbAlgorithm::LeastConn] {
            let full = ramping_share(lb.clone(), None);
            assert!((full - 1.0 / 3.0).abs() < 0.02, "{lb:?} without slow start: {full}");
            let ratio = ramping_share(lb.clone(), ramp) / full;
            assert!((0.07..=0.13).contains(&ratio), "{lb:?}: share ratio {ratio} while at 10 %");
        }
    }

    #[test]
    fn a_lone_ramping_backend_still_serves_and_retries_avoid_tried_ones() {
        let feed = MembershipFeed::new();
        let pool = Pool::with_feed(&settings(LbAlgorithm::RoundRobin, Some(Duration::from_secs(3600))), feed.clone());
        feed.publish(vec![]);
        pool.refresh_now();
        feed.publish(vec![t(1)]);
        pool.refresh_now();
        for _ in 0..50 {
            assert_eq!(pool.select(b"", &[]).expect("the only backend").addr.port(), 1);
        }
        feed.publish(vec![t(1), t(2)]);
        pool.refresh_now();
        let tried = [t(1).addr];
        for _ in 0..50 {
            assert_eq!(pool.select(b"", &tried).expect("other").addr.port(), 2);
        }
    }

    #[test]
    fn readiness_of_a_discovered_pool() {
        let feed = MembershipFeed::new();
        let pool = Pool::with_feed(&settings(LbAlgorithm::RoundRobin, None), feed.clone());
        assert!(pool.readiness_problem().is_some_and(|p| p.contains("no answer from discovery")));
        feed.publish(vec![]);
        pool.refresh_now();
        assert!(pool.readiness_problem().is_some_and(|p| p.contains("no healthy backend")));
        feed.publish(vec![t(1)]);
        pool.refresh_now();
        assert_eq!(pool.readiness_problem(), None);
        assert_eq!(pool.health_counts(), (1, 0));
    }
}
