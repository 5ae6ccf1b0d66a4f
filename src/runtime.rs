//! What lives as long as the process — metrics, the drain counters, the NATS link, each
//! service's health and counters, the limit tables, the Consul watches — and the
//! configuration snapshot in force, swapped atomically by a reload (ARCHITECTURE.md §7.1).
//!
//! A reload is all or nothing: the file is read, parsed and validated exactly as `siger -t`
//! does, every file it names is loaded, changes that can only apply to a new process are
//! refused, and only then is the new [`Snapshot`] built and swapped in. On any error the old
//! snapshot keeps serving; the error is logged, counted and reported to whoever asked.

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError, FileDigest, TracingSettings};
use crate::config_store::gateway::Fleet;
use crate::connections::Connections;
use crate::discovery::dns::DnsControl;
use crate::discovery::DiscoveryControl;
use crate::jobs::Jobs;
use crate::lifecycle::Lifecycle;
use crate::observability::Metrics;
use crate::partner::PartnerStores;
use crate::ratelimit::LimitStores;
use crate::snapshot::{self, Checked, Snapshot, Source};
use crate::tls::TlsEdge;
use crate::trace::export::SpanQueue;
use crate::upstream::Upstreams;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Longest wait for a new `jwks_url` to answer during a reload.
const JWKS_PREFETCH: Duration = Duration::from_secs(5);
/// Longest wait for a newly discovered service's first Consul or DNS answer during a reload.
const DISCOVERY_PRIME: Duration = Duration::from_secs(2);

/// How the last reload attempt ended.
#[derive(Debug, Clone)]
pub(crate) struct ReloadReport {
    /// When it ended.
    pub(crate) at: SystemTime,
    /// What asked for it (`SIGHUP`, `watch_config`, `admin`).
    pub(crate) trigger: &'static str,
    /// The new generation, or why nothing changed.
    pub(crate) result: Result<u64, Vec<String>>,
}

/// The process's lasting state and the snapshot in force.
pub(crate) struct Runtime {
    current: ArcSwap<Snapshot>,
    /// Metrics registry and families.
    pub(crate) metrics: Metrics,
    /// In-flight requests and shutdown tasks (graceful drain).
    pub(crate) lifecycle: Arc<Lifecycle>,
    /// The NATS link of `/jobs/submit`, when the process started with jobs configured.
    pub(crate) jobs: Option<Arc<Jobs>>,
    pub(crate) upstreams: Upstreams,
    pub(crate) limits: Arc<LimitStores>,
    /// Quota counters, usage records and their clock (docs/plans.md), kept across reloads.
    pub(crate) partners: Arc<PartnerStores>,
    pub(crate) discovery: DiscoveryControl,
    /// The authenticator in force, for the key refresher (sent at start and on every commit).
    pub(crate) authenticator: watch::Sender<Option<Arc<Authenticator>>>,
    /// `tracing` in force, for the span exporter (sent at start and on every commit).
    pub(crate) tracing: watch::Sender<Option<TracingSettings>>,
    /// The DNS-backed services followed, and what their names resolved to.
    pub(crate) dns: DnsControl,
    /// Client connections: their bounds and request deadlines.
    pub(crate) connections: Arc<Connections>,
    /// Finished spans waiting for the exporter.
    pub(crate) spans: Arc<SpanQueue>,
    /// TLS listeners' certificates and client-certificate checks.
    pub(crate) tls: Arc<TlsEdge>,
    /// Pingora's response-compression module is installed (a route compressed at start-up):
    /// without one, a plain request pays nothing for compression; adding the first
    /// `compress` route then needs a new process.
    pub(crate) compression: bool,
    /// Runs request inspections off the reactor, bounded for the whole process (docs/waf.md).
    pub(crate) inspector: crate::waf::Inspector,
    /// The config store this gateway follows (`config_source`), if any.
    pub(crate) fleet: Option<Arc<Fleet>>,
    reloading: tokio::sync::Mutex<()>,
    last_reload: Mutex<Option<ReloadReport>>,
    generations: AtomicU64,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("generation", &self.current.load().generation).finish_non_exhaustive()
    }
}

