//! Prometheus metrics (names are contract, ARCHITECTURE.md §5). Label values come from the
//! config (route name/path, service name) or small fixed sets, never from the raw request, so
//! cardinality is bounded by the config. Per-route and per-service handles are resolved at
//! start-up; `siger_requests_total` children are cached per thread so the hot path touches only
//! the counters' atomics after a thread's first request of a kind.

use crate::config::Config;
use crate::errors::UpstreamErrorKind;
use http::Method;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

/// Latency buckets, 0.5 ms … 10 s.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Methods with their own label value; anything else is `other`.
const METHODS: [&str; 10] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other"];

/// Reasons of `siger_auth_failures_total`.
pub const AUTH_REASONS: &[&str] = &["missing_token", "invalid_token", "expired", "forbidden", "jwks_refresh"];

/// Reasons of `siger_jobs_failed_total` (pre-registered so they export as 0).
pub const JOB_FAILURE_REASONS: &[&str] = &[
    "nats_disconnected",
    "ack_timeout",
    "no_stream",
    "too_large",
    "overloaded",
    "publish_error",
    "invalid_request",
    "unsupported_media_type",
    "body_timeout",
];

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

thread_local! {
    static REQUESTS: RefCell<HashMap<(u32, u32, u8, u16), IntCounter>> = RefCell::new(HashMap::new());
}

fn method_index(m: &Method) -> u8 {
    METHODS.iter().position(|x| *x == m.as_str()).unwrap_or(METHODS.len() - 1) as u8
}

