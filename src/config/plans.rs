//! `plans`, `consumers`, `usage` and a route's `quota_cost` (issue 29, docs/plans.md): plain data,
//! read straight from the file. The `quota` module turns them into working objects
//! (`quota::Plans::compile`) where a snapshot is built; `usage` reads [`UsageSettings`] as it is.
//!
//! `raw.rs` reads them (`plans`, `consumers`, `usage` at the top level, `quota_cost` on a
//! route) and `validate/plans.rs` checks what [`PlanSettings`] cannot say alone (see
//! docs/plans.md "What `-t` checks"). Every struct rejects unknown keys, as the rest of the file
//! does.

use super::units::ConfDuration;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::time::Duration;

/// `plans`: plan name → plan.
pub type PlansSettings = BTreeMap<String, PlanSettings>;

/// One plan: a quota over a calendar window, a rate limit, or both.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSettings {
    /// `quota`: requests per calendar window (UTC), counted exactly across gateways.
    pub quota: Option<QuotaSettings>,
    /// `rate_limit`: requests per sliding window, per consumer (the rate limiter's arithmetic).
    pub rate_limit: Option<PlanRateSettings>,
}

/// `{requests: 10000, per: month}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    /// Requests (each counting its route's `quota_cost`) per window.
    pub requests: u64,
    /// The calendar window.
    pub per: CalendarWindow,
}

/// A calendar window in UTC: it starts at the top of the hour, at midnight, on Monday at
/// midnight (ISO weeks), or on the first of the month at midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CalendarWindow {
    /// `hour`.
    Hour,
    /// `day`.
    Day,
    /// `week` (ISO: Monday to Sunday).
    Week,
    /// `month`.
    Month,
}

impl CalendarWindow {
    /// The name used in the file (and in keys and headers).
    pub fn name(self) -> &'static str {
        match self {
            CalendarWindow::Hour => "hour",
            CalendarWindow::Day => "day",
            CalendarWindow::Week => "week",
            CalendarWindow::Month => "month",
        }
    }
}

/// `{requests: 10, per: 1s}`: a plan's rate limit (the consumer is the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRateSettings {
    /// Requests per window.
    pub requests: u64,
    /// Window length.
    #[serde(deserialize_with = "duration")]
    pub per: Duration,
}

/// `consumers`: where a consumer's plan and tenant come from when its API-key entry does not
/// name them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumersSettings {
    /// A verified JWT claim naming the plan (`plan`, `tier`, `org.plan`).
    pub plan_claim: Option<String>,
    /// The plan of a consumer that names none (absent: such consumers have no plan and no quota).
    pub default_plan: Option<String>,
    /// A verified JWT claim naming the tenant (`$tenant`).
    pub tenant_claim: Option<String>,
}

/// Where usage records and quota counters live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SharedStoreKind {
    /// In this process only (one gateway).
    #[default]
    Local,
    /// The `rate_limit.redis` connection (single server, Sentinel or Cluster).
    Redis,
}

/// `usage`: per consumer × route × day records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageSettings {
    /// `local` or `redis`.
    #[serde(default)]
    pub store: SharedStoreKind,
    /// How long a day's records are kept after the day ended (default 90d).
    #[serde(default = "default_retention", deserialize_with = "duration")]
    pub retention: Duration,
    /// How often each gateway writes what it gathered (default 10s; also at shutdown and on
    /// upgrade).
    #[serde(default = "default_flush_interval", deserialize_with = "duration")]
    pub flush_interval: Duration,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            store: SharedStoreKind::Local,
            retention: default_retention(),
            flush_interval: default_flush_interval(),
        }
    }
}

/// `usage.retention` when not given.
pub const DEFAULT_USAGE_RETENTION: Duration = Duration::from_secs(90 * 86_400);
/// `usage.flush_interval` when not given.
pub const DEFAULT_USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(10);

fn default_retention() -> Duration {
    DEFAULT_USAGE_RETENTION
}

fn default_flush_interval() -> Duration {
    DEFAULT_USAGE_FLUSH_INTERVAL
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    Ok(ConfDuration::deserialize(d)?.0)
}

/// Longest plan or tenant name.
const MAX_NAME: usize = 64;

