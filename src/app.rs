//! Assembly: config → Pingora `Server` with the proxy, admin and background services.

use crate::admin::AdminApp;
use crate::auth::KeyRefreshService;
use crate::config::{Config, ConfigErrors, ListenerMode};
use crate::connections::{AtTheBound, ConnectionGate, IdleLimited};
use crate::jobs::service::{NatsService, WithNats};
use crate::lifecycle::Drain;
use crate::observability::{logger, Metrics};
use crate::proxy::Gateway;
use crate::ratelimit::{LimitStores, LimitSweeper};
use crate::redirect::RedirectHttps;
use crate::reload::{ConfigWatcher, HangupReload, Reload};
use crate::runtime::Runtime;
pub use crate::snapshot::Checked;
use crate::snapshot::Snapshot;
use crate::tls::{CertWatcher, Handshakes};
use crate::trace::export::SpanExporter;
use crate::upstream::{PoolsService, Upstreams};
use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::path::Path;
use std::sync::Arc;

/// Keep an early SIGHUP from terminating the process (call first thing in `main`).
pub fn catch_hangups_early() {
    crate::reload::catch_hangups_early();
}

/// Command-line switches that shape the process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Launch {
    /// `-d`: fork into the background.
    pub daemon: bool,
    /// `-u`: take over the listeners of a running instance.
    pub upgrade: bool,
}

/// Map our `server:` section onto Pingora's ServerConf.
pub fn server_conf(config: &Config, launch: Launch) -> ServerConf {
    let s = &config.server;
    // Connect failures are retried by us, bounded per service (`retries` ≤ 10); Pingora's cap
    // must not be lower for any config a reload may bring.
    let max_retries = 11;
    ServerConf {
        version: 1,
        daemon: launch.daemon,
        threads: s.threads,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        error_log: s.error_log.clone(),
        user: s.user.clone(),
        group: s.group.clone(),
        // Pingora sleeps this long unconditionally; `lifecycle::Drain` exits as soon as the
        // requests in flight are done, so this is only the upper bound.
        grace_period_seconds: Some((s.grace_period + s.graceful_shutdown_timeout).as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        work_stealing: s.work_stealing,
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        max_retries,
        ..ServerConf::default()
    }
}

/// Starts buffered logging once the process is in its final form (after the daemon fork).
struct LogWriter;

#[async_trait]
impl BackgroundService for LogWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        logger::start_writer();
        let _ = shutdown.changed().await;
        logger::flush();
    }
}

/// A proxy service over the runtime (no listeners yet); `h2c` also accepts HTTP/2 with prior
/// knowledge on its plain listeners; `tls` are the handshakes of its TLS listeners.
fn proxy_service(
    name: &str,
    server: &Server,
    runtime: &Arc<Runtime>,
    h2c: bool,
    tls: Handshakes,
) -> Service<ConnectionGate<IdleLimited<pingora::proxy::HttpProxy<Gateway>>>> {
    let cfg = &runtime.current().config;
    let mut gateway = pingora::proxy::http_proxy(&server.configuration, Gateway::new(runtime.clone()));
    let mut options = HttpServerOptions::default();
    options.keepalive_request_limit = cfg.limits.keepalive_requests;
    options.h2c = h2c;
    options.h2_idle_timeout = Some(cfg.limits.idle_timeout);
    gateway.server_options = Some(options);
    gateway.h2_options = Some(h2_limits(&cfg.limits));
    let app = IdleLimited::new(gateway, runtime.connections.clone());
    let mut service = Service::new(name.to_string(), ConnectionGate::new(app, runtime.connections.clone(), tls));
    service.set_connection_filter(Arc::new(AtTheBound(runtime.connections.clone())));
    service
}

