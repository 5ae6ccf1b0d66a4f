//! Client-certificate verification (mTLS) that a reload can turn on, off or point at another
//! CA: Pingora takes one verifier per listener at start, so the listener always gets this one
//! and it delegates to whatever the current configuration says.

use super::ListenerCounters;
use arc_swap::ArcSwapOption;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// The client-certificate verifier of one TLS listener.
#[derive(Debug)]
pub(crate) struct ClientAuth {
    current: ArcSwapOption<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
    counters: Arc<ListenerCounters>,
}

impl ClientAuth {
    pub(crate) fn new(provider: Arc<CryptoProvider>, counters: Arc<ListenerCounters>) -> Self {
        ClientAuth { current: ArcSwapOption::empty(), provider, counters }
    }

    /// Require certificates issued by `roots` from the next handshake on (`None`: ask for none).
    pub(crate) fn require(&self, roots: Option<Arc<RootCertStore>>) -> Result<(), String> {
        let verifier = match roots {
            None => None,
            Some(roots) => Some(Arc::new(
                WebPkiClientVerifier::builder_with_provider(roots, self.provider.clone())
                    .build()
                    .map_err(|e| e.to_string())?,
            )),
        };
        self.current.store(verifier);
        Ok(())
    }
}

impl ClientCertVerifier for ClientAuth {
    fn offer_client_auth(&self) -> bool {
        self.current.load().is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.offer_client_auth()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints would have to borrow from a verifier a reload may drop; without them clients
        // send the certificate they have, which is what a gateway's clients are set up to do.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verdict = match self.current.load().as_ref() {
            Some(verifier) => verifier.verify_client_cert(end_entity, intermediates, now),
            // Turned off between the request for a certificate and its arrival.
            None => Err(rustls::Error::General("client certificates are no longer accepted".into())),
        };
        if verdict.is_err() {
            self.counters.refused_client_cert.inc();
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
