//! HTTP/2 clients never fill the cache behind its lock themselves (issue 25: a slow reader held
//! the lock). The request that takes a key's cache lock fetches for everyone waiting on it, and
//! Pingora 0.9.1 writes the fill from that request's own proxy loop: a write to its downstream
//! that does not complete stops the upstream reads, the fill and so every waiter. On HTTP/1 a
//! write blocks only once the connection's socket buffers are full (hundreds of KiB over a
//! network, several MiB on loopback; the send timeout ends such a client); on HTTP/2 a client
//! that opens no flow-control window blocks the first one. Pingora's task API that would
//! decouple the two is not implemented for HTTP/2 sessions.
//!
//! So when an HTTP/2 request would fetch — its entry absent, or due for a refetch that no
//! stale-while-revalidate covers — the gateway takes the key's lock first and hands the fetch to
//! a background subrequest, Pingora's own mechanism for stale-while-revalidate, whose downstream
//! never blocks. The request itself then waits on the lock like any other and is answered from
//! the cache at its client's pace. The decision costs an HTTP/2 request on a caching route one
//! look at the stored entry's shape ([`cache::Shape`]); HTTP/1 requests never come here.
//!
//! An answer the gateway fetches itself (a `transform.response` route) never passes Pingora's
//! proxy loop, which is where Pingora fills the cache: [`store`] fills it the same way.

use super::{policies, RequestState};
use crate::policy::cache::{self, HeldLock};
use crate::snapshot::Snapshot;
use bytes::Bytes;
use pingora::cache::key::CacheKey;
use pingora::cache::lock::Locked;
use pingora::cache::predictor::CacheablePredictor;
use pingora::cache::{CachePhase, NoCacheReason, RespCacheable};
use pingora::prelude::*;
use pingora::proxy::subrequest;
use std::time::SystemTime;

/// The context of a background fill subrequest: the lock it fetches under, until it adopts it.
struct BackgroundFill(Option<HeldLock>);

/// Whether this request may hand its fetch to a background subrequest (Pingora then gives
/// the session a subrequest spawner): HTTP/2 requests.
pub(super) fn may_hand_off(session: &Session) -> bool {
    session.as_downstream().is_http2()
}

/// The lock a background fill subrequest carries, if this request is one ([`hand_off`]).
pub(super) fn adopt(session: &mut Session) -> Option<HeldLock> {
    let user = session.subrequest_ctx.as_mut()?.user_ctx_mut()?;
    user.downcast_mut::<BackgroundFill>()?.0.take()
}

/// If this HTTP/2 request would fetch `key` (its entry, or its variant's, absent or due for a
/// refetch), take the key's lock and hand the fetch to a background subrequest; Pingora's
/// lookup then finds the lock taken and this request waits for the fill. Whether it did.
pub(super) fn hand_off(snap: &Snapshot, session: &mut Session, state: &RequestState, key: &CacheKey) -> bool {
    if session.req_header().method != http::Method::GET || session.subrequest_spawner.is_none() {
        return false;
    }
    let Some(settings) = state.route.and_then(|r| snap.route(r).cache.as_ref()) else { return false };
    // Pingora skips the cache (and its lock) for keys it predicts uncacheable.
    if !cache::predictor().cacheable_prediction(key) {
        return false;
    }
    let serves_stale = !settings.stale_while_revalidate.is_zero();
    let storage = cache::storage();
    let now = SystemTime::now();
    let (lock_key, stored) = match storage.shape(key) {
        None => (key.clone(), false),
        Some(primary) => {
            let variance = policies::cache_variance(snap, state, &primary.selectors, session.req_header());
            match cache::slot(primary.variance, variance) {
                None if primary.must_fetch(now, serves_stale) => (key.clone(), true),
                None => return false,
                Some(variance) => {
                    let mut secondary = key.clone();
                    secondary.set_variance_key(variance);
                    match storage.shape(&secondary) {
                        Some(entry) if !entry.must_fetch(now, serves_stale) => return false,
                        entry => (secondary, entry.is_some()),
                    }
                }
            }
        }
    };
    // Someone is already fetching it: wait for them as Pingora would.
    let Locked::Write(permit) = cache::cache_lock().lock(&lock_key, stored) else { return false };
    let held = HeldLock::new(lock_key, permit);
    let ctx = subrequest::Ctx::builder().user_ctx(Box::new(BackgroundFill(Some(held)))).build();
    // The subrequest re-reads this request as HTTP/1 text (see [`lend_http1_version`]).
    let version = session.req_header().version;
    session.req_header_mut().set_version(http::Version::HTTP_11);
    let spawned = match session.subrequest_spawner.as_ref() {
        Some(spawner) => {
            spawner.spawn_background_subrequest(session.as_downstream(), ctx);
            true
        }
        None => false,
    };
    session.req_header_mut().set_version(version);
    spawned
}

