//! API keys for partners (ARCHITECTURE.md §7.5): a header carries the key; the keys file holds
//! only their SHA-256 (hex), each with the consumer it names and its roles. The consumer is the
//! caller's identity (`sub`): rate limits keyed by `consumer`, the access log and `X-Consumer`
//! upstream.
//!
//! Lookup: the key's SHA-256 picks a bucket by its first 8 bytes and is compared with the
//! bucket's digests in full in constant time, so timing tells nothing about a stored digest
//! beyond the bucket (and a digest reveals nothing about a key).

use super::{Identity, Rejection};
use crate::config::{ApiKeySettings, Findings};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The header consumers are forwarded in.
pub(crate) use crate::config::CONSUMER_HEADER;

/// Longest key accepted (generated keys are 47 bytes).
const MAX_KEY_BYTES: usize = 512;

/// One line of the keys file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    sha256: String,
    consumer: String,
    #[serde(default)]
    roles: Vec<String>,
    /// The consumer's plan (checked against `plans` where the file is loaded).
    plan: Option<String>,
    /// The consumer's tenant (`$tenant`).
    tenant: Option<String>,
}

/// Keys by the first 8 bytes of their digest: (full digest, the consumer's identity).
type Buckets = HashMap<[u8; 8], Vec<([u8; 32], Arc<Identity>)>>;

/// The keys of a keys file, ready for lookups.
pub struct ApiKeyTable {
    buckets: Buckets,
    /// sha256 of the file as read.
    file_digest: [u8; 32],
    /// Number of keys.
    pub len: usize,
    /// The plans entries name: (entry number, plan).
    plans: Vec<(usize, Arc<str>)>,
}

impl fmt::Debug for ApiKeyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeyTable({} keys)", self.len)
    }
}

impl PartialEq for ApiKeyTable {
    fn eq(&self, other: &Self) -> bool {
        self.file_digest == other.file_digest
    }
}

impl ApiKeyTable {
    /// The table of `auth.api_keys.file`, as the config read it; problems are reported under
    /// its key (an empty table is a warning: every key is refused).
    pub(crate) fn load(settings: &ApiKeySettings, findings: &mut Findings) -> Option<Self> {
        let file = &settings.file;
        match Self::parse(&file.bytes) {
            Ok(table) => {
                if table.len == 0 {
                    findings.warn(&file.key, format!("{} lists no keys: every API key is refused", file.shown()));
                }
                Some(table)
            }
            Err(e) => {
                findings.error(&file.key, format!("{}: {e}", file.shown()));
                None
            }
        }
    }

    /// Parse a keys file: a YAML list of `{sha256, consumer, roles}`. Errors name the entry.
    pub(crate) fn parse(text: &[u8]) -> Result<Self, String> {
        let entries: Vec<RawEntry> = if text.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else {
            serde_yaml::from_slice(text)
                .map_err(|e| format!("not a list of {{sha256, consumer, roles, plan, tenant}}: {e}"))?
        };
        let mut buckets = Buckets::new();
        let mut plans = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let mut digest = [0u8; 32];
            if hex::decode_to_slice(entry.sha256.trim(), &mut digest).is_err() {
                return Err(format!("entry {i}: `sha256` must be 64 hex digits (the SHA-256 of the key)"));
            }
            let consumer = entry.consumer.trim();
            let Ok(value) = HeaderValue::from_str(consumer) else {
                return Err(format!("entry {i}: `consumer` must be printable text"));
            };
            if consumer.is_empty() || consumer.len() > 128 {
                return Err(format!("entry {i}: `consumer` must be 1 to 128 characters"));
            }
            if consumer.starts_with("telegram:") {
                return Err(format!(
                    "entry {i}: `consumer` names starting `telegram:` are Telegram users' (docs/plans.md)"
                ));
            }
            if let Some(tenant) = entry.tenant.as_deref().filter(|t| !crate::config::is_plan_or_tenant_name(t)) {
                return Err(format!(
                    "entry {i}: `tenant` `{tenant}` is not a tenant name (1 to 64 of A-Z a-z 0-9 . _ -)"
                ));
            }
            let plan: Option<Arc<str>> = entry.plan.as_deref().map(Arc::from);
            if let Some(plan) = &plan {
                plans.push((i, plan.clone()));
            }
            let bucket = buckets.entry(prefix(&digest)).or_default();
            if bucket.iter().any(|(d, _)| *d == digest) {
                return Err(format!("entry {i}: this key is listed twice"));
            }
            let mut claims = Map::new();
            claims.insert("sub".into(), Value::String(consumer.to_string()));
            claims.insert("consumer".into(), Value::String(consumer.to_string()));
            claims.insert("roles".into(), Value::Array(entry.roles.iter().cloned().map(Value::String).collect()));
            let identity = Identity {
                scheme: super::Scheme::ApiKey,
                sub: Some(consumer.to_string()),
                roles: entry.roles.clone(),
                claims,
                forward: vec![(CONSUMER_HEADER, value)],
                plan,
                tenant: entry.tenant.as_deref().map(Arc::from),
            };
            bucket.push((digest, Arc::new(identity)));
        }
        Ok(ApiKeyTable { buckets, file_digest: Sha256::digest(text).into(), len: entries.len(), plans })
    }

    /// The plans the entries name, with their entry numbers (`-t` checks them against `plans`).
    pub(crate) fn named_plans(&self) -> &[(usize, Arc<str>)] {
        &self.plans
    }

    /// The consumer of the key in `header`; `Ok(None)` when the request has none.
    pub(crate) fn authenticate(
        &self,
        headers: &HeaderMap,
        header: &HeaderName,
    ) -> Result<Option<Arc<Identity>>, Rejection> {
        let mut values = headers.get_all(header).iter();
        let Some(key) = values.next() else { return Ok(None) };
        if values.next().is_some() {
            return Err(Rejection::MultipleHeaders);
        }
        let key = key.as_bytes().trim_ascii();
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(Rejection::UnknownApiKey);
        }
        let digest: [u8; 32] = Sha256::digest(key).into();
        let found = self.buckets.get(&prefix(&digest)).and_then(|bucket| {
            let mut found = None;
            for (stored, identity) in bucket {
                if bool::from(stored.ct_eq(&digest)) {
                    found = Some(identity.clone());
                }
            }
            found
        });
        found.map(Some).ok_or(Rejection::UnknownApiKey)
    }
}

