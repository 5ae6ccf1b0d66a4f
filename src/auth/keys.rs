//! Verification keys for asymmetric JWTs: a PEM public key (read once at start-up), a JWKS file
//! (re-read every `jwks_refresh`) and a JWKS URL (fetched every `jwks_refresh`). A source that
//! fails to refresh keeps its last good keys. An unknown `kid` may trigger one on-demand refetch,
//! single-flight and cooled down, so a flood of made-up `kid`s costs at most one fetch per
//! cool-down. HMAC secrets never live here: `oct` JWKs are ignored, so a JWKS can never turn an
//! HS-signed token into a valid one.

pub(crate) use crate::jose::{parse_jwks, parse_pem, KeyError, VerifyKey};
use arc_swap::ArcSwap;
use jsonwebtoken::Algorithm;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Shortest time between two on-demand refetches triggered by unknown `kid`s.
pub(crate) const REFETCH_COOLDOWN: Duration = Duration::from_secs(10);
/// Longest wait for a JWKS URL to answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted (a real one is a few KiB).
const MAX_JWKS_BYTES: usize = 1 << 20;

/// The keys in force, by source.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pem: Vec<Arc<VerifyKey>>,
    file: Vec<Arc<VerifyKey>>,
    url: Vec<Arc<VerifyKey>>,
    file_digest: Option<[u8; 32]>,
    url_digest: Option<[u8; 32]>,
    /// Bumped whenever the keys change, so cached verifications made with removed keys die.
    pub(crate) generation: u64,
}

/// Keys that may verify one token.
pub(crate) enum Candidates {
    /// Try these (at most [`MAX_CANDIDATES`]).
    Keys(Vec<Arc<VerifyKey>>),
    /// The token names a `kid` no key has.
    UnknownKid,
    /// No key of the token's algorithm family.
    NoKey,
}

/// Keys tried for a token without `kid` (bounds the work one request can cause).
pub(crate) const MAX_CANDIDATES: usize = 4;

impl KeySet {
    fn all(&self) -> impl Iterator<Item = &Arc<VerifyKey>> {
        self.pem.iter().chain(&self.file).chain(&self.url)
    }

    /// Keys for a token signed with `alg`, naming `kid` or not.
    pub(crate) fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Candidates {
        if let Some(kid) = kid {
            let named: Vec<_> = self.all().filter(|k| k.kid.as_deref() == Some(kid)).cloned().collect();
            if !named.is_empty() {
                let usable: Vec<_> = named.into_iter().filter(|k| k.accepts(alg)).collect();
                return if usable.is_empty() { Candidates::NoKey } else { Candidates::Keys(usable) };
            }
            // A PEM key has no kid; a token naming one is still verified against it.
            let anonymous: Vec<_> =
                self.all().filter(|k| k.kid.is_none() && k.accepts(alg)).take(MAX_CANDIDATES).cloned().collect();
            return if anonymous.is_empty() { Candidates::UnknownKid } else { Candidates::Keys(anonymous) };
        }
        let usable: Vec<_> = self.all().filter(|k| k.accepts(alg)).take(MAX_CANDIDATES).cloned().collect();
        if usable.is_empty() {
            Candidates::NoKey
        } else {
            Candidates::Keys(usable)
        }
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.pem.len() + self.file.len() + self.url.len()
    }
}

/// Where keys come from.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeySources {
    /// PEM public key file.
    pub(crate) public_key_file: Option<PathBuf>,
    /// JWKS file.
    pub(crate) jwks_file: Option<PathBuf>,
    /// JWKS URL.
    pub(crate) jwks_url: Option<String>,
}

/// Result of one refresh: what changed and what failed (failed sources kept their keys).
#[derive(Debug, Default)]
pub(crate) struct Refresh {
    /// The key set changed.
    pub(crate) changed: bool,
    /// Sources that failed.
    pub(crate) errors: Vec<KeyError>,
}

/// The live key set and its refresh machinery.
pub(crate) struct KeyStore {
    sources: KeySources,
    /// sha256 of the PEM file as loaded.
    pem_digest: Option<[u8; 32]>,
    current: ArcSwap<KeySet>,
    url_loaded: AtomicBool,
    /// Serialises refreshes; holds the time of the last on-demand refetch.
    refetch: tokio::sync::Mutex<Option<Instant>>,
    http: OnceLock<Result<reqwest::Client, String>>,
    generation: AtomicU64,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").field("sources", &self.sources).field("keys", &self.current.load().len()).finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError::Read { path: path.display().to_string(), reason: e.to_string() })
}

