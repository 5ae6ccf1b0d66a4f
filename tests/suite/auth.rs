//! JWT authentication end to end, one test per attack (issue 3): the real gateway in front of a
//! real echo backend; the backend's JSON shows exactly which identity headers arrived.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::jwt::*;
use crate::support::*;
use jsonwebtoken::Algorithm;
use serde_json::json;
use std::time::Duration;

/// Header values the backend received (lower-case name).
fn upstream(resp: &RawResponse, name: &str) -> Vec<String> {
    resp.json()["headers"][name]
        .as_array()
        .map_or_else(Vec::new, |v| v.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn hs_gateway(extra_routes: &str) -> (Echo, Gateway) {
    hs_gateway_with("", extra_routes)
}

fn hs_gateway_with(head: &str, extra_routes: &str) -> (Echo, Gateway) {
    let echo = Echo::start("api");
    let gw = Gateway::start(&format!(
        r#"{head}{auth}
services:
  api: {{targets: ["{addr}"]}}
routes:
  - {{path: /public, service: api, auth: public}}
  - {{path: /optional, service: api, auth: optional}}
  - {{path: /admin, service: api, roles: [admin]}}
  - {{path: /noauthz, service: api, forward_authorization: false}}
{extra_routes}  - {{path: /, service: api}}
"#,
        auth = hs_auth(""),
        addr = echo.addr
    ));
    (echo, gw)
}

/// The 401 body and headers every bad token gets; returns the message.
fn assert_invalid(resp: &RawResponse) -> String {
    assert_eq!(resp.status, 401, "{}", String::from_utf8_lossy(&resp.body));
    let body = resp.json();
    assert_eq!(body["error"], "invalid_token");
    let www = resp.header("www-authenticate").expect("WWW-Authenticate");
    assert!(www.starts_with("Bearer realm=\"siger\", error=\"invalid_token\""), "{www}");
    body["message"].as_str().unwrap().to_string()
}

fn get_token(gw: &Gateway, path: &str, token: &str) -> RawResponse {
    get_with(gw.addr, path, &[("Authorization", &bearer(token))])
}

#[test]
fn valid_token_passes_with_claim_headers_and_authorization() {
    let (_e, gw) = hs_gateway("");
    let token = hs256(&claims("alice", &["user", "ops"]));
    let r = get_token(&gw, "/things", &token);
    assert_eq!(r.status, 200);
    assert_eq!(upstream(&r, "x-user-id"), vec!["alice"]);
    assert_eq!(upstream(&r, "x-user-roles"), vec!["user,ops"]);
    assert_eq!(upstream(&r, "authorization"), vec![bearer(&token)], "forwarded unchanged by default");
    let r = get_token(&gw, "/noauthz/x", &token);
    assert_eq!(r.status, 200);
    assert!(upstream(&r, "authorization").is_empty(), "forward_authorization: false");
    assert_eq!(upstream(&r, "x-user-id"), vec!["alice"]);
}

#[test]
fn missing_token_is_401_missing_token() {
    let (_e, gw) = hs_gateway("");
    let r = get(gw.addr, "/things");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "missing_token");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"siger\""));
    // A token in the query string is not a credential.
    let r = get(gw.addr, &format!("/things?access_token={}", hs256(&claims("alice", &[]))));
    assert_eq!(r.json()["error"], "missing_token");
}

#[test]
fn lowercase_scheme_is_accepted() {
    let (_e, gw) = hs_gateway("");
    let token = hs256(&claims("alice", &[]));
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        let r = get_with(gw.addr, "/x", &[("Authorization", &format!("{scheme} {token}"))]);
        assert_eq!(r.status, 200, "{scheme}");
    }
}

#[test]
fn alg_none_is_rejected() {
    let (_e, gw) = hs_gateway("");
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(serde_json::to_string(&claims("admin", &["admin"])).unwrap().as_bytes());
    for token in [format!("{header}.{payload}."), format!("{header}.{payload}.c2ln")] {
        let msg = assert_invalid(&get_token(&gw, "/admin", &token));
        assert!(msg.contains("alg none"), "{msg}");
    }
}

