//! The request target and its host (RFC 9112 §3.2): which form the target takes, and the one
//! host that routing, authentication and the upstream all agree on.
//!
//! An absolute-form target (`GET http://api.example.com/x`) carries the authority that replaces
//! `Host` (RFC 9112 §3.2.2); Pingora already refuses one that disagrees with a `Host` header, a
//! second `Host`, and userinfo. What is left to us: route on that authority when `Host` is
//! absent (and tell the upstream the same host), refuse HTTP/1.1 requests that name no host at
//! all, refuse host values that are not a host, and refuse targets that are neither a path nor
//! an absolute URI (`GET admin HTTP/1.1`), which a backend would resolve in its own way.

/// Why a request target or host was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetError {
    /// Neither `/path` nor `http(s)://authority/path`.
    #[error("the request target must be an absolute path (`/…`) or an absolute URI")]
    NotOriginOrAbsolute,
    /// A `#` in the target: fragments are never sent (RFC 9112 §3.2), and servers disagree on
    /// whether what follows is part of the path.
    #[error("the request target contains a fragment (`#`)")]
    Fragment,
    /// Bytes that are not UTF-8 in the target: what the router reads and what the backend
    /// receives would differ.
    #[error("the request target is not valid UTF-8")]
    NotUtf8,
    /// `OPTIONS *`: the gateway has no server-wide options to tell.
    #[error("the asterisk-form request target (`*`) is not supported")]
    Asterisk,
    /// HTTP/1.1 (or later) without `Host` and without an absolute-form authority.
    #[error("the request names no host: a Host header is required")]
    MissingHost,
    /// `Host` (or the target's authority) is not `host[:port]`.
    #[error("the Host header is not a valid host[:port]")]
    InvalidHost,
}

/// The host a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestHost<'a> {
    /// `host[:port]` as the client wrote it; `None` only for HTTP/1.0 requests that name none.
    pub(crate) authority: Option<&'a str>,
    /// The authority came from an absolute-form target and the request has no `Host` header:
    /// the gateway adds one, so the upstream is told the host that was routed.
    pub(crate) add_host_header: bool,
}

/// Check the target form and find the request's host.
///
/// `raw_target` is the request target as received; `uri_authority` the authority Pingora parsed
/// from it (absolute form, or HTTP/2 `:authority`); `host` the `Host` header (Pingora refuses a
/// second one); `requires_host` is true for HTTP/1.1 and later.
pub(crate) fn request_host<'a>(
    raw_target: &'a [u8],
    uri_authority: Option<&'a str>,
    host: Option<&'a [u8]>,
    requires_host: bool,
) -> Result<RequestHost<'a>, TargetError> {
    let uri_authority = match raw_target.first() {
        Some(b'/') => uri_authority,
        Some(b'*') if raw_target.len() == 1 => return Err(TargetError::Asterisk),
        // Pingora keeps only the path in the URI of an absolute-form request: read the
        // authority from the target itself (Pingora checked it agrees with any Host).
        _ if is_absolute_http(raw_target) => {
            Some(std::str::from_utf8(absolute_authority(raw_target)).map_err(|_| TargetError::InvalidHost)?)
        }
        _ => return Err(TargetError::NotOriginOrAbsolute),
    };
    if raw_target.contains(&b'#') {
        return Err(TargetError::Fragment);
    }
    if std::str::from_utf8(raw_target).is_err() {
        return Err(TargetError::NotUtf8);
    }
    let host = match host {
        Some(h) => Some(std::str::from_utf8(h).map_err(|_| TargetError::InvalidHost)?),
        None => None,
    };
    let (authority, add_host_header) = match (host, uri_authority) {
        (Some(h), _) => (Some(h), false),
        (None, Some(a)) => (Some(a), true),
        (None, None) if requires_host => return Err(TargetError::MissingHost),
        (None, None) => (None, false),
    };
    if authority.is_some_and(|a| !is_valid_authority(a.as_bytes())) {
        return Err(TargetError::InvalidHost);
    }
    Ok(RequestHost { authority, add_host_header })
}

