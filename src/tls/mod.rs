//! TLS at the edge (ARCHITECTURE.md §7.2): certificates chosen by SNI, client certificates,
//! and certificates rotated on disk without a restart.
//!
//! - [`material`]: PEM → checked certificates, keys and CA bundles.
//! - `compile`: a configuration's listeners' and upstreams' material from the files it read,
//!   built where a snapshot is built, so `-t` refuses what a listener could not serve.
//! - [`sni`]: the per-listener certificate table and rustls resolver, swapped atomically.
//! - [`client_auth`]: the per-listener client-certificate verifier, swapped atomically.
//! - [`accept`]: what a connection's handshake tells its requests (listener, client subject).
//!
//! [`TlsEdge`] owns the per-listener resolvers and verifiers for the life of the process:
//! Pingora's listeners and their `TlsSettings` are fixed at start, so reloads and rotated
//! files change what those objects hand out, never the objects.
//!
//! The handshakes themselves are not Pingora's listeners': TLS listeners are plain TCP ones,
//! and the connection gate runs each handshake ([`Handshakes`]) after admitting the
//! connection, so that a connection mid-handshake counts against `limits.max_connections` and
//! meets the deadlines of a request head instead of Pingora's fixed, uncounted 60 s.

mod accept;
mod client_auth;
mod compile;
pub(crate) mod material;
mod sni;

pub(crate) use accept::ConnInfo;
pub(crate) use compile::{ListenerMaterial, UpstreamTlsMaterial};
pub use material::{CaBundle, ClientIdentity, ServingCert};
pub use sni::MinTls;

use crate::config::{FileDigest, Findings, Listener, TlsListener};
use crate::observability::TlsMetrics;
use accept::CaptureConnInfo;
use async_trait::async_trait;
use client_auth::ClientAuth;
use pingora::listeners::tls::{Acceptor, TlsSettings};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::IntCounter;
use rustls::crypto::CryptoProvider;
use sha2::{Digest, Sha256};
use sni::{CertTable, SniResolver};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// How often certificate files are checked for changes.
const CERT_POLL: Duration = Duration::from_secs(1);

/// The crypto provider for everything TLS in the process: ring, as Pingora's connector and
/// async-nats use (both ring and aws-lc-rs are in the dependency tree, so nothing may rely
/// on rustls picking one).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// Make [`provider`] the process default before anything builds a rustls config (Pingora's
/// listeners and connectors use the default).
pub fn install_process_provider() {
    let _ = CryptoProvider::install_default(provider().as_ref().clone());
}

/// Handshake counters of one TLS listener, resolved once.
#[derive(Debug)]
pub(crate) struct ListenerCounters {
    /// ClientHellos received (every handshake that got that far).
    pub(crate) client_hellos: IntCounter,
    /// Handshakes completed.
    pub(crate) completed: IntCounter,
    /// Refused: the client offers no TLS version the listener accepts.
    pub(crate) refused_version: IntCounter,
    /// Refused: the client certificate did not verify.
    pub(crate) refused_client_cert: IntCounter,
    /// Cut: no first bytes within `idle_timeout`, or not complete within `header_timeout`.
    pub(crate) timed_out: IntCounter,
}

impl ListenerCounters {
    fn new(metrics: &TlsMetrics, listener: &str) -> Self {
        ListenerCounters {
            client_hellos: metrics.client_hellos(listener),
            completed: metrics.handshakes(listener, "ok"),
            refused_version: metrics.handshakes(listener, "tls_version"),
            refused_client_cert: metrics.handshakes(listener, "client_cert"),
            timed_out: metrics.handshakes(listener, "timeout"),
        }
    }
}

/// One TLS listener's swappable state.
struct ListenerTls {
    index: usize,
    addr: String,
    http2: bool,
    counters: Arc<ListenerCounters>,
    resolver: Arc<SniResolver>,
    client_auth: Arc<ClientAuth>,
    /// What is served now, and the file contents it was loaded from.
    served: Mutex<Served>,
}

