//! A transcoded request's message: the JSON body, path variables and query parameters bound to
//! the input message as the binding says, by the proto3 JSON mapping (prost-reflect's serde),
//! so every value meets the same parser and a wrong one is named by its field.

use super::error::CallError;
use super::rules::{unbindable, Binding, BodyRule};
use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};

/// Build the input message of `binding` from the path values, the raw query and the body.
pub(crate) fn message(
    input: &MessageDescriptor,
    binding: &Binding,
    values: &[String],
    query: Option<&str>,
    body: &[u8],
    ignore_unknown_query: bool,
) -> Result<DynamicMessage, CallError> {
    let query = query.filter(|q| !q.is_empty());
    let body_is_empty = body.iter().all(u8::is_ascii_whitespace);
    // The common shape (POST /pkg.Service/Method, `body: "*"` without variables): parse the body
    // straight into the message, no intermediate JSON tree.
    if values.is_empty() && query.is_none() && matches!(binding.body, BodyRule::All) {
        if body_is_empty {
            return Ok(DynamicMessage::new(input.clone()));
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let message = deserialize(input, &mut de)?;
        de.end().map_err(|e| CallError::Body(format!("the body is not JSON: {e}")))?;
        return Ok(message);
    }
    let mut root = match (&binding.body, body_is_empty) {
        (_, true) => Map::new(),
        (BodyRule::None, false) => return Err(CallError::Body("this method takes no request body".into())),
        (BodyRule::All, false) => match parse_json(body)? {
            Value::Object(map) => map,
            _ => {
                return Err(CallError::Field { field: String::new(), reason: "the body must be a JSON object".into() })
            }
        },
        (BodyRule::Field(field), false) => Map::from_iter([(field.json_name().to_string(), parse_json(body)?)]),
    };
    for (fields, text) in binding.path_fields.iter().zip(values) {
        let value = text_value(last(fields), text)
            .map_err(|reason| CallError::Field { field: dotted(fields), reason: format!("path value {reason}") })?;
        insert(&mut root, fields, value);
    }
    if let Some(query) = query {
        bind_query(&mut root, input, binding, query, ignore_unknown_query)?;
    }
    deserialize(input, Value::Object(root))
}

fn bind_query(
    root: &mut Map<String, Value>,
    input: &MessageDescriptor,
    binding: &Binding,
    query: &str,
    ignore_unknown: bool,
) -> Result<(), CallError> {
    for (key, text) in form_urlencoded::parse(query.as_bytes()) {
        let fail = |reason: String| CallError::Query { parameter: key.to_string(), reason };
        let fields = match query_field(input, &key) {
            Some(fields) => fields,
            None if ignore_unknown => continue,
            None => return Err(fail(format!("not a field of {}", input.full_name()))),
        };
        match &binding.body {
            BodyRule::All => return Err(fail("this method takes every field from the body".into())),
            BodyRule::Field(body) if fields[0] == *body => return Err(fail("this field comes from the body".into())),
            _ => {}
        }
        if binding.path_fields.iter().any(|p| fields.starts_with(p) || p.starts_with(&fields)) {
            return Err(fail("this field is bound by the path".into()));
        }
        if let Some(reason) = unbindable(fields.last()) {
            return Err(fail(reason.into()));
        }
        let value = text_value(last(&fields), &text).map_err(fail)?;
        insert(root, &fields, value);
    }
    Ok(())
}

/// A dotted query key, each part a proto or JSON field name.
fn query_field(input: &MessageDescriptor, key: &str) -> Option<Vec<FieldDescriptor>> {
    let mut fields: Vec<FieldDescriptor> = Vec::new();
    let mut message = input.clone();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = message.get_field_by_name(part).or_else(|| message.get_field_by_json_name(part))?;
        if parts.peek().is_some() {
            match field.kind() {
                Kind::Message(next) if !field.is_list() && !field.is_map() => message = next,
                _ => return None,
            }
        }
        fields.push(field);
    }
    Some(fields)
}

fn last(fields: &[FieldDescriptor]) -> &FieldDescriptor {
    // Field paths are never empty: templates and query keys name at least one field.
    &fields[fields.len() - 1]
}