/// Whether `name` is a plan or tenant name: 1 to 64 of `A-Z a-z 0-9 . _ -`. Such a name is
/// safe in a header value, a path segment, a metric label and a Redis key.
pub fn is_plan_or_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

/// `routes[].quota_cost`: how many requests one request of the route counts as (default 1).
/// Zero is refused: a free route is a route without a plan's quota, said by leaving the plan
/// off, not by a cost that hides it.
pub fn quota_cost(value: Option<u64>) -> Result<u64, String> {
    match value {
        None => Ok(1),
        Some(0) => Err("must be at least 1 (a request counts as this many against the quota)".into()),
        Some(n) if n > MAX_QUOTA_COST => Err(format!("must be at most {MAX_QUOTA_COST}")),
        Some(n) => Ok(n),
    }
}

/// The largest `quota_cost`.
pub const MAX_QUOTA_COST: u64 = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: for<'de> Deserialize<'de>>(yaml: &str) -> Result<T, String> {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn the_architecture_example_reads() {
        let plans: PlansSettings = read(
            "free: {quota: {requests: 10000, per: month}, rate_limit: {requests: 10, per: 1s}}\npro:  {quota: {requests: 1000000, per: month}, rate_limit: {requests: 200, per: 1s}}\nburst: {rate_limit: {requests: 5, per: 250ms}}\n",
        )
        .expect("valid");
        assert_eq!(
            plans["free"],
            PlanSettings {
                quota: Some(QuotaSettings { requests: 10_000, per: CalendarWindow::Month }),
                rate_limit: Some(PlanRateSettings { requests: 10, per: Duration::from_secs(1) }),
            }
        );
        assert_eq!(plans["burst"].quota, None);
        assert_eq!(plans["burst"].rate_limit.map(|r| r.per), Some(Duration::from_millis(250)));
        let consumers: ConsumersSettings = read("{plan_claim: plan, default_plan: free}").expect("valid");
        assert_eq!(consumers.plan_claim.as_deref(), Some("plan"));
        assert_eq!(consumers.default_plan.as_deref(), Some("free"));
        assert_eq!(consumers.tenant_claim, None);
        let usage: UsageSettings = read("{store: redis, retention: 90d}").expect("valid");
        assert_eq!(usage.store, SharedStoreKind::Redis);
        assert_eq!(usage.retention, DEFAULT_USAGE_RETENTION);
        assert_eq!(usage.flush_interval, DEFAULT_USAGE_FLUSH_INTERVAL);
        let usage: UsageSettings = read("{retention: 30d, flush_interval: 2s}").expect("valid");
        assert_eq!((usage.store, usage.retention), (SharedStoreKind::Local, Duration::from_secs(30 * 86_400)));
    }

    #[test]
    fn mistakes_are_named_by_key() {
        let e = read::<PlansSettings>("free: {quota: {requests: 1, per: year}}").expect_err("no yearly window");
        assert!(e.starts_with("free.quota.per") && e.contains("year"), "{e}");
        let e = read::<PlansSettings>("free: {quota: {requests: 1, per: month, burst: 2}}").expect_err("unknown");
        assert!(e.contains("burst"), "{e}");
        let e = read::<PlansSettings>("free: {rate_limit: {requests: 1, per: 1}}").expect_err("no unit");
        assert!(e.starts_with("free.rate_limit.per") && e.contains("no unit"), "{e}");
        let e = read::<PlansSettings>("free: {quota: {requests: -1, per: day}}").expect_err("negative");
        assert!(e.starts_with("free.quota.requests"), "{e}");
        let e = read::<UsageSettings>("{store: memcached}").expect_err("unknown store");
        assert!(e.starts_with("store"), "{e}");
        let e = read::<ConsumersSettings>("{plan: free}").expect_err("unknown key");
        assert!(e.contains("plan"), "{e}");
    }

    #[test]
    fn quota_cost_is_at_least_one() {
        assert_eq!(quota_cost(None), Ok(1));
        assert_eq!(quota_cost(Some(5)), Ok(5));
        assert!(quota_cost(Some(0)).is_err());
        assert!(quota_cost(Some(MAX_QUOTA_COST + 1)).is_err());
    }
}
