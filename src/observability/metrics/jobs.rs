//! Job submissions: published, failed, publish-to-ack latency.

use super::{counter, counter_vec, histogram};
use prometheus::{Histogram, IntCounter, IntCounterVec, Registry};

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

/// The jobs families.
#[derive(Clone)]
pub(crate) struct JobMetrics {
    /// Jobs acknowledged by JetStream.
    pub(crate) published: IntCounter,
    failed: IntCounterVec,
    /// Publish-to-ack latency of jobs.
    pub(crate) publish_seconds: Histogram,
}

impl JobMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        let failed =
            counter_vec(registry, "siger_jobs_failed_total", "Job submissions that failed, by reason", &["reason"]);
        for reason in JOB_FAILURE_REASONS {
            failed.with_label_values(&[reason]);
        }
        JobMetrics {
            published: counter(registry, "siger_jobs_published_total", "Jobs acknowledged by JetStream"),
            failed,
            publish_seconds: histogram(registry, "siger_jobs_publish_seconds", "JetStream publish-to-ack latency"),
        }
    }

    /// A failed submission.
    pub(crate) fn failed(&self, reason: &str) {
        self.failed.with_label_values(&[reason]).inc();
    }
}
