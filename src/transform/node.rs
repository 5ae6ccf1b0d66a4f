//! A JSON document opened only where a transform edits it.
//!
//! Parsing a whole body into `serde_json::Value` allocates every string and map of it; a
//! transform that renames two top-level fields and filters a few more touches one object. So
//! the body is parsed one level at a time: an object is a list of (name, raw value) pairs whose
//! raw values are slices of the body, validated but not built ([`super::scan`]), and an edit
//! opens (`expand`) only the containers on its path. Writing copies untouched slices as they are, so the numbers,
//! escapes and spacing the backend wrote survive.
//!
//! A repeated member name in an object the transform opens is refused: which copy a client
//! reads depends on its parser, and a filter must not pick one (the project's other JSON entry
//! points refuse them too, `policy::strict_json`). Objects never opened pass as they are.

use super::scan::{self, Next, ScanError};
use super::TransformError;
use serde_json::Value;
use std::borrow::Cow;

/// One value of the document.
#[derive(Debug)]
pub(crate) enum Node<'a> {
    /// Not opened: the exact text of the value in the body (any JSON value, validated).
    Raw(&'a str),
    /// An opened object, members in their order.
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
    /// An opened array.
    Array(Vec<Node<'a>>),
    /// A value the transform made (a `set` value, a form field).
    Value(Value),
}

impl<'a> Node<'a> {
    /// Parse a whole body. The top level is opened at once (every transform edits it), in the
    /// same pass that validates the rest.
    pub(crate) fn parse(body: &'a [u8]) -> Result<Node<'a>, TransformError> {
        // UTF-8 is checked once for the whole body (fast on ASCII), so the scanner looks at
        // ASCII structure only and every slice of it is text.
        let text = std::str::from_utf8(body).map_err(|e| TransformError::NotJson(format!("not UTF-8: {e}")))?;
        let b = text.as_bytes();
        let start = scan::skip_ws(b, 0);
        let (node, end) = match b.get(start) {
            Some(b'{' | b'[') => open(text, start)?,
            _ => {
                let end = scan::value_end(b, start).map_err(not_json)?;
                (Node::Raw(&text[start..end]), end)
            }
        };
        let rest = scan::skip_ws(b, end);
        if rest != b.len() {
            return Err(not_json(ScanError { at: rest, what: "trailing characters after the value" }));
        }
        Ok(node)
    }

    /// What kind of JSON value this is.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Node::Object(_) => Kind::Object,
            Node::Array(_) => Kind::Array,
            Node::Raw(raw) => match raw.as_bytes().first() {
                Some(b'{') => Kind::Object,
                Some(b'[') => Kind::Array,
                _ => Kind::Scalar,
            },
            Node::Value(Value::Object(_)) => Kind::Object,
            Node::Value(Value::Array(_)) => Kind::Array,
            Node::Value(_) => Kind::Scalar,
        }
    }

    /// Whether this is an object or an array.
    pub(crate) fn is_container(&self) -> bool {
        self.kind() != Kind::Scalar
    }

    /// Open an object or array (its members become nodes); scalars stay as they are.
    pub(crate) fn expand(&mut self) -> Result<(), TransformError> {
        match self {
            Node::Raw(text) => {
                if let Some(b'{' | b'[') = text.as_bytes().first() {
                    *self = open(text, 0)?.0;
                }
            }
            Node::Value(Value::Object(map)) => {
                let map = std::mem::take(map);
                *self = Node::Object(map.into_iter().map(|(k, v)| (Cow::Owned(k), Node::Value(v))).collect());
            }
            Node::Value(Value::Array(items)) => {
                let items = std::mem::take(items);
                *self = Node::Array(items.into_iter().map(Node::Value).collect());
            }
            _ => {}
        }
        Ok(())
    }

    /// The member `key` of an opened object.
    pub(crate) fn member_mut(&mut self, key: &str) -> Option<&mut Node<'a>> {
        match self {
            Node::Object(members) => members.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Append the JSON text of this node to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) -> Result<(), TransformError> {
        match self {
            Node::Raw(raw) => out.extend_from_slice(raw.as_bytes()),
            Node::Object(members) => {
                out.push(b'{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_string(key, out)?;
                    out.push(b':');
                    value.write(out)?;
                }
                out.push(b'}');
            }
            Node::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out)?;
                }
                out.push(b']');
            }
            Node::Value(value) => serde_json::to_writer(&mut *out, value).map_err(not_json)?,
        }
        Ok(())
    }

    /// This node as a `serde_json::Value` (forms, tests).
    pub(crate) fn into_value(self) -> Result<Value, TransformError> {
        Ok(match self {
            Node::Raw(raw) => serde_json::from_str(raw).map_err(not_json)?,
            Node::Object(members) => {
                let mut map = serde_json::Map::new();
                for (k, v) in members {
                    map.insert(k.into_owned(), v.into_value()?);
                }
                Value::Object(map)
            }
            Node::Array(items) => Value::Array(items.into_iter().map(Node::into_value).collect::<Result<_, _>>()?),
            Node::Value(v) => v,
        })
    }
}

/// The three shapes a pointer cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `{…}`
    Object,
    /// `[…]`
    Array,
    /// A string, number, boolean or null.
    Scalar,
}

