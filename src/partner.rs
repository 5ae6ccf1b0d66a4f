//! The partner program (docs/plans.md), wired over `quota` and `usage`: who a request counts as
//! and on which plan, its quota check, and its usage record. [`PartnerStores`] is what outlives
//! configurations (the local counters, the usage meter, the quota board, the clock); a
//! [`Program`] is one configuration's view over them, built with the snapshot. A configuration
//! without `plans` and `usage` has no program: requests pay nothing for it.
//!
//! The request phases call [`Program::member`] after authentication, [`Program::check`] after
//! the rate limit, and [`Program::record`] in `logging`; each takes plain values.

use crate::config::{Config, RateLimitStore, SharedStoreKind, UsageSettings};
use crate::errors::GatewayError;
use crate::observability::metrics::{QuotaMetrics, UsageMetrics};
use crate::quota::board::QuotaBoard;
use crate::quota::calendar::{day_of, Clock, SystemClock};
use crate::quota::plan::{consumer_name, Resolved};
use crate::quota::store::{LocalCounters, QuotaStore, DEFAULT_MAX_CONSUMERS};
use crate::quota::{nearest, CheckError, LimitHeaders, Outcome, PlanId, Plans, Quotas};
use crate::ratelimit::RedisStore;
use crate::usage::flush::FlushTarget;
use crate::usage::meter::UsageMeter;
use crate::usage::minutes::RouteMinutes;
use crate::usage::store::{LocalUsage, UsageStore, DEFAULT_MAX_LOCAL_RECORDS};
use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex};

/// What outlives a configuration.
#[derive(Debug)]
pub(crate) struct PartnerStores {
    /// Where quota windows and usage days take their time from.
    pub(crate) clock: Arc<dyn Clock>,
    local_quota: Arc<QuotaStore>,
    local_usage: Mutex<Option<Arc<UsageStore>>>,
    /// Requests gathered since the last flush.
    pub(crate) meter: Arc<UsageMeter>,
    /// Each consumer's quota use as last seen (the status page).
    pub(crate) board: Arc<QuotaBoard>,
    minutes: Mutex<Option<Arc<RouteMinutes>>>,
    /// Where and how often the flusher writes (the configuration in force says).
    pub(crate) flush_target: Arc<ArcSwap<FlushTarget>>,
    quota_metrics: QuotaMetrics,
    /// The usage families (the flusher's).
    pub(crate) usage_metrics: UsageMetrics,
}

/// The process's clock. A debug build (the test suite's) may be told to run it off by
/// `SIGER_TEST_CLOCK_OFFSET_MS`, so tests stand gateways just before a window's end; a release
/// build has no such switch.
fn process_clock() -> Arc<dyn Clock> {
    #[cfg(debug_assertions)]
    if let Some(offset) = std::env::var("SIGER_TEST_CLOCK_OFFSET_MS").ok().and_then(|v| v.parse::<i64>().ok()) {
        return Arc::new(OffsetClock(offset));
    }
    Arc::new(SystemClock)
}

/// The system clock moved by a fixed offset (debug builds, tests only).
#[cfg(debug_assertions)]
#[derive(Debug)]
struct OffsetClock(i64);

#[cfg(debug_assertions)]
impl Clock for OffsetClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.0
    }
}

impl PartnerStores {
    /// The lasting state, reporting to `quota_metrics` and `usage_metrics`.
    pub(crate) fn new(quota_metrics: QuotaMetrics, usage_metrics: UsageMetrics) -> Self {
        let local_usage =
            Arc::new(UsageStore::Local(LocalUsage::new(UsageSettings::default().retention, DEFAULT_MAX_LOCAL_RECORDS)));
        let target = FlushTarget { store: local_usage.clone(), interval: UsageSettings::default().flush_interval };
        PartnerStores {
            clock: process_clock(),
            local_quota: Arc::new(QuotaStore::Local(LocalCounters::new(DEFAULT_MAX_CONSUMERS))),
            local_usage: Mutex::new(Some(local_usage)),
            meter: Arc::new(UsageMeter::default()),
            board: Arc::new(QuotaBoard::default()),
            minutes: Mutex::new(None),
            flush_target: Arc::new(ArcSwap::from_pointee(target)),
            quota_metrics,
            usage_metrics,
        }
    }

