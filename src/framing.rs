//! How a request says its body is framed (RFC 9112 §6): `Content-Length` and
//! `Transfer-Encoding`, read once, the same way for proxied routes and the jobs path.
//!
//! Pingora frames the body and already refuses differing `Content-Length` values and bad bytes.
//! What it lets through and we refuse: transfer codings other than `chunked` (it would drop
//! `gzip` from `gzip, chunked` and pass the still-encoded bytes on as if plain), and
//! `Transfer-Encoding` on HTTP/1.0, which has none (RFC 9112 §6.1).

use crate::errors::GatewayError;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::Version;
use pingora::http::RequestHeader;

/// How the body is framed, checked once per request: `Ok(Some(n))` for a `Content-Length` of
/// `n`, `Ok(None)` for no body or a chunked one. Refuses what [`check_transfer_coding`] and
/// [`declared_length`] refuse.
pub(crate) fn inspect(req: &RequestHeader) -> Result<Option<u64>, GatewayError> {
    if req.headers.contains_key(TRANSFER_ENCODING) {
        check_transfer_coding(req)?;
        return Ok(None);
    }
    declared_length(req)
}

/// Refuse transfer codings the gateway does not apply: only a single `chunked` is accepted.
pub(crate) fn check_transfer_coding(req: &RequestHeader) -> Result<(), GatewayError> {
    let mut codings = req.headers.get_all(TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_none() {
        return Ok(());
    }
    if req.version == Version::HTTP_10 || req.version == Version::HTTP_09 {
        return Err(GatewayError::BadRequest("Transfer-Encoding is not allowed in HTTP/1.0".into()));
    }
    let mut chunked = 0;
    for line in codings {
        for coding in line.as_bytes().split(|b| *b == b',') {
            let coding = coding.trim_ascii();
            if coding.eq_ignore_ascii_case(b"chunked") {
                chunked += 1;
            } else if !coding.is_empty() {
                return Err(GatewayError::UnsupportedTransferCoding);
            }
        }
    }
    if chunked == 1 {
        Ok(())
    } else {
        Err(GatewayError::BadRequest("Transfer-Encoding must be exactly `chunked`".into()))
    }
}

/// The body length announced by `Content-Length`, or `None` when there is none; for a request
/// without `Transfer-Encoding` ([`inspect`] has looked: `Transfer-Encoding` wins, RFC 9112
/// §6.3). Identical repeats (`5, 5`) are one length; Pingora already refused differing ones.
fn declared_length(req: &RequestHeader) -> Result<Option<u64>, GatewayError> {
    let invalid = || GatewayError::BadRequest("invalid Content-Length".into());
    let mut length = None;
    for value in req.headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(invalid());
            }
            let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err(GatewayError::BadRequest("conflicting Content-Length values".into()));
            }
            length = Some(n);
        }
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/x", None).expect("request");
        r.set_version(version);
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    #[test]
    fn only_plain_chunked_passes() {
        let ok = |h: &[(&str, &str)]| check_transfer_coding(&req(Version::HTTP_11, h));
        assert!(ok(&[]).is_ok());
        assert!(ok(&[("transfer-encoding", "chunked")]).is_ok());
        assert!(ok(&[("transfer-encoding", "Chunked ")]).is_ok());
        assert!(matches!(ok(&[("transfer-encoding", "gzip, chunked")]), Err(GatewayError::UnsupportedTransferCoding)));
        assert!(matches!(
            ok(&[("transfer-encoding", "gzip"), ("transfer-encoding", "chunked")]),
            Err(GatewayError::UnsupportedTransferCoding)
        ));
        assert!(matches!(ok(&[("transfer-encoding", "chunked, chunked")]), Err(GatewayError::BadRequest(_))));
        assert!(matches!(ok(&[("transfer-encoding", "")]), Err(GatewayError::BadRequest(_))));
        let old = check_transfer_coding(&req(Version::HTTP_10, &[("transfer-encoding", "chunked")]));
        assert!(matches!(old, Err(GatewayError::BadRequest(_))));
    }

    #[test]
    fn content_length() {
        let len = |h: &[(&str, &str)]| declared_length(&req(Version::HTTP_11, h)).map_err(|e| e.status());
        assert_eq!(len(&[]), Ok(None));
        assert_eq!(len(&[("content-length", "12")]), Ok(Some(12)));
        assert_eq!(len(&[("content-length", "5, 5")]), Ok(Some(5)));
        assert_eq!(len(&[("content-length", "5"), ("content-length", "5")]), Ok(Some(5)));
        assert_eq!(len(&[("content-length", "5, 6")]), Err(400));
        assert_eq!(len(&[("content-length", "+5")]), Err(400));
        assert_eq!(len(&[("content-length", "99999999999999999999")]), Err(400));
        // `Transfer-Encoding` wins: the request is checked for it before its length is read.
        let both = req(Version::HTTP_11, &[("content-length", "5"), ("transfer-encoding", "chunked")]);
        assert_eq!(inspect(&both).map_err(|e| e.status()), Ok(None));
    }
}
