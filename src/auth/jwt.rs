//! JWT verification with pinned algorithms: the header's `alg` must be one the config allows;
//! HS* tokens are checked only against the configured secret and everything else only against
//! public keys, so a public key can never serve as an HMAC secret. `exp` is required; `nbf`,
//! `iss` and `aud` are enforced as configured, with `leeway` on the time checks.

use super::claims;
use super::keys::{Candidates, KeySet};
use super::{Identity, Rejection};
use crate::config::JwtSettings;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// What a token's header says, read before any key is chosen.
pub(crate) struct TokenHeader {
    /// Signing algorithm (already checked against the allowed list).
    pub(crate) alg: Algorithm,
    /// Key id.
    pub(crate) kid: Option<String>,
}

/// Verifies signatures and claims, and turns claims into an [`Identity`].
pub(crate) struct Verifier {
    /// Allowed algorithms with their ready-made validation rules.
    rules: Vec<(Algorithm, Validation)>,
    hmac: Option<DecodingKey>,
    roles_claim: String,
    forward: Vec<(String, HeaderName)>,
    leeway: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algs: Vec<_> = self.rules.iter().map(|(a, _)| *a).collect();
        f.debug_struct("Verifier").field("algorithms", &algs).finish()
    }
}

impl Verifier {
    /// Build from validated settings.
    pub(crate) fn new(s: &JwtSettings) -> Self {
        let mut required = vec!["exp"];
        if s.issuer.is_some() {
            required.push("iss");
        }
        if s.audience.is_some() {
            required.push("aud");
        }
        let rules = s
            .algorithms
            .iter()
            .map(|a| {
                let alg = a.jose();
                let mut v = Validation::new(alg);
                v.leeway = s.leeway.as_secs();
                v.validate_exp = true;
                v.validate_nbf = true;
                v.set_required_spec_claims(&required);
                match &s.issuer {
                    Some(iss) => v.set_issuer(&[iss]),
                    None => v.iss = None,
                }
                match &s.audience {
                    Some(aud) => v.set_audience(&[aud]),
                    // Without a configured audience any `aud` is acceptable.
                    None => v.validate_aud = false,
                }
                (alg, v)
            })
            .collect();
        let hmac = s
            .secret
            .as_ref()
            .filter(|_| s.algorithms.iter().any(|a| a.is_hmac()))
            .map(|secret| DecodingKey::from_secret(secret.as_bytes()));
        Verifier {
            rules,
            hmac,
            roles_claim: s.roles_claim.clone(),
            forward: s.forward.clone(),
            leeway: s.leeway.as_secs(),
        }
    }

    /// Algorithms allowed, in config order.
    pub(crate) fn algorithms(&self) -> Vec<Algorithm> {
        self.rules.iter().map(|(a, _)| *a).collect()
    }

    /// Read the header and check `alg` against the allowed list. A `crit` member names
    /// extensions the token says must be understood; we understand none, so such a token is
    /// refused (RFC 7515 §4.1.11), as is a header with a member twice.
    pub(crate) fn header(&self, token: &str) -> Result<TokenHeader, Rejection> {
        if let Ok(bytes) = segment(token, 0) {
            match claims::strict_object(&bytes) {
                Ok(fields) if fields.contains_key("crit") => return Err(Rejection::CriticalExtension),
                // Valid JSON but refused by the strict parse: a member appears twice.
                Err(_) if serde_json::from_slice::<Value>(&bytes).is_ok() => return Err(Rejection::DuplicateClaim),
                _ => {}
            }
        }
        match jsonwebtoken::decode_header(token) {
            Ok(h) if self.rules.iter().any(|(a, _)| *a == h.alg) => Ok(TokenHeader { alg: h.alg, kid: h.kid }),
            Ok(h) => Err(Rejection::AlgorithmNotAllowed(format!("{:?}", h.alg))),
            Err(_) => Err(explain_bad_header(token)),
        }
    }

