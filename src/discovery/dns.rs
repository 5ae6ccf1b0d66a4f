//! DNS: services whose `targets` name hosts, or that take them from `dns_srv`.
//!
//! One loop per such service asks an asynchronous resolver (hickory) for each name — A and
//! AAAA, or SRV and then A/AAAA of every SRV target — and asks again when the answer's TTL
//! runs out (clamped to 1 s–5 min, [`names`]). After every round it publishes the service's
//! members (fixed IP targets plus every name's last good answer) into the pool's
//! [`MembershipFeed`], the same hand-off Consul discovery uses: the pool keeps the health,
//! outlier and least-conn records of addresses that stay, admits new ones (first probe, slow
//! start) and drops those that left. A failed look-up — NXDOMAIN, no records, a timeout, an
//! unreachable server — keeps that name's last good addresses, is logged and counted
//! (`siger_dns_lookup_failures_total`), and is retried after 1 s, 2 s, … 30 s.
//!
//! [`DnsControl`] is how a configuration generation says which services and which resolver
//! settings it wants; the [`DnsService`] background service follows, keeping the loops of
//! unchanged services across reloads. `/status` reads each name's last answer from
//! [`DnsControl::reports`].

pub(crate) mod names;

use crate::config::{Config, DnsDiscovery, DnsSettings};
use crate::lifecycle::{spawn_supervised, Running};
use crate::upstream::{MembershipFeed, Pool};
use async_trait::async_trait;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use names::{Answer, Query, SrvRecord, Tracked};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::IntCounterVec;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// While a name keeps failing, a reminder is logged this often (each failure is counted).
const REMIND_EVERY: Duration = Duration::from_secs(60);

/// One DNS-backed service to follow.
#[derive(Debug, Clone)]
pub(crate) struct DnsSpec {
    /// Siger service name (logs, status).
    pub(crate) name: String,
    /// What to resolve.
    pub(crate) source: DnsDiscovery,
    /// Where to publish the members.
    pub(crate) feed: MembershipFeed,
}

/// What the configuration in force wants resolved, and how.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wanted {
    pub(crate) settings: DnsSettings,
    pub(crate) specs: Vec<DnsSpec>,
}

/// One name as `/status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct NameReport {
    /// `host:port` of `targets`, or the `dns_srv` name.
    pub(crate) name: String,
    /// `A/AAAA` or `SRV`.
    pub(crate) kind: &'static str,
    /// The addresses in use for it (the last good answer), `addr` or `addr×weight`.
    pub(crate) addresses: Vec<String>,
    /// Seconds the answer is trusted (its TTL, clamped).
    pub(crate) ttl_secs: u64,
    /// When it last answered.
    pub(crate) resolved_at: Option<String>,
    /// Why the last look-up failed, while it does.
    pub(crate) error: Option<String>,
    /// What the last answer left out (SRV targets that do not resolve).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) warning: Option<String>,
}

type Reports = Arc<Mutex<HashMap<String, Vec<NameReport>>>>;

/// What the start-up round learnt, by service, for its background loop to go on from (so a
/// name is not asked twice in a row, nor its answer logged twice).
type Primed = Arc<Mutex<HashMap<String, (DnsDiscovery, Vec<Tracked>)>>>;

/// The DNS-backed services the configuration in force wants followed.
#[derive(Debug)]
pub(crate) struct DnsControl {
    wanted: watch::Sender<Arc<Wanted>>,
    reports: Reports,
    primed: Primed,
}

impl Default for DnsControl {
    fn default() -> Self {
        DnsControl {
            wanted: watch::channel(Arc::new(Wanted::default())).0,
            reports: Reports::default(),
            primed: Primed::default(),
        }
    }
}

impl DnsControl {
    fn wanted_by(config: &Config, pools: &[Arc<Pool>]) -> Wanted {
        let specs = config
            .services
            .iter()
            .zip(pools)
            .filter_map(|(s, pool)| {
                let source = s.dns.clone().filter(|_| s.discovery.is_none())?;
                Some(DnsSpec { name: s.name.clone(), source, feed: pool.feed()?.clone() })
            })
            .collect();
        Wanted { settings: config.dns.clone(), specs }
    }

