//! `config_source`: where a fleet's configuration comes from (ARCHITECTURE §8.6), as plain data.
//!
//! ```yaml
//! config_source:
//!   nats_kv: {bucket: siger-config, key: gateway}   # uses the `nats` connection
//!   cache_file: /var/lib/siger/config-cache.json     # the last applied revision
//! ```
//!
//! The bootstrap file (the one a gateway starts with) keeps [`BOOTSTRAP_KEYS`]; the store holds
//! every other key as one YAML document per revision. [`ConfigSourceSettings::problems`] is
//! what `-t` checks of this section (key, message), ready for the loader to place on lines.

use serde::Deserialize;
use std::path::PathBuf;

/// The top-level keys that stay in the bootstrap file: what a process needs before it can
/// reach the store (and what a new revision can never change without a restart).
pub const BOOTSTRAP_KEYS: &[&str] = &["server", "listen", "admin", "nats", "config_source"];

/// Values of a key the bucket keeps, when `nats_kv.history` is not given.
pub const DEFAULT_HISTORY: u8 = 20;
/// The most values per key JetStream key-value buckets keep.
pub const MAX_HISTORY: u8 = 64;
/// Key-value keys Siger writes for each gateway: `<key>.status.<gateway-id>`.
pub const STATUS_INFIX: &str = ".status.";

/// `config_source`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSourceSettings {
    /// The key-value store holding the configuration.
    pub nats_kv: NatsKvSource,
    /// Where the last applied revision is kept, for a start-up while the store is unreachable.
    pub cache_file: PathBuf,
    /// This gateway's name in the store's status keys (default: the host name).
    #[serde(default)]
    pub gateway_id: Option<String>,
}

/// `config_source.nats_kv`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsKvSource {
    /// Bucket name (`[A-Za-z0-9_-]+`); created when missing.
    pub bucket: String,
    /// The key whose value is the configuration document.
    pub key: String,
    /// Revisions the bucket keeps per key, for `siger config history` and rollbacks
    /// (applies when the bucket is created).
    #[serde(default = "default_history")]
    pub history: u8,
    /// Copies of the bucket in a JetStream cluster (applies when the bucket is created).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
}

fn default_history() -> u8 {
    DEFAULT_HISTORY
}

fn default_replicas() -> usize {
    1
}

impl ConfigSourceSettings {
    /// Everything wrong with the section alone, as (key path, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let kv = &self.nats_kv;
        let valid_bucket =
            !kv.bucket.is_empty() && kv.bucket.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_bucket {
            out.push((
                "config_source.nats_kv.bucket".into(),
                format!("`{}` is not a bucket name: letters, digits, `-` and `_` only", kv.bucket),
            ));
        }
        if let Some(why) = key_problem(&kv.key) {
            out.push(("config_source.nats_kv.key".into(), why));
        }
        if !(1..=MAX_HISTORY).contains(&kv.history) {
            out.push((
                "config_source.nats_kv.history".into(),
                format!("must be from 1 to {MAX_HISTORY} (JetStream keeps at most {MAX_HISTORY} values per key)"),
            ));
        }
        if !(1..=5).contains(&kv.replicas) {
            out.push(("config_source.nats_kv.replicas".into(), "must be from 1 to 5".into()));
        }
        if self.cache_file.as_os_str().is_empty() || self.cache_file.file_name().is_none() {
            out.push(("config_source.cache_file".into(), "must name a file".into()));
        }
        if let Some(id) = &self.gateway_id {
            if id.is_empty() || !id.bytes().all(is_key_byte) || id.contains('.') {
                out.push((
                    "config_source.gateway_id".into(),
                    format!("`{id}` cannot be part of a key: letters, digits, `-`, `_`, `=` and `/` only"),
                ));
            }
        }
        out
    }
}

/// Why `key` cannot name the configuration document (`None` when it can).
fn key_problem(key: &str) -> Option<String> {
    if key.is_empty() || key.starts_with('.') || key.ends_with('.') || key.contains("..") {
        return Some(format!("`{key}` is not a key: empty, or a `.` at its start or end or twice in a row"));
    }
    if !key.bytes().all(is_key_byte) {
        return Some(format!("`{key}` is not a key: letters, digits, `-`, `_`, `=`, `/` and `.` only"));
    }
    if key.contains(STATUS_INFIX) || key.ends_with(".status") {
        return Some(format!("`{key}`: `.status.` is where gateways report; name the document otherwise"));
    }
    None
}

/// A byte a JetStream key-value key may hold.
fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'/' | b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ConfigSourceSettings {
        serde_yaml::from_str(text).expect("valid section")
    }

    #[test]
    fn defaults_and_a_clean_section() {
        let s = parse("nats_kv: {bucket: siger-config, key: gateway}\ncache_file: /var/lib/siger/cache.json\n");
        assert_eq!((s.nats_kv.history, s.nats_kv.replicas), (20, 1));
        assert_eq!(s.gateway_id, None);
        assert!(s.problems().is_empty(), "{:?}", s.problems());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e =
            serde_yaml::from_str::<ConfigSourceSettings>("nats_kv: {bucket: b, key: k, histroy: 3}\ncache_file: /x\n")
                .expect_err("a typo");
        assert!(e.to_string().contains("histroy"), "{e}");
        assert!(serde_yaml::from_str::<ConfigSourceSettings>("nats_kv: {bucket: b, key: k}\n").is_err(), "cache_file");
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let s = parse(
            "nats_kv: {bucket: \"a.b\", key: \"gw.status.x\", history: 65, replicas: 0}\ncache_file: \"/\"\ngateway_id: \"a b\"\n",
        );
        let keys: Vec<String> = s.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "config_source.nats_kv.bucket",
                "config_source.nats_kv.key",
                "config_source.nats_kv.history",
                "config_source.nats_kv.replicas",
                "config_source.cache_file",
                "config_source.gateway_id",
            ]
        );
        for bad in ["", ".a", "a.", "a..b", "a*b", "a b", "gw.status"] {
            assert!(key_problem(bad).is_some(), "{bad:?}");
        }
        for good in ["gateway", "prod/eu.gateway", "a=b_c-d"] {
            assert_eq!(key_problem(good), None, "{good:?}");
        }
    }
}
