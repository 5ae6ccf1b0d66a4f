//! Prometheus metrics (names are contract, ARCHITECTURE.md §5, §7). Label values come from the
//! config (route name/path, service name) or small fixed sets, never from the raw request, so
//! cardinality is bounded by the config.
//!
//! [`Metrics`] is the process's registry and metric families; it outlives config reloads.
//! [`ConfigMetrics`] holds one config generation's handles (per route and per service),
//! resolved when the generation is built so the hot path touches only counters' atomics;
//! `siger_requests_total` children are cached per thread on top. When a reload removes a route
//! or service, its series are removed from the scrape.

use crate::config::Config;
use crate::errors::UpstreamErrorKind;
use http::Method;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Latency buckets, 0.5 ms … 10 s.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Methods with their own label value; anything else is `other`.
const METHODS: [&str; 10] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other"];

/// Reasons of `siger_auth_failures_total`.
pub(crate) const AUTH_REASONS: &[&str] = &["missing_token", "invalid_token", "expired", "forbidden", "jwks_refresh"];

/// Reasons of `siger_jobs_failed_total` (pre-registered so they export as 0).
pub(crate) const JOB_FAILURE_REASONS: &[&str] = &[
    "nats_disconnected",
    "ack_timeout",
    "no_stream",
    "too_large",
    "overloaded",
    "publish_error",
    "invalid_request",
    "unsupported_media_type",
    "body_timeout",
    "idempotency_conflict",
];

/// The unmatched-request route label.
const NO_ROUTE: &str = "-";

/// `siger_requests_total` children by (route index, method index, status).
type RequestCounters = HashMap<(u32, u8, u16), IntCounter>;

thread_local! {
    /// `siger_requests_total` children of this thread, for one config generation at a time.
    static REQUESTS: RefCell<(u64, RequestCounters)> = RefCell::new((0, HashMap::new()));
}

fn method_index(m: &Method) -> u8 {
    METHODS.iter().position(|x| *x == m.as_str()).unwrap_or(METHODS.len() - 1) as u8
}