/// Where `config` came from: `path`, whose digest `config::load` recorded first in `files`;
/// with a config store's `document`, that document's digest.
fn source_of(path: &Path, config: &Config, document: Option<&str>) -> Source {
    let sha256 = match document {
        Some(document) => crate::config_store::gateway::digest(document),
        None => config.files.first().map(|f| hex::encode(f.sha256)).unwrap_or_default(),
    };
    Source { path: path.to_path_buf(), sha256, loaded_at: SystemTime::now() }
}

/// A revision of the config store's document, as a reload merges it with the bootstrap file.
#[derive(Debug, Clone)]
pub(crate) struct Revision {
    pub(crate) number: u64,
    pub(crate) document: Arc<str>,
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Runtime {
    /// The runtime of a process started with `checked` (read from `path`). Keys that fail to
    /// load leave authentication unavailable (503) rather than stopping the start.
    pub(crate) fn start(checked: Checked, path: &Path, fleet: Option<Arc<Fleet>>) -> Arc<Runtime> {
        let config = &checked.config;
        let jobs = match (&config.jobs, &config.nats) {
            (Some(jobs), Some(nats)) => {
                let wait = config.server.grace_period + config.server.graceful_shutdown_timeout;
                Some(Arc::new(Jobs::new(jobs.clone(), nats.clone(), wait)))
            }
            _ => None,
        };
        let auth = starting_auth(config);
        let discovery = DiscoveryControl::new(config.consul.clone());
        let metrics = Metrics::new();
        let upstreams = Upstreams::default();
        let limits = Arc::new(LimitStores::default());
        let partners = Arc::new(PartnerStores::new(metrics.quota.clone(), metrics.usage.clone()));
        let running = fleet.as_ref().and_then(|f| f.running());
        let source = source_of(path, config, running.as_ref().map(|(_, document)| &**document));
        let snapshot = Snapshot::build(1, checked, source, auth, &upstreams, &limits, &metrics, &[], &partners);
        let (services, upstream_tls) = (&snapshot.config.services, &snapshot.compiled.upstream_tls);
        discovery.seed(services, &snapshot.pools);
        upstreams.commit(services, upstream_tls, &snapshot.pools);
        limits.commit(&snapshot.limiter, &snapshot.config);
        partners.commit(snapshot.program.as_ref(), None);
        discovery.want(services, &snapshot.pools);
        let dns = DnsControl::default();
        dns.prime_at_start(&snapshot.config, &snapshot.pools, &metrics.consul.dns_lookup_failures);
        dns.want(&snapshot.config, &snapshot.pools);
        metrics.loaded(1, unix_seconds(snapshot.source.loaded_at));
        let (listeners, files) = (&snapshot.config.listeners, &snapshot.config.files);
        let tls = Arc::new(TlsEdge::new(listeners, &snapshot.compiled.listener_tls, files, &metrics.tls));
        crate::policy::cache::storage().set_limit(snapshot.config.cache.max_memory as usize);
        let compression = snapshot.config.routes.iter().any(|r| r.compress.is_some());
        Arc::new(Runtime {
            tls,
            compression,
            inspector: crate::waf::Inspector::for_this_machine(),
            fleet,
            connections: Connections::new(
                &snapshot.config.limits,
                &snapshot.config.trusted_proxies,
                &snapshot.config.listeners,
                metrics.connections.clone(),
            ),
            spans: Default::default(),
            authenticator: watch::channel(snapshot.auth.clone()).0,
            tracing: watch::channel(snapshot.config.tracing.clone()).0,
            current: ArcSwap::from_pointee(snapshot),
            metrics,
            lifecycle: Lifecycle::new(),
            jobs,
            upstreams,
            limits,
            partners,
            discovery,
            dns,
            reloading: tokio::sync::Mutex::new(()),
            last_reload: Mutex::new(None),
            generations: AtomicU64::new(1),
        })
    }

    /// The snapshot in force, pinned: what a request holds from start to end.
    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// How the last reload attempt ended, if there was one.
    pub(crate) fn last_reload(&self) -> Option<ReloadReport> {
        self.last_reload.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reload the config file: build a new snapshot and swap it in, or change nothing.
    /// Returns the new generation, or every reason it was refused (the same messages as
    /// `siger -t`). Reloads run one at a time.
    pub(crate) async fn reload(&self, trigger: &'static str) -> Result<u64, Vec<String>> {
        self.reload_with(trigger, None).await
    }

    async fn reload_with(&self, trigger: &'static str, revision: Option<Revision>) -> Result<u64, Vec<String>> {
        let _one_at_a_time = self.reloading.lock().await;
        let result = self.try_reload(revision).await;
        let at = SystemTime::now();
        match &result {
            Ok(generation) => {
                self.metrics.reloaded(true, *generation, unix_seconds(at));
                log::info!("configuration reloaded ({trigger}): generation {generation} in force");
            }
            Err(errors) => {
                self.metrics.reloaded(false, 0, 0.0);
                log::error!(
                    "configuration reload ({trigger}) refused; generation {} keeps serving:\n  {}",
                    self.current.load().generation,
                    errors.join("\n  ")
                );
            }
        }
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(ReloadReport { at, trigger, result: result.clone() });
        result
    }

    async fn try_reload(&self, revision: Option<Revision>) -> Result<u64, Vec<String>> {
        let previous = self.current();
        let path = previous.source.path.clone();
        // With a config store: the revision given, else the one in force (a SIGHUP or a change
        // of the bootstrap file merges it with the file read again).
        let revision = match &self.fleet {
            Some(fleet) => revision.or_else(|| fleet.running().map(|(number, document)| Revision { number, document })),
            None => None,
        };
        // Reading and checking a large file takes a while: not on a runtime thread (the admin
        // listener has one, and keeps answering /health meanwhile).
        let file = path.clone();
        let fleet = self.fleet.clone();
        let merging = revision.clone();
        // Compiling request inspection's rules takes about a second: with the file, off the runtime.
        let loaded = tokio::task::spawn_blocking(move || match (fleet, merging) {
            (Some(fleet), Some(r)) => crate::config_store::gateway::load(&fleet, r.number, &r.document),
            (Some(fleet), None) => crate::config_store::gateway::load_alone(&fleet),
            (None, _) => snapshot::check(&file).map_err(|e| e.errors.iter().map(ConfigError::to_string).collect()),
        })
        .await
        .map_err(|e| vec![format!("loading the configuration failed: {e}")])?;
        let checked = loaded?;
        let config = &checked.config;
        let source = source_of(&path, config, revision.as_ref().map(|r| &*r.document));
        let refused = self.upgrade_only_changes(&previous.config, config);
        if !refused.is_empty() {
            return Err(refused);
        }
        for w in &config.warnings {
            log::warn!("{}: {w}", path.display());
        }
        let auth = plan_auth(config, &previous).await.map_err(|e| vec![e])?;
        let generation = self.generations.load(Ordering::Relaxed) + 1;
        let (upstreams, limits, metrics) = (&self.upstreams, &self.limits, &self.metrics);
        let snapshot = Snapshot::build(
            generation,
            checked,
            source,
            auth,
            upstreams,
            limits,
            metrics,
            &previous.pools,
            &self.partners,
        );
        self.discovery.prepare(&snapshot.config.services, &snapshot.pools, DISCOVERY_PRIME).await;
        self.dns.prepare(&snapshot.config, &snapshot.pools, DISCOVERY_PRIME).await;
        // A file rewritten while it was read (an editor or copy still at work) is not applied:
        // what was read may be a mix of old and new. The finished write is a change of its own.
        if FileDigest::any_changed(&snapshot.config.files) {
            self.dns.want(&previous.config, &previous.pools);
            return Err(vec!["the configuration changed while it was being read (a write still in progress?); \
                             nothing was applied"
                .to_string()]);
        }
        // Everything is built: from here on nothing can fail.
        self.generations.store(generation, Ordering::Relaxed);
        self.upstreams.commit(&snapshot.config.services, &snapshot.compiled.upstream_tls, &snapshot.pools);
        self.limits.commit(&snapshot.limiter, &snapshot.config);
        self.partners.commit(snapshot.program.as_ref(), previous.compiled.plans.as_deref());
        self.discovery.want(&snapshot.config.services, &snapshot.pools);
        self.dns.want(&snapshot.config, &snapshot.pools);
        let listeners = &snapshot.config.listeners;
        self.connections.apply(&snapshot.config.limits, &snapshot.config.trusted_proxies, listeners);
        let snapshot = Arc::new(snapshot);
        self.current.store(snapshot.clone());
        if let (Some(fleet), Some(r)) = (&self.fleet, revision) {
            fleet.now_running(r.number, r.document);
        }
        self.authenticator.send_replace(snapshot.auth.clone());
        self.tracing.send_replace(snapshot.config.tracing.clone());
        let (listeners, files) = (&snapshot.config.listeners, &snapshot.config.files);
        self.tls.apply(listeners, &snapshot.compiled.listener_tls, files, &self.metrics.tls);
        crate::policy::cache::storage().set_limit(snapshot.config.cache.max_memory as usize);
        // After the swap: new requests already use the new generation.
        let discovered: Vec<String> =
            snapshot.config.services.iter().filter(|s| s.discovery.is_some()).map(|s| s.name.clone()).collect();
        self.metrics.retire(&previous.metrics, &snapshot.metrics, &discovered);
        log_changes(&previous.config, &snapshot.config);
        Ok(generation)
    }

    /// Changes a running process cannot apply: each is refused with the way to apply it.
    fn upgrade_only_changes(&self, old: &Config, new: &Config) -> Vec<String> {
        let hint = "applies only to a new process: run `siger upgrade` (the running configuration keeps serving)";
        let (mut old_server, mut new_server) = (old.server.clone(), new.server.clone());
        // The only server setting read while running.
        old_server.watch_config = false;
        new_server.watch_config = false;
        let jobs_stream_same = match (&self.jobs, &new.jobs) {
            (Some(running), Some(jobs)) => running.settings.stream == jobs.stream,
            _ => true,
        };
        let mut refused: Vec<String> = [
            ("server", old_server == new_server),
            ("listen", listener_shapes(old) == listener_shapes(new)),
            // The listener is handed over, never re-bound; `allowed_hosts` applies on reload.
            ("admin.listen", old.admin.as_ref().map(|a| &a.listen) == new.admin.as_ref().map(|a| &a.listen)),
            ("limits.keepalive_requests", old.limits.keepalive_requests == new.limits.keepalive_requests),
            ("limits.read_buffer", old.limits.read_buffer == new.limits.read_buffer),
            (
                "limits.h2_max_concurrent_streams",
                old.limits.h2_max_concurrent_streams == new.limits.h2_max_concurrent_streams,
            ),
            ("consul", old.consul == new.consul),
            ("nats", old.nats == new.nats),
            ("jobs.stream", jobs_stream_same),
        ]
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(key, _)| format!("{key}: changed; {hint}"))
        .collect();
        // Files read once, by the connection: new contents need a new process.
        let digest = |c: &Config, f: &std::path::Path| c.files.iter().find(|d| d.path == f).map(|d| d.sha256);
        for file in new.nats.iter().filter_map(|n| n.credentials_file.clone()) {
            if digest(old, &file) != digest(new, &file) {
                refused.push(format!("{}: contents changed; {hint}", file.display()));
            }
        }
        if self.jobs.is_none() && new.jobs.is_some() {
            refused.push(format!("jobs: enabled; the NATS connection it needs {hint}"));
        }
        if !self.compression {
            if let Some(i) = new.routes.iter().position(|r| r.compress.is_some()) {
                refused.push(format!(
                    "routes[{i}].compress: the first compressing route needs the compression module, which {hint}"
                ));
            }
        }
        refused
    }
}

#[async_trait::async_trait]
impl crate::reload::Reload for Runtime {
    async fn reload(&self, trigger: &'static str) -> Result<u64, Vec<String>> {
        Runtime::reload(self, trigger).await
    }

