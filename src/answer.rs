//! Every answer the gateway writes itself — errors, the public health check, the jobs 202, the
//! admin endpoints — is built here as a [`LocalAnswer`], so what every such answer carries
//! (JSON framing, `Cache-Control`, the request id, a closing connection) is decided once, and
//! headers that later policies add to every answer are added in one place. [`Stamp`] is the
//! one place that decides what every answer carries, proxied or the gateway's own.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;

/// A complete response the gateway answers with, without an upstream.
#[derive(Debug, Clone)]
pub(crate) struct LocalAnswer {
    /// Status code.
    pub(crate) status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The body (always sent with `Content-Length`).
    pub(crate) body: Bytes,
    /// Close the connection after this answer (unread body, suspect framing).
    pub(crate) close: bool,
}

impl LocalAnswer {
    /// A JSON answer: `value` plus a newline, `Content-Type: application/json`, never cached.
    pub(crate) fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut body = serde_json::to_vec(value).unwrap_or_default();
        body.push(b'\n');
        Self::bytes(status, "application/json", Bytes::from(body))
    }

    /// A body of `content_type`, never cached.
    pub(crate) fn bytes(status: u16, content_type: &'static str, body: Bytes) -> Self {
        LocalAnswer {
            status,
            headers: vec![
                (http::header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (http::header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
            close: false,
        }
    }

    /// `204 No Content`: no body, no `Content-Type`, no `Content-Length` (RFC 9110 §8.6).
    pub(crate) fn no_content() -> Self {
        LocalAnswer { status: 204, headers: Vec::new(), body: Bytes::new(), close: false }
    }

    /// Add a header (values that are not valid header text are left out: they come from our
    /// own formatting, never from a client).
    pub(crate) fn header(mut self, name: impl TryInto<HeaderName>, value: impl TryInto<HeaderValue>) -> Self {
        if let (Ok(name), Ok(value)) = (name.try_into(), value.try_into()) {
            self.headers.push((name, value));
        }
        self
    }

    /// Close the connection after this answer.
    pub(crate) fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Replace the `Content-Type` (one computed per answer).
    pub(crate) fn with_content_type(mut self, value: HeaderValue) -> Self {
        self.headers.retain(|(n, _)| n != http::header::CONTENT_TYPE);
        self.headers.push((http::header::CONTENT_TYPE, value));
        self
    }

    /// Whether a header of this name is set (tests read answers with it).
    #[cfg(test)]
    pub(crate) fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
    }

    /// The response head for a Pingora session.
    pub(crate) fn response_header(&self) -> ResponseHeader {
        #[allow(clippy::expect_used)]
        let mut resp = ResponseHeader::build(self.status, Some(self.headers.len() + 2))
            .or_else(|_| ResponseHeader::build(500, None))
            .expect("500 is a valid status");
        for (name, value) in &self.headers {
            let _ = resp.append_header(name.clone(), value.clone());
        }
        if self.status != 204 {
            let _ = resp.insert_header(http::header::CONTENT_LENGTH, self.body.len());
        }
        if self.close {
            let _ = resp.insert_header(http::header::CONNECTION, "close");
        }
        resp
    }

    /// The answer as HTTP/1.1 bytes, for a connection no Pingora session reads from (a request
    /// head that never arrived whole).
    pub(crate) fn to_http1(&self) -> Vec<u8> {
        let head = self.response_header();
        let reason = head.status.canonical_reason().unwrap_or("");
        let mut out = Vec::with_capacity(160 + self.body.len());
        out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", self.status).as_bytes());
        for (name, value) in head.headers.iter() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// The same answer as an `http::Response` (for Pingora's `ServeHttp` apps).
    pub(crate) fn into_http(self) -> http::Response<Vec<u8>> {
        let mut resp = http::Response::new(self.body.to_vec());
        *resp.status_mut() = http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let headers = resp.headers_mut();
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        headers.insert(http::header::CONTENT_LENGTH, self.body.len().into());
        if self.close {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// `X-Request-Id`, spelt as the gateway sends it upstream and in every answer (a name made
/// once: inserting it parses nothing).
pub(crate) static X_REQUEST_ID: pingora::http::CasedHeaderName =
    pingora::http::CasedHeaderName::from_static("x-request-id", "X-Request-Id");

/// What every answer carries, the backend's and the gateway's own alike: the request id, the
/// `RateLimit-*` headers of an admitted request, and the listener's `Strict-Transport-Security`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) rate_limit: Option<RateLimitHeaders>,
    pub(crate) hsts: Option<&'a HeaderValue>,
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (ARCHITECTURE.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimitHeaders {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    pub(crate) reset: u64,
}

impl Stamp<'_> {
    /// Put them on `head`, replacing what a backend sent under the same names: a backend's own
    /// request id or rate-limit figures would contradict the gateway's.
    pub(crate) fn apply(&self, head: &mut ResponseHeader) -> pingora::Result<()> {
        head.insert_header(&X_REQUEST_ID, self.request_id)?;
        if let Some(r) = self.rate_limit {
            head.insert_header("RateLimit-Limit", r.limit)?;
            head.insert_header("RateLimit-Remaining", r.remaining)?;
            head.insert_header("RateLimit-Reset", r.reset)?;
        }
        if let Some(value) = self.hsts {
            head.insert_header(http::header::STRICT_TRANSPORT_SECURITY, value.clone())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_carries_the_stamp() {
        let hsts = HeaderValue::from_static("max-age=63072000");
        let stamp = Stamp {
            request_id: "req-9",
            rate_limit: Some(RateLimitHeaders { limit: 10, remaining: 3, reset: 5 }),
            hsts: Some(&hsts),
        };
        let mut backend = ResponseHeader::build(200, None).expect("head");
        backend.insert_header("X-Request-Id", "backend-id").expect("header");
        backend.insert_header("RateLimit-Remaining", "999").expect("header");
        stamp.apply(&mut backend).expect("apply");
        let mut own = LocalAnswer::json(429, &serde_json::json!({})).response_header();
        stamp.apply(&mut own).expect("apply");
        for head in [&backend, &own] {
            let get = |n: &str| head.headers.get(n).map(|v| v.to_str().expect("text").to_owned());
            assert_eq!(get("x-request-id").as_deref(), Some("req-9"));
            assert_eq!(head.headers.get_all("x-request-id").iter().count(), 1);
            assert_eq!(get("ratelimit-limit").as_deref(), Some("10"));
            assert_eq!(get("ratelimit-remaining").as_deref(), Some("3"));
            assert_eq!(get("ratelimit-reset").as_deref(), Some("5"));
            assert_eq!(get("strict-transport-security").as_deref(), Some("max-age=63072000"));
        }
        let bare = Stamp { request_id: "r", rate_limit: None, hsts: None };
        let mut head = ResponseHeader::build(200, None).expect("head");
        bare.apply(&mut head).expect("apply");
        assert_eq!(head.headers.len(), 1);
    }

    #[test]
    fn json_answers_are_framed_and_uncached() {
        let a = LocalAnswer::json(202, &serde_json::json!({"ok": true})).header("Location", "/x").closing();
        let head = a.response_header();
        assert_eq!(head.status.as_u16(), 202);
        assert_eq!(head.headers.get("content-length").map(|v| v.as_bytes()), Some(&b"12"[..]));
        assert_eq!(head.headers.get("cache-control").map(|v| v.as_bytes()), Some(&b"no-store"[..]));
        assert_eq!(head.headers.get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
        let http = a.into_http();
        assert_eq!(http.headers()["location"], "/x");
        assert_eq!(http.body(), b"{\"ok\":true}\n");
    }

    #[test]
    fn http1_bytes_carry_status_headers_and_body() {
        let wire = LocalAnswer::json(408, &serde_json::json!({"error": "request_timeout"})).closing().to_http1();
        let text = String::from_utf8(wire).unwrap();
        assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text}");
        assert!(text.contains("\r\ncontent-length: 28\r\n") && text.contains("\r\nconnection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n{\"error\":\"request_timeout\"}\n"), "{text}");
    }
}
