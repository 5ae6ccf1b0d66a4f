//! PEM text → checked TLS material: a serving certificate with its key, a CA bundle, a client
//! identity for upstream mTLS. Everything is parsed and cross-checked here, once, so nothing
//! handed to Pingora or rustls later can make them panic (Pingora's `CertKey::new`,
//! `WrappedX509::new` and `TlsSettings::build` all panic on bad bytes).

use pingora::protocols::tls::CaType;
use pingora::utils::tls::{CertKey, WrappedX509};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Certificates closer than this to expiry draw a warning from `-t`, reloads and the log.
pub(crate) const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Why PEM text was refused: each message completes "`<file>` …".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum MaterialError {
    /// No `CERTIFICATE` section.
    #[error("holds no PEM certificate")]
    NoCertificate,
    /// A `CERTIFICATE` section that does not decode or is not X.509.
    #[error("holds a certificate that cannot be parsed: {0}")]
    BadCertificate(String),
    /// No usable private key section.
    #[error("holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey,
    /// A key that rustls cannot use for signing.
    #[error("holds a private key that cannot be used: {0}")]
    BadKey(String),
    /// The key is not the certificate's.
    #[error("does not match the certificate's public key")]
    KeyMismatch,
    /// Past `notAfter`.
    #[error("expired on {0}")]
    Expired(String),
}

/// A certificate chain and key ready to serve, with what the gateway reports about it.
#[derive(Debug, Clone)]
pub struct ServingCert {
    /// What rustls signs handshakes with.
    pub(crate) key: Arc<CertifiedKey>,
    /// DNS names the leaf is valid for, lower-case (`*.example.com` kept as written); the
    /// subject's common name when there is no SAN extension.
    pub(crate) names: Vec<String>,
    /// The leaf's subject, as `CN=…, O=…`.
    pub(crate) subject: String,
    /// The leaf's `notAfter`, in seconds since the Unix epoch.
    pub(crate) not_after: i64,
    /// SHA-256 of the certificate and key text: equal material, equal fingerprint.
    pub(crate) fingerprint: [u8; 32],
}

impl PartialEq for ServingCert {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl ServingCert {
    /// Seconds until `notAfter` from `now` (negative once expired).
    pub(crate) fn seconds_left(&self, now: SystemTime) -> i64 {
        self.not_after - unix_seconds(now)
    }

    /// A warning when the certificate expires within [`EXPIRY_WARNING`] of `now`.
    pub(crate) fn expiry_warning(&self, now: SystemTime) -> Option<String> {
        let left = self.seconds_left(now);
        (left < EXPIRY_WARNING.as_secs() as i64)
            .then(|| format!("expires on {} (in {} days)", date_text(self.not_after), left / 86_400))
    }
}

/// Parse a certificate chain (leaf first) and its private key, check that they belong
/// together and that the leaf is not expired at `now`.
pub(crate) fn serving_cert(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &rustls::crypto::CryptoProvider,
    now: SystemTime,
) -> Result<ServingCert, (Part, MaterialError)> {
    let chain = certificates(cert_pem).map_err(|e| (Part::Cert, e))?;
    let leaf = parse(&chain[0]).map_err(|e| (Part::Cert, e))?;
    let names = dns_names(&leaf);
    let subject = leaf.subject().to_string();
    let not_after = leaf.validity().not_after.timestamp();
    drop(leaf);
    let key = private_key(key_pem).map_err(|e| (Part::Key, e))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => (Part::Key, MaterialError::KeyMismatch),
        other => (Part::Key, MaterialError::BadKey(other.to_string())),
    })?;
    if not_after < unix_seconds(now) {
        return Err((Part::Cert, MaterialError::Expired(date_text(not_after))));
    }
    let fingerprint = Sha256::new().chain_update(cert_pem).chain_update(key_pem).finalize().into();
    Ok(ServingCert { key: Arc::new(certified), names, subject, not_after, fingerprint })
}

