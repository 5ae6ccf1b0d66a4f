//! `transform` on a route and on an aggregation part (docs/transform.md):
//! plain data, read straight from the file. Pointers and templates stay text here; the
//! `transform` module turns them into working objects (`Transform::from_settings`) where a
//! snapshot is built, and reports what is wrong with a key relative to this block
//! (`response.allow[1]`), which the caller prefixes with the route's key.
//!
//! Every struct rejects unknown keys, as the rest of the file does.

use super::units::ByteSize;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// `routes[].transform`: what happens to the request body sent upstream and to the response
/// body sent to the client. Absent: bodies pass untouched (and nothing is buffered).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSettings {
    /// `transform.request`.
    pub request: Option<RequestTransformSettings>,
    /// `transform.response`.
    pub response: Option<ResponseTransformSettings>,
}

/// `transform.request`: applied in the order rename → remove → set, then encoded as `format`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestTransformSettings {
    /// How the body is sent upstream (default `json`).
    #[serde(default)]
    pub format: BodyFormat,
    /// JSON pointer → value (a template, `{value, type}`, or a literal number, boolean or null).
    #[serde(default)]
    pub set: BTreeMap<String, SetValueSettings>,
    /// JSON pointers removed (`*` for every element or member).
    #[serde(default)]
    pub remove: Vec<String>,
    /// JSON pointer → JSON pointer: the value moves.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
}

/// The body format sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// `application/json` (a form from the client is turned into JSON).
    #[default]
    Json,
    /// `application/x-www-form-urlencoded` (a JSON object is flattened as `a[b][0]=…`).
    Form,
}

/// One value of `transform.request.set`: a string is a template, a mapping is `{value, type}`,
/// a number, boolean or null is sent as written. A list is refused (`{value: '[…]', type: json}`
/// says it without ambiguity), and so is a mapping that is not `{value, type}`, so a mistyped
/// `type` is an error rather than an object literal.
#[derive(Debug, Clone, PartialEq)]
pub enum SetValueSettings {
    /// A template: the rendered text is a JSON string.
    Template(String),
    /// A template whose text is converted to a type.
    Typed(TypedValueSettings),
    /// A number, boolean or null written in the file, sent as it is.
    Literal(serde_json::Value),
}

impl<'de> Deserialize<'de> for SetValueSettings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(text) => Ok(SetValueSettings::Template(text)),
            serde_json::Value::Object(map) => serde_json::from_value(serde_json::Value::Object(map))
                .map(SetValueSettings::Typed)
                .map_err(|e| D::Error::custom(format!("{e} (a mapping here is {{value, type}})"))),
            serde_json::Value::Array(_) => {
                Err(D::Error::custom("a list is not a value here; write {value: '[…]', type: json}"))
            }
            scalar => Ok(SetValueSettings::Literal(scalar)),
        }
    }
}

/// `{value: "$claim_age", type: integer}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypedValueSettings {
    /// The template.
    pub value: String,
    /// What the rendered text is converted to.
    #[serde(rename = "type")]
    pub kind: ValueType,
}

/// The type a rendered template is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// The text as a JSON string.
    String,
    /// A whole number (i64 or u64) written in decimal.
    Integer,
    /// A JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// The text read as a JSON document.
    Json,
}

impl ValueType {
    /// The name used in the file.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Integer => "integer",
            ValueType::Number => "number",
            ValueType::Boolean => "boolean",
            ValueType::Json => "json",
        }
    }
}

/// `transform.response`: applied in the order unwrap → allow | deny → rename → wrap; `status`
/// rules are looked up by the backend's status first.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseTransformSettings {
    /// Only these JSON pointers are kept (never with `deny`).
    pub allow: Option<Vec<String>>,
    /// These JSON pointers are removed (never with `allow`).
    pub deny: Option<Vec<String>>,
    /// JSON pointer → JSON pointer: the value moves.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// The body becomes `{"<wrap>": <body>}`.
    pub wrap: Option<String>,
    /// The body becomes the value at this pointer.
    pub unwrap: Option<String>,
    /// The largest body transformed, in bytes (after decoding); larger → 502. Default 1 MiB.
    #[serde(default, deserialize_with = "size")]
    pub max_body: Option<u64>,
    /// Backend status → the status (and optionally a fixed body) sent to the client.
    #[serde(default)]
    pub status: BTreeMap<u16, StatusRuleSettings>,
}

/// One `status` rule: `404: 200` or `404: {status: 200, body: {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged, expecting = "a status code or {status, body}")]
pub enum StatusRuleSettings {
    /// Only the status changes; the body is transformed as any other.
    Status(u16),
    /// The status changes and the body is replaced.
    Answer(StatusAnswerSettings),
}

/// `{status: 200, body: {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusAnswerSettings {
    /// The status sent to the client.
    pub status: u16,
    /// The JSON body sent instead of the backend's (strings are templates). Absent: the
    /// backend's body, transformed.
    pub body: Option<serde_json::Value>,
}