    /// Follow exactly the DNS-backed services of `config` (whose pools are `pools`), with its
    /// `dns` settings.
    pub(crate) fn want(&self, config: &Config, pools: &[Arc<Pool>]) {
        let wanted = Self::wanted_by(config, pools);
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| wanted.specs.iter().any(|s| &s.name == name));
        self.wanted.send_replace(Arc::new(wanted));
    }

    /// Before `config` (with `pools`) is swapped in: start the loops of its new DNS-backed
    /// services and wait (at most `prime`) for their first answers, so a service that changed
    /// its names does not answer 503 while the first look-up is on the way.
    pub(crate) async fn prepare(&self, config: &Config, pools: &[Arc<Pool>], prime: Duration) {
        let fresh: Vec<MembershipFeed> = Self::wanted_by(config, pools)
            .specs
            .into_iter()
            .filter(|s| s.feed.current().is_none())
            .map(|s| s.feed)
            .collect();
        if fresh.is_empty() {
            return;
        }
        self.want(config, pools);
        let deadline = Instant::now() + prime;
        while fresh.iter().any(|f| f.current().is_none()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for pool in pools.iter().filter(|p| p.feed().is_some()) {
            pool.refresh_now();
        }
    }

    /// Each DNS-backed service's names and what they resolved to, by service name.
    pub(crate) fn reports(&self, service: &str) -> Vec<NameReport> {
        self.reports.lock().unwrap_or_else(|p| p.into_inner()).get(service).cloned().unwrap_or_default()
    }

    /// Resolve every name of `config` (with `pools`) once, before the listeners open (a blocking call, on a
    /// runtime of its own, made before Pingora forks). A name that cannot be resolved is
    /// reported loudly; the gateway still starts — its service answers 503 and `/ready` says
    /// why until the name resolves (retried in the background from the first second on).
    pub(crate) fn prime_at_start(&self, config: &Config, pools: &[Arc<Pool>], failures: &IntCounterVec) {
        let wanted = Self::wanted_by(config, pools);
        // Inside a runtime (not the binary's start-up) the background loop does the first round.
        if wanted.specs.is_empty() || tokio::runtime::Handle::try_current().is_ok() {
            return;
        }
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                log::warn!("dns: names are resolved in the background only ({e})");
                return;
            }
        };
        runtime.block_on(async {
            let resolver = match build_resolver(&wanted.settings) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("dns: no resolver ({e}); services with host names have no backends");
                    return;
                }
            };
            let rounds = wanted.specs.iter().map(|spec| {
                let (resolver, reports, failures) = (&resolver, self.reports.clone(), failures.clone());
                let primed = self.primed.clone();
                async move {
                    let follow = Follow { spec: spec.clone(), failures, reports, primed: Primed::default() };
                    let mut tracked = names::track(&spec.source, Instant::now());
                    follow.round(resolver, &mut tracked, &mut None).await;
                    for t in tracked.iter().filter(|t| t.last.is_none()) {
                        log::error!(
                            "service {}: {} `{}` does not resolve at start ({}); the service has no \
                             backends for it until it does (retried in the background)",
                            spec.name,
                            t.query.kind(),
                            t.query.label(),
                            t.error.as_deref().unwrap_or("no answer")
                        );
                    }
                    primed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(spec.name.clone(), (spec.source.clone(), tracked));
                }
            });
            futures::future::join_all(rounds).await;
        });
        for pool in pools.iter().filter(|p| p.feed().is_some()) {
            pool.refresh_now();
        }
    }

    fn subscribe(&self) -> watch::Receiver<Arc<Wanted>> {
        self.wanted.subscribe()
    }
}

/// The resolver of `settings`: the given name servers, or the system's configuration.
fn build_resolver(settings: &DnsSettings) -> Result<TokioResolver, String> {
    let mut builder = if settings.servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
    } else {
        let servers = settings
            .servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                NameServerConfig::new(s.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), servers),
            hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
        );
        // Only the named servers answer: not /etc/hosts either.
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        builder
    };
    let options = builder.options_mut();
    options.timeout = settings.timeout;
    options.attempts = 1;
    options.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
    // The cache never holds an answer longer than we would trust it.
    options.positive_max_ttl = Some(names::MAX_TTL);
    options.negative_max_ttl = Some(names::MIN_TTL);
    builder.build().map_err(|e| format!("cannot build the resolver: {e}"))
}

/// Runs one loop per DNS-backed service of the configuration in force, on one resolver built
/// from its `dns` settings (rebuilt, and every loop restarted, when they change).
pub(crate) struct DnsService {
    wanted: watch::Receiver<Arc<Wanted>>,
    failures: IntCounterVec,
    reports: Reports,
    primed: Primed,
}

impl DnsService {
    /// The service following `control`, counting failed look-ups in `failures` (by service).
    pub(crate) fn new(control: &DnsControl, failures: IntCounterVec) -> Self {
        DnsService {
            wanted: control.subscribe(),
            failures,
            reports: control.reports.clone(),
            primed: control.primed.clone(),
        }
    }
}

/// What identifies a running loop: a reload that keeps all of it keeps the loop.
#[derive(PartialEq)]
struct LoopKey {
    source: DnsDiscovery,
    feed: usize,
    settings: DnsSettings,
}

