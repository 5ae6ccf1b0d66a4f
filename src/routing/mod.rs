//! Routing: normalise the request path, then find the route by longest prefix, host and method.
//! Pure functions over plain types; the proxy calls [`Router::route`].

mod table;
mod target;

// Path normalisation is a leaf of its own (config checks route paths with it); routing re-exports it.
pub(crate) use crate::normalize::{normalize_path, route_path, PathError};
pub(crate) use table::{RouteMatch, RouteTable};
pub(crate) use target::{request_host, TargetError};

/// The host of a `Host` header or URI authority: lower-case, without port.
pub(crate) fn host_without_port(host: &str) -> String {
    let h = host.trim();
    let bare = if let Some(rest) = h.strip_prefix('[') {
        // IPv6 literal: keep the brackets, drop the port.
        match rest.find(']') {
            Some(end) => &h[..end + 2],
            None => h,
        }
    } else {
        h.rsplit_once(':').map_or(h, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { h })
    };
    bare.trim_end_matches('.').to_ascii_lowercase()
}

/// The path sent upstream: the normalised path, minus the route prefix when `strip_prefix`.
/// The prefix was matched on the [`route_path`]; with path parameters the same number of
/// named segments is removed, parameters and all.
pub(crate) fn upstream_path<'a>(normalized: &'a str, prefix: &str, strip_prefix: bool) -> &'a str {
    if !strip_prefix || prefix == "/" {
        return normalized;
    }
    if normalized.contains(';') {
        return strip_segments(normalized, prefix.split('/').filter(|s| !s.is_empty()).count());
    }
    match normalized.strip_prefix(prefix) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => normalized,
    }
}

/// `path` without its first `n` named segments (segments whose name before `;` is empty do
/// not count, as [`route_path`] drops them).
fn strip_segments(path: &str, mut n: usize) -> &str {
    let mut rest = path;
    while n > 0 {
        let Some(after_slash) = rest.strip_prefix('/') else { break };
        let end = after_slash.find('/').map_or(after_slash.len(), |i| i);
        let segment = &after_slash[..end];
        if !segment.split(';').next().unwrap_or_default().is_empty() {
            n -= 1;
        }
        rest = &after_slash[end..];
    }
    if rest.is_empty() {
        "/"
    } else {
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_without_port("API.Example.com:8080"), "api.example.com");
        assert_eq!(host_without_port("api.example.com."), "api.example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn strip() {
        assert_eq!(upstream_path("/billing/wallets/1", "/billing", true), "/wallets/1");
        assert_eq!(upstream_path("/billing", "/billing", true), "/");
        assert_eq!(upstream_path("/billing/", "/billing", true), "/");
        assert_eq!(upstream_path("/billing/x", "/billing", false), "/billing/x");
        assert_eq!(upstream_path("/x", "/", true), "/x");
        assert_eq!(upstream_path("/billing;v=1/wallets;a/1", "/billing", true), "/wallets;a/1");
        assert_eq!(upstream_path("/;x/billing;v=1/w", "/billing", true), "/w");
        assert_eq!(upstream_path("/a;p/b;q", "/a/b", true), "/");
        assert_eq!(upstream_path("/a;p/b;q/", "/a/b", true), "/");
    }
}