    /// The program of `config` over these stores (`None`: no plans and no `usage`), its
    /// shared store `redis` (the rate limiter's, `rate_limit.store: redis`). Changes nothing
    /// until [`PartnerStores::commit`].
    pub(crate) fn program(
        &self,
        config: &Config,
        plans: Option<&Arc<Plans>>,
        redis: Option<&Arc<RedisStore>>,
    ) -> Option<Program> {
        if plans.is_none() && config.usage.is_none() {
            return None;
        }
        let settings = config.usage.unwrap_or_default();
        let shared = match (&config.rate_limit.store, redis) {
            (RateLimitStore::Redis(_), Some(store)) => Some(store.clone()),
            _ => None,
        };
        let quota_store = match &shared {
            Some(store) => Arc::new(QuotaStore::Shared(store.clone())),
            None => self.local_quota.clone(),
        };
        let usage = match (settings.store, &shared) {
            (SharedStoreKind::Redis, Some(store)) => {
                Arc::new(UsageStore::Shared { scripts: store.clone(), retention: settings.retention })
            }
            _ => self.local_usage(settings),
        };
        let quotas = plans.map(|plans| {
            Quotas::new(
                (**plans).clone(),
                quota_store,
                config.rate_limit.on_store_error,
                self.clock.clone(),
                self.board.clone(),
                &self.quota_metrics,
            )
        });
        let labels: Vec<Arc<str>> = config.routes.iter().map(|r| Arc::from(r.label.as_str())).collect();
        let previous = self.minutes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let minutes = Arc::new(RouteMinutes::new(&labels, previous.as_deref()));
        Some(Program {
            quotas,
            usage,
            meter: self.meter.clone(),
            minutes,
            labels,
            clock: self.clock.clone(),
            flush_interval: settings.flush_interval,
            retention: settings.retention,
        })
    }

    /// The local usage store (one per process: its records outlive reloads).
    fn local_usage(&self, settings: UsageSettings) -> Arc<UsageStore> {
        let mut local = self.local_usage.lock().unwrap_or_else(|p| p.into_inner());
        local
            .get_or_insert_with(|| {
                Arc::new(UsageStore::Local(LocalUsage::new(settings.retention, DEFAULT_MAX_LOCAL_RECORDS)))
            })
            .clone()
    }

    /// Make `program` (of the generation now in force) the one the flusher and the next
    /// generation follow; forget the series of plans it no longer has.
    pub(crate) fn commit(&self, program: Option<&Program>, previous: Option<&Plans>) {
        if let Some(program) = program {
            *self.minutes.lock().unwrap_or_else(|p| p.into_inner()) = Some(program.minutes.clone());
            // The local store's records outlive reloads; a reloaded retention applies to them.
            if let UsageStore::Local(records) = &*program.usage {
                records.set_retention(program.retention);
            }
            self.flush_target
                .store(Arc::new(FlushTarget { store: program.usage.clone(), interval: program.flush_interval }));
        }
        let now = program.and_then(Program::plans);
        for gone in previous.iter().flat_map(|p| p.all()) {
            if now.is_none_or(|plans| plans.find(&gone.name).is_none()) {
                self.quota_metrics.forget(&gone.name);
            }
        }
    }

    /// Forget local quota counters whose windows ended.
    pub(crate) fn sweep(&self) {
        if let QuotaStore::Local(counters) = &*self.local_quota {
            counters.sweep(self.clock.now_ms());
        }
    }
}

/// Writes usage every `usage.flush_interval`, at shutdown and before an upgraded process takes
/// over (Pingora stops background services then; the flusher holds the exit until its last
/// write), and forgets ended local quota windows every minute.
pub(crate) struct PartnerService {
    stores: Arc<PartnerStores>,
    /// The process's exit waits for the flusher's last flush.
    exit: crate::lifecycle::ReservedCleanup,
}

impl PartnerService {
    /// The service over `stores`, holding `lifecycle`'s exit through its last flush.
    pub(crate) fn new(stores: Arc<PartnerStores>, lifecycle: Arc<crate::lifecycle::Lifecycle>) -> Self {
        PartnerService { stores, exit: lifecycle.reserve_cleanup() }
    }
}

/// How often ended local quota windows are forgotten.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for PartnerService {
    async fn start(&self, shutdown: pingora::server::ShutdownWatch) {
        let stores = &self.stores;
        let target = stores.flush_target.load_full();
        let flusher = crate::usage::flush::Flusher::new(
            stores.meter.clone(),
            target.store.clone(),
            stores.clock.clone(),
            stores.usage_metrics.clone(),
        )
        .following(stores.flush_target.clone());
        let sweeping = async {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                stores.sweep();
            }
        };
        tokio::select! {
            () = flusher.run(target.interval, shutdown, self.exit.claim()) => {}
            () = sweeping => {}
        }
    }
}

