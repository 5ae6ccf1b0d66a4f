//! What every NATS user in Siger shares (the jobs publisher, the fleet's config store): the
//! server list and credentials of the `nats` section, and JetStream key-value buckets.
//!
//! A bucket is a stream laid out as JetStream key-value buckets are (`KV_<bucket>` over
//! `$KV.<bucket>.>`, `history` values per key, rollups allowed, deletes denied, direct gets).
//! The client's own bucket creation first asks for account details that a 2.9 server answers in
//! a form async-nats 0.51 cannot read, so [`open_or_create_bucket`] falls back to creating that
//! stream itself; every later operation (get, put, compare-and-set, watch, history) is the
//! client's.

use async_nats::jetstream::context::Context;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
use async_nats::{ConnectOptions, ServerAddr};
use std::path::Path;
use std::time::Duration;

/// Server list from `nats.url` (comma separated).
pub(crate) fn server_addrs(url: &str) -> Result<Vec<ServerAddr>, String> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.parse::<ServerAddr>().map_err(|e| format!("nats.url `{u}`: {e}")))
        .collect()
}

/// `nats.url` for logs: credentials in the URL (`nats://user:pass@host`) are masked.
pub(crate) fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|u| {
            let u = u.trim();
            match (u.find("://"), u.rfind('@')) {
                (Some(s), Some(at)) if at > s => format!("{}***{}", &u[..s + 3], &u[at..]),
                _ => u.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Connect options carrying the `nats` section's credentials (a `.creds` file, a token or a
/// user and password); each user adds its own timeouts and callbacks.
pub(crate) async fn credentials(
    credentials_file: Option<&Path>,
    token: Option<&str>,
    user_password: Option<&(String, String)>,
) -> Result<ConnectOptions, String> {
    let mut options = match credentials_file {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| format!("nats.credentials_file {}: {e}", path.display()))?,
        None => ConnectOptions::new(),
    };
    if let Some(token) = token {
        options = options.token(token.to_string());
    }
    if let Some((user, password)) = user_password {
        options = options.user_and_password(user.clone(), password.clone());
    }
    Ok(options)
}

/// The shape of a key-value bucket Siger owns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BucketLayout {
    /// Bucket name (`[A-Za-z0-9_-]+`).
    pub(crate) bucket: String,
    /// What the bucket holds, for whoever lists the server's streams.
    pub(crate) description: String,
    /// Values kept per key (1 = only the latest; at most 64).
    pub(crate) history: i64,
    /// How long a value is kept (zero: for ever).
    pub(crate) max_age: Duration,
    /// Where the stream stores.
    pub(crate) storage: StorageType,
    /// Copies in a JetStream cluster.
    pub(crate) replicas: usize,
}

impl BucketLayout {
    /// The stream behind the bucket, as the client's own bucket creation would make it.
    pub(crate) fn stream_config(&self) -> Config {
        let bucket = &self.bucket;
        Config {
            name: format!("KV_{bucket}"),
            description: Some(self.description.clone()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: self.history,
            max_bytes: -1,
            max_messages: -1,
            max_age: self.max_age,
            storage: self.storage,
            num_replicas: self.replicas,
            discard: DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            ..Config::default()
        }
    }

    /// The client's bucket config for the same layout.
    fn kv_config(&self) -> kv::Config {
        kv::Config {
            bucket: self.bucket.clone(),
            description: self.description.clone(),
            history: self.history,
            max_age: self.max_age,
            storage: self.storage,
            num_replicas: self.replicas,
            max_bytes: -1,
            max_value_size: -1,
            ..kv::Config::default()
        }
    }

    /// How an existing bucket's stream differs from this layout in what Siger relies on
    /// (empty when it matches). Reported, never "fixed": resizing a live bucket is an
    /// operator's decision.
    pub(crate) fn differences(&self, have: &Config) -> Vec<String> {
        let mut out = Vec::new();
        if have.max_messages_per_subject != self.history {
            out.push(format!("history is {} (config: {})", have.max_messages_per_subject, self.history));
        }
        if have.num_replicas.max(1) != self.replicas {
            out.push(format!("replicas is {} (config: {})", have.num_replicas.max(1), self.replicas));
        }
        out
    }
}

/// What [`open_or_create_bucket`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BucketOpened {
    /// The bucket was there (the differences from the layout, empty when none).
    Found(Vec<String>),
    /// It was missing and has been created.
    Created,
}

/// Find the bucket, creating it when missing: with the client's bucket creation, else (a server
/// whose account answer the client cannot read) the stream directly. Another process may create
/// it at the same moment: then theirs is used.
pub(crate) async fn open_or_create_bucket(
    js: &Context,
    layout: &BucketLayout,
) -> Result<(kv::Store, BucketOpened), String> {
    if let Ok(store) = js.get_key_value(&layout.bucket).await {
        let diff = layout.differences(&store.stream.cached_info().config);
        return Ok((store, BucketOpened::Found(diff)));
    }
    let created = match js.create_key_value(layout.kv_config()).await {
        Ok(_) => Ok(()),
        Err(client) => js.create_stream(layout.stream_config()).await.map(|_| ()).map_err(|e| {
            format!("cannot create the bucket `{}`: {e} (the client's creation said: {client})", layout.bucket)
        }),
    };
    match js.get_key_value(&layout.bucket).await {
        Ok(store) if created.is_ok() => Ok((store, BucketOpened::Created)),
        Ok(store) => {
            let diff = layout.differences(&store.stream.cached_info().config);
            Ok((store, BucketOpened::Found(diff)))
        }
        Err(e) => Err(created.err().unwrap_or_else(|| format!("cannot open the bucket `{}`: {e}", layout.bucket))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_masked() {
        assert_eq!(redact("nats://u:p@a:4222, nats://b:4222"), "nats://***@a:4222,nats://b:4222");
        assert_eq!(redact("tls://tok@h"), "tls://***@h");
    }

    #[test]
    fn server_list() {
        assert_eq!(server_addrs("nats://a:4222, nats://b:4223").expect("ok").len(), 2);
        assert!(server_addrs("nats://a:notaport").is_err());
    }

    fn layout() -> BucketLayout {
        BucketLayout {
            bucket: "siger-config".into(),
            description: "test".into(),
            history: 20,
            max_age: Duration::ZERO,
            storage: StorageType::File,
            replicas: 3,
        }
    }

    #[test]
    fn a_bucket_is_laid_out_as_the_client_lays_it_out() {
        let c = layout().stream_config();
        assert_eq!(c.name, "KV_siger-config");
        assert_eq!(c.subjects, ["$KV.siger-config.>"]);
        assert_eq!((c.max_messages_per_subject, c.num_replicas), (20, 3));
        assert!(c.allow_rollup && c.deny_delete && c.allow_direct && !c.deny_purge);
        assert_eq!(c.discard, DiscardPolicy::New);
        assert!(layout().differences(&c).is_empty());
    }

    #[test]
    fn a_different_bucket_is_named_not_changed() {
        let mut have = layout().stream_config();
        have.max_messages_per_subject = 5;
        have.num_replicas = 1;
        assert_eq!(layout().differences(&have), ["history is 5 (config: 20)", "replicas is 1 (config: 3)"]);
    }
}
