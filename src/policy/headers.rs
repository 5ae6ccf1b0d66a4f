//! Header rules (ARCHITECTURE.md §7.4): `set`, `add` and `remove` on the request sent upstream
//! and on the response sent to the client, with values built from templates compiled once per
//! configuration (`$request_id`, `$client_ip`, `$route`, `$duration_ms`, `$tenant`, `$claim_<name>`).
//! The rules and templates are plain data of the config (parsed there); rendering and applying
//! them per request is here.

pub(crate) use crate::config::TemplateError;
pub use crate::config::{HeaderRules, Piece, Template};
use http::{HeaderName, HeaderValue};
use std::time::Duration;

impl Template {
    /// The value for one request (`None` when a variable's value cannot be a header value).
    pub(crate) fn render(&self, vars: &Vars<'_>) -> Option<HeaderValue> {
        if let [Piece::Text(t)] = self.0.as_slice() {
            return HeaderValue::from_str(t).ok();
        }
        HeaderValue::from_str(&self.render_with(vars, |v, out| out.push_str(v))).ok()
    }

    /// A request path for one request: variable values are percent-encoded (all but RFC 3986
    /// unreserved characters), so a claim such as `a/b` or `a?b` stays one segment; `None` when
    /// a value is a dot-segment (`.`, `..`), which would move the path itself.
    pub(crate) fn render_path(&self, vars: &Vars<'_>) -> Option<String> {
        let dot_segment = std::cell::Cell::new(false);
        let path = self.render_with(vars, |v, out| {
            if v == "." || v == ".." {
                dot_segment.set(true);
            }
            for b in v.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        });
        (!dot_segment.get()).then_some(path)
    }

    /// The text for one request, variables as they are (for bodies, where the caller encodes).
    pub(crate) fn render_text(&self, vars: &Vars<'_>) -> String {
        if let [Piece::Text(t)] = self.0.as_slice() {
            return t.clone();
        }
        self.render_with(vars, |v, out| out.push_str(v))
    }

    fn render_with(&self, vars: &Vars<'_>, value: impl Fn(&str, &mut String)) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::RequestId => value(vars.request_id, &mut out),
                Piece::ClientIp => value(vars.client_ip, &mut out),
                Piece::Route => value(vars.route, &mut out),
                Piece::DurationMs => {
                    let micros = vars.elapsed.as_micros();
                    out.push_str(&format!("{}.{:03}", micros / 1000, micros % 1000));
                }
                Piece::Claim(name) => {
                    if let Some(v) = (vars.claim)(name) {
                        value(&v, &mut out);
                    }
                }
                Piece::Tenant => {
                    if let Some(tenant) = vars.tenant {
                        value(tenant, &mut out);
                    }
                }
            }
        }
        out
    }
}

/// What templates read from a request.
pub(crate) struct Vars<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) client_ip: &'a str,
    pub(crate) route: &'a str,
    pub(crate) elapsed: Duration,
    pub(crate) claim: &'a dyn Fn(&str) -> Option<String>,
    /// The consumer's tenant (`$tenant`).
    pub(crate) tenant: Option<&'a str>,
}

impl HeaderRules {
    /// Apply to a header map through `edit` (Pingora keeps header-name case beside the map, so
    /// the caller applies each change through its own setters): removals, then sets, then adds.
    pub(crate) fn apply(&self, vars: &Vars<'_>, edit: &mut dyn HeaderEdit) {
        for name in &self.remove {
            edit.remove(name);
        }
        for (name, template) in &self.set {
            match template.render(vars) {
                Some(value) => edit.set(name, value),
                None => edit.remove(name),
            }
        }
        for (name, template) in &self.add {
            if let Some(value) = template.render(vars) {
                edit.add(name, value);
            }
        }
    }
}

/// Header edits on a Pingora request or response head.
pub(crate) trait HeaderEdit {
    fn set(&mut self, name: &HeaderName, value: HeaderValue);
    fn add(&mut self, name: &HeaderName, value: HeaderValue);
    fn remove(&mut self, name: &HeaderName);
}

/// Both Pingora heads have the same three setters (one definition for the two types).
macro_rules! header_edit_for {
    ($($head:ty),*) => {$(
        impl HeaderEdit for $head {
            fn set(&mut self, name: &HeaderName, value: HeaderValue) {
                let _ = self.insert_header(name.clone(), value);
            }
            fn add(&mut self, name: &HeaderName, value: HeaderValue) {
                let _ = self.append_header(name.clone(), value);
            }
            fn remove(&mut self, name: &HeaderName) {
                self.remove_header(name);
            }
        }
    )*};
}
header_edit_for!(pingora::http::RequestHeader, pingora::http::ResponseHeader);

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(claim: &'a dyn Fn(&str) -> Option<String>) -> Vars<'a> {
        Vars {
            request_id: "r-1",
            client_ip: "10.0.0.1",
            route: "catalog",
            elapsed: Duration::from_micros(12_345),
            claim,
            tenant: Some("acme"),
        }
    }

    #[test]
    fn templates_render_every_variable() {
        let claim = |n: &str| (n == "tenant").then(|| "acme".to_string());
        let t =
            Template::parse("id=$request_id ip=$client_ip r=$route t=$duration_ms ten=$claim_tenant x=$claim_none $$5")
                .expect("valid");
        assert_eq!(t.render(&vars(&claim)).expect("value"), "id=r-1 ip=10.0.0.1 r=catalog t=12.345 ten=acme x= $5");
        assert_eq!(Template::parse("plain").expect("valid"), Template(vec![Piece::Text("plain".into())]));
        let tenant = Template::parse("org=$tenant").expect("valid");
        assert_eq!(tenant.render(&vars(&claim)).expect("value"), "org=acme");
        let without = Vars { tenant: None, ..vars(&claim) };
        assert_eq!(tenant.render(&without).expect("value"), "org=");
        assert!(matches!(Template::parse("$nope"), Err(TemplateError::UnknownVariable(v)) if v == "nope"));
        assert_eq!(Template::parse("a\nb"), Err(TemplateError::NotHeaderText));
    }

    #[test]
    fn rules_remove_then_set_then_add() {
        let no_claims = |_: &str| None;
        let rules = HeaderRules {
            set: vec![(HeaderName::from_static("x-route"), Template::parse("$route").expect("valid"))],
            add: vec![(HeaderName::from_static("via"), Template::parse("siger").expect("valid"))],
            remove: vec![HeaderName::from_static("cookie"), HeaderName::from_static("via")],
        };
        let mut req = pingora::http::RequestHeader::build("GET", b"/", None).expect("request");
        req.insert_header("Cookie", "a=1").expect("header");
        req.insert_header("Via", "1.1 edge").expect("header");
        rules.apply(&vars(&no_claims), &mut req);
        assert_eq!(req.headers.get("x-route").expect("set"), "catalog");
        assert_eq!(req.headers.get_all("via").iter().collect::<Vec<_>>(), vec!["siger"]);
        assert!(req.headers.get("cookie").is_none());
    }
}
