//! One JSON access-log line per request, emitted through `log` with target `access` so
//! `RUST_LOG=access=off` silences it.

use serde::Serialize;

/// Longest path written to the log; longer ones are cut (an attacker controls its length).
const MAX_LOGGED_PATH: usize = 1024;

/// The fields of one access-log line.
#[derive(Debug, Serialize)]
pub struct AccessLine<'a> {
    /// RFC 3339 UTC, milliseconds.
    pub time: String,
    /// The request id returned to the client.
    pub request_id: &'a str,
    /// Client IP after `trusted_proxies` rules.
    pub client_ip: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Request path as received (query excluded, truncated).
    pub path: &'a str,
    /// Route label, `-` when unmatched.
    pub route: &'a str,
    /// Service name, `-` when not proxied.
    pub service: &'a str,
    /// Backend address, `-` when none was used.
    pub backend: String,
    /// Status sent to the client (0 when none could be sent).
    pub status: u16,
    /// Request body bytes read.
    pub bytes_in: usize,
    /// Response body bytes sent.
    pub bytes_out: usize,
    /// Whole request time.
    pub duration_ms: f64,
    /// Time from the upstream request to its response headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_duration_ms: Option<f64>,
    /// Error code, when the gateway answered with an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// Cut a path to the logged length on a char boundary.
pub fn truncate_path(path: &str) -> &str {
    if path.len() <= MAX_LOGGED_PATH {
        return path;
    }
    let mut end = MAX_LOGGED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

/// Emit the line.
pub fn write(line: &AccessLine<'_>) {
    if log::log_enabled!(target: super::logger::ACCESS_TARGET, log::Level::Info) {
        if let Ok(json) = serde_json::to_string(line) {
            log::info!(target: super::logger::ACCESS_TARGET, "{json}");
        }
    }
}