fn dotted(fields: &[FieldDescriptor]) -> String {
    fields.iter().map(FieldDescriptor::name).collect::<Vec<_>>().join(".")
}

fn parse_json(body: &[u8]) -> Result<Value, CallError> {
    serde_json::from_slice(body).map_err(|e| CallError::Body(format!("the body is not JSON: {e}")))
}

/// Run prost-reflect's proto3 JSON parser, naming the field of the first error.
fn deserialize<'de, D>(input: &MessageDescriptor, de: D) -> Result<DynamicMessage, CallError>
where
    D: serde::Deserializer<'de, Error = serde_json::Error>,
{
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(de, &mut track);
    DynamicMessage::deserialize_with_options(input.clone(), tracked, &DeserializeOptions::new()).map_err(|e| {
        let path = track.path().to_string();
        if e.is_syntax() || e.is_eof() {
            return CallError::Body(format!("the body is not JSON: {e}"));
        }
        let mut field = if path == "." { String::new() } else { path };
        let reason = e.to_string();
        // An unknown field is reported at its parent: name the field itself.
        if let Some(name) = reason.strip_prefix("unrecognized field name '").and_then(|r| r.split('\'').next()) {
            field = if field.is_empty() { name.to_string() } else { format!("{field}.{name}") };
        }
        CallError::Field { field, reason }
    })
}

/// Put `value` at `fields` in the JSON tree, creating objects on the way; a repeated field
/// collects values, anything else is replaced (the path wins over the body).
fn insert(root: &mut Map<String, Value>, fields: &[FieldDescriptor], value: Value) {
    let mut object = root;
    for (i, field) in fields.iter().enumerate() {
        // The body may have used the proto name; keep one key per field.
        let key = if object.contains_key(field.name()) && !object.contains_key(field.json_name()) {
            field.name().to_string()
        } else {
            field.json_name().to_string()
        };
        let slot = object.entry(key).or_insert(Value::Null);
        if i + 1 == fields.len() {
            if field.is_list() {
                match slot {
                    Value::Array(items) => items.push(value),
                    other => *other = Value::Array(vec![value]),
                }
            } else {
                *slot = value;
            }
            return;
        }
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(next) = slot else { return };
        object = next;
    }
}

/// The JSON value of a path segment or query value for `field`, checked against its type.
fn text_value(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    match field.kind() {
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask" => {
                Ok(Value::String(text.to_string()))
            }
            _ => match m.get_field_by_name("value") {
                Some(inner) => text_value(&inner, text),
                None => Err(format!("cannot hold {}", m.full_name())),
            },
        },
        kind => scalar_value(&kind, text),
    }
}

fn scalar_value(kind: &Kind, text: &str) -> Result<Value, String> {
    let bad = |what: &str| format!("`{text}` is not {what}");
    Ok(match kind {
        Kind::Double | Kind::Float => match text {
            "NaN" | "Infinity" | "-Infinity" => Value::String(text.to_string()),
            _ => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad("a number"))?,
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => text.parse::<i32>().map_err(|_| bad("a 32-bit integer"))?.into(),
        Kind::Uint32 | Kind::Fixed32 => text.parse::<u32>().map_err(|_| bad("an unsigned 32-bit integer"))?.into(),
        // 64-bit integers travel as strings in JSON (exact beyond 2^53).
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::String(text.parse::<i64>().map_err(|_| bad("a 64-bit integer"))?.to_string())
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Value::String(text.parse::<u64>().map_err(|_| bad("an unsigned 64-bit integer"))?.to_string())
        }
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad("`true` or `false`")),
        },
        Kind::String | Kind::Bytes => Value::String(text.to_string()),
        Kind::Enum(e) => {
            if e.get_value_by_name(text).is_some() {
                Value::String(text.to_string())
            } else if let Some(n) = text.parse::<i32>().ok().filter(|n| e.get_value(*n).is_some()) {
                n.into()
            } else {
                return Err(bad(&format!("a value of {}", e.full_name())));
            }
        }
        Kind::Message(_) => return Err(bad("a scalar")),
    })
}
