//! Every failure a client can see, and the one place that turns it into an HTTP answer:
//! `{"error": code, "message": text, "request_id": id}` with the right status and headers
//! (ARCHITECTURE.md §4).

use crate::answer::LocalAnswer;
use crate::routing::{PathError, TargetError};
use http::Method;
use pingora::{Error as PingoraError, ErrorSource, ErrorType};
use std::time::Duration;

/// A request failure, named as the fact that caused it.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum GatewayError {
    /// The path was refused before routing.
    #[error("{0}")]
    BadPath(#[from] PathError),
    /// The request target or host was refused before routing.
    #[error("{0}")]
    BadTarget(#[from] TargetError),
    /// Some other malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// A transfer coding other than `chunked` (RFC 9112 §6.1: 501).
    #[error("only the chunked transfer coding is supported")]
    UnsupportedTransferCoding,
    /// No route owns the path.
    #[error("no route for this path")]
    NoRoute,
    /// Nothing answers to this path (admin endpoints, a job that is not the caller's).
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what it would change (an idempotency key reused with another
    /// payload).
    #[error("{0}")]
    Conflict(String),
    /// The request names a host this listener does not answer for (the admin listener's
    /// defence against DNS rebinding).
    #[error("{0}")]
    MisdirectedRequest(String),
    /// A configuration reload was refused; the running configuration keeps serving.
    #[error("the new configuration was refused ({} problem(s)); the running configuration keeps serving", .0.len())]
    ConfigRefused(Vec<String>),
    /// A route owns the path but not the method.
    #[error("method not allowed here")]
    MethodNotAllowed {
        /// Accepted methods (for `Allow`).
        allow: Vec<Method>,
    },
    /// No bearer token on a route that needs one.
    #[error("authentication is required")]
    MissingToken,
    /// A token was presented but failed a check.
    #[error("invalid token: {reason}")]
    InvalidToken {
        /// Which check failed (never the token).
        reason: String,
    },
    /// Authenticated, but without a required role.
    #[error("{0}")]
    Forbidden(String),
    /// Refused by request inspection (`waf: block`). Never says which rule or what matched:
    /// that would teach a prober how to get around the rules (the access log has them).
    #[error("the request was refused by request inspection")]
    RequestBlocked,
    /// Over a rate limit.
    #[error("rate limit exceeded")]
    RateLimited {
        /// Seconds until a slot frees.
        retry_after: u64,
        /// The limit's request count (`RateLimit-Limit`).
        limit: u64,
    },
    /// Over the quota of the consumer's plan (docs/plans.md "Headers").
    #[error("{message}")]
    QuotaExceeded {
        /// Seconds to the window's end (`Retry-After`, `RateLimit-Reset`).
        retry_after: u64,
        /// The quota (`RateLimit-Limit`).
        limit: u64,
        /// What the quota is and when it resets.
        message: String,
    },
    /// Body larger than allowed.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Headers larger than allowed.
    #[error("request headers exceed {limit} bytes")]
    HeadersTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// More header fields than the gateway parses.
    #[error("request has more than {limit} header fields")]
    TooManyHeaderFields {
        /// The limit in fields.
        limit: usize,
    },
    /// Wrong `Content-Type`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request needs a protocol version the connection does not speak (gRPC over HTTP/1.1).
    #[error("{0}")]
    HttpVersionNotSupported(&'static str),
    /// The client was too slow sending its request.
    #[error("timed out reading the request")]
    RequestTimeout,
    /// Every backend of the service is unhealthy (or it has none).
    #[error("service {service} has no healthy backend")]
    NoHealthyBackend {
        /// Service name.
        service: String,
    },
    /// A dependency (NATS, the rate-limit store, …) is unavailable.
    #[error("{message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
        /// Suggested retry delay in seconds.
        retry_after: u64,
    },
    /// The upstream could not be reached or broke the connection.
    #[error("upstream {}: {detail}", kind.label())]
    BadGateway {
        /// Failure class (metrics `kind`).
        kind: UpstreamErrorKind,
        /// Short description.
        detail: String,
    },
    /// The upstream did not answer in time.
    #[error("upstream did not answer within {}", after.map(human_duration).unwrap_or_else(|| "its timeout".into()))]
    GatewayTimeout {
        /// The timeout that fired, when known.
        after: Option<Duration>,
    },
    /// A bug or resource problem on our side.
    #[error("internal error")]
    Internal,
    /// The gateway does not do this (a streaming gRPC method over REST).
    #[error("{0}")]
    NotImplemented(String),
    /// A transcoded gRPC call failed with this status: the HTTP status google.rpc.Code maps it
    /// to, the gRPC message, its number and the decoded `grpc-status-details-bin`.
    #[error("{}", .status.message)]
    GrpcStatus {
        /// The call's status.
        status: crate::grpc::GrpcStatus,
        /// `details`, printed with the route's descriptors.
        details: Option<Vec<serde_json::Value>>,
    },
}

/// Upstream failure classes (the `kind` label of `siger_upstream_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamErrorKind {
    /// Connection refused / unreachable.
    Connect,
    /// Connect or read timeout.
    Timeout,
    /// Connection reset or closed mid-exchange.
    Reset,
    /// TLS handshake failure.
    Tls,
    /// The upstream answered 5xx.
    Status5xx,
    /// Anything else.
    Other,
}

impl UpstreamErrorKind {
    /// Every kind, in label order.
    pub(crate) const ALL: [UpstreamErrorKind; 6] =
        [Self::Connect, Self::Timeout, Self::Reset, Self::Tls, Self::Status5xx, Self::Other];

    /// Metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Tls => "tls",
            Self::Status5xx => "status_5xx",
            Self::Other => "other",
        }
    }

    /// Classify a Pingora error raised while talking to an upstream.
    pub(crate) fn of(e: &PingoraError) -> Self {
        use ErrorType::*;
        match &e.etype {
            ConnectTimedout | ReadTimedout | WriteTimedout => Self::Timeout,
            ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError | ConnectProxyFailure => {
                Self::Connect
            }
            TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError | TLSWantX509Lookup => Self::Tls,
            ConnectionClosed | ReadError | WriteError | H2Error | InvalidH2 | H2Downgrade => Self::Reset,
            HTTPStatus(code) if *code >= 500 => Self::Status5xx,
            _ => Self::Other,
        }
    }
}