/// HTTP/2 connection limits: concurrent streams, the size of a header list (as for HTTP/1
/// heads) and h2's defences against streams reset as fast as they are opened (CVE-2023-44487).
fn h2_limits(limits: &crate::config::Limits) -> pingora::protocols::http::v2::server::H2Options {
    let mut options = pingora::protocols::http::v2::server::H2Options::new();
    options
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_pending_accept_reset_streams(H2_PENDING_RESETS)
        .max_local_error_reset_streams(Some(H2_LOCAL_ERROR_RESETS));
    options
}

/// Streams a client may reset before the server accepted them (h2's default, kept explicit).
const H2_PENDING_RESETS: usize = 20;
/// Streams the server may reset for a client's protocol errors before the connection ends.
const H2_LOCAL_ERROR_RESETS: usize = 1024;

/// The admin listener's address in the configuration at `path` (`None`: it has none); for a
/// bootstrap file, in what this host last applied (`siger usage`).
pub fn admin_address(path: &Path) -> Result<Option<std::net::SocketAddr>, String> {
    let config = if crate::config_store::gateway::configured(path) {
        let checked = crate::config_store::gateway::applied(path)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<String>())?;
        checked.config
    } else {
        crate::config::load(path).map_err(|e| e.to_string())?
    };
    Ok(config.admin.map(|admin| admin.socket))
}

/// Load, validate and compile the config file at `path`: what `-t`, a start, `siger token`
/// and `siger upgrade` all read, with every problem named by key and line.
pub fn check(path: &Path) -> Result<Checked, ConfigErrors> {
    crate::snapshot::check(path)
}

/// `siger -t`: build the generation a start would serve from `checked` (read from `path`) —
/// route table, pools, limits, verifiers, metric handles — and drop it unserved. Nothing
/// listens or connects: pools run no health checks, the Redis store does not connect and no
/// JWKS URL is fetched.
pub fn dry_run(checked: Checked, path: &Path) {
    let auth = crate::runtime::starting_auth(&checked.config);
    let source = crate::snapshot::Source {
        path: path.to_path_buf(),
        sha256: String::new(),
        loaded_at: std::time::SystemTime::now(),
    };
    let (upstreams, limits, metrics) = (Upstreams::default(), LimitStores::default(), Metrics::new());
    let partners = crate::partner::PartnerStores::new(metrics.quota.clone(), metrics.usage.clone());
    drop(Snapshot::build(1, checked, source, auth, &upstreams, &limits, &metrics, &[], &partners));
}

/// Build and run the server until it shuts down (SIGTERM, SIGINT or an upgrade hand-over).
/// `path` is the config file `checked` was read from (reloads read it again).
pub fn run(checked: Checked, path: &Path, launch: Launch) {
    serve(checked, path, launch, None);
}

/// [`run`] for a gateway that follows a config store (`config_source`): `start` is what its
/// start-up found (docs/fleet.md); a background service follows the store from there.
pub fn run_fleet(start: crate::config_store::gateway::Start, path: &Path, launch: Launch) {
    serve(start.checked, path, launch, Some(start.fleet));
}

