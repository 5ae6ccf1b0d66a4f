//! Values a transform writes: `set` values (a template, typed on request) and the bodies of
//! `status` rules (JSON whose strings are templates). Templates are the header rules' own
//! (`policy::headers::Template`, ARCHITECTURE.md §7.4 variables), parsed once per
//! configuration.

use crate::config::{SetValueSettings, ValueType};
use crate::policy::headers::{Template, TemplateError, Vars};
use serde_json::Value;

/// One compiled `set` value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SetValue {
    /// The rendered text, as a JSON string.
    Text(Template),
    /// The rendered text converted to a type.
    Typed(Template, ValueType),
    /// A value written in the file.
    Fixed(Value),
}

impl SetValue {
    /// Compile; on error, the key below the `set` entry (`""` or `.value`) and the message.
    pub(crate) fn compile(settings: &SetValueSettings) -> Result<SetValue, (&'static str, String)> {
        let parse = |text: &str, key| Template::parse_text(text).map_err(|e| (key, e.to_string()));
        Ok(match settings {
            SetValueSettings::Template(text) => SetValue::Text(parse(text, "")?),
            SetValueSettings::Typed(typed) => {
                let template = parse(&typed.value, ".value")?;
                // A constant is converted now, so a wrong one fails at `-t`, not per request.
                if let [crate::policy::headers::Piece::Text(text)] = template.0.as_slice() {
                    let value = convert(text, typed.kind)
                        .ok_or_else(|| (".value", format!("`{text}` is not {}", kind_name(typed.kind))))?;
                    return Ok(SetValue::Fixed(value));
                }
                SetValue::Typed(template, typed.kind)
            }
            SetValueSettings::Literal(value) => SetValue::Fixed(value.clone()),
        })
    }

    /// The value for one request; `Err(type)` when the rendered text is not of the asked type.
    pub(crate) fn render(&self, vars: &Vars<'_>) -> Result<Value, ValueType> {
        match self {
            SetValue::Text(template) => Ok(Value::String(template.render_text(vars))),
            SetValue::Typed(template, kind) => convert(&template.render_text(vars), *kind).ok_or(*kind),
            SetValue::Fixed(value) => Ok(value.clone()),
        }
    }
}

/// `text` as a value of `kind`: an integer is decimal digits with an optional `-` (an i64 or
/// a u64); a number is a JSON number; a boolean is `true` or `false`; json is one JSON
/// document. No surrounding space is accepted: the text is a claim or an id, not user input to
/// be tidied.
fn convert(text: &str, kind: ValueType) -> Option<Value> {
    match kind {
        ValueType::String => Some(Value::String(text.to_string())),
        ValueType::Integer => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            text.parse::<i64>().map(Value::from).or_else(|_| text.parse::<u64>().map(Value::from)).ok()
        }
        ValueType::Number => {
            let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
            (trimmed.len() == text.len())
                .then(|| serde_json::from_str::<serde_json::Number>(text).ok())
                .flatten()
                .map(Value::Number)
        }
        ValueType::Boolean => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        ValueType::Json => serde_json::from_str(text).ok(),
    }
}

/// "an integer", "a number", … for messages.
pub(crate) fn kind_name(kind: ValueType) -> &'static str {
    match kind {
        ValueType::String => "a string",
        ValueType::Integer => "an integer",
        ValueType::Number => "a number",
        ValueType::Boolean => "a boolean (true or false)",
        ValueType::Json => "a JSON document",
    }
}

/// The body of a `status` rule: JSON whose strings may hold template variables.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BodyTemplate {
    /// No variable anywhere below: sent as written.
    Fixed(Value),
    /// A string with variables.
    Text(Template),
    /// An object with variables somewhere below.
    Object(Vec<(String, BodyTemplate)>),
    /// An array with variables somewhere below.
    Array(Vec<BodyTemplate>),
}

impl BodyTemplate {
    /// Compile `value`: every string holding `$` is a template.
    pub(crate) fn compile(value: &Value) -> Result<BodyTemplate, TemplateError> {
        fn has_variable(v: &Value) -> bool {
            match v {
                Value::String(s) => s.contains('$'),
                Value::Array(items) => items.iter().any(has_variable),
                Value::Object(map) => map.values().any(has_variable),
                _ => false,
            }
        }
        if !has_variable(value) {
            return Ok(BodyTemplate::Fixed(value.clone()));
        }
        Ok(match value {
            Value::String(s) => BodyTemplate::Text(Template::parse_text(s)?),
            Value::Array(items) => {
                BodyTemplate::Array(items.iter().map(BodyTemplate::compile).collect::<Result<_, _>>()?)
            }
            Value::Object(map) => BodyTemplate::Object(
                map.iter().map(|(k, v)| Ok((k.clone(), BodyTemplate::compile(v)?))).collect::<Result<_, _>>()?,
            ),
            other => BodyTemplate::Fixed(other.clone()),
        })
    }

