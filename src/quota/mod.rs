//! Plans and quotas (issue 29; the user's guide is docs/plans.md): a consumer's plan bundles a
//! quota over a calendar window in UTC and a rate limit; a route's `quota_cost` says how many units
//! one request counts as. Beyond the quota a request gets 429 `quota_exceeded` with `Retry-After`
//! to the window's end and the quota's `RateLimit-*` headers; a store that cannot answer is treated
//! as `rate_limit.on_store_error` says.
//!
//! The pure cores: [`calendar`] (windows, an injectable [`Clock`]), [`plan`] (compiled plans,
//! a request's plan and tenant), [`store`] (the counters: local, or one atomic script per check
//! on the rate limiter's Redis through [`scripts::Scripts`]), [`board`] (quota use for the status
//! page), `observability::metrics::quota` (per-plan series only). [`Quotas`] holds one configuration's plans over
//! the store, which outlives configurations.
//!
//! Wired by src/partner.rs: the proxy's request phase resolves the consumer's plan after
//! authentication and checks its quota after the rate limits; `logging` records its usage.

pub(crate) mod board;
pub(crate) mod calendar;
pub(crate) mod plan;
pub(crate) mod scripts;
pub(crate) mod store;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub(crate) use calendar::Clock;
pub(crate) use plan::{PlanId, Plans, Resolved};
pub(crate) use store::{CheckError, Decision, QuotaStore};

use crate::config::{CalendarWindow, OnStoreError};
use crate::observability::metrics::{Counted, PlanCounters, QuotaMetrics};
use board::QuotaBoard;
use std::sync::Arc;

/// The answer for one request.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The plan has no quota (a rate limit only).
    Unmetered,
    /// Counted; `allowed` says whether the request passes.
    Checked(Decision),
    /// The store gave no answer; `on_store_error` says whether the request passes.
    StoreFailed {
        /// `on_store_error: allow`.
        allow: bool,
        /// What failed.
        error: CheckError,
    },
}

/// A request refused by its quota: what the 429 says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// `Retry-After` and `RateLimit-Reset`: seconds to the window's end.
    pub(crate) retry_after: u64,
    /// `RateLimit-Limit`.
    pub(crate) limit: u64,
    /// The window.
    pub(crate) per: CalendarWindow,
    /// When it ends (RFC 3339).
    pub(crate) resets_at: String,
}

impl Refusal {
    /// The message of the `quota_exceeded` body.
    pub(crate) fn message(&self) -> String {
        format!("quota of {} requests per {} exceeded; it resets at {}", self.limit, self.per.name(), self.resets_at)
    }
}

impl Outcome {
    /// The 429 to answer, if the quota refuses the request.
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        match self {
            Outcome::Checked(d) if !d.allowed => {
                Some(Refusal { retry_after: d.reset, limit: d.limit, per: d.per, resets_at: d.span.end_text() })
            }
            _ => None,
        }
    }

    #[cfg(test)]
    /// Whether the request may pass its quota.
    pub(crate) fn passes(&self) -> bool {
        match self {
            Outcome::Unmetered => true,
            Outcome::Checked(d) => d.allowed,
            Outcome::StoreFailed { allow, .. } => *allow,
        }
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` of one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitHeaders {
    /// `RateLimit-Limit`.
    pub(crate) limit: u64,
    /// `RateLimit-Remaining`.
    pub(crate) remaining: u64,
    /// `RateLimit-Reset`.
    pub(crate) reset: u64,
}

impl From<&Decision> for LimitHeaders {
    fn from(d: &Decision) -> Self {
        LimitHeaders { limit: d.limit, remaining: d.remaining, reset: d.reset }
    }
}

/// The headers of the policy closest to refusing when a request passes both a rate limit and
/// a quota: the one with fewer requests remaining; on a tie, the one that resets later (it is
/// the one the client waits for). One set of headers, so a client never reads two limits as one.
pub(crate) fn nearest(rate: Option<LimitHeaders>, quota: Option<LimitHeaders>) -> Option<LimitHeaders> {
    match (rate, quota) {
        (Some(r), Some(q)) => {
            Some(if (q.remaining, std::cmp::Reverse(q.reset)) < (r.remaining, std::cmp::Reverse(r.reset)) {
                q
            } else {
                r
            })
        }
        (r, q) => r.or(q),
    }
}

/// One configuration's plans over the quota store.
#[derive(Debug)]
pub(crate) struct Quotas {
    plans: Plans,
    counters: Vec<PlanCounters>,
    store: Arc<QuotaStore>,
    on_store_error: OnStoreError,
    clock: Arc<dyn Clock>,
    board: Arc<QuotaBoard>,
    unknown_plan: prometheus::IntCounter,
}

impl Quotas {
    /// `plans` counted in `store` (kept across reloads by the caller, as the rate limiter keeps
    /// its stores), failures handled as `on_store_error`, answers noted on `board`.
    pub(crate) fn new(
        plans: Plans,
        store: Arc<QuotaStore>,
        on_store_error: OnStoreError,
        clock: Arc<dyn Clock>,
        board: Arc<QuotaBoard>,
        metrics: &QuotaMetrics,
    ) -> Self {
        let counters = plans.all().iter().map(|p| metrics.plan(&p.name)).collect();
        Quotas { plans, counters, store, on_store_error, clock, board, unknown_plan: metrics.unknown_plan.clone() }
    }

    /// The plan of a request (see [`Plans::resolve`]); a claim naming a plan this
    /// configuration lacks is counted in `siger_quota_unknown_plan_total` and logged at debug
    /// (a name from a token is never a metric label).
    pub(crate) fn plan_of(&self, key_plan: Option<&str>, claim: &dyn Fn(&str) -> Option<String>) -> Resolved {
        let resolved = self.plans.resolve(key_plan, claim);
        match &resolved {
            Resolved::Unknown(name) => {
                self.unknown_plan.inc();
                log::debug!("plan claim names `{name}`, not a plan; no default plan: refused");
            }
            Resolved::Plan(_, plan::PlanSource::DefaultForUnknown) => {
                self.unknown_plan.inc();
                log::debug!("plan claim names a plan this configuration lacks; the default plan applies");
            }
            _ => {}
        }
        resolved
    }

    /// The plans.
    pub(crate) fn plans(&self) -> &Plans {
        &self.plans
    }

    /// Count one request of `consumer` on `plan` as `cost` units (the route's `quota_cost`).
    /// One store round trip when the plan has a quota, none otherwise.
    pub(crate) async fn check(&self, consumer: &str, plan: PlanId, cost: u64) -> Outcome {
        let (Some(p), Some(counters)) = (self.plans.get(plan), self.counters.get(plan)) else {
            return Outcome::Unmetered;
        };
        let Some(quota) = p.quota else { return Outcome::Unmetered };
        match self.store.check(consumer, quota, cost, self.clock.now_ms()).await {
            Ok(decision) => {
                counters.count(if decision.allowed { Counted::Allowed } else { Counted::Exceeded }, cost);
                self.board.note(consumer, &p.name, &decision);
                Outcome::Checked(decision)
            }
            Err(error) => {
                let allow = self.on_store_error == OnStoreError::Allow;
                counters.count(if allow { Counted::StoreErrorAllowed } else { Counted::StoreErrorDenied }, cost);
                Outcome::StoreFailed { allow, error }
            }
        }
    }
}
