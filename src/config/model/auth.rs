//! `auth`: JWT verification settings, API keys, Telegram initData, and the credential schemes
//! routes accept.

use super::LoadedFile;
use http::HeaderName;
use std::path::PathBuf;
use std::time::Duration;

/// The header that carries an API key's consumer upstream; only the gateway sets it.
pub const CONSUMER_HEADER: HeaderName = HeaderName::from_static("x-consumer");

/// JWT algorithms a deployment may pin.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    /// Parse the JOSE name (`HS256`, `EdDSA`, …).
    pub fn parse(name: &str) -> Option<Self> {
        use JwtAlgorithm::*;
        Some(match name {
            "HS256" => HS256,
            "HS384" => HS384,
            "HS512" => HS512,
            "RS256" => RS256,
            "RS384" => RS384,
            "RS512" => RS512,
            "PS256" => PS256,
            "PS384" => PS384,
            "PS512" => PS512,
            "ES256" => ES256,
            "ES384" => ES384,
            "EdDSA" => EdDSA,
            _ => return None,
        })
    }

    /// The same algorithm as jsonwebtoken names it.
    pub fn jose(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm;
        match self {
            Self::HS256 => Algorithm::HS256,
            Self::HS384 => Algorithm::HS384,
            Self::HS512 => Algorithm::HS512,
            Self::RS256 => Algorithm::RS256,
            Self::RS384 => Algorithm::RS384,
            Self::RS512 => Algorithm::RS512,
            Self::PS256 => Algorithm::PS256,
            Self::PS384 => Algorithm::PS384,
            Self::PS512 => Algorithm::PS512,
            Self::ES256 => Algorithm::ES256,
            Self::ES384 => Algorithm::ES384,
            Self::EdDSA => Algorithm::EdDSA,
        }
    }

    /// HMAC algorithms use the shared secret; the others a public key.
    pub fn is_hmac(self) -> bool {
        matches!(self, JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512)
    }
}

/// JWT verification settings.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSettings {
    /// Allowed algorithms; anything else, `none` included, is rejected.
    pub algorithms: Vec<JwtAlgorithm>,
    /// HMAC secret.
    pub secret: Option<String>,
    /// PEM public key for asymmetric algorithms.
    pub public_key_file: Option<PathBuf>,
    /// Local JWKS file (re-read every `jwks_refresh`).
    pub jwks_file: Option<PathBuf>,
    /// Remote JWKS URL.
    pub jwks_url: Option<String>,
    /// How often JWKS sources are refreshed.
    pub jwks_refresh: Duration,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Dotted path of the roles claim.
    pub roles_claim: String,
    /// Claim → upstream header; client-sent copies are always removed.
    pub forward: Vec<(String, HeaderName)>,
    /// Entries in the validation cache.
    pub cache_size: usize,
    /// Longest accepted token.
    pub max_token_bytes: usize,
}

/// `auth.api_keys`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeySettings {
    /// The request header carrying the key.
    pub header: HeaderName,
    /// The keys file, as read (the `auth` module parses it).
    pub file: LoadedFile,
}

/// `auth.telegram`: Telegram Mini App initData.
#[derive(Clone, PartialEq)]
pub struct TelegramSettings {
    /// The bot token (`<bot id>:<secret>`), from which the verifier derives its key.
    pub bot_token: String,
    /// Oldest `auth_date` accepted.
    pub max_age: Duration,
    /// Roles every Telegram user gets.
    pub roles: Vec<String>,
    /// Claims sent upstream as headers (claim name → header).
    pub forward: Vec<(String, HeaderName)>,
}

impl std::fmt::Debug for TelegramSettings {
    // The token is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramSettings")
            .field("max_age", &self.max_age)
            .field("roles", &self.roles)
            .field("forward", &self.forward)
            .finish_non_exhaustive()
    }
}

/// A way to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// `Authorization: Bearer <JWT>`.
    #[default]
    Jwt,
    /// The API key header.
    ApiKey,
    /// `Authorization: tma <initData>`.
    Telegram,
}

impl Scheme {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Jwt => "jwt",
            Scheme::ApiKey => "api_key",
            Scheme::Telegram => "telegram",
        }
    }

    /// From the config spelling.
    pub fn from_name(name: &str) -> Option<Self> {
        [Scheme::Jwt, Scheme::ApiKey, Scheme::Telegram].into_iter().find(|s| s.name() == name)
    }
}

/// Authentication requirement of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid token is required.
    Required,
    /// Anonymous allowed; a present token must be valid.
    Optional,
    /// No authentication.
    Public,
}
