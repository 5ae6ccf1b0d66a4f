//! Reading claims: a name is first looked up as-is (claims like `https://example.com/roles`
//! contain dots), then as a dotted path into nested objects (`realm_access.roles`).

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Parse a JSON object, refusing duplicate member names at any depth. Two `roles` (or `sub`)
/// members mean two parsers can disagree on which one counts (RFC 7519 §4 lets a consumer
/// reject such tokens; we do, for every claim alike).
pub(crate) fn strict_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Strict>(bytes).map_err(|e| e.to_string())?.0 {
        Value::Object(map) => Ok(map),
        _ => Err("not a JSON object".into()),
    }
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Strict(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Strict, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate member `{key}`")));
            }
            let Strict(v) = access.next_value()?;
            map.insert(key, v);
        }
        Ok(Strict(Value::Object(map)))
    }
}

/// The claim called `name`, or found by walking `name` as a dotted path.
pub(crate) fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// Roles from an array of strings or a space-separated string. `Err` for anything else, and for
/// role names with a comma or whitespace: roles go upstream comma-joined, and a name the
/// gateway checks as one role must not read as two to the backend.
pub(crate) fn roles(v: &Value) -> Result<Vec<String>, ()> {
    let valid = |r: &str| !r.is_empty() && !r.contains(',') && !r.contains(char::is_whitespace);
    match v {
        Value::Array(items) => {
            items.iter().map(|i| i.as_str().filter(|r| valid(r)).map(str::to_string).ok_or(())).collect()
        }
        Value::String(s) => Ok(s.split_whitespace().map(str::to_string).filter(|r| !r.contains(',')).collect()),
        Value::Null => Ok(Vec::new()),
        _ => Err(()),
    }
}

/// A string, number or boolean claim as text.
pub(crate) fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A claim as a header value: scalars as text, arrays of scalars comma-joined, objects as
/// compact JSON. `Ok(None)` for null; `Err` for an array whose items are not scalars or
/// contain a comma (the joined header could not be split back into what was signed).
pub(crate) fn header_text(v: &Value) -> Result<Option<String>, ()> {
    match v {
        Value::Null => Ok(None),
        Value::Array(items) => {
            let parts: Option<Vec<String>> =
                items.iter().map(|i| scalar_string(i).filter(|t| !t.contains(','))).collect();
            parts.map(|p| Some(p.join(","))).ok_or(())
        }
        Value::Object(_) => Ok(serde_json::to_string(v).ok()),
        other => Ok(scalar_string(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn duplicate_members_are_refused_at_any_depth() {
        assert!(strict_object(br#"{"sub":"a","roles":["x"],"n":1.5,"o":{"k":null}}"#).is_ok());
        let dup = strict_object(br#"{"roles":["user"],"roles":["admin"]}"#).unwrap_err();
        assert!(dup.contains("duplicate member `roles`"), "{dup}");
        assert!(strict_object(br#"{"o":{"a":1,"a":2}}"#).is_err());
        assert!(strict_object(br#"[1]"#).is_err());
    }

    #[test]
    fn dotted_paths_and_literal_names() {
        let c = claims(json!({"realm_access": {"roles": ["a", "b"]}, "https://x.io/r": "admin user", "n": 7}));
        assert_eq!(lookup(&c, "realm_access.roles").map(roles), Some(Ok(vec!["a".to_string(), "b".to_string()])));
        assert_eq!(lookup(&c, "https://x.io/r").map(roles), Some(Ok(vec!["admin".to_string(), "user".to_string()])));
        assert!(lookup(&c, "realm_access.missing").is_none());
        assert!(lookup(&c, "n.deeper").is_none());
        assert_eq!(lookup(&c, "n").map(header_text), Some(Ok(Some("7".into()))));
        assert_eq!(lookup(&c, "realm_access.roles").map(header_text), Some(Ok(Some("a,b".into()))));
        assert_eq!(header_text(&json!(["a,b", "c"])), Err(()), "a comma inside an item");
        assert_eq!(header_text(&json!([{"x": 1}])), Err(()), "an item that is not a scalar");
        assert_eq!(roles(&json!("user admin")), Ok(vec!["user".to_string(), "admin".to_string()]));
        assert_eq!(roles(&json!(["user", "admin,ops"])), Err(()));
        assert_eq!(roles(&json!(["user", 7])), Err(()));
        assert_eq!(roles(&json!(42)), Err(()));
    }
}
