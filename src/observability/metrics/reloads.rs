//! Configuration generations: reloads by result, the generation in force, the generations
//! still held, and when the one in force was loaded.

use super::{counter_vec, float_gauge, gauge, gauge_vec};
use prometheus::{Gauge, IntCounterVec, IntGauge, IntGaugeVec, Registry};

/// The reload families.
#[derive(Clone)]
pub(crate) struct ReloadMetrics {
    reloads: IntCounterVec,
    generation: IntGauge,
    pub(crate) live_generations: IntGauge,
    last_reload: Gauge,
    /// `config_source`: the revision in force, refusals, the store link (series only exist
    /// on a gateway that follows a store).
    source_revision: IntGaugeVec,
    source_refused: IntCounterVec,
    source_connected: IntGaugeVec,
}

impl ReloadMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        let reloads =
            counter_vec(registry, "siger_config_reloads_total", "Configuration reloads by result", &["result"]);
        for result in ["ok", "failed"] {
            reloads.with_label_values(&[result]);
        }
        ReloadMetrics {
            reloads,
            generation: gauge(registry, "siger_config_generation", "Generation of the configuration in force"),
            live_generations: gauge(
                registry,
                "siger_config_generations_live",
                "Configuration generations still held (the one in force and those of requests still running on older ones)",
            ),
            last_reload: float_gauge(
                registry,
                "siger_config_last_reload_timestamp_seconds",
                "Unix time the configuration in force was loaded",
            ),
            source_revision: gauge_vec(
                registry,
                "siger_config_source_revision",
                "Revision of the config store's document in force (0: none applied yet)",
                &["bucket", "key"],
            ),
            source_refused: counter_vec(
                registry,
                "siger_config_source_refused_total",
                "Revisions of the config store's document this gateway refused (it kept the last good one)",
                &["bucket", "key"],
            ),
            source_connected: gauge_vec(
                registry,
                "siger_config_source_connected",
                "1 while the gateway reaches the config store, 0 while it does not",
                &["bucket", "key"],
            ),
        }
    }

    /// The store's revision `revision` is in force (0: none yet); also makes the refusal
    /// counter's series exist.
    pub(crate) fn source_revision(&self, bucket: &str, key: &str, revision: u64) {
        self.source_revision.with_label_values(&[bucket, key]).set(revision as i64);
        self.source_refused.with_label_values(&[bucket, key]);
    }

    /// A revision of the store's document was refused.
    pub(crate) fn source_refused(&self, bucket: &str, key: &str) {
        self.source_refused.with_label_values(&[bucket, key]).inc();
    }

    /// Whether the store is reachable.
    pub(crate) fn source_connected(&self, bucket: &str, key: &str, connected: bool) {
        self.source_connected.with_label_values(&[bucket, key]).set(i64::from(connected));
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
}
