//! One generation's pool of a service: a Pingora `LoadBalancer` over its membership (static
//! targets or a Consul or DNS feed) with the selection the service asked for, plus what Pingora
//! lacks: least-connections selection, retry-aware picking, first-probe admission and slow
//! start of discovered backends.
//!
//! A pool is immutable once built, apart from the membership a feed pushes into it. A config
//! reload that keeps a service's [`PoolKey`] keeps its pool object; one that changes it builds
//! a new pool on the same [`ServiceState`] (health, least-conn counters) and carries the
//! admission table over.

use super::admission::Admission;
use super::balance::{InFlightGuard, LeastConn};
use super::feed::MembershipFeed;
use super::health;
use super::service::ServiceState;
use crate::config::{
    ConsulDiscovery, DnsDiscovery, HealthCheckSettings, LbAlgorithm, ServiceSettings, Target, UpstreamTransport,
};
use crate::tls::UpstreamTlsMaterial;
use async_trait::async_trait;
use pingora::lb::discovery::{ServiceDiscovery, Static};
use pingora::lb::health_check::HealthCheck;
use pingora::lb::selection::{consistent::KetamaHashing, BackendIter, BackendSelection, Random, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::prelude::HttpPeer;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Candidates examined before a selection gives up (Pingora's own examples use 256).
const MAX_SELECT_ITERATIONS: usize = 256;

/// least_conn weights are multiplied by this so a slow-start factor keeps its precision.
const WEIGHT_SCALE: u64 = 1000;

/// Where a pool's members come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Membership {
    /// `targets:` in the config.
    Targets(Vec<Target>),
    /// `discovery.consul`.
    Consul(ConsulDiscovery),
    /// Host names in `targets`, or `dns_srv`.
    Dns(DnsDiscovery),
}

/// The balancer families (a consistent-hash key is read per request, not part of the pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Selection {
    RoundRobin,
    Random,
    LeastConn,
    Consistent,
}

/// What a pool is built from: two generations with equal keys share one pool.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PoolKey {
    pub(crate) membership: Membership,
    pub(crate) selection: Selection,
    pub(crate) slow_start: Option<Duration>,
    /// Discovered backends wait for a first successful probe with these settings.
    pub(crate) probe: Option<HealthCheckSettings>,
}

impl PoolKey {
    /// The key of a service's settings.
    pub(crate) fn of(settings: &ServiceSettings) -> Self {
        PoolKey {
            membership: match settings.member_source() {
                Some(crate::config::MemberSource::Consul(query)) => Membership::Consul(query),
                Some(crate::config::MemberSource::Dns(names)) => Membership::Dns(names),
                None => Membership::Targets(settings.targets.clone()),
            },
            selection: match settings.lb {
                LbAlgorithm::RoundRobin => Selection::RoundRobin,
                LbAlgorithm::Random => Selection::Random,
                LbAlgorithm::LeastConn => Selection::LeastConn,
                LbAlgorithm::ConsistentHash(_) => Selection::Consistent,
            },
            slow_start: settings.slow_start,
            probe: settings.health_check.clone(),
        }
    }
}

/// The selection half of a pool, one variant per algorithm family.
enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Random(LoadBalancer<Random>),
    Consistent(LoadBalancer<KetamaHashing>),
    /// Membership and health from a round-robin balancer; the pick is ours.
    LeastConn(LoadBalancer<RoundRobin>),
}

/// A chosen backend and what must live as long as the request to it.
#[derive(Debug)]
pub(crate) struct Selected {
    /// The backend's address.
    pub(crate) addr: SocketAddr,
    /// In-flight accounting for least_conn; released on drop.
    pub(crate) guard: Option<InFlightGuard>,
}

/// One service's pool of backends in one config generation.
pub(crate) struct Pool {
    pub(crate) key: PoolKey,
    pub(crate) state: Arc<ServiceState>,
    balancer: Balancer,
    dynamic: Option<Dynamic>,
}