#[derive(Default)]
struct Served {
    /// The listener's settings in force (their files are the ones watched).
    settings: Option<TlsListener>,
    certs: Vec<ServingCert>,
    /// SHA-256 of each file last looked at (loaded or refused), so a refused file is not
    /// retried, and logged, every second until it changes again.
    seen: Vec<(PathBuf, [u8; 32])>,
}

/// The process's TLS listeners: their resolvers and verifiers, and the certificate files
/// behind them.
pub(crate) struct TlsEdge {
    listeners: Vec<ListenerTls>,
    /// `name` labels of `siger_tls_cert_expiry_seconds` exported now.
    expiry_names: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for TlsEdge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsEdge").field("listeners", &self.listeners.len()).finish()
    }
}

impl TlsEdge {
    /// The TLS listeners of the starting configuration (`listeners`, with the `material` its
    /// snapshot built for them, by index), serving their certificates.
    pub(crate) fn new(
        listeners: &[Listener],
        material: &[Option<Arc<ListenerMaterial>>],
        files: &[FileDigest],
        metrics: &TlsMetrics,
    ) -> Self {
        let edge_listeners = listeners
            .iter()
            .enumerate()
            .filter_map(|(index, l)| {
                let tls = l.tls()?;
                let built = material.get(index)?.as_ref()?;
                let counters = Arc::new(ListenerCounters::new(metrics, &l.addr));
                let table = CertTable::new(&built.certs, tls.min_tls)?;
                Some(ListenerTls {
                    index,
                    addr: l.addr.clone(),
                    http2: tls.http2,
                    resolver: Arc::new(SniResolver::new(table, counters.clone())),
                    client_auth: Arc::new(ClientAuth::new(provider(), counters.clone())),
                    counters,
                    served: Mutex::new(Served::default()),
                })
            })
            .collect();
        let edge = TlsEdge { listeners: edge_listeners, expiry_names: Mutex::new(BTreeSet::new()) };
        edge.apply(listeners, material, files, metrics);
        edge
    }

    /// Whether any listener speaks TLS.
    pub(crate) fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// Pingora's settings for listener `index`: our resolver, verifier and handshake hook,
    /// never file paths (which Pingora would load, unchecked, and panic on).
    pub(crate) fn listener_settings(&self, index: usize) -> Option<TlsSettings> {
        let l = self.listeners.iter().find(|l| l.index == index)?;
        let hook = CaptureConnInfo { listener: index, counters: l.counters.clone() };
        let mut settings = TlsSettings::with_callbacks(Box::new(hook)).ok()?;
        settings.set_cert_resolver(l.resolver.clone());
        settings.set_client_cert_verifier(l.client_auth.clone());
        if l.http2 {
            settings.enable_h2();
        }
        Some(settings)
    }

    /// The handshakes of the TLS listeners among `listeners` (the starting configuration's),
    /// for the connection gate; `None` when one listener's settings cannot be built.
    pub(crate) fn handshakes(&self, listeners: &[Listener]) -> Option<Handshakes> {
        let mut out = Vec::with_capacity(self.listeners.len());
        for l in &self.listeners {
            let socket = listeners.get(l.index)?.socket;
            let acceptor = self.listener_settings(l.index)?.build();
            out.push(ListenerHandshake { socket, acceptor, counters: l.counters.clone() });
        }
        Some(Handshakes(out))
    }

    /// Serve what a configuration names: its `listeners`, the `material` its snapshot built
    /// for them (by index) and the digests of the `files` it read (at start and after every
    /// reload).
    pub(crate) fn apply(
        &self,
        listeners: &[Listener],
        material: &[Option<Arc<ListenerMaterial>>],
        files: &[FileDigest],
        metrics: &TlsMetrics,
    ) {
        for l in &self.listeners {
            let Some(tls) = listeners.get(l.index).and_then(|c| c.tls()) else { continue };
            let Some(built) = material.get(l.index).and_then(Option::as_ref) else { continue };
            let seen = watched_files(tls)
                .into_iter()
                .filter_map(|path| files.iter().find(|f| f.path == path).map(|f| (path, f.sha256)))
                .collect();
            self.serve(l, tls.clone(), built, seen);
        }
        self.export_expiry(metrics);
    }