#[test]
fn alg_confusion_with_the_rsa_public_key_as_hmac_secret_is_rejected() {
    let echo = Echo::start("api");
    let pem = fixture_text("rsa.pub.pem");
    // The classic attack: HS256-sign with the public key's PEM text as the HMAC secret.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims("mallory", &["admin"]),
        &jsonwebtoken::EncodingKey::from_secret(pem.as_bytes()),
    )
    .unwrap();
    // Only RS256 allowed: the alg itself is refused.
    let gw = Gateway::start(&format!(
        "auth:\n  jwt:\n    algorithms: [RS256]\n    public_key_file: {}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api}}\n",
        fixture("rsa.pub.pem").display(),
        echo.addr
    ));
    let msg = assert_invalid(&get_token(&gw, "/x", &forged));
    assert!(msg.contains("HS256 is not allowed"), "{msg}");
    let good = sign(Algorithm::RS256, "rsa", None, &claims("alice", &[]));
    assert_eq!(get_token(&gw, "/x", &good).status, 200, "a real RS256 token passes");
    drop(gw);
    // Both families allowed: HS* is only ever checked against the secret, never the PEM.
    let gw = Gateway::start(&format!(
        "auth:\n  jwt:\n    algorithms: [HS256, RS256]\n    secret: \"{SECRET}\"\n    public_key_file: {}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api}}\n",
        fixture("rsa.pub.pem").display(),
        echo.addr
    ));
    let msg = assert_invalid(&get_token(&gw, "/x", &forged));
    assert!(msg.contains("signature"), "{msg}");
    assert_eq!(get_token(&gw, "/x", &good).status, 200);
}

#[test]
fn expired_beyond_leeway_is_rejected() {
    let (_e, gw) = hs_gateway("");
    let mut c = claims("alice", &[]);
    c["exp"] = json!(now() - 60);
    let msg = assert_invalid(&get_token(&gw, "/x", &hs256(&c)));
    assert!(msg.contains("expired"), "{msg}");
    c["exp"] = json!(now() - 2);
    assert_eq!(get_token(&gw, "/x", &hs256(&c)).status, 200, "within the 5 s leeway");
    let mut no_exp = claims("alice", &[]);
    no_exp.as_object_mut().unwrap().remove("exp");
    let msg = assert_invalid(&get_token(&gw, "/x", &hs256(&no_exp)));
    assert!(msg.contains("exp"), "exp is required: {msg}");
    assert_eq!(metric_of(&gw, "siger_auth_failures_total{reason=\"expired\"}"), 1.0);
}

#[test]
fn not_yet_valid_is_rejected() {
    let (_e, gw) = hs_gateway("");
    let mut c = claims("alice", &[]);
    c["nbf"] = json!(now() + 120);
    let msg = assert_invalid(&get_token(&gw, "/x", &hs256(&c)));
    assert!(msg.contains("nbf"), "{msg}");
}

#[test]
fn wrong_issuer_is_rejected() {
    let (_e, gw) = hs_gateway("");
    let mut c = claims("alice", &[]);
    c["iss"] = json!("someone-else");
    assert!(assert_invalid(&get_token(&gw, "/x", &hs256(&c))).contains("iss"));
    c.as_object_mut().unwrap().remove("iss");
    assert!(assert_invalid(&get_token(&gw, "/x", &hs256(&c))).contains("iss"), "a configured issuer is required");
}

#[test]
fn wrong_audience_is_rejected() {
    let (_e, gw) = hs_gateway("");
    let mut c = claims("alice", &[]);
    c["aud"] = json!(["billing", "web"]);
    assert!(assert_invalid(&get_token(&gw, "/x", &hs256(&c))).contains("aud"));
    c["aud"] = json!(["web", "api"]);
    assert_eq!(get_token(&gw, "/x", &hs256(&c)).status, 200, "a list containing the audience passes");
}

