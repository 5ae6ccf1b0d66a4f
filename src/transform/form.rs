//! `application/x-www-form-urlencoded` ↔ JSON, by one rule both ways (docs/transform.md):
//!
//! - a nested member is `parent[child]`, an array element `parent[index]` (`a[b][0]=x` is
//!   `{"a": {"b": ["x"]}}`). Indexes rather than `a[]=`: with arrays of objects
//!   (`a[0][id]=1&a[0][qty]=2&a[1][id]=3`) empty brackets cannot say which fields belong to one
//!   element, while indexes are read the same way by PHP, Rails/Rack (as an index-keyed hash),
//!   Node's `qs` and our own reverse rule, so a round trip is exact;
//! - scalars are their JSON text (`true`, `12.5`), strings unquoted, `null` an empty value;
//!   an empty object or array has no field;
//! - the other way, every value is a string (a form has no types; `set` with a `type` turns a
//!   field into a number); a name given several times, or written `a[]`, collects its values
//!   into an array in order; a group whose keys are exactly `0`…`n-1` becomes an array.
//!
//! A JSON name holding `[` or `]`, or empty, has no form spelling that reads back the same, so
//! it is refused rather than sent ambiguous; so is a form name that is not `base[key]…`.

use super::node::Node;
use super::TransformError;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;

/// The media type of a form.
pub(crate) const FORM: &str = "application/x-www-form-urlencoded";

/// The deepest `a[b][c]…` read (the JSON side is bounded by its parser).
const MAX_DEPTH: usize = 32;

/// A JSON object as form fields.
pub(crate) fn encode(mut node: Node<'_>) -> Result<String, TransformError> {
    node.expand()?;
    let Node::Object(members) = node else {
        let kind = node.kind().name();
        return Err(TransformError::Form(format!("a form is made from a JSON object, not {kind}")));
    };
    let mut form = form_urlencoded::Serializer::new(String::new());
    let mut name = String::new();
    for (key, value) in members {
        check_name(&key)?;
        name.clear();
        name.push_str(&key);
        flatten(&mut name, value, &mut form)?;
    }
    Ok(form.finish())
}

fn check_name(key: &str) -> Result<(), TransformError> {
    if key.is_empty() || key.contains(['[', ']']) {
        return Err(TransformError::Form(format!(
            "the name `{}` has no form spelling (empty, or holds `[` or `]`)",
            short(key)
        )));
    }
    Ok(())
}

fn flatten(
    name: &mut String,
    mut node: Node<'_>,
    form: &mut form_urlencoded::Serializer<String>,
) -> Result<(), TransformError> {
    node.expand()?;
    let len = name.len();
    match node {
        Node::Object(members) => {
            for (key, value) in members {
                check_name(&key)?;
                name.push('[');
                name.push_str(&key);
                name.push(']');
                flatten(name, value, form)?;
                name.truncate(len);
            }
        }
        Node::Array(items) => {
            for (i, item) in items.into_iter().enumerate() {
                name.push('[');
                name.push_str(itoa::Buffer::new().format(i));
                name.push(']');
                flatten(name, item, form)?;
                name.truncate(len);
            }
        }
        Node::Raw(text) => match text.as_bytes().first() {
            Some(b'"') => {
                let s: String = serde_json::from_str(text).map_err(|e| TransformError::NotJson(e.to_string()))?;
                form.append_pair(name, &s);
            }
            Some(b'n') => {
                form.append_pair(name, "");
            }
            _ => {
                form.append_pair(name, text);
            }
        },
        Node::Value(value) => match value {
            Value::String(s) => {
                form.append_pair(name, &s);
            }
            Value::Null => {
                form.append_pair(name, "");
            }
            other => {
                form.append_pair(name, &other.to_string());
            }
        },
    }
    Ok(())
}

