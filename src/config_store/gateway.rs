//! A gateway's side of the store (docs/fleet.md, "What a gateway does"): where its first
//! configuration comes from, and the follower that applies every new revision through the
//! runtime's one reload path (the snapshot swap of SIGHUP and `POST /config/reload`), writes it
//! to the cache file and reports what it did under the gateway's status key.
//!
//! What never happens: a store outage changing the running configuration or readiness, a
//! revision applied in part, a refused revision replacing the last good one.

use super::cache::{self, CachedRevision};
use super::document::{Bootstrap, Merged, Origin};
use super::follow::Cursor;
use super::status::{gateway_id, GatewayStatus, Outcome, STATUS_REFRESH};
use super::store::{ConfigStore, Followed, StoredRevision};
use crate::config::{ConfigError, ConfigErrors, ConfigSourceSettings, FileDigest, NatsSettings};
use crate::observability::metrics::ReloadMetrics;
use crate::snapshot::Checked;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a start-up waits for the store before it serves the cache file instead.
const STARTUP_PATIENCE: Duration = Duration::from_secs(4);
/// How long one request of the follower is retried (its own loop retries for ever).
const FOLLOWER_PATIENCE: Duration = Duration::from_secs(2);
/// How often the follower looks at the link and retries a report the store did not take.
const TICK: Duration = Duration::from_secs(1);
/// Failed connection attempts between two log lines.
const LOG_EVERY: u32 = 30;

/// Whether the file at `path` names a `config_source` (then it is a bootstrap file). A file
/// that cannot be read or parsed is not: the ordinary loader reports its problems.
pub fn configured(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    serde_yaml::from_str::<serde_yaml::Value>(&text).is_ok_and(|v| v.get("config_source").is_some())
}

/// The revision in force.
#[derive(Debug, Clone)]
struct Running {
    revision: u64,
    document: Arc<str>,
}

/// What the gateway knows of the store, as `GET /config`, the status page and its reports
/// show it.
#[derive(Debug, Default)]
struct State {
    running: Option<Running>,
    /// The configuration in force came from the cache file (the store has not confirmed it).
    from_cache: bool,
    /// The newest revision the gateway has seen (applied, refused or skipped).
    latest_seen: Option<u64>,
    /// The last refused revision and why, while no newer one was applied.
    refused: Option<(u64, Vec<String>)>,
    connected: bool,
}

/// A refusal, as shown.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RefusedView {
    pub(crate) revision: u64,
    pub(crate) errors: Vec<String>,
}

/// `source` of admin `GET /config` and `/status`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SourceView {
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) gateway_id: String,
    /// The revision in force (`null`: none applied yet).
    pub(crate) revision: Option<u64>,
    pub(crate) latest_seen: Option<u64>,
    /// The store holds a newer revision than the one in force.
    pub(crate) drift: bool,
    pub(crate) refused: Option<RefusedView>,
    pub(crate) from_cache: bool,
    pub(crate) connected: bool,
}

/// A gateway following a store: its bootstrap file, `config_source`, and what it applied.
#[derive(Debug)]
pub(crate) struct Fleet {
    /// The bootstrap file (`-c`).
    pub(crate) bootstrap: PathBuf,
    pub(crate) settings: ConfigSourceSettings,
    nats: NatsSettings,
    /// `config_source.cache_file`, a relative name resolved against the bootstrap file's
    /// directory (a daemon runs from `/`).
    cache_file: PathBuf,
    /// This gateway's name in the status keys.
    pub(crate) gateway: String,
    state: Mutex<State>,
    /// Where following starts (taken by the follower).
    cursor: Mutex<Cursor>,
}

/// What a start-up found: the generation to serve first, and the store it follows.
#[derive(Debug)]
pub struct Start {
    pub(crate) checked: Checked,
    pub(crate) fleet: Arc<Fleet>,
}

impl Start {
    /// The validated configuration to serve first.
    pub fn config(&self) -> &crate::config::Config {
        &self.checked.config
    }
}

