//! A transcoded answer: the backend's gRPC frames turned into JSON as they arrive — one object
//! for a unary call; for server streaming a JSON array written message by message, or NDJSON
//! (one object per line) when the client asked for `application/x-ndjson` — and the call's
//! status at the end.

use super::error::CallError;
use super::frame::FrameDecoder;
use super::status::{Code, GrpcStatus};
use bytes::{BufMut, Bytes, BytesMut};
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions};

/// How the answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object (unary).
    Object,
    /// A JSON array, one element per message (server streaming).
    Array,
    /// One JSON object per line (server streaming, `Accept: application/x-ndjson`).
    Ndjson,
}

impl Format {
    /// The format for a method: unary → `Object`; server streaming → `Ndjson` when `accept`
    /// names `application/x-ndjson`, else `Array`.
    pub fn choose(server_streaming: bool, accept: Option<&str>) -> Format {
        if !server_streaming {
            Format::Object
        } else if accept.is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("application/x-ndjson"))) {
            Format::Ndjson
        } else {
            Format::Array
        }
    }

    /// The `Content-Type` of the answer.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Object | Format::Array => "application/json",
        }
    }
}

/// Turns one call's response body into JSON, chunk by chunk.
#[derive(Debug)]
pub struct ResponseBody {
    output: MessageDescriptor,
    response_body: Option<FieldDescriptor>,
    print: SerializeOptions,
    format: Format,
    frames: FrameDecoder,
    pool: DescriptorPool,
    /// Messages seen so far.
    messages: usize,
    /// The unary answer, held until the status says OK.
    held: Option<Bytes>,
}

impl ResponseBody {
    pub(crate) fn new(
        output: MessageDescriptor,
        response_body: Option<FieldDescriptor>,
        print: SerializeOptions,
        format: Format,
        max_message: usize,
    ) -> Self {
        let pool = output.parent_pool().clone();
        ResponseBody {
            output,
            response_body,
            print,
            format,
            frames: FrameDecoder::new(max_message),
            pool,
            messages: 0,
            held: None,
        }
    }

    /// The answer's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether JSON has been written already (after that an error can only go in the body).
    pub fn started(&self) -> bool {
        self.format != Format::Object && self.messages > 0
    }

    /// The next chunk of the backend's body; returns the JSON to send now (empty for a unary
    /// call, whose answer waits for the status).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, CallError> {
        self.frames.push(chunk);
        let mut out = BytesMut::new();
        while let Some(frame) = self.frames.next_frame()? {
            let message = DynamicMessage::decode(self.output.clone(), frame.payload)
                .map_err(|e| CallError::Protocol(format!("cannot decode {}: {e}", self.output.full_name())))?;
            let json = self.json(&message)?;
            self.messages += 1;
            match self.format {
                Format::Object if self.messages > 1 => {
                    return Err(CallError::Protocol("a unary call answered more than one message".into()))
                }
                Format::Object => self.held = Some(json),
                Format::Array => {
                    out.put_u8(if self.messages == 1 { b'[' } else { b',' });
                    out.put_slice(&json);
                }
                Format::Ndjson => {
                    out.put_slice(&json);
                    out.put_u8(b'\n');
                }
            }
        }
        Ok(out.freeze())
    }

    /// The end of the body with the call's status (trailers, or `None` when the backend sent
    /// none). Returns the JSON that ends the answer; `Err` when the answer should be an error
    /// answer instead (nothing was written yet). A streaming call that fails after messages were
    /// written ends with the error object as the last array element or line.
    pub fn finish(&mut self, status: Option<&GrpcStatus>, request_id: &str) -> Result<Bytes, CallError> {
        self.frames.finish()?;
        let status = status.ok_or_else(|| CallError::Protocol("the call ended without a grpc-status".into()))?;
        if status.code != Code::Ok {
            if !self.started() {
                return Err(CallError::Status(status.clone()));
            }
            let body = status.error_body(request_id, &self.pool).to_string();
            return Ok(match self.format {
                Format::Ndjson => Bytes::from(body + "\n"),
                _ => Bytes::from(format!(",{body}]")),
            });
        }
        match self.format {
            Format::Object => {
                self.held.take().ok_or_else(|| CallError::Protocol("a unary call answered no message".into()))
            }
            Format::Array if self.messages == 0 => Ok(Bytes::from_static(b"[]")),
            Format::Array => Ok(Bytes::from_static(b"]")),
            Format::Ndjson => Ok(Bytes::new()),
        }
    }

    fn json(&self, message: &DynamicMessage) -> Result<Bytes, CallError> {
        let fail = |e: serde_json::Error| CallError::Protocol(format!("cannot print {}: {e}", self.output.full_name()));
        let Some(field) = &self.response_body else {
            let mut out = Vec::with_capacity(128);
            message.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &self.print).map_err(fail)?;
            return Ok(Bytes::from(out));
        };
        // Only one field is the body: print the message and take that field, printed with its
        // default when the message leaves it out.
        let key = |print: &SerializeOptions| {
            let mut out = Vec::new();
            message.serialize_with_options(&mut serde_json::Serializer::new(&mut out), print)?;
            let mut whole: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out)?;
            Ok(whole.remove(field.json_name()).or_else(|| whole.remove(field.name())))
        };
        let value = match key(&self.print).map_err(fail)? {
            Some(value) => value,
            None => match key(&self.print.clone().skip_default_fields(false)).map_err(fail)? {
                // An unset message prints as null even with defaults; as the body it is `{}`.
                Some(serde_json::Value::Null) | None
                    if matches!(field.kind(), Kind::Message(m) if !m.full_name().starts_with("google.protobuf."))
                        && !field.is_list() =>
                {
                    serde_json::Value::Object(serde_json::Map::new())
                }
                other => other.unwrap_or_default(),
            },
        };
        serde_json::to_vec(&value).map(Bytes::from).map_err(fail)
    }
}