/// Form fields as a JSON object.
pub(crate) fn decode(body: &[u8]) -> Result<Node<'static>, TransformError> {
    let mut root = Group::default();
    for (name, value) in form_urlencoded::parse(body) {
        let tokens = split_name(&name)?;
        root.insert(&tokens, value.into_owned(), &name)?;
    }
    // The top level is an object even when its names are `0`…`n-1`: a form is named fields.
    Ok(root.into_object())
}

/// `a[b][]` → `["a", "b", ""]`.
fn split_name(name: &str) -> Result<Vec<&str>, TransformError> {
    let malformed = || TransformError::Form(format!("the field name `{}` is not name[key]…", short(name)));
    let base_end = name.find('[').unwrap_or(name.len());
    let base = &name[..base_end];
    if base.is_empty() || base.contains(']') {
        return Err(malformed());
    }
    let mut tokens = vec![base];
    let mut rest = &name[base_end..];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').ok_or_else(malformed)?;
        let close = inner.find(']').ok_or_else(malformed)?;
        let key = &inner[..close];
        if key.contains('[') {
            return Err(malformed());
        }
        tokens.push(key);
        rest = &inner[close + 1..];
        if tokens.len() > MAX_DEPTH {
            return Err(TransformError::Form(format!(
                "the field name `{}` nests deeper than {MAX_DEPTH}",
                short(name)
            )));
        }
    }
    Ok(tokens)
}

fn short(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// What a form name holds while the form is read.
enum Field {
    /// Named, nothing yet (a slot just made).
    Empty,
    /// One value.
    Text(String),
    /// Several values (a repeated name, or `name[]`).
    List(Vec<String>),
    /// `name[key]…`.
    Group(Group),
}

/// Members in the order the form first names them, with an index so a large form reads in
/// linear time.
#[derive(Default)]
struct Group {
    members: Vec<(String, Field)>,
    index: HashMap<String, usize>,
}

impl Group {
    fn into_object(self) -> Node<'static> {
        Node::Object(self.members.into_iter().map(|(k, f)| (Cow::Owned(k), f.into_node())).collect())
    }

    fn insert(&mut self, tokens: &[&str], value: String, name: &str) -> Result<(), TransformError> {
        let Some((key, rest)) = tokens.split_first() else { return Ok(()) };
        let at = match self.index.get(*key) {
            Some(at) => *at,
            None => {
                self.members.push((key.to_string(), Field::Empty));
                self.index.insert(key.to_string(), self.members.len() - 1);
                self.members.len() - 1
            }
        };
        self.members[at].1.insert(rest, value, name)
    }
}

impl Field {
    fn insert(&mut self, rest: &[&str], value: String, name: &str) -> Result<(), TransformError> {
        let conflict = || TransformError::Form(format!("the field `{}` is both a value and a group", short(name)));
        match rest.split_first() {
            None | Some((&"", [])) => {
                *self = match std::mem::replace(self, Field::Empty) {
                    Field::Empty if rest.is_empty() => Field::Text(value),
                    Field::Empty => Field::List(vec![value]),
                    Field::Text(first) => Field::List(vec![first, value]),
                    Field::List(mut list) => {
                        list.push(value);
                        Field::List(list)
                    }
                    Field::Group(_) => return Err(conflict()),
                };
                Ok(())
            }
            Some((&"", _)) => {
                Err(TransformError::Form(format!("in the field name `{}`, `[]` must come last", short(name))))
            }
            Some(_) => {
                if matches!(self, Field::Empty) {
                    *self = Field::Group(Group::default());
                }
                match self {
                    Field::Group(group) => group.insert(rest, value, name),
                    _ => Err(conflict()),
                }
            }
        }
    }