/// Every problem of `errors`, one line each, naming the revision (or file) it is in.
fn lines(errors: &[ConfigErrors]) -> Vec<String> {
    errors.iter().flat_map(|e| e.errors.iter().map(move |err| format!("{}: {err}", e.file))).collect()
}

fn whole(path: &Path, message: &str) -> Vec<ConfigErrors> {
    vec![ConfigErrors {
        file: path.display().to_string(),
        errors: vec![ConfigError { path: String::new(), line: None, message: message.into() }],
    }]
}

/// A generation's ingredients from `merged`, its warnings logged, with the bootstrap file's
/// digest first among the files it was read from (so `watch_config` follows it too).
fn generation(merged: &Merged, bootstrap_path: &Path, bootstrap_text: &[u8]) -> Result<Checked, Vec<String>> {
    let (mut checked, mut warnings) = merged.generation().map_err(|e| lines(&e))?;
    for part in &mut warnings {
        part.errors.retain(|w| !super::document::unused_nats(w));
    }
    for w in lines(&warnings) {
        log::warn!("{w}");
    }
    let own = FileDigest { path: bootstrap_path.to_path_buf(), sha256: Sha256::digest(bootstrap_text).into() };
    checked.config.files.insert(0, own);
    Ok(checked)
}

/// The bootstrap file read again and merged with `document` (revision `revision`), checked as
/// `-t` checks a file, the files it names read from this host: the generation's ingredients or
/// every problem (revision or file, key, line; a missing file by its key and path).
pub(crate) fn load(fleet: &Fleet, revision: u64, document: &str) -> Result<Checked, Vec<String>> {
    let text = std::fs::read(&fleet.bootstrap).map_err(|e| vec![format!("{}: {e}", fleet.bootstrap.display())])?;
    let bootstrap = Bootstrap::read(&fleet.bootstrap).map_err(|e| lines(&[e]))?;
    if bootstrap.source.as_ref() != Some(&fleet.settings) {
        return Err(vec![format!(
            "{}: config_source: changed; applies only to a new process: run `siger upgrade` (the running \
             configuration keeps serving)",
            fleet.bootstrap.display()
        )]);
    }
    let origin = Origin::Revision {
        bucket: fleet.settings.nats_kv.bucket.clone(),
        key: fleet.settings.nats_kv.key.clone(),
        revision,
    };
    let merged = bootstrap.merge(document, origin).map_err(|e| lines(&[e]))?;
    generation(&merged, &fleet.bootstrap, &text)
}

/// The bootstrap file alone (no revision applied yet).
pub(crate) fn load_alone(fleet: &Fleet) -> Result<Checked, Vec<String>> {
    let text = std::fs::read(&fleet.bootstrap).map_err(|e| vec![format!("{}: {e}", fleet.bootstrap.display())])?;
    let bootstrap = Bootstrap::read(&fleet.bootstrap).map_err(|e| lines(&[e]))?;
    generation(&bootstrap.as_merged(), &fleet.bootstrap, &text)
}

/// Why the cache file cannot be written where it is named (`None`: it can): its directory must
/// exist and take a new file, found by making (and removing) one there.
fn unwritable(cache_file: &Path) -> Option<String> {
    let dir = cache_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Some(format!("the directory {} does not exist", dir.display()));
    }
    let name = cache_file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let probe = dir.join(format!(".{name}.{}.probe", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) => Some(format!("cannot write into {}: {e}", dir.display())),
    }
}

/// SHA-256 (hex) of a document: what `GET /config` shows as the configuration's digest.
pub(crate) fn digest(document: &str) -> String {
    hex::encode(Sha256::digest(document.as_bytes()))
}