/// `aggregate.parts[].transform`: the body operations of a response transform that make sense
/// for a part (its key already wraps it; the route's `max_body` bounds it).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartTransformSettings {
    /// Only these JSON pointers are kept (never with `deny`).
    pub allow: Option<Vec<String>>,
    /// These JSON pointers are removed (never with `allow`).
    pub deny: Option<Vec<String>>,
    /// JSON pointer → JSON pointer.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// The part's value becomes the value at this pointer.
    pub unwrap: Option<String>,
}

impl From<&PartTransformSettings> for ResponseTransformSettings {
    fn from(part: &PartTransformSettings) -> Self {
        ResponseTransformSettings {
            allow: part.allow.clone(),
            deny: part.deny.clone(),
            rename: part.rename.clone(),
            unwrap: part.unwrap.clone(),
            ..ResponseTransformSettings::default()
        }
    }
}

/// A size written as the file's sizes are (`512KiB`, `1MiB`, a number of bytes).
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Some(ByteSize::deserialize(d)?.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: for<'de> Deserialize<'de>>(yaml: &str) -> Result<T, String> {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn the_architecture_example_reads() {
        let t: TransformSettings = read(
            "request:\n  format: form\n  set: {/customer/id: \"$claim_sub\", /age: {value: \"$claim_age\", type: integer}, /n: 5, /ok: true}\n  remove: [/internal]\n  rename: {/qty: /quantity}\nresponse:\n  allow: [/id, /status, /items]\n  rename: {/created_at: /createdAt}\n  wrap: data\n  unwrap: /result\n  max_body: 1MiB\n  status: {404: 200, 410: {status: 200, body: {items: []}}}\n",
        )
        .expect("valid");
        let request = t.request.expect("request");
        assert_eq!(request.format, BodyFormat::Form);
        assert_eq!(request.set["/customer/id"], SetValueSettings::Template("$claim_sub".into()));
        assert_eq!(
            request.set["/age"],
            SetValueSettings::Typed(TypedValueSettings { value: "$claim_age".into(), kind: ValueType::Integer })
        );
        assert_eq!(request.set["/n"], SetValueSettings::Literal(serde_json::json!(5)));
        assert_eq!(request.set["/ok"], SetValueSettings::Literal(serde_json::json!(true)));
        let response = t.response.expect("response");
        assert_eq!(response.max_body, Some(1 << 20));
        assert_eq!(response.status[&404], StatusRuleSettings::Status(200));
        assert!(
            matches!(&response.status[&410], StatusRuleSettings::Answer(a) if a.body == Some(serde_json::json!({"items": []})))
        );
    }

    #[test]
    fn the_keys_the_transform_names_resolve_to_their_lines() {
        // What `-t` will print: the compiler's key below the block, prefixed with the route's
        // key, found in the file by the loader's own line index.
        let text = "routes:\n  - path: /\n    transform:\n      request:\n        set:\n          /ok: x\n          /b: \"$nope\"\n        rename: {/m: /n, /n/o: /z}\n      response:\n        allow: [/id, /a~2]\n        status:\n          404: 204\n";
        let value: serde_yaml::Value = serde_yaml::from_str(text).expect("yaml");
        let settings: TransformSettings =
            serde_yaml::from_value(value["routes"][0]["transform"].clone()).expect("settings");
        let errors = crate::transform::Transform::from_settings(&settings).expect_err("four mistakes");
        let lines = super::super::source::LineIndex::build(text);
        let mut found: Vec<(String, Option<usize>)> = errors
            .into_iter()
            .map(|e| {
                let key = format!("routes[0].transform.{}", e.key);
                let line = lines.line_of(&key);
                (key, line)
            })
            .collect();
        found.sort_by_key(|(_, line)| *line);
        let expected = [
            ("routes[0].transform.request.set./b", Some(7)),
            ("routes[0].transform.request.rename./n/o", Some(8)),
            ("routes[0].transform.response.allow[1]", Some(10)),
            ("routes[0].transform.response.status.404", Some(12)),
        ];
        assert_eq!(found, expected.map(|(k, l)| (k.to_string(), l)));
    }

    #[test]
    fn unknown_keys_and_types_are_named() {
        let e = read::<TransformSettings>("response:\n  alow: [/id]\n").expect_err("misspelt");
        assert!(e.contains("alow"), "{e}");
        let e = read::<TransformSettings>("request:\n  format: xml\n").expect_err("unknown format");
        assert!(e.starts_with("request.format"), "{e}");
        let e = read::<TransformSettings>("request:\n  set: {/a: {value: x, type: date}}\n").expect_err("bad type");
        assert!(e.starts_with("request.set./a") && e.contains("date"), "{e}");
        let e = read::<TransformSettings>("request:\n  set: {/a: {id: 1}}\n").expect_err("not {value, type}");
        assert!(e.contains("id"), "{e}");
        let e = read::<TransformSettings>("request:\n  set: {/a: [1]}\n").expect_err("a list");
        assert!(e.contains("type: json"), "{e}");
        let e = read::<TransformSettings>("response:\n  max_body: 1XB\n").expect_err("bad size");
        assert!(e.contains("unknown unit"), "{e}");
    }
}
