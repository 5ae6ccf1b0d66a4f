//! Where a route's edge policies (ARCHITECTURE.md §7.4) meet the request: header rules on the
//! way up and down, CORS on every answer, compression switched on per request, and the
//! cache's view of the route. Routes without policies return at the first check.

use super::RequestState;
use crate::answer::LocalAnswer;
use crate::config::RouteSettings;
use crate::forwarding;
use crate::policy::cache::{self, purge_tag, PurgeTag};
use crate::policy::compress;
use crate::policy::cors;
use crate::policy::headers::Vars;
use crate::snapshot::Snapshot;
use pingora::cache::key::{CacheKey, HashBinary};
use pingora::cache::{CachePhase, NoCacheReason, RespCacheable, VarianceBuilder};
use pingora::modules::http::compression::ResponseCompression;
use pingora::prelude::*;
use pingora::protocols::http::compression::Algorithm;

/// The route of the request, if it has one.
fn route<'a>(snap: &'a Snapshot, state: &RequestState) -> Option<&'a RouteSettings> {
    state.route.map(|r| snap.route(r))
}

/// The §7.4 variables of this request (header rules, transform templates).
pub(super) fn with_vars<T>(snap: &Snapshot, state: &RequestState, f: impl FnOnce(&Vars<'_>) -> T) -> T {
    let claim = |name: &str| state.identity.as_ref().and_then(|i| i.claim_text(name));
    let vars = Vars {
        request_id: &state.request_id,
        client_ip: &state.client.ip_text,
        route: route(snap, state).map_or("-", |r| r.label.as_str()),
        elapsed: state.started.elapsed(),
        claim: &claim,
        tenant: state.member.as_ref().and_then(|m| m.tenant.as_deref()),
    };
    f(&vars)
}

/// The answer to a CORS preflight on a route with `cors` (204, no backend involved).
pub(super) fn preflight_answer(route: &RouteSettings, req: &RequestHeader) -> Option<LocalAnswer> {
    let cors = route.cors.as_ref()?;
    let mut answer = LocalAnswer::no_content();
    for (name, value) in cors.preflight(&req.headers) {
        answer = answer.header(name, value);
    }
    Some(answer)
}

/// CORS headers and response rules on an answer the gateway makes itself (errors included).
pub(super) fn on_local_answer(snap: &Snapshot, state: &RequestState, req: &RequestHeader, head: &mut ResponseHeader) {
    let Some(route) = route(snap, state) else { return };
    if let Some(cors) = &route.cors {
        if !state.preflight {
            cors::apply(head, cors.response(&req.headers));
        }
    }
    if !route.response_headers.is_empty() {
        with_vars(snap, state, |vars| route.response_headers.apply(vars, head));
    }
}

/// CORS, response rules, the compression decision and `X-Cache` on a proxied or cached answer.
pub(super) fn on_response(snap: &Snapshot, session: &mut Session, state: &RequestState, resp: &mut ResponseHeader) {
    let Some(route) = route(snap, state) else { return };
    if let Some(settings) = &route.compress {
        if state.compressing && compress::leave_alone(resp.status.as_u16(), &resp.headers, settings.min_size) {
            if let Some(ctx) = session.downstream_modules_ctx.get_mut::<ResponseCompression>() {
                ctx.adjust_level(0);
            }
        }
    }
    if route.cache.is_some() {
        let _ = resp.insert_header("X-Cache", cache_result(session.cache.phase(), state.cache.handed_off));
    }
    if let Some(cors) = &route.cors {
        cors::apply(resp, cors.response(&session.req_header().headers));
    }
    if !route.response_headers.is_empty() {
        with_vars(snap, state, |vars| route.response_headers.apply(vars, resp));
    }
}

/// `X-Cache` (and the `result` label of `siger_cache_requests_total`) for a cache phase;
/// `handed_off`: the request's fetch was made for it in the background ([`super::fill`]), so
/// the entry it was answered from is its own miss.
pub(super) fn cache_result(phase: CachePhase, handed_off: bool) -> &'static str {
    match phase {
        CachePhase::Hit if handed_off => "MISS",
        CachePhase::Hit | CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "HIT",
        CachePhase::Miss | CachePhase::Expired => "MISS",
        CachePhase::Stale | CachePhase::StaleUpdating => "STALE",
        _ => "BYPASS",
    }
}

