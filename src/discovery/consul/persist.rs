//! The last known good instances of one Consul-backed service, on disk.
//!
//! Written after every change Consul reports (an empty set included: that is what Consul
//! said), atomically — a temporary file in the same directory, fsync, rename, fsync of the
//! directory — so a crash leaves either the old or the new file, never a torn one. Read once
//! at start-up, so a gateway started while Consul is down still routes.
//!
//! The file records what it answers (Consul service, tags, datacenter); a file written for a
//! different query (the config changed) is ignored rather than routing to the wrong set.

use crate::config::{ConsulDiscovery, Target};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const FORMAT_VERSION: u32 = 1;

/// Why a state file could not be used or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PersistError {
    /// Reading, writing or renaming failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not JSON of the expected shape.
    #[error("{path}: not a Siger state file ({reason})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Decoder message.
        reason: String,
    },
    /// Written for another Consul query.
    #[error("{path}: saved for {saved}, but the config now asks for {wanted}; ignoring it")]
    OtherQuery {
        /// The file.
        path: PathBuf,
        /// What the file answers.
        saved: String,
        /// What the config asks.
        wanted: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    service: String,
    tags: Vec<String>,
    datacenter: Option<String>,
    saved_at: String,
    instances: Vec<Instance>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Instance {
    addr: std::net::SocketAddr,
    weight: u32,
}

/// The state file of one service.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    path: PathBuf,
    service: String,
    tags: Vec<String>,
    datacenter: Option<String>,
}

/// A file name from a service name: path-safe characters only, so a name can never point
/// outside `state_dir`.
fn file_name(service: &str) -> String {
    let safe: String =
        service.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("{safe}.json")
}

impl Store {
    /// The file for Siger service `name` (discovered as `query`) under `dir`.
    pub(crate) fn new(dir: &Path, name: &str, query: &ConsulDiscovery, datacenter: Option<&str>) -> Self {
        let mut tags = query.tags.clone();
        tags.sort();
        tags.dedup();
        Store {
            path: dir.join(file_name(name)),
            service: query.service.clone(),
            tags,
            datacenter: datacenter.map(str::to_string),
        }
    }

    fn describe(service: &str, tags: &[String], dc: &Option<String>) -> String {
        format!("service `{service}` tags {tags:?} dc {}", dc.as_deref().unwrap_or("(agent's)"))
    }

    /// Where the file lives.
    #[cfg(test)]
    fn path(&self) -> &Path {
        &self.path
    }

    /// The saved instances; `Ok(None)` when there is no file yet.
    pub(crate) fn load(&self) -> Result<Option<Vec<Target>>, PersistError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PersistError::Io { path: self.path.clone(), source }),
        };
        let file: StateFile = serde_json::from_slice(&bytes)
            .map_err(|e| PersistError::Corrupt { path: self.path.clone(), reason: e.to_string() })?;
        if file.version != FORMAT_VERSION {
            return Err(PersistError::Corrupt {
                path: self.path.clone(),
                reason: format!("format version {} (expected {FORMAT_VERSION})", file.version),
            });
        }
        let mut tags = file.tags.clone();
        tags.sort();
        tags.dedup();
        if file.service != self.service || tags != self.tags || file.datacenter != self.datacenter {
            return Err(PersistError::OtherQuery {
                path: self.path.clone(),
                saved: Self::describe(&file.service, &tags, &file.datacenter),
                wanted: Self::describe(&self.service, &self.tags, &self.datacenter),
            });
        }
        Ok(Some(file.instances.into_iter().map(|i| Target { addr: i.addr, weight: i.weight.max(1) }).collect()))
    }

    /// Replace the file with `targets`, atomically.
    pub(crate) fn save(&self, targets: &[Target]) -> Result<(), PersistError> {
        let saved_at =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let file = StateFile {
            version: FORMAT_VERSION,
            service: self.service.clone(),
            tags: self.tags.clone(),
            datacenter: self.datacenter.clone(),
            saved_at,
            instances: targets.iter().map(|t| Instance { addr: t.addr, weight: t.weight }).collect(),
        };
        let mut body = serde_json::to_vec_pretty(&file)
            .map_err(|e| PersistError::Corrupt { path: self.path.clone(), reason: e.to_string() })?;
        body.push(b'\n');
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PersistError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // Unique per process: during an upgrade the old and the new process may both write.
        // Unique per save: a watch replaced by a reload may still be saving when its successor
        // saves, and two writers must never share a temporary file.
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.path.with_extension(format!("json.tmp.{}.{n}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&body).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
            std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
            // Make the rename itself durable.
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(service: &str, tags: &[&str]) -> ConsulDiscovery {
        ConsulDiscovery { service: service.into(), tags: tags.iter().map(|t| t.to_string()).collect() }
    }

    fn t(port: u16, weight: u32) -> Target {
        Target { addr: format!("10.0.0.1:{port}").parse().expect("addr"), weight }
    }

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::new(dir.path(), "users", &query("user-service", &["v1"]), Some("dc1"));
        assert!(store.load().expect("no file is fine").is_none());
        store.save(&[t(1, 1), t(2, 3)]).expect("save");
        assert_eq!(store.load().expect("load"), Some(vec![t(1, 1), t(2, 3)]));
        store.save(&[]).expect("an empty answer is saved too");
        assert_eq!(store.load().expect("load"), Some(vec![]));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_file_for_another_query_is_ignored() {
        let dir = tempfile::tempdir().expect("dir");
        Store::new(dir.path(), "users", &query("user-service", &["v1"]), None).save(&[t(1, 1)]).expect("save");
        let other_tags = Store::new(dir.path(), "users", &query("user-service", &["v2"]), None);
        assert!(matches!(other_tags.load(), Err(PersistError::OtherQuery { .. })));
        let same_tags_reordered = Store::new(dir.path(), "users", &query("user-service", &["v1", "v1"]), None);
        assert!(same_tags_reordered.load().expect("same query").is_some());
        let other_dc = Store::new(dir.path(), "users", &query("user-service", &["v1"]), Some("dc2"));
        assert!(other_dc.load().is_err());
    }

    #[test]
    fn corrupt_files_are_reported_not_trusted() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::new(dir.path(), "a/../b", &query("s", &[]), None);
        assert_eq!(store.path(), dir.path().join("a____b.json"), "names cannot escape the directory");
        std::fs::write(store.path(), b"{not json").expect("write");
        assert!(matches!(store.load(), Err(PersistError::Corrupt { .. })));
    }
}
