//! Protocol translation (docs/grpc.md): REST/JSON ↔ gRPC transcoding as google.api.http
//! rules describe it, and gRPC-Web ↔ gRPC. Pure functions over plain values and bytes; the
//! proxy phases feed them a request head, body chunks and trailers.
//!
//! - [`Transcoder`]: built once per snapshot from [`GrpcTranscodeSettings`] (descriptors
//!   loaded, rules read and checked: [`LoadError`] is a `-t` error). Per request,
//!   [`Transcoder::route`] finds the method for a verb and path and returns a [`Call`], which
//!   builds the framed gRPC request ([`Call::request`]) and a [`ResponseBody`] that turns the
//!   backend's frames into JSON as they arrive.
//! - [`status`]: `grpc-status` → HTTP status (google.rpc.Code's table), `grpc-message`,
//!   `grpc-status-details-bin` → `details`, `grpc-timeout`.
//! - [`web`]: gRPC-Web content types, the base64 `-text` body and the trailer frame.
//! - [`frame`]: the 5-byte message prefix, decoded across arbitrary chunk splits and bounded.
//!
//! Not here: reading bodies, talking to the backend, CORS — the proxy glue and policies own
//! those.

mod error;
pub mod frame;
mod request;
mod response;
mod rules;
pub mod status;
mod template;
pub mod web;

pub use error::{CallError, LoadError};
pub use response::{Format, ResponseBody};
pub use status::{Code, GrpcStatus};
pub use template::{Template, TemplateError};

use crate::config::{Findings, GrpcTranscode, GrpcTranscodeSettings};
use bytes::Bytes;
use http::Method;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, SerializeOptions};
use rules::{Binding, Table};
use sha2::Digest;
use std::path::Path;
use std::sync::Arc;

pub use crate::config::MAX_DESCRIPTOR_BYTES;

/// The options every call of one route shares.
#[derive(Debug)]
struct Options {
    print: SerializeOptions,
    ignore_unknown_query: bool,
    max_message: usize,
}

/// One route's transcoding: the descriptors, the selected services' methods and their HTTP
/// bindings. Cheap to share (`Arc` inside); immutable once built.
#[derive(Debug, Clone)]
pub struct Transcoder {
    pool: DescriptorPool,
    table: Arc<Table>,
    options: Arc<Options>,
    /// What it was built from: equal settings and descriptor bytes build the same transcoder
    /// (a reload compares routes).
    source: Arc<(GrpcTranscodeSettings, [u8; 32])>,
}

impl PartialEq for Transcoder {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Transcoder {
    /// Build a route's transcoder from the descriptor set its config read; a set that does not
    /// decode is reported under `{key}.descriptors`, a service, field or binding it lacks under
    /// `{key}.services`.
    pub(crate) fn build(transcode: &GrpcTranscode, findings: &mut Findings) -> Option<Transcoder> {
        let file = &transcode.descriptors;
        let shown = file.path.display().to_string();
        Self::from_bytes(&transcode.settings, &shown, &file.bytes)
            .map_err(|e| {
                let sub = match e {
                    LoadError::Read { .. } | LoadError::Decode { .. } => "descriptors",
                    _ => "services",
                };
                findings.error(format!("{}.{sub}", transcode.key), e.to_string())
            })
            .ok()
    }

    /// Load `settings.descriptors` (relative to `base_dir` unless absolute) and build.
    pub fn from_settings(settings: &GrpcTranscodeSettings, base_dir: &Path) -> Result<Transcoder, LoadError> {
        let path = if settings.descriptors.is_absolute() {
            settings.descriptors.clone()
        } else {
            base_dir.join(&settings.descriptors)
        };
        let shown = path.display().to_string();
        let read = |reason: String| LoadError::Read { path: shown.clone(), reason };
        let size = std::fs::metadata(&path).map_err(|e| read(e.to_string()))?.len();
        if size > MAX_DESCRIPTOR_BYTES {
            return Err(read(format!("{size} bytes, over the limit of {MAX_DESCRIPTOR_BYTES}")));
        }
        let bytes = std::fs::read(&path).map_err(|e| read(e.to_string()))?;
        Self::from_bytes(settings, &shown, &bytes)
    }