#[async_trait]
impl BackgroundService for DnsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut wanted = self.wanted.clone();
        let mut running: HashMap<String, (LoopKey, Running)> = HashMap::new();
        let mut resolver: Option<(DnsSettings, Arc<TokioResolver>)> = None;
        loop {
            let now_wanted = wanted.borrow_and_update().clone();
            if !now_wanted.specs.is_empty() && resolver.as_ref().is_none_or(|(s, _)| *s != now_wanted.settings) {
                resolver = match build_resolver(&now_wanted.settings) {
                    Ok(r) => Some((now_wanted.settings.clone(), Arc::new(r))),
                    Err(e) => {
                        log::error!("dns: {e}; services with host names keep the members they have");
                        None
                    }
                };
            }
            let mut keep = HashMap::new();
            if let Some((settings, resolver)) = &resolver {
                for spec in &now_wanted.specs {
                    let key = LoopKey { source: spec.source.clone(), feed: spec.feed.id(), settings: settings.clone() };
                    let handle = match running.remove(&spec.name) {
                        Some((k, handle)) if k == key => handle,
                        _ => {
                            let follow = Arc::new(Follow {
                                spec: spec.clone(),
                                failures: self.failures.clone(),
                                reports: self.reports.clone(),
                                primed: self.primed.clone(),
                            });
                            let resolver = resolver.clone();
                            spawn_supervised(spec.name.clone(), move |stop| {
                                let (follow, resolver) = (follow.clone(), resolver.clone());
                                async move { follow.run(&resolver, stop).await }
                            })
                        }
                    };
                    keep.insert(spec.name.clone(), (key, handle));
                }
            }
            // Dropping the rest stops them.
            running = keep;
            tokio::select! {
                changed = wanted.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Failures in a row of one name, for logging.
struct Streak {
    since: Instant,
    reminded: Instant,
}

/// The loop of one service.
struct Follow {
    spec: DnsSpec,
    failures: IntCounterVec,
    reports: Reports,
    primed: Primed,
}

impl Follow {
    async fn run(&self, resolver: &TokioResolver, mut stop: watch::Receiver<bool>) {
        let primed = self.primed.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.spec.name);
        let mut tracked = match primed {
            Some((source, tracked)) if source == self.spec.source => tracked,
            _ => names::track(&self.spec.source, Instant::now()),
        };
        let mut streaks: Option<Vec<Option<Streak>>> = None;
        loop {
            self.round(resolver, &mut tracked, &mut streaks).await;
            let next = tracked.iter().map(|t| t.due).min().unwrap_or_else(|| Instant::now() + names::MAX_TTL);
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// Ask every name that is due, then publish the members and the report.
    async fn round(
        &self,
        resolver: &TokioResolver,
        tracked: &mut [Tracked],
        streaks: &mut Option<Vec<Option<Streak>>>,
    ) {
        let now = Instant::now();
        let due: Vec<usize> = (0..tracked.len()).filter(|&i| tracked[i].due <= now).collect();
        let answers = futures::future::join_all(due.iter().map(|&i| lookup(resolver, &tracked[i].query))).await;
        let now = Instant::now();
        let streaks = streaks.get_or_insert_with(|| tracked.iter().map(|_| None).collect());
        for (i, answer) in due.into_iter().zip(answers) {
            let t = &mut tracked[i];
            match answer {
                Ok(answer) => {
                    if t.last.as_ref() != Some(&answer.targets) {
                        log::info!(
                            "service {}: {} now resolves to [{}]",
                            self.spec.name,
                            t.query.label(),
                            describe(&answer.targets)
                        );
                    }
                    if let Some(s) = streaks[i].take() {
                        log::info!(
                            "service {}: {} resolves again after failing for {:.0?}",
                            self.spec.name,
                            t.query.label(),
                            s.since.elapsed()
                        );
                    }
                    if answer.note.is_some() && answer.note != t.note {
                        log::warn!(
                            "service {}: {}: {}",
                            self.spec.name,
                            t.query.label(),
                            answer.note.as_deref().unwrap_or_default()
                        );
                    }
                    t.answered(answer, now);
                }
                Err(e) => {
                    self.failures.with_label_values(&[self.spec.name.as_str()]).inc();
                    match &mut streaks[i] {
                        None => {
                            log::warn!(
                                "service {}: looking up {} failed, keeping its last addresses [{}]: {e}",
                                self.spec.name,
                                t.query.label(),
                                describe(t.last.as_deref().unwrap_or_default())
                            );
                            streaks[i] = Some(Streak { since: now, reminded: now });
                        }
                        Some(s) if now.duration_since(s.reminded) >= REMIND_EVERY => {
                            s.reminded = now;
                            log::warn!(
                                "service {}: {} failing for {:.0?}, still using [{}]: {e}",
                                self.spec.name,
                                t.query.label(),
                                s.since.elapsed(),
                                describe(t.last.as_deref().unwrap_or_default())
                            );
                        }
                        Some(_) => {
                            log::debug!("service {}: looking up {} failed: {e}", self.spec.name, t.query.label())
                        }
                    }
                    t.failed(e, now);
                }
            }
        }
        if tracked.iter().all(|t| t.error.is_none()) {
            self.spec.feed.mark_synced();
        }
        self.spec.feed.publish(names::members(&self.spec.source.fixed, tracked));
        self.report(tracked);
    }

    fn report(&self, tracked: &[Tracked]) {
        let now = Instant::now();
        let reports = tracked
            .iter()
            .map(|t| NameReport {
                name: t.query.label(),
                kind: t.query.kind(),
                addresses: t
                    .last
                    .iter()
                    .flatten()
                    .map(|a| match t.query {
                        Query::Srv(_) => format!("{}×{}", a.addr, a.weight),
                        Query::Host { .. } => a.addr.to_string(),
                    })
                    .collect(),
                ttl_secs: t.ttl.as_secs(),
                // The last answer came one TTL before the name is due again.
                resolved_at: t.last.as_ref().filter(|_| t.error.is_none()).map(|_| {
                    let ago = t.ttl.saturating_sub(t.due.saturating_duration_since(now));
                    crate::timestamp::rfc3339(SystemTime::now() - ago)
                }),
                error: t.error.clone(),
                warning: t.note.clone(),
            })
            .collect();
        self.reports.lock().unwrap_or_else(|p| p.into_inner()).insert(self.spec.name.clone(), reports);
    }
}

/// Ask DNS for one name.
async fn lookup(resolver: &TokioResolver, query: &Query) -> Result<Answer, String> {
    match query {
        Query::Host { host, port, weight } => {
            let (ips, valid_until) = lookup_ips(resolver, host).await?;
            Ok(Answer { targets: names::host_targets(ips, *port, *weight), ttl: ttl_until(valid_until), note: None })
        }
        Query::Srv(name) => {
            let lookup = resolver.srv_lookup(fqdn(name)).await.map_err(|e| why(&e))?;
            let records: Vec<SrvRecord> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some(SrvRecord {
                        priority: srv.priority,
                        weight: srv.weight,
                        port: srv.port,
                        target: srv.target.to_ascii(),
                    }),
                    _ => None,
                })
                .collect();
            let mut valid_until = lookup.valid_until();
            let chosen = names::srv_choice(&records);
            let resolved =
                futures::future::join_all(chosen.iter().map(|(target, _, _)| lookup_ips(resolver, target))).await;
            let mut targets = Vec::new();
            let mut errors = Vec::new();
            for ((target, port, weight), ips) in chosen.iter().zip(resolved) {
                match ips {
                    Ok((ips, until)) => {
                        valid_until = valid_until.min(until);
                        targets.extend(names::host_targets(ips, *port, *weight));
                    }
                    // A target that does not resolve is left out; when none does, the look-up
                    // failed (and the last good set stays).
                    Err(e) => errors.push(format!("{target}: {e}")),
                }
            }
            if targets.is_empty() && !errors.is_empty() {
                return Err(format!("no SRV target resolves ({})", errors.join("; ")));
            }
            let note = (!errors.is_empty()).then(|| format!("SRV targets left out: {}", errors.join("; ")));
            Ok(Answer { targets, ttl: ttl_until(valid_until), note })
        }
    }
}

async fn lookup_ips(
    resolver: &TokioResolver,
    host: &str,
) -> Result<(Vec<std::net::IpAddr>, std::time::Instant), String> {
    let answer = resolver.lookup_ip(host).await.map_err(|e| why(&e))?;
    let ips: Vec<std::net::IpAddr> = answer.iter().collect();
    if ips.is_empty() {
        return Err("no A or AAAA records".into());
    }
    Ok((ips, answer.valid_until()))
}

/// A failed look-up in the words an operator searches for.
fn why(e: &hickory_resolver::net::NetError) -> String {
    if e.is_nx_domain() {
        "NXDOMAIN (no such name)".into()
    } else if e.is_no_records_found() {
        "no records of that type (NODATA)".into()
    } else {
        e.to_string()
    }
}

/// SRV names are always absolute (they are not searched in resolv.conf's domains).
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

fn ttl_until(valid_until: std::time::Instant) -> Duration {
    valid_until.saturating_duration_since(std::time::Instant::now())
}

/// `addr×weight, …` for a log line.
fn describe(targets: &[crate::config::Target]) -> String {
    let list: Vec<String> = targets.iter().take(20).map(|t| format!("{}×{}", t.addr, t.weight)).collect();
    let more = targets.len().saturating_sub(20);
    if more > 0 {
        format!("{}, … {more} more", list.join(", "))
    } else {
        list.join(", ")
    }
}
