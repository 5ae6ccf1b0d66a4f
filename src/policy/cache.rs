//! The response cache's storage (ARCHITECTURE.md §7.4): pingora-cache does the HTTP caching
//! (freshness, the cache lock that turns concurrent misses into one upstream request,
//! stale-while-revalidate, Vary, HEAD from GET), and keeps what it caches here — in memory,
//! bounded in bytes (`cache.max_memory`), least recently used evicted first, synchronously at
//! insertion so the bound holds at every moment (Pingora's `MemCache` is unbounded and for
//! tests only).
//!
//! One storage per process (pingora-cache wants `&'static`): a reload changes its limit, never
//! the object. Entries carry a purge tag (route and path) so an admin purge removes every
//! variant of a path — every `Vary` value, every user of a per-user route.

use crate::auth::Identity;
use crate::config::RouteCache;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use lru::LruCache;
use pingora::cache::key::{CacheHashKey, CacheKey, HashBinary};
use pingora::cache::lock::LockStatus;
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeTarget, PurgeType, Storage,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheMeta, CachePhase, NoCacheReason, PurgeOutcome, RespCacheable};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};
use std::any::Any;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// Shards of the table: an insert or lookup locks one.
const SHARDS: usize = 16;
/// Bytes counted per entry beside its body and metadata (map slot, Arc, key).
const ENTRY_OVERHEAD: usize = 256;
/// Body bytes handed to Pingora per read on a hit.
const READ_CHUNK: usize = 64 * 1024;

struct Entry {
    /// `CacheMeta::serialize()` (pingora-cache's metadata is not `Clone`).
    meta: (Vec<u8>, Vec<u8>),
    /// What deciding whether a request must fetch this entry needs, kept apart so that
    /// decision costs no deserialisation.
    shape: Arc<Shape>,
    body: Bytes,
    /// Route and path: what an admin purge names.
    purge_tag: u64,
    size: usize,
}

/// Of a stored entry: when it needs fetching again, and what selects it among a path's
/// variants ([`MemStorage::shape`]).
#[derive(Debug)]
pub(crate) struct Shape {
    /// The variance the entry was stored with (`None`: its route varies on nothing).
    pub(crate) variance: Option<HashBinary>,
    /// The end of its freshness.
    pub(crate) fresh_until: SystemTime,
    /// How long after `fresh_until` it may be served while one background request refreshes it.
    pub(crate) stale_while_revalidate: Duration,
    /// The stored answer's `Vary` and `Cache-Control` lines: what a request's variant is
    /// computed from.
    pub(crate) selectors: http::HeaderMap,
}

impl Shape {
    fn of(meta: &CacheMeta) -> Shape {
        let mut selectors = http::HeaderMap::new();
        for name in [http::header::VARY, http::header::CACHE_CONTROL] {
            for value in meta.headers().get_all(&name) {
                selectors.append(name.clone(), value.clone());
            }
        }
        Shape {
            variance: meta.variance(),
            fresh_until: meta.fresh_until(),
            stale_while_revalidate: Duration::from_secs(u64::from(meta.stale_while_revalidate_sec())),
            selectors,
        }
    }

    /// Bytes it holds beyond the fixed overhead.
    fn size(&self) -> usize {
        self.selectors.iter().map(|(k, v)| k.as_str().len() + v.len()).sum()
    }

    /// Whether a request reading it must fetch it: it is past its freshness and, unless the
    /// route serves stale answers while revalidating (`serves_stale`), past that window too.
    pub(crate) fn must_fetch(&self, now: SystemTime, serves_stale: bool) -> bool {
        now >= self.fresh_until && !(serves_stale && now < self.fresh_until + self.stale_while_revalidate)
    }
}

#[derive(Default)]
struct Shard {
    entries: Option<LruCache<HashBinary, Arc<Entry>>>,
    bytes: usize,
}

impl Shard {
    fn map(&mut self) -> &mut LruCache<HashBinary, Arc<Entry>> {
        self.entries.get_or_insert_with(LruCache::unbounded)
    }
}

/// The process's cache storage.
pub struct MemStorage {
    shards: Vec<Mutex<Shard>>,
    /// `cache.max_memory` in bytes (0: nothing is stored).
    limit: AtomicUsize,
    bytes: AtomicUsize,
    /// Bumped by purges of everything: a fill started before one is not stored.
    generation: AtomicU64,
}