    /// Build from the descriptor set's bytes, already read (`path` names it in errors).
    pub fn from_bytes(settings: &GrpcTranscodeSettings, path: &str, bytes: &[u8]) -> Result<Transcoder, LoadError> {
        let pool = DescriptorPool::decode(bytes)
            .map_err(|e| LoadError::Decode { path: path.to_string(), reason: e.to_string() })?;
        let table = Table::build(&pool, &settings.services)?;
        let print = SerializeOptions::new()
            .skip_default_fields(!settings.print_defaults)
            .use_proto_field_name(settings.proto_field_names);
        let options = Options {
            print,
            ignore_unknown_query: settings.ignore_unknown_query_parameters,
            max_message: usize::try_from(settings.max_message).unwrap_or(usize::MAX),
        };
        let digest: [u8; 32] = sha2::Sha256::digest(bytes).into();
        Ok(Transcoder {
            pool,
            table: Arc::new(table),
            options: Arc::new(options),
            source: Arc::new((settings.clone(), digest)),
        })
    }

    /// The method bound to `verb` and `path` (no query). Client- and bidirectional-streaming
    /// methods are refused here ([`CallError::NotTranscoded`]).
    pub fn route(&self, verb: &Method, path: &str) -> Result<Call, CallError> {
        let (binding, values) = self.table.lookup(verb, path)?;
        let method = self.table.methods[binding.method].clone();
        if method.is_client_streaming() {
            let kind = if method.is_server_streaming() { "bidirectional-streaming" } else { "client-streaming" };
            return Err(CallError::NotTranscoded { method: method.full_name().to_string(), kind });
        }
        Ok(Call { method, binding: Arc::clone(binding), values, options: Arc::clone(&self.options) })
    }

    /// The descriptors (to print `details` of an error answer).
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// Every binding as `(verb, template, method)`, in lookup order (the status page, tests).
    pub fn bindings(&self) -> Vec<(Method, String, String)> {
        self.table
            .bindings()
            .iter()
            .map(|b| (b.verb.clone(), b.template.to_string(), self.table.methods[b.method].full_name().to_string()))
            .collect()
    }
}

/// One request's method and binding; owned, so it can live in the request's state across
/// the proxy phases.
#[derive(Debug, Clone)]
pub struct Call {
    method: MethodDescriptor,
    binding: Arc<Binding>,
    values: Vec<String>,
    options: Arc<Options>,
}

impl Call {
    /// The gRPC method.
    pub fn method(&self) -> &MethodDescriptor {
        &self.method
    }

    /// The backend request's `:path`, `/<package>.<Service>/<Method>`.
    pub fn grpc_path(&self) -> String {
        format!("/{}/{}", self.method.parent_service().full_name(), self.method.name())
    }

    /// Whether the answer is a stream of messages.
    pub fn server_streaming(&self) -> bool {
        self.method.is_server_streaming()
    }

    /// The request message from the raw query and the whole JSON body.
    pub fn message(&self, query: Option<&str>, body: &[u8]) -> Result<DynamicMessage, CallError> {
        request::message(
            &self.method.input(),
            &self.binding,
            &self.values,
            query,
            body,
            self.options.ignore_unknown_query,
        )
    }

    /// The gRPC request body: the message, framed. A message over the limit is refused.
    pub fn request(&self, query: Option<&str>, body: &[u8]) -> Result<Bytes, CallError> {
        let message = self.message(query, body)?;
        let len = message.encoded_len();
        if len > self.options.max_message {
            return Err(CallError::TooLarge { len, limit: self.options.max_message });
        }
        Ok(frame::encode(&message))
    }

    /// The response side, for the client's `Accept` header.
    pub fn response(&self, accept: Option<&str>) -> ResponseBody {
        ResponseBody::new(
            self.method.output(),
            self.binding.response_body.clone(),
            self.options.print.clone(),
            Format::choose(self.server_streaming(), accept),
            self.options.max_message,
        )
    }
}

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;