/// Which file of a pair a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The certificate (chain) file.
    Cert,
    /// The private key file.
    Key,
}

/// Trust anchors from a PEM bundle: for verifying client certificates (as a rustls root store)
/// and upstream servers (as Pingora's CA list).
#[derive(Clone)]
pub struct CaBundle {
    /// The anchors for rustls verifiers.
    pub(crate) roots: Arc<RootCertStore>,
    /// The same certificates, parsed, for Pingora's upstream connector.
    pub(crate) pingora: Arc<CaType>,
    /// SHA-256 of the PEM text.
    pub(crate) fingerprint: [u8; 32],
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle").field("anchors", &self.roots.len()).finish()
    }
}

impl PartialEq for CaBundle {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

/// Parse a bundle of one or more CA certificates.
pub(crate) fn ca_bundle(pem: &[u8]) -> Result<CaBundle, MaterialError> {
    let certs = certificates(pem)?;
    let mut roots = RootCertStore::empty();
    let mut wrapped = Vec::with_capacity(certs.len());
    for cert in certs {
        parse(&cert)?;
        roots.add(cert.clone()).map_err(|e| MaterialError::BadCertificate(e.to_string()))?;
        let parsed = WrappedX509::try_new(cert.to_vec(), |der| {
            x509_parser::parse_x509_certificate(der).map(|(_, c)| c).map_err(|e| e.to_string())
        })
        .map_err(MaterialError::BadCertificate)?;
        wrapped.push(parsed);
    }
    Ok(CaBundle {
        roots: Arc::new(roots),
        pingora: Arc::from(wrapped.into_boxed_slice()),
        fingerprint: Sha256::digest(pem).into(),
    })
}

/// The gateway's own certificate and key for mutual TLS to an upstream.
#[derive(Clone)]
pub struct ClientIdentity {
    /// What Pingora's connector presents.
    pub(crate) cert_key: Arc<CertKey>,
    /// The leaf's subject (for logs and `GET /config`).
    pub(crate) subject: String,
    /// SHA-256 of the certificate and key text.
    pub(crate) fingerprint: [u8; 32],
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").field("subject", &self.subject).finish()
    }
}

impl PartialEq for ClientIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

/// A client certificate and key, checked as a serving pair is (parse, match, not expired).
pub(crate) fn client_identity(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &rustls::crypto::CryptoProvider,
    now: SystemTime,
) -> Result<ClientIdentity, (Part, MaterialError)> {
    let checked = serving_cert(cert_pem, key_pem, provider, now)?;
    // Pingora re-parses both: the key from DER with format detection, every certificate
    // with x509-parser. Both succeeded above, so `CertKey::new` cannot panic.
    let chain: Vec<Vec<u8>> = checked.key.cert.iter().map(|c| c.to_vec()).collect();
    let key = private_key(key_pem).map_err(|e| (Part::Key, e))?;
    let key_der = key.secret_der().to_vec();
    if PrivateKeyDer::try_from(key_der.clone()).is_err() {
        return Err((Part::Key, MaterialError::BadKey("unrecognised key encoding".into())));
    }
    Ok(ClientIdentity {
        cert_key: Arc::new(CertKey::new(chain, key_der)),
        subject: checked.subject,
        fingerprint: checked.fingerprint,
    })
}

/// Every `CERTIFICATE` section, each checked to be X.509 (at least one).
pub(crate) fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(pem) {
        let cert = item.map_err(|e| MaterialError::BadCertificate(e.to_string()))?;
        parse(&cert)?;
        out.push(cert);
    }
    if out.is_empty() {
        return Err(MaterialError::NoCertificate);
    }
    Ok(out)
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, MaterialError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => MaterialError::NoKey,
        other => MaterialError::BadKey(other.to_string()),
    })
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<x509_parser::certificate::X509Certificate<'a>, MaterialError> {
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(MaterialError::BadCertificate("trailing bytes after the certificate".into())),
        Err(_) => Err(MaterialError::BadCertificate("the DER inside is not an X.509 certificate".into())),
    }
}