    /// The body for one request.
    pub(crate) fn render(&self, vars: &Vars<'_>) -> Value {
        match self {
            BodyTemplate::Fixed(value) => value.clone(),
            BodyTemplate::Text(template) => Value::String(template.render_text(vars)),
            BodyTemplate::Object(members) => {
                Value::Object(members.iter().map(|(k, t)| (k.clone(), t.render(vars))).collect())
            }
            BodyTemplate::Array(items) => Value::Array(items.iter().map(|t| t.render(vars)).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TypedValueSettings;
    use serde_json::json;
    use std::time::Duration;

    fn with_vars<T>(f: impl FnOnce(&Vars<'_>) -> T) -> T {
        let claim = |name: &str| match name {
            "sub" => Some("u-1".to_string()),
            "age" => Some("42".to_string()),
            "big" => Some("18446744073709551615".to_string()),
            "admin" => Some("true".to_string()),
            "org" => Some(r#"{"id":7}"#.to_string()),
            _ => None,
        };
        let vars = Vars {
            request_id: "r-1",
            client_ip: "10.0.0.1",
            route: "orders",
            elapsed: Duration::ZERO,
            claim: &claim,
            tenant: None,
        };
        f(&vars)
    }

    fn typed(value: &str, kind: ValueType) -> SetValueSettings {
        SetValueSettings::Typed(TypedValueSettings { value: value.into(), kind })
    }

    #[test]
    fn templates_render_as_strings_unless_typed() {
        let cases = [
            (SetValueSettings::Template("$claim_sub@$route".into()), Ok(json!("u-1@orders"))),
            (SetValueSettings::Template("$claim_age".into()), Ok(json!("42"))),
            (typed("$claim_age", ValueType::Integer), Ok(json!(42))),
            (typed("$claim_big", ValueType::Integer), Ok(json!(18446744073709551615u64))),
            (typed("$claim_age", ValueType::Number), Ok(json!(42))),
            (typed("$claim_admin", ValueType::Boolean), Ok(json!(true))),
            (typed("$claim_org", ValueType::Json), Ok(json!({"id": 7}))),
            (typed("$claim_sub", ValueType::Integer), Err(ValueType::Integer)),
            (typed("$claim_none", ValueType::Number), Err(ValueType::Number)),
            (typed("x$claim_age", ValueType::Boolean), Err(ValueType::Boolean)),
            (SetValueSettings::Literal(json!(null)), Ok(json!(null))),
        ];
        for (settings, expected) in cases {
            let value = SetValue::compile(&settings).expect("compiles");
            assert_eq!(with_vars(|v| value.render(v)), expected, "{settings:?}");
        }
    }

    #[test]
    fn conversions_are_strict() {
        for (text, kind) in [
            ("+1", ValueType::Integer),
            (" 1", ValueType::Integer),
            ("1.0", ValueType::Integer),
            ("", ValueType::Integer),
        ] {
            assert_eq!(convert(text, kind), None, "{text:?}");
        }
        for text in ["NaN", "inf", "1e400", " 1", "0x10", ""] {
            assert_eq!(convert(text, ValueType::Number), None, "{text:?}");
        }
        assert_eq!(convert("-12.5e1", ValueType::Number), Some(json!(-125.0)));
        assert_eq!(convert("TRUE", ValueType::Boolean), None);
        assert_eq!(convert("-9223372036854775808", ValueType::Integer), Some(json!(i64::MIN)));
    }

    #[test]
    fn constants_and_unknown_variables_fail_when_compiled() {
        assert_eq!(SetValue::compile(&typed("12", ValueType::Integer)), Ok(SetValue::Fixed(json!(12))));
        let e = SetValue::compile(&typed("twelve", ValueType::Integer)).expect_err("not an integer");
        assert_eq!(e.0, ".value");
        let e = SetValue::compile(&SetValueSettings::Template("$claimsub".into())).expect_err("unknown");
        assert!(e.1.contains("claimsub"), "{e:?}");
        // Body text may hold what a header cannot.
        assert!(SetValue::compile(&SetValueSettings::Template("line 1\nline 2".into())).is_ok());
    }

    #[test]
    fn status_bodies_render_their_variables() {
        let body = json!({"items": [], "request": "$request_id", "who": ["$claim_sub", 1], "cost": "5$$"});
        let template = BodyTemplate::compile(&body).expect("compiles");
        assert_eq!(
            with_vars(|v| template.render(v)),
            json!({"items": [], "request": "r-1", "who": ["u-1", 1], "cost": "5$"})
        );
        assert_eq!(BodyTemplate::compile(&json!({"a": 1})), Ok(BodyTemplate::Fixed(json!({"a": 1}))));
        assert!(BodyTemplate::compile(&json!({"a": "$nope"})).is_err());
    }
}