    /// Verify `token` against candidate keys; returns the claims.
    pub(crate) fn verify(
        &self,
        token: &str,
        header: &TokenHeader,
        keys: &KeySet,
    ) -> Result<Map<String, Value>, Rejection> {
        let Some((_, rules)) = self.rules.iter().find(|(a, _)| *a == header.alg) else {
            return Err(Rejection::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        };
        if header.alg.family() == jsonwebtoken::AlgorithmFamily::Hmac {
            let key = self.hmac.as_ref().ok_or(Rejection::NoKey)?;
            return decode(token, key, rules).and_then(|_| strict_claims(token));
        }
        let candidates = match keys.candidates(header.kid.as_deref(), header.alg) {
            Candidates::Keys(k) => k,
            Candidates::UnknownKid => return Err(Rejection::UnknownKid),
            Candidates::NoKey => return Err(Rejection::NoKey),
        };
        let mut last = Rejection::BadSignature;
        for key in candidates {
            match decode(token, &key.key, rules) {
                Ok(_) => return strict_claims(token),
                // Only a signature mismatch means "try the next key"; a claim failure is final.
                Err(Rejection::BadSignature) => last = Rejection::BadSignature,
                Err(other) => return Err(other),
            }
        }
        Err(last)
    }

    /// The identity carried by verified claims, with the unix time its cache entry must die.
    /// A forwarded claim whose text cannot be a header value (CR, LF, NUL or another control
    /// character) refuses the token: leaving the header out would let the upstream read the
    /// caller as someone without that claim.
    pub(crate) fn identity(&self, claims: Map<String, Value>) -> Result<(Identity, u64), Rejection> {
        let sub = claims::lookup(&claims, "sub").and_then(claims::scalar_string);
        let roles = match claims::lookup(&claims, &self.roles_claim).map(claims::roles) {
            Some(Ok(r)) => r,
            None => Vec::new(),
            Some(Err(())) => return Err(Rejection::BadClaim(self.roles_claim.clone())),
        };
        let mut forward = Vec::with_capacity(self.forward.len());
        for (claim, header) in &self.forward {
            // The roles the gateway checked are the roles the upstream is told, in one shape.
            let text = if *claim == self.roles_claim {
                (!roles.is_empty()).then(|| roles.join(","))
            } else {
                match claims::lookup(&claims, claim).map(claims::header_text) {
                    Some(Ok(text)) => text,
                    None => None,
                    Some(Err(())) => return Err(Rejection::BadClaim(claim.clone())),
                }
            };
            let Some(text) = text else { continue };
            // UTF-8 is passed as is (obs-text); only control characters are refused.
            match HeaderValue::from_bytes(text.as_bytes()) {
                Ok(v) => forward.push((header.clone(), v)),
                Err(_) => return Err(Rejection::BadClaim(claim.clone())),
            }
        }
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok((
            Identity { scheme: super::Scheme::Jwt, sub, roles, claims, forward, plan: None, tenant: None },
            exp.saturating_add(self.leeway),
        ))
    }
}

/// The base64url-decoded `index`th segment of a compact JWS.
fn segment(token: &str, index: usize) -> Result<Vec<u8>, Rejection> {
    let part = token.split('.').nth(index).ok_or(Rejection::Malformed("token is not a compact JWS"))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| Rejection::Malformed("token segment is not base64url"))
}

/// The claims of a token whose signature and time claims were verified, parsed again with
/// duplicate members refused (jsonwebtoken keeps the last of two).
fn strict_claims(token: &str) -> Result<Map<String, Value>, Rejection> {
    claims::strict_object(&segment(token, 1)?).map_err(|_| Rejection::DuplicateClaim)
}

fn decode(token: &str, key: &DecodingKey, rules: &Validation) -> Result<(), Rejection> {
    jsonwebtoken::decode::<serde::de::IgnoredAny>(token, key, rules).map(|_| ()).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => Rejection::BadSignature,
        ErrorKind::ExpiredSignature => Rejection::Expired,
        ErrorKind::ImmatureSignature => Rejection::NotYetValid,
        ErrorKind::InvalidIssuer => Rejection::WrongIssuer,
        ErrorKind::InvalidAudience => Rejection::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => Rejection::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => Rejection::BadClaim(c.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
            Rejection::AlgorithmNotAllowed("unknown".into())
        }
        _ => Rejection::Malformed("token payload is not valid base64url JSON"),
    })
}

/// A header jsonwebtoken refused: say why in terms a client developer understands.
fn explain_bad_header(token: &str) -> Rejection {
    let part = token.split('.').next().unwrap_or_default();
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')) else {
        return Rejection::Malformed("token header is not base64url");
    };
    let Ok(header) = serde_json::from_slice::<Value>(&bytes) else {
        return Rejection::Malformed("token header is not JSON");
    };
    match header.get("alg").and_then(Value::as_str) {
        Some(alg) if alg.eq_ignore_ascii_case("none") => Rejection::AlgorithmNone,
        Some(alg) => Rejection::AlgorithmNotAllowed(alg.chars().filter(|c| c.is_ascii_graphic()).take(16).collect()),
        None => Rejection::Malformed("token header has no `alg`"),
    }
}
