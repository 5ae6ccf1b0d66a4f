//! Who a request is: the verified caller ([`Identity`]) and [`authenticate`], the single place
//! the request path turns an `Authorization: Bearer` header into one.
//!
//! `authenticate` here is deliberately small: HS256/384/512 with `auth.jwt.secret`, `exp`
//! required, `iss`/`aud` enforced when configured, `leeway`, `roles_claim`, `max_token_bytes`.
//! It does not do asymmetric keys, JWKS or caching — the full verifier (auth module) replaces
//! its body and keeps the signature, so callers (jobs) do not change.

use crate::config::{JwtAlgorithm, JwtSettings};
use crate::errors::GatewayError;
use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// A caller whose token was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim.
    pub subject: String,
    /// Role names from the configured roles claim (array or space-separated string).
    pub roles: Vec<String>,
}

impl Identity {
    /// Whether the caller holds any of `required`; an empty list admits every caller.
    pub fn has_any_role(&self, required: &[String]) -> bool {
        required.is_empty() || required.iter().any(|r| self.roles.iter().any(|have| have == r))
    }
}

/// Why authentication failed, with the `siger_auth_failures_total` reason.
#[derive(Debug, Clone)]
pub struct AuthFailure {
    /// What to answer.
    pub error: GatewayError,
    /// Metrics reason (`missing_token`, `invalid_token`, `expired`).
    pub reason: &'static str,
}

impl AuthFailure {
    fn invalid(reason: impl Into<String>) -> Self {
        AuthFailure { error: GatewayError::InvalidToken { reason: reason.into() }, reason: "invalid_token" }
    }
}

/// Verify the bearer token of a request. `jwt` is `None` when the config has no `auth.jwt`
/// (then nobody can authenticate).
pub fn authenticate(headers: &HeaderMap, jwt: Option<&JwtSettings>) -> Result<Identity, AuthFailure> {
    let missing = || AuthFailure { error: GatewayError::MissingToken, reason: "missing_token" };
    let token =
        headers.get(http::header::AUTHORIZATION).and_then(|v| bearer_token(v.as_bytes())).ok_or_else(missing)?;
    let Some(jwt) = jwt else {
        return Err(AuthFailure::invalid("no token verifier is configured"));
    };
    if token.len() > jwt.max_token_bytes {
        return Err(AuthFailure::invalid(format!("token longer than {} bytes", jwt.max_token_bytes)));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::invalid("malformed token"))?;
    let allowed: Vec<Algorithm> = jwt.algorithms.iter().filter_map(|a| hmac_algorithm(*a)).collect();
    if !allowed.contains(&header.alg) {
        return Err(AuthFailure::invalid(format!("algorithm {:?} is not allowed", header.alg)));
    }
    let Some(secret) = jwt.secret.as_deref() else {
        return Err(AuthFailure::invalid("no secret configured for HMAC tokens"));
    };
    let mut validation = Validation::new(header.alg);
    validation.algorithms = allowed;
    validation.leeway = jwt.leeway.as_secs();
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    if let Some(iss) = &jwt.issuer {
        validation.set_issuer(&[iss]);
    }
    match &jwt.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    let data =
        jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation)
            .map_err(|e| describe(e.kind()))?;
    let claims = data.claims;
    let subject = match claims.get("sub") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(AuthFailure::invalid("token has no sub claim")),
    };
    Ok(Identity { subject, roles: roles_of(&claims, &jwt.roles_claim) })
}