fn prefix(digest: &[u8; 32]) -> [u8; 8] {
    let mut p = [0u8; 8];
    p.copy_from_slice(&digest[..8]);
    p
}

/// A new random key and its keys-file entry (`siger apikey`).
pub fn new_key(consumer: &str, roles: &[String]) -> (String, String) {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    let key = format!("sk_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    let consumer_yaml = serde_json::to_string(consumer).unwrap_or_default();
    let roles_yaml = serde_json::to_string(roles).unwrap_or_else(|_| "[]".into());
    (key, format!("- {{sha256: {digest}, consumer: {consumer_yaml}, roles: {roles_yaml}}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HeaderName::from_bytes(name.as_bytes()).expect("name"), v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn a_generated_key_and_its_entry_authenticate_the_consumer() {
        let (key, entry) = new_key("acme partner", &["partner".into()]);
        let (other, other_entry) = new_key("globex", &[]);
        let table = ApiKeyTable::parse(format!("{entry}\n{other_entry}\n").as_bytes()).expect("parses");
        assert_eq!(table.len, 2);
        let header = HeaderName::from_static("x-api-key");
        let id = table.authenticate(&headers("x-api-key", &[&key]), &header).expect("ok").expect("some");
        assert_eq!(id.sub.as_deref(), Some("acme partner"));
        assert_eq!(id.roles, vec!["partner".to_string()]);
        assert_eq!(id.forward, vec![(CONSUMER_HEADER, HeaderValue::from_static("acme partner"))]);
        let id = table.authenticate(&headers("x-api-key", &[&other]), &header).expect("ok").expect("some");
        assert_eq!(id.sub.as_deref(), Some("globex"));
        assert!(matches!(table.authenticate(&HeaderMap::new(), &header), Ok(None)));
        assert_eq!(
            table.authenticate(&headers("x-api-key", &["sk_nope"]), &header).err(),
            Some(Rejection::UnknownApiKey)
        );
        assert_eq!(
            table.authenticate(&headers("x-api-key", &[&key, &key]), &header).err(),
            Some(Rejection::MultipleHeaders)
        );
    }

    #[test]
    fn bad_files_name_the_entry() {
        assert!(ApiKeyTable::parse(b"").expect("empty is no keys").len == 0);
        let e = ApiKeyTable::parse(b"- {sha256: abc, consumer: a}").expect_err("error");
        assert!(e.contains("entry 0") && e.contains("64 hex"), "{e}");
        let d = "a".repeat(64);
        let e =
            ApiKeyTable::parse(format!("- {{sha256: {d}, consumer: a}}\n- {{sha256: {d}, consumer: b}}").as_bytes())
                .expect_err("error");
        assert!(e.contains("entry 1") && e.contains("twice"), "{e}");
        let e = ApiKeyTable::parse(b"- {sha256: x, consumer: a, extra: 1}").expect_err("error");
        assert!(e.contains("extra"), "{e}");
        let e = ApiKeyTable::parse(format!("- {{sha256: {d}, consumer: a, tenant: \"a b\"}}").as_bytes())
            .expect_err("error");
        assert!(e.contains("entry 0") && e.contains("not a tenant name"), "{e}");
        let e =
            ApiKeyTable::parse(format!("- {{sha256: {d}, consumer: \"telegram:1\"}}").as_bytes()).expect_err("error");
        assert!(e.contains("entry 0") && e.contains("Telegram"), "{e}");
    }

    #[test]
    fn entries_name_their_plan_and_tenant() {
        let (key, entry) = new_key("acme", &[]);
        let entry = entry.replace('}', ", plan: pro, tenant: acme-corp}");
        let table = ApiKeyTable::parse(format!("{entry}\n").as_bytes()).expect("parses");
        assert_eq!(table.named_plans(), [(0, Arc::from("pro"))]);
        let header = HeaderName::from_static("x-api-key");
        let id = table.authenticate(&headers("x-api-key", &[&key]), &header).expect("ok").expect("some");
        assert_eq!((id.plan.as_deref(), id.tenant.as_deref()), (Some("pro"), Some("acme-corp")));
    }
}
