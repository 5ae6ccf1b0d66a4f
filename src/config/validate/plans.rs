//! `plans`, `consumers`, `usage` and the routes' `quota_cost` (docs/plans.md "What `-t`
//! checks"): what the settings alone say. The plans are compiled by `quota::Plans::compile` in
//! the snapshot's compile step (its problems are named by key), where the API-key file's `plan`
//! entries are checked against them.

use super::Problems;
use crate::config::raw::RawConfig;
use crate::config::{AuthMode, RateLimitSettings, RateLimitStore, RouteSettings, SharedStoreKind};
use std::time::Duration;

/// Shortest `usage.retention`: a day's records must outlive the day.
const MIN_RETENTION: Duration = Duration::from_secs(86_400);
/// `usage.flush_interval` bounds: often enough to bill, rarely enough not to load the store.
const FLUSH_BOUNDS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

pub(super) fn check_plans(raw: &RawConfig, routes: &[RouteSettings], rate_limit: &RateLimitSettings, p: &mut Problems) {
    // The plans themselves are compiled (and their problems named) with the snapshot, by
    // `quota::Plans::compile`.
    let smallest = raw.plans.iter().filter_map(|(name, plan)| plan.quota.map(|q| (q.requests, name))).min();
    for (i, route) in routes.iter().enumerate().filter(|(_, r)| r.quota_cost > 1) {
        let key = format!("routes[{i}].quota_cost");
        if route.auth == AuthMode::Public {
            p.warn(&key, "a public route has no consumer: no plan's quota counts its requests");
        } else if let Some((requests, name)) = smallest.filter(|(r, _)| route.quota_cost > *r) {
            p.warn(&key, format!("is more than plan `{name}`'s quota of {requests}: its consumers are always refused"));
        }
    }
    if raw.consumers.is_some() && raw.plans.is_empty() {
        p.warn("consumers", "configured, but there are no `plans`");
    }
    let shared = matches!(rate_limit.store, RateLimitStore::Redis(_));
    if let Some(usage) = &raw.usage {
        if usage.store == SharedStoreKind::Redis && !shared {
            p.add("usage.store", "`redis` uses the `rate_limit.redis` connection; configure `rate_limit.store: redis` and `rate_limit.redis`");
        }
        if usage.store == SharedStoreKind::Local {
            p.warn("usage.store", "`local`: usage is kept in memory and lost at restart (bill from `redis`)");
        }
        if usage.retention < MIN_RETENTION {
            p.add("usage.retention", "must be at least 1d");
        }
        if usage.flush_interval < FLUSH_BOUNDS.0 || usage.flush_interval > FLUSH_BOUNDS.1 {
            p.add("usage.flush_interval", "must be between 1s and 5m");
        }
    }
}
