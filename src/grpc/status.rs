//! A call's outcome: the gRPC status (`grpc-status`, `grpc-message`, `grpc-status-details-bin`)
//! read from trailers or from a trailers-only answer's headers, the HTTP status a transcoded
//! client gets for it (google.rpc.Code's own mapping, docs/grpc.md), the JSON `details`,
//! and the `grpc-timeout` we send.

use base64::Engine;
use bytes::Bytes;
use http::HeaderMap;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use std::time::Duration;

/// google.rpc.Code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// Every code, by number.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code of a number; numbers outside the enum are `Unknown` (as gRPC says).
    pub fn from_number(n: i64) -> Code {
        usize::try_from(n).ok().and_then(|i| Code::ALL.get(i).copied()).unwrap_or(Code::Unknown)
    }

    /// The HTTP status google.rpc.Code documents for the code. `Cancelled` is 499 (the client
    /// closed the request), as google.rpc and Envoy map it.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Ok => 200,
            Code::Cancelled => 499,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::DeadlineExceeded => 504,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
        }
    }

    /// The lower-case name, the `error` field of the JSON answer (`not_found`).
    pub fn error_code(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Cancelled => "cancelled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The code gRPC infers from an HTTP answer that carries no `grpc-status`
    /// (PROTOCOL-HTTP2 / http-grpc-status-mapping).
    pub fn from_http(status: u16) -> Code {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// The outcome of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpcStatus {
    /// `grpc-status`.
    pub code: Code,
    /// `grpc-message`, percent-decoded.
    pub message: String,
    /// `grpc-status-details-bin`, base64-decoded: an encoded google.rpc.Status.
    pub details: Option<Bytes>,
}

/// google.rpc.Status, decoded with our own type so that details work whether or not the
/// descriptors include google/rpc/status.proto.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

impl GrpcStatus {
    /// The status in `headers` (trailers, or a trailers-only answer's headers); `None` when
    /// there is no `grpc-status`. A status that is not a number is `Unknown`.
    pub fn from_headers(headers: &HeaderMap) -> Option<GrpcStatus> {
        let code = headers.get("grpc-status")?;
        let code = std::str::from_utf8(code.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map_or(Code::Unknown, Code::from_number);
        let message = headers.get("grpc-message").map(|m| decode_message(m.as_bytes())).unwrap_or_default();
        let details = headers.get("grpc-status-details-bin").and_then(|v| decode_bin(v.as_bytes()));
        Some(GrpcStatus { code, message, details })
    }

    /// `details` as JSON values: each google.protobuf.Any in the proto3 JSON form (`@type` plus
    /// the fields) when `pool` knows its type, else `{"@type", "value": base64}`. `None` when
    /// there are no details or they do not decode.
    pub fn details_json(&self, pool: &DescriptorPool) -> Option<Vec<serde_json::Value>> {
        let status = RpcStatus::decode(self.details.as_deref()?).ok()?;
        if status.details.is_empty() {
            return None;
        }
        Some(status.details.iter().map(|any| any_json(any, pool)).collect())
    }

    /// The JSON body of a failed call: the gateway's error shape (`error`, `message`,
    /// `request_id`) plus `code` (the gRPC number) and `details` when the backend sent any.
    pub fn error_body(&self, request_id: &str, pool: &DescriptorPool) -> serde_json::Value {
        let mut body = serde_json::json!({
            "error": self.code.error_code(),
            "message": self.message,
            "request_id": request_id,
            "code": self.code as i32,
        });
        if let Some(details) = self.details_json(pool) {
            body["details"] = serde_json::Value::Array(details);
        }
        body
    }
}

fn any_json(any: &prost_types::Any, pool: &DescriptorPool) -> serde_json::Value {
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let decoded = pool
        .get_message_by_name(name)
        .and_then(|desc| DynamicMessage::decode(desc, any.value.as_slice()).ok())
        .and_then(|message| serde_json::to_value(&message).ok());
    match decoded {
        Some(serde_json::Value::Object(fields)) => {
            let mut out = serde_json::Map::with_capacity(fields.len() + 1);
            out.insert("@type".into(), any.type_url.clone().into());
            out.extend(fields);
            serde_json::Value::Object(out)
        }
        // A well-known type with a non-object JSON form goes under "value", as the Any mapping says.
        Some(value) => serde_json::json!({"@type": any.type_url, "value": value}),
        None => serde_json::json!({
            "@type": any.type_url,
            "value": base64::engine::general_purpose::STANDARD.encode(&any.value),
        }),
    }
}

/// `grpc-message` is percent-encoded UTF-8 (PROTOCOL-HTTP2); invalid sequences are kept as
/// they came rather than failing the answer.
pub fn decode_message(raw: &[u8]) -> String {
    percent_encoding::percent_decode(raw).decode_utf8_lossy().into_owned()
}

/// Percent-encode a message for `grpc-message`: printable ASCII except `%` stays.
pub fn encode_message(message: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    percent_encoding::utf8_percent_encode(message, KEEP).to_string()
}

/// A `-bin` header value: base64, padded or not.
fn decode_bin(raw: &[u8]) -> Option<Bytes> {
    let trimmed: Vec<u8> = raw.iter().copied().filter(|b| *b != b'=' && !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed).ok().map(Bytes::from)
}

/// The `grpc-timeout` value for a deadline: at most eight digits, in the finest unit that
/// holds it (rounded up, so the backend never gets less time than the route allows it).
pub fn grpc_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos().max(1);
    for (unit, per) in [("n", 1u128), ("u", 1_000), ("m", 1_000_000), ("S", 1_000_000_000), ("M", 60_000_000_000)] {
        let value = nanos.div_ceil(per);
        if value <= MAX {
            return format!("{value}{unit}");
        }
    }
    format!("{}H", nanos.div_ceil(3_600_000_000_000).min(MAX))
}

/// Parse a `grpc-timeout` value (`100m`, `2S`); `None` when malformed.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mapping_table() {
        let expect = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (i, (code, status)) in expect.iter().enumerate() {
            assert_eq!(Code::from_number(i as i64), *code);
            assert_eq!(code.http_status(), *status, "{code:?}");
        }
        assert_eq!(Code::from_number(17), Code::Unknown);
        assert_eq!(Code::from_number(-1), Code::Unknown);
    }

    #[test]
    fn status_from_trailers_with_a_percent_encoded_message() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "5".parse().expect("value"));
        h.insert("grpc-message", "order%20%E2%84%96%207%20not%20found%ZZ".parse().expect("value"));
        let status = GrpcStatus::from_headers(&h).expect("status");
        assert_eq!(status.code, Code::NotFound);
        assert_eq!(status.message, "order № 7 not found%ZZ");
        assert!(GrpcStatus::from_headers(&HeaderMap::new()).is_none());
        h.insert("grpc-status", "nope".parse().expect("value"));
        assert_eq!(GrpcStatus::from_headers(&h).map(|s| s.code), Some(Code::Unknown));
        assert_eq!(decode_message(encode_message("50% done\n№").as_bytes()), "50% done\n№");
    }

    #[test]
    fn details_without_descriptors_keep_their_bytes() {
        let status = RpcStatus {
            code: 3,
            message: "bad".into(),
            details: vec![prost_types::Any { type_url: "type.googleapis.com/x.Y".into(), value: vec![1, 2] }],
        };
        let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec());
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "3".parse().expect("value"));
        h.insert("grpc-status-details-bin", encoded.parse().expect("value"));
        let status = GrpcStatus::from_headers(&h).expect("status");
        let body = status.error_body("rid", &DescriptorPool::new());
        assert_eq!(body["error"], "invalid_argument");
        assert_eq!(body["code"], 3);
        assert_eq!(body["request_id"], "rid");
        assert_eq!(body["details"][0]["@type"], "type.googleapis.com/x.Y");
        assert_eq!(body["details"][0]["value"], "AQI=");
    }

    #[test]
    fn timeouts_in_the_finest_unit_that_fits() {
        assert_eq!(grpc_timeout(Duration::from_millis(50)), "50000000n");
        assert_eq!(grpc_timeout(Duration::from_secs(2)), "2000000u");
        assert_eq!(grpc_timeout(Duration::from_secs(60)), "60000000u");
        assert_eq!(grpc_timeout(Duration::from_secs(3600)), "3600000m");
        assert_eq!(grpc_timeout(Duration::from_secs(400_000)), "400000S");
        assert_eq!(grpc_timeout(Duration::ZERO), "1n");
        for d in [Duration::from_millis(1500), Duration::from_secs(86_400 * 3), Duration::from_nanos(7)] {
            let back = parse_grpc_timeout(&grpc_timeout(d)).expect("parses");
            assert!(back >= d && back - d < d / 1000 + Duration::from_nanos(1), "{d:?} -> {back:?}");
        }
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
    }
}