impl std::fmt::Debug for MemStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStorage").field("bytes", &self.bytes()).finish()
    }
}

/// The storage of this process.
pub(crate) fn storage() -> &'static MemStorage {
    static STORAGE: OnceLock<MemStorage> = OnceLock::new();
    STORAGE.get_or_init(|| MemStorage::new(0))
}

fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemStorage {
    fn new(limit: usize) -> Self {
        MemStorage {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            limit: AtomicUsize::new(limit),
            bytes: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &HashBinary) -> &Mutex<Shard> {
        &self.shards[usize::from(key[0]) % SHARDS]
    }

    /// Set the memory bound (at start and on reload); a smaller one applies at once.
    pub(crate) fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed);
        for shard in &self.shards {
            self.evict(&mut lock(shard));
        }
    }

    /// Bytes stored now (bodies, metadata and per-entry overhead).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Entries stored now.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).entries.as_ref().map_or(0, LruCache::len)).sum()
    }

    /// Drop least recently used entries until the shard is within its share of the bound.
    fn evict(&self, shard: &mut Shard) {
        let share = self.limit.load(Ordering::Relaxed) / SHARDS;
        while shard.bytes > share {
            let Some((_, gone)) = shard.map().pop_lru() else { break };
            shard.bytes -= gone.size;
            self.bytes.fetch_sub(gone.size, Ordering::Relaxed);
        }
    }

    fn insert(&self, key: HashBinary, entry: Entry) -> bool {
        if entry.size > self.limit.load(Ordering::Relaxed) / SHARDS {
            return false;
        }
        let mut shard = lock(self.shard(&key));
        let size = entry.size;
        if let Some(old) = shard.map().put(key, Arc::new(entry)) {
            shard.bytes -= old.size;
            self.bytes.fetch_sub(old.size, Ordering::Relaxed);
        }
        shard.bytes += size;
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.evict(&mut shard);
        true
    }

    fn remove(&self, key: &HashBinary) -> bool {
        let mut shard = lock(self.shard(key));
        match shard.map().pop(key) {
            Some(gone) => {
                shard.bytes -= gone.size;
                self.bytes.fetch_sub(gone.size, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// The shape of the entry stored under `key` (its variance included), if any; the entry's
    /// recency is left alone.
    pub(crate) fn shape(&self, key: &CacheKey) -> Option<Arc<Shape>> {
        let hash = key.combined_bin();
        let mut shard = lock(self.shard(&hash));
        shard.map().peek(&hash).map(|e| e.shape.clone())
    }

    /// Remove every entry with this purge tag (all its variants); returns how many.
    pub(crate) fn purge_tag(&self, tag: u64) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = lock(shard);
            let doomed: Vec<HashBinary> =
                shard.map().iter().filter(|(_, e)| e.purge_tag == tag).map(|(k, _)| *k).collect();
            for key in doomed {
                if let Some(gone) = shard.map().pop(&key) {
                    shard.bytes -= gone.size;
                    self.bytes.fetch_sub(gone.size, Ordering::Relaxed);
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Remove everything.
    pub(crate) fn purge_all(&self) -> usize {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = lock(shard);
            removed += shard.map().len();
            self.bytes.fetch_sub(shard.bytes, Ordering::Relaxed);
            *shard = Shard::default();
        }
        removed
    }
}

/// The cache lock: concurrent misses for one key wait for the first one's response instead
/// of each going upstream. A writer that takes longer than this lets the others compete again.
pub(crate) fn cache_lock() -> &'static pingora::cache::lock::CacheKeyLockImpl {
    static LOCK: OnceLock<Lock> = OnceLock::new();
    LOCK.get_or_init(|| Lock(pingora::cache::lock::CacheLock::new(Duration::from_secs(10))))
}

/// Pingora's cache lock, with what a writer's own refusals tell the requests waiting on it.
struct Lock(pingora::cache::lock::CacheLock);

impl pingora::cache::lock::CacheKeyLock for Lock {
    fn lock(&self, key: &CacheKey, stale_writer: bool) -> pingora::cache::lock::Locked {
        self.0.lock(key, stale_writer)
    }

    fn release(&self, key: &CacheKey, permit: pingora::cache::lock::WritePermit, reason: LockStatus) {
        self.0.release(key, permit, reason);
    }

    fn custom_lock_status(&self, reason: &'static str) -> LockStatus {
        refusal_lock_status(reason)
    }
}

/// What waiters are told when the writer's answer was refused for one of our reasons.
fn refusal_lock_status(reason: &'static str) -> LockStatus {
    match reason {
        // The writer's answer was its own; the next request's may be everyone's: elect a new
        // writer (Pingora's default sends every waiter upstream uncached).
        UNKEYED_CREDENTIALS => LockStatus::TransientError,
        _ => LockStatus::GiveUp,
    }
}

/// What the requests waiting on a fill's lock are told when the request that held it ends in
/// `phase`: look again (`Done`), compete for a new fill (`TransientError`), or fetch on their
/// own (`GiveUp`: the answer is not cacheable).
pub(crate) fn lock_status_after(phase: CachePhase) -> LockStatus {
    match phase {
        CachePhase::Miss
        | CachePhase::Expired
        | CachePhase::Hit
        | CachePhase::Stale
        | CachePhase::StaleUpdating
        | CachePhase::Revalidated
        | CachePhase::RevalidatedNoCache(_) => LockStatus::Done,
        CachePhase::Disabled(
            NoCacheReason::OriginNotCache | NoCacheReason::ResponseTooLarge | NoCacheReason::PredictedResponseTooLarge,
        ) => LockStatus::GiveUp,
        CachePhase::Disabled(NoCacheReason::Custom(reason)) => refusal_lock_status(reason),
        _ => LockStatus::TransientError,
    }
}

/// A fill's cache lock held outside Pingora's own bookkeeping (by a background request that
/// fetches for others): released once, with what the fill came to, or — dropped unreleased —
/// as a transient failure so the waiters elect another writer.
pub(crate) struct HeldLock {
    key: CacheKey,
    permit: Option<pingora::cache::lock::WritePermit>,
}

impl HeldLock {
    /// Hold `permit`, the lock of `key`.
    pub(crate) fn new(key: CacheKey, permit: pingora::cache::lock::WritePermit) -> Self {
        HeldLock { key, permit: Some(permit) }
    }

    /// Release it: the holder ended in `phase`.
    pub(crate) fn release(mut self, phase: CachePhase) {
        if let Some(permit) = self.permit.take() {
            cache_lock().release(&self.key, permit, lock_status_after(phase));
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            cache_lock().release(&self.key, permit, LockStatus::TransientError);
        }
    }
}

impl std::fmt::Debug for HeldLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLock").field("held", &self.permit.is_some()).finish()
    }
}

/// Which slot of a path a request reads: the primary holds the first variant stored; the
/// others sit in secondary slots under their variance (as pingora-cache looks them up).
pub(crate) fn slot(primary: Option<HashBinary>, request: Option<HashBinary>) -> Option<HashBinary> {
    match request {
        Some(v) if primary != Some(v) => Some(v),
        _ => None,
    }
}

/// Remembers keys whose responses were not cacheable, so the next request for one goes
/// straight upstream instead of queueing behind the cache lock. An answer kept from others
/// because of its request's credentials says nothing about the next request's.
pub(crate) fn predictor() -> &'static pingora::cache::predictor::Predictor<16> {
    static PREDICTOR: OnceLock<pingora::cache::predictor::Predictor<16>> = OnceLock::new();
    PREDICTOR.get_or_init(|| pingora::cache::predictor::Predictor::new(1024, Some(|r| r == UNKEYED_CREDENTIALS)))
}

