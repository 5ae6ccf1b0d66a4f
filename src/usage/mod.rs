//! Usage tracking (issue 29; docs/plans.md "Usage"): per consumer × route × day, requests by status
//! class and bytes in and out, kept `usage.retention`.
//!
//! The request path only adds to memory ([`meter`]); [`flush`] writes in batches every
//! `usage.flush_interval`, at shutdown and before an upgrade hands over, exactly once per
//! gateway ([`store`]: local, or the rate limiter's Redis through `quota::scripts::Scripts`). Reading:
//! [`query`] (admin `GET /usage`, JSON or CSV), [`report`] (`siger usage`), [`view`] (the status
//! page's usage section, with [`minutes`]: requests per route over the last hour).
//!
//! Not wired yet: the proxy's logging phase calls [`meter::UsageMeter::record`] and
//! [`minutes::RouteMinutes::record`]; see docs/plans.md "Wiring".

pub(crate) mod flush;
pub(crate) mod meter;
pub(crate) mod minutes;
pub(crate) mod query;
pub(crate) mod record;
pub mod report;
pub(crate) mod store;
#[cfg(test)]
mod tests;
pub(crate) mod view;

pub use report::command;

pub(crate) use crate::observability::UsageMetrics;
