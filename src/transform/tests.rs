//! A whole transform, from settings as written in a config file to bytes out.

use super::*;
use serde_json::{json, Value};
use std::time::Duration;

fn settings(yaml: &str) -> TransformSettings {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml).expect("yaml");
    serde_yaml::from_value(value).expect("settings")
}

fn compiled(yaml: &str) -> Transform {
    Transform::from_settings(&settings(yaml)).expect("valid settings")
}

fn problems(yaml: &str) -> Vec<(String, String)> {
    let e = Transform::from_settings(&settings(yaml)).expect_err("invalid settings");
    e.into_iter().map(|e| (e.key, e.message)).collect()
}

fn with_vars<T>(f: impl FnOnce(&Vars<'_>) -> T) -> T {
    let claim = |name: &str| match name {
        "sub" => Some("user-7".to_string()),
        "age" => Some("42".to_string()),
        _ => None,
    };
    let vars = Vars {
        request_id: "req-1",
        client_ip: "10.0.0.1",
        route: "orders",
        elapsed: Duration::ZERO,
        claim: &claim,
        tenant: None,
    };
    f(&vars)
}

fn request(
    t: &Transform,
    body: &str,
    content_type: Option<&str>,
) -> Result<(String, Option<&'static str>), TransformError> {
    let out = with_vars(|v| t.request.as_ref().expect("request").apply(body.as_bytes(), content_type, v, 1 << 20))?;
    let out = out.expect("a body");
    Ok((String::from_utf8(out.body.to_vec()).expect("utf-8"), out.content_type))
}

fn response(t: &Transform, status: u16, body: &str) -> Result<Value, TransformError> {
    let out = with_vars(|v| t.response.as_ref().expect("response").apply(status, Some(JSON), body.as_bytes(), v))?;
    Ok(serde_json::from_slice(&out.body).expect("the output is JSON"))
}

const ORDER: &str = r#"{"qty":2,"customer":{"id":"forged","name":"Ada"},"internal":{"cost":1},"lines":[{"sku":"a","internal":1},{"sku":"b"}]}"#;

#[test]
fn request_renames_then_removes_then_sets() {
    let t = compiled(
        "request:\n  set: {/customer/id: \"$claim_sub\", /customer/age: {value: \"$claim_age\", type: integer}, /lines/*/by: \"$route\"}\n  remove: [/internal, /lines/*/internal, /quantity_hint]\n  rename: {/qty: /quantity, /customer/name: /customer/display/name}\n",
    );
    let (body, content_type) = request(&t, ORDER, Some("application/json; charset=utf-8")).expect("transformed");
    assert_eq!(content_type, None, "JSON stays JSON");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({"quantity":2,"customer":{"id":"user-7","display":{"name":"Ada"},"age":42},"lines":[{"sku":"a","by":"orders"},{"sku":"b","by":"orders"}]})
    );
    // `remove` holds whatever the client renames into a removed place.
    let t = compiled("request:\n  remove: [/internal]\n  rename: {/x: /internal}\n");
    assert_eq!(request(&t, r#"{"x":{"secret":1},"y":2}"#, Some(JSON)).expect("ok").0, r#"{"y":2}"#);
}

#[test]
fn request_formats_convert_both_ways() {
    let t = compiled("request:\n  format: form\n  set: {/customer/id: \"$claim_sub\"}\n");
    let (body, content_type) =
        request(&t, r#"{"qty":2,"customer":{"id":"forged"},"tags":["a","b"]}"#, Some(JSON)).expect("form");
    assert_eq!(content_type, Some(FORM));
    assert_eq!(body, "qty=2&customer%5Bid%5D=user-7&tags%5B0%5D=a&tags%5B1%5D=b");
    // A form to a form route stays a form, re-encoded after the edits.
    let (body, content_type) = request(&t, "qty=2&customer[id]=forged", Some(FORM)).expect("form");
    assert_eq!((body.as_str(), content_type), ("qty=2&customer%5Bid%5D=user-7", None));
    // A form to a JSON route becomes JSON; `type` gives a field its type.
    let t = compiled("request:\n  set: {/qty: {value: \"$claim_age\", type: integer}}\n");
    let (body, content_type) = request(&t, "qty=2&note=a+b&tags[]=x", Some(FORM)).expect("json");
    assert_eq!(content_type, Some(JSON));
    assert_eq!(body, r#"{"qty":42,"note":"a b","tags":["x"]}"#);
}

#[test]
fn request_failures_say_what_the_client_did() {
    let t = compiled("request:\n  set: {/customer/id: \"$claim_sub\", /n: {value: \"$claim_sub\", type: number}}\n");
    let r = t.request.as_ref().expect("request");
    let apply = |body: &str, ct: Option<&str>| with_vars(|v| r.apply(body.as_bytes(), ct, v, 64));
    assert!(
        matches!(apply("<xml/>", Some("text/xml")), Err(TransformError::UnsupportedMediaType(t)) if t == "text/xml")
    );
    assert!(matches!(apply("a=1", None), Err(TransformError::UnsupportedMediaType(_))));
    assert!(matches!(apply("{\"a\":", Some(JSON)), Err(TransformError::NotJson(_))));
    assert!(matches!(apply(&" ".repeat(65), Some(JSON)), Err(TransformError::TooLarge { limit: 64 })));
    assert!(matches!(apply(r#"{"a":1,"a":2}"#, Some(JSON)), Err(TransformError::RepeatedName { .. })));
    assert!(
        matches!(apply(r#"{"customer":"flat"}"#, Some(JSON)), Err(TransformError::Shape { pointer, .. }) if pointer == "/customer/id")
    );
    assert!(matches!(apply("[1]", Some(JSON)), Err(TransformError::Shape { .. })));
    let e = apply("{}", Some(JSON)).expect_err("sub is not a number");
    assert_eq!(e.to_string(), "`/n`: the value is not a number");
    // No body: nothing to transform, nothing made up.
    assert_eq!(apply("", None), Ok(None));
    // A body without a type is read as JSON (and reaches the conversion).
    assert!(matches!(apply("{}", None), Err(TransformError::Conversion { .. })));
}

const USER: &str = r#"{"result":{"id":1,"status":"ok","created_at":"t","updated_at":"u","password":"p","items":[{"id":1,"cost":5}]},"debug":{"trace":1}}"#;

#[test]
fn response_unwraps_filters_renames_and_wraps() {
    let t = compiled(
        "response:\n  unwrap: /result\n  allow: [/id, /status, /created_at, /updated_at, /items/*/id]\n  rename: {/created_at: /createdAt, /updated_at: /meta/updatedAt}\n  wrap: data\n",
    );
    assert_eq!(
        response(&t, 200, USER).expect("transformed"),
        json!({"data":{"id":1,"status":"ok","createdAt":"t","items":[{"id":1}],"meta":{"updatedAt":"u"}}})
    );
    let t = compiled("response:\n  deny: [/result/password, /debug, /result/items/*/cost]\n");
    assert_eq!(
        response(&t, 200, USER).expect("transformed"),
        json!({"result":{"id":1,"status":"ok","created_at":"t","updated_at":"u","items":[{"id":1}]}})
    );
}

#[test]
fn response_status_rules_remap_and_may_replace_the_body() {
    let t = compiled("response:\n  allow: [/id]\n  status: {404: {status: 200, body: {items: [], request: \"$request_id\"}}, 409: 422}\n");
    let r = t.response.as_ref().expect("response");
    assert_eq!((r.status(404), r.status(409), r.status(200)), (200, 422, 200));
    assert!(r.replaces_body(404) && !r.replaces_body(409) && !r.replaces_body(200));
    // The backend's 404 body (HTML, say) is never read.
    let out = with_vars(|v| r.apply(404, Some("text/html"), b"<h1>Not Found</h1>", v)).expect("replaced");
    assert_eq!((out.body.as_ref(), out.content_type), (br#"{"items":[],"request":"req-1"}"#.as_ref(), Some(JSON)));
    // Without a body, the status changes and the body is transformed as any other.
    assert_eq!(response(&t, 409, r#"{"id":3,"why":"x"}"#).expect("filtered"), json!({"id":3}));
}

#[test]
fn responses_that_cannot_be_transformed_are_errors_never_passed_through() {
    let t = compiled("response:\n  allow: [/id]\n  unwrap: /result\n  max_body: 64\n");
    let r = t.response.as_ref().expect("response");
    let apply = |ct: Option<&str>, body: &str| with_vars(|v| r.apply(200, ct, body.as_bytes(), v));
    assert!(matches!(
        apply(Some(JSON), &format!("{{\"result\":\"{}\"}}", "x".repeat(60))),
        Err(TransformError::TooLarge { limit: 64 })
    ));
    assert!(matches!(apply(Some("text/plain"), r#"{"result":{}}"#), Err(TransformError::NotJson(_))));
    assert!(matches!(apply(Some(JSON), "{\"result\":"), Err(TransformError::NotJson(_))));
    assert!(matches!(apply(Some(JSON), r#"{"other":1}"#), Err(TransformError::Missing { .. })));
    assert!(matches!(apply(Some(JSON), r#"{"result":"text"}"#), Err(TransformError::Shape { .. })));
    assert!(matches!(apply(Some(JSON), r#"{"result":{"id":1,"id":2}}"#), Err(TransformError::RepeatedName { .. })));
    // A JSON media type of another name, or none, is fine; an empty body stays empty.
    let ok = apply(Some("application/problem+json"), r#"{"result":{"id":1,"x":2}}"#).expect("json");
    assert_eq!((ok.body.as_ref(), ok.content_type), (br#"{"id":1}"#.as_ref(), None));
    assert_eq!(apply(None, r#"{"result":{"id":1}}"#).expect("json").content_type, Some(JSON));
    assert_eq!(apply(Some(JSON), "").expect("empty").body.len(), 0);
}

#[test]
fn aggregation_parts_take_the_body_operations() {
    let part: PartTransformSettings =
        serde_yaml::from_str("allow: [/name, /email]\nrename: {/email: /contact/email}\n").expect("part");
    let t = ResponseTransform::for_part(&part).expect("valid");
    let out = t.apply_body(br#"{"name":"n","email":"e","password":"p"}"#).expect("transformed");
    assert_eq!(out, br#"{"name":"n","contact":{"email":"e"}}"#);
    let part: PartTransformSettings = serde_yaml::from_str("allow: [/a]\ndeny: [/b]\n").expect("part");
    let e = ResponseTransform::for_part(&part).expect_err("both");
    assert_eq!(e[0].key, "deny");
}

#[test]
fn settings_errors_name_their_key() {
    let found = problems(
        "request:\n  set: {a: x, /b: \"$nope\", /c: {value: twelve, type: integer}, /d/e: x, /d: y, \"\": z}\n  remove: [/ok, /~2]\n  rename: {/x: y, /p: /p/q, /items/*/a: /other/*/a, /m: /n, /n/o: /z}\nresponse:\n  allow: [/id]\n  deny: [/x]\n  unwrap: /*\n  wrap: \"\"\n  max_body: 0\n  status: {404: 204, 100: 200, 500: {status: 200, body: {a: \"$nope\"}}}\n",
    );
    let expect = [
        ("request.set.", "empty pointer"),
        ("request.set./b", "nope"),
        ("request.set./c.value", "not an integer"),
        ("request.set./d/e", "overlaps `/d`"),
        ("request.set.a", "must start with `/`"),
        ("request.remove[1]", "`~` must be followed"),
        ("request.rename./items/*/a", "a `*` must come"),
        ("request.rename./n/o", "overlaps the rename of `/m`"),
        ("request.rename./p", "into itself"),
        ("request.rename./x", "target `y`"),
        ("response.deny", "cannot both be given"),
        ("response.unwrap", "takes one"),
        ("response.wrap", "empty"),
        ("response.max_body", "at least 1 byte"),
        ("response.status.100", "not a status"),
        ("response.status.404", "cannot be sent with a body"),
        ("response.status.500.body", "nope"),
    ];
    for (key, words) in expect {
        assert!(found.iter().any(|(k, m)| k == key && m.contains(words)), "{key}: {words} not in {found:#?}");
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn renames_must_be_reachable_after_the_filter() {
    let found = problems(
        "response:\n  allow: [/id, /items/*/id]\n  rename: {/created_at: /createdAt, /items/*/id: /items/*/key}\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "response.rename./created_at");
    let found = problems("response:\n  deny: [/secret, /items/*/cost]\n  rename: {/secret/x: /y, /items/*/cost: /items/*/price, /items/0/id: /items/0/key}\n");
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["response.rename./items/*/cost", "response.rename./secret/x"]);
    assert!(problems("response:\n  allow: []\n")[0].1.contains("lists no pointer"));
}