fn hmac_algorithm(a: JwtAlgorithm) -> Option<Algorithm> {
    match a {
        JwtAlgorithm::HS256 => Some(Algorithm::HS256),
        JwtAlgorithm::HS384 => Some(Algorithm::HS384),
        JwtAlgorithm::HS512 => Some(Algorithm::HS512),
        _ => None,
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive); `None` for any other scheme.
fn bearer_token(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> AuthFailure {
    use jsonwebtoken::errors::ErrorKind::*;
    match kind {
        ExpiredSignature => {
            AuthFailure { error: GatewayError::InvalidToken { reason: "token expired".into() }, reason: "expired" }
        }
        ImmatureSignature => AuthFailure::invalid("token not yet valid"),
        InvalidIssuer => AuthFailure::invalid("wrong issuer"),
        InvalidAudience => AuthFailure::invalid("wrong audience"),
        InvalidSignature => AuthFailure::invalid("signature does not verify"),
        InvalidAlgorithm => AuthFailure::invalid("algorithm not allowed"),
        MissingRequiredClaim(c) => AuthFailure::invalid(format!("missing {c} claim")),
        _ => AuthFailure::invalid("malformed token"),
    }
}

/// Roles at the dotted `path` of the claims: an array of strings or one space-separated string.
fn roles_of(claims: &serde_json::Value, path: &str) -> Vec<String> {
    let found = path.split('.').try_fold(claims, |v, key| v.get(key));
    match found {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|r| r.as_str().map(str::to_string)).collect(),
        Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn settings() -> JwtSettings {
        JwtSettings {
            algorithms: vec![JwtAlgorithm::HS256],
            secret: Some(SECRET.into()),
            public_key_file: None,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh: Duration::from_secs(300),
            issuer: Some("siger".into()),
            audience: None,
            leeway: Duration::from_secs(0),
            roles_claim: "realm.roles".into(),
            forward: Vec::new(),
            cache_size: 0,
            max_token_bytes: 4096,
        }
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }

    fn token(alg: Algorithm, claims: serde_json::Value) -> String {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).expect("encode")
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().expect("header"));
        h
    }

    fn check(value: &str) -> Result<Identity, AuthFailure> {
        authenticate(&headers(value), Some(&settings()))
    }

    #[test]
    fn valid_token_yields_subject_and_nested_roles() {
        let t = token(
            Algorithm::HS256,
            serde_json::json!({"sub": "alice", "iss": "siger", "exp": now() + 60, "realm": {"roles": ["user", "ops"]}}),
        );
        let id = check(&format!("bearer {t}")).expect("valid");
        assert_eq!(id.subject, "alice");
        assert_eq!(id.roles, ["user", "ops"]);
        assert!(id.has_any_role(&["admin".into(), "user".into()]));
        assert!(!id.has_any_role(&["admin".into()]));
        assert!(id.has_any_role(&[]));
    }

    #[test]
    fn space_separated_roles() {
        let claims = serde_json::json!({"realm": {"roles": "a b"}});
        assert_eq!(roles_of(&claims, "realm.roles"), ["a", "b"]);
        assert!(roles_of(&claims, "nope").is_empty());
    }

    #[test]
    fn failures_name_the_check() {
        let missing = authenticate(&HeaderMap::new(), Some(&settings())).expect_err("missing");
        assert_eq!(missing.reason, "missing_token");
        assert_eq!(check("Basic YWxpY2U6cHc=").expect_err("basic").reason, "missing_token");
        let expired = token(Algorithm::HS256, serde_json::json!({"sub": "a", "iss": "siger", "exp": now() - 60}));
        assert_eq!(check(&format!("Bearer {expired}")).expect_err("expired").reason, "expired");
        let no_exp = token(Algorithm::HS256, serde_json::json!({"sub": "a", "iss": "siger"}));
        let e = check(&format!("Bearer {no_exp}")).expect_err("no exp");
        assert!(e.error.to_string().contains("exp"), "{}", e.error);
        let wrong_iss = token(Algorithm::HS256, serde_json::json!({"sub": "a", "iss": "x", "exp": now() + 60}));
        assert!(check(&format!("Bearer {wrong_iss}")).expect_err("iss").error.to_string().contains("issuer"));
        let hs512 = token(Algorithm::HS512, serde_json::json!({"sub": "a", "iss": "siger", "exp": now() + 60}));
        assert!(check(&format!("Bearer {hs512}")).expect_err("alg").error.to_string().contains("not allowed"));
        assert!(check("Bearer not.a.token").expect_err("garbage").error.to_string().contains("malformed"));
        let no_sub = token(Algorithm::HS256, serde_json::json!({"iss": "siger", "exp": now() + 60}));
        assert!(check(&format!("Bearer {no_sub}")).expect_err("sub").error.to_string().contains("sub"));
    }

    #[test]
    fn unsigned_and_tampered_tokens_are_rejected() {
        let t = token(Algorithm::HS256, serde_json::json!({"sub": "a", "iss": "siger", "exp": now() + 60}));
        let mut parts: Vec<&str> = t.split('.').collect();
        // {"alg":"none","typ":"JWT"}
        parts[0] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let none = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(check(&format!("Bearer {none}")).expect_err("none").reason, "invalid_token");
        let tampered = format!("{}x", t);
        assert_eq!(check(&format!("Bearer {tampered}")).expect_err("sig").reason, "invalid_token");
    }
}
