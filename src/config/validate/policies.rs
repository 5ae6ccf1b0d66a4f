//! `routes[].request_headers`, `response_headers`, `cors`, `compress`, `cache` and the top-level
//! `cache`: edge policies, compiled once.

use super::*;

/// Which way a rule set goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// The request sent upstream.
    Request,
    /// The response sent to the client.
    Response,
}

/// Headers the gateway sets itself (or that frame the message): rules may not touch them.
fn reserved(direction: Direction, name: &HeaderName, identity: &[HeaderName]) -> bool {
    let n = name.as_str();
    let framing = ["content-length", "transfer-encoding", "connection", "keep-alive", "te", "upgrade", "trailer"];
    if framing.contains(&n) {
        return true;
    }
    match direction {
        Direction::Request => {
            n.starts_with("x-forwarded-")
                || ["forwarded", "x-real-ip", "x-request-id", "x-client-cert-subject", "host"].contains(&n)
                // The conventional identity header stays reserved even where auth forwards
                // nothing, so a rule can never pose as an authenticated user.
                || n == "x-user-id"
                || identity.contains(name)
        }
        Direction::Response => {
            n.starts_with("access-control-")
                || n.starts_with("ratelimit-")
                || ["x-request-id", "x-cache", "strict-transport-security", "retry-after"].contains(&n)
        }
    }
}

pub(super) fn check_header_rules(
    key: &str,
    raw: Option<&RawHeaderRules>,
    direction: Direction,
    identity: &[HeaderName],
    p: &mut Problems,
) -> HeaderRules {
    let mut rules = HeaderRules::default();
    let Some(raw) = raw else { return rules };
    let name_of = |k: &str, name: &str, p: &mut Problems| -> Option<HeaderName> {
        let header = check_header_name(k, name, p)?;
        if reserved(direction, &header, identity) {
            p.add(k, format!("`{name}` is set by the gateway (or frames the message); rules cannot change it"));
            return None;
        }
        Some(header)
    };
    for (list, out, kind) in [(&raw.set, &mut rules.set, "set"), (&raw.add, &mut rules.add, "add")] {
        for (name, value) in list {
            let k = format!("{key}.{kind}.{name}");
            let Some(header) = name_of(&k, name, p) else { continue };
            match Template::parse(value) {
                Ok(t) => out.push((header, t)),
                Err(e) => p.add(k, e.to_string()),
            }
        }
    }
    for (i, name) in raw.remove.iter().enumerate() {
        if let Some(header) = name_of(&format!("{key}.remove[{i}]"), name, p) {
            rules.remove.push(header);
        }
    }
    rules
}

/// A list of tokens as one header value (`GET, POST`).
fn joined(key: &str, items: &[String], p: &mut Problems) -> Option<HeaderValue> {
    match HeaderValue::from_str(&items.join(", ")) {
        Ok(v) => Some(v),
        Err(_) => {
            p.add(key, "holds text a header cannot carry");
            None
        }
    }
}

pub(super) fn check_cors(key: &str, raw: &RawCors, p: &mut Problems) -> Option<CorsSettings> {
    let credentials = raw.credentials.unwrap_or(false);
    let origins = if raw.origins.iter().any(|o| o == "*") {
        if raw.origins.len() > 1 {
            p.add(format!("{key}.origins"), "`*` already allows every origin; list origins or `*` alone");
        }
        if credentials {
            p.add(
                format!("{key}.credentials"),
                "browsers refuse credentials with `Access-Control-Allow-Origin: *`; list the origins",
            );
        }
        Origins::Any
    } else {
        let mut list = Vec::new();
        for (i, o) in raw.origins.iter().enumerate() {
            let lower = o.trim().trim_end_matches('/').to_ascii_lowercase();
            let valid = (lower.starts_with("https://") || lower.starts_with("http://"))
                && lower.parse::<http::Uri>().is_ok_and(|u| u.host().is_some() && u.path() == "/");
            match HeaderValue::from_str(&lower) {
                Ok(v) if valid => list.push(v),
                _ => p.add(format!("{key}.origins[{i}]"), format!("`{o}` is not an origin (scheme://host[:port])")),
            }
        }
        if list.is_empty() {
            p.add(format!("{key}.origins"), "list at least one origin");
        }
        Origins::List(list)
    };
    let methods = raw.methods.clone().unwrap_or_else(|| vec!["GET".into(), "HEAD".into(), "POST".into()]);
    for (i, m) in methods.iter().enumerate() {
        if Method::from_bytes(m.as_bytes()).is_err() || m.to_ascii_uppercase() != *m {
            p.add(format!("{key}.methods[{i}]"), format!("`{m}` is not an upper-case HTTP method"));
        }
    }
    let names = |k: &str, list: &Option<Vec<String>>, p: &mut Problems| -> Option<HeaderValue> {
        let list = list.as_ref().filter(|l| !l.is_empty())?;
        for (i, h) in list.iter().enumerate() {
            check_header_name(&format!("{k}[{i}]"), h, p);
        }
        joined(k, list, p)
    };
    let headers = names(&format!("{key}.headers"), &raw.headers, p);
    let expose = names(&format!("{key}.expose"), &raw.expose, p);
    let max_age = raw.max_age.map(|d| HeaderValue::from(d.0.as_secs()));
    Some(CorsSettings {
        origins,
        methods: joined(&format!("{key}.methods"), &methods, p)?,
        headers,
        expose,
        credentials,
        max_age,
    })
}

