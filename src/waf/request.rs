//! What inspection sees of a request, built from plain values: the request line, the headers
//! as received (cookies included: the `Cookie` header feeds `REQUEST_COOKIES`), and the body
//! up to `waf.max_body`.
//!
//! Every body is inspected, whatever its Content-Type says: an origin may parse a body whatever
//! its label (a JSON decoder reading `text/plain`), so skipping bodies by type would be a way
//! around the rules. JSON (`application/json`, `+json`), forms (urlencoded and multipart) and
//! XML are parsed into arguments (`ARGS`, named as ModSecurity names them: `json.user.name`);
//! any other body is inspected as a whole (`REQUEST_BODY`), and the CRS itself refuses types
//! outside its `tx.allowed_request_content_type`.

use bytes::Bytes;
use std::net::SocketAddr;

/// A request as inspection sees it. Owned, so it can be inspected off the reactor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, … as received.
    pub method: String,
    /// The request target as received: path and query, still percent-encoded (the rules decode
    /// it themselves, several ways).
    pub uri: String,
    /// `HTTP/1.1`, `HTTP/2.0`, … (the CRS checks it against its allowed versions).
    pub protocol: String,
    /// Every header line, in order, names as received; values lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The client (after `trusted_proxies`), for the rules on `REMOTE_ADDR`.
    pub client: Option<SocketAddr>,
    /// The body, as far as it is inspected.
    pub body: Body,
}

/// The body of a [`Request`], as far as inspection goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Body {
    /// No body (or an empty one).
    #[default]
    None,
    /// The whole body, within `waf.max_body`.
    Inspected(Bytes),
    /// A body larger than `waf.max_body` (its length as far as known): `waf.on_large_body`
    /// decides.
    TooLarge(u64),
}

impl Request {
    /// A request without headers or body.
    pub fn new(method: impl Into<String>, uri: impl Into<String>, protocol: impl Into<String>) -> Request {
        Request {
            method: method.into(),
            uri: uri.into(),
            protocol: protocol.into(),
            headers: Vec::new(),
            client: None,
            body: Body::None,
        }
    }

    /// The request line and headers of a request as the proxy received it, from the client
    /// `client` (after `trusted_proxies`). The target is the origin form (path and query as
    /// received, still percent-encoded) whatever form the client sent.
    pub fn from_head(head: &pingora::http::RequestHeader, client: std::net::IpAddr) -> Request {
        let protocol = match head.version {
            http::Version::HTTP_09 => "HTTP/0.9",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_3 => "HTTP/3.0",
            _ => "HTTP/1.1",
        };
        let uri = head
            .uri
            .path_and_query()
            .map_or_else(|| String::from_utf8_lossy(head.raw_path()).into_owned(), |p| p.as_str().to_string());
        let mut request = Request::new(head.method.as_str(), uri, protocol);
        request.client = Some(SocketAddr::new(client, 0));
        // HTTP/2 carries the host in `:authority`; the rules read it as `Host`.
        if head.headers.get(http::header::HOST).is_none() {
            if let Some(authority) = head.uri.authority() {
                request.headers.push(("Host".to_string(), authority.as_str().to_string()));
            }
        }
        for (name, value) in &head.headers {
            request.headers.push((name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()));
        }
        request
    }

    /// Add a header line.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The `Content-Type` header, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.as_str())
    }

    /// Set the body: whole if it fits `max_body`, otherwise only its length. `declared` is the
    /// Content-Length when known; `bytes` what was read (reading `max_body` + 1 bytes is enough
    /// to know a body is larger).
    pub fn with_body(mut self, bytes: Bytes, declared: Option<u64>, max_body: u64) -> Request {
        self.body = Body::classify(bytes, declared, max_body);
        self
    }
}

impl Body {
    /// See [`Request::with_body`].
    pub fn classify(bytes: Bytes, declared: Option<u64>, max_body: u64) -> Body {
        let length = declared.unwrap_or(0).max(bytes.len() as u64);
        if length == 0 {
            Body::None
        } else if length > max_body {
            Body::TooLarge(length)
        } else {
            Body::Inspected(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_inspected_whole_or_described() {
        let body = Bytes::from_static(b"{\"a\":1}");
        assert_eq!(Body::classify(body.clone(), Some(7), 7), Body::Inspected(body.clone()));
        assert_eq!(Body::classify(body.clone(), Some(8), 7), Body::TooLarge(8));
        assert_eq!(Body::classify(body.clone(), None, 6), Body::TooLarge(7));
        assert_eq!(Body::classify(Bytes::new(), Some(0), 7), Body::None);
        assert_eq!(Body::classify(Bytes::new(), None, 7), Body::None);
    }

    #[test]
    fn a_proxied_head_is_read_as_received() {
        let mut head = pingora::http::RequestHeader::build("GET", b"/a%20b?q=1", None).expect("a head");
        head.insert_header("Cookie", "s=1").expect("a header");
        let r = Request::from_head(&head, "192.0.2.7".parse().expect("an ip"));
        assert_eq!((r.method.as_str(), r.uri.as_str(), r.protocol.as_str()), ("GET", "/a%20b?q=1", "HTTP/1.1"));
        assert_eq!(r.headers, [("cookie".to_string(), "s=1".to_string())]);
        assert_eq!(r.client.map(|c| c.ip().to_string()).as_deref(), Some("192.0.2.7"));
        // An HTTP/2 head as Pingora builds it: the authority in the URI, no Host header.
        let mut h2 = pingora::http::RequestHeader::build("POST", b"/x", None).expect("a head");
        h2.set_uri(http::Uri::from_static("https://api.example.com/x"));
        h2.set_version(http::Version::HTTP_2);
        let r = Request::from_head(&h2, "::1".parse().expect("an ip"));
        assert_eq!((r.uri.as_str(), r.protocol.as_str()), ("/x", "HTTP/2.0"));
        assert_eq!(r.headers, [("Host".to_string(), "api.example.com".to_string())]);
    }

    #[test]
    fn a_request_is_built_from_plain_values() {
        let r = Request::new("POST", "/api/items?x=1", "HTTP/1.1")
            .header("Host", "api.example.com")
            .header("Content-Type", "application/json")
            .with_body(Bytes::from_static(b"{}"), Some(2), 1024);
        assert_eq!(r.content_type(), Some("application/json"));
        assert_eq!(r.body, Body::Inspected(Bytes::from_static(b"{}")));
    }
}