#[test]
fn tampered_payload_is_rejected() {
    let (_e, gw) = hs_gateway("");
    let token = hs256(&claims("alice", &["user"]));
    let parts: Vec<&str> = token.split('.').collect();
    let evil = b64(serde_json::to_string(&claims("alice", &["admin"])).unwrap().as_bytes());
    let tampered = format!("{}.{evil}.{}", parts[0], parts[2]);
    assert!(assert_invalid(&get_token(&gw, "/admin", &tampered)).contains("signature"));
    // Flipping one signature character too.
    let mut sig = parts[2].to_string();
    let last = if sig.ends_with('A') { "B" } else { "A" };
    sig.replace_range(sig.len() - 1.., last);
    assert_invalid(&get_token(&gw, "/x", &format!("{}.{}.{sig}", parts[0], parts[1])));
}

#[test]
fn oversized_token_is_rejected_without_parsing() {
    // Headers up to 256 KiB get through, so the token limit (default 8 KiB) is what answers.
    let (_e, gw) = hs_gateway_with("limits: {max_header_bytes: 256KiB}\n", "");
    let mut c = claims("alice", &[]);
    c["pad"] = json!("x".repeat(100 * 1024));
    let token = hs256(&c);
    assert!(token.len() > 100 * 1024);
    let msg = assert_invalid(&get_token(&gw, "/x", &token));
    assert!(msg.contains("larger than 8192 bytes"), "{msg}");
    // With the default 16 KiB header limit the request head itself is refused.
    let (_e2, gw2) = hs_gateway("");
    assert_eq!(get_token(&gw2, "/x", &token).status, 431);
}

#[test]
fn malformed_and_duplicate_authorization_are_rejected() {
    let (_e, gw) = hs_gateway("");
    let token = hs256(&claims("alice", &[]));
    for bad in ["Bearer", "Bearer not-a-jwt", "Bearer a.b.c", "Basic YWxpY2U6cHc=", "Bearer a.b.c\"x"] {
        let r = get_with(gw.addr, "/x", &[("Authorization", bad)]);
        assert_invalid(&r);
    }
    let r = get_with(gw.addr, "/x", &[("Authorization", &bearer(&token)), ("Authorization", &bearer(&token))]);
    assert!(assert_invalid(&r).contains("more than one"));
}

#[test]
fn missing_role_is_403_forbidden() {
    let (_e, gw) = hs_gateway("");
    let r = get_token(&gw, "/admin/panel", &hs256(&claims("alice", &["user"])));
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");
    assert_eq!(get_token(&gw, "/admin/panel", &hs256(&claims("root", &["user", "admin"]))).status, 200);
    // Space-separated roles work too.
    let mut c = claims("root", &[]);
    c["roles"] = json!("user admin");
    assert_eq!(get_token(&gw, "/admin/panel", &hs256(&c)).status, 200);
    // Anonymous callers are asked to authenticate.
    assert_eq!(get(gw.addr, "/admin/panel").status, 401);
}

#[test]
fn optional_route_accepts_anonymous_but_not_bad_tokens() {
    let (_e, gw) = hs_gateway("");
    let r = get_with(gw.addr, "/optional/x", &[("X-User-Id", "root")]);
    assert_eq!(r.status, 200);
    assert!(upstream(&r, "x-user-id").is_empty(), "anonymous: spoofed identity removed");
    let r = get_token(&gw, "/optional/x", &hs256(&claims("alice", &[])));
    assert_eq!(upstream(&r, "x-user-id"), vec!["alice"]);
    let mut expired = claims("alice", &[]);
    expired["exp"] = json!(now() - 3600);
    assert_invalid(&get_token(&gw, "/optional/x", &hs256(&expired)));
}

#[test]
fn spoofed_identity_headers_are_removed_on_every_route() {
    let (_e, gw) = hs_gateway("");
    let spoof = [("X-User-Id", "root"), ("x-user-roles", "admin"), ("X-USER-ID", "root2")];
    let r = get_with(gw.addr, "/public/x", &spoof);
    assert_eq!(r.status, 200);
    assert!(upstream(&r, "x-user-id").is_empty(), "public route: {:?}", r.json()["headers"]);
    assert!(upstream(&r, "x-user-roles").is_empty());
    let token = hs256(&claims("alice", &["user"]));
    let mut with_token = spoof.to_vec();
    let auth = bearer(&token);
    with_token.push(("Authorization", &auth));
    let r = get_with(gw.addr, "/x", &with_token);
    assert_eq!(upstream(&r, "x-user-id"), vec!["alice"], "only the verified claim");
    assert_eq!(upstream(&r, "x-user-roles"), vec!["user"]);
}