impl Fleet {
    /// The bootstrap file at `path`, checked alone: its `config_source` and `nats`.
    fn read(path: &Path) -> Result<Fleet, Vec<ConfigErrors>> {
        let bootstrap = Bootstrap::read(path).map_err(|e| vec![e])?;
        let Some(settings) = bootstrap.source.clone() else {
            return Err(whole(path, "has no `config_source`"));
        };
        let alone = bootstrap.alone()?;
        let Some(nats) = alone.config.nats.clone() else {
            return Err(whole(path, "config_source: needs a `nats` section to reach the store"));
        };
        let gateway = gateway_id(settings.gateway_id.as_deref());
        let cache_file = bootstrap.base.join(&settings.cache_file);
        if let Some(message) = unwritable(&cache_file) {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let key = "config_source.cache_file";
            let line = crate::config::LineIndex::build(&text).line_of(key);
            let errors = vec![ConfigError { path: key.into(), line, message }];
            return Err(vec![ConfigErrors { file: path.display().to_string(), errors }]);
        }
        Ok(Fleet {
            bootstrap: path.to_path_buf(),
            cache_file,
            settings,
            nats,
            gateway,
            state: Mutex::new(State::default()),
            cursor: Mutex::new(Cursor::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn name(&self) -> String {
        format!("{}/{}", self.settings.nats_kv.bucket, self.settings.nats_kv.key)
    }

    /// The revision in force and its document, if any.
    pub(crate) fn running(&self) -> Option<(u64, Arc<str>)> {
        self.state().running.as_ref().map(|r| (r.revision, r.document.clone()))
    }

    /// Revision `revision` (`document`) is now in force: called by the reload at its swap.
    pub(crate) fn now_running(&self, revision: u64, document: Arc<str>) {
        let mut state = self.state();
        state.running = Some(Running { revision, document });
        state.from_cache = false;
        if state.refused.as_ref().is_some_and(|(r, _)| *r <= revision) {
            state.refused = None;
        }
    }

    /// Why the gateway is not ready (`None`: it serves some configuration).
    pub(crate) fn readiness_problem(&self) -> Option<String> {
        self.state().running.is_none().then(|| {
            format!("config store {}: no configuration applied yet (neither the store nor the cache file)", self.name())
        })
    }

    /// What `GET /config` and the status page show.
    pub(crate) fn view(&self) -> SourceView {
        let state = self.state();
        let revision = state.running.as_ref().map(|r| r.revision);
        SourceView {
            bucket: self.settings.nats_kv.bucket.clone(),
            key: self.settings.nats_kv.key.clone(),
            gateway_id: self.gateway.clone(),
            revision,
            latest_seen: state.latest_seen,
            drift: state.latest_seen.is_some_and(|seen| Some(seen) != revision),
            refused: state
                .refused
                .as_ref()
                .map(|(revision, errors)| RefusedView { revision: *revision, errors: errors.clone() }),
            from_cache: state.from_cache,
            connected: state.connected,
        }
    }

    /// The report of this gateway's state: its verdict on the newest revision it decided on.
    fn report(&self) -> GatewayStatus {
        let state = self.state();
        let running = state.running.as_ref().map_or(0, |r| r.revision);
        match &state.refused {
            Some((revision, errors)) if *revision > running => {
                GatewayStatus::new(&self.gateway, *revision, Outcome::Refused, errors.clone(), running)
            }
            _ => GatewayStatus::new(&self.gateway, running, Outcome::Applied, Vec::new(), running),
        }
    }

    fn refused(&self, revision: u64, errors: Vec<String>) {
        let mut state = self.state();
        state.refused = Some((revision, errors));
    }

    /// The watch delivered `revision`: the newest seen, unless the store said of a newer one.
    fn seen(&self, revision: u64) {
        let mut state = self.state();
        state.latest_seen = state.latest_seen.max(Some(revision));
    }

    /// A new history: what was seen belongs to the old one.
    fn new_history(&self) {
        self.state().latest_seen = None;
    }

    /// The store answered: its key is at `revision`. A configuration from the cache file that
    /// is this revision is now confirmed; a newer one shows as drift until it is applied.
    fn store_at(&self, revision: u64) {
        let mut state = self.state();
        if state.latest_seen.is_none_or(|seen| seen < revision) {
            state.latest_seen = Some(revision);
        }
        if state.running.as_ref().is_some_and(|r| r.revision == revision) {
            state.from_cache = false;
        }
    }
}

/// Start-up of a gateway whose bootstrap file names a `config_source` (docs/fleet.md): the
/// store's newest revision when the store answers within a few seconds and the revision is
/// good here; else the cache file's revision; else the bootstrap file alone (no routes, not
/// ready). Every choice is logged. Errors only for an invalid bootstrap file.
pub fn start(path: &Path) -> Result<Start, Vec<ConfigErrors>> {
    let fleet = Fleet::read(path)?;
    let name = fleet.name();
    let mut cursor = None;
    match newest_at_start(&fleet) {
        Ok(Some(newest)) => {
            cursor = Some(newest.revision);
            fleet.seen(newest.revision);
            match load(&fleet, newest.revision, &newest.document) {
                Ok(checked) => {
                    log::info!("config store {name}: starting with revision {}", newest.revision);
                    write_cache(&fleet, newest.revision, &newest.document);
                    return Ok(started(fleet, checked, newest.revision, &newest.document, false, cursor));
                }
                Err(errors) => {
                    log::error!(
                        "config store {name}: revision {} refused at start-up:\n  {}",
                        newest.revision,
                        errors.join("\n  ")
                    );
                    fleet.refused(newest.revision, errors);
                }
            }
        }
        Ok(None) => log::warn!("config store {name}: the store holds no revision yet"),
        Err(e) => log::warn!("config store {name} unreachable at start-up ({e}); trying the cache file"),
    }
    let cache_file = &fleet.cache_file;
    match cache::read(cache_file) {
        Ok(cached) if cached.bucket != fleet.settings.nats_kv.bucket || cached.key != fleet.settings.nats_kv.key => {
            log::warn!(
                "config store {name}: the cache file {} holds {}/{}, not this store's document; ignored",
                cache_file.display(),
                cached.bucket,
                cached.key
            );
        }
        Ok(cached) => match load(&fleet, cached.revision, &cached.document) {
            Ok(checked) => {
                log::warn!(
                    "config store {name}: serving revision {} from the cache file {} (applied {})",
                    cached.revision,
                    cache_file.display(),
                    cached.applied_at
                );
                let cursor = cursor.max(Some(cached.revision));
                return Ok(started(fleet, checked, cached.revision, &cached.document, true, cursor));
            }
            Err(errors) => log::error!(
                "config store {name}: the cache file's revision {} is refused:\n  {}",
                cached.revision,
                errors.join("\n  ")
            ),
        },
        Err(why) if !cache_file.exists() => log::info!("config store {name}: no cache file ({why})"),
        Err(why) => log::error!("config store {name}: the cache file is not used: {why}"),
    }
    let checked = load_alone(&fleet).map_err(|errors| {
        let errors = errors.into_iter().map(|message| ConfigError { path: String::new(), line: None, message });
        vec![ConfigErrors { file: path.display().to_string(), errors: errors.collect() }]
    })?;
    log::warn!(
        "config store {name}: no configuration applied yet: serving the bootstrap file alone (no routes); \
         /ready answers 503 until a revision is applied"
    );
    *fleet.cursor.lock().unwrap_or_else(|p| p.into_inner()) = Cursor { revision: cursor, history: None };
    Ok(Start { checked, fleet: Arc::new(fleet) })
}

/// The configuration this host last applied, for commands run beside a gateway (`siger token`,
/// `siger usage`): the bootstrap file merged with the cache file's revision, or the bootstrap
/// file alone when no revision was applied here yet.
pub fn applied(path: &Path) -> Result<Checked, Vec<ConfigErrors>> {
    let fleet = Fleet::read(path)?;
    let bootstrap = Bootstrap::read(path).map_err(|e| vec![e])?;
    let merged = match cache::read(&fleet.cache_file) {
        Ok(cached) => {
            let origin = Origin::Revision { bucket: cached.bucket, key: cached.key, revision: cached.revision };
            bootstrap.merge(&cached.document, origin).map_err(|e| vec![e])?
        }
        Err(_) if !fleet.cache_file.exists() => bootstrap.as_merged(),
        Err(why) => return Err(whole(&fleet.cache_file, &why)),
    };
    merged.generation().map(|(checked, _)| checked)
}

/// `siger -t` on a bootstrap file: the file alone (listeners, admin, nats, `config_source`),
/// then the cache file's revision merged with it when there is one. The summary line.
pub fn test(path: &Path) -> Result<String, Vec<ConfigErrors>> {
    let fleet = Fleet::read(path)?;
    let cache_file = &fleet.cache_file;
    if !cache_file.exists() {
        return Ok(format!("bootstrap file OK (store {}; no cache file yet)", fleet.name()));
    }
    let cached = cache::read(cache_file).map_err(|why| whole(cache_file, &why))?;
    let origin = Origin::Revision { bucket: cached.bucket.clone(), key: cached.key.clone(), revision: cached.revision };
    let bootstrap = Bootstrap::read(path).map_err(|e| vec![e])?;
    let checked = bootstrap.merge(&cached.document, origin).map_err(|e| vec![e])?.check()?;
    let config = &checked.config;
    Ok(format!(
        "bootstrap file OK (store {}); the cache file's revision {} OK ({} listeners, {} services, {} routes)",
        fleet.name(),
        cached.revision,
        config.listeners.len(),
        config.services.len(),
        config.routes.len()
    ))
}

fn started(
    fleet: Fleet,
    checked: Checked,
    revision: u64,
    document: &str,
    from_cache: bool,
    cursor: Option<u64>,
) -> Start {
    fleet.now_running(revision, Arc::from(document));
    fleet.state().from_cache = from_cache;
    *fleet.cursor.lock().unwrap_or_else(|p| p.into_inner()) = Cursor { revision: cursor, history: None };
    Start { checked, fleet: Arc::new(fleet) }
}

/// The store's newest revision, asked on a runtime of its own that is gone before Pingora
/// forks and starts its services.
fn newest_at_start(fleet: &Fleet) -> Result<Option<StoredRevision>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let asked = runtime.block_on(async {
        let within = STARTUP_PATIENCE + fleet.nats.connect_timeout;
        let read = async {
            let (store, _) = ConfigStore::connect(&fleet.nats, &fleet.settings.nats_kv, true).await?;
            let store = store.with_patience(STARTUP_PATIENCE);
            let newest = store.current().await;
            store.close().await;
            newest
        };
        match tokio::time::timeout(within, read).await {
            Ok(read) => read.map_err(|e| e.0),
            Err(_) => Err(format!("no answer within {}s", within.as_secs())),
        }
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    asked.map(|r| r.filter(|r| !r.deleted))
}

/// Write the cache file; a failure is logged (the revision is applied all the same).
fn write_cache(fleet: &Fleet, revision: u64, document: &str) {
    let kv = &fleet.settings.nats_kv;
    let cached = CachedRevision::new(&kv.bucket, &kv.key, revision, document);
    if let Err(e) = cache::write(&fleet.cache_file, &cached) {
        log::error!(
            "config store {}: cannot write the cache file {} ({e}); a start with the store down will not find revision {revision}",
            fleet.name(),
            fleet.cache_file.display()
        );
    }
}

/// Where the follower applies a revision: the process's one reload path (the runtime's, the
/// same as SIGHUP's), given to it rather than reached for, so the store needs nothing of the
/// runtime.
#[async_trait]
pub(crate) trait Apply: Send + Sync {
    /// Apply the document of revision `number` whole; the generation now serving, or why not.
    async fn apply_revision(&self, number: u64, document: Arc<str>) -> Result<u64, Vec<String>>;
}

/// The background service that follows the store and applies its revisions.
pub(crate) struct Follower {
    apply: Arc<dyn Apply>,
    metrics: ReloadMetrics,
    fleet: Arc<Fleet>,
}

impl Follower {
    pub(crate) fn new(apply: Arc<dyn Apply>, metrics: ReloadMetrics, fleet: Arc<Fleet>) -> Self {
        Follower { apply, metrics, fleet }
    }

    fn connected(&self, connected: bool) {
        let kv = &self.fleet.settings.nats_kv;
        self.metrics.source_connected(&kv.bucket, &kv.key, connected);
        self.fleet.state().connected = connected;
    }

    /// Connect, retrying for ever (a log line for the first failure and every [`LOG_EVERY`]th).
    async fn connect(&self) -> ConfigStore {
        let mut failures = 0u32;
        loop {
            match ConfigStore::connect_to_follow(&self.fleet.nats, &self.fleet.settings.nats_kv).await {
                Ok((store, warnings)) => {
                    for w in warnings {
                        log::warn!("config store: {w}");
                    }
                    if failures > 0 {
                        log::info!("config store {}: reached after {failures} failed attempts", self.fleet.name());
                    }
                    return store.with_patience(FOLLOWER_PATIENCE);
                }
                Err(e) => {
                    failures += 1;
                    self.connected(false);
                    if failures == 1 || failures % LOG_EVERY == 0 {
                        log::warn!(
                            "config store {} unreachable ({e}; {failures} attempts); the running configuration keeps serving",
                            self.fleet.name()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(250).saturating_mul(failures.min(8))).await;
                }
            }
        }
    }

    async fn run(&self) {
        let store = self.connect().await;
        self.connected(store.connected());
        if let Ok(Some(current)) = store.current().await {
            self.fleet.store_at(current.revision);
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let mut cursor = std::mem::take(&mut *self.fleet.cursor.lock().unwrap_or_else(|p| p.into_inner()));
        let follower = store.clone();
        let following = tokio::spawn(async move { follower.follow(&mut cursor, tx).await });
        let _stop = AbortOnDrop(following);
        // The first report says what this process runs (and what it refused at start-up).
        let mut unsent = Some(self.fleet.report());
        let mut tick = tokio::time::interval(TICK);
        let mut refresh = tokio::time::interval(STATUS_REFRESH);
        refresh.tick().await;
        loop {
            tokio::select! {
                followed = rx.recv() => {
                    let Some(followed) = followed else { return };
                    if let Some(report) = self.handle(followed).await {
                        unsent = Some(report);
                    }
                }
                _ = tick.tick() => self.connected(store.connected()),
                _ = refresh.tick() => unsent = Some(self.fleet.report()),
            }
            if let Some(report) = unsent.take().filter(|_| store.connected()) {
                if let Err(e) = store.report(&report).await {
                    log::warn!(
                        "config store {}: cannot report revision {} ({e}); retrying",
                        store.name(),
                        report.revision
                    );
                    unsent = Some(report);
                }
            }
        }
    }

    /// Act on one followed entry; the report to send, if any.
    async fn handle(&self, followed: Followed) -> Option<GatewayStatus> {
        let kv = &self.fleet.settings.nats_kv;
        let name = self.fleet.name();
        match followed {
            Followed::Apply(revision) => {
                self.fleet.seen(revision.revision);
                let document: Arc<str> = Arc::from(revision.document.as_str());
                match self.apply.apply_revision(revision.revision, document.clone()).await {
                    Ok(generation) => {
                        let fleet = self.fleet.clone();
                        let number = revision.revision;
                        let cached = tokio::task::spawn_blocking(move || write_cache(&fleet, number, &document));
                        let _ = cached.await;
                        self.metrics.source_revision(&kv.bucket, &kv.key, revision.revision);
                        log::info!(
                            "config store {name}: revision {} applied (generation {generation})",
                            revision.revision
                        );
                    }
                    Err(errors) => self.refuse(revision.revision, errors),
                }
            }
            Followed::Superseded(revision) => {
                self.fleet.seen(revision);
                log::info!("config store {name}: revision {revision} skipped, a newer revision follows");
                return None;
            }
            Followed::Deleted(revision) => {
                self.fleet.seen(revision);
                self.refuse(revision, vec!["the key was deleted: the running configuration stays".into()]);
            }
            Followed::Unreadable { revision, why } => {
                self.fleet.seen(revision);
                self.refuse(revision, vec![format!("{name} revision {revision}: {why}")]);
            }
            Followed::NewHistory { .. } => {
                self.fleet.new_history();
                return None;
            }
        }
        Some(self.fleet.report())
    }

    fn refuse(&self, revision: u64, errors: Vec<String>) {
        let kv = &self.fleet.settings.nats_kv;
        let running = self.fleet.running().map_or("no revision".into(), |(r, _)| format!("revision {r}"));
        log::error!(
            "config store {}: revision {revision} refused; {running} keeps serving:\n  {}",
            self.fleet.name(),
            errors.join("\n  ")
        );
        self.metrics.source_refused(&kv.bucket, &kv.key);
        self.fleet.refused(revision, errors);
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[async_trait]
impl BackgroundService for Follower {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let kv = &self.fleet.settings.nats_kv;
        let running = self.fleet.running().map_or(0, |(r, _)| r);
        self.metrics.source_revision(&kv.bucket, &kv.key, running);
        tokio::select! {
            _ = self.run() => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BOOT: &str = "listen: [\"127.0.0.1:1\"]\nnats: {url: \"nats://127.0.0.1:1\"}\nconfig_source:\n  nats_kv: {bucket: cfg, key: gw}\n  cache_file: cache.json\n  gateway_id: eu-1\n";

    fn fleet() -> (Fleet, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("siger.yaml");
        std::fs::write(&path, BOOT).unwrap();
        (Fleet::read(&path).unwrap(), dir)
    }

    #[test]
    fn the_cache_file_resolves_next_to_the_bootstrap_file_and_its_directory_must_exist() {
        let (fleet, dir) = fleet();
        assert_eq!(fleet.cache_file, dir.path().join("cache.json"));
        let path = dir.path().join("other.yaml");
        std::fs::write(&path, BOOT.replace("cache.json", "missing/cache.json")).unwrap();
        let e = Fleet::read(&path).unwrap_err();
        assert_eq!((e[0].errors[0].path.as_str(), e[0].errors[0].line), ("config_source.cache_file", Some(5)));
        assert!(e[0].errors[0].message.contains("does not exist"), "{}", e[0]);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no probe file is left behind: {names:?}");
    }

    #[test]
    fn a_report_names_the_refused_revision_until_a_newer_one_applies() {
        let (fleet, _dir) = fleet();
        assert!(fleet.readiness_problem().is_some(), "nothing applied: not ready");
        fleet.now_running(3, Arc::from("routes: []\n"));
        assert_eq!(fleet.readiness_problem(), None);
        let r = fleet.report();
        assert_eq!((r.revision, r.result, r.running), (3, Outcome::Applied, 3));
        fleet.seen(4);
        fleet.refused(4, vec!["cfg/gw revision 4: listen: bad".into()]);
        let r = fleet.report();
        assert_eq!((r.revision, r.result, r.running, r.errors.len()), (4, Outcome::Refused, 3, 1));
        let view = fleet.view();
        assert!(view.drift && view.refused.as_ref().unwrap().revision == 4, "{view:?}");
        fleet.now_running(5, Arc::from("routes: []\n"));
        fleet.seen(5);
        let view = fleet.view();
        assert!(!view.drift && view.refused.is_none(), "{view:?}");
        assert_eq!(fleet.report().result, Outcome::Applied);
    }

    #[test]
    fn only_a_file_with_config_source_is_a_bootstrap_file() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.yaml");
        std::fs::write(&plain, "listen: [\"127.0.0.1:1\"]\nroutes: []\n").unwrap();
        assert!(!configured(&plain));
        assert!(!configured(&dir.path().join("missing.yaml")));
        let boot = dir.path().join("b.yaml");
        std::fs::write(&boot, "config_source: {}\n").unwrap();
        assert!(configured(&boot));
    }
}
