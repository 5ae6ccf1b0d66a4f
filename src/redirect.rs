//! `redirect_https` listeners: every request is answered `308 Permanent Redirect` to the same
//! host, path and query on `https` (308 rather than 301 so a POST stays a POST with its body).
//! The host is checked exactly as the proxy checks it, so a redirect never points at a host a
//! client could not have routed to.

use crate::answer::LocalAnswer;
use crate::errors::GatewayError;
use crate::forwarding;
use crate::observability::access;
use crate::routing::{self, TargetError};
use async_trait::async_trait;
use bytes::Bytes;
use http::header::HOST;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use std::time::Instant;

/// The redirect answer of one listener.
#[derive(Debug, Clone)]
pub(crate) struct RedirectHttps {
    /// The HTTPS port redirects point at.
    pub(crate) port: u16,
    /// Write access-log lines (`access_log.enabled` at start).
    pub(crate) access_log: bool,
}

/// `https://host[:port]/path?query` for a request, or why its host cannot be redirected to.
pub(crate) fn location(req: &RequestHeader, port: u16) -> Result<String, TargetError> {
    let host = routing::request_host(
        req.raw_path(),
        req.uri.authority().map(|a| a.as_str()),
        req.headers.get(HOST).map(|h| h.as_bytes()),
        true,
    )?;
    let authority = host.authority.ok_or(TargetError::MissingHost)?;
    let name = routing::host_without_port(authority);
    if name.is_empty() {
        return Err(TargetError::InvalidHost);
    }
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    Ok(match port {
        443 => format!("https://{name}{path}"),
        _ => format!("https://{name}:{port}{path}"),
    })
}

#[async_trait]
impl ServeHttp for RedirectHttps {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let started = Instant::now();
        let request_id = forwarding::new_request_id();
        let req = session.req_header();
        let (answer, error) = match location(req, self.port) {
            Ok(to) => (
                LocalAnswer::bytes(308, "text/plain", Bytes::from(format!("Redirecting to {to}\n")))
                    .header(http::header::LOCATION, to.as_str()),
                None,
            ),
            Err(e) => {
                let err = GatewayError::from(e);
                (err.answer(&request_id), Some(err.code()))
            }
        };
        let answer = answer.header("X-Request-Id", request_id.as_str());
        if self.access_log {
            let client_ip = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| forwarding::ip_text(a.ip()))
                .unwrap_or_default();
            access::write(&access::AccessLine {
                request_id: &request_id,
                client_ip: &client_ip,
                method: req.method.as_str(),
                path: req.uri.path(),
                route: "-",
                service: "-",
                backend: None,
                status: answer.status,
                bytes_in: 0,
                bytes_out: answer.body.len(),
                duration: started.elapsed(),
                upstream_duration: None,
                error,
                http_version: access::http_version(req.version),
                tls_version: None,
                attempts: 0,
                user: None,
                trace_id: None,
                waf: None,
            });
        }
        answer.into_http()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).expect("request");
        if let Some(h) = host {
            r.insert_header("Host", h).expect("host");
        }
        r
    }

    #[test]
    fn same_host_path_and_query_on_https() {
        assert_eq!(
            location(&req("/a/b?x=1&y", Some("Example.com:8080")), 443).as_deref(),
            Ok("https://example.com/a/b?x=1&y")
        );
        assert_eq!(location(&req("/", Some("example.com")), 8443).as_deref(), Ok("https://example.com:8443/"));
        assert_eq!(location(&req("/p", Some("[::1]:80")), 443).as_deref(), Ok("https://[::1]/p"));
    }

    #[test]
    fn hosts_that_cannot_be_routed_are_refused() {
        assert!(location(&req("/", None), 443).is_err());
        assert!(location(&req("/", Some("evil.com/x")), 443).is_err());
        assert!(location(&req("/", Some("a b")), 443).is_err());
    }
}
