//! Which credentials a request presents: a bearer JWT or Telegram initData in
//! `Authorization`, or an API key in its own header. A route accepts some schemes; credentials
//! of any other scheme are refused (401), never ignored into an anonymous request.

use super::Rejection;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName};

pub use crate::config::Scheme;

/// The credentials of a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    /// None at all.
    Nothing,
    /// One credential of this scheme (`tma` data for Telegram).
    One(Scheme, &'a str),
}

/// What the request presents. `api_key_header` is the configured key header, if any. An
/// `Authorization` with another scheme, two `Authorization` lines, or an API key together with
/// `Authorization` are refused: the gateway would have to guess which one counts.
pub(crate) fn presented<'a>(
    headers: &'a HeaderMap,
    api_key_header: Option<&HeaderName>,
) -> Result<Presented<'a>, Rejection> {
    let mut authorization = headers.get_all(AUTHORIZATION).iter();
    let from_authorization = match authorization.next() {
        None => None,
        Some(_) if authorization.next().is_some() => return Err(Rejection::MultipleHeaders),
        Some(value) => {
            let text = value.to_str().map_err(|_| Rejection::Malformed("Authorization is not ASCII"))?;
            let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
            if scheme.eq_ignore_ascii_case("bearer") {
                Some(Presented::One(Scheme::Jwt, rest))
            } else if scheme.eq_ignore_ascii_case("tma") {
                Some(Presented::One(Scheme::Telegram, rest.trim()))
            } else {
                return Err(Rejection::NotBearer);
            }
        }
    };
    let api_key = api_key_header.filter(|h| headers.contains_key(*h));
    match (from_authorization, api_key) {
        (Some(_), Some(_)) => Err(Rejection::SeveralCredentials),
        (Some(p), None) => Ok(p),
        (None, Some(_)) => Ok(Presented::One(Scheme::ApiKey, "")),
        (None, None) => Ok(Presented::Nothing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn each_scheme_is_recognised_and_ambiguity_refused() {
        let key = HeaderName::from_static("x-api-key");
        assert_eq!(presented(&headers(&[]), Some(&key)), Ok(Presented::Nothing));
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer a.b.c")]), Some(&key)),
            Ok(Presented::One(Scheme::Jwt, "a.b.c"))
        );
        assert_eq!(
            presented(&headers(&[("authorization", "tma user=1&hash=ab")]), None),
            Ok(Presented::One(Scheme::Telegram, "user=1&hash=ab"))
        );
        assert_eq!(presented(&headers(&[("x-api-key", "k")]), Some(&key)), Ok(Presented::One(Scheme::ApiKey, "")));
        assert_eq!(
            presented(&headers(&[("x-api-key", "k")]), None),
            Ok(Presented::Nothing),
            "no keys configured: an ordinary header"
        );
        assert_eq!(presented(&headers(&[("authorization", "Basic dTpw")]), None), Err(Rejection::NotBearer));
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer a.b.c"), ("x-api-key", "k")]), Some(&key)),
            Err(Rejection::SeveralCredentials)
        );
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")]), None),
            Err(Rejection::MultipleHeaders)
        );
    }
}