/// `http://` or `https://`, any case.
fn is_absolute_http(target: &[u8]) -> bool {
    let scheme_end = target.iter().position(|b| *b == b':');
    match scheme_end {
        Some(n) => {
            let scheme = &target[..n];
            (scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https"))
                && target[n..].starts_with(b"://")
        }
        None => false,
    }
}

/// The authority of an absolute-form target: after `://`, up to the path, query or fragment.
fn absolute_authority(target: &[u8]) -> &[u8] {
    let start = target.windows(3).position(|w| w == b"://").map_or(target.len(), |i| i + 3);
    let rest = &target[start..];
    let end = rest.iter().position(|b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(rest.len());
    &rest[..end]
}

/// `host[:port]` where host is a DNS name, an IPv4 address or a bracketed IPv6 literal, and
/// port is 1–5 digits. Stricter than RFC 3986's reg-name (no `,`, `;`, `%`, spaces…): nothing
/// a real host name needs, and each of those has been used to confuse one hop or another.
pub(crate) fn is_valid_authority(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|b| *b == b']') else { return false };
        let literal = &value[1..end];
        if literal.is_empty() || !literal.iter().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')) {
            return false;
        }
        match &value[end + 1..] {
            [] => (&value[..=end], None),
            [b':', port @ ..] => (&value[..=end], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|b| *b == b':') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        }
    };
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(p).ok().and_then(|s| s.parse::<u16>().ok()).is_some()
    });
    let host_ok = host.first() == Some(&b'[')
        || (!host.is_empty()
            && host.len() <= 253
            && host.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            && !host.starts_with(b".")
            && !host.windows(2).any(|w| w == b".."));
    port_ok && host_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(
        target: &'static str,
        authority: Option<&'static str>,
        h: Option<&'static str>,
    ) -> Result<RequestHost<'static>, TargetError> {
        request_host(target.as_bytes(), authority, h.map(str::as_bytes), true)
    }

    #[test]
    fn origin_form_uses_host() {
        let r = host("/billing/x", None, Some("api.example.com")).expect("valid");
        assert_eq!(r, RequestHost { authority: Some("api.example.com"), add_host_header: false });
        assert_eq!(host("/x", None, None), Err(TargetError::MissingHost));
        let old = request_host(b"/x", None, None, false).expect("HTTP/1.0 may omit Host");
        assert_eq!(old.authority, None);
    }

    #[test]
    fn absolute_form_authority_replaces_a_missing_host() {
        let r = host("http://api.example.com/billing/x", None, None).expect("valid");
        assert_eq!(r, RequestHost { authority: Some("api.example.com"), add_host_header: true });
        let r = host("HTTPS://api.example.com:8443?x", None, None).expect("valid");
        assert_eq!(r.authority, Some("api.example.com:8443"));
        assert_eq!(host("http:///x", None, None), Err(TargetError::InvalidHost));
    }

    #[test]
    fn other_target_forms_are_refused() {
        assert_eq!(host("admin", None, Some("a")), Err(TargetError::NotOriginOrAbsolute));
        assert_eq!(host("*", None, Some("a")), Err(TargetError::Asterisk));
        assert_eq!(host("ftp://a/x", None, None), Err(TargetError::NotOriginOrAbsolute));
        assert_eq!(host("", None, Some("a")), Err(TargetError::NotOriginOrAbsolute));
        assert_eq!(host("/pub#/../admin", None, Some("a")), Err(TargetError::Fragment));
        assert_eq!(host("http://a/x?y#z", None, None), Err(TargetError::Fragment));
        assert_eq!(request_host(b"/a\xff", None, Some(b"a"), true), Err(TargetError::NotUtf8));
    }

    #[test]
    fn host_values() {
        for good in ["a", "api.example.com", "api.example.com:8080", "10.0.0.1:1", "[::1]", "[::1]:8080", "x_y.local"] {
            assert!(is_valid_authority(good.as_bytes()), "{good}");
        }
        for bad in [
            "", "host:abc", "a, b", "a b", "host:", ":80", "[::1", "[]", "[::1]x", "a:99999", "a:123456", ".a", "a..b",
            "a;b", "a%20b", "a/b", "a@b",
        ] {
            assert!(!is_valid_authority(bad.as_bytes()), "{bad}");
        }
        assert_eq!(host("/x", None, Some("host:abc")), Err(TargetError::InvalidHost));
        assert_eq!(host("/x", None, Some("")), Err(TargetError::InvalidHost));
    }
}