impl Kind {
    /// For messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Object => "an object",
            Kind::Array => "an array",
            Kind::Scalar => "a string, number, boolean or null",
        }
    }
}

fn not_json(e: impl std::fmt::Display) -> TransformError {
    TransformError::NotJson(e.to_string())
}

/// Open the object or array that starts at `start` of `text` (valid UTF-8): its members or
/// items as raw nodes, and the index after it.
fn open<'a>(text: &'a str, start: usize) -> Result<(Node<'a>, usize), TransformError> {
    let b = text.as_bytes();
    let object = b[start] == b'{';
    let mut i = scan::skip_ws(b, start + 1);
    if b.get(i) == Some(if object { &b'}' } else { &b']' }) {
        let empty = if object { Node::Object(Vec::new()) } else { Node::Array(Vec::new()) };
        return Ok((empty, i + 1));
    }
    let mut members = Vec::new();
    let mut items = Vec::new();
    loop {
        let name = if object {
            let (after, (from, to), escaped) = scan::member_name(b, i).map_err(not_json)?;
            i = scan::skip_ws(b, after);
            Some(if escaped {
                // Decoded (and its escapes checked: a name must be text) by serde_json.
                let quoted = &text[from..to];
                Cow::Owned(serde_json::from_str::<String>(quoted).map_err(not_json)?)
            } else {
                Cow::Borrowed(&text[from + 1..to - 1])
            })
        } else {
            None
        };
        let end = scan::value_end(b, i).map_err(not_json)?;
        let value = Node::Raw(&text[i..end]);
        match name {
            Some(name) => members.push((name, value)),
            None => items.push(value),
        }
        match scan::next(b, end, object).map_err(not_json)? {
            Next::More(at) => i = at,
            Next::End(at) => {
                let node = if object { Node::Object(unique(members)?) } else { Node::Array(items) };
                return Ok((node, at));
            }
        }
    }
}

/// A JSON string: as it is when nothing in it needs escaping (names read from the body were
/// unescaped by the parser only when they held an escape, so the common case copies).
fn write_string(text: &str, out: &mut Vec<u8>) -> Result<(), TransformError> {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, text).map_err(not_json)
    }
}

/// An object's members as parsed (names decoded, values raw), refused when a name repeats.
fn unique<'a>(list: Vec<(Cow<'a, str>, Node<'a>)>) -> Result<Vec<(Cow<'a, str>, Node<'a>)>, TransformError> {
    let repeated = if list.len() <= 16 {
        list.iter()
            .enumerate()
            .find(|(i, (k, _))| list[..*i].iter().any(|(seen, _)| seen == k))
            .map(|(_, (k, _))| k.as_ref())
    } else {
        let mut seen = std::collections::HashSet::with_capacity(list.len());
        list.iter().map(|(k, _)| k.as_ref()).find(|k| !seen.insert(*k))
    };
    if let Some(name) = repeated {
        return Err(TransformError::RepeatedName { name: name.to_string() });
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(text: &str) -> String {
        let mut node = Node::parse(text.as_bytes()).expect("json");
        node.expand().expect("expand");
        let mut out = Vec::new();
        node.write(&mut out).expect("write");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn untouched_values_are_copied_as_written() {
        assert_eq!(
            round_trip(r#" {"a" : 1.50, "b":[1, 2], "c":{"d" :"\u00e9"}} "#),
            r#"{"a":1.50,"b":[1, 2],"c":{"d" :"\u00e9"}}"#
        );
        assert_eq!(round_trip("[1, {\"x\": 2}]"), "[1,{\"x\": 2}]");
        assert_eq!(round_trip(" 12345678901234567890123 "), "12345678901234567890123");
        assert_eq!(round_trip(r#"{"a\nb":1,"\u0061":2}"#), r#"{"a\nb":1,"a":2}"#);
    }

    #[test]
    fn bodies_that_are_not_one_json_value_are_refused() {
        for bad in ["", "{", "{\"a\":1} x", "[1,]", "nul", "{\"\\ud800\":1}", "\u{feff}{}"] {
            assert!(matches!(Node::parse(bad.as_bytes()), Err(TransformError::NotJson(_))), "{bad:?}");
        }
        assert!(Node::parse(b"{\"a\":\xff}").is_err());
    }

    #[test]
    fn repeated_names_are_refused_where_a_level_is_opened() {
        let e = Node::parse(br#"{"a":1,"\u0061":2}"#).expect_err("repeated");
        assert_eq!(e, TransformError::RepeatedName { name: "a".into() });
        let many: Vec<String> = (0..40).map(|i| format!("\"k{}\":1", i % 39)).collect();
        assert!(Node::parse(format!("{{{}}}", many.join(",")).as_bytes()).is_err());
        // Below the top level, nothing is opened until an edit needs it.
        let mut node = Node::parse(br#"{"x":{"a":1,"a":2}}"#).expect("top level is fine");
        assert!(node.member_mut("x").expect("x").expand().is_err());
    }

    #[test]
    fn made_values_open_and_convert() {
        let mut node = Node::Value(json!({"a": [1, {"b": null}]}));
        node.expand().expect("expand");
        let a = node.member_mut("a").expect("a");
        a.expand().expect("expand");
        assert_eq!(a.kind(), Kind::Array);
        assert_eq!(node.into_value().expect("value"), json!({"a": [1, {"b": null}]}));
    }
}