/// Request rules on what goes upstream; with a cache and compression, the upstream is asked
/// for the plain body, which is stored once and compressed per client.
pub(super) fn on_upstream_request(
    snap: &Snapshot,
    session: &Session,
    state: &RequestState,
    upstream: &mut RequestHeader,
) {
    let Some(route) = route(snap, state) else { return };
    if !route.request_headers.is_empty() {
        with_vars(snap, state, |vars| route.request_headers.apply(vars, upstream));
    }
    if route.compress.is_some() && session.cache.enabled() {
        let _ = upstream.insert_header(http::header::ACCEPT_ENCODING, "identity");
    }
}

/// Switch Pingora's compression module on for this request when the route compresses and the
/// client accepts one of its encodings. The module parsed `Accept-Encoding` before the route
/// was known (and ignores q-values): it is handed just the encoding chosen here.
pub(super) fn enable_compression(snap: &Snapshot, session: &mut Session, state: &mut RequestState) {
    let Some(settings) = route(snap, state).and_then(|r| r.compress.as_ref()) else { return };
    // A background request's answer goes to no client.
    if session.subrequest_ctx.is_some() {
        return;
    }
    let Some(encoding) = settings.choose(&session.req_header().headers) else { return };
    let Some(ctx) = session.downstream_modules_ctx.get_mut::<ResponseCompression>() else { return };
    let algorithm = match encoding {
        compress::Encoding::Zstd => Algorithm::Zstd,
        compress::Encoding::Brotli => Algorithm::Brotli,
        compress::Encoding::Gzip => Algorithm::Gzip,
    };
    ctx.adjust_algorithm_level(algorithm, settings.level(encoding));
    ctx.adjust_decompression(false);
    let Ok(mut accept) = RequestHeader::build("GET", b"/", Some(1)) else { return };
    if accept.insert_header(http::header::ACCEPT_ENCODING, compress::module_accept(encoding)).is_ok() {
        ctx.request_filter(&accept);
        state.compressing = true;
    }
}

/// A gateway answer is small and already final: no compression.
pub(super) fn no_compression(session: &mut Session, state: &RequestState) {
    if state.compressing {
        if let Some(ctx) = session.downstream_modules_ctx.get_mut::<ResponseCompression>() {
            ctx.adjust_level(0);
        }
    }
}

/// The cache key of a request on a caching route: route, the host and scheme the upstream is
/// told (`Host` — which `X-Forwarded-Host` repeats — exactly as sent, port and case included, and
/// `X-Forwarded-Proto`), normalised path and query. A backend builds links and redirects from
/// that host and scheme and may pick a virtual host by them, so an answer built for one spelling
/// is never served to another. Parts are length-prefixed so no two different lists run together;
/// GET and HEAD share the key. The purge tag (route and path, every host) rides along for the
/// storage.
pub(super) fn cache_key(snap: &Snapshot, session: &Session, state: &RequestState) -> Option<CacheKey> {
    let route = route(snap, state)?;
    let path = state.cache.path.as_deref()?;
    let headers = &session.req_header().headers;
    let host = headers.get(http::header::HOST).map_or(&b""[..], |h| h.as_bytes());
    let from_trusted = snap.config.trusted_proxies.contains(&state.client.peer);
    let mut primary = Vec::with_capacity(route.label.len() + host.len() + path.len() + 64);
    let mut push = |part: &[u8]| {
        primary.extend_from_slice(&(part.len() as u64).to_be_bytes());
        primary.extend_from_slice(part);
    };
    push(route.label.as_bytes());
    push(host);
    if forwarding::passes_forwarded_proto(headers, from_trusted) {
        for proto in headers.get_all("x-forwarded-proto") {
            push(proto.as_bytes());
        }
    } else {
        push(forwarding::listener_proto(state.client.tls.is_some()).as_bytes());
    }
    push(path.as_bytes());
    let mut key = CacheKey::new(primary, "");
    key.extensions.insert(PurgeTag(purge_tag(&route.label, path)));
    Some(key)
}

