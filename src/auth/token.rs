//! Finding the bearer token (RFC 6750 §2.1): exactly one `Authorization` header, scheme
//! `Bearer` in any case, a token of b64token characters shaped like a compact JWS. Tokens in
//! query strings or form bodies are deliberately not looked for: they end up in logs.

use super::Rejection;
use http::header::AUTHORIZATION;
use http::HeaderMap;

/// The token of the request, `Ok(None)` when there is no `Authorization` header at all.
pub fn bearer(headers: &HeaderMap, max_bytes: usize) -> Result<Option<&str>, Rejection> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Rejection::MultipleHeaders);
    }
    // The size check comes first so an oversized header costs no further work.
    if value.len() > max_bytes + "Bearer ".len() {
        return Err(Rejection::TooLarge { limit: max_bytes });
    }
    let value = value.to_str().map_err(|_| Rejection::Malformed("Authorization header is not ASCII"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Rejection::NotBearer);
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() {
        return Err(Rejection::Malformed("empty bearer token"));
    }
    if token.len() > max_bytes {
        return Err(Rejection::TooLarge { limit: max_bytes });
    }
    let b64token = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
    if !token.bytes().all(b64token) {
        return Err(Rejection::Malformed("token has characters outside the bearer token syntax"));
    }
    if token.bytes().filter(|c| *c == b'.').count() != 2 {
        return Err(Rejection::Malformed("token is not a compact JWS (header.payload.signature)"));
    }
    Ok(Some(token))
}

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