/// Who a cached answer on a route that is not `auth: public` belongs to (unless the answer is
/// `Cache-Control: public`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner<'a> {
    /// No credentials (an `auth: optional` route): the entry of every anonymous caller.
    Anonymous,
    /// A verified caller: a name within its scheme (a JWT `sub`, an API-key consumer and a
    /// Telegram user id are different namespaces).
    Named {
        /// The scheme's config name.
        scheme: &'static str,
        /// The caller's name in it.
        name: &'a str,
    },
    /// A verified caller without a name (a JWT without `sub`, or with an empty one): it cannot
    /// be told apart from other such callers, so nothing is cached for it or served to it.
    Unnamed,
}

/// The owner of the entries a caller reads and fills.
pub(crate) fn owner(identity: Option<&Identity>) -> Owner<'_> {
    match identity {
        None => Owner::Anonymous,
        Some(i) => match i.sub.as_deref() {
            Some(name) if !name.is_empty() => Owner::Named { scheme: i.scheme.name(), name },
            _ => Owner::Unnamed,
        },
    }
}

/// Why an answer to a request with credentials the cache key does not hold was not stored.
pub(crate) const UNKEYED_CREDENTIALS: &str = "request-credentials";

/// Whether the request sent upstream carries credentials the cache key does not hold: any
/// `Cookie`, and an `Authorization` unless it is the caller the entry is keyed by
/// (`keyed_by_authorization`: a JWT or Telegram caller on a route that is not public). Such a
/// request's answer may be that caller's own (RFC 9111 §3.5).
pub(crate) fn unkeyed_credentials(upstream: &http::HeaderMap, keyed_by_authorization: bool) -> bool {
    upstream.contains_key(http::header::COOKIE)
        || (!keyed_by_authorization && upstream.contains_key(http::header::AUTHORIZATION))
}