/// What a discovered (not static) pool adds.
struct Dynamic {
    feed: MembershipFeed,
    admission: Arc<Admission>,
    /// Our own first probe of new backends (the configured health check).
    probe: Option<Box<dyn HealthCheck + Send + Sync>>,
    probe_settings: Option<HealthCheckSettings>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("service", &self.state.name).field("key", &self.key).finish()
    }
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
        Ok((members.iter().flat_map(|m| m.iter()).map(backend).collect(), HashMap::new()))
    }
}

fn backend(t: &Target) -> Backend {
    Backend {
        addr: pingora::protocols::l4::socket::SocketAddr::Inet(t.addr),
        weight: t.weight.max(1) as usize,
        ext: Default::default(),
    }
}

fn build_lb<S>(state: &ServiceState, discovery: Box<dyn ServiceDiscovery + Send + Sync>) -> LoadBalancer<S>
where
    S: BackendSelection + Send + Sync + 'static,
    S::Iter: BackendIter,
{
    // Health lives in the service's registry (checked by its health loop), not in the pool.
    let lb = LoadBalancer::<S>::from_backends(Backends::new_with_health_registry(discovery, state.health.clone()));
    // Static membership and a feed's current members are known now: load them before the
    // first request can arrive (neither discovery does I/O, so this completes in one poll).
    let _ = futures::FutureExt::now_or_never(lb.update());
    lb
}

impl Pool {
    /// Build a pool for `settings` (with the material the snapshot built for its TLS) on the
    /// service's lasting `state`. A discovered pool follows `feed`; `previous` (the service's
    /// pool before a reload) hands over its admission table.
    pub(crate) fn build(
        settings: &ServiceSettings,
        tls: Option<&Arc<UpstreamTlsMaterial>>,
        state: Arc<ServiceState>,
        feed: Option<MembershipFeed>,
        previous: Option<&Pool>,
    ) -> Self {
        let key = PoolKey::of(settings);
        let needs_probe = settings.health_check.is_some();
        let dynamic = feed.map(|feed| {
            let admission = match previous.map(|p| (p, p.dynamic.as_ref())) {
                Some((_, Some(d))) => Admission::continue_from(&d.admission, settings.slow_start, needs_probe),
                // A service that moves from static targets to discovery: the targets that were
                // taking traffic keep taking it if Consul lists them, without a first probe.
                Some((p, None)) => {
                    let up: Vec<SocketAddr> =
                        p.members().into_iter().filter(|(_, up)| *up).map(|(t, _)| t.addr).collect();
                    Admission::with_admitted(settings.slow_start, needs_probe, &up, Instant::now())
                }
                None => Admission::new(settings.slow_start, needs_probe),
            };
            Dynamic {
                feed,
                admission: Arc::new(admission),
                probe: settings.health_check.as_ref().map(|h| health::build(h, tls.cloned())),
                probe_settings: settings.health_check.clone(),
            }
        });
        let discovery: Box<dyn ServiceDiscovery + Send + Sync> = match &dynamic {
            Some(d) => Box::new(FeedDiscovery { feed: d.feed.clone(), admission: d.admission.clone() }),
            None => Static::new(settings.targets.iter().map(backend).collect()),
        };
        let balancer = match key.selection {
            Selection::RoundRobin => Balancer::RoundRobin(build_lb(&state, discovery)),
            Selection::Random => Balancer::Random(build_lb(&state, discovery)),
            Selection::Consistent => Balancer::Consistent(build_lb(&state, discovery)),
            Selection::LeastConn => Balancer::LeastConn(build_lb(&state, discovery)),
        };
        Pool { key, state, balancer, dynamic }
    }

    /// The service's name.
    pub(crate) fn name(&self) -> &str {
        &self.state.name
    }

    /// The feed of a discovered pool.
    pub(crate) fn feed(&self) -> Option<&MembershipFeed> {
        self.dynamic.as_ref().map(|d| &d.feed)
    }

    /// Apply what the feed holds right now, without waiting for the pool's background loop
    /// (used after a state file was loaded). A no-op for static pools.
    pub(crate) fn refresh_now(&self) {
        if self.dynamic.is_none() {
            return;
        }
        let _ = match &self.balancer {
            Balancer::RoundRobin(lb) | Balancer::LeastConn(lb) => futures::FutureExt::now_or_never(lb.update()),
            Balancer::Random(lb) => futures::FutureExt::now_or_never(lb.update()),
            Balancer::Consistent(lb) => futures::FutureExt::now_or_never(lb.update()),
        };
    }

