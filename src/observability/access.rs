//! One JSON access-log line per request. `RUST_LOG=access=off` (or `access_log.enabled: false`)
//! silences it.
//!
//! Every request pays for this line, so it is written straight into a reused per-thread buffer
//! and handed to the log sink in one piece: no intermediate strings, no `log` formatting.

use super::logger;
use std::cell::RefCell;
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Longest path written to the log; longer ones are cut (an attacker controls its length).
const MAX_LOGGED_PATH: usize = 1024;

/// The fields of one access-log line.
#[derive(Debug)]
pub(crate) struct AccessLine<'a> {
    /// The request id returned to the client.
    pub(crate) request_id: &'a str,
    /// Client IP after `trusted_proxies` rules.
    pub(crate) client_ip: &'a str,
    /// Request method.
    pub(crate) method: &'a str,
    /// Request path as received (query excluded; cut at 1 KiB).
    pub(crate) path: &'a str,
    /// Route label, `-` when unmatched.
    pub(crate) route: &'a str,
    /// Service name, `-` when not proxied.
    pub(crate) service: &'a str,
    /// Backend of the last attempt.
    pub(crate) backend: Option<SocketAddr>,
    /// Status sent to the client (0 when none could be sent).
    pub(crate) status: u16,
    /// Request body bytes read.
    pub(crate) bytes_in: usize,
    /// Response body bytes sent.
    pub(crate) bytes_out: usize,
    /// Whole request time.
    pub(crate) duration: Duration,
    /// Time from the upstream request to its response headers.
    pub(crate) upstream_duration: Option<Duration>,
    /// Error code, when the gateway answered with an error.
    pub(crate) error: Option<&'a str>,
    /// `HTTP/1.1`, `HTTP/2`, …
    pub(crate) http_version: &'static str,
    /// `TLSv1.3` or `TLSv1.2` on TLS connections.
    pub(crate) tls_version: Option<&'static str>,
    /// Upstream attempts (0: none was made; more than 1: retried).
    pub(crate) attempts: u32,
    /// The verified caller (`sub`: a token's subject, an API key's consumer, a Telegram user).
    pub(crate) user: Option<&'a str>,
    /// The request's trace (tracing on).
    pub(crate) trace_id: Option<opentelemetry::trace::TraceId>,
    /// Request inspection's verdict (inspecting routes): `waf_score`, `waf_rules`.
    pub(crate) waf: Option<&'a crate::waf::Verdict>,
}

