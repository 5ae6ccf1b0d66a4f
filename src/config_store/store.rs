//! The store client: one key of a JetStream key-value bucket holds the document, one revision
//! per push; `<key>.status.<gateway-id>` keys hold the gateways' reports.
//!
//! A push is a compare-and-set (`Nats-Expected-Last-Subject-Sequence`: the revision the pusher
//! read) carrying a push id (`Nats-Msg-Id`). When the server's answer is lost (a stream leader
//! killed mid-push), the same message is sent again: the compare-and-set refuses a second copy
//! (the server checks the expected revision before it looks for duplicates), and the push id
//! tells our own earlier write from a concurrent push. So a push succeeds once or fails with a
//! message, never twice silently.

use super::follow::{Cursor, Restart, Resume, Seen, Step};
use super::status::{gateway_of, status_key, GatewayStatus};
use crate::config::{NatsKvSource, NatsSettings};
use crate::nats::{open_or_create_bucket, BucketLayout, BucketOpened};
use async_nats::jetstream::context::{Context, ContextBuilder, PublishErrorKind};
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::DirectGetErrorKind;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// How long one request to the store may take before it is retried or reported.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The same for a gateway's follower, which retries for ever: a request lost in a stream leader
/// election is given up sooner, so the watch restarts soon after the new leader is elected.
const FOLLOW_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a push keeps trying when the store does not confirm it.
pub const PUSH_DEADLINE: Duration = Duration::from_secs(30);
/// How long a read (or opening the bucket) is retried: a stream leader election takes seconds.
pub const STORE_PATIENCE: Duration = Duration::from_secs(20);
/// How often a follower checks that its watch still sees the key's newest revision.
const AUDIT_EVERY: Duration = Duration::from_secs(5);

/// Headers a push carries besides the compare-and-set and the push id.
const PUSHED_BY: &str = "Siger-Pushed-By";
const NOTE: &str = "Siger-Note";
const MSG_ID: &str = "Nats-Msg-Id";

/// A failure to talk to the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Why a push wrote nothing, or may have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Another push moved the key since this one read it: nothing was written.
    #[error(
        "conflict: the store is at revision {now}, not at revision {read} this push was made against (another \
         push came first); nothing was written: look at `siger config diff {read} {now}`, then push again"
    )]
    Conflict {
        /// The revision this push was made against (0: the key had none).
        read: u64,
        /// The key's revision now.
        now: u64,
    },
    /// The store never confirmed the write; it may or may not hold it.
    #[error(
        "the store did not confirm the push within {seconds}s ({last}); it may have been written: \
         `siger config history` shows whether push {push_id} is there"
    )]
    Unconfirmed {
        /// Seconds tried.
        seconds: u64,
        /// The last failure.
        last: String,
        /// The push id (`Nats-Msg-Id` of the message).
        push_id: String,
    },
    /// The store refused or could not be reached.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A revision of the document as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRevision {
    /// Its revision (the bucket stream's sequence).
    pub revision: u64,
    /// The document (empty for a deletion).
    pub document: String,
    /// When it was written.
    pub time: OffsetDateTime,
    /// Who pushed it (`user@host`), when a Siger push wrote it.
    pub pushed_by: Option<String>,
    /// What the push said of itself (`push FILE`, `rollback to N`).
    pub note: Option<String>,
    /// The push id, when a Siger push wrote it.
    pub push_id: Option<String>,
    /// A deletion or purge of the key rather than a document.
    pub deleted: bool,
}

impl StoredRevision {
    fn from_message(m: StreamMessage) -> Result<StoredRevision, StoreError> {
        let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_string());
        let deleted = matches!(header("KV-Operation").as_deref(), Some("DEL" | "PURGE"));
        let document = String::from_utf8(m.payload.to_vec())
            .map_err(|_| StoreError(format!("revision {} is not UTF-8 text", m.sequence)))?;
        Ok(StoredRevision {
            revision: m.sequence,
            document,
            time: m.time,
            pushed_by: header(PUSHED_BY),
            note: header(NOTE),
            push_id: header(MSG_ID),
            deleted,
        })
    }
}

/// A push that the store confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The new revision.
    pub revision: u64,
    /// The store's first answer was lost and the push was confirmed on a retry.
    pub retried: bool,
}

