//! TLS listeners: ClientHellos and handshakes by result, served certificates' expiry and the
//! rotations seen on disk.

use super::{counter_vec, gauge_vec};
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Registry};

/// The TLS families.
#[derive(Clone)]
pub(crate) struct TlsMetrics {
    client_hellos: IntCounterVec,
    handshakes: IntCounterVec,
    cert_expiry: IntGaugeVec,
    cert_reloads: IntCounterVec,
}

impl TlsMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        let cert_reloads = counter_vec(
            registry,
            "siger_tls_cert_reloads_total",
            "Certificate files changed on disk, by result (ok, refused: the old ones keep serving)",
            &["result"],
        );
        for result in ["ok", "refused"] {
            cert_reloads.with_label_values(&[result]);
        }
        TlsMetrics {
            client_hellos: counter_vec(
                registry,
                "siger_tls_client_hellos_total",
                "TLS ClientHellos received per listener (handshakes that got that far)",
                &["listener"],
            ),
            handshakes: counter_vec(
                registry,
                "siger_tls_handshakes_total",
                "TLS handshakes per listener by result: ok, the reason they were refused (tls_version, client_cert), or timeout \
                 (nothing within limits.idle_timeout, or not complete within header_timeout of the first byte); \
                 client_hellos minus these are handshakes that failed otherwise (no shared cipher, client abort)",
                &["listener", "result"],
            ),
            cert_expiry: gauge_vec(
                registry,
                "siger_tls_cert_expiry_seconds",
                "Seconds until a served certificate expires, by its name",
                &["name"],
            ),
            cert_reloads,
        }
    }

    /// `siger_tls_client_hellos_total` of a listener.
    pub(crate) fn client_hellos(&self, listener: &str) -> IntCounter {
        self.client_hellos.with_label_values(&[listener])
    }

    /// `siger_tls_handshakes_total` of a listener and result.
    pub(crate) fn handshakes(&self, listener: &str, result: &str) -> IntCounter {
        self.handshakes.with_label_values(&[listener, result])
    }

    /// Set `siger_tls_cert_expiry_seconds{name}`.
    pub(crate) fn cert_expiry(&self, name: &str, seconds_left: i64) {
        self.cert_expiry.with_label_values(&[name]).set(seconds_left);
    }

    /// Remove the expiry series of a certificate no longer served.
    pub(crate) fn forget_cert(&self, name: &str) {
        let _ = self.cert_expiry.remove_label_values(&[name]);
    }

    /// Count a certificate rotation seen on disk (`ok` or `refused`).
    pub(crate) fn cert_reload(&self, result: &str) {
        self.cert_reloads.with_label_values(&[result]).inc();
    }
}
