//! Edge authentication (ARCHITECTURE.md §6 "Auth"): the bearer token of a request becomes a
//! verified [`Identity`] or a typed [`AuthError`]; routes ask for `required`, `optional` or no
//! (`public`) authentication and may demand roles. The identity carries the claim headers sent
//! upstream. HTTP answers are not made here: `errors` maps [`AuthError`] to 401/403/503.
//!
//! Cost per request: a hot token is one SHA-256 and one cache lookup; only a token not seen
//! before (or whose keys changed) pays for signature verification.

pub mod api_keys;
mod cache;
mod claims;
pub(crate) mod credentials;
mod jwt;
pub(crate) mod keys;
pub mod mint;
pub mod telegram;
pub(crate) mod token;

pub use credentials::Scheme;

use crate::config::{AuthMode, JwtSettings};
use crate::errors::GatewayError;
use crate::observability::{AuthMetrics, Metrics};
use async_trait::async_trait;
use cache::{TokenCache, TokenDigest};
use http::{HeaderMap, HeaderName, HeaderValue};
use keys::{KeySources, KeyStore, Refresh};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Who a verified token says the caller is.
#[derive(Debug, Default)]
pub(crate) struct Identity {
    /// How the caller authenticated: a JWT `sub`, an API-key consumer and a Telegram user id
    /// are names in different namespaces.
    pub(crate) scheme: Scheme,
    /// `sub` claim (the consumer of an API key, the user id of Telegram initData).
    pub(crate) sub: Option<String>,
    /// Roles from `roles_claim`.
    pub(crate) roles: Vec<String>,
    /// All claims (for `claim:<name>` hash keys).
    pub(crate) claims: Map<String, Value>,
    /// Headers sent upstream, from `auth.jwt.forward`.
    pub(crate) forward: Vec<(HeaderName, HeaderValue)>,
    /// The plan the API-key file names for this consumer (docs/plans.md); it wins over a claim.
    pub(crate) plan: Option<Arc<str>>,
    /// The tenant the API-key file names (`$tenant`).
    pub(crate) tenant: Option<Arc<str>>,
}

impl Identity {
    /// A claim as text (dotted paths allowed), e.g. for consistent hashing.
    pub(crate) fn claim_text(&self, name: &str) -> Option<String> {
        claims::lookup(&self.claims, name).and_then(|v| claims::header_text(v).ok().flatten())
    }
}

/// Why a presented token was refused. The text names the failed check, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejection {
    /// Two or more `Authorization` headers.
    #[error("more than one Authorization header")]
    MultipleHeaders,
    /// `Authorization` with another scheme.
    #[error("authorization scheme is not Bearer (or tma)")]
    NotBearer,
    /// An API key that is not in the keys file.
    #[error("unknown API key")]
    UnknownApiKey,
    /// Credentials of two schemes at once.
    #[error("credentials of more than one kind (Authorization and an API key)")]
    SeveralCredentials,
    /// Credentials of a scheme the route does not accept.
    #[error("this route does not accept {0} credentials")]
    SchemeNotAccepted(&'static str),
    /// Over `max_token_bytes`.
    #[error("token larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Not a well-formed compact JWS.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg: none`.
    #[error("unsigned tokens (alg none) are not accepted")]
    AlgorithmNone,
    /// An algorithm the config does not allow.
    #[error("algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    /// The `kid` matches no key, even after a refetch.
    #[error("unknown signing key (kid)")]
    UnknownKid,
    /// No key can verify this algorithm.
    #[error("no key to verify this token")]
    NoKey,
    /// Signature mismatch (tampered token or wrong key).
    #[error("signature verification failed")]
    BadSignature,
    /// `exp` passed (beyond leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` in the future (beyond leeway).
    #[error("token not yet valid (nbf)")]
    NotYetValid,
    /// `iss` differs from the configured issuer.
    #[error("wrong issuer (iss)")]
    WrongIssuer,
    /// `aud` does not include the configured audience.
    #[error("wrong audience (aud)")]
    WrongAudience,
    /// A required claim is absent.
    #[error("missing required claim `{0}`")]
    MissingClaim(String),
    /// A claim has the wrong type, or a forwarded claim cannot be a header value.
    #[error("claim `{0}` has an invalid format")]
    BadClaim(String),
    /// A claim (or header member) appears twice.
    #[error("a claim appears more than once")]
    DuplicateClaim,
    /// The header has `crit`: extensions that must be understood, and none are.
    #[error("critical header extensions (crit) are not supported")]
    CriticalExtension,
}

/// An authentication or authorization failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// No token where one is required.
    #[error("authentication is required")]
    Missing,
    /// A token was presented and refused.
    #[error("{0}")]
    Invalid(#[from] Rejection),
    /// Authenticated but without any of the route's roles.
    #[error("missing a required role")]
    Forbidden,
    /// The JWKS URL has not answered yet, so no asymmetric token can be checked.
    #[error("signing keys are not loaded yet")]
    KeysUnavailable,
}

