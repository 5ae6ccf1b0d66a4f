//! The TLS material of a configuration, built from the bytes the config read: each TLS
//! listener's certificates and client CAs, each TLS upstream's CAs and client certificate.
//! Problems are reported under the key of the file they are in, as the loader reports its own.

use super::material::{ca_bundle, client_identity, serving_cert, CaBundle, ClientIdentity, Part, ServingCert};
use super::provider;
use crate::config::{Findings, LoadedFile, TlsListener, UpstreamTls};
use rustls::RootCertStore;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::SystemTime;

/// What a TLS listener serves: its certificates (the first is the default) and the CAs its
/// clients' certificates must chain to (mTLS).
#[derive(Debug, Clone)]
pub(crate) struct ListenerMaterial {
    pub(crate) certs: Vec<ServingCert>,
    pub(crate) client_roots: Option<Arc<RootCertStore>>,
}

impl ListenerMaterial {
    /// Check and load a listener's files at `now`: every pair parses, belongs together and has
    /// not expired (one close to expiry is a warning); the client CA bundle parses.
    pub(crate) fn build(tls: &TlsListener, now: SystemTime, findings: &mut Findings) -> Option<Self> {
        let mut certs = Vec::with_capacity(tls.certs.len());
        for pair in &tls.certs {
            match serving_cert(&pair.cert.bytes, &pair.key.bytes, &provider(), now) {
                Ok(cert) => {
                    if let Some(warning) = cert.expiry_warning(now) {
                        findings.warn(&pair.cert.key, format!("{} {warning}", pair.cert.shown()));
                    }
                    certs.push(cert);
                }
                Err((part, e)) => refuse(findings, which(part, &pair.cert, &pair.key), e),
            }
        }
        // Configured, and whether it loaded.
        let client_roots = tls.client_ca.as_ref().map(|file| ca(file, findings).map(|bundle| bundle.roots));
        if certs.len() != tls.certs.len() || client_roots.as_ref().is_some_and(Option::is_none) {
            return None;
        }
        Some(ListenerMaterial { certs, client_roots: client_roots.flatten() })
    }
}

/// What the gateway needs to connect to a service's TLS backends beyond the plain settings.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamTlsMaterial {
    /// The CAs backends' certificates must chain to, instead of the system's.
    pub(crate) ca: Option<CaBundle>,
    /// The gateway's own certificate for mutual TLS.
    pub(crate) client: Option<ClientIdentity>,
    /// Keeps pooled connections of different TLS settings apart (Pingora's reuse hash does not
    /// include the CA or the client certificate).
    pub(crate) group_key: u64,
}

impl PartialEq for UpstreamTlsMaterial {
    fn eq(&self, other: &Self) -> bool {
        self.group_key == other.group_key
    }
}

impl UpstreamTlsMaterial {
    /// Check and load the CA bundle and the client certificate of `service`'s TLS at `now`.
    pub(crate) fn build(service: &str, tls: &UpstreamTls, now: SystemTime, findings: &mut Findings) -> Option<Self> {
        let ca = tls.ca.as_ref().map(|file| ca(file, findings));
        let client = tls.client.as_ref().map(|pair| {
            client_identity(&pair.cert.bytes, &pair.key.bytes, &provider(), now)
                .map_err(|(part, e)| refuse(findings, which(part, &pair.cert, &pair.key), e))
                .ok()
        });
        // Each: configured, and whether it loaded.
        if ca.as_ref().is_some_and(Option::is_none) || client.as_ref().is_some_and(Option::is_none) {
            return None;
        }
        let (ca, client) = (ca.flatten(), client.flatten());
        // Connections made under other TLS settings (another CA, another client certificate)
        // must not be reused for this service.
        let mut hasher = DefaultHasher::new();
        (service, &tls.sni, tls.verify).hash(&mut hasher);
        ca.as_ref().map(|c| c.fingerprint).hash(&mut hasher);
        client.as_ref().map(|c| c.fingerprint).hash(&mut hasher);
        Some(UpstreamTlsMaterial { ca, client, group_key: hasher.finish() })
    }
}

fn ca(file: &LoadedFile, findings: &mut Findings) -> Option<CaBundle> {
    ca_bundle(&file.bytes).map_err(|e| refuse(findings, file, e)).ok()
}

/// The file of a pair a problem is in.
fn which<'a>(part: Part, cert: &'a LoadedFile, key: &'a LoadedFile) -> &'a LoadedFile {
    match part {
        Part::Cert => cert,
        Part::Key => key,
    }
}

fn refuse(findings: &mut Findings, file: &LoadedFile, why: impl std::fmt::Display) {
    findings.error(&file.key, format!("{} {why}", file.shown()));
}
