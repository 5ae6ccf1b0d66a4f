use super::*;
use crate::config::{self, Config};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

fn config(extra: &str) -> Config {
    let text = format!(
        "listen: [\"127.0.0.1:1\"]\nauth:\n  jwt:\n    algorithms: [HS256]\n    secret: {SECRET}\n    issuer: siger\n    audience: api\n    leeway: 30s\n    roles_claim: realm.roles\n    forward: {{sub: X-User-Id, realm.roles: X-User-Roles}}\n{extra}services:\n  s: {{targets: [\"127.0.0.1:2\"]}}\nroutes:\n  - {{path: /, service: s}}\n"
    );
    config::parse(&text, Path::new("."), &HashMap::new()).expect("valid config")
}

fn now() -> i64 {
    now_secs() as i64
}

fn sign(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).expect("sign")
}

fn good_claims() -> serde_json::Value {
    json!({"sub": "alice", "iss": "siger", "aud": "api", "exp": now() + 600, "realm": {"roles": ["user"]}})
}

fn headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::AUTHORIZATION, format!("Bearer {token}").parse().expect("value"));
    h
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

fn check(cfg: &Config, token: &str) -> Result<Option<Arc<Identity>>, AuthError> {
    let auth = Authenticator::new(cfg.auth.as_ref().expect("jwt")).expect("auth");
    let metrics = Metrics::new();
    run(auth.authenticate(&headers(token), AuthMode::Required, &metrics))
}

fn rejection(token: &str) -> Rejection {
    match check(&config(""), token) {
        Err(AuthError::Invalid(r)) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn valid_token_gives_identity_roles_and_forward_headers() {
    let id = check(&config(""), &sign(good_claims())).expect("valid").expect("identity");
    assert_eq!(id.sub.as_deref(), Some("alice"));
    assert_eq!(id.roles, vec!["user".to_string()]);
    let fwd: Vec<(String, String)> =
        id.forward.iter().map(|(k, v)| (k.to_string(), v.to_str().expect("ascii").to_string())).collect();
    assert!(fwd.contains(&("x-user-id".into(), "alice".into())), "{fwd:?}");
    assert!(fwd.contains(&("x-user-roles".into(), "user".into())), "{fwd:?}");
    assert!(authorize(Some(&id), &["admin".into(), "user".into()]).is_ok());
    assert_eq!(authorize(Some(&id), &["admin".into()]), Err(AuthError::Forbidden));
    assert_eq!(authorize(None, &["admin".into()]), Err(AuthError::Missing));
}

#[test]
fn claim_checks() {
    let with = |k: &str, v: serde_json::Value| {
        let mut c = good_claims();
        c[k] = v;
        sign(c)
    };
    assert_eq!(rejection(&with("exp", json!(now() - 31))), Rejection::Expired);
    assert!(check(&config(""), &with("exp", json!(now() - 10))).is_ok(), "within leeway");
    assert_eq!(rejection(&with("nbf", json!(now() + 300))), Rejection::NotYetValid);
    assert_eq!(rejection(&with("iss", json!("evil"))), Rejection::WrongIssuer);
    assert_eq!(rejection(&with("aud", json!("other"))), Rejection::WrongAudience);
    // A non-numeric exp does not count as present.
    assert_eq!(rejection(&with("exp", json!("soon"))), Rejection::MissingClaim("exp".into()));
    let mut no_exp = good_claims();
    no_exp.as_object_mut().expect("object").remove("exp");
    assert_eq!(rejection(&sign(no_exp)), Rejection::MissingClaim("exp".into()));
    let mut no_iss = good_claims();
    no_iss.as_object_mut().expect("object").remove("iss");
    assert_eq!(rejection(&sign(no_iss)), Rejection::MissingClaim("iss".into()));
}

#[test]
fn forged_tokens() {
    let token = sign(good_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).expect("json"))
    };
    use base64::Engine;
    let mut evil = good_claims();
    evil["sub"] = json!("mallory");
    let tampered = format!("{}.{}.{}", parts[0], b64(evil.clone()), parts[2]);
    assert_eq!(rejection(&tampered), Rejection::BadSignature);
    let none = format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(evil.clone()));
    assert!(matches!(check(&config(""), &none), Err(AuthError::Invalid(Rejection::AlgorithmNone))), "alg none");
    let hs512 = jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS512),
        &good_claims(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign");
    assert_eq!(rejection(&hs512), Rejection::AlgorithmNotAllowed("HS512".into()));
    let wrong_key =
        jsonwebtoken::encode(&Header::default(), &good_claims(), &EncodingKey::from_secret(b"x")).expect("sign");
    assert_eq!(rejection(&wrong_key), Rejection::BadSignature);
    assert!(matches!(rejection("eyJ.eyJ.sig"), Rejection::Malformed(_)));
}

#[test]
fn cache_serves_repeat_tokens_and_honours_expiry() {
    let cfg = config("");
    let auth = Authenticator::new(cfg.auth.as_ref().expect("jwt")).expect("auth");
    let metrics = Metrics::new();
    let token = sign(good_claims());
    let first = run(auth.authenticate(&headers(&token), AuthMode::Required, &metrics)).expect("ok").expect("id");
    let second = run(auth.authenticate(&headers(&token), AuthMode::Required, &metrics)).expect("ok").expect("id");
    assert!(Arc::ptr_eq(&first, &second), "the second check is a cache hit");
    assert_eq!(auth.cache.len(), 1);
    // An entry is never served past the token's expiry (+ leeway).
    let digest: TokenDigest = Sha256::digest(token.as_bytes()).into();
    assert!(auth.cache.get(&digest, now() as u64 + 600 + 31, 0).is_none());
}

#[test]
fn modes() {
    let cfg = config("");
    let auth = Authenticator::new(cfg.auth.as_ref().expect("jwt")).expect("auth");
    let metrics = Metrics::new();
    let none = HeaderMap::new();
    assert_eq!(run(auth.authenticate(&none, AuthMode::Required, &metrics)).map(|_| ()), Err(AuthError::Missing));
    assert!(run(auth.authenticate(&none, AuthMode::Optional, &metrics)).expect("anonymous").is_none());
    let bad = headers("a.b.c");
    assert!(run(auth.authenticate(&bad, AuthMode::Optional, &metrics)).is_err(), "present but invalid is 401");
    assert!(run(auth.authenticate(&bad, AuthMode::Public, &metrics)).expect("public").is_none());
}

#[test]
fn minted_tokens_verify() {
    let cfg = config("");
    let s = cfg.auth.as_ref().expect("jwt");
    let token =
        mint::mint(s, "bob", &["admin".into(), "user".into()], Duration::from_secs(60), now() as u64).expect("mint");
    let id = check(&cfg, &token).expect("valid").expect("identity");
    assert_eq!(id.sub.as_deref(), Some("bob"));
    assert_eq!(id.roles, vec!["admin".to_string(), "user".to_string()], "nested roles_claim written as read");
    assert!(mint::mint(s, "", &[], Duration::from_secs(60), 0).is_err());
}
