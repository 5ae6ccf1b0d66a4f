//! `siger token`: mint an HS* token from the configured secret, for demos and load tests
//! (ARCHITECTURE.md §6 "`siger token`"): `sub`, roles at `roles_claim`, `iss`/`aud` when
//! configured, `iat`, and `exp` = now + ttl.

use crate::config::JwtSettings;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why no token could be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The config allows no HS* algorithm (or has no secret).
    #[error("`auth.jwt` allows no HS* algorithm with a `secret`; siger token mints HMAC tokens only")]
    NoSecret,
    /// Empty subject.
    #[error("--sub must not be empty")]
    EmptySubject,
    /// Zero lifetime.
    #[error("--ttl must be positive")]
    ZeroTtl,
    /// The config has no `auth.jwt`.
    #[error("the config has no `auth.jwt` section")]
    NoAuth,
    /// `--ttl` is not a duration.
    #[error("--ttl: {0}")]
    BadTtl(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
    /// `--alg` names no asymmetric algorithm the config allows.
    #[error("--alg {0}: not an asymmetric algorithm listed in auth.jwt.algorithms")]
    BadAlgorithm(String),
    /// The private key could not be read or parsed for the algorithm.
    #[error("--private-key: {0}")]
    BadKey(String),
}

/// How to sign with a private key instead of the config's secret (`--private-key`).
#[derive(Debug, Clone, Default)]
pub struct Signer<'a> {
    /// PEM private key file.
    pub private_key: Option<&'a std::path::Path>,
    /// Algorithm name (`ES256`, `RS256`, `EdDSA`, …).
    pub alg: Option<&'a str>,
    /// `kid` header (selects the key in a JWKS).
    pub kid: Option<&'a str>,
}

/// Claims of a minted token, issued at `now` (unix seconds).
pub fn claims(s: &JwtSettings, sub: &str, roles: &[String], ttl: Duration, now: u64) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("sub".into(), sub.into());
    c.insert("iat".into(), now.into());
    c.insert("exp".into(), now.saturating_add(ttl.as_secs()).into());
    if let Some(iss) = &s.issuer {
        c.insert("iss".into(), iss.clone().into());
    }
    if let Some(aud) = &s.audience {
        c.insert("aud".into(), aud.clone().into());
    }
    if !roles.is_empty() {
        let value = Value::Array(roles.iter().cloned().map(Value::String).collect());
        // A dotted roles_claim (`realm_access.roles`) is written nested, as it will be read.
        let mut parts = s.roles_claim.rsplit('.');
        let last = parts.next().unwrap_or("roles");
        let nested = parts.fold(Value::Object(Map::from_iter([(last.to_string(), value)])), |inner, p| {
            Value::Object(Map::from_iter([(p.to_string(), inner)]))
        });
        if let Value::Object(top) = nested {
            c.extend(top);
        }
    }
    c
}

/// A signed token with the first HS* algorithm of the config.
pub fn mint(s: &JwtSettings, sub: &str, roles: &[String], ttl: Duration, now: u64) -> Result<String, MintError> {
    if sub.trim().is_empty() {
        return Err(MintError::EmptySubject);
    }
    if ttl.as_secs() == 0 {
        return Err(MintError::ZeroTtl);
    }
    let alg = s.algorithms.iter().copied().find(|a| a.is_hmac()).ok_or(MintError::NoSecret)?;
    let secret = s.secret.as_ref().ok_or(MintError::NoSecret)?;
    let header = Header::new(alg.jose());
    jsonwebtoken::encode(&header, &claims(s, sub, roles, ttl, now), &EncodingKey::from_secret(secret.as_bytes()))
        .map_err(|e| MintError::Sign(e.to_string()))
}

/// A token signed with an asymmetric private key (for testing JWKS / public-key setups).
pub fn mint_with_key(
    s: &JwtSettings,
    signer: &Signer<'_>,
    sub: &str,
    roles: &[String],
    ttl: Duration,
    now: u64,
) -> Result<String, MintError> {
    if sub.trim().is_empty() {
        return Err(MintError::EmptySubject);
    }
    if ttl.as_secs() == 0 {
        return Err(MintError::ZeroTtl);
    }
    let name = signer.alg.unwrap_or("ES256");
    let alg = crate::config::JwtAlgorithm::parse(name)
        .filter(|a| !a.is_hmac() && s.algorithms.contains(a))
        .ok_or_else(|| MintError::BadAlgorithm(name.to_string()))?;
    let path = signer.private_key.ok_or_else(|| MintError::BadKey("missing".into()))?;
    let pem = std::fs::read(path).map_err(|e| MintError::BadKey(format!("{}: {e}", path.display())))?;
    let key = match alg.jose() {
        jsonwebtoken::Algorithm::ES256 | jsonwebtoken::Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        jsonwebtoken::Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .map_err(|e| MintError::BadKey(format!("{}: {e}", path.display())))?;
    let mut header = Header::new(alg.jose());
    header.kid = signer.kid.map(str::to_string);
    jsonwebtoken::encode(&header, &claims(s, sub, roles, ttl, now), &key).map_err(|e| MintError::Sign(e.to_string()))
}

/// `siger token --sub … --roles a,b --ttl 1h [--private-key K --alg ES256 --kid ID]`, issued now.
pub fn from_cli(
    s: Option<&JwtSettings>,
    signer: &Signer<'_>,
    sub: &str,
    roles: &str,
    ttl: &str,
) -> Result<String, MintError> {
    let s = s.ok_or(MintError::NoAuth)?;
    let ttl = crate::config::parse_duration(ttl).map_err(MintError::BadTtl)?;
    let roles: Vec<String> = roles.split(',').map(str::trim).filter(|r| !r.is_empty()).map(String::from).collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match signer.private_key {
        Some(_) => mint_with_key(s, signer, sub, &roles, ttl, now),
        None => mint(s, sub, &roles, ttl, now),
    }
}