/// The purge tag of a route's path: FNV-1a over the route label and the path with its query.
pub(crate) fn purge_tag(route: &str, path_and_query: &str) -> u64 {
    route
        .bytes()
        .chain([0])
        .chain(path_and_query.bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The purge tag a fill carries: set by the proxy in the cache key's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PurgeTag(pub(crate) u64);

fn storage_error(what: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InternalError, what)
}

#[async_trait]
impl Storage for MemStorage {
    async fn lookup(&'static self, key: &CacheKey, _trace: &SpanHandle) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        let Some(entry) = lock(self.shard(&hash)).map().get(&hash).cloned() else { return Ok(None) };
        let meta = CacheMeta::deserialize(&entry.meta.0, &entry.meta.1)?;
        let hit = Hit { body: entry.body.clone(), pos: 0, end: entry.body.len() };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let purge_tag = key.extensions.get::<PurgeTag>().map_or(0, |t| t.0);
        Ok(Box::new(Fill {
            storage: self,
            key: key.combined_bin(),
            meta: meta.serialize()?,
            shape: Arc::new(Shape::of(meta)),
            body: BytesMut::new(),
            purge_tag,
            generation: self.generation.load(Ordering::Acquire),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _kind: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = target.key().combined_bin();
        Ok(if self.remove(&hash) { PurgeOutcome::Purged(None) } else { PurgeOutcome::NotFound })
    }

    async fn update_meta(&'static self, key: &CacheKey, meta: &CacheMeta, _trace: &SpanHandle) -> Result<bool> {
        let hash = key.combined_bin();
        let serialized = meta.serialize()?;
        let mut shard = lock(self.shard(&hash));
        let Some(old) = shard.map().peek(&hash).cloned() else { return Ok(false) };
        // A revalidation (304) refreshed the metadata; the body stays.
        let shape = Arc::new(Shape::of(meta));
        let size = old.body.len() + serialized.0.len() + serialized.1.len() + shape.size() + ENTRY_OVERHEAD;
        let entry = Entry { meta: serialized, shape, body: old.body.clone(), purge_tag: old.purge_tag, size };
        shard.bytes = shard.bytes - old.size + size;
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.bytes.fetch_sub(old.size, Ordering::Relaxed);
        shard.map().put(hash, Arc::new(entry));
        self.evict(&mut shard);
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// Reading a stored body: zero-copy slices of one `Bytes`.
struct Hit {
    body: Bytes,
    pos: usize,
    end: usize,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let next = (self.pos + READ_CHUNK).min(self.end);
        let chunk = self.body.slice(self.pos..next);
        self.pos = next;
        Ok(Some(chunk))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Err(Error::explain(ErrorType::InternalError, "seek past the end of the cached body"));
        }
        self.pos = start;
        self.end = end.map_or(self.body.len(), |e| (e + 1).min(self.body.len()));
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Filling an entry: the body is kept until the whole response is in, then stored in one piece
/// (nothing partial is ever visible; a fill dropped unfinished stores nothing).
struct Fill {
    storage: &'static MemStorage,
    key: HashBinary,
    meta: (Vec<u8>, Vec<u8>),
    shape: Arc<Shape>,
    body: BytesMut,
    purge_tag: u64,
    generation: u64,
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.body.len() + data.len() > self.storage.limit.load(Ordering::Relaxed) / SHARDS {
            return Err(storage_error("response larger than the cache can hold"));
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let Fill { storage, key, meta, shape, body, purge_tag, generation } = *self;
        let size = body.len() + meta.0.len() + meta.1.len() + shape.size() + ENTRY_OVERHEAD;
        if storage.generation.load(Ordering::Acquire) != generation {
            // Everything was purged while this response was being fetched.
            return Ok(MissFinishType::Created(0));
        }
        let entry = Entry { meta, shape, body: body.freeze(), purge_tag, size };
        if !storage.insert(key, entry) {
            return Err(storage_error("response larger than the cache can hold"));
        }
        Ok(MissFinishType::Created(size))
    }
}

/// Whether a response on a caching route (`settings`) is stored, and for how long: what the response's
/// `Cache-Control` (or `Expires`) says, else the route's `ttl`. Never stored: statuses other
/// than 200, 203, 204, 301, 308, 404 and 410; `no-store` and `private`; `Set-Cookie`;
/// `Vary: *`; on a compressing route, a body the upstream encoded although it was asked for the
/// plain one; and, when the request carried credentials the key does not hold
/// (`unkeyed_credentials`), an answer that does not say a shared cache may keep it (`public`,
/// `s-maxage` or `must-revalidate`, RFC 9111 §3.5).
pub(crate) fn storable(
    settings: &RouteCache,
    compresses: bool,
    unkeyed_credentials: bool,
    resp: &ResponseHeader,
) -> RespCacheable {
    use pingora::cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
    let refuse = |why: &'static str| RespCacheable::Uncacheable(NoCacheReason::Custom(why));
    if !matches!(resp.status.as_u16(), 200 | 203 | 204 | 301 | 308 | 404 | 410) {
        return refuse("status");
    }
    if resp.headers.contains_key(http::header::SET_COOKIE) {
        return refuse("set-cookie");
    }
    let vary_star = resp
        .headers
        .get_all(http::header::VARY)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim() == "*")));
    if vary_star {
        return refuse("vary-star");
    }
    let encoded = resp
        .headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if compresses && encoded {
        return refuse("encoded");
    }
    let cc = CacheControl::from_resp_headers(resp);
    if cc.as_ref().is_some_and(|c| c.is_cacheable() == Cacheable::No) {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    if unkeyed_credentials
        && !cc.as_ref().is_some_and(|c| c.public() || c.must_revalidate() || c.s_maxage().ok().flatten().is_some())
    {
        return refuse(UNKEYED_CREDENTIALS);
    }
    let now = std::time::SystemTime::now();
    let fresh_until = match cc.as_ref().and_then(|c| c.fresh_duration()) {
        Some(ttl) => now + ttl,
        None => pingora::cache::filters::calculate_expires_header_time(resp).unwrap_or(now + settings.ttl),
    };
    // `no-cache` stores the response but every reuse must be revalidated: never served stale.
    let must_revalidate = cc.as_ref().is_some_and(|c| c.no_cache());
    let stale = |from_cc: Option<std::time::Duration>, default| {
        if must_revalidate {
            std::time::Duration::ZERO
        } else {
            from_cc.unwrap_or(default)
        }
    };
    let swr =
        stale(cc.as_ref().and_then(|c| c.serve_stale_while_revalidate_duration()), settings.stale_while_revalidate);
    let sie = stale(cc.as_ref().and_then(|c| c.serve_stale_if_error_duration()), settings.stale_if_error);
    let mut header = resp.clone();
    if let Some(cc) = &cc {
        cc.strip_private_headers(&mut header);
    }
    RespCacheable::Cacheable(CacheMeta::new(fresh_until, now, swr.as_secs() as u32, sie.as_secs() as u32, header))
}

/// `Cache-Control: public` on a response.
pub(crate) fn is_public(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("public"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&'static str, &'static str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).expect("head");
        for (k, v) in headers {
            r.append_header(*k, *v).expect("header");
        }
        r
    }

    #[test]
    fn what_is_never_stored_and_how_long_the_rest_lives() {
        let settings = RouteCache {
            ttl: std::time::Duration::from_secs(60),
            stale_while_revalidate: std::time::Duration::from_secs(10),
            stale_if_error: std::time::Duration::from_secs(60),
            vary: Vec::new(),
            max_entry: 1 << 20,
        };
        let stored = |r: &ResponseHeader, compresses: bool| {
            matches!(storable(&settings, compresses, false, r), RespCacheable::Cacheable(_))
        };
        assert!(stored(&response(200, &[]), false));
        for never in [
            response(500, &[]),
            response(206, &[]),
            response(200, &[("set-cookie", "a=1")]),
            response(200, &[("cache-control", "no-store")]),
            response(200, &[("cache-control", "private")]),
            response(200, &[("vary", "accept, *")]),
        ] {
            assert!(!stored(&never, false), "{:?}", never.headers);
        }
        let encoded = response(200, &[("content-encoding", "gzip")]);
        assert!(stored(&encoded, false) && !stored(&encoded, true), "compressing routes store plain bodies only");
        let RespCacheable::Cacheable(meta) =
            storable(&settings, false, false, &response(200, &[("cache-control", "no-cache")]))
        else {
            panic!("no-cache is stored")
        };
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
        assert!(!meta.serve_stale_while_revalidate(later) && !meta.serve_stale_if_error(later), "never served stale");
        assert!(is_public(&response(200, &[("cache-control", "max-age=5, Public")]).headers));
    }

    #[test]
    fn answers_to_requests_with_unkeyed_credentials_are_kept_only_when_shareable() {
        let settings = RouteCache {
            ttl: std::time::Duration::from_secs(60),
            stale_while_revalidate: std::time::Duration::ZERO,
            stale_if_error: std::time::Duration::ZERO,
            vary: Vec::new(),
            max_entry: 1 << 20,
        };
        let stored = |r: &ResponseHeader| matches!(storable(&settings, false, true, r), RespCacheable::Cacheable(_));
        assert!(!stored(&response(200, &[])));
        assert!(!stored(&response(200, &[("cache-control", "max-age=60")])));
        for shareable in ["public", "max-age=5, s-maxage=60", "must-revalidate"] {
            assert!(stored(&response(200, &[("cache-control", shareable)])), "{shareable}");
        }
        assert!(!stored(&response(200, &[("cache-control", "public, no-store")])));
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, http::HeaderValue::from_static(v));
            }
            h
        };
        assert!(!unkeyed_credentials(&headers(&[("accept", "*/*")]), false));
        assert!(unkeyed_credentials(&headers(&[("cookie", "a=1")]), true), "a cookie is never the key");
        assert!(unkeyed_credentials(&headers(&[("authorization", "Basic eDp5")]), false));
        assert!(!unkeyed_credentials(&headers(&[("authorization", "Bearer t")]), true), "the keyed caller");
    }

    #[test]
    fn callers_own_entries_by_scheme_and_name() {
        use crate::auth::Scheme;
        let named =
            |scheme, sub: Option<&str>| Identity { scheme, sub: sub.map(str::to_string), ..Identity::default() };
        assert_eq!(owner(None), Owner::Anonymous);
        let jwt = named(Scheme::Jwt, Some("acme"));
        let key = named(Scheme::ApiKey, Some("acme"));
        assert_eq!(owner(Some(&jwt)), Owner::Named { scheme: "jwt", name: "acme" });
        assert_ne!(owner(Some(&jwt)), owner(Some(&key)), "one name, two schemes: two owners");
        assert_eq!(owner(Some(&named(Scheme::Jwt, None))), Owner::Unnamed);
        assert_eq!(owner(Some(&named(Scheme::Jwt, Some("")))), Owner::Unnamed);
    }

    #[test]
    fn a_request_fetches_its_variant_when_absent_or_stale_beyond_revalidation() {
        let (a, b) = ([1u8; 16], [2u8; 16]);
        assert_eq!(slot(None, None), None, "no variance: the primary");
        assert_eq!(slot(Some(a), Some(a)), None, "the primary holds this variant");
        assert_eq!(slot(Some(a), Some(b)), Some(b));
        assert_eq!(slot(None, Some(b)), Some(b));
        assert_eq!(slot(Some(a), None), None);
        let now = SystemTime::now();
        let shape = |fresh_for: i64, swr: u64| Shape {
            variance: None,
            fresh_until: if fresh_for >= 0 {
                now + Duration::from_secs(fresh_for as u64)
            } else {
                now - Duration::from_secs(fresh_for.unsigned_abs())
            },
            stale_while_revalidate: Duration::from_secs(swr),
            selectors: http::HeaderMap::new(),
        };
        assert!(!shape(10, 0).must_fetch(now, true));
        assert!(shape(-1, 0).must_fetch(now, true));
        assert!(!shape(-1, 30).must_fetch(now, true), "served stale while one refresh runs");
        assert!(shape(-1, 30).must_fetch(now, false), "the route does not serve stale");
        assert!(shape(-60, 30).must_fetch(now, true), "past the window");
    }

    #[test]
    fn a_held_lock_tells_its_waiters_what_the_fill_came_to() {
        use pingora::cache::lock::Locked;
        assert_eq!(lock_status_after(CachePhase::Miss), LockStatus::Done);
        assert_eq!(lock_status_after(CachePhase::Disabled(NoCacheReason::OriginNotCache)), LockStatus::GiveUp);
        assert_eq!(lock_status_after(CachePhase::Disabled(NoCacheReason::UpstreamError)), LockStatus::TransientError);
        assert_eq!(
            lock_status_after(CachePhase::Disabled(NoCacheReason::Custom(UNKEYED_CREDENTIALS))),
            LockStatus::TransientError
        );
        let key = CacheKey::new("held-lock-test", "");
        let Locked::Write(permit) = cache_lock().lock(&key, false) else { panic!("a new key is free") };
        let Locked::Read(waiter) = cache_lock().lock(&key, false) else { panic!("taken") };
        drop(HeldLock::new(key.clone(), permit));
        assert_eq!(waiter.lock_status(), LockStatus::TransientError, "dropped unreleased: elect another writer");
        let Locked::Write(permit) = cache_lock().lock(&key, false) else { panic!("free again") };
        let Locked::Read(waiter) = cache_lock().lock(&key, false) else { panic!("taken") };
        HeldLock::new(key.clone(), permit).release(CachePhase::Miss);
        assert_eq!(waiter.lock_status(), LockStatus::Done);
    }

    fn entry(size: usize, tag: u64) -> Entry {
        Entry {
            meta: (Vec::new(), Vec::new()),
            shape: Arc::new(Shape {
                variance: None,
                fresh_until: SystemTime::UNIX_EPOCH,
                stale_while_revalidate: Duration::ZERO,
                selectors: http::HeaderMap::new(),
            }),
            body: Bytes::from(vec![0u8; size]),
            purge_tag: tag,
            size: size + ENTRY_OVERHEAD,
        }
    }

    fn key(i: u32) -> HashBinary {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k
    }

    #[test]
    fn the_memory_bound_holds_and_old_entries_go_first() {
        let s = MemStorage::new(16 * 10_000);
        for i in 0..2000 {
            s.insert(key(i), entry(1000, 0));
        }
        assert!(s.bytes() <= 16 * 10_000, "{}", s.bytes());
        assert!(s.len() > 16 * 5);
        // The latest entries are the ones kept.
        let recent = (1990..2000).filter(|i| lock(s.shard(&key(*i))).map().contains(&key(*i))).count();
        assert_eq!(recent, 10);
        s.set_limit(16 * 2000);
        assert!(s.bytes() <= 16 * 2000);
        assert!(!s.insert(key(5000), entry(5000, 0)), "larger than a shard's share: not stored");
    }

    #[test]
    fn purge_by_tag_removes_every_variant() {
        let s = MemStorage::new(1 << 20);
        s.insert(key(1), entry(10, 7));
        s.insert(key(2), entry(10, 7));
        s.insert(key(3), entry(10, 8));
        assert_eq!(s.purge_tag(7), 2);
        assert_eq!(s.len(), 1);
        assert_eq!(s.purge_all(), 1);
        assert_eq!(s.bytes(), 0);
        assert_ne!(purge_tag("r", "/a?b"), purge_tag("r", "/a?c"));
    }
}
