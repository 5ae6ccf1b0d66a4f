//! Declarative body transformation (issue 28; the design and user's guide is
//! docs/transform.md): a route's `transform.request` reshapes the body sent upstream,
//! `transform.response` the body sent to the client, without a scripting language.
//!
//! This module is the pure core: settings ([`crate::config::TransformSettings`]) become a
//! [`Transform`] once per configuration, validated up front (every problem named by its key
//! below the `transform` block); applying it is a function of bytes and plain values. It never
//! sees a session: the proxy reads the body whole (bounded), calls [`RequestTransform::apply`]
//! or [`ResponseTransform::apply`], and maps a [`TransformError`] to an answer (request side:
//! 400/413/415; response side: 502, never the untransformed body).
//!
//! Order of operations, request: rename → remove → set → encode as `format` (so `remove`
//! holds whatever the client sends and renames, and `set` has the last word). Response:
//! `status` rule with a body (replaces everything) | unwrap → allow or deny → rename → wrap.
//!
//! Cost: the body is opened only where an edit reaches ([`node`]), so a route that filters and
//! renames top-level fields parses the rest once, without building it, and copies it out.

mod edit;
pub(crate) mod encoding;
pub(crate) mod form;
pub(crate) mod node;
mod pointer;
pub(crate) mod scan;
#[cfg(test)]
mod tests;
mod value;

use crate::config::{
    BodyFormat, PartTransformSettings, RequestTransformSettings, ResponseTransformSettings, StatusRuleSettings,
    TransformSettings, ValueType,
};
use crate::policy::headers::Vars;
use bytes::Bytes;
use edit::PathTree;
use encoding::DecodeError;
use node::Node;
use pointer::{overlap, Pointer, Token};
use std::borrow::Cow;
use std::collections::BTreeMap;
use value::{BodyTemplate, SetValue};

/// `application/json`.
pub(crate) const JSON: &str = "application/json";
/// `application/x-www-form-urlencoded`.
pub(crate) const FORM: &str = form::FORM;
/// `transform.response.max_body` when not given.
pub(crate) const DEFAULT_RESPONSE_MAX_BODY: usize = 1 << 20;

/// Why a body could not be transformed. Request side, the client's fault: `TooLarge` 413,
/// `UnsupportedMediaType` 415, the others 400. Response side, every one is 502 (logged with
/// this text), since the body cannot be sent untransformed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum TransformError {
    /// Larger than the bound.
    #[error("the body is larger than {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: usize,
    },
    /// A media type that is neither JSON nor a form.
    #[error("a body of type `{0}` cannot be transformed; send application/json")]
    UnsupportedMediaType(String),
    /// Not one JSON document.
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    /// A form that cannot be read, or JSON that has no form spelling.
    #[error("{0}")]
    Form(String),
    /// A member name repeated in an object the transform edits.
    #[error("the name `{name}` appears twice in one object")]
    RepeatedName {
        /// The name.
        name: String,
    },
    /// A `{value, type}` whose rendered text is not of the type.
    #[error("`{pointer}`: the value is not {}", value::kind_name(*kind))]
    Conversion {
        /// The `set` pointer.
        pointer: String,
        /// The type asked.
        kind: ValueType,
    },
    /// A value cannot be written or filtered at a pointer: the body has another shape.
    #[error("cannot transform at `{pointer}`: {reason}")]
    Shape {
        /// The pointer (empty: the whole body).
        pointer: String,
        /// What is in the way.
        reason: &'static str,
    },
    /// `unwrap` found nothing at its pointer.
    #[error("the body has no value at `{pointer}` to unwrap")]
    Missing {
        /// The pointer.
        pointer: String,
    },
    /// A coded body that cannot be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A problem in the settings: the key below the `transform` block (`response.allow[1]`,
/// `request.set./customer/id`) and what is wrong. The caller prefixes the route's key and finds
/// the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SettingsError {
    /// Key below the block.
    pub(crate) key: String,
    /// Why.
    pub(crate) message: String,
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Default)]
struct Problems(Vec<SettingsError>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(SettingsError { key: key.into(), message: message.into() });
    }

    /// A pointer from the file, or the problem recorded.
    fn pointer(&mut self, key: &str, text: &str) -> Option<Pointer> {
        match Pointer::parse(text) {
            Ok(p) if p.tokens.is_empty() => {
                self.add(key, "the empty pointer names the whole body; name a field (e.g. `/id`)");
                None
            }
            Ok(p) => Some(p),
            Err(e) => {
                self.add(key, e);
                None
            }
        }
    }
}

