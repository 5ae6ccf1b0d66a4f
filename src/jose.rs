//! Parsing JOSE key material: PEM public keys, JWKS documents and algorithm names. A leaf
//! module (it depends on no other part of Siger): `config` (for `siger -t`) and `auth` (at run
//! time and on reload) both call it, so a key that passes `-t` is exactly a key the verifier
//! can use.

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use std::str::FromStr;

/// Why keys could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum KeyError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// OS error text.
        reason: String,
    },
    /// A PEM file holds no public key usable with the allowed algorithms.
    #[error("{0}")]
    Pem(String),
    /// A JWKS document is not usable.
    #[error("{0}")]
    Jwks(String),
    /// The JWKS URL could not be fetched.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// One public key and what it may verify.
pub(crate) struct VerifyKey {
    /// `kid` from the JWKS; `None` for a PEM key.
    pub(crate) kid: Option<String>,
    /// Key family (RSA keys verify RS* and PS*).
    pub(crate) family: AlgorithmFamily,
    /// The JWK's `alg`, when it pins one.
    pub(crate) alg: Option<Algorithm>,
    /// The key.
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey").field("kid", &self.kid).field("family", &self.family).finish()
    }
}

impl VerifyKey {
    /// Whether this key may verify a token signed with `alg`.
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.family == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}

/// Parse a PEM public key, trying the key types of the allowed algorithms.
pub(crate) fn parse_pem(text: &[u8], algorithms: &[Algorithm]) -> Result<VerifyKey, KeyError> {
    let mut families: Vec<AlgorithmFamily> = Vec::new();
    for a in algorithms {
        if a.family() != AlgorithmFamily::Hmac && !families.contains(&a.family()) {
            families.push(a.family());
        }
    }
    for family in &families {
        let key = match family {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(text),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(text),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(text),
            AlgorithmFamily::Hmac => continue,
        };
        if let Ok(key) = key {
            return Ok(VerifyKey { kid: None, family: *family, alg: None, key });
        }
    }
    let names: Vec<&str> = families
        .iter()
        .map(|f| match f {
            AlgorithmFamily::Rsa => "RSA",
            AlgorithmFamily::Ec => "EC",
            AlgorithmFamily::Ed => "Ed25519",
            AlgorithmFamily::Hmac => "HMAC",
        })
        .collect();
    Err(KeyError::Pem(format!("no {} public key in PEM (is it the public key?)", names.join("/"))))
}

/// Parse a JWKS document. Keys that cannot verify signatures (`use: enc`, `oct`, unknown
/// types) are skipped and named in the second list; a document without any usable key is an
/// error.
pub(crate) fn parse_jwks(text: &[u8]) -> Result<(Vec<VerifyKey>, Vec<String>), KeyError> {
    let doc: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| KeyError::Jwks(format!("JWKS is not JSON: {e}")))?;
    let Some(list) = doc.get("keys").and_then(|k| k.as_array()) else {
        return Err(KeyError::Jwks("JWKS has no `keys` array".into()));
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, raw) in list.iter().enumerate() {
        let label = raw.get("kid").and_then(|k| k.as_str()).map_or_else(|| format!("keys[{i}]"), |k| k.to_string());
        match jwk_key(raw) {
            Ok(key) => keys.push(key),
            Err(why) => skipped.push(format!("{label}: {why}")),
        }
    }
    if keys.is_empty() {
        let detail = if skipped.is_empty() { "it is empty".to_string() } else { skipped.join("; ") };
        return Err(KeyError::Jwks(format!("JWKS has no usable signature key ({detail})")));
    }
    Ok((keys, skipped))
}

fn jwk_key(raw: &serde_json::Value) -> Result<VerifyKey, String> {
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("use is `enc`".into());
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
        AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
        // Symmetric keys in a JWKS would let anyone holding the document mint tokens.
        AlgorithmParameters::OctetKey(_) => return Err("symmetric (`oct`) keys are never used".into()),
        _ => return Err("unsupported key type".into()),
    };
    let alg = match &jwk.common.key_algorithm {
        Some(a) => {
            let alg = Algorithm::from_str(&a.to_string()).map_err(|_| format!("`alg` {a} is not a JWS algorithm"))?;
            if alg.family() != family {
                return Err(format!("`alg` {a} does not match the key type"));
            }
            Some(alg)
        }
        None => None,
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("invalid key: {e}"))?;
    Ok(VerifyKey { kid: jwk.common.key_id.clone(), family, alg, key })
}