    fn backends(&self) -> &Backends {
        match &self.balancer {
            Balancer::RoundRobin(lb) | Balancer::LeastConn(lb) => lb.backends(),
            Balancer::Random(lb) => lb.backends(),
            Balancer::Consistent(lb) => lb.backends(),
        }
    }

    /// Pick a healthy backend not in `tried`. `key` feeds consistent hashing only.
    ///
    /// Backends ejected by outlier detection are passed over; when nothing else is left the
    /// pool falls through to them rather than refuse a request because a flaky pool had every
    /// member ejected (consistent hashing moves only the keys of ejected backends).
    pub(crate) fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<Selected> {
        let outliers = &self.state.outliers;
        if !outliers.any_ejected() {
            return self.select_skipping(key, |addr| tried.contains(addr));
        }
        let now = super::now_ms();
        self.select_skipping(key, |addr| tried.contains(addr) || outliers.is_ejected(addr, now))
            .or_else(|| self.select_skipping(key, |addr| tried.contains(addr)))
    }

    /// Backends in the pool now.
    pub(crate) fn size(&self) -> usize {
        self.backends().get_backend().len()
    }

    fn select_skipping(&self, key: &[u8], skip: impl Fn(&SocketAddr) -> bool) -> Option<Selected> {
        let Some(dynamic) = &self.dynamic else {
            let accept = |b: &Backend, healthy: bool| healthy && inet(b).is_some_and(|a| !skip(&a));
            return self.select_with(key, accept);
        };
        let view = dynamic.admission.view(Instant::now());
        let usable = |b: &Backend, healthy: bool| -> Option<f64> {
            let addr = inet(b)?;
            if !healthy || skip(&addr) {
                return None;
            }
            view.factor(&addr)
        };
        if let Balancer::LeastConn(lb) = &self.balancer {
            return select_least_conn(lb, &self.state.least_conn, usable);
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
            Balancer::LeastConn(lb) => {
                let backends = lb.backends();
                let members = backends.get_backend();
                self.state.least_conn.select(
                    members
                        .iter()
                        .filter(|b| accept(b, backends.ready(b)))
                        .filter_map(|b| inet(b).map(|a| (a, b.weight as u64 * WEIGHT_SCALE))),
                )
            }
        }
    }

    /// The peer for a selected backend, with the service's transport (`tls`: the material the
    /// snapshot built for it) and timeouts. `response_timeout` (the route's `timeout`) bounds
    /// the wait for the response when shorter than `read_timeout`.
    pub(crate) fn peer(
        s: &ServiceSettings,
        tls: Option<&UpstreamTlsMaterial>,
        addr: SocketAddr,
        response_timeout: Option<Duration>,
    ) -> HttpPeer {
        let mut peer = transport_peer(&s.transport, tls, addr);
        peer.options.connection_timeout = Some(s.connect_timeout);
        peer.options.read_timeout = Some(response_timeout.map_or(s.read_timeout, |t| t.min(s.read_timeout)));
        peer.options.write_timeout = s.write_timeout;
        peer.options.idle_timeout = s.idle_timeout;
        peer
    }

    /// Every member with whether it takes traffic now (healthy and, when discovered, admitted).
    pub(crate) fn members(&self) -> Vec<(Target, bool)> {
        let backends = self.backends();
        let admitted =
            |b: &Backend| self.dynamic.as_ref().is_none_or(|d| inet(b).is_some_and(|a| d.admission.is_admitted(&a)));
        backends
            .get_backend()
            .iter()
            .filter_map(|b| {
                let addr = inet(b)?;
                Some((Target { addr, weight: b.weight as u32 }, backends.ready(b) && admitted(b)))
            })
            .collect()
    }

    /// (healthy, unhealthy) backend counts. A discovered backend still waiting for its first
    /// probe counts as unhealthy: it takes no traffic.
    pub(crate) fn health_counts(&self) -> (usize, usize) {
        let members = self.members();
        let healthy = members.iter().filter(|(_, up)| *up).count();
        (healthy, members.len() - healthy)
    }