/// `base.key`, or `key` at the top of the block.
fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

/// A route's compiled `transform`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Transform {
    /// The request side, when configured.
    pub(crate) request: Option<RequestTransform>,
    /// The response side, when configured.
    pub(crate) response: Option<ResponseTransform>,
}

impl Transform {
    /// Compile and check the settings; every problem is returned, keyed below the block.
    pub(crate) fn from_settings(settings: &TransformSettings) -> Result<Transform, Vec<SettingsError>> {
        let mut p = Problems::default();
        let request = settings.request.as_ref().map(|s| RequestTransform::compile(s, &mut p));
        let response = settings.response.as_ref().map(|s| ResponseTransform::compile(s, "response", &mut p));
        if !p.0.is_empty() {
            return Err(p.0);
        }
        Ok(Transform { request, response })
    }
}

/// One `rename` entry: at each value `prefix` reaches (`*` included), `from` moves to `to`.
#[derive(Debug, Clone, PartialEq)]
struct Rename {
    prefix: Vec<Token>,
    from: Vec<Token>,
    to: Vec<Token>,
    /// The target as written (messages).
    text: String,
}

impl Rename {
    fn apply<'a>(&'a self, node: &mut Node<'a>) -> Result<(), TransformError> {
        if self.prefix.is_empty() {
            edit::rename(node, &self.from, &self.to, &self.text)
        } else {
            edit::each(node, &self.prefix, &mut |n| edit::rename(n, &self.from, &self.to, &self.text))
        }
    }

    /// Compile a `rename` map; entries are checked against each other so their order does not
    /// matter (none moves or writes inside what another moves or writes).
    fn compile_all(base: &str, map: &BTreeMap<String, String>, p: &mut Problems) -> Vec<(Pointer, Rename)> {
        let mut out: Vec<(Pointer, Rename)> = Vec::new();
        for (from_text, to_text) in map {
            let key = join(base, from_text);
            let Some(from) = p.pointer(&key, from_text) else { continue };
            let to = match Pointer::parse(to_text) {
                Ok(to) if to.tokens.is_empty() => {
                    p.add(&key, "cannot rename onto the whole body (`unwrap` does that)");
                    continue;
                }
                Ok(to) => to,
                Err(e) => {
                    p.add(&key, format!("target {e}"));
                    continue;
                }
            };
            let ((from_prefix, from_rest), (to_prefix, to_rest)) =
                (from.split_at_last_wildcard(), to.split_at_last_wildcard());
            if from_prefix != to_prefix || from_rest.is_empty() || to_rest.is_empty() {
                p.add(&key, "a `*` must come in the part both pointers share, with a name after it in each (`/items/*/a` → `/items/*/b`)");
                continue;
            }
            if overlap(from_rest, to_rest) {
                p.add(&key, format!("`{from_text}` → `{to_text}` moves a value into itself or onto its own parent"));
                continue;
            }
            let clash = out.iter().find(|(other_from, other)| {
                let other_to = [other.prefix.as_slice(), &other.to].concat();
                overlap(&from.tokens, &other_from.tokens)
                    || overlap(&to.tokens, &other_to)
                    || overlap(&from.tokens, &other_to)
                    || overlap(&to.tokens, &other_from.tokens)
            });
            if let Some((other, _)) = clash {
                p.add(
                    &key,
                    format!("overlaps the rename of `{}`: renames apply together, so none may move or write inside another's value", other.text),
                );
                continue;
            }
            let rename = Rename {
                prefix: from_prefix.to_vec(),
                from: from_rest.to_vec(),
                to: to_rest.to_vec(),
                text: to_text.clone(),
            };
            out.push((from, rename));
        }
        out
    }
}

/// One `set` entry.
#[derive(Debug, Clone, PartialEq)]
struct Set {
    pointer: Pointer,
    value: SetValue,
}

/// `transform.request`, compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RequestTransform {
    format: BodyFormat,
    rename: Vec<Rename>,
    remove: Option<PathTree>,
    set: Vec<Set>,
}

/// A transformed request body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RequestBody {
    /// The body sent upstream (Content-Length is its length).
    pub(crate) body: Bytes,
    /// The Content-Type to send, when it changes.
    pub(crate) content_type: Option<&'static str>,
}

/// What a Content-Type says about a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    Json,
    Form,
    Other,
}