#[test]
fn asymmetric_algorithms_from_pem_and_jwks() {
    let echo = Echo::start("api");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&format!(
        "auth:\n  jwt:\n    algorithms: [RS256, PS256, ES256, EdDSA]\n    jwks_file: {}\n    issuer: siger\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api}}\n",
        fixture("jwks-all.json").display(),
        echo.addr
    ));
    let c = claims("alice", &[]);
    for (alg, key, kid) in [
        (Algorithm::RS256, "rsa", "rsa"),
        (Algorithm::PS256, "rsa", "rsa"),
        (Algorithm::ES256, "ec1", "ec1"),
        (Algorithm::EdDSA, "ed", "ed"),
    ] {
        assert_eq!(get_token(&gw, "/x", &sign(alg, key, Some(kid), &c)).status, 200, "{alg:?}");
        assert_eq!(get_token(&gw, "/x", &sign(alg, key, None, &c)).status, 200, "{alg:?} without kid");
    }
    // A key under another key's kid fails the signature check.
    assert_invalid(&get_token(&gw, "/x", &sign(Algorithm::ES256, "ec2", Some("ec1"), &c)));
    drop(dir);
}

#[test]
fn unknown_kid_is_rejected() {
    let echo = Echo::start("api");
    let gw = Gateway::start(&format!(
        "auth:\n  jwt:\n    algorithms: [ES256]\n    jwks_file: {}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api}}\n",
        fixture("jwks-ec1.json").display(),
        echo.addr
    ));
    let msg = assert_invalid(&get_token(&gw, "/x", &sign(Algorithm::ES256, "ec2", Some("ec2"), &claims("a", &[]))));
    assert!(msg.contains("unknown signing key"), "{msg}");
}

#[test]
fn kid_rotation_is_picked_up_from_a_rewritten_jwks_file() {
    let echo = Echo::start("api");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, fixture_text("jwks-ec1.json")).unwrap();
    let gw = Gateway::start(&format!(
        "auth:\n  jwt:\n    algorithms: [ES256]\n    jwks_file: {}\n    jwks_refresh: 1s\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api}}\n",
        jwks.display(),
        echo.addr
    ));
    let old = sign(Algorithm::ES256, "ec1", Some("ec1"), &claims("a", &[]));
    let new = sign(Algorithm::ES256, "ec2", Some("ec2"), &claims("a", &[]));
    assert_eq!(get_token(&gw, "/x", &old).status, 200, "and now cached");
    // Rotate: ec2 in, ec1 out.
    let both: serde_json::Value = serde_json::from_str(&fixture_text("jwks-ec1-ec2.json")).unwrap();
    let ec2_only = json!({"keys": [both["keys"][1].clone()]});
    std::fs::write(&jwks, ec2_only.to_string()).unwrap();
    // An unknown kid triggers an immediate re-read (the periodic one may not have run yet).
    assert_eq!(get_token(&gw, "/x", &new).status, 200, "{}", gw.logs());
    // The retired key stops working although its token was cached.
    assert!(eventually(Duration::from_secs(5), || get_token(&gw, "/x", &old).status == 401));
}