    fn into_node(self) -> Node<'static> {
        match self {
            Field::Empty => Node::Value(Value::Null),
            Field::Text(text) => Node::Value(Value::String(text)),
            Field::List(list) => Node::Value(Value::Array(list.into_iter().map(Value::String).collect())),
            Field::Group(group) => {
                let n = group.members.len();
                let index_of = |k: &str| (k == "0" || !k.starts_with('0')).then(|| k.parse::<usize>().ok()).flatten();
                let is_array = n > 0 && group.members.iter().all(|(k, _)| index_of(k).is_some_and(|i| i < n));
                if is_array {
                    let mut items: Vec<(usize, Field)> =
                        group.members.into_iter().map(|(k, f)| (index_of(&k).unwrap_or_default(), f)).collect();
                    items.sort_by_key(|(i, _)| *i);
                    Node::Array(items.into_iter().map(|(_, f)| f.into_node()).collect())
                } else {
                    group.into_object()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn to_form(json: &str) -> Result<String, TransformError> {
        encode(Node::parse(json.as_bytes()).expect("json"))
    }

    fn to_json(form: &str) -> Result<Value, TransformError> {
        decode(form.as_bytes())?.into_value()
    }

    #[test]
    fn json_objects_flatten_with_brackets_and_indexes() {
        let form = to_form(r#"{"name":"Ada L","n":12.50,"ok":true,"none":null,"customer":{"id":"u1","tags":["a","b"]},"lines":[{"sku":"x","qty":2},{"sku":"y","qty":1}],"empty":{},"list":[],"esc":"a&b=c"}"#)
            .expect("a form");
        assert_eq!(
            form,
            "name=Ada+L&n=12.50&ok=true&none=&customer%5Bid%5D=u1&customer%5Btags%5D%5B0%5D=a&customer%5Btags%5D%5B1%5D=b\
             &lines%5B0%5D%5Bsku%5D=x&lines%5B0%5D%5Bqty%5D=2&lines%5B1%5D%5Bsku%5D=y&lines%5B1%5D%5Bqty%5D=1&esc=a%26b%3Dc"
        );
        // And back: every value a string, indexes rebuild the arrays.
        assert_eq!(
            to_json(&form).expect("json"),
            json!({"name":"Ada L","n":"12.50","ok":"true","none":"","customer":{"id":"u1","tags":["a","b"]},
                   "lines":[{"sku":"x","qty":"2"},{"sku":"y","qty":"1"}],"esc":"a&b=c"})
        );
    }

    #[test]
    fn what_a_form_cannot_say_is_refused() {
        for bad in [r#"[1]"#, r#""text""#, r#"{"a[b]":1}"#, r#"{"":1}"#, r#"{"a":{"x]":1}}"#, r#"{"a":{"":1}}"#] {
            assert!(matches!(to_form(bad), Err(TransformError::Form(_))), "{bad}");
        }
    }

    #[test]
    fn forms_read_repeats_and_empty_brackets_as_arrays() {
        assert_eq!(
            to_json("a=1&a=2&b[]=x&c[2]=z&c[0]=x&c[1]=y&d[1]=y").expect("json"),
            json!({"a":["1","2"],"b":["x"],"c":["x","y","z"],"d":{"1":"y"}})
        );
        assert_eq!(to_json("").expect("json"), json!({}));
        assert_eq!(to_json("0=a&1=b").expect("json"), json!({"0":"a","1":"b"}), "the top level stays an object");
        assert_eq!(to_json("k=%E2%82%AC+1&e=").expect("json"), json!({"k":"€ 1","e":""}));
        assert_eq!(to_json("c[01]=x&c[0]=y").expect("json"), json!({"c":{"01":"x","0":"y"}}));
    }

    #[test]
    fn malformed_or_conflicting_form_names_are_refused() {
        for bad in
            ["a=1&a[b]=2", "a[b]=2&a=1", "[x]=1", "a]=1", "a[b=1", "a[b]x=1", "a[][b]=1", "a[b[c]]=1", "a[]=1&a[x]=2"]
        {
            assert!(matches!(to_json(bad), Err(TransformError::Form(_))), "{bad}");
        }
        assert!(to_json(&format!("a{}=1", "[x]".repeat(40))).is_err());
    }
}
