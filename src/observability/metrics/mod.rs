//! Prometheus metrics (names are contract, ARCHITECTURE.md §5, §7). Label values come from the
//! config (route name/path, service name) or small fixed sets, never from the raw request, so
//! cardinality is bounded by the config.
//!
//! [`Metrics`] is the process's registry and its metric families, one small `Clone` struct per
//! family (requests, limits, upstream, auth, jobs, Consul, reloads, cache, TLS, connections,
//! spans, quotas, usage, request inspection); it outlives config reloads, and a background service takes the family it counts
//! into rather than the whole bundle. [`ConfigMetrics`] holds one config generation's handles
//! (per route and per service), resolved when the generation is built so the hot path touches
//! only counters' atomics; `siger_requests_total` children are cached per thread on top. When
//! a reload removes a route or service, its series are removed from the scrape.

mod auth;
mod cache;
mod connections;
mod consul;
mod generation;
mod jobs;
mod limits;
// Issue 29's families: registered now, counted once quotas and usage are wired.
#[allow(dead_code)]
mod quota;
mod reloads;
mod requests;
mod spans;
mod tls;
mod upstream;
mod usage;
mod waf;

pub(crate) use auth::AuthMetrics;
pub(crate) use cache::CacheMetrics;
pub(crate) use connections::{ConnectionMetrics, ProxyProtocolMetrics};
pub(crate) use consul::ConsulMetrics;
pub(crate) use generation::ConfigMetrics;
pub(crate) use jobs::JobMetrics;
pub(crate) use limits::LimitMetrics;
pub(crate) use quota::{Counted, PlanCounters, QuotaMetrics};
pub(crate) use reloads::ReloadMetrics;
pub(crate) use requests::RequestMetrics;
pub(crate) use spans::SpanMetrics;
pub(crate) use tls::TlsMetrics;
pub(crate) use upstream::UpstreamMetrics;
pub(crate) use usage::UsageMetrics;
pub(crate) use waf::WafMetrics;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets, 0.5 ms … 10 s.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process's metrics: the registry and every family.
#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    log_dropped: IntGauge,
    /// Requests: counts by route, method and status, durations, in flight.
    pub(crate) requests: RequestMetrics,
    /// Rate limits: refusals, the shared store, the local key budget.
    pub(crate) limits: LimitMetrics,
    /// Rate-limit checks the shared store could not answer (`on_store_error` applied); the
    /// same counter as `limits.store_errors`.
    pub(crate) rate_limit_store_errors: IntCounter,
    /// Upstream attempts, backends and the resilience mechanisms.
    pub(crate) upstream: UpstreamMetrics,
    /// Authentication failures.
    pub(crate) auth: AuthMetrics,
    /// Job submissions.
    pub(crate) jobs: JobMetrics,
    /// Consul requests and syncs.
    pub(crate) consul: ConsulMetrics,
    /// Configuration generations and reloads.
    pub(crate) reloads: ReloadMetrics,
    /// The response cache.
    pub(crate) cache: CacheMetrics,
    /// TLS listeners: handshakes and certificates.
    pub(crate) tls: TlsMetrics,
    /// Client connection counts, refusals, evictions and request deadlines.
    pub(crate) connections: ConnectionMetrics,
    /// Spans exported and dropped.
    pub(crate) spans: SpanMetrics,
    /// Request inspection's matches.
    pub(crate) waf: WafMetrics,
    /// Quotas, per plan (read once quotas are wired, issue 29).
    #[allow(dead_code)]
    pub(crate) quota: QuotaMetrics,
    /// Usage records: dropped, flushed, pending (read once usage is wired, issue 29).
    #[allow(dead_code)]
    pub(crate) usage: UsageMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are static and unique, so registration cannot fail; a failure would only lose the
    // metric from the scrape, never the request.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

#[allow(clippy::expect_used)]
fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

#[allow(clippy::expect_used)]
fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("valid metric"))
}

#[allow(clippy::expect_used)]
fn float_gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    register(registry, Gauge::new(name, help).expect("valid metric"))
}

