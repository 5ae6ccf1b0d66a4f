//! Reading the config file: `${VAR}` interpolation and key-path → line lookup.
//!
//! Interpolation runs on the parsed YAML tree, never on the raw text, so a variable's value can
//! never change the document's structure (a secret containing `: ` or a newline stays a string).
//! A string that is exactly `${VAR}` becomes a number or boolean when its value is exactly one,
//! so `port: ${PORT}` works; it is never re-read as YAML. `${VAR:-fallback}` uses the fallback
//! (itself expanded: `${A:-${B}}`) when VAR is unset or empty. `$${` writes a literal `${`.

use serde_yaml::Value;
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Where the environment comes from; tests pass a map instead of touching the process env.
pub(crate) trait Environment {
    /// The variable's value, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcessEnv;

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
/// What interpolation did: the errors (path, message), and every path whose value came from
/// the environment (with the text substituted), so a type error there can be retried as a
/// string and its message never echoes the value.
#[derive(Debug, Default)]
pub(crate) struct Interpolated {
    pub(crate) errors: Vec<(String, String)>,
    pub(crate) substituted: Vec<(String, String)>,
}

pub(crate) fn interpolate(value: &mut Value, env: &dyn Environment) -> Interpolated {
    let mut out = Interpolated::default();
    walk(value, String::new(), env, &mut out);
    out
}

fn walk(value: &mut Value, path: String, env: &dyn Environment, out: &mut Interpolated) {
    let errors = &mut out.errors;
    match value {
        Value::String(s) if s.contains('$') => match substitute(s, env) {
            Ok(replaced) => {
                // `port: ${PORT}` must still be a number, but the value is never re-read as YAML:
                // a secret such as `#x`, `'a'`, `~` or `*anchor` stays exactly that string.
                let typed = if is_single_expression(s.trim()) {
                    typed_scalar(replaced.clone())
                } else {
                    Value::String(replaced.clone())
                };
                out.substituted.push((path, replaced));
                *value = typed;
            }
            Err(msg) => errors.push((path, msg)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, format!("{path}[{i}]"), env, out);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = match key {
                    Value::String(k) => k.clone(),
                    other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
                };
                let child = if path.is_empty() { key } else { format!("{path}.{key}") };
                walk(item, child, env, out);
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, env, out),
        _ => {}
    }
}

/// A whole-value substitution becomes a number or boolean only when it reads as exactly one
/// (`8080`, `-1`, `0.5`, `true`, `false`); anything else stays a string.
fn typed_scalar(text: String) -> Value {
    let t = text.as_str();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = t.strip_prefix('-').unwrap_or(t);
    if digits(unsigned) {
        if let Ok(n) = t.parse::<i64>() {
            return Value::Number(n.into());
        }
        if let Ok(n) = t.parse::<u64>() {
            return Value::Number(n.into());
        }
    }
    if let Some((whole, frac)) = unsigned.split_once('.') {
        if digits(whole) && digits(frac) {
            if let Ok(f) = t.parse::<f64>() {
                return Value::Number(f.into());
            }
        }
    }
    match t {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(text),
    }
}

/// Whether `s` is one `${…}` expression and nothing else.
fn is_single_expression(s: &str) -> bool {
    s.starts_with("${") && matching_brace(s, 2) == Some(s.len() - 1)
}

/// Index of the `}` closing the expression whose body starts at `from`, counting nested `${`.
fn matching_brace(s: &str, from: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 2;
                continue;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Substitute `${NAME}` and `${NAME:-fallback}` occurrences in one string. Fallbacks are
/// expanded in turn (`${A:-${B}}`), so no `${` is ever left in a value unexpanded; `$${` is the
/// way to write a literal `${`.
pub(crate) fn substitute(input: &str, env: &dyn Environment) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    expand(input, env, &mut out, input, 0)?;
    Ok(out)
}

/// How deeply fallbacks may nest (`${A:-${B:-${C}}}` is 3).
const MAX_FALLBACK_DEPTH: usize = 8;

fn expand(text: &str, env: &dyn Environment, out: &mut String, whole: &str, depth: usize) -> Result<(), String> {
    if depth > MAX_FALLBACK_DEPTH {
        return Err(format!("`${{…}}` fallbacks nest deeper than {MAX_FALLBACK_DEPTH} levels"));
    }
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if after.starts_with("${") {
            let end = matching_brace(after, 2).ok_or_else(|| format!("unterminated `${{` in `{whole}`"))?;
            let expr = &after[2..end];
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
            match (env.var(name).filter(|v| !v.is_empty() || fallback.is_none()), fallback) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(f)) => expand(f, env, out, whole, depth + 1)?,
                (None, None) => return Err(format!("environment variable `{name}` is not set")),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(())
}

/// The value at a key path such as `auth.jwt.secret` or `routes[2].service`.
pub(crate) fn value_at<'a>(root: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut cur = root;
    for part in path.split('.') {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            cur = cur.as_mapping_mut()?.get_mut(key)?;
        }
        for index in indices.split('[').filter(|s| !s.is_empty()) {
            let n: usize = index.trim_end_matches(']').parse().ok()?;
            cur = cur.as_sequence_mut()?.get_mut(n)?;
        }
    }
    Some(cur)
}