    fn serve(&self, l: &ListenerTls, settings: TlsListener, built: &ListenerMaterial, seen: Vec<(PathBuf, [u8; 32])>) {
        if let Some(table) = CertTable::new(&built.certs, settings.min_tls) {
            l.resolver.swap(table);
        }
        if let Err(e) = l.client_auth.require(built.client_roots.clone()) {
            log::error!("{}: client_ca not applied: {e}", l.addr);
        }
        let mut served = l.served.lock().unwrap_or_else(|p| p.into_inner());
        *served = Served { settings: Some(settings), certs: built.certs.clone(), seen };
    }

    /// Look at the certificate files of the configuration in force; load those that changed.
    /// A pair that does not load (half-written, key and certificate from different
    /// rotations, expired) is refused and the listener keeps what it serves.
    fn poll_files(&self, metrics: &TlsMetrics) {
        let mut changed = false;
        for l in &self.listeners {
            let Some(settings) = l.served.lock().unwrap_or_else(|p| p.into_inner()).settings.clone() else { continue };
            let files = watched_files(&settings);
            let contents: Vec<Option<Vec<u8>>> = files.iter().map(|f| std::fs::read(f).ok()).collect();
            let seen: Vec<(PathBuf, [u8; 32])> = files
                .iter()
                .zip(&contents)
                .map(|(f, c)| (f.clone(), c.as_deref().map_or([0; 32], |b| Sha256::digest(b).into())))
                .collect();
            {
                let mut served = l.served.lock().unwrap_or_else(|p| p.into_inner());
                if served.seen == seen {
                    continue;
                }
                served.seen = seen.clone();
            }
            match load_listener(&settings, &files, contents) {
                Ok((fresh, built)) => {
                    let names: Vec<String> = built.certs.iter().map(cert_label).collect();
                    log::info!("{}: certificates reloaded from disk ({})", l.addr, names.join(", "));
                    metrics.cert_reload("ok");
                    self.serve(l, fresh, &built, seen);
                    changed = true;
                }
                Err(why) => {
                    log::error!("{}: new certificate files refused, the current ones keep serving: {why}", l.addr);
                    metrics.cert_reload("refused");
                }
            }
        }
        if changed {
            self.export_expiry(metrics);
        }
    }

    /// `siger_tls_cert_expiry_seconds{name}` for every certificate served now.
    fn export_expiry(&self, metrics: &TlsMetrics) {
        let now = SystemTime::now();
        let mut names = BTreeSet::new();
        for l in &self.listeners {
            let served = l.served.lock().unwrap_or_else(|p| p.into_inner());
            for cert in &served.certs {
                let name = cert_label(cert);
                metrics.cert_expiry(&name, cert.seconds_left(now));
                names.insert(name);
            }
        }
        let mut exported = self.expiry_names.lock().unwrap_or_else(|p| p.into_inner());
        for gone in exported.difference(&names) {
            metrics.forget_cert(gone);
        }
        *exported = names;
    }
}

/// The files a TLS listener is served from, in a fixed order: each pair's certificate and
/// key, then the client CA bundle.
fn watched_files(tls: &TlsListener) -> Vec<PathBuf> {
    tls.certs
        .iter()
        .flat_map(|c| [c.cert.path.clone(), c.key.path.clone()])
        .chain(tls.client_ca.as_ref().map(|c| c.path.clone()))
        .collect()
}

