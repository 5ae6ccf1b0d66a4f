//! Finding the bearer token (RFC 6750 §2.1): exactly one `Authorization` header, scheme
//! `Bearer` in any case, a token of b64token characters shaped like a compact JWS. Tokens in
//! query strings or form bodies are deliberately not looked for: they end up in logs.

use super::Rejection;
use http::header::AUTHORIZATION;
use http::HeaderMap;

/// The token of the request, `Ok(None)` when there is no `Authorization` header at all.
pub(crate) fn bearer(headers: &HeaderMap, max_bytes: usize) -> Result<Option<&str>, Rejection> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Rejection::MultipleHeaders);
    }
    // The size check comes first so an oversized header costs no further work.
    if value.len() > max_bytes + "Bearer ".len() {
        return Err(Rejection::TooLarge { limit: max_bytes });
    }
    let value = value.as_bytes();
    let (scheme, rest) = match value.iter().position(|b| *b == b' ') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(Rejection::NotBearer);
    }
    let token = rest.trim_ascii_start().trim_ascii_end();
    if token.is_empty() {
        return Err(Rejection::Malformed("empty bearer token"));
    }
    if token.len() > max_bytes {
        return Err(Rejection::TooLarge { limit: max_bytes });
    }
    // One pass over the token (this runs on every request, cache hits included).
    let mut dots = 0;
    for &c in token {
        match B64TOKEN[c as usize] {
            1 => {}
            2 => dots += 1,
            _ => return Err(Rejection::Malformed("token has characters outside the bearer token syntax")),
        }
    }
    if dots != 2 {
        return Err(Rejection::Malformed("token is not a compact JWS (header.payload.signature)"));
    }
    // Every byte is ASCII by now.
    std::str::from_utf8(token).map(Some).map_err(|_| Rejection::Malformed("token is not ASCII"))
}

/// RFC 6750 b64token characters: 1 = allowed, 2 = `.` (counted), 0 = refused.
const B64TOKEN: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'+' | b'/' | b'=') {
            table[c] = 1;
        }
        c += 1;
    }
    table[b'.' as usize] = 2;
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn scheme_is_case_insensitive_and_token_is_trimmed() {
        for v in ["Bearer a.b.c", "bearer a.b.c", "BEARER  a.b.c ", "bEaReR a.b.c"] {
            assert_eq!(bearer(&headers(&[v]), 100).expect(v), Some("a.b.c"), "{v}");
        }
        assert_eq!(bearer(&headers(&[]), 100).expect("absent"), None);
    }

    #[test]
    fn rejections() {
        let reject = |vals: &[&str], max: usize| bearer(&headers(vals), max).expect_err("rejected").to_string();
        assert!(reject(&["Bearer a.b.c", "Bearer a.b.c"], 100).contains("more than one"));
        assert!(reject(&["Basic dXNlcjpwYXNz"], 100).contains("Bearer"));
        assert!(reject(&["Bearer"], 100).contains("empty"));
        assert!(reject(&["Bearer a.b"], 100).contains("compact JWS"));
        assert!(reject(&["Bearer a.b.c,d"], 100).contains("syntax"));
        assert!(reject(&[&format!("Bearer {}", "a".repeat(200))], 100).contains("larger than 100"));
        assert!(reject(&["Bearer a.b.c"], 3).contains("larger than 3"));
    }
}