/// Maps key paths (`routes[2].service`, `services.users.lb`) to 1-based line numbers.
#[derive(Debug, Default, Clone)]
pub(crate) struct LineIndex {
    lines: HashMap<String, usize>,
    /// Deepest nesting of mappings and sequences seen.
    pub(crate) max_depth: usize,
}

impl LineIndex {
    /// Index a YAML document. A document that does not parse yields an empty index.
    pub(crate) fn build(text: &str) -> Self {
        let mut builder = IndexBuilder::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut builder, false);
        LineIndex { lines: builder.lines, max_depth: builder.max_depth }
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub(crate) fn line_of(&self, path: &str) -> Option<usize> {
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
    max_depth: usize,
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
                self.max_depth = self.max_depth.max(self.stack.len());
            }
            Event::SequenceStart(..) => {
                let path = self.enter(mark, false, None).unwrap_or_default();
                self.stack.push(Frame::Seq { path, next: 0 });
                self.max_depth = self.max_depth.max(self.stack.len());
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
    fn nested_fallbacks_are_expanded() {
        let e = env(&[("B", "secret-b")]);
        assert_eq!(substitute("${A:-${B}}", &e).as_deref(), Ok("secret-b"));
        assert_eq!(substitute("x${A:-${C:-d}}y", &e).as_deref(), Ok("xdy"));
        assert!(substitute("${A:-${C}}", &e).unwrap_err().contains("`C` is not set"));
        assert!(substitute("${A:-${B}", &e).unwrap_err().contains("unterminated"));
        assert_eq!(substitute("${A:-$${B}}", &e).as_deref(), Ok("${B}"), "an explicit literal");
        let deep = format!("{}x{}", "${A:-".repeat(20), "}".repeat(20));
        assert!(substitute(&deep, &e).unwrap_err().contains("nest deeper"));
    }

    #[test]
    fn whole_value_substitution_is_not_reparsed_as_yaml() {
        let e =
            env(&[("S", "#not-a-comment"), ("Q", "'quoted'"), ("T", "~"), ("N", "42"), ("F", "false"), ("X", "*a")]);
        let mut v: Value =
            serde_yaml::from_str("s: ${S}\nq: ${Q}\nt: ${T}\nn: ${N}\nf: ${F}\nx: ${X}\nm: ${MISSING:-${N}}").unwrap();
        assert!(interpolate(&mut v, &e).errors.is_empty());
        assert_eq!(v["s"], Value::String("#not-a-comment".into()));
        assert_eq!(v["q"], Value::String("'quoted'".into()));
        assert_eq!(v["t"], Value::String("~".into()));
        assert_eq!(v["n"], Value::Number(42.into()));
        assert_eq!(v["f"], Value::Bool(false));
        assert_eq!(v["x"], Value::String("*a".into()));
        assert_eq!(v["m"], Value::Number(42.into()));
    }

    #[test]
    fn interpolation_keeps_structure_and_types() {
        let e = env(&[("PORT", "8080"), ("SECRET", "a: b\nc")]);
        let mut v: Value = serde_yaml::from_str("port: ${PORT}\nsecret: ${SECRET}\nx: [\"${NOPE}\"]").unwrap();
        let errors = interpolate(&mut v, &e).errors;
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
