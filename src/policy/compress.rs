//! Response compression per route (ARCHITECTURE.md §7.4), done by Pingora's response-compression
//! module: this module decides, per request, whether and how it runs — which encodings the
//! client accepts (q-values honoured, which Pingora's parser ignores), in our order of
//! preference, and which responses are left alone (small, already encoded, `no-transform`,
//! ranges).

pub use crate::config::{CompressSettings, Encoding};
use http::{HeaderMap, HeaderValue};

impl CompressSettings {
    /// The encoding for a client's `Accept-Encoding`: among ours the client accepts (q > 0,
    /// named or by `*`), the one with the client's highest q, ties to our preference.
    pub(crate) fn choose(&self, headers: &HeaderMap) -> Option<Encoding> {
        let mut best: Option<(f32, usize, Encoding)> = None;
        let accepted = accept_encoding(headers);
        for (rank, e) in self.encodings.iter().enumerate() {
            let q = accepted
                .iter()
                .find(|(t, _)| t.eq_ignore_ascii_case(e.token()))
                .or_else(|| accepted.iter().find(|(t, _)| t == "*"))
                .map_or(0.0, |(_, q)| *q);
            if q > 0.0 && best.is_none_or(|(bq, br, _)| q > bq || (q == bq && rank < br)) {
                best = Some((q, rank, *e));
            }
        }
        best.map(|(_, _, e)| e)
    }
}

/// `Accept-Encoding` as (token, q) pairs; malformed q-values count as 1 (RFC 9110 §12.4.2
/// allows at most three decimals; a client that cannot write one still asked for the coding).
fn accept_encoding(headers: &HeaderMap) -> Vec<(String, f32)> {
    let mut out = Vec::new();
    for line in headers.get_all(http::header::ACCEPT_ENCODING) {
        let Ok(line) = line.to_str() else { continue };
        for item in line.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if token.is_empty() {
                continue;
            }
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .next()
                .map_or(1.0, |v| v.trim().parse::<f32>().unwrap_or(1.0));
            out.push((token, q.clamp(0.0, 1.0)));
        }
    }
    out
}

/// Whether a response must be sent as it is whatever the client accepts: already encoded,
/// `Cache-Control: no-transform`, a range, or smaller than `min_size`.
pub(crate) fn leave_alone(status: u16, headers: &HeaderMap, min_size: u64) -> bool {
    let encoded =
        headers.get(http::header::CONTENT_ENCODING).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let no_transform = headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-transform"))));
    let small = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|len| len < min_size);
    status == 206 || headers.contains_key(http::header::CONTENT_RANGE) || encoded || no_transform || small
}

/// The `Accept-Encoding` to hand Pingora's module: just the chosen encoding (the module picks
/// the first the client lists and ignores q-values).
pub(crate) fn module_accept(e: Encoding) -> HeaderValue {
    HeaderValue::from_static(e.token())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ae(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT_ENCODING, HeaderValue::from_str(v).expect("value"));
        h
    }

    #[test]
    fn the_clients_q_values_then_our_preference() {
        let s = CompressSettings::default();
        assert_eq!(s.choose(&ae("gzip, deflate, br, zstd")), Some(Encoding::Zstd));
        assert_eq!(s.choose(&ae("gzip, br;q=0.5")), Some(Encoding::Gzip));
        assert_eq!(s.choose(&ae("br;q=0, gzip;q=0")), None, "q=0 refuses");
        assert_eq!(s.choose(&ae("*;q=0.1, zstd;q=0")), Some(Encoding::Brotli));
        assert_eq!(s.choose(&ae("identity")), None);
        assert_eq!(s.choose(&HeaderMap::new()), None);
        let gzip_only = CompressSettings { encodings: vec![Encoding::Gzip], ..Default::default() };
        assert_eq!(gzip_only.choose(&ae("br, zstd")), None);
    }

    #[test]
    fn encoded_small_ranged_and_no_transform_responses_are_left_alone() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(!leave_alone(200, &headers(&[("content-length", "5000")]), 1024));
        assert!(leave_alone(200, &headers(&[("content-length", "100")]), 1024));
        assert!(leave_alone(200, &headers(&[("content-encoding", "gzip")]), 1024));
        assert!(leave_alone(200, &headers(&[("cache-control", "public, no-transform")]), 1024));
        assert!(leave_alone(206, &headers(&[]), 1024));
        assert!(!leave_alone(200, &headers(&[]), 1024), "unknown length: compress");
    }
}
