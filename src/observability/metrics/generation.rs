//! One configuration generation's metric handles ([`ConfigMetrics`]): per route and per
//! service, resolved when the generation is built so the hot path touches only counters'
//! atomics; `siger_requests_total` children are cached per thread on top. A reload retires
//! the handles of routes and services that are gone, and their series leave the scrape.

use super::Metrics;
use crate::config::Config;
use crate::errors::UpstreamErrorKind;
use http::Method;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// Methods with their own label value; anything else is `other`.
const METHODS: [&str; 10] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other"];

/// Reasons of `siger_upstream_retries_total`.
const RETRY_REASONS: [&str; 3] = ["connect", "reset", "status"];

/// Results of `siger_cache_requests_total`.
const CACHE_RESULTS: [&str; 4] = ["hit", "miss", "stale", "bypass"];
/// Actions of `siger_waf_matches_total`.
const WAF_ACTIONS: [&str; 2] = ["block", "detect"];

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

impl Metrics {
    /// The handles of config generation `generation`.
    pub(crate) fn for_config(&self, config: &Config, generation: u64) -> ConfigMetrics {
        let mut route_labels: Vec<String> = config.routes.iter().map(|r| r.label.clone()).collect();
        route_labels.push(NO_ROUTE.into());
        let service_names: Vec<String> = config.services.iter().map(|s| s.name.clone()).collect();
        for s in &service_names {
            for state in ["healthy", "unhealthy"] {
                self.upstream.backends.with_label_values(&[s.as_str(), state]);
            }
        }
        ConfigMetrics {
            generation,
            retired: std::sync::atomic::AtomicBool::new(false),
            live: {
                self.reloads.live_generations.inc();
                self.reloads.live_generations.clone()
            },
            requests: self.requests.requests.clone(),
            durations: route_labels.iter().map(|r| self.requests.durations.with_label_values(&[r.as_str()])).collect(),
            rate_limited: route_labels
                .iter()
                .map(|r| self.limits.rate_limited.with_label_values(&[r.as_str()]))
                .collect(),
            cache_results: config
                .routes
                .iter()
                .map(|r| {
                    r.cache.as_ref().map(|_| {
                        CACHE_RESULTS.map(|result| self.cache.requests.with_label_values(&[r.label.as_str(), result]))
                    })
                })
                .collect(),
            waf_matches: config
                .routes
                .iter()
                .map(|r| {
                    (r.waf.mode != crate::config::WafMode::Off).then(|| {
                        WAF_ACTIONS.map(|action| self.waf.matches.with_label_values(&[r.label.as_str(), action]))
                    })
                })
                .collect(),
            upstream_errors: service_names
                .iter()
                .map(|s| {
                    UpstreamErrorKind::ALL
                        .iter()
                        .map(|k| self.upstream.errors.with_label_values(&[s.as_str(), k.label()]))
                        .collect()
                })
                .collect(),
            resilience: service_names
                .iter()
                .map(|s| {
                    let (s, u) = (s.as_str(), &self.upstream);
                    ResilienceCounters {
                        retries: RETRY_REASONS.map(|r| u.retries.with_label_values(&[s, r])),
                        budget_exhausted: u.retry_budget_exhausted.with_label_values(&[s]),
                        ejections: u.ejections.with_label_values(&[s]),
                        refused_open: u.circuit_refusals.with_label_values(&[s, "open"]),
                        refused_in_flight: u.circuit_refusals.with_label_values(&[s, "max_in_flight"]),
                    }
                })
                .collect(),
            route_labels,
            service_names,
            aggregate_parts: self.upstream.aggregate_parts.clone(),
        }
    }

    /// A new generation is in force: remove the series of routes and services it no longer
    /// has, and record the reload.
    pub(crate) fn retire(&self, old: &ConfigMetrics, new: &ConfigMetrics, discovered: &[String]) {
        old.retired.store(true, std::sync::atomic::Ordering::Relaxed);
        let kept: HashSet<&String> = new.route_labels.iter().collect();
        let services: HashSet<&String> = new.service_names.iter().collect();
        for name in new.service_names.iter().filter(|n| !discovered.contains(n)) {
            let _ = self.consul.sync_age.remove_label_values(&[name.as_str()]);
        }
        for label in old.route_labels.iter().filter(|l| !kept.contains(l)) {
            for result in CACHE_RESULTS {
                let _ = self.cache.requests.remove_label_values(&[label.as_str(), result]);
            }
            for action in WAF_ACTIONS {
                let _ = self.waf.matches.remove_label_values(&[label.as_str(), action]);
            }
            let _ = self.limits.rate_limited.remove_label_values(&[label.as_str()]);
            self.requests.forget_route(label);
        }
        for name in old.service_names.iter().filter(|n| !services.contains(n)) {
            let n = name.as_str();
            let u = &self.upstream;
            for state in ["healthy", "unhealthy"] {
                let _ = u.backends.remove_label_values(&[n, state]);
            }
            for kind in UpstreamErrorKind::ALL {
                let _ = u.errors.remove_label_values(&[n, kind.label()]);
            }
            for reason in RETRY_REASONS {
                let _ = u.retries.remove_label_values(&[n, reason]);
            }
            for reason in ["open", "max_in_flight"] {
                let _ = u.circuit_refusals.remove_label_values(&[n, reason]);
            }
            for family in [&u.retry_budget_exhausted, &u.ejections] {
                let _ = family.remove_label_values(&[n]);
            }
            for family in [&u.ejected, &u.circuit_state] {
                let _ = family.remove_label_values(&[n]);
            }
            let _ = self.consul.sync_age.remove_label_values(&[n]);
            let _ = self.consul.dns_lookup_failures.remove_label_values(&[n]);
        }
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
                metrics.requests.note_series(label, METHODS[m as usize], status);
                let counter =
                    self.requests.with_label_values(&[label, METHODS[m as usize], status.to_string().as_str()]);
                counter.inc();
                cache.1.insert(key, counter);
            }
        });
        self.durations[r].observe(seconds);
    }

    /// An inspected request that matched (`block`: refused, `detect`: forwarded).
    pub(crate) fn waf_match(&self, route: usize, action: &str) {
        if let Some(Some(counters)) = self.waf_matches.get(route) {
            counters[usize::from(action != "block")].inc();
        }
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

    /// A request refused by a rate limit.
    pub(crate) fn rate_limited(&self, route: Option<usize>) {
        self.rate_limited[self.route_index(route)].inc();
    }

    /// An attempt retried on another backend, by reason (`connect`, `reset`, `status`).
    pub(crate) fn upstream_retry(&self, service: usize, reason: &'static str) {
        if let Some(c) = self.resilience.get(service) {
            let i = RETRY_REASONS.iter().position(|r| *r == reason).unwrap_or(RETRY_REASONS.len() - 1);
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