impl KeyStore {
    /// Load the PEM key and the JWKS file now (start-up); the URL is fetched by [`Self::refresh`].
    pub(crate) fn new(sources: KeySources, algorithms: &[Algorithm]) -> Result<Self, KeyError> {
        let mut set = KeySet::default();
        let mut pem_digest = None;
        if let Some(path) = &sources.public_key_file {
            let text = read(path)?;
            let key = parse_pem(&text, algorithms).map_err(|e| KeyError::Pem(format!("{}: {e}", path.display())))?;
            set.pem.push(Arc::new(key));
            pem_digest = Some(Sha256::digest(&text).into());
        }
        if let Some(path) = &sources.jwks_file {
            let text = read(path)?;
            let (keys, skipped) = parse_jwks(&text).map_err(|e| KeyError::Jwks(format!("{}: {e}", path.display())))?;
            for s in skipped {
                log::warn!("JWKS {}: key skipped: {s}", path.display());
            }
            set.file = keys.into_iter().map(Arc::new).collect();
            set.file_digest = Some(Sha256::digest(&text).into());
        }
        Ok(KeyStore {
            pem_digest,
            url_loaded: AtomicBool::new(sources.jwks_url.is_none()),
            sources,
            current: ArcSwap::from_pointee(set),
            refetch: tokio::sync::Mutex::new(None),
            http: OnceLock::new(),
            generation: AtomicU64::new(0),
        })
    }

    /// The keys in force.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// The JWKS URL, when one is configured.
    pub(crate) fn url(&self) -> Option<&String> {
        self.sources.jwks_url.as_ref()
    }

    /// sha256 of `path` as these keys were read from it (the PEM file or the JWKS file).
    pub(crate) fn file_digest(&self, path: &Path) -> Option<[u8; 32]> {
        if self.sources.public_key_file.as_deref() == Some(path) {
            self.pem_digest
        } else if self.sources.jwks_file.as_deref() == Some(path) {
            self.current().file_digest
        } else {
            None
        }
    }

    /// Take over the keys `previous` fetched from the same JWKS URL (a reload rebuilt the
    /// store for other reasons): no request waits for a refetch.
    pub(crate) fn adopt_url_keys(&self, previous: &KeyStore) {
        if self.sources.jwks_url.is_none() || self.sources.jwks_url != previous.sources.jwks_url {
            return;
        }
        let theirs = previous.current();
        let mine = self.current.load_full();
        let next = KeySet {
            pem: mine.pem.clone(),
            file: mine.file.clone(),
            url: theirs.url.clone(),
            file_digest: mine.file_digest,
            url_digest: theirs.url_digest,
            generation: self.generation.fetch_add(1, Ordering::AcqRel) + 1,
        };
        self.current.store(Arc::new(next));
        self.url_loaded.store(previous.url_loaded(), Ordering::Release);
    }

    /// Whether some source is re-read periodically.
    pub(crate) fn has_dynamic_source(&self) -> bool {
        self.sources.jwks_file.is_some() || self.sources.jwks_url.is_some()
    }

    /// False until a configured JWKS URL has answered once.
    pub(crate) fn url_loaded(&self) -> bool {
        self.url_loaded.load(Ordering::Acquire)
    }