/// One configuration's partner program.
#[derive(Debug)]
pub(crate) struct Program {
    quotas: Option<Quotas>,
    usage: Arc<UsageStore>,
    meter: Arc<UsageMeter>,
    minutes: Arc<RouteMinutes>,
    labels: Vec<Arc<str>>,
    clock: Arc<dyn Clock>,
    flush_interval: std::time::Duration,
    retention: std::time::Duration,
}

/// Who an authenticated request counts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// The consumer (quotas and usage are per consumer).
    pub(crate) consumer: String,
    /// Its plan, if any.
    pub(crate) plan: Option<PlanId>,
    /// Its tenant (`$tenant`), if any.
    pub(crate) tenant: Option<Arc<str>>,
}

/// What a verified credential says, as plain values.
pub(crate) struct Credential<'a> {
    /// `api_key`, `jwt`, `telegram`.
    pub(crate) scheme: &'a str,
    /// Its subject.
    pub(crate) sub: &'a str,
    /// The API-key file entry's `plan`.
    pub(crate) key_plan: Option<&'a str>,
    /// The API-key file entry's `tenant`.
    pub(crate) key_tenant: Option<&'a str>,
    /// Its verified claims by name (dotted paths).
    pub(crate) claim: &'a dyn Fn(&str) -> Option<String>,
}

impl Program {
    /// The plans (`None`: usage only).
    pub(crate) fn plans(&self) -> Option<&Plans> {
        self.quotas.as_ref().map(Quotas::plans)
    }

    /// The usage store (admin `GET /usage`, the status page).
    pub(crate) fn usage(&self) -> &Arc<UsageStore> {
        &self.usage
    }

    /// Requests per route and minute (the status page).
    pub(crate) fn minutes(&self) -> &RouteMinutes {
        &self.minutes
    }

    /// Now, by the program's clock (Unix ms).
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The consumer, plan and tenant of a request whose credential is `who`. A claim naming a
    /// plan this configuration lacks, without a default plan, is refused (403): it never passes
    /// unmetered; so is a tenant claim that is not a tenant name.
    pub(crate) fn member(&self, who: &Credential<'_>) -> Result<Member, GatewayError> {
        let consumer = consumer_name(who.scheme, who.sub).into_owned();
        let Some(quotas) = &self.quotas else {
            return Ok(Member { consumer, plan: None, tenant: who.key_tenant.map(Arc::from) });
        };
        let plan = match quotas.plan_of(who.key_plan, who.claim) {
            Resolved::Plan(id, _) => Some(id),
            Resolved::NoPlan => None,
            Resolved::Unknown(_) => {
                return Err(GatewayError::Forbidden("the credential names a plan this gateway does not offer".into()))
            }
        };
        let tenant = quotas
            .plans()
            .tenant(who.key_tenant, who.claim)
            .map_err(|e| GatewayError::Forbidden(e.to_string()))?
            .map(Arc::from);
        Ok(Member { consumer, plan, tenant })
    }

    /// Count one request of `member` costing `cost` against its plan's quota: the `RateLimit-*`
    /// headers of the quota when it passes (`None`: no quota, or the store failed and
    /// `on_store_error: allow`), or the refusal.
    pub(crate) async fn check(&self, member: &Member, cost: u64) -> Result<Option<LimitHeaders>, GatewayError> {
        let (Some(quotas), Some(plan)) = (&self.quotas, member.plan) else { return Ok(None) };
        answer(quotas.check(&member.consumer, plan, cost).await)
    }

    /// Record one finished request of `consumer` (if it had one) on route `route`.
    pub(crate) fn record(&self, consumer: Option<&str>, route: usize, status: u16, bytes_in: u64, bytes_out: u64) {
        let now = self.clock.now_ms();
        self.minutes.record(route, now);
        if let (Some(consumer), Some(label)) = (consumer, self.labels.get(route)) {
            self.meter.record(consumer, label, day_of(now), status, bytes_in, bytes_out);
        }
    }
}

/// What a quota check's outcome means for the request.
fn answer(outcome: Outcome) -> Result<Option<LimitHeaders>, GatewayError> {
    if let Some(refusal) = outcome.refusal() {
        let message = refusal.message();
        return Err(GatewayError::QuotaExceeded { retry_after: refusal.retry_after, limit: refusal.limit, message });
    }
    match outcome {
        Outcome::Checked(d) => Ok(Some(LimitHeaders::from(&d))),
        Outcome::Unmetered => Ok(None),
        Outcome::StoreFailed { allow, error } => {
            // While the store cools down after a failure, the failure was already logged.
            if !matches!(error, CheckError::Store(crate::ratelimit::StoreError::CoolingDown)) {
                log::warn!("quota store failed ({}): {error}", if allow { "allowing" } else { "denying" });
            }
            if allow {
                Ok(None)
            } else {
                Err(GatewayError::Unavailable { message: "quota store unavailable".into(), retry_after: 1 })
            }
        }
    }
}

