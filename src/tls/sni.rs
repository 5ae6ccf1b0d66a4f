//! Certificate choice per handshake: the listener's certificates indexed by the names they
//! serve (exact name, then `*.parent` wildcard, then the listener's first certificate), behind
//! an atomic swap so rotated files and reloads apply to the next handshake.

use super::material::ServingCert;
use super::ListenerCounters;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;

pub use crate::config::MinTls;

/// One listener's certificates by name.
#[derive(Debug, Clone)]
pub(crate) struct CertTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` certificates by `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    min_tls: MinTls,
}

impl CertTable {
    /// Index `certs` (the first is the default). When two certificates claim a name the first
    /// listed wins, as it would in nginx. `None` without certificates.
    pub(crate) fn new(certs: &[ServingCert], min_tls: MinTls) -> Option<Self> {
        let default = certs.first()?.key.clone();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for cert in certs {
            for name in &cert.names {
                let slot = match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()),
                    None => exact.entry(name.clone()),
                };
                slot.or_insert_with(|| cert.key.clone());
            }
        }
        Some(CertTable { exact, wildcard, default, min_tls })
    }

    /// The certificate for a client's SNI (already lower-case, as rustls gives it): the exact
    /// name, else a wildcard for its parent (one label only, as browsers match), else the
    /// default. No SNI (IP literals, old clients) gets the default.
    pub(crate) fn pick(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = sni else { return &self.default };
        if let Some(cert) = self.exact.get(name) {
            return cert;
        }
        name.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)).unwrap_or(&self.default)
    }
}

/// TLS 1.3 cipher suites (RFC 8446 §B.4): a ClientHello offering none of them cannot speak
/// TLS 1.3. rustls negotiates 1.3 whenever the client can, so refusing such hellos is how a
/// `min_tls: "1.3"` listener refuses 1.2 (Pingora fixes the versions of its `ServerConfig`).
fn offers_tls13(hello: &ClientHello<'_>) -> bool {
    hello.cipher_suites().iter().any(|s| (0x1301..=0x1305).contains(&u16::from(*s)))
}

/// The rustls certificate resolver of one TLS listener.
#[derive(Debug)]
pub(crate) struct SniResolver {
    table: ArcSwap<CertTable>,
    counters: Arc<ListenerCounters>,
}

impl SniResolver {
    pub(crate) fn new(table: CertTable, counters: Arc<ListenerCounters>) -> Self {
        SniResolver { table: ArcSwap::from_pointee(table), counters }
    }

    /// Serve `table` from the next handshake on.
    pub(crate) fn swap(&self, table: CertTable) {
        self.table.store(Arc::new(table));
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.counters.client_hellos.inc();
        let table = self.table.load();
        if table.min_tls == MinTls::Tls13 && !offers_tls13(&hello) {
            // `None` aborts the handshake with a handshake_failure alert.
            self.counters.refused_version.inc();
            return None;
        }
        Some(table.pick(hello.server_name()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::material::serving_cert;
    use std::time::SystemTime;

    fn cert(names: &[&str]) -> ServingCert {
        let mut c = serving_cert(
            include_bytes!("../../tests/fixtures/tls/a.pem"),
            include_bytes!("../../tests/fixtures/tls/a.key"),
            &rustls::crypto::ring::default_provider(),
            SystemTime::now(),
        )
        .expect("fixture");
        c.names = names.iter().map(|n| n.to_string()).collect();
        // Distinct keys so the test can tell which one was picked.
        c.key = Arc::new(CertifiedKey::new(c.key.cert.clone(), c.key.key.clone()));
        c
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let (a, b, wild) = (cert(&["a.test"]), cert(&["b.test", "www.b.test"]), cert(&["*.wild.test"]));
        let table = CertTable::new(&[a.clone(), b.clone(), wild.clone()], MinTls::Tls12).expect("table");
        let is = |picked: &Arc<CertifiedKey>, c: &ServingCert| Arc::ptr_eq(picked, &c.key);
        assert!(is(table.pick(Some("a.test")), &a));
        assert!(is(table.pick(Some("www.b.test")), &b));
        assert!(is(table.pick(Some("x.wild.test")), &wild));
        // A wildcard covers one label only.
        assert!(is(table.pick(Some("y.x.wild.test")), &a));
        assert!(is(table.pick(Some("wild.test")), &a));
        assert!(is(table.pick(Some("unknown.test")), &a));
        assert!(is(table.pick(None), &a));
    }

    #[test]
    fn the_first_certificate_listed_keeps_a_name_claimed_twice() {
        let (first, second) = (cert(&["a.test"]), cert(&["a.test"]));
        let table = CertTable::new(&[first.clone(), second], MinTls::Tls12).expect("table");
        assert!(Arc::ptr_eq(table.pick(Some("a.test")), &first.key));
        assert!(CertTable::new(&[], MinTls::Tls12).is_none());
    }
}
