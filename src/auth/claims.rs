//! Reading claims: a name is first looked up as-is (claims like `https://example.com/roles`
//! contain dots), then as a dotted path into nested objects (`realm_access.roles`).

use serde_json::{Map, Value};

/// The claim called `name`, or found by walking `name` as a dotted path.
pub fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
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

/// Roles from an array of strings or a space-separated string; anything else is no role.
pub fn roles(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// A string, number or boolean claim as text.
pub fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A claim as a header value: scalars as text, arrays of scalars comma-joined, objects as
/// compact JSON. `None` for null.
pub fn header_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Array(items) => Some(items.iter().filter_map(scalar_string).collect::<Vec<_>>().join(",")),
        Value::Object(_) => serde_json::to_string(v).ok(),
        other => scalar_string(other),
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
    fn dotted_paths_and_literal_names() {
        let c = claims(json!({"realm_access": {"roles": ["a", "b"]}, "https://x.io/r": "admin user", "n": 7}));
        assert_eq!(lookup(&c, "realm_access.roles").map(roles), Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(lookup(&c, "https://x.io/r").map(roles), Some(vec!["admin".to_string(), "user".to_string()]));
        assert!(lookup(&c, "realm_access.missing").is_none());
        assert!(lookup(&c, "n.deeper").is_none());
        assert_eq!(lookup(&c, "n").and_then(header_text).as_deref(), Some("7"));
        assert_eq!(lookup(&c, "realm_access.roles").and_then(header_text).as_deref(), Some("a,b"));
        assert_eq!(roles(&json!(42)), Vec::<String>::new());
    }
}
