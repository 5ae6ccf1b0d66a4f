//! Reading the config file: `${VAR}` interpolation and key-path → line lookup.
//!
//! Interpolation runs on the parsed YAML tree, never on the raw text, so a variable's value can
//! never change the document's structure (a secret containing `: ` or a newline stays a string).
//! A string that is exactly `${VAR}` is re-read as a YAML scalar so `port: ${PORT}` is a number.
//! `${VAR:-fallback}` uses the fallback when VAR is unset or empty. `$${` writes a literal `${`.

use serde_yaml::Value;
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Where the environment comes from; tests pass a map instead of touching the process env.
pub trait Environment {
    /// The variable's value, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Environment for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Replace `${VAR}` in every string of the tree. Returns (path, message) for each failure.
pub fn interpolate(value: &mut Value, env: &dyn Environment) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    walk(value, String::new(), env, &mut errors);
    errors
}

fn walk(value: &mut Value, path: String, env: &dyn Environment, errors: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) if s.contains('$') => match substitute(s, env) {
            Ok(replaced) => {
                let whole = s.trim().starts_with("${") && s.trim().ends_with('}') && s.matches("${").count() == 1;
                *value = if whole {
                    serde_yaml::from_str::<Value>(&replaced)
                        .ok()
                        .filter(|v| !matches!(v, Value::Mapping(_) | Value::Sequence(_) | Value::Tagged(_)))
                        .unwrap_or(Value::String(replaced))
                } else {
                    Value::String(replaced)
                };
            }
            Err(msg) => errors.push((path, msg)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, format!("{path}[{i}]"), env, errors);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = match key {
                    Value::String(k) => k.clone(),
                    other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
                };
                let child = if path.is_empty() { key } else { format!("{path}.{key}") };
                walk(item, child, env, errors);
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, env, errors),
        _ => {}
    }
}

/// Substitute `${NAME}` occurrences in one string.
pub fn substitute(input: &str, env: &dyn Environment) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body.find('}').ok_or_else(|| format!("unterminated `${{` in `{input}`"))?;
            let expr = &body[..end];
            // `${NAME:-fallback}` uses the fallback when NAME is unset or empty.
            let (name, fallback) = match expr.split_once(":-") {
                Some((n, f)) => (n, Some(f)),
                None => (expr, None),
            };
            let valid = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !valid {
                return Err(format!("`${{{name}}}` is not a valid environment variable name"));
            }
            let value = match (env.var(name).filter(|v| !v.is_empty() || fallback.is_none()), fallback) {
                (Some(v), _) => v,
                (None, Some(f)) => f.to_string(),
                (None, None) => return Err(format!("environment variable `{name}` is not set")),
            };
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Maps key paths (`routes[2].service`, `services.users.lb`) to 1-based line numbers.
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Index a YAML document. A document that does not parse yields an empty index.
    pub fn build(text: &str) -> Self {
        let mut builder = IndexBuilder::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut builder, false);
        LineIndex { lines: builder.lines }
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(p) {
                return Some(*line);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    Map { path: String, pending_key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct IndexBuilder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl IndexBuilder {
    /// The path of the node that starts now, consuming the parent's pending key or index.
    fn enter(&mut self, mark: Marker, is_scalar: bool, scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                Some(key) => {
                    let child = if path.is_empty() { key } else { format!("{path}.{key}") };
                    Some(child)
                }
                None => {
                    // This node is a key.
                    if is_scalar {
                        let key = scalar.unwrap_or_default().to_string();
                        let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                        self.lines.entry(child).or_insert(mark.line());
                        *pending_key = Some(key);
                    }
                    None
                }
            },
            Some(Frame::Seq { path, next }) => {
                let child = format!("{path}[{next}]");
                *next += 1;
                self.lines.entry(child.clone()).or_insert(mark.line());
                Some(child)
            }
        }
    }
}

impl MarkedEventReceiver for IndexBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                self.enter(mark, true, Some(&value));
            }
            Event::Alias(_) => {
                self.enter(mark, true, Some(""));
            }
            Event::MappingStart(..) => {
                let path = self.enter(mark, false, None).unwrap_or_default();
                self.stack.push(Frame::Map { path, pending_key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.enter(mark, false, None).unwrap_or_default();
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn substitutes_and_reports_missing() {
        let e = env(&[("A", "x"), ("PORT", "8080")]);
        assert_eq!(substitute("a-${A}-b", &e).as_deref(), Ok("a-x-b"));
        assert_eq!(substitute("$${A} costs $5", &e).as_deref(), Ok("${A} costs $5"));
        assert!(substitute("${MISSING}", &e).unwrap_err().contains("MISSING"));
        assert!(substitute("${A", &e).is_err());
        assert!(substitute("${1A}", &e).is_err());
        assert_eq!(substitute("${MISSING:-}", &e).as_deref(), Ok(""));
        assert_eq!(substitute("${MISSING:-x:y}", &e).as_deref(), Ok("x:y"));
        assert_eq!(substitute("${A:-fallback}", &e).as_deref(), Ok("x"));
    }

    #[test]
    fn interpolation_keeps_structure_and_types() {
        let e = env(&[("PORT", "8080"), ("SECRET", "a: b\nc")]);
        let mut v: Value = serde_yaml::from_str("port: ${PORT}\nsecret: ${SECRET}\nx: [\"${NOPE}\"]").unwrap();
        let errors = interpolate(&mut v, &e);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "x[0]");
        assert_eq!(v["port"], Value::Number(8080.into()));
        assert_eq!(v["secret"], Value::String("a: b\nc".into()));
    }

    #[test]
    fn line_index_finds_nested_keys() {
        let text = "listen: [\"a\"]\nservices:\n  users:\n    lb: random\nroutes:\n  - path: /a\n    service: users\n  - path: /b\n    service: nope\n";
        let idx = LineIndex::build(text);
        assert_eq!(idx.line_of("services.users.lb"), Some(4));
        assert_eq!(idx.line_of("routes[1].service"), Some(9));
        assert_eq!(idx.line_of("routes[1]"), Some(8));
        assert_eq!(idx.line_of("routes[1].nothing"), Some(8));
        assert_eq!(idx.line_of("listen[0]"), Some(1));
    }
}
