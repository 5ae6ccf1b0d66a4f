//! JSON Schema validation of request bodies (ARCHITECTURE.md §7.5) with the `jsonschema` crate:
//! a schema is compiled once when the configuration loads (a schema that does not compile is a
//! config error naming the file); a body is checked once it is complete and answered 400 with
//! the JSON pointer of the first failing instance and why. A body must also be strict JSON
//! ([`strict_json`]): what the schema checks is then what any backend reads.

use super::strict_json::{self, Strictness};
use crate::config::{Findings, LoadedFile};
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A compiled schema and the file it came from.
#[derive(Clone)]
pub struct BodySchema {
    /// The schema file.
    pub path: PathBuf,
    validator: Arc<jsonschema::Validator>,
    /// sha256 of the file, so a reload notices an edited schema.
    digest: [u8; 32],
}

impl fmt::Debug for BodySchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BodySchema({})", self.path.display())
    }
}

impl PartialEq for BodySchema {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.digest == other.digest
    }
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyRejection {
    /// Not JSON at all.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// A name twice in one object: backends differ on which one counts.
    #[error("the body has a duplicate name at `{0}`: a name may appear once in an object")]
    DuplicateName(String),
    /// A number the validator (a double) would read as another value than a decimal backend.
    #[error("the body has a number at `{pointer}` that a double cannot hold exactly: {number}")]
    InexactNumber {
        /// JSON pointer of the number.
        pointer: String,
        /// The number as written.
        number: String,
    },
    /// JSON that the schema refuses.
    #[error("the body does not match the schema at `{pointer}`: {reason}")]
    Invalid {
        /// JSON pointer of the failing instance (`` for the root).
        pointer: String,
        /// What the schema wanted.
        reason: String,
    },
}

impl BodySchema {
    /// Compile the schema file the config read (`routes[].validate.schema`, `jobs.schema`); a
    /// schema that does not compile is reported under its key.
    pub(crate) fn compile(file: &LoadedFile, findings: &mut Findings) -> Option<Self> {
        Self::from_bytes(&file.path, &file.bytes).map_err(|e| findings.error(&file.key, e)).ok()
    }

    /// Read and compile a schema file (JSON; draft from `$schema`, 2020-12 when absent).
    /// References to other files or URLs are not fetched.
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        Self::from_bytes(path, &bytes)
    }

    /// Compile a schema read from `path`.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, String> {
        let schema: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("`{}` is not JSON: {e}", path.display()))?;
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| format!("`{}` is not a valid JSON Schema: {e}", path.display()))?;
        use sha2::Digest;
        Ok(BodySchema {
            path: path.to_path_buf(),
            validator: Arc::new(validator),
            digest: sha2::Sha256::digest(bytes).into(),
        })
    }

    /// Check a complete body: JSON, strict, and what the schema asks.
    pub fn check(&self, body: &[u8]) -> Result<(), BodyRejection> {
        let value: Value = serde_json::from_slice(body).map_err(|e| BodyRejection::NotJson(e.to_string()))?;
        strict_json::check(body).map_err(|e| match e {
            Strictness::DuplicateName(pointer) => BodyRejection::DuplicateName(pointer),
            Strictness::InexactNumber { pointer, number } => BodyRejection::InexactNumber { pointer, number },
        })?;
        self.check_value(&value)
    }

    /// Check a parsed body against the schema alone (its text was checked by [`Self::check`]).
    pub fn check_value(&self, value: &Value) -> Result<(), BodyRejection> {
        // The boolean check is several times cheaper than collecting an error: valid bodies,
        // the common case, never pay for error paths.
        if self.validator.is_valid(value) {
            return Ok(());
        }
        match self.validator.validate(value) {
            Ok(()) => Ok(()),
            Err(e) => {
                let pointer = e.instance_path().to_string();
                // The message quotes the failing instance; keep an answer short.
                let mut reason = e.to_string();
                if reason.len() > 300 {
                    let mut end = 300;
                    while !reason.is_char_boundary(end) {
                        end -= 1;
                    }
                    reason.truncate(end);
                    reason.push('…');
                }
                Err(BodyRejection::Invalid { pointer: if pointer.is_empty() { "/".into() } else { pointer }, reason })
            }
        }
    }
}

/// `Content-Type` says JSON: `application/json` or `application/<something>+json`, any
/// parameters.
pub fn is_json(content_type: Option<&http::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else { return false };
    let media = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> BodySchema {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.json");
        std::fs::write(&path, text).expect("write");
        BodySchema::load(&path).expect("compiles")
    }

    #[test]
    fn failures_name_the_pointer() {
        let s = schema(
            r#"{"type":"object","required":["items"],"properties":{"items":{"type":"array","items":{"type":"object","properties":{"qty":{"type":"integer","minimum":1}}}}}}"#,
        );
        assert_eq!(s.check(br#"{"items":[{"qty":2}]}"#), Ok(()));
        match s.check(br#"{"items":[{"qty":2},{"qty":0}]}"#) {
            Err(BodyRejection::Invalid { pointer, reason }) => {
                assert_eq!(pointer, "/items/1/qty");
                assert!(reason.contains("minimum") || reason.contains("less than"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.check(br#"{}"#), Err(BodyRejection::Invalid { pointer, .. }) if pointer == "/"));
        assert!(matches!(s.check(b"{nope"), Err(BodyRejection::NotJson(_))));
    }

    #[test]
    fn bodies_must_be_strict_json() {
        let s = schema(r#"{"type":"object","properties":{"qty":{"type":"integer","minimum":0,"maximum":100}}}"#);
        assert_eq!(s.check(br#"{"qty":5}"#), Ok(()));
        // Last-wins would read 5; a first-wins backend reads -1.
        assert_eq!(s.check(br#"{"qty":-1,"qty":5}"#), Err(BodyRejection::DuplicateName("/qty".into())));
        // A double reads 100; a decimal backend reads more than the maximum.
        let inexact = s.check(br#"{"qty":100.0000000000000001}"#);
        assert!(
            matches!(inexact, Err(BodyRejection::InexactNumber { ref pointer, .. }) if pointer == "/qty"),
            "{inexact:?}"
        );
        // Not JSON is said first.
        assert!(matches!(s.check(br#"{"qty":1,"qty":2"#), Err(BodyRejection::NotJson(_))));
    }

    #[test]
    fn broken_schemas_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bad.json");
        std::fs::write(&path, r#"{"type": "no-such-type"}"#).expect("write");
        let e = BodySchema::load(&path).expect_err("refused");
        assert!(e.contains("bad.json"), "{e}");
        std::fs::write(&path, "{").expect("write");
        assert!(BodySchema::load(&path).expect_err("refused").contains("not JSON"));
    }

    #[test]
    fn json_content_types() {
        let v = |s: &'static str| http::HeaderValue::from_static(s);
        assert!(is_json(Some(&v("application/json"))));
        assert!(is_json(Some(&v("Application/JSON; charset=utf-8"))));
        assert!(is_json(Some(&v("application/merge-patch+json"))));
        assert!(!is_json(Some(&v("text/plain"))));
        assert!(!is_json(None));
    }
}