pub(super) fn check_compress(key: &str, raw: &RawCompress, p: &mut Problems) -> Option<CompressSettings> {
    let detail = match raw {
        RawCompress::Enabled(false) => return None,
        RawCompress::Enabled(true) => return Some(CompressSettings::default()),
        RawCompress::Detailed(d) => d,
    };
    let mut settings = CompressSettings::default();
    if let Some(list) = &detail.algorithms {
        settings.encodings.clear();
        for (i, a) in list.iter().enumerate() {
            match Encoding::from_token(a) {
                Some(e) if !settings.encodings.contains(&e) => settings.encodings.push(e),
                Some(_) => p.add(format!("{key}.algorithms[{i}]"), format!("`{a}` is listed twice")),
                None => p.add(format!("{key}.algorithms[{i}]"), format!("`{a}` is not one of zstd, br, gzip")),
            }
        }
        if list.is_empty() {
            p.add(format!("{key}.algorithms"), "list at least one of zstd, br, gzip");
        }
    }
    if let Some(size) = detail.min_size {
        settings.min_size = size.0;
    }
    if let Some(level) = detail.level {
        if !(1..=9).contains(&level) {
            p.add(format!("{key}.level"), "must be between 1 and 9 (gzip's range; br and zstd use it too)");
        }
        settings.levels = [level.clamp(1, 9); 3];
        if level > 5 && settings.encodings.contains(&Encoding::Brotli) {
            p.warn(format!("{key}.level"), "brotli above 5 costs several times gzip's CPU per byte");
        }
    }
    Some(settings)
}

pub(super) fn check_route_cache(key: &str, raw: &RawRouteCache, p: &mut Problems) -> RouteCache {
    if raw.ttl.0.is_zero() {
        p.add(format!("{key}.ttl"), "must be positive");
    }
    let mut vary = Vec::new();
    for (i, h) in raw.vary.iter().enumerate() {
        if let Some(name) = check_header_name(&format!("{key}.vary[{i}]"), h, p) {
            vary.push(name);
        }
    }
    let max_entry = raw.max_entry.map_or(1 << 20, |s| s.0);
    if max_entry == 0 {
        p.add(format!("{key}.max_entry"), "must be positive");
    }
    RouteCache {
        ttl: raw.ttl.0,
        stale_while_revalidate: raw.stale_while_revalidate.map_or(Duration::ZERO, |d| d.0),
        stale_if_error: raw.stale_if_error.map_or(Duration::from_secs(60), |d| d.0),
        vary,
        max_entry,
    }
}

pub(super) fn check_cache(raw: Option<&RawCache>, routes: &[RouteSettings], p: &mut Problems) -> CacheSettings {
    let max_memory = raw.and_then(|c| c.max_memory).map_or(256 << 20, |s| s.0);
    if max_memory < (1 << 20) && routes.iter().any(|r| r.cache.is_some()) {
        p.add("cache.max_memory", "must be at least 1MiB");
    }
    if let Some(big) = routes.iter().position(|r| r.cache.as_ref().is_some_and(|c| c.max_entry > max_memory / 16)) {
        p.warn(
            format!("routes[{big}].cache.max_entry"),
            format!("entries above {} bytes (a 16th of cache.max_memory) are never stored", max_memory / 16),
        );
    }
    CacheSettings { max_memory }
}