    fn in_force(&self) -> crate::reload::InForce {
        let snap = self.current();
        crate::reload::InForce {
            generation: snap.generation,
            watch_config: snap.config.server.watch_config,
            path: snap.source.path.clone(),
            files: snap.config.files.clone(),
        }
    }
}

/// What of the listeners only a new process can change (certificates, `min_tls`, `client_ca`
/// and `hsts` apply on reload).
fn listener_shapes(config: &Config) -> Vec<(String, &'static str, bool, Option<u16>)> {
    config.listeners.iter().map(|l| l.fixed_shape()).collect()
}

/// The authenticator of the starting config: one whose keys fail to load leaves
/// authentication unavailable (503) rather than stopping the start.
pub(crate) fn starting_auth(config: &Config) -> Option<Arc<Authenticator>> {
    config.auth.as_ref().and_then(|s| match Authenticator::new(s) {
        Ok(a) => Some(Arc::new(a)),
        Err(e) => {
            log::error!("auth.jwt: {e}; routes that need authentication will answer 503");
            None
        }
    })
}

/// The authenticator of a reloaded config: the same one when `auth.jwt` and the key files it
/// names did not change (its validation cache stays warm), else a new one whose keys are all
/// loaded before it is used — the JWKS URL's included (taken over when the URL is the same,
/// fetched now when it is new).
async fn plan_auth(config: &Config, previous: &Snapshot) -> Result<Option<Arc<Authenticator>>, String> {
    let Some(settings) = &config.auth else { return Ok(None) };
    let files = [settings.public_key_file.as_deref(), settings.jwks_file.as_deref()];
    let files_same = files.iter().flatten().all(|f| file_digest(f) == previous_digest(previous, f));
    if let Some(auth) = previous.auth.as_ref().filter(|_| previous.config.auth.as_ref() == Some(settings) && files_same)
    {
        return Ok(Some(auth.clone()));
    }
    let auth = Authenticator::new(settings).map_err(|e| format!("auth.jwt: {e}"))?;
    if let (Some(url), Some(keys)) = (&settings.jwks_url, auth.keys()) {
        let old = previous.auth.as_ref().and_then(|a| a.keys()).filter(|k| k.url() == Some(url) && k.url_loaded());
        match old {
            Some(old) => keys.adopt_url_keys(old),
            None => {
                let fetched = tokio::time::timeout(JWKS_PREFETCH, keys.refresh()).await;
                if !keys.url_loaded() {
                    let why = match fetched {
                        Err(_) => format!("no answer within {JWKS_PREFETCH:?}"),
                        Ok(refresh) => refresh.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "),
                    };
                    return Err(format!("auth.jwt.jwks_url: cannot load keys from `{url}`: {why}"));
                }
            }
        }
    }
    Ok(Some(Arc::new(auth)))
}

fn file_digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

/// The digest of a key file as the previous generation's authenticator read it.
fn previous_digest(previous: &Snapshot, path: &Path) -> Option<[u8; 32]> {
    previous.auth.as_ref().and_then(|a| a.file_digest(path))
}

/// Log what a reload changed, by route label and service name.
fn log_changes(old: &Config, new: &Config) {
    use std::collections::{HashMap, HashSet};
    fn services(c: &Config) -> HashMap<&str, &crate::config::ServiceSettings> {
        c.services.iter().map(|s| (s.name.as_str(), s)).collect()
    }
    let (before, after) = (services(old), services(new));
    let mut added: Vec<&str> = after.keys().filter(|n| !before.contains_key(*n)).copied().collect();
    let mut removed: Vec<&str> = before.keys().filter(|n| !after.contains_key(*n)).copied().collect();
    let mut changed: Vec<&str> =
        after.iter().filter(|(n, s)| before.get(*n).is_some_and(|o| o != *s)).map(|(n, _)| *n).collect();
    for list in [&mut added, &mut removed, &mut changed] {
        list.sort_unstable();
    }
    fn routes(c: &Config) -> HashSet<(&str, Option<&str>)> {
        c.routes.iter().map(|r| (r.label.as_str(), r.host.as_deref())).collect()
    }
    let (r_before, r_after) = (routes(old), routes(new));
    log::info!(
        "reload: services added {added:?}, removed {removed:?}, changed {changed:?}; routes {} → {} ({} added, {} removed)",
        old.routes.len(),
        new.routes.len(),
        r_after.difference(&r_before).count(),
        r_before.difference(&r_after).count(),
    );
}

#[async_trait::async_trait]
impl crate::config_store::gateway::Apply for Runtime {
    /// Apply revision `number` of the config store's document (merged with the bootstrap file)
    /// through the same reload as SIGHUP: all of it, or nothing.
    async fn apply_revision(&self, number: u64, document: Arc<str>) -> Result<u64, Vec<String>> {
        self.reload_with("config store", Some(Revision { number, document })).await
    }
}