impl GatewayError {
    /// HTTP status.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::BadPath(_) | Self::BadTarget(_) | Self::BadRequest(_) => 400,
            Self::UnsupportedTransferCoding => 501,
            Self::MissingToken | Self::InvalidToken { .. } => 401,
            Self::Forbidden(_) | Self::RequestBlocked => 403,
            Self::NoRoute | Self::NotFound(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::RequestTimeout => 408,
            Self::Conflict(_) => 409,
            Self::PayloadTooLarge { .. } => 413,
            Self::UnsupportedMediaType(_) => 415,
            Self::MisdirectedRequest(_) => 421,
            Self::ConfigRefused(_) => 422,
            Self::RateLimited { .. } | Self::QuotaExceeded { .. } => 429,
            Self::HeadersTooLarge { .. } | Self::TooManyHeaderFields { .. } => 431,
            Self::Internal => 500,
            Self::BadGateway { .. } => 502,
            Self::NoHealthyBackend { .. } | Self::Unavailable { .. } => 503,
            Self::GatewayTimeout { .. } => 504,
            Self::HttpVersionNotSupported(_) => 505,
            Self::NotImplemented(_) => 501,
            Self::GrpcStatus { status, .. } => status.code.http_status(),
        }
    }

    /// Machine-readable code of the JSON body.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::BadPath(_) | Self::BadTarget(_) | Self::BadRequest(_) => "bad_request",
            Self::UnsupportedTransferCoding => "not_implemented",
            Self::MissingToken => "missing_token",
            Self::InvalidToken { .. } => "invalid_token",
            Self::Forbidden(_) => "forbidden",
            Self::RequestBlocked => "request_blocked",
            Self::NoRoute | Self::NotFound(_) => "not_found",
            Self::MisdirectedRequest(_) => "misdirected_request",
            Self::Conflict(_) => "conflict",
            Self::ConfigRefused(_) => "config_refused",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::HeadersTooLarge { .. } | Self::TooManyHeaderFields { .. } => "request_header_fields_too_large",
            Self::Internal => "internal_error",
            Self::BadGateway { .. } => "bad_gateway",
            Self::NoHealthyBackend { .. } | Self::Unavailable { .. } => "service_unavailable",
            Self::GatewayTimeout { .. } => "gateway_timeout",
            Self::HttpVersionNotSupported(_) => "http_version_not_supported",
            Self::NotImplemented(_) => "not_implemented",
            Self::GrpcStatus { status, .. } => status.code.error_code(),
        }
    }

    /// Whether the connection should be closed after answering: the request body may be
    /// unread (and could be large) or the request framing is suspect.
    pub(crate) fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::BadPath(_)
                | Self::BadTarget(_)
                | Self::BadRequest(_)
                | Self::UnsupportedTransferCoding
                | Self::PayloadTooLarge { .. }
                | Self::HeadersTooLarge { .. }
                | Self::TooManyHeaderFields { .. }
                | Self::RequestTimeout
        )
    }

    /// Map a Pingora error that reached `fail_to_proxy`. `None` when nothing can be written
    /// (the client is gone).
    pub(crate) fn from_pingora(e: &PingoraError, read_timeout: Option<Duration>) -> Option<Self> {
        use ErrorType::*;
        match e.esource {
            ErrorSource::Downstream => match &e.etype {
                ReadError | WriteError | ConnectionClosed => None,
                ReadTimedout => Some(Self::RequestTimeout),
                HTTPStatus(code) => Some(Self::from_status(*code)),
                _ => Some(Self::BadRequest("malformed request".into())),
            },
            ErrorSource::Upstream => Some(Self::upstream(e, read_timeout)),
            _ => Some(match &e.etype {
                HTTPStatus(code) => Self::from_status(*code),
                _ => Self::Internal,
            }),
        }
    }

    /// Map a failure talking to an upstream (`read_timeout`: the one that bounded the wait for
    /// its answer, named when a read timed out).
    pub(crate) fn upstream(e: &PingoraError, read_timeout: Option<Duration>) -> Self {
        use ErrorType::*;
        match &e.etype {
            ConnectTimedout | ReadTimedout | WriteTimedout => {
                Self::GatewayTimeout { after: if e.etype == ConnectTimedout { None } else { read_timeout } }
            }
            HTTPStatus(code) => Self::from_status(*code),
            _ => Self::BadGateway { kind: UpstreamErrorKind::of(e), detail: e.etype.as_str().to_string() },
        }
    }

    /// A transcoding failure (`crate::grpc::CallError`); `pool` prints a failed call's details.
    pub(crate) fn from_grpc(err: crate::grpc::CallError, pool: &prost_reflect::DescriptorPool) -> Self {
        use crate::grpc::CallError;
        match err {
            CallError::NoMethod => Self::NotFound("no gRPC method is bound to this path".into()),
            CallError::MethodNotAllowed { allow } => Self::MethodNotAllowed { allow },
            e @ (CallError::Field { .. } | CallError::Query { .. } | CallError::Body(_)) => {
                Self::BadRequest(e.to_string())
            }
            e @ CallError::NotTranscoded { .. } => Self::NotImplemented(e.to_string()),
            CallError::TooLarge { limit, .. } => Self::PayloadTooLarge { limit: limit as u64 },
            CallError::Status(status) => {
                let details = status.details_json(pool);
                Self::GrpcStatus { status, details }
            }
            CallError::Protocol(detail) => Self::BadGateway { kind: UpstreamErrorKind::Other, detail },
        }
    }

    fn from_status(code: u16) -> Self {
        match code {
            400 => Self::BadRequest("malformed request".into()),
            404 => Self::NoRoute,
            408 => Self::RequestTimeout,
            413 => Self::PayloadTooLarge { limit: 0 },
            502 => Self::BadGateway { kind: UpstreamErrorKind::Other, detail: "upstream failure".into() },
            503 => Self::Unavailable { message: "service unavailable".into(), retry_after: 1 },
            504 => Self::GatewayTimeout { after: None },
            _ => Self::Internal,
        }
    }

    /// The human message of the JSON body; never includes secrets or raw tokens.
    pub(crate) fn message(&self) -> String {
        match self {
            Self::MethodNotAllowed { allow } if !allow.is_empty() => {
                format!("method not allowed here; allowed: {}", join_methods(allow))
            }
            Self::PayloadTooLarge { limit: 0 } => "request body too large".into(),
            Self::GatewayTimeout { after: None } => "upstream did not answer in time".into(),
            other => other.to_string(),
        }
    }

    /// The answer: status, JSON body and the headers this failure calls for.
    pub(crate) fn answer(&self, request_id: &str) -> LocalAnswer {
        let mut body = serde_json::json!({
            "error": self.code(),
            "message": self.message(),
            "request_id": request_id,
        });
        if let Self::ConfigRefused(errors) = self {
            // Every problem, each naming its key and line, for the operator to fix at once.
            body["errors"] = serde_json::json!(errors);
        }
        if let Self::GrpcStatus { status, details } = self {
            body["code"] = serde_json::json!(status.code as i32);
            if let Some(details) = details {
                body["details"] = serde_json::json!(details);
            }
        }
        let answer = LocalAnswer::json(self.status(), &body);
        let answer = match self {
            Self::MethodNotAllowed { allow } => answer.header("Allow", join_methods(allow)),
            Self::MissingToken => answer.header("WWW-Authenticate", "Bearer realm=\"siger\""),
            Self::InvalidToken { reason } => answer.header(
                "WWW-Authenticate",
                format!(
                    "Bearer realm=\"siger\", error=\"invalid_token\", error_description=\"{}\"",
                    reason.replace(['"', '\\'], "'")
                ),
            ),
            Self::RateLimited { retry_after, limit } => {
                let reset = (*retry_after).max(1);
                answer
                    .header("Retry-After", reset)
                    .header("RateLimit-Limit", *limit)
                    .header("RateLimit-Remaining", 0)
                    .header("RateLimit-Reset", reset)
            }
            Self::QuotaExceeded { retry_after, limit, .. } => {
                let reset = (*retry_after).max(1);
                answer
                    .header("Retry-After", reset)
                    .header("RateLimit-Limit", *limit)
                    .header("RateLimit-Remaining", 0)
                    .header("RateLimit-Reset", reset)
            }
            Self::Unavailable { retry_after, .. } => answer.header("Retry-After", (*retry_after).max(1)),
            Self::NoHealthyBackend { .. } => answer.header("Retry-After", 1),
            _ => answer,
        };
        if self.closes_connection() {
            answer.closing()
        } else {
            answer
        }
    }
}

