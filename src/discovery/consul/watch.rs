//! One blocking-query loop per Consul-backed service.
//!
//! Each answer is turned into targets and published to the pool's feed; the pool applies a
//! change at once (no polling interval to wait out). While nothing changes the loop costs one
//! request per `wait`. On any failure — Consul unreachable, an error status, an undecodable
//! answer, an ACL-filtered empty answer — nothing is published: the pool keeps the last known
//! good instances for as long as it takes, the error is counted (`siger_consul_errors_total`)
//! and the loop retries with jittered exponential back-off. The first query after a failure
//! is non-blocking so a recovered Consul is read at once.

use super::pace::{next_index, Pace};
use super::persist::Store;
use super::{candidates, Candidate, ConsulClient, ConsulError};
use crate::backoff::Backoff;
use crate::config::{ConsulDiscovery, Target};
use crate::discovery::WatchSpec;
use crate::observability::ConsulMetrics;
use crate::upstream::MembershipFeed;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Queries sent back to back before pacing starts (absorbs the few changes of a small
/// rolling deploy without delay).
const BURST: u32 = 5;
/// Sustained query rate when the index churns: one per second keeps a change within the 1 s
/// target while bounding the load a flapping service can cause (see docs/consul.md).
const SUSTAINED_EVERY: Duration = Duration::from_secs(1);
/// First retry delay after an error (jittered, doubling).
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest retry delay: how long a recovered Consul may go unnoticed at worst.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Instances named in a membership log line (the count is always given).
const LOG_INSTANCES: usize = 20;
/// While Consul keeps failing, a reminder is logged this often (each failure is counted).
const REMIND_EVERY: Duration = Duration::from_secs(60);

/// The watch of one service.
pub(crate) struct Watch {
    /// Siger service name (for logs).
    name: String,
    query: ConsulDiscovery,
    feed: MembershipFeed,
    store: Option<Store>,
}

/// What identifies a running watch: a reload that keeps all three keeps the watch running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WatchKey {
    query: ConsulDiscovery,
    feed: usize,
}

impl WatchKey {
    /// The key of a wanted watch.
    pub(crate) fn of(spec: &WatchSpec) -> Self {
        WatchKey { query: spec.query.clone(), feed: spec.feed.id() }
    }
}

impl Watch {
    /// The watch of one discovered service, saving its answers to `store`.
    pub(crate) fn new(spec: &WatchSpec, store: Option<Store>) -> Self {
        Watch { name: spec.name.clone(), query: spec.query.clone(), feed: spec.feed.clone(), store }
    }
}

/// Failures in a row, for logging.
struct Streak {
    since: Instant,
    count: u64,
    reminded: Instant,
}

impl Watch {
    /// Follow the service until the future is dropped (at shutdown).
    pub(crate) async fn run(&self, client: &ConsulClient, wait: Duration, metrics: &ConsulMetrics) {
        let mut index = 0u64;
        let mut pace = Pace::new(BURST, SUSTAINED_EVERY, Instant::now());
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_MAX);
        let mut streak: Option<Streak> = None;
        let mut resolved: HashMap<(String, u16), Vec<SocketAddr>> = HashMap::new();
        let mut last_skipped: Vec<String> = Vec::new();
        loop {
            let delay = pace.take(Instant::now());
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let answer =
                client.health_service(&self.query.service, &self.query.tags, index, wait).await.and_then(|a| {
                    if a.filtered_by_acls && a.entries.is_empty() {
                        Err(ConsulError::FilteredByAcls { service: self.query.service.clone() })
                    } else {
                        Ok(a)
                    }
                });
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    metrics.errors.inc();
                    // Read the current state at once when Consul is back, and never block on
                    // an index from before the outage (Consul may have restarted lower).
                    index = 0;
                    self.log_failure(&mut streak, &e);
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            };
            backoff.reset();
            if let Some(s) = streak.take() {
                log::info!(
                    "service {}: Consul answers again after {} failed request(s) over {:.0?}",
                    self.name,
                    s.count,
                    s.since.elapsed()
                );
            }
            index = next_index(index, answer.index);
            if answer.filtered_by_acls {
                log::warn!(
                    "service {}: Consul hid some instances of `{}` (ACL filtering); check consul.token",
                    self.name,
                    self.query.service
                );
            }
            let (found, skipped) = candidates(&answer.entries);
            if skipped != last_skipped {
                for reason in &skipped {
                    log::warn!("service {}: Consul instance ignored: {reason}", self.name);
                }
                last_skipped = skipped;
            }
            let targets = resolve(&self.name, &found, &mut resolved).await;
            self.feed.mark_synced();
            if self.feed.publish(targets.clone()) {
                log::info!("service {}: Consul instances now [{}]", self.name, describe(&targets));
                self.save(targets).await;
            }
        }
    }

    fn log_failure(&self, streak: &mut Option<Streak>, e: &ConsulError) {
        let now = Instant::now();
        match streak {
            None => {
                log::warn!("service {}: Consul query failed, keeping the last known instances: {e}", self.name);
                *streak = Some(Streak { since: now, count: 1, reminded: now });
            }
            Some(s) => {
                s.count += 1;
                if now.duration_since(s.reminded) >= REMIND_EVERY {
                    s.reminded = now;
                    log::warn!(
                        "service {}: Consul failing for {:.0?} ({} requests), still routing to the last known instances; last error: {e}",
                        self.name,
                        s.since.elapsed(),
                        s.count
                    );
                } else {
                    log::debug!("service {}: Consul query failed: {e}", self.name);
                }
            }
        }
    }

    async fn save(&self, targets: Vec<Target>) {
        let Some(store) = self.store.clone() else { return };
        let name = self.name.clone();
        let written = tokio::task::spawn_blocking(move || store.save(&targets)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("service {name}: could not save the instances: {e}"),
            Err(e) => log::warn!("service {name}: could not save the instances: {e}"),
        }
    }
}

/// `addr×weight, …` for a log line, at most [`LOG_INSTANCES`] of them.
fn describe(targets: &[Target]) -> String {
    let mut list: Vec<String> =
        targets.iter().take(LOG_INSTANCES).map(|t| format!("{}×{}", t.addr, t.weight)).collect();
    if targets.len() > LOG_INSTANCES {
        list.push(format!("… {} more", targets.len() - LOG_INSTANCES));
    }
    list.join(", ")
}

/// Addresses for the candidates. IP literals are used as they are; host names are resolved,
/// and when a lookup fails the previous answer for that name is kept (a DNS hiccup must not
/// drop an instance Consul still lists). Names no longer listed are forgotten.
async fn resolve(name: &str, found: &[Candidate], cache: &mut HashMap<(String, u16), Vec<SocketAddr>>) -> Vec<Target> {
    let mut targets = Vec::with_capacity(found.len());
    let mut seen = Vec::new();
    for c in found {
        if let Some(t) = c.literal() {
            targets.push(t);
            continue;
        }
        let key = (c.host.clone(), c.port);
        match tokio::net::lookup_host((c.host.as_str(), c.port)).await {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                cache.insert(key.clone(), addrs);
            }
            Err(e) => log::warn!("service {name}: cannot resolve {}:{}: {e}", c.host, c.port),
        }
        for addr in cache.get(&key).into_iter().flatten() {
            targets.push(Target { addr: *addr, weight: c.weight });
        }
        seen.push(key);
    }
    cache.retain(|k, _| seen.contains(k));
    targets
}