fn media(content_type: &str) -> Media {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let bytes = essence.as_bytes();
    let json_suffix = bytes.len() > "application/+json".len()
        && bytes[..12].eq_ignore_ascii_case(b"application/")
        && bytes[bytes.len() - 5..].eq_ignore_ascii_case(b"+json");
    if essence.eq_ignore_ascii_case(JSON) || json_suffix {
        Media::Json
    } else if essence.eq_ignore_ascii_case(FORM) {
        Media::Form
    } else {
        Media::Other
    }
}

impl RequestTransform {
    fn compile(s: &RequestTransformSettings, p: &mut Problems) -> RequestTransform {
        let rename = Rename::compile_all("request.rename", &s.rename, p).into_iter().map(|(_, r)| r).collect();
        let remove: Vec<Pointer> =
            s.remove.iter().enumerate().filter_map(|(i, t)| p.pointer(&format!("request.remove[{i}]"), t)).collect();
        let mut set: Vec<Set> = Vec::new();
        for (text, settings) in &s.set {
            let key = format!("request.set.{text}");
            let Some(pointer) = p.pointer(&key, text) else { continue };
            if let Some(other) = set.iter().find(|o| overlap(&o.pointer.tokens, &pointer.tokens)) {
                p.add(&key, format!("overlaps `{}`: one value would be written inside the other", other.pointer.text));
                continue;
            }
            match SetValue::compile(settings) {
                Ok(value) => set.push(Set { pointer, value }),
                Err((suffix, message)) => p.add(format!("{key}{suffix}"), message),
            }
        }
        RequestTransform { format: s.format, rename, remove: (!remove.is_empty()).then(|| PathTree::new(&remove)), set }
    }

    /// The Content-Type of what [`apply`](Self::apply) produces (for a head sent before the
    /// body is known).
    pub(crate) fn content_type(&self) -> &'static str {
        match self.format {
            BodyFormat::Json => JSON,
            BodyFormat::Form => FORM,
        }
    }

    /// Whether a request of `content_type` can be transformed at all (JSON, a form, or none
    /// said): checked with the head, before the body is read.
    pub(crate) fn accepts(content_type: Option<&str>) -> bool {
        content_type.is_none_or(|ct| media(ct) != Media::Other)
    }

    /// Transform a request body of `content_type` (JSON, or a form turned into JSON), at most
    /// `limit` bytes. `Ok(None)`: the body is empty and is sent as it is (`set` does not make
    /// a body for a request that has none). A body without a Content-Type is read as JSON.
    pub(crate) fn apply(
        &self,
        body: &[u8],
        content_type: Option<&str>,
        vars: &Vars<'_>,
        limit: usize,
    ) -> Result<Option<RequestBody>, TransformError> {
        if body.is_empty() {
            return Ok(None);
        }
        if body.len() > limit {
            return Err(TransformError::TooLarge { limit });
        }
        let declared = content_type.map(media);
        let mut node = match declared {
            Some(Media::Json) => Node::parse(body)?,
            None => Node::parse(body).map_err(|_| TransformError::UnsupportedMediaType("(none)".into()))?,
            Some(Media::Form) => form::decode(body)?,
            Some(Media::Other) => {
                return Err(TransformError::UnsupportedMediaType(content_type.unwrap_or_default().into()))
            }
        };
        for rename in &self.rename {
            rename.apply(&mut node)?;
        }
        if let Some(tree) = &self.remove {
            edit::remove_selected(&mut node, tree)?;
        }
        for set in &self.set {
            let value = set
                .value
                .render(vars)
                .map_err(|kind| TransformError::Conversion { pointer: set.pointer.text.clone(), kind })?;
            let (prefix, rest) = set.pointer.split_at_last_wildcard();
            let text = set.pointer.text.as_str();
            if prefix.is_empty() {
                edit::put(&mut node, rest, Node::Value(value), text)?;
            } else {
                edit::each(&mut node, prefix, &mut |n| edit::put(n, rest, Node::Value(value.clone()), text))?;
            }
        }
        let (body, content_type) = match self.format {
            BodyFormat::Json => {
                let mut out = Vec::with_capacity(body.len() + 64);
                node.write(&mut out)?;
                (Bytes::from(out), (declared != Some(Media::Json)).then_some(JSON))
            }
            BodyFormat::Form => (Bytes::from(form::encode(node)?), (declared != Some(Media::Form)).then_some(FORM)),
        };
        Ok(Some(RequestBody { body, content_type }))
    }
}

/// How the response body is filtered.
#[derive(Debug, Clone, PartialEq)]
enum Filter {
    None,
    Allow(PathTree),
    Deny(PathTree),
}

