//! Configuration generations: reloads by result, the generation in force, the generations
//! still held, and when the one in force was loaded.

use super::{counter_vec, float_gauge, gauge};
use prometheus::{Gauge, IntCounterVec, IntGauge, Registry};

/// The reload families.
#[derive(Clone)]
pub(crate) struct ReloadMetrics {
    reloads: IntCounterVec,
    generation: IntGauge,
    pub(crate) live_generations: IntGauge,
    last_reload: Gauge,
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
}