/// The DNS names a leaf serves: its SAN DNS entries, else its common name.
fn dns_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase));
    }
    names.dedup();
    names
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// `2027-03-01 12:00:00 UTC`.
fn date_text(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC")).ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &[u8] = include_bytes!("../../tests/fixtures/tls/ca.pem");
    const CERT: &[u8] = include_bytes!("../../tests/fixtures/tls/a.pem");
    const KEY: &[u8] = include_bytes!("../../tests/fixtures/tls/a.key");
    const CLIENT: &[u8] = include_bytes!("../../tests/fixtures/tls/client.pem");
    const CLIENT_KEY: &[u8] = include_bytes!("../../tests/fixtures/tls/client.key");
    const OTHER_KEY: &[u8] = include_bytes!("../../tests/fixtures/tls/other.key");
    const GARBAGE: &[u8] = include_bytes!("../../tests/fixtures/tls/garbage.pem");

    fn load(cert: &[u8], key: &[u8], now: SystemTime) -> Result<ServingCert, (Part, MaterialError)> {
        serving_cert(cert, key, &rustls::crypto::ring::default_provider(), now)
    }

    #[test]
    fn a_matching_pair_loads_with_its_names_and_expiry() {
        let now = SystemTime::now();
        let cert = load(CERT, KEY, now).expect("valid pair");
        assert_eq!(cert.names, ["a.test", "www.a.test", "*.wild.test"]);
        assert_eq!(cert.subject, "CN=a.test, O=Siger Tests");
        assert!(cert.seconds_left(now) > 50 * 365 * 86_400);
        assert_eq!(cert.expiry_warning(now), None);
        let close = UNIX_EPOCH + Duration::from_secs((cert.not_after - 3 * 86_400) as u64);
        assert!(
            cert.expiry_warning(close).is_some_and(|w| w.contains("in 3 days")),
            "{:?}",
            cert.expiry_warning(close)
        );
        assert_eq!(load(CERT, KEY, now), Ok(cert), "same material, same fingerprint");
    }

    #[test]
    fn broken_material_is_refused_naming_the_file_at_fault() {
        let now = SystemTime::now();
        assert_eq!(load(CERT, OTHER_KEY, now).err(), Some((Part::Key, MaterialError::KeyMismatch)));
        assert_eq!(load(KEY, KEY, now).err(), Some((Part::Cert, MaterialError::NoCertificate)));
        assert!(matches!(load(GARBAGE, KEY, now), Err((Part::Cert, MaterialError::BadCertificate(_)))));
        assert_eq!(load(CERT, CERT, now).err(), Some((Part::Key, MaterialError::NoKey)));
        // Half a file, as a copy in progress leaves it.
        assert!(load(&CERT[..CERT.len() / 2], KEY, now).is_err());
        assert!(load(CERT, &KEY[..KEY.len() / 2], now).is_err());
        let after = UNIX_EPOCH + Duration::from_secs(5_000_000_000);
        assert!(
            matches!(load(CERT, KEY, after), Err((Part::Cert, MaterialError::Expired(d))) if d.starts_with("2126-"))
        );
    }

    #[test]
    fn ca_bundles_and_client_identities_load() {
        let ca = ca_bundle(CA).expect("ca");
        assert_eq!(ca.roots.len(), 1);
        assert_eq!(ca.pingora.len(), 1);
        assert!(ca_bundle(KEY).is_err());
        assert!(ca_bundle(GARBAGE).is_err());
        let provider = rustls::crypto::ring::default_provider();
        let id = client_identity(CLIENT, CLIENT_KEY, &provider, SystemTime::now()).expect("client");
        assert_eq!(id.subject, "CN=gateway, O=Siger Tests");
        assert!(client_identity(CLIENT, KEY, &provider, SystemTime::now()).is_err());
    }
}
