//! Path normalisation (ARCHITECTURE.md §6): the gateway routes on the path the backend will
//! resolve, so `.`/`..`, `//` and escaped dots cannot reach a route other than the one matched.

use std::borrow::Cow;

/// Why a request path was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// Not an absolute path.
    #[error("the request path must start with `/`")]
    NotAbsolute,
    /// `%2F`, `%5C` or `%00`: a backend might decode it into a separator or terminator.
    #[error("encoded `/`, `\\` or NUL in the path")]
    EncodedSeparator,
    /// A raw backslash, which some backends treat as `/`.
    #[error("backslash in the path")]
    Backslash,
    /// `%` not followed by two hex digits.
    #[error("malformed percent-escape in the path")]
    BadEscape,
    /// `..` above the root.
    #[error("`..` climbs above the root")]
    AboveRoot,
    /// `..;x` or `.;x`: Java servlet containers resolve these as dot segments, other servers as
    /// names, so no route choice can match both. Likewise `..` after a segment of parameters
    /// only (`/a/;x/..`): servlets drop the empty segment and climb above `a`, others climb
    /// above `;x` (found by the path fuzzer, src/fuzz.rs).
    #[error("a `.` or `..` segment with parameters (`;`), or `..` after a parameters-only segment, is ambiguous")]
    DotSegmentParameters,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalise an absolute request path (without the query string).
///
/// Decodes percent-escapes of unreserved characters once (other escapes are kept, upper-cased),
/// collapses `//`, resolves `.` and `..`. A trailing slash is kept.
pub(crate) fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let needs_work =
        bytes.windows(2).any(|w| w == b"//" || w == b"/.") || bytes.iter().any(|b| matches!(b, b'%' | b'\\'));
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }

    // Pass 1: escapes.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(h), Some(l)) =
                    (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
                else {
                    return Err(PathError::BadEscape);
                };
                let value = h << 4 | l;
                if matches!(value, b'/' | b'\\' | 0) {
                    return Err(PathError::EncodedSeparator);
                }
                if is_unreserved(value) {
                    decoded.push(value as char);
                } else {
                    decoded.push('%');
                    decoded.push(char::from(b"0123456789ABCDEF"[(value >> 4) as usize]));
                    decoded.push(char::from(b"0123456789ABCDEF"[(value & 15) as usize]));
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            _ => {
                // Copy the run up to the next special byte in one go (keeps UTF-8 intact).
                let end = bytes[i..].iter().position(|b| matches!(b, b'%' | b'\\')).map_or(bytes.len(), |p| i + p);
                decoded.push_str(&path[i..end]);
                i = end;
            }
        }
    }

    // Pass 2: segments.
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = false;
        if let Some((name, _)) = segment.split_once(';') {
            if name == "." || name == ".." {
                return Err(PathError::DotSegmentParameters);
            }
        }
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                match segments.pop() {
                    None => return Err(PathError::AboveRoot),
                    Some(popped) if popped.starts_with(';') => return Err(PathError::DotSegmentParameters),
                    Some(_) => {}
                }
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if segments.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// The path routes are matched on: path parameters (`;…` in a segment, RFC 3986 §3.3) removed
/// and the segments they leave empty dropped, because servlet containers resolve
/// `/admin;x=1/users` as `/admin/users`. Borrowed when the path has no `;`.
pub(crate) fn route_path(normalized: &str) -> Cow<'_, str> {
    if !normalized.contains(';') {
        return Cow::Borrowed(normalized);
    }
    let mut out = String::with_capacity(normalized.len());
    for segment in normalized.split('/').skip(1) {
        let name = segment.split_once(';').map_or(segment, |(name, _)| name);
        if !name.is_empty() {
            out.push('/');
            out.push_str(name);
        }
    }
    if out.is_empty() || normalized.ends_with('/') {
        out.push('/');
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize_path(p).map(|c| c.into_owned())
    }

    #[test]
    fn clean_paths_are_borrowed_unchanged() {
        for p in ["/", "/a", "/a/b/", "/a.b/c-d_e~f", "/ü"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(x)) if x == p), "{p}");
        }
    }

    #[test]
    fn dots_slashes_and_escapes() {
        assert_eq!(n("/a/../b").as_deref(), Ok("/b"));
        assert_eq!(n("/a/./b").as_deref(), Ok("/a/b"));
        assert_eq!(n("//a///b").as_deref(), Ok("/a/b"));
        assert_eq!(n("/a/%2e%2e/b").as_deref(), Ok("/b"));
        assert_eq!(n("/a/%2E./b").as_deref(), Ok("/b"));
        assert_eq!(n("/%61pi/x").as_deref(), Ok("/api/x"));
        assert_eq!(n("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/b/").as_deref(), Ok("/a/b/"));
        assert_eq!(n("/a/..").as_deref(), Ok("/"));
        assert_eq!(n("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(n("/a%3fb").as_deref(), Ok("/a%3Fb"));
        assert_eq!(n("/a%25%32e").as_deref(), Ok("/a%252e"), "decoded once only");
    }

    #[test]
    fn refusals() {
        assert_eq!(n("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%5Cb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%00"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a\\b"), Err(PathError::Backslash));
        assert_eq!(n("/a%2"), Err(PathError::BadEscape));
        assert_eq!(n("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/.."), Err(PathError::AboveRoot));
        assert_eq!(n("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(n("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(n("*"), Err(PathError::NotAbsolute));
        assert_eq!(n("/..;/admin/x"), Err(PathError::DotSegmentParameters));
        assert_eq!(n("/api/..;x=1/admin"), Err(PathError::DotSegmentParameters));
        assert_eq!(n("/a/;/.."), Err(PathError::DotSegmentParameters), "found by src/fuzz.rs");
        assert_eq!(n("/admin/;x=1/../x"), Err(PathError::DotSegmentParameters));
        assert_eq!(n("/api/%2e%2e;/admin"), Err(PathError::DotSegmentParameters));
        assert_eq!(n("/api/.;/admin"), Err(PathError::DotSegmentParameters));
    }

    #[test]
    fn path_parameters_are_kept_upstream_and_ignored_for_routing() {
        assert_eq!(n("/admin;x=1/x").as_deref(), Ok("/admin;x=1/x"));
        assert_eq!(route_path("/admin;x=1/x"), "/admin/x");
        assert_eq!(route_path("/;x=1/admin"), "/admin");
        assert_eq!(route_path("/a;jsessionid=1"), "/a");
        assert_eq!(route_path("/a;b/"), "/a/");
        assert_eq!(route_path("/;x"), "/");
        assert!(matches!(route_path("/plain/path"), Cow::Borrowed(_)));
    }
}