    fn client(&self) -> Result<&reqwest::Client, KeyError> {
        let url = self.sources.jwks_url.clone().unwrap_or_default();
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .connect_timeout(FETCH_TIMEOUT)
                    // Fetches are minutes apart; an idle pooled connection would only go stale.
                    .pool_max_idle_per_host(0)
                    // Keys come from the configured URL only: a redirect could move an https URL
                    // to plain http or to another host.
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("siger/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|reason| KeyError::Fetch { url, reason: reason.clone() })
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, KeyError> {
        let err = |reason: String| KeyError::Fetch { url: url.to_string(), reason };
        let mut resp = self.client()?.get(url).send().await.map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("status {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| err(e.to_string()))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(err(format!("document larger than {MAX_JWKS_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Re-read the JWKS file and fetch the JWKS URL. Sources that fail keep their keys.
    pub(crate) async fn refresh(&self) -> Refresh {
        let _flight = self.refetch.lock().await;
        self.refresh_locked().await
    }

    async fn refresh_locked(&self) -> Refresh {
        let mut out = Refresh::default();
        let mut file = None;
        if let Some(path) = &self.sources.jwks_file {
            match read(path).and_then(|text| {
                let digest: [u8; 32] = Sha256::digest(&text).into();
                if self.current().file_digest == Some(digest) {
                    return Ok(None);
                }
                let (keys, skipped) =
                    parse_jwks(&text).map_err(|e| KeyError::Jwks(format!("{}: {e}", path.display())))?;
                for s in skipped {
                    log::warn!("JWKS {}: key skipped: {s}", path.display());
                }
                Ok(Some((keys, digest)))
            }) {
                Ok(new) => file = new,
                Err(e) => out.errors.push(e),
            }
        }
        let mut url_keys = None;
        if let Some(url) = &self.sources.jwks_url {
            match self.fetch(url).await {
                Ok(text) => {
                    self.url_loaded.store(true, Ordering::Release);
                    let digest: [u8; 32] = Sha256::digest(&text).into();
                    if self.current().url_digest != Some(digest) {
                        match parse_jwks(&text) {
                            Ok((keys, skipped)) => {
                                for s in skipped {
                                    log::warn!("JWKS {url}: key skipped: {s}");
                                }
                                url_keys = Some((keys, digest));
                            }
                            Err(e) => out.errors.push(KeyError::Jwks(format!("{url}: {e}"))),
                        }
                    }
                }
                Err(e) => out.errors.push(e),
            }
        }
        if file.is_none() && url_keys.is_none() {
            return out;
        }
        let old = self.current.load_full();
        let mut next = KeySet {
            pem: old.pem.clone(),
            file: old.file.clone(),
            url: old.url.clone(),
            file_digest: old.file_digest,
            url_digest: old.url_digest,
            generation: self.generation.fetch_add(1, Ordering::AcqRel) + 1,
        };
        if let Some((keys, digest)) = file {
            next.file = keys.into_iter().map(Arc::new).collect();
            next.file_digest = Some(digest);
        }
        if let Some((keys, digest)) = url_keys {
            next.url = keys.into_iter().map(Arc::new).collect();
            next.url_digest = Some(digest);
        }
        log::info!("verification keys updated: {} keys (generation {})", next.len(), next.generation);
        self.current.store(Arc::new(next));
        out.changed = true;
        out
    }

    /// A token named a `kid` we do not know: refresh once, unless another request is already
    /// doing it (then wait for that one) or the last on-demand refresh is younger than
    /// [`REFETCH_COOLDOWN`]. Returns the refresh outcome, or `None` when none was done.
    pub(crate) async fn refetch_for_unknown_kid(&self, kid: &str) -> Option<Refresh> {
        if !self.has_dynamic_source() {
            return None;
        }
        let mut last = self.refetch.lock().await;
        // Someone else's refresh may have brought the key while we waited.
        if self.current().all().any(|k| k.kid.as_deref() == Some(kid)) {
            return Some(Refresh { changed: true, errors: Vec::new() });
        }
        if last.is_some_and(|t| t.elapsed() < REFETCH_COOLDOWN) {
            return None;
        }
        *last = Some(Instant::now());
        Some(self.refresh_locked().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC_JWK: &str = r#"{"kty":"EC","crv":"P-256","kid":"ec1","alg":"ES256","use":"sig",
        "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}"#;

    #[test]
    fn jwks_skips_unusable_keys_and_rejects_empty_sets() {
        let doc = format!(
            r#"{{"keys":[{EC_JWK},{{"kty":"oct","k":"c2VjcmV0","kid":"h"}},{{"kty":"EC","use":"enc","crv":"P-256","x":"a","y":"b"}}]}}"#
        );
        let (keys, skipped) = parse_jwks(doc.as_bytes()).expect("one usable key");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ec1"));
        assert_eq!(keys[0].alg, Some(Algorithm::ES256));
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].contains("oct"));
        assert!(parse_jwks(br#"{"keys":[]}"#).is_err());
        assert!(parse_jwks(br#"{"nokeys":1}"#).is_err());
        assert!(parse_jwks(b"not json").is_err());
    }

    #[test]
    fn candidates_by_kid_and_family() {
        let (keys, _) = parse_jwks(format!(r#"{{"keys":[{EC_JWK}]}}"#).as_bytes()).expect("jwks");
        let set = KeySet { file: keys.into_iter().map(Arc::new).collect(), ..KeySet::default() };
        assert!(matches!(set.candidates(Some("ec1"), Algorithm::ES256), Candidates::Keys(k) if k.len() == 1));
        assert!(matches!(set.candidates(Some("other"), Algorithm::ES256), Candidates::UnknownKid));
        assert!(matches!(set.candidates(Some("ec1"), Algorithm::ES384), Candidates::NoKey), "alg pinned by the JWK");
        assert!(matches!(set.candidates(None, Algorithm::RS256), Candidates::NoKey));
        assert!(matches!(set.candidates(None, Algorithm::ES256), Candidates::Keys(_)));
    }
}
