//! The typed failures of transcoding: [`LoadError`] when descriptors and rules are turned into
//! a [`Transcoder`](super::Transcoder) (a `-t` error, with the config key added by the caller),
//! and [`CallError`] for one request (mapped to an HTTP answer by `errors.rs`).

use super::frame::FrameError;
use super::status::GrpcStatus;

/// Why descriptors and rules cannot be served.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    /// The descriptor file cannot be read.
    #[error("cannot read the descriptor set `{path}`: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The bytes are not a FileDescriptorSet, or its files do not link.
    #[error("`{path}` is not a usable FileDescriptorSet (protoc --include_imports --descriptor_set_out): {reason}")]
    Decode {
        /// The file.
        path: String,
        /// What prost-reflect said.
        reason: String,
    },
    /// No service is listed.
    #[error("list at least one service (package.Service)")]
    NoServices,
    /// A listed service is not in the descriptors.
    #[error("service `{service}` is not in the descriptor set (it has: {known})")]
    UnknownService {
        /// The listed name.
        service: String,
        /// The services it does have.
        known: String,
    },
    /// Methods carry google.api.http options but the set lacks google/api/http.proto.
    #[error("method `{method}` has a google.api.http option, but the descriptor set lacks google/api/annotations.proto: build it with protoc --include_imports")]
    MissingAnnotations {
        /// A method with the option.
        method: String,
    },
    /// An HTTP rule is malformed.
    #[error("method `{method}`, rule `{rule}`: {reason}")]
    BadRule {
        /// The method's full name.
        method: String,
        /// The rule (`GET /v1/...`).
        rule: String,
        /// What is wrong.
        reason: String,
    },
    /// An HTTP rule names a field the message does not have.
    #[error("method `{method}`, rule `{rule}`: `{field}` is not a field of {message}")]
    UnknownField {
        /// The method's full name.
        method: String,
        /// The rule.
        rule: String,
        /// The field path as written.
        field: String,
        /// The message type searched.
        message: String,
    },
    /// Two methods answer the same verb and path.
    #[error("`{first}` and `{second}` are both bound to {verb} {path}")]
    Conflict {
        /// The HTTP method.
        verb: String,
        /// The path template (the second one's).
        path: String,
        /// The method bound first.
        first: String,
        /// The method bound second.
        second: String,
    },
}

/// Why one request cannot be transcoded, or how the call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// No rule matches the path (404).
    #[error("no gRPC method is bound to this path")]
    NoMethod,
    /// Rules match the path, but not with this HTTP method (405).
    #[error("method not allowed here")]
    MethodNotAllowed {
        /// The HTTP methods bound to the path.
        allow: Vec<http::Method>,
    },
    /// The JSON body (or a value bound from the path or query) does not fit the message (400).
    #[error("field `{field}`: {reason}")]
    Field {
        /// The field path (`order.createdAt`), empty for the body as a whole.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A query parameter does not fit (400).
    #[error("query parameter `{parameter}`: {reason}")]
    Query {
        /// The parameter as sent.
        parameter: String,
        /// What is wrong.
        reason: String,
    },
    /// A body where the method takes none, or a body that is not JSON (400).
    #[error("{0}")]
    Body(String),
    /// A client- or bidirectional-streaming method (501).
    #[error("{method} is a {kind} method; it is not transcoded (call it with gRPC)")]
    NotTranscoded {
        /// The method's full name.
        method: String,
        /// `client-streaming` or `bidirectional-streaming`.
        kind: &'static str,
    },
    /// The encoded request message exceeds the limit (413).
    #[error("the request message is {len} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The backend answered with a non-OK status (HTTP status by [`Code::http_status`](super::Code::http_status)).
    #[error("{}", .0.message)]
    Status(GrpcStatus),
    /// The backend's answer is not a gRPC answer we can read (502).
    #[error("the gRPC backend's answer is malformed: {0}")]
    Protocol(String),
}

impl From<FrameError> for CallError {
    fn from(e: FrameError) -> Self {
        CallError::Protocol(e.to_string())
    }
}