#[test]
fn jwks_url_keeps_last_good_keys_and_refetches_unknown_kids_once() {
    let echo = Echo::start("api");
    let server = JwksServer::start(&fixture_text("jwks-ec1.json"));
    let gw = Gateway::start(&format!(
        "auth:\n  jwt:\n    algorithms: [ES256]\n    jwks_url: {}\n    jwks_refresh: 1s\n    cache_size: 0\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api}}\n",
        server.url(),
        echo.addr
    ));
    assert!(eventually(Duration::from_secs(10), || get_token(
        &gw,
        "/x",
        &sign(Algorithm::ES256, "ec1", Some("ec1"), &claims("a", &[]))
    )
    .status
        == 200));
    // The JWKS endpoint breaks: refreshes fail, are counted, and the keys stay.
    server.set_status(500);
    let before = server.fetch_count();
    assert!(eventually(Duration::from_secs(10), || server.fetch_count() >= before + 2));
    assert_eq!(get_token(&gw, "/x", &sign(Algorithm::ES256, "ec1", Some("ec1"), &claims("b", &[]))).status, 200);
    assert!(metric_of(&gw, "siger_auth_failures_total{reason=\"jwks_refresh\"}") >= 1.0);
    // A burst of unknown kids causes at most one on-demand fetch (single flight + cool-down),
    // on top of the 1 s periodic refresh.
    server.set_status(200);
    let start = server.fetch_count();
    let started = std::time::Instant::now();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let addr = gw.addr;
            std::thread::spawn(move || {
                let t = sign(Algorithm::ES256, "ec2", Some(&format!("nope-{i}")), &claims("c", &[]));
                get_with(addr, "/x", &[("Authorization", &format!("Bearer {t}"))]).status
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 401);
    }
    let periodic = started.elapsed().as_secs() as u32 + 1;
    assert!(server.fetch_count() - start <= 1 + periodic, "fetches: {}", server.fetch_count() - start);
}

#[test]
fn siger_token_mints_a_working_token() {
    let (_e, gw) = hs_gateway("");
    let out = std::process::Command::new(SIGER)
        .args(["token", "--sub", "carol", "--roles", "admin,user", "--ttl", "10m", "-c"])
        .arg(&gw.config_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "only the token: {stdout:?}");
    let token = stdout.trim();
    let r = get_token(&gw, "/admin/x", token);
    assert_eq!(r.status, 200);
    assert_eq!(upstream(&r, "x-user-id"), vec!["carol"]);
    let payload: serde_json::Value = {
        use base64::Engine;
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    assert_eq!(payload["iss"], "siger");
    assert_eq!(payload["aud"], "api");
    let ttl = payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap();
    assert_eq!(ttl, 600);
    let bad = std::process::Command::new(SIGER)
        .args(["token", "--sub", "x", "--ttl", "soon", "-c"])
        .arg(&gw.config_path)
        .output()
        .unwrap();
    assert!(!bad.status.success() && bad.stdout.is_empty());
}

#[test]
fn consistent_hash_uses_the_verified_claim() {
    let a = Echo::start("a");
    let b = Echo::start("b");
    let gw = Gateway::start(&format!(
        "{}services:\n  api: {{targets: [\"{}\", \"{}\"], lb: consistent_hash, hash_key: \"claim:sub\"}}\nroutes:\n  - {{path: /, service: api}}\n",
        hs_auth(""),
        a.addr,
        b.addr
    ));
    let mut seen = std::collections::HashSet::new();
    for i in 0..20 {
        let token = hs256(&claims(&format!("user-{i}"), &[]));
        let first = backend_of(&get_token(&gw, "/x", &token));
        for _ in 0..3 {
            assert_eq!(backend_of(&get_token(&gw, "/x", &token)), first, "same sub, same backend");
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 2, "subs spread over both backends");
}

#[test]
fn siger_token_signs_with_a_private_key_for_jwks_setups() {
    let echo = Echo::start("api");
    let gw = Gateway::start(&format!(
        "auth:\n  jwt:\n    algorithms: [ES256]\n    jwks_file: {}\nservices:\n  api: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /, service: api}}\n",
        fixture("jwks-ec1.json").display(),
        echo.addr
    ));
    let mint = |extra: &[&str]| {
        std::process::Command::new(SIGER)
            .args(["token", "--sub", "dave", "--ttl", "5m", "-c"])
            .arg(&gw.config_path)
            .args(extra)
            .output()
            .unwrap()
    };
    let key = fixture("ec1.key.pem");
    let out = mint(&["--private-key", key.to_str().unwrap(), "--kid", "ec1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(get_token(&gw, "/x", token.trim()).status, 200);
    let refused = mint(&["--private-key", key.to_str().unwrap(), "--alg", "RS256"]);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--alg RS256"));
    let no_secret = mint(&[]);
    assert!(!no_secret.status.success(), "HS tokens need a secret in the config");
}
