//! The process and its listeners: `server`, `listen`, `admin`, `trusted_proxies`, `limits`.

use super::LoadedFile;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Settings mapped onto Pingora's `ServerConf`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Written when daemonised (`-d`).
    pub pid_file: String,
    /// Unix socket used to hand listeners over during an upgrade (`-u`).
    pub upgrade_sock: String,
    /// stderr is redirected here when daemonised.
    pub error_log: Option<String>,
    /// Drop privileges to this user after daemonising.
    pub user: Option<String>,
    /// Drop privileges to this group after daemonising.
    pub group: Option<String>,
    /// Pingora's fixed wait after SIGTERM / upgrade before in-flight requests get their timeout.
    pub grace_period: Duration,
    /// How long in-flight requests may still run after the grace period.
    pub graceful_shutdown_timeout: Duration,
    /// Tokio work-stealing runtime (Pingora default) or one runtime per thread.
    pub work_stealing: bool,
    /// Idle upstream connections kept per worker thread.
    pub upstream_keepalive_pool_size: usize,
    /// Reload when the config file or a file it names changes (checked every 250 ms).
    pub watch_config: bool,
}

impl Default for ServerSettings {
    /// The documented defaults (docs/config.md, `server`): one thread per CPU, runtime files in
    /// the temporary directory, 5 s grace and 10 s graceful shutdown.
    fn default() -> Self {
        ServerSettings {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pid_file: runtime_file("siger.pid"),
            upgrade_sock: runtime_file("siger_upgrade.sock"),
            error_log: None,
            user: None,
            group: None,
            grace_period: Duration::from_secs(5),
            graceful_shutdown_timeout: Duration::from_secs(10),
            work_stealing: true,
            upstream_keepalive_pool_size: 128,
            watch_config: false,
        }
    }
}

/// Default place for the pid file and upgrade socket when the config names none: the system
/// temp dir (`TMPDIR`), as Pingora does. Production configs set both (systemd `RuntimeDirectory`).
fn runtime_file(name: &str) -> String {
    std::env::temp_dir().join(name).to_string_lossy().into_owned()
}

/// One public listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// The address exactly as written: Pingora matches inherited sockets by this string.
    pub addr: String,
    /// The parsed address.
    pub socket: SocketAddr,
    /// What the listener speaks.
    pub mode: ListenerMode,
    /// Connections open with a PROXY header naming the client (`src/proxy_protocol.rs`).
    pub proxy_protocol: bool,
    /// The only peers whose PROXY headers are read (`proxy_protocol_from`); empty: any peer.
    pub proxy_protocol_from: TrustedProxies,
}

/// What a listener speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum ListenerMode {
    /// Plain HTTP/1.1; with `h2c`, HTTP/2 with prior knowledge as well.
    Plain {
        /// Accept HTTP/2 without TLS (prior knowledge).
        h2c: bool,
    },
    /// TLS, with certificates chosen by SNI.
    Tls(TlsListener),
    /// Every request is answered with a 308 to the same URL on `https` at this port.
    RedirectHttps {
        /// The HTTPS port the redirects point at (443 is left out of the URL).
        port: u16,
    },
}

impl Listener {
    /// The TLS settings of a TLS listener.
    pub fn tls(&self) -> Option<&TlsListener> {
        match &self.mode {
            ListenerMode::Tls(t) => Some(t),
            _ => None,
        }
    }

    /// What only a new process can change: the address and protocol choices (the sockets and
    /// Pingora's TLS settings are fixed at start). Certificates, `min_tls`, `client_ca` and
    /// `hsts` apply on reload.
    pub fn fixed_shape(&self) -> (String, &'static str, bool, Option<u16>) {
        match &self.mode {
            ListenerMode::Plain { h2c } => (self.addr.clone(), "plain", *h2c, None),
            ListenerMode::Tls(t) => (self.addr.clone(), "tls", t.http2, None),
            ListenerMode::RedirectHttps { port } => (self.addr.clone(), "redirect", false, Some(*port)),
        }
    }
}

