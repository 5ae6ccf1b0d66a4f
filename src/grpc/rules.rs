//! The route table of a transcoder: each selected method's google.api.http rules (and
//! additional bindings) read from the descriptors, checked against the messages, plus the
//! `POST /<package>.<Service>/<Method>` binding every method has; and the lookup of a request's
//! verb and path in it.

use super::error::{CallError, LoadError};
use super::template::{SplitPath, Template};
use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, Value,
};
use std::collections::HashMap;
use std::sync::Arc;

/// The field number of the `google.api.http` extension of MethodOptions.
const HTTP_RULE_FIELD: u32 = 72_295_728;
const HTTP_RULE_EXTENSION: &str = "google.api.http";

/// Where the request body goes.
#[derive(Debug, Clone)]
pub(crate) enum BodyRule {
    /// No body: every field not in the path comes from the query.
    None,
    /// `body: "*"`: every field not in the path comes from the body.
    All,
    /// `body: "field"`: the body is this field; the rest from the query.
    Field(FieldDescriptor),
}

/// One verb and path template bound to a method.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    /// Index into [`Table::methods`].
    pub(crate) method: usize,
    pub(crate) verb: Method,
    pub(crate) template: Template,
    /// The resolved field path of each template variable, in order.
    pub(crate) path_fields: Vec<Vec<FieldDescriptor>>,
    pub(crate) body: BodyRule,
    pub(crate) response_body: Option<FieldDescriptor>,
}

/// The methods of the selected services and every binding, most specific template first.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub(crate) methods: Vec<MethodDescriptor>,
    bindings: Vec<Arc<Binding>>,
}

impl Table {
    /// Read the rules of `services` from `pool`.
    pub(crate) fn build(pool: &DescriptorPool, services: &[String]) -> Result<Table, LoadError> {
        if services.is_empty() {
            return Err(LoadError::NoServices);
        }
        let extension = pool.get_extension_by_name(HTTP_RULE_EXTENSION);
        let mut methods = Vec::new();
        let mut bindings = Vec::new();
        for name in services {
            let service = pool.get_service_by_name(name).ok_or_else(|| LoadError::UnknownService {
                service: name.clone(),
                known: pool.services().map(|s| s.full_name().to_string()).collect::<Vec<_>>().join(", "),
            })?;
            for method in service.methods() {
                let index = methods.len();
                let grpc_path = format!("/{}/{}", service.full_name(), method.name());
                let template = Template::parse(&grpc_path).map_err(|e| bad_rule(&method, &grpc_path, e.to_string()))?;
                bindings.push(Binding {
                    method: index,
                    verb: Method::POST,
                    template,
                    path_fields: Vec::new(),
                    body: BodyRule::All,
                    response_body: None,
                });
                let options = method.options();
                match &extension {
                    Some(ext) if options.has_extension(ext) => {
                        if let Value::Message(rule) = options.get_extension(ext).as_ref() {
                            read_rule(&method, index, rule, true, &mut bindings)?;
                        }
                    }
                    None if options.unknown_fields().any(|f| f.number() == HTTP_RULE_FIELD) => {
                        return Err(LoadError::MissingAnnotations { method: method.full_name().to_string() });
                    }
                    _ => {}
                }
                methods.push(method);
            }
        }
        let mut seen: HashMap<(Method, String), usize> = HashMap::new();
        for b in &bindings {
            if let Some(first) = seen.insert((b.verb.clone(), b.template.shape()), b.method) {
                return Err(LoadError::Conflict {
                    verb: b.verb.to_string(),
                    path: b.template.to_string(),
                    first: methods[first].full_name().to_string(),
                    second: methods[b.method].full_name().to_string(),
                });
            }
        }
        // Stable: among equally specific templates the first declared wins.
        bindings.sort_by_cached_key(|b| b.template.specificity());
        Ok(Table { methods, bindings: bindings.into_iter().map(Arc::new).collect() })
    }

    /// The binding for a request, with the decoded value of each path variable.
    pub(crate) fn lookup(&self, verb: &Method, path: &str) -> Result<(&Arc<Binding>, Vec<String>), CallError> {
        let split = SplitPath::new(path).ok_or(CallError::NoMethod)?;
        let mut allow: Vec<Method> = Vec::new();
        for b in &self.bindings {
            if b.verb != *verb && allow.contains(&b.verb) {
                continue;
            }
            if let Some(values) = b.template.matches(&split) {
                if b.verb == *verb {
                    return Ok((b, values));
                }
                allow.push(b.verb.clone());
            }
        }
        if allow.is_empty() {
            Err(CallError::NoMethod)
        } else {
            Err(CallError::MethodNotAllowed { allow })
        }
    }

    /// Every binding (tests, the status page).
    pub(crate) fn bindings(&self) -> &[Arc<Binding>] {
        &self.bindings
    }
}

