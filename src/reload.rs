//! What triggers a configuration reload besides the admin endpoint: `SIGHUP` (Pingora traps
//! QUIT, TERM and INT, not HUP) and, with `server.watch_config`, a change to the config file or
//! any file it names (ARCHITECTURE.md §7.1). The reload itself is whatever implements
//! [`Reload`] (the runtime): the triggers hold that, not the process's whole state.
//!
//! The watcher polls rather than subscribing to inotify: inotify misses bind-mounted single
//! files and the symlink swaps of Kubernetes ConfigMaps, and a stat of a handful of files every
//! 250 ms costs nothing. A change is applied only once the files have stopped changing for two
//! polls, so an editor's rename-into-place or a copy in progress is read whole; a file read
//! mid-write that does not validate is refused like any bad edit (the old config keeps
//! serving) and the finished write, a change of its own, is applied next.

use crate::config::FileDigest;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the watched files are looked at.
const POLL: Duration = Duration::from_millis(250);
/// Polls the files must stay unchanged before a change is applied.
const SETTLE_POLLS: u32 = 2;
/// Every this many polls the contents are hashed too, in case a change kept size and mtime.
const HASH_EVERY: u32 = 20;

/// What a reload trigger needs of the process: to reload, and to see which files the
/// configuration in force was read from.
#[async_trait]
pub(crate) trait Reload: Send + Sync {
    /// Reload the config file; the new generation, or every reason it was refused.
    async fn reload(&self, trigger: &'static str) -> Result<u64, Vec<String>>;

    /// The configuration in force, as the file watcher sees it.
    fn in_force(&self) -> InForce;
}

/// The configuration in force, as the file watcher sees it.
#[derive(Debug, Clone)]
pub(crate) struct InForce {
    /// Its generation.
    pub(crate) generation: u64,
    /// `server.watch_config`.
    pub(crate) watch_config: bool,
    /// The config file.
    pub(crate) path: PathBuf,
    /// The config file and every file it names, with the digests they were read with.
    pub(crate) files: Vec<FileDigest>,
}

/// Catch SIGHUP from the start, so a signal sent during start-up (or while an upgrade waits for
/// the old process's sockets) does not terminate the process, its default action; until
/// [`HangupReload`] runs, such a signal only sets a flag nobody reads.
pub(crate) fn catch_hangups_early() {
    let _ =
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::new(std::sync::atomic::AtomicBool::new(false)));
}

/// Reloads on `SIGHUP`.
pub(crate) struct HangupReload {
    reloader: Arc<dyn Reload>,
}

impl HangupReload {
    /// Reload through `reloader` on every `SIGHUP`.
    pub(crate) fn new(reloader: Arc<dyn Reload>) -> Self {
        HangupReload { reloader }
    }
}

#[async_trait]
impl BackgroundService for HangupReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => {
                log::info!("SIGHUP reloads the configuration");
                s
            }
            Err(e) => {
                log::error!("cannot catch SIGHUP ({e}); reload with `POST /config/reload` instead");
                return;
            }
        };
        loop {
            tokio::select! {
                got = hangups.recv() => {
                    if got.is_none() {
                        return;
                    }
                    log::info!("SIGHUP: reloading the configuration");
                    let _ = self.reloader.reload("SIGHUP").await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// What a file looks like from the outside: changes when it is written or replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stamp {
    Missing,
    Present { len: u64, modified_ns: i128, inode: u64 },
}

fn stamp(path: &Path) -> Stamp {
    match std::fs::metadata(path) {
        Ok(m) => Stamp::Present {
            len: m.len(),
            modified_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            inode: m.ino(),
        },
        Err(_) => Stamp::Missing,
    }
}

/// Reloads when the config file or a file it names changes (`server.watch_config`).
pub(crate) struct ConfigWatcher {
    reloader: Arc<dyn Reload>,
}

impl ConfigWatcher {
    /// Watch the files of the configuration in force, reloading through `reloader`.
    pub(crate) fn new(reloader: Arc<dyn Reload>) -> Self {
        ConfigWatcher { reloader }
    }
}

/// The watcher's view of one generation's files.
struct Watched {
    generation: u64,
    files: Vec<FileDigest>,
    stamps: Vec<Stamp>,
    /// These contents were tried already (a refused edit is not retried every poll).
    tried: bool,
}

#[async_trait]
impl BackgroundService for ConfigWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut watched: Option<Watched> = None;
        let mut unchanged_polls = 0u32;
        let mut changing = false;
        let mut polls = 0u32;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => return,
            }
            let in_force = self.reloader.in_force();
            if !in_force.watch_config {
                watched = None;
                continue;
            }
            let w = match watched.as_mut().filter(|w| w.generation == in_force.generation) {
                Some(w) => w,
                None => {
                    let files = in_force.files.clone();
                    let stamps = files.iter().map(|f| stamp(&f.path)).collect();
                    // A change made while the generation was being loaded is caught by the
                    // first content check once the files have settled.
                    changing = true;
                    unchanged_polls = 0;
                    watched.insert(Watched { generation: in_force.generation, files, stamps, tried: false })
                }
            };
            polls = polls.wrapping_add(1);
            let stamps: Vec<Stamp> = w.files.iter().map(|f| stamp(&f.path)).collect();
            if stamps != w.stamps {
                // Still being written (or just replaced): wait until it settles.
                w.stamps = stamps;
                w.tried = false;
                changing = true;
                unchanged_polls = 0;
                continue;
            }
            unchanged_polls = unchanged_polls.saturating_add(1);
            let settled = changing && unchanged_polls >= SETTLE_POLLS;
            if !(settled || polls % HASH_EVERY == 0) || w.tried {
                continue;
            }
            changing = false;
            if !FileDigest::any_changed(&w.files) {
                continue;
            }
            w.tried = true;
            log::info!("watch_config: {} (or a file it names) changed; reloading", in_force.path.display());
            let _ = self.reloader.reload("watch_config").await;
        }
    }
}