fn serve(checked: Checked, path: &Path, launch: Launch, fleet: Option<Arc<crate::config_store::gateway::Fleet>>) {
    let conf = server_conf(&checked.config, launch);
    let opt = Opt { upgrade: launch.upgrade, daemon: launch.daemon, nocapture: false, test: false, conf: None };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // Receive inherited listeners first: the old process waits only a few seconds (§6.4).
    server.bootstrap();

    let runtime = Runtime::start(checked, path, fleet);
    let snap = runtime.current();
    let cfg = &snap.config;

    server.add_service(background_service("log writer", LogWriter));
    let drain = Drain::new(runtime.lifecycle.clone(), cfg.server.grace_period, cfg.server.graceful_shutdown_timeout);
    server.add_service(background_service("drain", drain));
    server.add_service(background_service("upstream pools", PoolsService::new(&runtime.upstreams)));
    let dns = crate::discovery::dns::DnsService::new(&runtime.dns, runtime.metrics.consul.dns_lookup_failures.clone());
    server.add_service(background_service("dns", dns));
    server.add_service(background_service("rate limit sweeper", LimitSweeper::new(runtime.limits.clone())));
    let partners = crate::partner::PartnerService::new(runtime.partners.clone(), runtime.lifecycle.clone());
    server.add_service(background_service("usage flusher", partners));
    let keys = KeyRefreshService::new(runtime.authenticator.subscribe(), runtime.metrics.auth.clone());
    server.add_service(background_service("jwks refresh", keys));
    if let Some(fleet) = &runtime.fleet {
        let follower = crate::config_store::gateway::Follower::new(
            runtime.clone(),
            runtime.metrics.reloads.clone(),
            fleet.clone(),
        );
        server.add_service(background_service("config store", follower));
    }
    let reloader: Arc<dyn Reload> = runtime.clone();
    server.add_service(background_service("reload on SIGHUP", HangupReload::new(reloader.clone())));
    server.add_service(background_service("config watcher", ConfigWatcher::new(reloader)));
    // Always there, so a reload can switch tracing on.
    let spans = SpanExporter::new(
        runtime.spans.clone(),
        runtime.metrics.spans.clone(),
        runtime.tracing.subscribe(),
        &runtime.lifecycle,
    );
    server.add_service(background_service("span export", spans));

    if !runtime.tls.is_empty() {
        let watcher = CertWatcher::new(runtime.tls.clone(), runtime.metrics.tls.clone());
        server.add_service(background_service("tls certificates", watcher));
    }

    // Plain and TLS listeners share one proxy service; h2c listeners need their own (the h2c
    // preface check is per service) and redirect listeners answer without proxying.
    // TLS listeners are plain TCP ones to Pingora: the connection gate admits each connection
    // before its handshake and runs it under the head deadlines (see `crate::tls::Handshakes`).
    let Some(handshakes) = runtime.tls.handshakes(&cfg.listeners) else {
        log::error!("TLS settings could not be built");
        logger::flush();
        std::process::exit(1);
    };
    let mut proxy = proxy_service("siger proxy", &server, &runtime, false, handshakes);
    let mut h2c = None;
    // Each client connection's read buffer (`limits.read_buffer`): what it holds while idle.
    let buffer = L4BufferSettings::default().read(cfg.limits.read_buffer);
    let endpoint = |addr: &str| ListenerConfig::tcp(addr).l4_buffer(buffer);
    for listener in &cfg.listeners {
        match &listener.mode {
            ListenerMode::Plain { h2c: false } => proxy.add_listener(endpoint(&listener.addr)),
            ListenerMode::Plain { h2c: true } => h2c
                .get_or_insert_with(|| {
                    proxy_service("siger proxy (h2c)", &server, &runtime, true, Handshakes::default())
                })
                .add_listener(endpoint(&listener.addr)),
            ListenerMode::Tls(_) => proxy.add_listener(endpoint(&listener.addr)),
            ListenerMode::RedirectHttps { port } => {
                let app = RedirectHttps { port: *port, access_log: cfg.access_log };
                let mut service = Service::new(format!("siger redirect {}", listener.addr), app);
                service.add_tcp(&listener.addr);
                service.threads = Some(1);
                server.add_service(service);
            }
        }
    }
    // The NATS client lives on the proxy's runtime (see `WithNats`).
    server.add_service(WithNats::new(proxy, runtime.jobs.clone().map(NatsService::new), runtime.lifecycle.clone()));
    if let Some(h2c) = h2c {
        server.add_service(h2c);
    }

    if let Some(admin) = &cfg.admin {
        let mut service = Service::new("siger admin".to_string(), AdminApp::new(runtime.clone()));
        service.add_tcp(&admin.listen);
        service.threads = Some(1);
        server.add_service(service);
    }

    // Consul: the discovery and registration services; the run arguments deregister on
    // SIGTERM but not on upgrade.
    let run_args = crate::discovery::consul::install(&mut server, &runtime.discovery, cfg, &runtime.metrics.consul);
    drop(snap);
    server.run(run_args);
    log::info!("siger stopped");
    logger::flush();
}
