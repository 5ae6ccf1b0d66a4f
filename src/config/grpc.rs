//! Settings of protocol translation on a route (docs/grpc.md), as plain data:
//! `grpc_transcode` (REST/JSON ↔ gRPC) and `grpc_web` (a boolean on the route). The descriptor
//! set is read here as bytes ([`GrpcTranscode::descriptors`]); `grpc::Transcoder::build` turns
//! it into a transcoder where a snapshot is compiled.

use super::units::ByteSize;
use super::LoadedFile;
use serde::Deserialize;
use std::path::PathBuf;

/// The largest descriptor file read (a large API's set is a few MiB).
pub const MAX_DESCRIPTOR_BYTES: u64 = 64 << 20;

/// The largest gRPC message accepted by default, either way (gRPC's own default receive limit).
pub(crate) const DEFAULT_MAX_MESSAGE: u64 = 4 << 20;
/// The largest `max_message` accepted.
pub(crate) const MAX_MAX_MESSAGE: u64 = 64 << 20;

/// `grpc_transcode:` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrpcTranscode {
    pub(crate) descriptors: String,
    pub(crate) services: Vec<String>,
    pub(crate) print_defaults: Option<bool>,
    pub(crate) proto_field_names: Option<bool>,
    pub(crate) ignore_unknown_query_parameters: Option<bool>,
    pub(crate) max_message: Option<ByteSize>,
}

/// A route's `grpc_transcode`: its settings and the descriptor set as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTranscode {
    /// The key of the section, e.g. `routes[0].grpc_transcode` (errors of the set's contents
    /// are reported under its `.descriptors` or `.services`).
    pub key: String,
    /// What to expose and how to print it.
    pub settings: GrpcTranscodeSettings,
    /// The FileDescriptorSet, as read (key `{key}.descriptors`).
    pub descriptors: LoadedFile,
}

/// A route's REST/JSON ↔ gRPC transcoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTranscodeSettings {
    /// The FileDescriptorSet file (`protoc --include_imports --descriptor_set_out`), relative
    /// to the config file's directory unless absolute.
    pub descriptors: PathBuf,
    /// The services exposed, as `package.Service`.
    pub services: Vec<String>,
    /// Print fields that hold their default value (`0`, `""`, `false`, `[]`); default false,
    /// as the proto3 JSON mapping does.
    pub print_defaults: bool,
    /// Print proto field names (`display_name`) instead of lowerCamelCase JSON names; default
    /// false. Requests accept both either way.
    pub proto_field_names: bool,
    /// Ignore query parameters that name no field instead of answering 400; default false.
    pub ignore_unknown_query_parameters: bool,
    /// The largest request or response message, in bytes; default [`DEFAULT_MAX_MESSAGE`].
    pub max_message: u64,
}

impl GrpcTranscodeSettings {
    /// Check a raw section; errors are `(key under grpc_transcode, message)`.
    pub(crate) fn from_raw(raw: &RawGrpcTranscode) -> Result<Self, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        if raw.descriptors.trim().is_empty() {
            errors.push(("descriptors", "name the FileDescriptorSet file".to_string()));
        }
        if raw.services.is_empty() {
            errors.push(("services", "list at least one service (package.Service)".to_string()));
        }
        for (i, name) in raw.services.iter().enumerate() {
            if !is_full_name(name) {
                errors.push(("services", format!("`{name}` is not a service name like `shop.v1.Orders`")));
            } else if raw.services[..i].contains(name) {
                errors.push(("services", format!("`{name}` is listed twice")));
            }
        }
        let max_message = raw.max_message.map_or(DEFAULT_MAX_MESSAGE, |b| b.0);
        if max_message == 0 || max_message > MAX_MAX_MESSAGE {
            errors.push(("max_message", format!("must be between 1 byte and {} MiB", MAX_MAX_MESSAGE >> 20)));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(GrpcTranscodeSettings {
            descriptors: PathBuf::from(&raw.descriptors),
            services: raw.services.clone(),
            print_defaults: raw.print_defaults.unwrap_or(false),
            proto_field_names: raw.proto_field_names.unwrap_or(false),
            ignore_unknown_query_parameters: raw.ignore_unknown_query_parameters.unwrap_or(false),
            max_message,
        })
    }
}

/// `package.Service`: dot-separated identifiers.
fn is_full_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<GrpcTranscodeSettings, Vec<(&'static str, String)>> {
        let raw: RawGrpcTranscode = serde_yaml::from_str(yaml).map_err(|e| vec![("", e.to_string())])?;
        GrpcTranscodeSettings::from_raw(&raw)
    }

    #[test]
    fn defaults_and_every_key() {
        let s = parse("descriptors: protos/shop.pb\nservices: [shop.v1.Orders]\n").expect("valid");
        assert_eq!(s.descriptors, PathBuf::from("protos/shop.pb"));
        assert!(!s.print_defaults && !s.proto_field_names && !s.ignore_unknown_query_parameters);
        assert_eq!(s.max_message, DEFAULT_MAX_MESSAGE);
        let s = parse(
            "descriptors: /etc/siger/shop.pb\nservices: [a.B, c.D]\nprint_defaults: true\nproto_field_names: true\n\
             ignore_unknown_query_parameters: true\nmax_message: 1MiB\n",
        )
        .expect("valid");
        assert!(s.print_defaults && s.proto_field_names && s.ignore_unknown_query_parameters);
        assert_eq!(s.max_message, 1 << 20);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("descriptors: x.pb\nservices: [shop.v1.Orders, shop.v1.Orders, \"bad name\"]\nmax_message: 0\n")
            .expect_err("invalid");
        let keys: Vec<&str> = e.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["services", "services", "max_message"]);
        assert!(e[0].1.contains("twice") && e[1].1.contains("bad name"), "{e:?}");
        let e = parse("descriptors: x.pb\nservices: []\n").expect_err("no services");
        assert_eq!(e[0].0, "services");
        let e = parse("descriptors: x.pb\nservices: [a.B]\nprint_default: true\n").expect_err("unknown key");
        assert!(e[0].1.contains("print_default"), "{e:?}");
    }
}
