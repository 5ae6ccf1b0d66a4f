//! What a TLS connection tells its requests: captured once, when the handshake completes, and
//! attached to the connection's `SslDigest` (Pingora's digest carries no SNI and no client
//! subject of its own).

use super::ListenerCounters;
use async_trait::async_trait;
use http::HeaderValue;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use std::any::Any;
use std::sync::Arc;

/// Facts about one TLS connection, shared by its requests (every stream of an h2 connection).
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    /// Index of the listener in `listen` (stable: listeners change only with a new process).
    pub(crate) listener: usize,
    /// The verified client certificate's subject, ready to forward as `X-Client-Cert-Subject`
    /// (only listeners with `client_ca` verify, and only they ask for certificates).
    pub(crate) client_subject: Option<HeaderValue>,
    /// `TLSv1.3` or `TLSv1.2`, for the access log.
    pub(crate) version: &'static str,
}

/// Pingora's post-handshake hook for one TLS listener.
pub(crate) struct CaptureConnInfo {
    pub(crate) listener: usize,
    pub(crate) counters: Arc<ListenerCounters>,
}

#[async_trait]
impl TlsAccept for CaptureConnInfo {
    async fn handshake_complete_callback(&self, tls: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        self.counters.completed.inc();
        let client_subject = tls.peer_certificate_der().and_then(subject_header);
        let version = match tls.version() {
            Some(v) if v.contains("1_3") || v.contains("1.3") => "TLSv1.3",
            Some(v) if v.contains("1_2") || v.contains("1.2") => "TLSv1.2",
            _ => "TLS",
        };
        Some(Arc::new(ConnInfo { listener: self.listener, client_subject, version }))
    }
}

/// A certificate's subject as a header value (`CN=alice, O=Example`), with bytes a header
/// cannot carry written as `\xNN`. The certificate was verified by rustls before this runs;
/// one x509-parser cannot read is left without a subject rather than failing the connection.
pub(crate) fn subject_header(der: &[u8]) -> Option<HeaderValue> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject().to_string();
    let mut text = String::with_capacity(subject.len());
    for c in subject.chars() {
        if c.is_ascii_graphic() || c == ' ' {
            text.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                text.push_str(&format!("\\x{b:02X}"));
            }
        }
    }
    HeaderValue::from_str(&text).ok()
}