/// What the follower hands to whoever applies revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// A new revision to apply.
    Apply(StoredRevision),
    /// A revision a newer one follows at once (several were pushed while the follower was
    /// away): not applied, the newest is.
    Superseded(u64),
    /// The key was deleted at this revision: the running configuration stays.
    Deleted(u64),
    /// A revision that is no document (written by something else than Siger): refused.
    Unreadable {
        /// The revision.
        revision: u64,
        /// Why it cannot be read.
        why: String,
    },
    /// The history changed (the bucket was made anew, or revisions went backwards); the next
    /// [`Followed::Apply`] is the new history's latest revision.
    NewHistory {
        /// The last revision seen in the old history.
        previous: Option<u64>,
        /// The key's revision in the new one.
        now: Option<u64>,
    },
}

/// A connection to the document's bucket.
#[derive(Debug, Clone)]
pub struct ConfigStore {
    client: async_nats::Client,
    js: Context,
    kv: kv::Store,
    /// `<bucket>`.
    pub bucket: String,
    /// The document's key.
    pub key: String,
    /// How long requests are retried before their failure is reported.
    patience: Duration,
}

/// Run `attempt` until it succeeds or `within` has passed; then its last error.
async fn patiently<T, F, Fut>(within: Duration, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() + pause >= within => return Err(e),
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The bucket layout of a `config_source.nats_kv`.
pub(crate) fn layout(source: &NatsKvSource) -> BucketLayout {
    BucketLayout {
        bucket: source.bucket.clone(),
        description: format!("Siger fleet configuration (key `{}`) and gateway reports", source.key),
        history: i64::from(source.history),
        max_age: Duration::ZERO,
        storage: async_nats::jetstream::stream::StorageType::File,
        replicas: source.replicas,
    }
}

impl ConfigStore {
    /// Connect through the `nats` section and open the bucket; with `create`, make it when
    /// missing (its layout differences, if any, are returned as warnings).
    pub async fn connect(
        nats: &NatsSettings,
        source: &NatsKvSource,
        create: bool,
    ) -> Result<(ConfigStore, Vec<String>), StoreError> {
        Self::connect_timed(nats, source, create, REQUEST_TIMEOUT).await
    }

    /// [`connect`](Self::connect) for a gateway that follows the key (the bucket created when
    /// missing), its requests given up after [`FOLLOW_REQUEST_TIMEOUT`].
    pub async fn connect_to_follow(
        nats: &NatsSettings,
        source: &NatsKvSource,
    ) -> Result<(ConfigStore, Vec<String>), StoreError> {
        Self::connect_timed(nats, source, true, FOLLOW_REQUEST_TIMEOUT).await
    }

    async fn connect_timed(
        nats: &NatsSettings,
        source: &NatsKvSource,
        create: bool,
        request_timeout: Duration,
    ) -> Result<(ConfigStore, Vec<String>), StoreError> {
        let addrs = crate::nats::server_addrs(&nats.url).map_err(StoreError)?;
        let options = crate::nats::credentials(
            nats.credentials_file.as_deref(),
            nats.token.as_deref(),
            nats.user_password.as_ref(),
        )
        .await
        .map_err(StoreError)?;
        let client = options
            .name(format!("siger {} config", env!("CARGO_PKG_VERSION")))
            .connection_timeout(nats.connect_timeout)
            .request_timeout(Some(request_timeout))
            .connect(addrs)
            .await
            .map_err(|e| StoreError(format!("cannot reach NATS at {}: {e}", crate::nats::redact(&nats.url))))?;
        let js = ContextBuilder::new().timeout(request_timeout).build(client.clone());
        let layout = layout(source);
        let (kv, warnings) = if create {
            let opened =
                patiently(STORE_PATIENCE, || async { open_or_create_bucket(&js, &layout).await.map_err(StoreError) });
            let (kv, opened) = opened.await?;
            let warnings = match opened {
                BucketOpened::Found(diff) => {
                    diff.into_iter().map(|d| format!("bucket `{}`: {d}", source.bucket)).collect()
                }
                BucketOpened::Created => Vec::new(),
            };
            (kv, warnings)
        } else {
            let opened = patiently(STORE_PATIENCE, || async {
                js.get_key_value(&source.bucket).await.map_err(|e| {
                    StoreError(format!("bucket `{}` cannot be opened ({e}); nothing was pushed yet?", source.bucket))
                })
            });
            (opened.await?, Vec::new())
        };
        let (bucket, key) = (source.bucket.clone(), source.key.clone());
        let store = ConfigStore { client, js, kv, bucket, key, patience: STORE_PATIENCE };
        Ok((store, warnings))
    }

    /// Retry failed requests for `patience` (default [`STORE_PATIENCE`]) before reporting them;
    /// a follower that has its own retry loop wants less.
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// The subject the document's revisions are published on.
    fn subject(&self) -> String {
        format!("{}{}", self.kv.prefix, self.key)
    }

    /// `<bucket>/<key>`, as messages name the document.
    pub fn name(&self) -> String {
        format!("{}/{}", self.bucket, self.key)
    }

    /// The stream message at `sequence` when it is a revision of the document.
    async fn message(&self, sequence: u64) -> Result<Option<StreamMessage>, StoreError> {
        patiently(self.patience, || async {
            match self.kv.stream.direct_get(sequence).await {
                Ok(m) if m.subject.as_str() == self.subject() => Ok(Some(m)),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
                Err(e) => Err(StoreError(format!("cannot read revision {sequence} of {}: {e}", self.name()))),
            }
        })
        .await
    }

    /// The document's latest revision (`None`: nothing was pushed).
    pub async fn current(&self) -> Result<Option<StoredRevision>, StoreError> {
        let last = patiently(self.patience, || async {
            match self.kv.stream.direct_get_last_for_subject(self.subject()).await {
                Ok(m) => Ok(Some(m)),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
                Err(e) => Err(StoreError(format!("cannot read {}: {e}", self.name()))),
            }
        });
        last.await?.map(StoredRevision::from_message).transpose()
    }

    /// One revision of the document; an error names a revision that is not one of its own or
    /// is older than the bucket keeps.
    pub async fn revision(&self, revision: u64) -> Result<StoredRevision, StoreError> {
        match self.message(revision).await? {
            Some(m) => StoredRevision::from_message(m),
            None => Err(StoreError(format!(
                "{} has no revision {revision} (`siger config history` lists the revisions the bucket keeps)",
                self.name()
            ))),
        }
    }

    /// Every revision the bucket keeps, oldest first.
    pub async fn history(&self) -> Result<Vec<StoredRevision>, StoreError> {
        let revisions = patiently(self.patience, || self.revisions()).await?;
        let mut out = Vec::with_capacity(revisions.len());
        for revision in revisions {
            if let Some(m) = self.message(revision).await? {
                out.push(StoredRevision::from_message(m)?);
            }
        }
        Ok(out)
    }

    /// The revision numbers the bucket keeps for the key.
    async fn revisions(&self) -> Result<Vec<u64>, StoreError> {
        let failed = |e: &dyn std::fmt::Display| StoreError(format!("cannot read the history of {}: {e}", self.name()));
        let mut entries = self.kv.history(&self.key).await.map_err(|e| failed(&e))?;
        let mut revisions = Vec::new();
        while let Some(entry) = tokio::time::timeout(REQUEST_TIMEOUT, entries.next()).await.map_err(|e| failed(&e))? {
            revisions.push(entry.map_err(|e| failed(&e))?.revision);
        }
        Ok(revisions)
    }

    /// Write `document` as the next revision if the key is still at `read` (0: it has none).
    pub async fn push(&self, document: &str, read: u64, note: &str) -> Result<Pushed, PushError> {
        let push_id = uuid::Uuid::now_v7().to_string();
        self.push_as(&push_id, document, read, note, PUSH_DEADLINE).await
    }

    /// [`push`](Self::push) under a push id the caller chose (sending the same push again, e.g.
    /// a retried automation job, confirms the first write rather than making a second), with a
    /// deadline for an unconfirmed write.
    pub async fn push_as(
        &self,
        push_id: &str,
        document: &str,
        read: u64,
        note: &str,
        deadline: Duration,
    ) -> Result<Pushed, PushError> {
        let push_id = push_id.to_string();
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", read.to_string().as_str());
        headers.insert(MSG_ID, push_id.as_str());
        headers.insert(PUSHED_BY, pusher().as_str());
        headers.insert(NOTE, note);
        let payload = Bytes::copy_from_slice(document.as_bytes());
        let started = Instant::now();
        let mut unsure = false;
        let mut pause = Duration::from_millis(100);
        loop {
            let sent = async {
                let ack = self.js.publish_with_headers(self.subject(), headers.clone(), payload.clone()).await?;
                ack.await
            };
            let last = match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
                Ok(Ok(ack)) => return Ok(Pushed { revision: ack.sequence, retried: unsure || ack.duplicate }),
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    // Our own earlier attempt (whose answer was lost, or an earlier send of
                    // the same push) may be what moved the key: the server checks the expected
                    // revision before it looks for a duplicate.
                    if let Some(revision) = self.find_push(&push_id, read).await? {
                        return Ok(Pushed { revision, retried: true });
                    }
                    let now = self.current().await?.map_or(0, |r| r.revision);
                    return Err(PushError::Conflict { read, now });
                }
                Ok(Err(e)) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    return Err(PushError::Store(StoreError(format!(
                        "the document has {} bytes, more than the NATS server accepts in one message (max_payload)",
                        document.len()
                    ))));
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()),
            };
            unsure = true;
            if started.elapsed() + pause >= deadline {
                if let Ok(Some(revision)) = self.find_push(&push_id, read).await {
                    return Ok(Pushed { revision, retried: true });
                }
                return Err(PushError::Unconfirmed { seconds: deadline.as_secs(), last, push_id });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// The revision after `read` that push `push_id` wrote, if the store holds it.
    async fn find_push(&self, push_id: &str, read: u64) -> Result<Option<u64>, StoreError> {
        let history = self.history().await?;
        Ok(history.iter().find(|r| r.revision > read && r.push_id.as_deref() == Some(push_id)).map(|r| r.revision))
    }

    /// Write this gateway's report under its status key.
    pub async fn report(&self, status: &GatewayStatus) -> Result<u64, StoreError> {
        let key = status_key(&self.key, &status.gateway);
        let body = serde_json::to_vec(status).map_err(|e| StoreError(e.to_string()))?;
        let body = Bytes::from(body);
        let put = || async {
            self.kv.put(&key, body.clone()).await.map_err(|e| StoreError(format!("cannot write {key}: {e}")))
        };
        patiently(self.patience, put).await
    }

    /// Every gateway's latest report, by gateway id; a report that does not parse is returned
    /// as an error line naming its key.
    pub async fn statuses(&self) -> Result<(Vec<GatewayStatus>, Vec<String>), StoreError> {
        patiently(self.patience, || self.read_statuses()).await
    }

    async fn read_statuses(&self) -> Result<(Vec<GatewayStatus>, Vec<String>), StoreError> {
        let failed = |e: &dyn std::fmt::Display| StoreError(format!("cannot list the keys of {}: {e}", self.bucket));
        let mut keys = self.kv.keys().await.map_err(|e| failed(&e))?;
        let mut names = Vec::new();
        while let Some(k) = tokio::time::timeout(REQUEST_TIMEOUT, keys.next()).await.map_err(|e| failed(&e))? {
            let k = k.map_err(|e| failed(&e))?;
            if gateway_of(&self.key, &k).is_some() {
                names.push(k);
            }
        }
        names.sort();
        let (mut found, mut unreadable) = (Vec::new(), Vec::new());
        for k in names {
            let value = self.kv.get(&k).await.map_err(|e| StoreError(format!("cannot read {k}: {e}")))?;
            match value.map(|v| serde_json::from_slice::<GatewayStatus>(&v)) {
                Some(Ok(status)) => found.push(status),
                Some(Err(e)) => unreadable.push(format!("{k}: not a gateway report ({e})")),
                None => {}
            }
        }
        Ok((found, unreadable))
    }

    /// The bucket stream's creation time: what tells one history from the next.
    async fn history_id(&self) -> Result<String, StoreError> {
        let info = patiently(self.patience, || async {
            let mut stream = self.kv.stream.clone();
            let info =
                stream.info().await.map_err(|e| StoreError(format!("cannot look up bucket {}: {e}", self.bucket)))?;
            Ok(info.created)
        });
        Ok(info.await?.unix_timestamp_nanos().to_string())
    }

    /// Follow the key from `cursor` until `out` is closed: every new revision is sent once, in
    /// order (those a newer one follows at once as superseded). Watch failures, server restarts
    /// and a bucket made anew are survived: the watch restarts from the cursor, checked every
    /// few seconds against the key's newest revision so a silently stalled watch is noticed.
    pub async fn follow(&self, cursor: &mut Cursor, out: tokio::sync::mpsc::Sender<Followed>) {
        let mut failures = 0u32;
        while !out.is_closed() {
            match self.follow_once(cursor, &out).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures % 30 == 0 {
                        log::warn!("config store {}: {e}; watching again", self.name());
                    }
                    // At most half a second: the first attempt after an election succeeds.
                    let pause = Duration::from_millis(100).saturating_mul(failures.min(5));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// One watch, from (re)start to the failure or stall that ends it.
    async fn follow_once(
        &self,
        cursor: &mut Cursor,
        out: &tokio::sync::mpsc::Sender<Followed>,
    ) -> Result<(), StoreError> {
        let history = self.history_id().await?;
        let current = self.current().await?.map(|r| r.revision);
        if let Restart::NewHistory { previous, now } = cursor.restart(&history, current) {
            log::warn!(
                "config store {}: a new history (revision {} after {}): the bucket was made anew",
                self.name(),
                now.map_or("none".into(), |n| n.to_string()),
                previous.map_or("none".into(), |n| n.to_string()),
            );
            if out.send(Followed::NewHistory { previous, now }).await.is_err() {
                return Ok(());
            }
        }
        let watch = match cursor.resume() {
            Resume::Latest => self.kv.watch_with_history(&self.key).await,
            Resume::After(seen) => self.kv.watch_from_revision(&self.key, seen + 1).await,
        };
        let mut watch = watch.map_err(|e| StoreError(format!("cannot watch: {e}")))?;
        let mut audit = tokio::time::interval(AUDIT_EVERY);
        audit.tick().await;
        // A newest revision the watch had not delivered at the last audit.
        let mut suspect = None;
        loop {
            tokio::select! {
                entry = watch.next() => {
                    let Some(entry) = entry else { return Err(StoreError("the watch ended".into())) };
                    let entry = entry.map_err(|e| StoreError(format!("the watch failed: {e}")))?;
                    let seen = Seen {
                        revision: entry.revision,
                        pending: entry.delta,
                        deleted: entry.operation != Operation::Put,
                    };
                    let followed = match cursor.next(seen) {
                        Step::Apply => match String::from_utf8(entry.value.to_vec()) {
                            Ok(document) => Followed::Apply(StoredRevision {
                                revision: entry.revision,
                                document,
                                time: entry.created,
                                pushed_by: None,
                                note: None,
                                push_id: None,
                                deleted: false,
                            }),
                            Err(_) => Followed::Unreadable { revision: entry.revision, why: "not UTF-8 text".into() },
                        },
                        Step::Deleted => Followed::Deleted(entry.revision),
                        Step::Superseded => Followed::Superseded(entry.revision),
                        Step::AlreadySeen => continue,
                    };
                    if out.send(followed).await.is_err() {
                        return Ok(());
                    }
                }
                _ = audit.tick() => {
                    if out.is_closed() {
                        return Ok(());
                    }
                    let newest = self.current().await?.map(|r| r.revision);
                    let history_now = self.history_id().await?;
                    let behind = matches!((newest, cursor.revision), (Some(n), Some(s)) if n > s)
                        || (newest.is_some() && cursor.revision.is_none());
                    // Behind twice on the same revision: not a delivery in flight but a stall.
                    let stalled = behind && suspect == newest;
                    suspect = if behind { newest } else { None };
                    if history_now != history || stalled || newest < cursor.revision {
                        return Err(StoreError(format!(
                            "the watch missed revision {} (it saw {}): restarting it",
                            newest.unwrap_or(0),
                            cursor.revision.unwrap_or(0)
                        )));
                    }
                }
            }
        }
    }

    /// Whether the connection to a NATS server is up (it reconnects on its own).
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Flush what was written and close the connection.
    pub async fn close(self) {
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, self.client.drain()).await;
    }
}

/// `user@host` of whoever runs a push.
fn pusher() -> String {
    let uid = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map(|m| format!("uid {}", m.uid())).unwrap_or_else(|_| "unknown".into())
    };
    let named = ["SUDO_USER", "USER", "LOGNAME"].iter().find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()));
    let user = named.unwrap_or_else(uid);
    format!("{user}@{}", super::status::gateway_id(None))
}