/// `2s`, `1.5s`, `250ms`: how a person writes a timeout.
fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

fn join_methods(methods: &[Method]) -> String {
    methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_and_headers() {
        let answer = GatewayError::MethodNotAllowed { allow: vec![Method::GET, Method::PUT] }.answer("rid-1");
        let resp = answer.response_header();
        assert_eq!(resp.status.as_u16(), 405);
        assert_eq!(resp.headers.get("allow").map(|v| v.as_bytes()), Some(&b"GET, PUT"[..]));
        let v: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
        assert_eq!(v["error"], "method_not_allowed");
        assert_eq!(v["request_id"], "rid-1");
        let resp = GatewayError::InvalidToken { reason: "token \"expired\"".into() }.answer("r").response_header();
        let www = resp.headers.get("www-authenticate").expect("header").to_str().expect("ascii");
        assert!(www.contains("error=\"invalid_token\"") && www.contains("'expired'"), "{www}");
    }

    #[test]
    fn upstream_errors_map_to_502_and_504() {
        let refused = PingoraError::explain(ErrorType::ConnectRefused, "x");
        let mut refused = *refused;
        refused.esource = ErrorSource::Upstream;
        assert_eq!(GatewayError::from_pingora(&refused, None).map(|e| e.status()), Some(502));
        let mut slow = *PingoraError::explain(ErrorType::ReadTimedout, "x");
        slow.esource = ErrorSource::Upstream;
        assert_eq!(GatewayError::from_pingora(&slow, None).map(|e| e.status()), Some(504));
        let mut gone = *PingoraError::explain(ErrorType::ConnectionClosed, "x");
        gone.esource = ErrorSource::Downstream;
        assert!(GatewayError::from_pingora(&gone, None).is_none());
    }

    #[test]
    fn timeout_messages_read_as_durations() {
        let m = |after| GatewayError::GatewayTimeout { after }.message();
        assert_eq!(m(Some(Duration::from_secs(2))), "upstream did not answer within 2s");
        assert_eq!(m(Some(Duration::from_millis(250))), "upstream did not answer within 250ms");
        assert_eq!(m(Some(Duration::from_millis(1500))), "upstream did not answer within 1.5s");
        assert_eq!(m(None), "upstream did not answer in time");
    }
}