/// A listener's settings with file contents read just now (in the order of
/// [`watched_files`]), and the material they hold, checked as a configuration's are.
fn load_listener(
    tls: &TlsListener,
    files: &[PathBuf],
    contents: Vec<Option<Vec<u8>>>,
) -> Result<(TlsListener, ListenerMaterial), String> {
    let mut fresh = tls.clone();
    let slots = fresh.certs.iter_mut().flat_map(|c| [&mut c.cert, &mut c.key]).chain(fresh.client_ca.as_mut());
    for ((slot, path), bytes) in slots.zip(files).zip(contents) {
        let bytes = bytes.ok_or_else(|| format!("cannot read `{}`", path.display()))?;
        slot.bytes = Arc::from(bytes);
    }
    let mut findings = Findings::default();
    let built = ListenerMaterial::build(&fresh, SystemTime::now(), &mut findings);
    let (errors, warnings) = findings.into_parts();
    for (_, warning) in warnings {
        log::warn!("{warning}");
    }
    match built {
        Some(built) => Ok((fresh, built)),
        None => Err(errors.into_iter().map(|(_, e)| e).collect::<Vec<_>>().join("; ")),
    }
}

/// A certificate's name in metrics and logs: its first DNS name, else its subject.
fn cert_label(cert: &ServingCert) -> String {
    cert.names.first().cloned().unwrap_or_else(|| cert.subject.clone())
}

/// Checks the certificate files of TLS listeners every second and keeps the expiry gauges
/// current (runs only when some listener speaks TLS).
pub(crate) struct CertWatcher {
    edge: Arc<TlsEdge>,
    metrics: TlsMetrics,
}

impl CertWatcher {
    /// Watch the files `edge` serves from, counting into `metrics`.
    pub(crate) fn new(edge: Arc<TlsEdge>, metrics: TlsMetrics) -> Self {
        CertWatcher { edge, metrics }
    }
}

#[async_trait]
impl BackgroundService for CertWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(CERT_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let (edge, metrics) = (self.edge.clone(), self.metrics.clone());
            // File reads and PEM parsing block: keep them off the service's runtime. A panic
            // ends that one poll (the join error), not the watcher.
            let polled = tokio::task::spawn_blocking(move || {
                edge.poll_files(&metrics);
                edge.export_expiry(&metrics);
            })
            .await;
            if polled.is_err() {
                log::error!("certificate watcher: a poll panicked; polling again in {CERT_POLL:?}");
            }
        }
    }
}

/// One TLS listener's handshake (its resolver, verifier, ALPN and post-handshake hook).
pub(crate) struct ListenerHandshake {
    /// The listener's address; an unspecified IP stands for every local address on its port.
    socket: SocketAddr,
    acceptor: Acceptor,
    counters: Arc<ListenerCounters>,
}

impl ListenerHandshake {
    /// Run the handshake on a connection accepted by this listener.
    pub(crate) async fn run(&self, stream: Stream) -> pingora::Result<Stream> {
        // Pingora's plain listeners hand over their own L4 stream, boxed.
        let l4 = stream
            .into_any()
            .downcast::<pingora::protocols::l4::stream::Stream>()
            .map_err(|_| pingora::Error::explain(pingora::ErrorType::InternalError, "not a TCP stream"))?;
        Ok(Box::new(self.acceptor.tls_handshake(*l4).await?))
    }

    /// Count a handshake cut at its deadline.
    pub(crate) fn timed_out(&self) {
        self.counters.timed_out.inc();
    }
}

/// The handshakes of the process's TLS listeners, found by the local address a connection came
/// in on (listeners are plain TCP ones to Pingora).
#[derive(Default)]
pub(crate) struct Handshakes(Vec<ListenerHandshake>);

impl Handshakes {
    /// The handshake of the listener that accepted a connection to `local`: the one bound to
    /// exactly that address, else the one bound to the unspecified address on its port (the
    /// kernel delivers to the most specific bind; two listeners never share an address).
    pub(crate) fn for_local(&self, local: SocketAddr) -> Option<&ListenerHandshake> {
        let exact = self.0.iter().find(|h| h.socket == local);
        exact.or_else(|| self.0.iter().find(|h| h.socket.port() == local.port() && h.socket.ip().is_unspecified()))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