/// All gateway metrics.
pub struct Metrics {
    id: u32,
    registry: Registry,
    /// Route labels, plus `-` for unmatched requests at the end.
    route_labels: Vec<String>,
    requests: IntCounterVec,
    durations: Vec<Histogram>,
    rate_limited: Vec<IntCounter>,
    /// Rate-limit checks the shared store could not answer (`on_store_error` applied).
    pub rate_limit_store_errors: IntCounter,
    rate_limit_tracked_keys: IntGauge,
    rate_limit_overflow: IntCounter,
    upstream_errors: Vec<Vec<IntCounter>>,
    auth_failures: IntCounterVec,
    /// Jobs acknowledged by JetStream.
    pub jobs_published: IntCounter,
    jobs_failed: IntCounterVec,
    /// Publish-to-ack latency of jobs.
    pub jobs_publish_seconds: Histogram,
    backends: IntGaugeVec,
    /// Failed Consul requests.
    pub consul_errors: IntCounter,
    /// Seconds since the last successful Consul sync, per service.
    pub consul_sync_age: IntGaugeVec,
    log_dropped: IntGauge,
    in_flight: IntGauge,
    service_names: Vec<String>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("routes", &self.route_labels.len()).finish()
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are static and unique, so registration cannot fail; a failure would only lose the
    // metric from the scrape, never the request.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

impl Metrics {
    /// Create and register every metric for this config.
    #[allow(clippy::expect_used)]
    pub fn new(config: &Config) -> Self {
        let registry = Registry::new();
        let mut route_labels: Vec<String> = config.routes.iter().map(|r| r.label.clone()).collect();
        route_labels.push("-".into());
        let requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new("siger_requests_total", "Requests answered, by route, method and status"),
                &["route", "method", "status"],
            )
            .expect("valid metric"),
        );
        let duration_vec = register(
            &registry,
            prometheus::HistogramVec::new(
                HistogramOpts::new(
                    "siger_request_duration_seconds",
                    "Time from request start to the last response byte",
                )
                .buckets(BUCKETS.to_vec()),
                &["route"],
            )
            .expect("valid metric"),
        );
        let durations = route_labels.iter().map(|r| duration_vec.with_label_values(&[r.as_str()])).collect();
        let rl_vec = register(
            &registry,
            IntCounterVec::new(Opts::new("siger_rate_limited_total", "Requests refused by a rate limit"), &["route"])
                .expect("valid metric"),
        );
        let rate_limited = route_labels.iter().map(|r| rl_vec.with_label_values(&[r.as_str()])).collect();
        let rate_limit_store_errors = register(
            &registry,
            IntCounter::new(
                "siger_rate_limit_store_errors_total",
                "Rate-limit checks the shared store (Redis) could not answer",
            )
            .expect("valid metric"),
        );
        let rate_limit_tracked_keys = register(
            &registry,
            IntGauge::new("siger_rate_limit_tracked_keys", "Client keys the local rate-limit tables count exactly")
                .expect("valid metric"),
        );
        let rate_limit_overflow = register(
            &registry,
            IntCounter::new(
                "siger_rate_limit_keys_overflow_total",
                "Local rate-limit checks counted approximately because the key budget was spent",
            )
            .expect("valid metric"),
        );
        let ue_vec = register(
            &registry,
            IntCounterVec::new(
                Opts::new("siger_upstream_errors_total", "Failed upstream attempts by service and kind"),
                &["service", "kind"],
            )
            .expect("valid metric"),
        );
        let service_names: Vec<String> = config.services.iter().map(|s| s.name.clone()).collect();
        let upstream_errors = service_names
            .iter()
            .map(|s| {
                UpstreamErrorKind::ALL.iter().map(|k| ue_vec.with_label_values(&[s.as_str(), k.label()])).collect()
            })
            .collect();
        let auth_failures = register(
            &registry,
            IntCounterVec::new(
                Opts::new("siger_auth_failures_total", "Authentication and authorization failures by reason"),
                &["reason"],
            )
            .expect("valid metric"),
        );
        let jobs_published = register(
            &registry,
            IntCounter::new("siger_jobs_published_total", "Jobs acknowledged by JetStream").expect("valid metric"),
        );
        let jobs_failed = register(
            &registry,
            IntCounterVec::new(
                Opts::new("siger_jobs_failed_total", "Job submissions that failed, by reason"),
                &["reason"],
            )
            .expect("valid metric"),
        );
        let jobs_publish_seconds = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new("siger_jobs_publish_seconds", "JetStream publish-to-ack latency")
                    .buckets(BUCKETS.to_vec()),
            )
            .expect("valid metric"),
        );
        let backends = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("siger_backends", "Backends per service and health state"),
                &["service", "state"],
            )
            .expect("valid metric"),
        );
        let consul_errors = register(
            &registry,
            IntCounter::new("siger_consul_errors_total", "Failed Consul requests").expect("valid metric"),
        );
        let consul_sync_age = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("siger_consul_last_sync_age_seconds", "Seconds since the last successful Consul sync"),
                &["service"],
            )
            .expect("valid metric"),
        );
        let build_info = register(
            &registry,
            IntGaugeVec::new(Opts::new("siger_build_info", "Build information"), &["version"]).expect("valid metric"),
        );
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let log_dropped = register(
            &registry,
            IntGauge::new("siger_log_lines_dropped_total", "Log lines dropped because stderr could not keep up")
                .expect("valid metric"),
        );
        let in_flight = register(
            &registry,
            IntGauge::new("siger_requests_in_flight", "Requests being processed").expect("valid metric"),
        );
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        for reason in AUTH_REASONS {
            auth_failures.with_label_values(&[reason]);
        }
        for reason in JOB_FAILURE_REASONS {
            jobs_failed.with_label_values(&[reason]);
        }
        for s in &service_names {
            for state in ["healthy", "unhealthy"] {
                backends.with_label_values(&[s.as_str(), state]);
            }
        }
        Metrics {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            route_labels,
            requests,
            durations,
            rate_limited,
            rate_limit_store_errors,
            rate_limit_tracked_keys,
            rate_limit_overflow,
            upstream_errors,
            auth_failures,
            jobs_published,
            jobs_failed,
            jobs_publish_seconds,
            backends,
            consul_errors,
            consul_sync_age,
            log_dropped,
            in_flight,
            service_names,
        }
    }

    fn route_index(&self, route: Option<usize>) -> usize {
        route.filter(|r| *r + 1 < self.route_labels.len()).unwrap_or(self.route_labels.len() - 1)
    }

    /// Record one finished request.
    pub fn observe_request(&self, route: Option<usize>, method: &Method, status: u16, seconds: f64) {
        let r = self.route_index(route);
        let m = method_index(method);
        REQUESTS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let counter = cache.entry((self.id, r as u32, m, status)).or_insert_with(|| {
                let status = status.to_string();
                self.requests.with_label_values(&[self.route_labels[r].as_str(), METHODS[m as usize], status.as_str()])
            });
            counter.inc();
        });
        self.durations[r].observe(seconds);
    }

    /// A request refused by a rate limit.
    pub fn rate_limited(&self, route: Option<usize>) {
        self.rate_limited[self.route_index(route)].inc();
    }

    /// A failed upstream attempt.
    pub fn upstream_error(&self, service: usize, kind: UpstreamErrorKind) {
        if let Some(per_kind) = self.upstream_errors.get(service) {
            let i = UpstreamErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(5);
            per_kind[i].inc();
        }
    }

    /// An authentication or authorization failure (`reason` from [`AUTH_REASONS`]).
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// A failed job submission.
    pub fn job_failed(&self, reason: &str) {
        self.jobs_failed.with_label_values(&[reason]).inc();
    }

    /// Update backend gauges (called at scrape time).
    pub fn set_backends(&self, service: usize, healthy: usize, unhealthy: usize) {
        if let Some(name) = self.service_names.get(service) {
            self.backends.with_label_values(&[name.as_str(), "healthy"]).set(healthy as i64);
            self.backends.with_label_values(&[name.as_str(), "unhealthy"]).set(unhealthy as i64);
        }
    }

    /// Local rate-limit table usage (called at scrape time): keys tracked now, and the total of
    /// checks that overflowed the key budget so far.
    pub fn set_rate_limit_usage(&self, tracked: usize, overflowed: u64) {
        self.rate_limit_tracked_keys.set(tracked as i64);
        let seen = self.rate_limit_overflow.get();
        if overflowed > seen {
            self.rate_limit_overflow.inc_by(overflowed - seen);
        }
    }

    /// Update the in-flight gauge (called at scrape time).
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(n as i64);
    }

    /// Seconds since Consul last answered for a service (called at scrape time).
    pub fn set_consul_sync_age(&self, service: &str, age: std::time::Duration) {
        self.consul_sync_age.with_label_values(&[service]).set(age.as_secs() as i64);
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> Vec<u8> {
        self.log_dropped.set(super::logger::dropped_lines() as i64);
        let mut out = Vec::with_capacity(16 << 10);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