/// The one set of `RateLimit-*` headers of a request admitted by its route's limit, its plan's
/// limit and its quota: the one closest to refusing it.
pub(crate) fn closest(limits: &[Option<LimitHeaders>]) -> Option<LimitHeaders> {
    limits.iter().copied().fold(None, nearest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CalendarWindow;
    use crate::quota::calendar::{at_utc, span};
    use crate::quota::store::Decision;

    fn decision(allowed: bool, used: u64, limit: u64) -> Decision {
        let now = at_utc("2026-12-31T23:59:30");
        let span = span(CalendarWindow::Day, now);
        Decision {
            allowed,
            limit,
            used,
            remaining: limit.saturating_sub(used),
            reset: span.seconds_left(now),
            span,
            per: CalendarWindow::Day,
        }
    }

    /// The service holds the process's exit from when it is built, before any signal can come,
    /// until its last flush: the drain cannot exit in between with usage unwritten.
    #[tokio::test]
    async fn the_service_holds_the_exit_from_when_it_is_built_until_its_last_flush() {
        use pingora::services::background::BackgroundService;
        let lifecycle = crate::lifecycle::Lifecycle::new();
        let stores = PartnerStores::new(QuotaMetrics::default(), UsageMetrics::default());
        let service = PartnerService::new(Arc::new(stores), lifecycle.clone());
        assert_eq!(lifecycle.cleanups_pending(), 1, "held before the service starts");
        let (_signal, shutdown) = tokio::sync::watch::channel(true);
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), service.start(shutdown)).await;
        assert!(stopped.is_ok(), "the service stops on the signal");
        assert_eq!(lifecycle.cleanups_pending(), 0, "released after the last flush");
    }

    #[test]
    fn outcomes_map_to_headers_refusals_and_the_store_policy() {
        let passed = answer(Outcome::Checked(decision(true, 3, 10))).expect("passes");
        assert_eq!(passed, Some(LimitHeaders { limit: 10, remaining: 7, reset: 30 }));
        let refused = answer(Outcome::Checked(decision(false, 10, 10))).expect_err("429");
        assert_eq!((refused.status(), refused.code()), (429, "quota_exceeded"));
        let e = crate::quota::CheckError::Store(crate::ratelimit::StoreError::CoolingDown);
        assert_eq!(answer(Outcome::StoreFailed { allow: true, error: e.clone() }).expect("fail open"), None);
        let denied = answer(Outcome::StoreFailed { allow: false, error: e }).expect_err("fail closed");
        assert_eq!(denied.status(), 503);
        assert_eq!(answer(Outcome::Unmetered).expect("no quota"), None);
    }

    fn config(extra: &str) -> Config {
        let text = format!(
            "listen: [\"127.0.0.1:1\"]\n{extra}services:\n  s: {{targets: [\"127.0.0.1:2\"]}}\nroutes:\n  - {{path: /, service: s, auth: public}}\n"
        );
        crate::config::parse(&text, std::path::Path::new("."), &std::collections::HashMap::new()).expect("valid")
    }

    #[test]
    fn without_plans_and_usage_there_is_no_program_and_usage_alone_follows_its_settings() {
        let stores = PartnerStores::new(QuotaMetrics::default(), UsageMetrics::default());
        assert!(stores.program(&config(""), None, None).is_none(), "a request pays nothing");
        let program = stores.program(&config("usage: {flush_interval: 2s}\n"), None, None).expect("a program");
        assert!(program.plans().is_none());
        stores.commit(Some(&program), None);
        assert_eq!(stores.flush_target.load().interval, std::time::Duration::from_secs(2));
        assert!(Arc::ptr_eq(&stores.flush_target.load().store, program.usage()), "the flusher writes where it reads");
    }

    #[test]
    fn one_set_of_headers_the_closest_to_refusing() {
        let rate = LimitHeaders { limit: 10, remaining: 9, reset: 1 };
        let quota = LimitHeaders { limit: 1000, remaining: 5, reset: 3600 };
        assert_eq!(closest(&[Some(rate), None, Some(quota)]), Some(quota));
        assert_eq!(closest(&[Some(rate), None, None]), Some(rate));
        assert_eq!(closest(&[None, None, None]), None);
    }
}