impl AuthError {
    /// `reason` label of `siger_auth_failures_total`.
    pub(crate) fn metric_reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Invalid(Rejection::Expired) => "expired",
            AuthError::Invalid(_) => "invalid_token",
            AuthError::Forbidden => "forbidden",
            AuthError::KeysUnavailable => "jwks_refresh",
        }
    }
}

impl From<AuthError> for GatewayError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => GatewayError::MissingToken,
            AuthError::Invalid(r) => GatewayError::InvalidToken { reason: r.to_string() },
            AuthError::Forbidden => GatewayError::Forbidden(e.to_string()),
            AuthError::KeysUnavailable => {
                GatewayError::Unavailable { message: "signing keys are not loaded yet".into(), retry_after: 1 }
            }
        }
    }
}

/// Any of `required` roles (none required = allowed). An anonymous caller on a route with
/// roles is asked to authenticate rather than refused.
pub(crate) fn authorize(identity: Option<&Identity>, required: &[String]) -> Result<(), AuthError> {
    if required.is_empty() {
        return Ok(());
    }
    match identity {
        None => Err(AuthError::Missing),
        Some(id) if id.roles.iter().any(|r| required.contains(r)) => Ok(()),
        Some(_) => Err(AuthError::Forbidden),
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Token verification with its keys and cache.
#[derive(Debug)]
pub(crate) struct Authenticator {
    verifier: jwt::Verifier,
    keys: Option<KeyStore>,
    cache: TokenCache,
    max_token_bytes: usize,
    refresh_every: Duration,
}

impl Authenticator {
    /// Build from validated settings; loads the PEM key and JWKS file now.
    pub(crate) fn new(s: &JwtSettings) -> Result<Self, keys::KeyError> {
        let verifier = jwt::Verifier::new(s);
        let asymmetric = s.algorithms.iter().any(|a| !a.is_hmac());
        let keys = if asymmetric {
            let sources = KeySources {
                public_key_file: s.public_key_file.clone(),
                jwks_file: s.jwks_file.clone(),
                jwks_url: s.jwks_url.clone(),
            };
            Some(KeyStore::new(sources, &verifier.algorithms())?)
        } else {
            None
        };
        Ok(Authenticator {
            verifier,
            keys,
            cache: TokenCache::new(s.cache_size),
            max_token_bytes: s.max_token_bytes,
            refresh_every: s.jwks_refresh,
        })
    }

    /// The key store, when asymmetric algorithms are allowed.
    pub(crate) fn keys(&self) -> Option<&KeyStore> {
        self.keys.as_ref()
    }

    /// sha256 of a key file as this authenticator read it (`None` for files it does not use).
    pub(crate) fn file_digest(&self, path: &std::path::Path) -> Option<[u8; 32]> {
        self.keys.as_ref().and_then(|k| k.file_digest(path))
    }

    /// Problems that make the gateway not ready.
    pub(crate) fn readiness_problems(&self) -> Vec<String> {
        match &self.keys {
            Some(k) if !k.url_loaded() => vec!["auth: JWKS URL not loaded yet".into()],
            _ => Vec::new(),
        }
    }

    /// Authenticate a request for a route in `mode`. `Ok(None)` = anonymous (public routes, or
    /// optional ones without a token).
    pub(crate) async fn authenticate(
        &self,
        headers: &HeaderMap,
        mode: AuthMode,
        metrics: &Metrics,
    ) -> Result<Option<Arc<Identity>>, AuthError> {
        if mode == AuthMode::Public {
            return Ok(None);
        }
        let token = match token::bearer(headers, self.max_token_bytes)? {
            Some(t) => t,
            None if mode == AuthMode::Optional => return Ok(None),
            None => return Err(AuthError::Missing),
        };
        let digest: TokenDigest = Sha256::digest(token.as_bytes()).into();
        let now = now_secs();
        let generation = self.keys.as_ref().map_or(0, |k| k.current().generation);
        if let Some(identity) = self.cache.get(&digest, now, generation) {
            return Ok(Some(identity));
        }
        let header = self.verifier.header(token)?;
        let mut keyset = self.keys.as_ref().map(|k| k.current());
        let empty = keys::KeySet::default();
        let result = self.verifier.verify(token, &header, keyset.as_deref().map_or(&empty, |k| k.as_ref()));
        let claims = match (result, &self.keys, &header.kid) {
            (Err(Rejection::UnknownKid), Some(store), Some(kid)) => match store.refetch_for_unknown_kid(kid).await {
                Some(refresh) => {
                    report_refresh(&refresh, &metrics.auth);
                    keyset = Some(store.current());
                    self.verifier.verify(token, &header, keyset.as_deref().map_or(&empty, |k| k.as_ref()))
                }
                None => Err(Rejection::UnknownKid),
            },
            (result, _, _) => result,
        };
        let claims = match claims {
            Ok(c) => c,
            Err(Rejection::UnknownKid | Rejection::NoKey) if self.keys.as_ref().is_some_and(|k| !k.url_loaded()) => {
                return Err(AuthError::KeysUnavailable)
            }
            Err(r) => return Err(r.into()),
        };
        let (identity, expires_at) = self.verifier.identity(claims)?;
        let identity = Arc::new(identity);
        let generation = keyset.map_or(0, |k| k.generation);
        self.cache.insert(digest, identity.clone(), expires_at, generation);
        Ok(Some(identity))
    }
}

/// The verifiers of one configuration generation, by scheme.
pub(crate) struct Verifiers<'a> {
    /// JWT (`None` when not configured, or when its keys failed to load at start-up).
    pub(crate) jwt: Option<&'a Authenticator>,
    /// `auth.api_keys`: the header that carries a key, and the table of the keys file.
    pub(crate) api_keys: Option<(&'a HeaderName, &'a api_keys::ApiKeyTable)>,
    /// `auth.telegram`.
    pub(crate) telegram: Option<&'a telegram::TelegramVerifier>,
}

/// Authenticate a request on a route that accepts `schemes` in `mode` (not public): the one
/// credential the request presents, verified by its scheme; `Ok(None)` for an optional route
/// without credentials.
pub(crate) async fn authenticate(
    verifiers: &Verifiers<'_>,
    schemes: &[Scheme],
    mode: AuthMode,
    headers: &HeaderMap,
    metrics: &Metrics,
) -> Result<Option<Arc<Identity>>, AuthError> {
    let api_key_header = verifiers.api_keys.map(|(header, _)| header);
    let (scheme, data) = match credentials::presented(headers, api_key_header)? {
        credentials::Presented::Nothing if mode == AuthMode::Optional => return Ok(None),
        credentials::Presented::Nothing => return Err(AuthError::Missing),
        credentials::Presented::One(scheme, data) => (scheme, data),
    };
    if !schemes.contains(&scheme) {
        return Err(Rejection::SchemeNotAccepted(scheme.name()).into());
    }
    match scheme {
        Scheme::Jwt => match verifiers.jwt {
            Some(jwt) => jwt.authenticate(headers, mode, metrics).await,
            None => Err(AuthError::KeysUnavailable),
        },
        Scheme::ApiKey => match verifiers.api_keys {
            Some((header, table)) => Ok(table.authenticate(headers, header)?),
            None => Err(AuthError::Missing),
        },
        Scheme::Telegram => match verifiers.telegram {
            Some(tg) => Ok(Some(Arc::new(tg.verify(data, now_secs())?))),
            None => Err(AuthError::Missing),
        },
    }
}

fn report_refresh(refresh: &Refresh, metrics: &AuthMetrics) {
    for e in &refresh.errors {
        log::warn!("JWKS refresh failed (keeping the last good keys): {e}");
        metrics.failure("jwks_refresh");
    }
}

/// Re-reads the JWKS file and fetches the JWKS URL every `jwks_refresh` (sooner while the URL
/// has never answered), for the authenticator of the configuration in force (a reload may
/// replace it). Runs after Pingora's daemon fork, like every client.
pub(crate) struct KeyRefreshService {
    /// The authenticator of the configuration in force (the runtime sends each new one).
    current: watch::Receiver<Option<Arc<Authenticator>>>,
    metrics: AuthMetrics,
}

impl KeyRefreshService {
    /// Refresh the keys of whichever authenticator `current` holds.
    pub(crate) fn new(current: watch::Receiver<Option<Arc<Authenticator>>>, metrics: AuthMetrics) -> Self {
        KeyRefreshService { current, metrics }
    }
}

#[async_trait]
impl BackgroundService for KeyRefreshService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // The file was read at start-up; the URL is fetched right away.
        let mut delay = Duration::ZERO;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
            let current = self.current.borrow().clone();
            let Some(auth) = current.as_ref() else {
                delay = Duration::from_secs(5);
                continue;
            };
            let Some(store) = auth.keys().filter(|k| k.has_dynamic_source()) else {
                delay = Duration::from_secs(5);
                continue;
            };
            if delay > Duration::ZERO || !store.url_loaded() {
                let refresh = store.refresh().await;
                report_refresh(&refresh, &self.metrics);
            }
            delay =
                if store.url_loaded() { auth.refresh_every } else { auth.refresh_every.min(Duration::from_secs(2)) };
        }
    }
}

#[cfg(test)]
mod tests;
