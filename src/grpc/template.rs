//! google.api.http path templates: parsing (`/v1/{name=projects/*/items/*}:cancel`) and
//! matching a request path against one, capturing its variables.
//!
//! Grammar (google/api/http.proto): `Template = "/" Segments [":" Verb]`, a segment is a
//! literal, `*` (one segment), `**` (the rest, last only) or `{field.path[=Segments]}`;
//! `{x}` means `{x=*}`. Captured values are percent-decoded; a variable over several
//! segments keeps `%2F` encoded, as the spec says.

use std::fmt;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// `*`: one non-empty segment.
    One,
    /// `**`: zero or more segments, the rest of the path.
    Rest,
}

/// A variable: the field path it binds and the segments it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Variable {
    /// `order.id` → `["order", "id"]`.
    pub(crate) field_path: Vec<String>,
    /// First template segment of the variable.
    start: usize,
    /// One past its last template segment.
    end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
    pub(crate) variables: Vec<Variable>,
    verb: Option<String>,
    text: String,
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path template `{template}`: {reason}")]
pub struct TemplateError {
    template: String,
    reason: &'static str,
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Template {
    /// Parse a template.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let fail = |reason| TemplateError { template: text.to_string(), reason };
        let rest = text.strip_prefix('/').ok_or(fail("must start with `/`"))?;
        // The verb is after the last `:` outside braces.
        let (path, verb) = split_verb(rest);
        if verb.is_some_and(|v| v.is_empty() || v.contains(['/', '{', '}', '*'])) {
            return Err(fail("a verb is a literal after the last `:`"));
        }
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut chars = path;
        while !chars.is_empty() || segments.is_empty() {
            if let Some(inner) = chars.strip_prefix('{') {
                let close = inner.find('}').ok_or(fail("a `{` without `}`"))?;
                let (name, pattern) = match inner[..close].split_once('=') {
                    Some((name, pattern)) => (name, pattern),
                    None => (&inner[..close], "*"),
                };
                let field_path: Vec<String> = name.split('.').map(str::to_string).collect();
                if field_path.iter().any(|p| !is_ident(p)) {
                    return Err(fail("a variable names a field path like `order.id`"));
                }
                let start = segments.len();
                for part in pattern.split('/') {
                    segments.push(plain_segment(part).ok_or(fail("a variable's pattern is literals, `*` and `**`"))?);
                }
                variables.push(Variable { field_path, start, end: segments.len() });
                chars = &inner[close + 1..];
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                segments
                    .push(plain_segment(&chars[..end]).ok_or(fail("a segment is a literal, `*`, `**` or a variable"))?);
                chars = &chars[end..];
            }
            match chars.strip_prefix('/') {
                Some(next) if !next.is_empty() => chars = next,
                Some(_) => return Err(fail("a trailing `/`")),
                None if chars.is_empty() => break,
                None => return Err(fail("a variable must span whole segments")),
            }
        }
        if segments.iter().rev().skip(1).any(|s| *s == Segment::Rest) {
            return Err(fail("`**` must be the last segment"));
        }
        let mut seen: Vec<&Vec<String>> = Vec::new();
        for v in &variables {
            if seen.contains(&&v.field_path) {
                return Err(fail("a field is bound twice"));
            }
            seen.push(&v.field_path);
        }
        Ok(Template { segments, variables, verb: verb.map(str::to_string), text: text.to_string() })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The template with its variables replaced by their patterns: two templates with the
    /// same shape match the same paths.
    pub(crate) fn shape(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            out.push_str(match s {
                Segment::Literal(l) => l,
                Segment::One => "*",
                Segment::Rest => "**",
            });
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }

    /// A sort key: literals before `*` before `**`, segment by segment, so the most specific
    /// template is tried first.
    pub(crate) fn specificity(&self) -> Vec<u8> {
        let mut key: Vec<u8> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 0,
                Segment::One => 1,
                Segment::Rest => 2,
            })
            .collect();
        key.push(if self.verb.is_some() { 0 } else { 1 });
        key
    }

    /// Match a split request path; on success the decoded value of each variable, in order.
    pub(crate) fn matches(&self, path: &SplitPath<'_>) -> Option<Vec<String>> {
        let segments: &[&str] = match &self.verb {
            Some(verb) => {
                if path.verb != Some(verb.as_str()) {
                    return None;
                }
                &path.without_verb
            }
            None => &path.segments,
        };
        let rest = self.segments.last() == Some(&Segment::Rest);
        let fixed = self.segments.len() - usize::from(rest);
        if segments.len() < fixed || (!rest && segments.len() != fixed) {
            return None;
        }
        for (t, s) in self.segments[..fixed].iter().zip(segments) {
            match t {
                Segment::Literal(l) if l.as_str() == *s => {}
                Segment::Literal(l) if percent_decode(s, true) == *l => {}
                Segment::One if !s.is_empty() => {}
                _ => return None,
            }
        }
        let values = self
            .variables
            .iter()
            .map(|v| {
                let end = if v.end == self.segments.len() && rest { segments.len() } else { v.end };
                let parts = &segments[v.start..end];
                match parts {
                    [one] if v.end - v.start == 1 && self.segments[v.start] == Segment::One => {
                        percent_decode(one, true)
                    }
                    _ => percent_decode(&parts.join("/"), false),
                }
            })
            .collect();
        Some(values)
    }
}