/// A background subrequest re-reads its parent request as HTTP/1 text, and an HTTP/2 request
/// line (`GET /x HTTP/2`) does not parse: the subrequest dies before it starts (Pingora's
/// stale-while-revalidate refresh of an HTTP/2 request never ran, and its lock dangled). The
/// request is HTTP/1.1 while Pingora copies it; [`restore_version`] gives its version back.
pub(super) fn lend_http1_version(session: &mut Session, state: &mut RequestState) {
    if session.as_downstream().is_http2() && state.cache.lent_version.is_none() {
        state.cache.lent_version = Some(session.req_header().version);
        session.req_header_mut().set_version(http::Version::HTTP_11);
    }
}

/// Undo [`lend_http1_version`].
pub(super) fn restore_version(session: &mut Session, state: &mut RequestState) {
    if let Some(version) = state.cache.lent_version.take() {
        session.req_header_mut().set_version(version);
    }
}

/// Whether this request fills the cache: its key missed, or its entry is due for a refetch.
pub(super) fn fills(session: &Session) -> bool {
    matches!(session.cache.phase(), CachePhase::Miss | CachePhase::Stale | CachePhase::Expired)
}

/// Store an answer the gateway fetched itself (a `transform.response` route's, made outside
/// Pingora's proxy loop and so outside its cache fill) as Pingora stores a proxied one: judged
/// by the route's cache rules, its variance recorded, written whole, the key's lock released
/// for the requests waiting on it. `head` and `body` are the answer as transformed, before the
/// gateway's own headers. A store that fails is logged; the client's answer does not depend
/// on it.
pub(super) async fn store(
    snap: &Snapshot,
    session: &mut Session,
    state: &RequestState,
    head: &ResponseHeader,
    body: &Bytes,
) {
    let bypassing = session.cache.bypassing();
    if !fills(session) && !bypassing {
        return;
    }
    let meta = match policies::cacheable(snap, state, head) {
        RespCacheable::Uncacheable(reason) => {
            if !bypassing {
                session.cache.response_became_uncacheable(reason);
            }
            session.cache.disable(reason);
            return;
        }
        RespCacheable::Cacheable(meta) => meta,
    };
    if bypassing {
        // Predicted uncacheable and found cacheable: the next request stores it.
        session.cache.response_became_cacheable();
        session.cache.disable(NoCacheReason::Deferred);
        return;
    }
    if session.cache.max_file_size_bytes().is_some_and(|max| body.len() > max) {
        session.cache.response_became_uncacheable(NoCacheReason::ResponseTooLarge);
        session.cache.disable(NoCacheReason::ResponseTooLarge);
        return;
    }
    let variance = policies::cache_variance(snap, state, meta.headers(), session.req_header());
    session.cache.set_cache_meta(meta);
    session.cache.update_variance(variance);
    let written = async {
        session.cache.set_miss_handler().await?;
        if let Some(handler) = session.cache.miss_handler() {
            handler.write_body(body.clone(), true).await?;
        }
        session.cache.finish_miss_handler().await
    };
    if let Err(e) = written.await {
        log::warn!("request {}: the transformed answer was not stored in the cache: {e}", state.request_id);
        session.cache.disable(NoCacheReason::StorageError);
    }
}