/// A `status` rule, compiled.
#[derive(Debug, Clone, PartialEq)]
struct StatusRule {
    status: u16,
    body: Option<BodyTemplate>,
}

/// `transform.response` (or an aggregation part's `transform`), compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResponseTransform {
    unwrap: Option<Pointer>,
    filter: Filter,
    rename: Vec<Rename>,
    wrap: Option<String>,
    max_body: usize,
    status: Vec<(u16, StatusRule)>,
}

/// A transformed response body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResponseBody {
    /// The body sent to the client (Content-Length is its length).
    pub(crate) body: Bytes,
    /// The Content-Type to send, when it changes.
    pub(crate) content_type: Option<&'static str>,
}

impl ResponseTransform {
    /// Compile an aggregation part's `transform`; keys are below that block (`allow[0]`).
    pub(crate) fn for_part(settings: &PartTransformSettings) -> Result<ResponseTransform, Vec<SettingsError>> {
        let mut p = Problems::default();
        let compiled = ResponseTransform::compile(&settings.into(), "", &mut p);
        if p.0.is_empty() {
            Ok(compiled)
        } else {
            Err(p.0)
        }
    }

    fn compile(s: &ResponseTransformSettings, base: &str, p: &mut Problems) -> ResponseTransform {
        let list = |name: &str, list: &[String], p: &mut Problems| -> Vec<Pointer> {
            if list.is_empty() {
                p.add(join(base, name), "lists no pointer");
            }
            list.iter().enumerate().filter_map(|(i, t)| p.pointer(&join(base, &format!("{name}[{i}]")), t)).collect()
        };
        let (allow, deny) = match (&s.allow, &s.deny) {
            (Some(_), Some(_)) => {
                p.add(
                    join(base, "deny"),
                    "`allow` and `deny` cannot both be given: `allow` already drops every field it does not list",
                );
                (Vec::new(), Vec::new())
            }
            (allow, deny) => (
                allow.as_ref().map(|a| list("allow", a, p)).unwrap_or_default(),
                deny.as_ref().map(|d| list("deny", d, p)).unwrap_or_default(),
            ),
        };
        let renames = Rename::compile_all(&join(base, "rename"), &s.rename, p);
        for (from, _) in &renames {
            let key = join(base, &format!("rename.{}", from.text));
            if !allow.is_empty() && !allow.iter().any(|a| overlap(&a.tokens, &from.tokens)) {
                p.add(&key, format!("`{}` is not kept by `allow`, which applies before renames", from.text));
            }
            if let Some(d) = deny.iter().find(|d| covers(&d.tokens, &from.tokens)) {
                p.add(
                    &key,
                    format!("`{}` is removed by `deny` (`{}`), which applies before renames", from.text, d.text),
                );
            }
        }
        let filter = match (allow.is_empty(), deny.is_empty()) {
            (false, _) => Filter::Allow(PathTree::new(&allow)),
            (_, false) => Filter::Deny(PathTree::new(&deny)),
            _ => Filter::None,
        };
        let unwrap = s.unwrap.as_ref().and_then(|text| {
            let key = join(base, "unwrap");
            let pointer = p.pointer(&key, text)?;
            if pointer.has_wildcard() {
                p.add(key, "`*` names many values; `unwrap` takes one");
                return None;
            }
            Some(pointer)
        });
        if s.wrap.as_deref() == Some("") {
            p.add(join(base, "wrap"), "the key is empty");
        }
        let max_body = match s.max_body {
            Some(0) => {
                p.add(join(base, "max_body"), "must be at least 1 byte");
                0
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => DEFAULT_RESPONSE_MAX_BODY,
        };
        let status = s
            .status
            .iter()
            .filter_map(|(from, rule)| compile_status(&join(base, &format!("status.{from}")), *from, rule, p))
            .collect();
        ResponseTransform {
            unwrap,
            filter,
            rename: renames.into_iter().map(|(_, r)| r).collect(),
            wrap: s.wrap.clone(),
            max_body,
            status,
        }
    }

    /// The largest body transformed (after decoding); the proxy buffers at most this much.
    pub(crate) fn max_body(&self) -> usize {
        self.max_body
    }

    /// The status sent to the client for a backend's `status` (a `status` rule, or the same).
    pub(crate) fn status(&self, status: u16) -> u16 {
        self.rule(status).map_or(status, |r| r.status)
    }

    /// Whether a `status` rule replaces the body of a backend answer of `status` (the proxy
    /// then discards the backend's body instead of buffering it).
    pub(crate) fn replaces_body(&self, status: u16) -> bool {
        self.rule(status).is_some_and(|r| r.body.is_some())
    }

    fn rule(&self, status: u16) -> Option<&StatusRule> {
        self.status.iter().find(|(from, _)| *from == status).map(|(_, rule)| rule)
    }

    /// Transform a proxied response body (already decoded: [`encoding::decode`]) that answered
    /// `status` with `content_type`. A `status` rule with a body replaces it (the backend's is
    /// not read); an empty body stays empty (nothing in it to hide); a body over `max_body`,
    /// of a declared type that is not JSON, or not valid JSON is an error.
    pub(crate) fn apply(
        &self,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
        vars: &Vars<'_>,
    ) -> Result<ResponseBody, TransformError> {
        if let Some(template) = self.rule(status).and_then(|r| r.body.as_ref()) {
            let body =
                serde_json::to_vec(&template.render(vars)).map_err(|e| TransformError::NotJson(e.to_string()))?;
            return Ok(ResponseBody { body: Bytes::from(body), content_type: Some(JSON) });
        }
        if body.is_empty() {
            return Ok(ResponseBody { body: Bytes::new(), content_type: None });
        }
        if body.len() > self.max_body {
            return Err(TransformError::TooLarge { limit: self.max_body });
        }
        if let Some(ct) = content_type.filter(|ct| media(ct) != Media::Json) {
            return Err(TransformError::NotJson(format!("the backend answered `{ct}`")));
        }
        let body = self.apply_body(body)?;
        Ok(ResponseBody { body: Bytes::from(body), content_type: content_type.is_none().then_some(JSON) })
    }

    /// The body operations alone (unwrap → allow or deny → rename → wrap) on one JSON
    /// document: what [`apply`](Self::apply) does after its checks, and what an aggregation
    /// part's transform does to the part's answer.
    pub(crate) fn apply_body(&self, body: &[u8]) -> Result<Vec<u8>, TransformError> {
        let mut node = Node::parse(body)?;
        if let Some(pointer) = &self.unwrap {
            node = edit::take(&mut node, &pointer.tokens)?
                .ok_or_else(|| TransformError::Missing { pointer: pointer.text.clone() })?;
        }
        match &self.filter {
            Filter::Allow(tree) => {
                if !node.is_container() {
                    return Err(TransformError::Shape {
                        pointer: String::new(),
                        reason: "`allow` keeps fields of an object or array",
                    });
                }
                edit::keep_selected(&mut node, tree)?;
            }
            Filter::Deny(tree) => edit::remove_selected(&mut node, tree)?,
            Filter::None => {}
        }
        for rename in &self.rename {
            rename.apply(&mut node)?;
        }
        if let Some(key) = &self.wrap {
            node = Node::Object(vec![(Cow::Borrowed(key.as_str()), node)]);
        }
        let mut out = Vec::with_capacity(body.len() + self.wrap.as_ref().map_or(0, |k| k.len() + 8));
        node.write(&mut out)?;
        Ok(out)
    }
}

/// Whether `d` selects everything `f` can reach (`d` is a prefix of `f`, its `*` matching
/// anything; a `*` in `f` is covered only by a `*`).
fn covers(d: &[Token], f: &[Token]) -> bool {
    d.len() <= f.len()
        && d.iter().zip(f).all(|(x, y)| match (x, y) {
            (Token::Any, _) => true,
            (Token::Name { name: n, .. }, Token::Name { name: m, .. }) => n == m,
            (Token::Name { .. }, Token::Any) => false,
        })
}

fn compile_status(key: &str, from: u16, rule: &StatusRuleSettings, p: &mut Problems) -> Option<(u16, StatusRule)> {
    let final_status = |s: u16| (200..=599).contains(&s);
    if !final_status(from) || matches!(from, 204 | 304) {
        p.add(key, format!("{from} is not a status whose body a transform sees (200–599, not 204 or 304)"));
        return None;
    }
    let (status, body) = match rule {
        StatusRuleSettings::Status(s) => (*s, None),
        StatusRuleSettings::Answer(a) => (a.status, a.body.as_ref()),
    };
    if !final_status(status) || matches!(status, 204 | 205 | 304) {
        p.add(key, format!("{status} cannot be sent with a body (use 200–599, not 204, 205 or 304)"));
        return None;
    }
    let body = match body.map(BodyTemplate::compile).transpose() {
        Ok(body) => body,
        Err(e) => {
            p.add(format!("{key}.body"), e.to_string());
            return None;
        }
    };
    Some((from, StatusRule { status, body }))
}