/// The process's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    /// `(route, method, status)` series of `siger_requests_total` created so far, so a reload
    /// can remove those of routes that are gone.
    request_series: Mutex<HashSet<(String, &'static str, u16)>>,
    durations: HistogramVec,
    rate_limited: IntCounterVec,
    /// Rate-limit checks the shared store could not answer (`on_store_error` applied).
    pub(crate) rate_limit_store_errors: IntCounter,
    rate_limit_tracked_keys: IntGauge,
    rate_limit_redis_node: IntGaugeVec,
    rate_limit_overflow: IntCounter,
    upstream_errors: IntCounterVec,
    auth_failures: IntCounterVec,
    /// Jobs acknowledged by JetStream.
    pub(crate) jobs_published: IntCounter,
    jobs_failed: IntCounterVec,
    /// Publish-to-ack latency of jobs.
    pub(crate) jobs_publish_seconds: Histogram,
    backends: IntGaugeVec,
    /// Failed Consul requests.
    pub(crate) consul_errors: IntCounter,
    /// Failed DNS look-ups of DNS-backed services, per service.
    pub(crate) dns_lookup_failures: IntCounterVec,
    /// Seconds since the last successful Consul sync, per service.
    pub(crate) consul_sync_age: IntGaugeVec,
    reloads: IntCounterVec,
    generation: IntGauge,
    live_generations: IntGauge,
    last_reload: Gauge,
    log_dropped: IntGauge,
    in_flight: IntGauge,
    tls_client_hellos: IntCounterVec,
    tls_handshakes: IntCounterVec,
    retries: IntCounterVec,
    retry_budget_exhausted: IntCounterVec,
    ejections: IntCounterVec,
    ejected: IntGaugeVec,
    circuit_state: IntGaugeVec,
    circuit_refusals: IntCounterVec,
    cache_requests: IntCounterVec,
    /// Inspected requests something matched, by route and action (`block`: refused,
    /// `detect`: forwarded).
    waf_matches: IntCounterVec,
    aggregate_parts: IntCounterVec,
    cache_bytes: IntGauge,
    cache_entries: IntGauge,
    tls_cert_expiry: IntGaugeVec,
    tls_cert_reloads: IntCounterVec,
    /// Client connection counts, refusals, evictions and request deadlines.
    pub(crate) connections: crate::connections::ConnectionMetrics,
    /// Spans exported and dropped.
    pub(crate) spans: crate::trace::export::SpanMetrics,
    /// PROXY header rejections.
    pub(crate) proxy_protocol: crate::proxy_protocol::ProxyProtocolMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// One config generation's metric handles.
pub(crate) struct ConfigMetrics {
    generation: u64,
    /// A newer generation is in force: requests still finishing on this one create no new
    /// `siger_requests_total` series (a removed route's series stays removed).
    retired: std::sync::atomic::AtomicBool,
    live: IntGauge,
    requests: IntCounterVec,
    /// Route labels, plus `-` for unmatched requests at the end.
    route_labels: Vec<String>,
    durations: Vec<Histogram>,
    rate_limited: Vec<IntCounter>,
    /// Per caching route: HIT, MISS, STALE, BYPASS (empty for other routes).
    cache_results: Vec<Option<[IntCounter; 4]>>,
    /// Per inspecting route: `block`, `detect` (`None` for other routes).
    waf_matches: Vec<Option<[IntCounter; 2]>>,
    upstream_errors: Vec<Vec<IntCounter>>,
    /// Per service: retries by reason (connect, reset, status), budget refusals, ejections,
    /// circuit refusals (open, max_in_flight).
    resilience: Vec<ResilienceCounters>,
    service_names: Vec<String>,
    aggregate_parts: IntCounterVec,
}

/// One service's resilience counters, resolved once per generation.
struct ResilienceCounters {
    retries: [IntCounter; 3],
    budget_exhausted: IntCounter,
    ejections: IntCounter,
    refused_open: IntCounter,
    refused_in_flight: IntCounter,
}

impl std::fmt::Debug for ConfigMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMetrics").field("generation", &self.generation).finish_non_exhaustive()
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
fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create and register every metric family.
    #[allow(clippy::expect_used)]
    pub(crate) fn new() -> Self {
        let registry = Registry::new();
        let requests = counter_vec(
            &registry,
            "siger_requests_total",
            "Requests answered, by route, method and status",
            &["route", "method", "status"],
        );
        let durations = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "siger_request_duration_seconds",
                    "Time from request start to the last response byte",
                )
                .buckets(BUCKETS.to_vec()),
                &["route"],
            )
            .expect("valid metric"),
        );
        let rate_limited =
            counter_vec(&registry, "siger_rate_limited_total", "Requests refused by a rate limit", &["route"]);
        let rate_limit_store_errors = counter(
            &registry,
            "siger_rate_limit_store_errors_total",
            "Rate-limit checks the shared store (Redis) could not answer",
        );
        let rate_limit_tracked_keys =
            gauge(&registry, "siger_rate_limit_tracked_keys", "Client keys the local rate-limit tables count exactly");
        let rate_limit_overflow = counter(
            &registry,
            "siger_rate_limit_keys_overflow_total",
            "Local rate-limit checks counted approximately because the key budget was spent",
        );
        let upstream_errors = counter_vec(
            &registry,
            "siger_upstream_errors_total",
            "Failed upstream attempts by service and kind",
            &["service", "kind"],
        );
        let auth_failures = counter_vec(
            &registry,
            "siger_auth_failures_total",
            "Authentication and authorization failures by reason",
            &["reason"],
        );
        let jobs_published = counter(&registry, "siger_jobs_published_total", "Jobs acknowledged by JetStream");
        let jobs_failed =
            counter_vec(&registry, "siger_jobs_failed_total", "Job submissions that failed, by reason", &["reason"]);
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
        let consul_errors = counter(&registry, "siger_consul_errors_total", "Failed Consul requests");
        let dns_lookup_failures = counter_vec(
            &registry,
            "siger_dns_lookup_failures_total",
            "Failed DNS look-ups of service targets (the last good addresses are kept)",
            &["service"],
        );
        let consul_sync_age = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("siger_consul_last_sync_age_seconds", "Seconds since the last successful Consul sync"),
                &["service"],
            )
            .expect("valid metric"),
        );
        let reloads =
            counter_vec(&registry, "siger_config_reloads_total", "Configuration reloads by result", &["result"]);
        for result in ["ok", "failed"] {
            reloads.with_label_values(&[result]);
        }
        let generation = gauge(&registry, "siger_config_generation", "Generation of the configuration in force");
        let live_generations = gauge(
            &registry,
            "siger_config_generations_live",
            "Configuration generations still held (the one in force and those of requests still running on older ones)",
        );
        let last_reload = register(
            &registry,
            Gauge::new("siger_config_last_reload_timestamp_seconds", "Unix time the configuration in force was loaded")
                .expect("valid metric"),
        );
        let build_info = register(
            &registry,
            IntGaugeVec::new(Opts::new("siger_build_info", "Build information"), &["version"]).expect("valid metric"),
        );
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let log_dropped =
            gauge(&registry, "siger_log_lines_dropped_total", "Log lines dropped because stderr could not keep up");
        let in_flight = gauge(&registry, "siger_requests_in_flight", "Requests being processed");
        let refused = counter_vec(
            &registry,
            "siger_connections_refused_total",
            "Client connections closed at once by limits.max_connections or max_connections_per_ip",
            &["reason"],
        );
        let timeouts = counter_vec(
            &registry,
            "siger_request_timeouts_total",
            "Requests whose head or body missed limits.header_timeout or body_timeout (phase header, body), and client connections closed when a write made no progress for limits.send_timeout (phase send)",
            &["phase"],
        );
        let connections = crate::connections::ConnectionMetrics {
            open: gauge(&registry, "siger_connections_open", "Client connections open"),
            refused_total: refused.with_label_values(&["max_connections"]),
            refused_per_ip: refused.with_label_values(&["max_connections_per_ip"]),
            evicted: counter(
                &registry,
                "siger_connections_evicted_total",
                "Idle keep-alive connections and slow heads closed to make room at limits.max_connections",
            ),
            header_timeouts: timeouts.with_label_values(&["header"]),
            body_timeouts: timeouts.with_label_values(&["body"]),
            send_timeouts: timeouts.with_label_values(&["send"]),
            heads_too_large: counter(
                &registry,
                "siger_request_heads_too_large_total",
                "Request heads answered 431 before a session: past limits.max_header_bytes while still arriving, or with more than 256 header fields",
            ),
        };
        let rate_limit_redis_node = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "siger_rate_limit_redis_node",
                    "1 for the Redis node shared rate limits use now: the server, the master Sentinel named, or `cluster`",
                ),
                &["node"],
            )
            .expect("valid metric"),
        );
        let dropped = counter_vec(
            &registry,
            "siger_trace_spans_dropped_total",
            "Spans not exported: the export queue was full (queue_full) or the collector failed (export_failed)",
            &["reason"],
        );
        let proxy_protocol = crate::proxy_protocol::ProxyProtocolMetrics::register(&registry);
        let spans = crate::trace::export::SpanMetrics {
            exported: counter(&registry, "siger_trace_spans_exported_total", "Spans the collector accepted"),
            queue_full: dropped.with_label_values(&["queue_full"]),
            export_failed: dropped.with_label_values(&["export_failed"]),
        };
        let tls_client_hellos = counter_vec(
            &registry,
            "siger_tls_client_hellos_total",
            "TLS ClientHellos received per listener (handshakes that got that far)",
            &["listener"],
        );
        let tls_handshakes = counter_vec(
            &registry,
            "siger_tls_handshakes_total",
            "TLS handshakes per listener by result: ok, the reason they were refused (tls_version, client_cert), or timeout \
             (nothing within limits.idle_timeout, or not complete within header_timeout of the first byte); \
             client_hellos minus these are handshakes that failed otherwise (no shared cipher, client abort)",
            &["listener", "result"],
        );
        let tls_cert_expiry = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("siger_tls_cert_expiry_seconds", "Seconds until a served certificate expires, by its name"),
                &["name"],
            )
            .expect("valid metric"),
        );
        let tls_cert_reloads = counter_vec(
            &registry,
            "siger_tls_cert_reloads_total",
            "Certificate files changed on disk, by result (ok, refused: the old ones keep serving)",
            &["result"],
        );
        for result in ["ok", "refused"] {
            tls_cert_reloads.with_label_values(&[result]);
        }
        let retries = counter_vec(
            &registry,
            "siger_upstream_retries_total",
            "Upstream attempts retried on another backend, by service and reason (connect, reset, status)",
            &["service", "reason"],
        );
        let retry_budget_exhausted = counter_vec(
            &registry,
            "siger_retry_budget_exhausted_total",
            "Retries not made because the service's retry budget was spent",
            &["service"],
        );
        let ejections = counter_vec(
            &registry,
            "siger_backend_ejections_total",
            "Backends ejected by outlier detection",
            &["service"],
        );
        let ejected = register(
            &registry,
            IntGaugeVec::new(Opts::new("siger_backends_ejected", "Backends ejected now"), &["service"])
                .expect("valid metric"),
        );
        let circuit_state = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("siger_circuit_state", "Circuit breaker state: 0 closed, 1 open, 2 half-open"),
                &["service"],
            )
            .expect("valid metric"),
        );
        let waf_matches = counter_vec(
            &registry,
            "siger_waf_matches_total",
            "Inspected requests that matched rules, by route and action (block: refused, detect: forwarded)",
            &["route", "action"],
        );
        let cache_requests = counter_vec(
            &registry,
            "siger_cache_requests_total",
            "Requests on caching routes by route and result (hit, miss, stale, bypass)",
            &["route", "result"],
        );
        let aggregate_parts = counter_vec(
            &registry,
            "siger_aggregate_parts_total",
            "Parts of aggregation routes by route, part and result (ok, timeout, unavailable, status, not_json)",
            &["route", "part", "result"],
        );
        let cache_bytes =
            gauge(&registry, "siger_cache_bytes", "Bytes the response cache holds (bounded by cache.max_memory)");
        let cache_entries = gauge(&registry, "siger_cache_entries", "Responses the cache holds");
        let circuit_refusals = counter_vec(
            &registry,
            "siger_circuit_refusals_total",
            "Requests answered 503 by a circuit breaker, by reason (open, max_in_flight)",
            &["service", "reason"],
        );
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        for reason in AUTH_REASONS {
            auth_failures.with_label_values(&[reason]);
        }
        for reason in JOB_FAILURE_REASONS {
            jobs_failed.with_label_values(&[reason]);
        }
        Metrics {
            registry,
            requests,
            request_series: Mutex::new(HashSet::new()),
            durations,
            rate_limited,
            rate_limit_store_errors,
            rate_limit_tracked_keys,
            rate_limit_redis_node,
            rate_limit_overflow,
            upstream_errors,
            auth_failures,
            jobs_published,
            jobs_failed,
            jobs_publish_seconds,
            backends,
            consul_errors,
            dns_lookup_failures,
            consul_sync_age,
            reloads,
            generation,
            live_generations,
            last_reload,
            log_dropped,
            in_flight,
            tls_client_hellos,
            tls_handshakes,
            tls_cert_expiry,
            tls_cert_reloads,
            retries,
            retry_budget_exhausted,
            ejections,
            ejected,
            circuit_state,
            circuit_refusals,
            cache_requests,
            waf_matches,
            aggregate_parts,
            cache_bytes,
            cache_entries,
            connections,
            spans,
            proxy_protocol,
        }
    }

    /// Set the cache's size gauges (called at scrape time).
    pub(crate) fn set_cache_usage(&self, bytes: usize, entries: usize) {
        self.cache_bytes.set(bytes as i64);
        self.cache_entries.set(entries as i64);
    }

    /// Set a service's ejected-backend count and breaker state (called at scrape time; the
    /// state only for services with a breaker).
    pub(crate) fn set_resilience(&self, service: &str, ejected: usize, circuit: Option<u8>) {
        self.ejected.with_label_values(&[service]).set(ejected as i64);
        if let Some(state) = circuit {
            self.circuit_state.with_label_values(&[service]).set(i64::from(state));
        }
    }

    /// `siger_tls_client_hellos_total` of a listener.
    pub(crate) fn tls_client_hellos(&self, listener: &str) -> IntCounter {
        self.tls_client_hellos.with_label_values(&[listener])
    }

    /// `siger_tls_handshakes_total` of a listener and result.
    pub(crate) fn tls_handshakes(&self, listener: &str, result: &str) -> IntCounter {
        self.tls_handshakes.with_label_values(&[listener, result])
    }

    /// Set `siger_tls_cert_expiry_seconds{name}`.
    pub(crate) fn tls_cert_expiry(&self, name: &str, seconds_left: i64) {
        self.tls_cert_expiry.with_label_values(&[name]).set(seconds_left);
    }

    /// Remove the expiry series of a certificate no longer served.
    pub(crate) fn forget_tls_cert(&self, name: &str) {
        let _ = self.tls_cert_expiry.remove_label_values(&[name]);
    }

    /// Count a certificate rotation seen on disk (`ok` or `refused`).
    pub(crate) fn tls_cert_reload(&self, result: &str) {
        self.tls_cert_reloads.with_label_values(&[result]).inc();
    }

    /// The handles of config generation `generation`.
    pub(crate) fn for_config(&self, config: &Config, generation: u64) -> ConfigMetrics {
        let mut route_labels: Vec<String> = config.routes.iter().map(|r| r.label.clone()).collect();
        route_labels.push(NO_ROUTE.into());
        let service_names: Vec<String> = config.services.iter().map(|s| s.name.clone()).collect();
        for s in &service_names {
            for state in ["healthy", "unhealthy"] {
                self.backends.with_label_values(&[s.as_str(), state]);
            }
        }
        ConfigMetrics {
            generation,
            retired: std::sync::atomic::AtomicBool::new(false),
            live: {
                self.live_generations.inc();
                self.live_generations.clone()
            },
            requests: self.requests.clone(),
            durations: route_labels.iter().map(|r| self.durations.with_label_values(&[r.as_str()])).collect(),
            rate_limited: route_labels.iter().map(|r| self.rate_limited.with_label_values(&[r.as_str()])).collect(),
            cache_results: config
                .routes
                .iter()
                .map(|r| {
                    r.cache.as_ref().map(|_| {
                        ["hit", "miss", "stale", "bypass"]
                            .map(|result| self.cache_requests.with_label_values(&[r.label.as_str(), result]))
                    })
                })
                .collect(),
            waf_matches: config
                .routes
                .iter()
                .map(|r| {
                    (r.waf.mode != crate::config::WafMode::Off).then(|| {
                        ["block", "detect"]
                            .map(|action| self.waf_matches.with_label_values(&[r.label.as_str(), action]))
                    })
                })
                .collect(),
            upstream_errors: service_names
                .iter()
                .map(|s| {
                    UpstreamErrorKind::ALL
                        .iter()
                        .map(|k| self.upstream_errors.with_label_values(&[s.as_str(), k.label()]))
                        .collect()
                })
                .collect(),
            resilience: service_names
                .iter()
                .map(|s| {
                    let s = s.as_str();
                    ResilienceCounters {
                        retries: ["connect", "reset", "status"].map(|r| self.retries.with_label_values(&[s, r])),
                        budget_exhausted: self.retry_budget_exhausted.with_label_values(&[s]),
                        ejections: self.ejections.with_label_values(&[s]),
                        refused_open: self.circuit_refusals.with_label_values(&[s, "open"]),
                        refused_in_flight: self.circuit_refusals.with_label_values(&[s, "max_in_flight"]),
                    }
                })
                .collect(),
            route_labels,
            service_names,
            aggregate_parts: self.aggregate_parts.clone(),
        }
    }

    /// A new generation is in force: remove the series of routes and services it no longer
    /// has, and record the reload.
    pub(crate) fn retire(&self, old: &ConfigMetrics, new: &ConfigMetrics, discovered: &[String]) {
        old.retired.store(true, std::sync::atomic::Ordering::Relaxed);
        let kept: HashSet<&String> = new.route_labels.iter().collect();
        let services: HashSet<&String> = new.service_names.iter().collect();
        for name in new.service_names.iter().filter(|n| !discovered.contains(n)) {
            let _ = self.consul_sync_age.remove_label_values(&[name.as_str()]);
        }
        for label in old.route_labels.iter().filter(|l| !kept.contains(l)) {
            for result in ["hit", "miss", "stale", "bypass"] {
                let _ = self.cache_requests.remove_label_values(&[label.as_str(), result]);
            }
            for action in ["block", "detect"] {
                let _ = self.waf_matches.remove_label_values(&[label.as_str(), action]);
            }
            let _ = self.durations.remove_label_values(&[label.as_str()]);
            let _ = self.rate_limited.remove_label_values(&[label.as_str()]);
            let mut series = self.request_series.lock().unwrap_or_else(|p| p.into_inner());
            series.retain(|(route, method, status)| {
                if route != label {
                    return true;
                }
                let _ = self.requests.remove_label_values(&[route.as_str(), method, status.to_string().as_str()]);
                false
            });
        }
        for name in old.service_names.iter().filter(|n| !services.contains(n)) {
            for state in ["healthy", "unhealthy"] {
                let _ = self.backends.remove_label_values(&[name.as_str(), state]);
            }
            let _ = self.dns_lookup_failures.remove_label_values(&[name.as_str()]);
            for kind in UpstreamErrorKind::ALL {
                let _ = self.upstream_errors.remove_label_values(&[name.as_str(), kind.label()]);
            }
            let n = name.as_str();
            for reason in ["connect", "reset", "status"] {
                let _ = self.retries.remove_label_values(&[n, reason]);
            }
            for reason in ["open", "max_in_flight"] {
                let _ = self.circuit_refusals.remove_label_values(&[n, reason]);
            }
            let _ = self.retry_budget_exhausted.remove_label_values(&[n]);
            let _ = self.ejections.remove_label_values(&[n]);
            let _ = self.ejected.remove_label_values(&[n]);
            let _ = self.circuit_state.remove_label_values(&[n]);
            let _ = self.consul_sync_age.remove_label_values(&[name.as_str()]);
        }
    }

    /// A reload attempt ended (`ok` or not); on success `generation` is now in force.
    pub(crate) fn reloaded(&self, ok: bool, generation: u64, at_unix: f64) {
        self.reloads.with_label_values(&[if ok { "ok" } else { "failed" }]).inc();
        if ok {
            self.loaded(generation, at_unix);
        }
    }

    /// `generation` is in force since `at_unix`.
    pub(crate) fn loaded(&self, generation: u64, at_unix: f64) {
        self.generation.set(generation as i64);
        self.last_reload.set(at_unix);
    }

    /// An authentication or authorization failure (`reason` from [`AUTH_REASONS`]).
    pub(crate) fn auth_failure(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// A failed job submission.
    pub(crate) fn job_failed(&self, reason: &str) {
        self.jobs_failed.with_label_values(&[reason]).inc();
    }

    /// Update a service's backend gauges (called at scrape time).
    pub(crate) fn set_backends(&self, service: &str, healthy: usize, unhealthy: usize) {
        self.backends.with_label_values(&[service, "healthy"]).set(healthy as i64);
        self.backends.with_label_values(&[service, "unhealthy"]).set(unhealthy as i64);
    }

    /// Local rate-limit table usage (called at scrape time): keys tracked now, and the total of
    /// checks that overflowed the key budget so far.
    /// Which Redis node shared limits use now (called at scrape time).
    pub(crate) fn set_redis_node(&self, node: Option<&str>) {
        self.rate_limit_redis_node.reset();
        if let Some(node) = node {
            self.rate_limit_redis_node.with_label_values(&[node]).set(1);
        }
    }

    pub(crate) fn set_rate_limit_usage(&self, tracked: usize, overflowed: u64) {
        self.rate_limit_tracked_keys.set(tracked as i64);
        let seen = self.rate_limit_overflow.get();
        if overflowed > seen {
            self.rate_limit_overflow.inc_by(overflowed - seen);
        }
    }

    /// Update the in-flight gauge (called at scrape time).
    pub(crate) fn set_in_flight(&self, n: usize) {
        self.in_flight.set(n as i64);
    }

    /// Seconds since Consul last answered for a service (called at scrape time).
    pub(crate) fn set_consul_sync_age(&self, service: &str, age: std::time::Duration) {
        self.consul_sync_age.with_label_values(&[service]).set(age.as_secs() as i64);
    }

    /// Prometheus text exposition of everything.
    pub(crate) fn render(&self) -> Vec<u8> {
        self.log_dropped.set(super::logger::dropped_lines() as i64);
        let mut out = Vec::with_capacity(16 << 10);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    fn note_series(&self, route: &str, method: &'static str, status: u16) {
        let mut series = self.request_series.lock().unwrap_or_else(|p| p.into_inner());
        series.insert((route.to_string(), method, status));
    }
}

impl Drop for ConfigMetrics {
    fn drop(&mut self) {
        self.live.dec();
    }
}

impl ConfigMetrics {
    fn route_index(&self, route: Option<usize>) -> usize {
        route.filter(|r| *r + 1 < self.route_labels.len()).unwrap_or(self.route_labels.len() - 1)
    }

    /// Record one finished request.
    pub(crate) fn observe_request(
        &self,
        metrics: &Metrics,
        route: Option<usize>,
        method: &Method,
        status: u16,
        seconds: f64,
    ) {
        let r = self.route_index(route);
        let m = method_index(method);
        REQUESTS.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.0 != self.generation {
                *cache = (self.generation, HashMap::new());
            }
            let key = (r as u32, m, status);
            if let Some(counter) = cache.1.get(&key) {
                counter.inc();
            } else if !self.retired.load(std::sync::atomic::Ordering::Relaxed) {
                let label = self.route_labels[r].as_str();
                metrics.note_series(label, METHODS[m as usize], status);
                let counter =
                    self.requests.with_label_values(&[label, METHODS[m as usize], status.to_string().as_str()]);
                counter.inc();
                cache.1.insert(key, counter);
            }
        });
        self.durations[r].observe(seconds);
    }

    /// A request on a caching route and what the cache did (`HIT`, `MISS`, `STALE`, `BYPASS`).
    pub(crate) fn cache_result(&self, route: usize, result: &str) {
        if let Some(Some(counters)) = self.cache_results.get(route) {
            let i = match result {
                "HIT" => 0,
                "MISS" => 1,
                "STALE" => 2,
                _ => 3,
            };
            counters[i].inc();
        }
    }

    /// An inspected request that matched (`block`: refused, `detect`: forwarded).
    pub(crate) fn waf_match(&self, route: usize, action: &str) {
        if let Some(Some(counters)) = self.waf_matches.get(route) {
            counters[usize::from(action != "block")].inc();
        }
    }

    /// A request refused by a rate limit.
    pub(crate) fn rate_limited(&self, route: Option<usize>) {
        self.rate_limited[self.route_index(route)].inc();
    }

    /// An attempt retried on another backend.
    pub(crate) fn upstream_retry(&self, service: usize, reason: crate::proxy::RetryReason) {
        if let Some(c) = self.resilience.get(service) {
            let i = match reason.label() {
                "connect" => 0,
                "reset" => 1,
                _ => 2,
            };
            c.retries[i].inc();
        }
    }

    /// A retry the budget did not allow.
    pub(crate) fn retry_budget_exhausted(&self, service: usize) {
        if let Some(c) = self.resilience.get(service) {
            c.budget_exhausted.inc();
        }
    }

    /// A backend ejected by outlier detection.
    pub(crate) fn backend_ejected(&self, service: usize) {
        if let Some(c) = self.resilience.get(service) {
            c.ejections.inc();
        }
    }

    /// One part of an aggregation route answered (`result`: ok or why it failed).
    pub(crate) fn aggregate_part(&self, route: &str, part: &str, result: &str) {
        self.aggregate_parts.with_label_values(&[route, part, result]).inc();
    }

    /// A request refused by the circuit breaker (`in_flight`: over `max_in_flight`).
    pub(crate) fn circuit_refused(&self, service: usize, in_flight: bool) {
        if let Some(c) = self.resilience.get(service) {
            if in_flight { &c.refused_in_flight } else { &c.refused_open }.inc();
        }
    }

    /// A failed upstream attempt.
    pub(crate) fn upstream_error(&self, service: usize, kind: UpstreamErrorKind) {
        if let Some(per_kind) = self.upstream_errors.get(service) {
            let i = UpstreamErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(5);
            per_kind[i].inc();
        }
    }
}