#[allow(clippy::expect_used)]
fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

#[allow(clippy::expect_used)]
fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

#[allow(clippy::expect_used)]
fn histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
    register(registry, Histogram::with_opts(opts).expect("valid metric"))
}

#[allow(clippy::expect_used)]
fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
    register(registry, HistogramVec::new(opts, labels).expect("valid metric"))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create and register every metric family.
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let build_info = gauge_vec(&registry, "siger_build_info", "Build information", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let log_dropped =
            gauge(&registry, "siger_log_lines_dropped_total", "Log lines dropped because stderr could not keep up");
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        let limits = LimitMetrics::register(&registry);
        Metrics {
            requests: RequestMetrics::register(&registry),
            rate_limit_store_errors: limits.store_errors.clone(),
            limits,
            upstream: UpstreamMetrics::register(&registry),
            auth: AuthMetrics::register(&registry),
            jobs: JobMetrics::register(&registry),
            consul: ConsulMetrics::register(&registry),
            reloads: ReloadMetrics::register(&registry),
            cache: CacheMetrics::register(&registry),
            tls: TlsMetrics::register(&registry),
            connections: ConnectionMetrics::register(&registry),
            spans: SpanMetrics::register(&registry),
            waf: WafMetrics::register(&registry),
            quota: QuotaMetrics::register(&registry),
            usage: UsageMetrics::register(&registry),
            log_dropped,
            registry,
        }
    }

    /// Prometheus text exposition of everything.
    pub(crate) fn render(&self) -> Vec<u8> {
        self.log_dropped.set(super::logger::dropped_lines() as i64);
        let mut out = Vec::with_capacity(16 << 10);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    /// Set the cache's size gauges (called at scrape time).
    pub(crate) fn set_cache_usage(&self, bytes: usize, entries: usize) {
        self.cache.set_usage(bytes, entries);
    }

    /// Set a service's ejected-backend count and breaker state (called at scrape time; the
    /// state only for services with a breaker).
    pub(crate) fn set_resilience(&self, service: &str, ejected: usize, circuit: Option<u8>) {
        self.upstream.set_resilience(service, ejected, circuit);
    }

    /// A reload attempt ended (`ok` or not); on success `generation` is now in force.
    pub(crate) fn reloaded(&self, ok: bool, generation: u64, at_unix: f64) {
        self.reloads.reloaded(ok, generation, at_unix);
    }

    /// `generation` is in force since `at_unix`.
    pub(crate) fn loaded(&self, generation: u64, at_unix: f64) {
        self.reloads.loaded(generation, at_unix);
    }

    /// An authentication or authorization failure (`reason` from `AUTH_REASONS`).
    pub(crate) fn auth_failure(&self, reason: &str) {
        self.auth.failure(reason);
    }

    /// A failed job submission.
    pub(crate) fn job_failed(&self, reason: &str) {
        self.jobs.failed(reason);
    }

    /// Update a service's backend gauges (called at scrape time).
    pub(crate) fn set_backends(&self, service: &str, healthy: usize, unhealthy: usize) {
        self.upstream.set_backends(service, healthy, unhealthy);
    }

    /// Which Redis node shared limits use now (called at scrape time).
    pub(crate) fn set_redis_node(&self, node: Option<&str>) {
        self.limits.set_redis_node(node);
    }

    /// Local rate-limit table usage (called at scrape time): keys tracked now, and the total of
    /// checks that overflowed the key budget so far.
    pub(crate) fn set_rate_limit_usage(&self, tracked: usize, overflowed: u64) {
        self.limits.set_usage(tracked, overflowed);
    }

    /// Update the in-flight gauge (called at scrape time).
    pub(crate) fn set_in_flight(&self, n: usize) {
        self.requests.in_flight.set(n as i64);
    }

    /// Seconds since Consul last answered for a service (called at scrape time).
    pub(crate) fn set_consul_sync_age(&self, service: &str, age: std::time::Duration) {
        self.consul.set_sync_age(service, age);
    }
}
