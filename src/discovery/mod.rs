//! Service discovery beyond static `targets`: Consul ([`consul`]) and DNS ([`dns`]: host names
//! in `targets`, `dns_srv`) publish each service's members into its pool's
//! [`MembershipFeed`](crate::upstream::MembershipFeed); the pool (in
//! [`upstream`](crate::upstream)) does the rest.
//!
//! [`DiscoveryControl`] is how a configuration generation says which services it wants
//! watched: the Consul background service follows that wish, starting a watch for each new
//! discovered service (seeded from its state file first) and stopping the watches of services
//! that left, while the watches of unchanged services keep running across reloads.

pub(crate) mod consul;
pub(crate) mod dns;

use crate::config::{ConsulDiscovery, ConsulSettings, ServiceSettings};
use crate::upstream::{MembershipFeed, Pool};
use consul::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// One discovered service to follow.
#[derive(Debug, Clone)]
pub(crate) struct WatchSpec {
    /// Siger service name (logs, state file).
    pub(crate) name: String,
    /// What to ask Consul.
    pub(crate) query: ConsulDiscovery,
    /// Where to publish the answer.
    pub(crate) feed: MembershipFeed,
}

/// The watches the configuration in force wants. Clones share the wish (the runtime states
/// it, the Consul service follows it).
#[derive(Debug, Clone)]
pub(crate) struct DiscoveryControl {
    settings: Option<ConsulSettings>,
    wanted: Arc<watch::Sender<Arc<Vec<WatchSpec>>>>,
}

impl DiscoveryControl {
    /// Control for the process's `consul` section (changing it needs a new process).
    pub(crate) fn new(settings: Option<ConsulSettings>) -> Self {
        DiscoveryControl { settings, wanted: Arc::new(watch::channel(Arc::new(Vec::new())).0) }
    }

    /// The `consul` section the process runs with.
    pub(crate) fn settings(&self) -> Option<&ConsulSettings> {
        self.settings.as_ref()
    }

    /// Follow these watches (the Consul service reacts).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<Vec<WatchSpec>>> {
        self.wanted.subscribe()
    }

    /// The discovered services of a generation: its services and their pools, in one order.
    fn specs(services: &[ServiceSettings], pools: &[Arc<Pool>]) -> Vec<WatchSpec> {
        services
            .iter()
            .zip(pools)
            .filter_map(|(s, pool)| {
                let query = s.discovery.clone()?;
                Some(WatchSpec { name: s.name.clone(), query, feed: pool.feed()?.clone() })
            })
            .collect()
    }

    /// The state file of a watched service, when `consul.state_dir` is set.
    pub(crate) fn store(&self, spec: &WatchSpec) -> Option<Store> {
        let settings = self.settings.as_ref()?;
        let dir = settings.state_dir.as_deref()?;
        Some(Store::new(dir, &spec.name, &spec.query, settings.datacenter.as_deref()))
    }

    /// Load the saved instances of every discovered service nothing is known about yet, so
    /// routing works before Consul answers (or while it is down).
    pub(crate) fn seed(&self, services: &[ServiceSettings], pools: &[Arc<Pool>]) {
        for spec in Self::specs(services, pools) {
            // DNS-backed pools have feeds too: find this spec's pool by its feed.
            let Some(pool) = pools.iter().find(|p| p.feed().is_some_and(|f| f.id() == spec.feed.id())) else {
                continue;
            };
            if spec.feed.current().is_some() {
                continue;
            }
            match self.store(&spec).as_ref().map(Store::load) {
                Some(Ok(Some(targets))) => {
                    log::info!(
                        "service {}: {} instance(s) loaded from its state file until Consul answers",
                        spec.name,
                        targets.len()
                    );
                    spec.feed.publish(targets);
                    pool.refresh_now();
                }
                Some(Ok(None)) => {}
                Some(Err(e)) => log::warn!("service {}: state file not used: {e}", spec.name),
                None => log::info!(
                    "service {}: consul.state_dir not set; instances are not kept across restarts",
                    spec.name
                ),
            }
        }
    }

    /// Watch exactly the discovered services among `services` (whose pools are `pools`).
    pub(crate) fn want(&self, services: &[ServiceSettings], pools: &[Arc<Pool>]) {
        self.wanted.send_replace(Arc::new(Self::specs(services, pools)));
    }

    /// Before a generation (`services` and their `pools`) is swapped in: seed its new
    /// discovered services, start their watches and wait (at most `prime`) for Consul's first
    /// answer, so a service that moved to Consul does not answer 503 while its first query is
    /// on the way.
    pub(crate) async fn prepare(&self, services: &[ServiceSettings], pools: &[Arc<Pool>], prime: Duration) {
        self.seed(services, pools);
        let fresh: Vec<MembershipFeed> =
            Self::specs(services, pools).into_iter().filter(|s| s.feed.current().is_none()).map(|s| s.feed).collect();
        if fresh.is_empty() || self.settings.is_none() {
            return;
        }
        self.want(services, pools);
        let deadline = Instant::now() + prime;
        while fresh.iter().any(|f| f.current().is_none()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for pool in pools.iter().filter(|p| p.feed().is_some()) {
            pool.refresh_now();
        }
    }
}
