//! `config_source.cache_file`: the last revision this gateway applied, kept on its disk so it
//! can start while the store is unreachable (a control plane that is down must not keep data
//! planes down).
//!
//! Written atomically: a temporary file in the same directory (mode 0600: the document may hold
//! secrets), flushed to disk, renamed over the old one, and the directory flushed, so a crash at
//! any moment leaves either the old or the new revision, never a mix. Read back with its SHA-256
//! checked, so a damaged file is refused rather than half-applied.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write as _;
use std::path::Path;

/// The largest cache file read back (a document is at most 4 MiB; JSON may escape some of it).
const MAX_CACHE_BYTES: u64 = 3 * crate::config::MAX_CONFIG_BYTES;

/// What the cache file holds (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedRevision {
    /// The bucket the revision came from.
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// The revision.
    pub revision: u64,
    /// When it was applied (RFC 3339).
    pub applied_at: String,
    /// SHA-256 (hex) of `document`.
    pub sha256: String,
    /// The stored document, as pushed.
    pub document: String,
}

impl CachedRevision {
    /// The cache entry for a revision applied now.
    pub fn new(bucket: &str, key: &str, revision: u64, document: &str) -> Self {
        CachedRevision {
            bucket: bucket.into(),
            key: key.into(),
            revision,
            applied_at: super::status::now_rfc3339(),
            sha256: hex::encode(Sha256::digest(document.as_bytes())),
            document: document.into(),
        }
    }
}

/// Replace the cache file with `cached`, atomically and durably.
pub fn write(path: &Path, cached: &CachedRevision) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the cache file has no name"))?;
    let temp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let body = serde_json::to_vec(cached).map_err(std::io::Error::other)?;
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        file.write_all(&body)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// The cached revision, or why there is none usable (missing, unreadable, damaged).
pub fn read(path: &Path) -> Result<CachedRevision, String> {
    let shown = path.display();
    let size = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?.len();
    if size > MAX_CACHE_BYTES {
        return Err(format!("{shown} has {size} bytes, more than a cached configuration can"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let cached: CachedRevision =
        serde_json::from_slice(&bytes).map_err(|e| format!("{shown} is not a configuration cache: {e}"))?;
    let digest = hex::encode(Sha256::digest(cached.document.as_bytes()));
    if digest != cached.sha256 {
        return Err(format!("{shown} is damaged: its document does not match its SHA-256"));
    }
    Ok(cached)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_written_revision_reads_back_and_replaces_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        write(&path, &CachedRevision::new("cfg", "gw", 3, "routes: []\n")).unwrap();
        write(&path, &CachedRevision::new("cfg", "gw", 4, "routes: [] # four\n")).unwrap();
        let back = read(&path).unwrap();
        assert_eq!((back.revision, back.document.as_str()), (4, "routes: [] # four\n"));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["cache.json"], "no temporary file is left behind");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn a_missing_or_damaged_cache_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        assert!(read(&path).unwrap_err().contains("cannot read"));
        std::fs::write(&path, "{not json").unwrap();
        assert!(read(&path).unwrap_err().contains("not a configuration cache"));
        let mut cached = CachedRevision::new("cfg", "gw", 3, "routes: []\n");
        cached.document.push_str("services: {}\n");
        std::fs::write(&path, serde_json::to_vec(&cached).unwrap()).unwrap();
        assert!(read(&path).unwrap_err().contains("damaged"));
    }

    #[test]
    fn a_failed_write_leaves_the_old_revision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        write(&path, &CachedRevision::new("cfg", "gw", 3, "routes: []\n")).unwrap();
        // A directory where the temporary file would go makes the write fail.
        std::fs::create_dir(dir.path().join(format!(".cache.json.{}.tmp", std::process::id()))).unwrap();
        assert!(write(&path, &CachedRevision::new("cfg", "gw", 4, "x: 1\n")).is_err());
        assert_eq!(read(&path).unwrap().revision, 3);
    }
}