/// A request path split once for all the templates it is matched against.
#[derive(Debug)]
pub(crate) struct SplitPath<'a> {
    segments: Vec<&'a str>,
    /// The segments with the last one's `:verb` removed (when it has one).
    without_verb: Vec<&'a str>,
    verb: Option<&'a str>,
}

impl<'a> SplitPath<'a> {
    /// Split a path (`/a/b:verb`, no query); `None` unless it starts with `/`.
    pub(crate) fn new(path: &'a str) -> Option<SplitPath<'a>> {
        let rest = path.strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        let mut without_verb = segments.clone();
        let mut verb = None;
        if let Some(last) = without_verb.last_mut() {
            if let Some((head, v)) = last.rsplit_once(':') {
                *last = head;
                verb = Some(v);
            }
        }
        Some(SplitPath { segments, without_verb, verb })
    }
}

fn split_verb(path: &str) -> (&str, Option<&str>) {
    let last_brace = path.rfind('}').map_or(0, |i| i + 1);
    match path[last_brace..].rfind(':') {
        Some(i) => (&path[..last_brace + i], Some(&path[last_brace + i + 1..])),
        None => (path, None),
    }
}

fn plain_segment(text: &str) -> Option<Segment> {
    match text {
        "*" => Some(Segment::One),
        "**" => Some(Segment::Rest),
        "" => None,
        l if l.contains(['{', '}', '*', '=', ':']) => None,
        l => Some(Segment::Literal(l.to_string())),
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Decode `%XX`; with `slash == false`, `%2F` stays encoded (a multi-segment variable).
fn percent_decode(text: &str, slash: bool) -> String {
    if !text.contains('%') {
        return text.to_string();
    }
    if slash {
        return percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned();
    }
    // Decode around each %2F so it survives.
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.to_ascii_lowercase().find("%2f") {
        out.push_str(&percent_encoding::percent_decode_str(&rest[..i]).decode_utf8_lossy());
        out.push_str(&rest[i..i + 3]);
        rest = &rest[i + 3..];
    }
    out.push_str(&percent_encoding::percent_decode_str(rest).decode_utf8_lossy());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(template: &str, path: &str) -> Option<Vec<String>> {
        let t = Template::parse(template).expect("template");
        t.matches(&SplitPath::new(path).expect("path"))
    }

    #[test]
    fn variables_literals_and_wildcards() {
        assert_eq!(capture("/v1/orders/{id}", "/v1/orders/42"), Some(vec!["42".into()]));
        assert_eq!(capture("/v1/orders/{id}", "/v1/orders/"), None);
        assert_eq!(capture("/v1/orders/{id}", "/v1/orders/4/2"), None);
        assert_eq!(capture("/v1/orders/{id}", "/v1/items/42"), None);
        assert_eq!(
            capture("/v1/{name=projects/*/items/*}", "/v1/projects/p1/items/i%2F2"),
            Some(vec!["projects/p1/items/i%2F2".into()])
        );
        assert_eq!(capture("/v1/{name=projects/*/items/*}", "/v1/projects/p1/things/i2"), None);
        assert_eq!(capture("/v1/files/{path=**}", "/v1/files/a/b%20c/d.txt"), Some(vec!["a/b c/d.txt".into()]));
        assert_eq!(capture("/v1/files/{path=**}", "/v1/files"), Some(vec!["".into()]));
        assert_eq!(capture("/v1/orders/{order.id}", "/v1/orders/a%2Fb%20c"), Some(vec!["a/b c".into()]));
        assert_eq!(capture("/v1/*/orders", "/v1/x/orders"), Some(vec![]));
        assert_eq!(capture("/v1/shops/{shop}/orders/{id}", "/v1/shops/s/orders/o"), Some(vec!["s".into(), "o".into()]));
    }

    #[test]
    fn verbs() {
        assert_eq!(capture("/v1/orders/{id}:cancel", "/v1/orders/7:cancel"), Some(vec!["7".into()]));
        assert_eq!(capture("/v1/orders/{id}:cancel", "/v1/orders/7:refund"), None);
        assert_eq!(capture("/v1/orders/{id}:cancel", "/v1/orders/7"), None);
        assert_eq!(capture("/v1/orders:watch", "/v1/orders:watch"), Some(vec![]));
        // Without a verb in the template the colon is part of the value.
        assert_eq!(capture("/v1/orders/{id}", "/v1/orders/7:cancel"), Some(vec!["7:cancel".into()]));
        assert_eq!(capture("/v1/{name=**}:undelete", "/v1/a/b:undelete"), Some(vec!["a/b".into()]));
    }

    #[test]
    fn malformed_templates_are_named() {
        for bad in ["v1/x", "/v1/{id", "/v1/{a-b}", "/v1/**/x", "/v1/x/", "/v1/{id}x", "/v1/x:", "/v1/{a}/{a}", "/"] {
            let e = Template::parse(bad).expect_err(bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn shape_and_specificity() {
        let a = Template::parse("/v1/{name=items/*}").expect("t");
        let b = Template::parse("/v1/items/{id}").expect("t");
        assert_eq!(a.shape(), b.shape());
        let literal = Template::parse("/v1/items/special").expect("t");
        assert!(literal.specificity() < b.specificity());
        let rest = Template::parse("/v1/items/{p=**}").expect("t");
        assert!(b.specificity() < rest.specificity());
    }
}