/// What selects among a path's cached variants: the route's `vary` headers and the response's
/// own `Vary` (`response`: the headers of the stored or arriving answer); the accepted encodings
/// when the route does not compress (the upstream may have); and, on routes that are not
/// public, who asked ([`cache::Owner`]: scheme and name) — unless the response is
/// `Cache-Control: public`.
pub(super) fn cache_variance(
    snap: &Snapshot,
    state: &RequestState,
    response: &http::HeaderMap,
    req: &RequestHeader,
) -> Option<HashBinary> {
    let route = route(snap, state)?;
    let cache = route.cache.as_ref()?;
    let mut names: Vec<String> = cache.vary.iter().map(|h| h.as_str().to_string()).collect();
    for line in response.get_all(http::header::VARY) {
        if let Ok(text) = line.to_str() {
            names.extend(text.split(',').map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()));
        }
    }
    let mut variance = VarianceBuilder::new();
    for name in &names {
        if name == "accept-encoding" {
            continue;
        }
        let value: Vec<u8> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .flat_map(|v| v.as_bytes().iter().copied().chain([b',']))
            .collect();
        variance.add_owned_name_value(name.clone(), value);
    }
    if route.compress.is_none() {
        variance.add_owned_name_value("siger-accept-encoding".into(), accepted_encodings(&req.headers).into_bytes());
    }
    if route.auth != crate::config::AuthMode::Public && !cache::is_public(response) {
        match cache::owner(state.identity.as_deref()) {
            cache::Owner::Named { scheme, name } => {
                variance.add_value("siger-identity-scheme", scheme);
                variance.add_value("siger-identity", name);
            }
            cache::Owner::Anonymous => variance.add_value("siger-identity", ""),
            // Never cached ([`cache_enabled_for`]); should one get here, it matches nothing
            // another caller stored.
            cache::Owner::Unnamed => variance.add_value("siger-identity-scheme", "unnamed"),
        }
    }
    variance.finalize()
}

/// Whether a caching route's cache is used for this caller: not for one that cannot be told
/// apart from others ([`cache::Owner::Unnamed`]) on a route whose entries are per caller.
pub(super) fn cache_enabled_for(snap: &Snapshot, state: &RequestState) -> bool {
    route(snap, state).is_some_and(|r| {
        r.auth == crate::config::AuthMode::Public || cache::owner(state.identity.as_deref()) != cache::Owner::Unnamed
    })
}

/// Whether the request going upstream carries credentials the cache key does not hold (see
/// [`cache::unkeyed_credentials`]): its answer is stored only if it says it may be shared.
pub(super) fn unkeyed_credentials(snap: &Snapshot, state: &RequestState, upstream: &RequestHeader) -> bool {
    let Some(route) = route(snap, state).filter(|r| r.cache.is_some()) else { return false };
    let keyed_by_authorization = route.auth != crate::config::AuthMode::Public
        && state
            .identity
            .as_ref()
            .is_some_and(|i| matches!(i.scheme, crate::auth::Scheme::Jwt | crate::auth::Scheme::Telegram));
    cache::unkeyed_credentials(&upstream.headers, keyed_by_authorization)
}

/// The encodings a client accepts, as a canonical list (`br,gzip`): variants are kept per
/// what a client can decode, not per spelling of its header.
fn accepted_encodings(headers: &http::HeaderMap) -> String {
    let all = compress::CompressSettings {
        encodings: vec![compress::Encoding::Brotli, compress::Encoding::Gzip, compress::Encoding::Zstd],
        ..Default::default()
    };
    let mut accepted: Vec<&str> = Vec::new();
    for e in &all.encodings {
        let only = compress::CompressSettings { encodings: vec![*e], ..Default::default() };
        if only.choose(headers).is_some() {
            accepted.push(e.token());
        }
    }
    accepted.join(",")
}

/// Whether a response on this request's route is stored, and for how long
/// ([`crate::policy::cache::storable`]).
pub(super) fn cacheable(snap: &Snapshot, state: &RequestState, resp: &ResponseHeader) -> RespCacheable {
    match route(snap, state) {
        Some(route) => match &route.cache {
            Some(settings) => {
                cache::storable(settings, route.compress.is_some(), state.cache.unkeyed_credentials, resp)
            }
            None => RespCacheable::Uncacheable(NoCacheReason::NeverEnabled),
        },
        None => RespCacheable::Uncacheable(NoCacheReason::NeverEnabled),
    }
}