    /// Why this pool makes the gateway not ready, if it does.
    pub(crate) fn readiness_problem(&self) -> Option<String> {
        let name = self.name();
        if self.dynamic.as_ref().is_some_and(|d| d.feed.current().is_none()) {
            return Some(format!("service {name}: no answer from discovery yet and no saved state"));
        }
        (self.health_counts().0 == 0).then(|| format!("service {name}: no healthy backend"))
    }

    /// Time since discovery last confirmed this pool's membership (discovered pools only).
    pub(crate) fn discovery_sync_age(&self) -> Option<Duration> {
        self.dynamic.as_ref().map(|d| d.feed.sync_age())
    }

    /// A discovered pool's background work until `stop`: apply every published change at
    /// once and probe new backends before admitting them. Static pools have none.
    pub(crate) async fn drive(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(dynamic) = &self.dynamic else { return };
        let work = async {
            match &self.balancer {
                Balancer::RoundRobin(lb) => drive(self.name(), lb, dynamic, None).await,
                Balancer::LeastConn(lb) => drive(self.name(), lb, dynamic, Some(&self.state.least_conn)).await,
                Balancer::Random(lb) => drive(self.name(), lb, dynamic, None).await,
                Balancer::Consistent(lb) => drive(self.name(), lb, dynamic, None).await,
            }
        };
        tokio::select! {
            _ = work => {}
            _ = async { while !*stop.borrow_and_update() { if stop.changed().await.is_err() { break } } } => {}
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

/// Apply every published change of a discovered pool at once, and probe new backends before
/// admitting them (health checks of admitted ones run in the service's health loop).
async fn drive<S>(name: &str, lb: &LoadBalancer<S>, dynamic: &Dynamic, least: Option<&LeastConn>)
where
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
    let probes = async {
        let (Some(check), Some(hc)) = (&dynamic.probe, &dynamic.probe_settings) else {
            return std::future::pending::<()>().await;
        };
        // Consecutive successful probes per pending backend: `healthy` of them admit it, as
        // they would turn an unhealthy backend healthy.
        let mut streaks: HashMap<SocketAddr, usize> = HashMap::new();
        loop {
            let pending = dynamic.admission.pending();
            streaks.retain(|addr, _| pending.contains(addr));
            let results = futures::future::join_all(pending.iter().map(|addr| async move {
                let target = backend(&Target { addr: *addr, weight: 1 });
                let ok = matches!(tokio::time::timeout(hc.timeout * 2, check.check(&target)).await, Ok(Ok(())));
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
    tokio::join!(updates, probes);
}

fn inet(b: &Backend) -> Option<SocketAddr> {
    b.addr.as_inet().copied()
}

/// Streams multiplexed on one HTTP/2 upstream connection before another is opened.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// A peer for `addr` speaking the service's transport: plain or TLS, HTTP/1.1 or HTTP/2.
/// TLS always verifies unless the config explicitly accepted unverified backends, and always
/// has a server name (the configured SNI, else the backend's IP: with rustls an empty one
/// fails every connect, with OpenSSL it would skip verification).
pub(crate) fn transport_peer(
    transport: &UpstreamTransport,
    material: Option<&UpstreamTlsMaterial>,
    addr: SocketAddr,
) -> HttpPeer {
    let mut peer = match &transport.tls {
        None => HttpPeer::new(addr, false, String::new()),
        Some(tls) => {
            let sni = tls.sni.clone().unwrap_or_else(|| addr.ip().to_string());
            let mut peer = HttpPeer::new(addr, true, sni);
            peer.options.verify_cert = tls.verify;
            peer.options.verify_hostname = tls.verify;
            if let Some(material) = material {
                peer.options.ca = material.ca.as_ref().map(|c| c.pingora.clone());
                peer.client_cert_key = material.client.as_ref().map(|c| c.cert_key.clone());
                peer.group_key = material.group_key;
            }
            peer
        }
    };
    if transport.http2 {
        // Over TLS: ALPN h2 only, so a backend that cannot speak HTTP/2 fails the handshake
        // instead of silently getting HTTP/1.1 (which would drop gRPC trailers). In plain
        // text: prior-knowledge h2c.
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
    peer
}