/// A TLS listener's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsListener {
    /// Certificates with their keys; the first is served when no other matches the SNI.
    pub certs: Vec<CertFiles>,
    /// Offer HTTP/2 through ALPN (`h2`, then `http/1.1`).
    pub http2: bool,
    /// Lowest TLS version accepted.
    pub min_tls: MinTls,
    /// Require client certificates issued by these CAs (mTLS).
    pub client_ca: Option<CaFile>,
    /// The `Strict-Transport-Security` value sent on this listener's responses.
    pub hsts: Option<http::HeaderValue>,
}

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum MinTls {
    /// TLS 1.2 and 1.3 (rustls supports nothing older).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// A certificate chain file and its key file, as read (the `tls` module checks and loads them).
#[derive(Debug, Clone, PartialEq)]
pub struct CertFiles {
    /// Certificate chain (PEM), leaf first.
    pub cert: LoadedFile,
    /// Private key (PEM).
    pub key: LoadedFile,
}

/// A PEM bundle of CA certificates, as read (the `tls` module parses it).
pub type CaFile = LoadedFile;

/// The admin listener.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// Address as written (kept verbatim for socket hand-over).
    pub listen: String,
    /// The parsed address.
    pub socket: SocketAddr,
    /// Host names (lower-case, no trailing dot; `*.example.com` for any name under it) admin
    /// requests may carry in `Host` besides IP literals and `localhost` names.
    pub allowed_hosts: Vec<String>,
}

/// CIDRs of proxies in front of us whose `X-Forwarded-For` we believe.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = canonical_ip(*ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) compare as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Request size and connection limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Default request body limit in bytes (413 beyond).
    pub max_body: u64,
    /// Request header limit in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Idle keep-alive downstream connections are closed after this.
    pub idle_timeout: Duration,
    /// Requests served on one downstream connection before it is closed; `None` = unlimited.
    pub keepalive_requests: Option<u32>,
    /// Pass request headers whose names contain `_` upstream (default false: they are dropped,
    /// as nginx does, because CGI-style servers read `X_User_Id` as `X-User-Id`). Underscore
    /// spellings of headers the gateway sets are dropped either way.
    pub underscores_in_headers: bool,
    /// Read buffer of each client connection, in bytes: what an idle keep-alive connection
    /// holds (Pingora's default is 64 KiB); larger reads bypass it.
    pub read_buffer: usize,
    /// Client connections the process holds at once; at the bound the oldest idle keep-alive
    /// connections are closed for new ones, and without idle ones new connections are closed.
    pub max_connections: usize,
    /// Client connections per client IP (`None`: unbounded). Connections from trusted proxies
    /// carry many clients and are not bounded per IP.
    pub max_connections_per_ip: Option<usize>,
    /// The whole request head must arrive within this from its first byte (408 JSON, close).
    pub header_timeout: Duration,
    /// The whole request body must arrive within this from the end of its head (408 JSON
    /// where nothing was answered yet, else close).
    pub body_timeout: Duration,
    /// A write of an answer that makes no progress for this long closes the client's
    /// connection (and the backend connection under it); an HTTP/2 stream that cannot send
    /// for this long (its flow-control window stays shut) is reset.
    pub send_timeout: Duration,
    /// Concurrent streams an HTTP/2 client may open on one connection.
    pub h2_max_concurrent_streams: u32,
}

/// Each key's documented default (docs/config.md `limits`), written once: the validator reads
/// what a config leaves out from here.
impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 10 << 20,
            max_header_bytes: 16 << 10,
            idle_timeout: Duration::from_secs(60),
            keepalive_requests: None,
            underscores_in_headers: false,
            read_buffer: 4 << 10,
            max_connections: 10_000,
            max_connections_per_ip: None,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            h2_max_concurrent_streams: 128,
        }
    }
}