/// The protocol as the access log names it.
pub(crate) fn http_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Cut a path to the logged length on a char boundary.
pub(crate) fn truncate_path(path: &str) -> &str {
    if path.len() <= MAX_LOGGED_PATH {
        return path;
    }
    let mut end = MAX_LOGGED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

/// Append `s` as a JSON string (quotes included).
fn push_json_str(out: &mut String, s: &str) {
    if !s.bytes().any(needs_escape) {
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

fn push_ms(out: &mut String, d: Duration) {
    // Microsecond resolution is plenty and keeps the number short.
    let micros = d.as_micros() as u64;
    push_u64(out, micros / 1000);
    let frac = micros % 1000;
    out.push('.');
    out.push(char::from(b'0' + (frac / 100) as u8));
    out.push(char::from(b'0' + (frac / 10 % 10) as u8));
    out.push(char::from(b'0' + (frac % 10) as u8));
}

impl AccessLine<'_> {
    /// The JSON object, one line, appended to `out`.
    pub(crate) fn render(&self, out: &mut String) {
        out.push_str("{\"time\":\"");
        logger::push_rfc3339_now(out);
        out.push_str("\",\"request_id\":");
        push_json_str(out, self.request_id);
        out.push_str(",\"client_ip\":");
        push_json_str(out, self.client_ip);
        out.push_str(",\"method\":");
        push_json_str(out, self.method);
        out.push_str(",\"path\":");
        push_json_str(out, truncate_path(self.path));
        out.push_str(",\"route\":");
        push_json_str(out, self.route);
        out.push_str(",\"service\":");
        push_json_str(out, self.service);
        if let Some(user) = self.user {
            out.push_str(",\"user\":");
            push_json_str(out, user);
        }
        if let Some(trace_id) = self.trace_id {
            let mut field = *b",\"trace_id\":\"00000000000000000000000000000000\"";
            let _ = hex::encode_to_slice(trace_id.to_bytes(), &mut field[13..45]);
            out.push_str(std::str::from_utf8(&field).unwrap_or_default());
        }
        match self.backend {
            Some(SocketAddr::V4(b)) => {
                out.push_str(",\"backend\":\"");
                crate::forwarding::push_ip(out, IpAddr::V4(*b.ip()));
                out.push(':');
                push_u64(out, u64::from(b.port()));
                out.push('"');
            }
            Some(b) => {
                let _ = write!(out, ",\"backend\":\"{b}\"");
            }
            None => out.push_str(",\"backend\":\"-\""),
        }
        out.push_str(",\"status\":");
        push_u64(out, u64::from(self.status));
        out.push_str(",\"bytes_in\":");
        push_u64(out, self.bytes_in as u64);
        out.push_str(",\"bytes_out\":");
        push_u64(out, self.bytes_out as u64);
        out.push_str(",\"duration_ms\":");
        push_ms(out, self.duration);
        if let Some(u) = self.upstream_duration {
            out.push_str(",\"upstream_duration_ms\":");
            push_ms(out, u);
        }
        if let Some(e) = self.error {
            out.push_str(",\"error\":");
            push_json_str(out, e);
        }
        if let Some(verdict) = self.waf {
            out.push_str(",\"waf_score\":");
            push_u64(out, u64::from(verdict.score));
            out.push_str(",\"waf_rules\":[");
            for (i, rule) in verdict.rules.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_u64(out, u64::from(*rule));
            }
            out.push(']');
        }
        if self.attempts > 0 {
            out.push_str(",\"attempts\":");
            push_u64(out, u64::from(self.attempts));
        }
        out.push_str(",\"http_version\":\"");
        out.push_str(self.http_version);
        out.push('"');
        if let Some(tls) = self.tls_version {
            out.push_str(",\"tls_version\":\"");
            out.push_str(tls);
            out.push('"');
        }
        out.push_str("}\n");
    }
}

/// Emit the line (unless the access log is filtered out by `RUST_LOG`).
pub(crate) fn write(line: &AccessLine<'_>) {
    thread_local! {
        static BUFFER: RefCell<String> = RefCell::new(String::with_capacity(512));
    }
    if !logger::access_enabled() {
        return;
    }
    BUFFER.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        line.render(&mut buf);
        logger::append_line(buf.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_json_with_escapes() {
        let verdict = crate::waf::Verdict { score: 10, rules: vec![942100, 949110], ..Default::default() };
        let line = AccessLine {
            request_id: "r-1",
            client_ip: "127.0.0.1",
            method: "GET",
            path: "/a\"b\\c\u{1}\n",
            route: "r",
            service: "s",
            backend: Some("127.0.0.1:80".parse().expect("addr")),
            status: 200,
            bytes_in: 1,
            bytes_out: 2,
            duration: Duration::from_micros(1_234_567),
            upstream_duration: Some(Duration::from_micros(999)),
            error: Some("bad_gateway"),
            http_version: "HTTP/2",
            tls_version: Some("TLSv1.3"),
            attempts: 2,
            user: Some("acme"),
            trace_id: Some(opentelemetry::trace::TraceId::from_bytes([0xab; 16])),
            waf: Some(&verdict),
        };
        let mut out = String::new();
        line.render(&mut out);
        assert!(out.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["path"], "/a\"b\\c\u{1}\n");
        assert_eq!(v["duration_ms"], 1234.567);
        assert_eq!(v["upstream_duration_ms"], 0.999);
        assert_eq!(v["backend"], "127.0.0.1:80");
        assert_eq!(v["status"], 200);
        assert_eq!(v["http_version"], "HTTP/2");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["user"], "acme");
        assert_eq!(v["trace_id"], "abababababababababababababababab");
        assert_eq!((v["waf_score"].as_u64(), v["waf_rules"][1].as_u64()), (Some(10), Some(949110)));
        assert_eq!(v["tls_version"], "TLSv1.3");
        assert!(v["time"].as_str().is_some_and(|t| t.len() == 24 && t.ends_with('Z')));
    }

    #[test]
    fn long_paths_are_cut_on_char_boundaries() {
        let long = "é".repeat(1000);
        let cut = truncate_path(&long);
        assert!(cut.len() <= MAX_LOGGED_PATH && cut.chars().all(|c| c == 'é'));
    }
}