fn bad_rule(method: &MethodDescriptor, rule: &str, reason: String) -> LoadError {
    LoadError::BadRule { method: method.full_name().to_string(), rule: rule.to_string(), reason }
}

fn string_field(message: &DynamicMessage, name: &str) -> Option<String> {
    match message.get_field_by_name(name)?.as_ref() {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The verb and path of a rule's `pattern`.
fn pattern(rule: &DynamicMessage) -> Option<(String, String)> {
    for (field, verb) in [("get", "GET"), ("put", "PUT"), ("post", "POST"), ("delete", "DELETE"), ("patch", "PATCH")] {
        if rule.has_field_by_name(field) {
            return Some((verb.to_string(), string_field(rule, field).unwrap_or_default()));
        }
    }
    if rule.has_field_by_name("custom") {
        if let Some(Value::Message(custom)) = rule.get_field_by_name("custom").as_deref() {
            return Some((
                string_field(custom, "kind").unwrap_or_default(),
                string_field(custom, "path").unwrap_or_default(),
            ));
        }
    }
    None
}

fn read_rule(
    method: &MethodDescriptor,
    index: usize,
    rule: &DynamicMessage,
    top: bool,
    out: &mut Vec<Binding>,
) -> Result<(), LoadError> {
    let (verb_text, path) =
        pattern(rule).ok_or_else(|| bad_rule(method, "", "names no HTTP method and path".into()))?;
    let shown = format!("{verb_text} {path}");
    let verb = Method::from_bytes(verb_text.as_bytes())
        .ok()
        .filter(|_| !verb_text.is_empty())
        .ok_or_else(|| bad_rule(method, &shown, format!("`{verb_text}` is not an HTTP method")))?;
    let template = Template::parse(&path).map_err(|e| bad_rule(method, &shown, e.to_string()))?;
    let input = method.input();
    let unknown = |field: &str, message: &MessageDescriptor| LoadError::UnknownField {
        method: method.full_name().to_string(),
        rule: shown.clone(),
        field: field.to_string(),
        message: message.full_name().to_string(),
    };
    let mut path_fields = Vec::new();
    for var in &template.variables {
        let fields = resolve(&input, &var.field_path).map_err(|(name, msg)| unknown(&name, &msg))?;
        let repeated = fields.last().is_some_and(|f| f.is_list() && !f.is_map()).then_some("is repeated");
        if let Some(reason) = unbindable(fields.last()).or(repeated) {
            return Err(bad_rule(method, &shown, format!("path variable `{}` {reason}", var.field_path.join("."))));
        }
        path_fields.push(fields);
    }
    let body = match string_field(rule, "body").as_deref() {
        None => BodyRule::None,
        Some("*") => BodyRule::All,
        Some(name) => BodyRule::Field(input.get_field_by_name(name).ok_or_else(|| unknown(name, &input))?),
    };
    let output = method.output();
    let response_body = match string_field(rule, "response_body") {
        None => None,
        Some(name) => Some(output.get_field_by_name(&name).ok_or_else(|| unknown(&name, &output))?),
    };
    out.push(Binding { method: index, verb, template, path_fields, body, response_body });
    if let Some(Value::List(more)) = rule.get_field_by_name("additional_bindings").as_deref() {
        if !top && !more.is_empty() {
            return Err(bad_rule(method, &shown, "an additional binding cannot have additional bindings".into()));
        }
        for extra in more {
            if let Value::Message(extra) = extra {
                read_rule(method, index, extra, false, out)?;
            }
        }
    }
    Ok(())
}

/// Resolve `a.b.c` from `message` by proto field names; on failure the unknown part and the
/// message searched.
pub(crate) fn resolve(
    message: &MessageDescriptor,
    path: &[String],
) -> Result<Vec<FieldDescriptor>, (String, MessageDescriptor)> {
    let mut fields = Vec::with_capacity(path.len());
    let mut current = message.clone();
    for (i, name) in path.iter().enumerate() {
        let field = current.get_field_by_name(name).ok_or_else(|| (path[..=i].join("."), current.clone()))?;
        if i + 1 < path.len() {
            match field.kind() {
                Kind::Message(next) if !field.is_list() && !field.is_map() => current = next,
                _ => return Err((path[..=i + 1].join("."), current.clone())),
            }
        }
        fields.push(field);
    }
    Ok(fields)
}

/// Why a field cannot take a value from a path segment or query parameter, if it cannot.
pub(crate) fn unbindable(field: Option<&FieldDescriptor>) -> Option<&'static str> {
    let field = field?;
    if field.is_map() {
        return Some("is a map");
    }
    match field.kind() {
        Kind::Message(m) if !is_text_wkt(m.full_name()) => Some("is a message; bind one of its fields"),
        _ => None,
    }
}

/// Well-known types whose JSON form is a string or a scalar, so a path segment or query value
/// can carry them.
pub(crate) fn is_text_wkt(name: &str) -> bool {
    matches!(
        name,
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}
