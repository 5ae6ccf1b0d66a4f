//! `siger_auth_failures_total`.

use super::counter_vec;
use prometheus::{IntCounterVec, Registry};

/// Reasons of `siger_auth_failures_total`.
pub(crate) const AUTH_REASONS: &[&str] = &["missing_token", "invalid_token", "expired", "forbidden", "jwks_refresh"];

/// Authentication and authorization failures.
#[derive(Clone)]
pub(crate) struct AuthMetrics {
    failures: IntCounterVec,
}

impl AuthMetrics {
    pub(super) fn register(registry: &Registry) -> Self {
        let failures = counter_vec(
            registry,
            "siger_auth_failures_total",
            "Authentication and authorization failures by reason",
            &["reason"],
        );
        for reason in AUTH_REASONS {
            failures.with_label_values(&[reason]);
        }
        AuthMetrics { failures }
    }

    /// A failure (`reason` from [`AUTH_REASONS`]).
    pub(crate) fn failure(&self, reason: &str) {
        self.failures.with_label_values(&[reason]).inc();
    }
}
