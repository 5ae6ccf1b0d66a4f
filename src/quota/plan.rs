//! Plans and who is on which (docs/plans.md "Plans"): `plans` compiled once per configuration
//! into [`Plans`], and the pure resolution of a request's plan and tenant from what its
//! credentials say. Precedence: the API-key file entry's `plan` (the operator wrote it), else
//! the verified claim `consumers.plan_claim`, else `consumers.default_plan`, else no plan (no
//! quota; usage is still recorded).

use crate::config::{ConsumersSettings, LimitKey, LimitRule, PlansSettings, QuotaSettings};
use std::sync::Arc;
use std::time::Duration;

/// Index of a plan in [`Plans`].
pub(crate) type PlanId = usize;

/// One compiled plan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Its name (`plan` label of the metrics).
    pub(crate) name: Arc<str>,
    /// Requests per calendar window.
    pub(crate) quota: Option<QuotaSettings>,
    /// The plan's rate limit, as the rate limiter's rule (counted per consumer).
    pub(crate) rate_limit: Option<LimitRule>,
}

/// A problem in `plans` or `consumers`, named by its key (`plans.free.quota.requests`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlanProblem {
    /// The key, from the top of the file.
    pub(crate) key: String,
    /// What is wrong.
    pub(crate) message: String,
}

/// Every plan of one configuration and how consumers map to them.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Plans {
    plans: Vec<Plan>,
    plan_claim: Option<String>,
    default_plan: Option<PlanId>,
    tenant_claim: Option<String>,
}

/// Where a request's plan came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlanSource {
    /// The API-key file entry.
    KeyFile,
    /// The verified claim `consumers.plan_claim`.
    Claim,
    /// `consumers.default_plan`.
    Default,
    /// `consumers.default_plan`, because the claim named a plan this configuration lacks.
    DefaultForUnknown,
}

/// A request's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// On this plan.
    Plan(PlanId, PlanSource),
    /// No plan: no quota, no plan rate limit.
    NoPlan,
    /// The claim names a plan this configuration lacks and there is no default plan: refused
    /// (403), never let through unmetered.
    Unknown(String),
}

/// Why a tenant could not be taken from a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TenantError {
    /// The claim holds something that is not a tenant name.
    #[error("claim `{claim}` is not a tenant name (1 to 64 of A-Z a-z 0-9 . _ -)")]
    NotATenant {
        /// The claim's name.
        claim: String,
    },
}

/// Whether `name` is a plan or tenant name (see `config::is_plan_or_tenant_name`).
pub(crate) fn is_name(name: &str) -> bool {
    crate::config::is_plan_or_tenant_name(name)
}

impl Plans {
    /// Compile `plans` and `consumers`; every problem is named by its key.
    pub(crate) fn compile(plans: &PlansSettings, consumers: &ConsumersSettings) -> Result<Plans, Vec<PlanProblem>> {
        let mut problems = Vec::new();
        let mut add = |key: String, message: &str| problems.push(PlanProblem { key, message: message.to_string() });
        let mut compiled = Vec::with_capacity(plans.len());
        for (name, plan) in plans {
            let base = format!("plans.{name}");
            if !is_name(name) {
                add(base.clone(), "a plan name is 1 to 64 of A-Z a-z 0-9 . _ -");
            }
            if plan.quota.is_none() && plan.rate_limit.is_none() {
                add(base.clone(), "a plan needs a `quota`, a `rate_limit` or both");
            }
            if plan.quota.is_some_and(|q| q.requests == 0) {
                add(format!("{base}.quota.requests"), "must be at least 1");
            }
            if let Some(rate) = plan.rate_limit {
                if rate.requests == 0 {
                    add(format!("{base}.rate_limit.requests"), "must be at least 1");
                }
                if rate.per < Duration::from_secs(1) {
                    add(format!("{base}.rate_limit.per"), "must be at least 1s");
                }
            }
            compiled.push(Plan {
                name: name.as_str().into(),
                quota: plan.quota,
                rate_limit: plan.rate_limit.map(|r| LimitRule {
                    requests: r.requests,
                    per: r.per,
                    key: LimitKey::Consumer,
                }),
            });
        }
        let find = |name: &str| compiled.iter().position(|p| &*p.name == name);
        let default_plan = match consumers.default_plan.as_deref() {
            None => None,
            Some(name) => {
                let found = find(name);
                if found.is_none() {
                    add("consumers.default_plan".into(), &format!("`{name}` is not a plan ({})", names(&compiled)));
                }
                found
            }
        };
        for (key, claim) in [("plan_claim", &consumers.plan_claim), ("tenant_claim", &consumers.tenant_claim)] {
            if claim.as_deref().is_some_and(|c| c.trim().is_empty() || c.trim() != c) {
                add(format!("consumers.{key}"), "must name a claim (`plan`, `org.tier`)");
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Plans {
            plans: compiled,
            plan_claim: consumers.plan_claim.clone(),
            default_plan,
            tenant_claim: consumers.tenant_claim.clone(),
        })
    }

    /// Every plan, in name order (for per-plan metrics).
    pub(crate) fn all(&self) -> &[Plan] {
        &self.plans
    }

    /// A plan by id.
    pub(crate) fn get(&self, id: PlanId) -> Option<&Plan> {
        self.plans.get(id)
    }

    /// A plan by name (`-t` checks the API-key file's `plan` entries with it).
    pub(crate) fn find(&self, name: &str) -> Option<PlanId> {
        self.plans.iter().position(|p| &*p.name == name)
    }

    /// The plan of a request whose API-key entry names `key_plan` (checked against the plans
    /// by `-t`) and whose verified claims `claim` reads (dotted paths, as header templates do).
    pub(crate) fn resolve(&self, key_plan: Option<&str>, claim: &dyn Fn(&str) -> Option<String>) -> Resolved {
        if let Some(id) = key_plan.and_then(|name| self.find(name)) {
            return Resolved::Plan(id, PlanSource::KeyFile);
        }
        let claimed = self.plan_claim.as_deref().and_then(claim).filter(|v| !v.is_empty());
        match (claimed, self.default_plan) {
            (Some(name), default) => match (self.find(&name), default) {
                (Some(id), _) => Resolved::Plan(id, PlanSource::Claim),
                (None, Some(id)) => Resolved::Plan(id, PlanSource::DefaultForUnknown),
                (None, None) => Resolved::Unknown(name),
            },
            (None, Some(id)) => Resolved::Plan(id, PlanSource::Default),
            (None, None) => Resolved::NoPlan,
        }
    }

    /// The tenant of a request: the API-key entry's `tenant`, else the verified claim
    /// `consumers.tenant_claim`. A claim that holds something else than a tenant name is
    /// refused, not ignored: a backend that trusts `$tenant` must never see a request whose
    /// tenant was meant but could not be set.
    pub(crate) fn tenant(
        &self,
        key_tenant: Option<&str>,
        claim: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, TenantError> {
        if let Some(tenant) = key_tenant {
            return Ok(Some(tenant.to_string()));
        }
        let Some(name) = self.tenant_claim.as_deref() else { return Ok(None) };
        match claim(name) {
            None => Ok(None),
            Some(value) if is_name(&value) => Ok(Some(value)),
            Some(_) => Err(TenantError::NotATenant { claim: name.to_string() }),
        }
    }
}

/// `free, pro` (for messages).
fn names(plans: &[Plan]) -> String {
    if plans.is_empty() {
        return "no plans are configured".into();
    }
    let names: Vec<&str> = plans.iter().map(|p| &*p.name).collect();
    format!("plans: {}", names.join(", "))
}

/// The consumer a request is counted as: the identity's `sub` (an API key's consumer, a JWT's
/// subject) as written, so one partner is one consumer whichever credential it presents. A
/// Telegram user id is a number anyone can pick by opening an account, so it is counted as
/// `telegram:<id>` and cannot meet an operator-named consumer's quota.
pub(crate) fn consumer_name<'a>(scheme: &str, sub: &'a str) -> std::borrow::Cow<'a, str> {
    if scheme == "telegram" {
        std::borrow::Cow::Owned(format!("telegram:{sub}"))
    } else {
        std::borrow::Cow::Borrowed(sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CalendarWindow, PlanRateSettings, PlanSettings};

    fn settings() -> PlansSettings {
        let mut plans = PlansSettings::new();
        plans.insert(
            "free".into(),
            PlanSettings {
                quota: Some(QuotaSettings { requests: 10_000, per: CalendarWindow::Month }),
                rate_limit: Some(PlanRateSettings { requests: 10, per: Duration::from_secs(1) }),
            },
        );
        plans.insert(
            "pro".into(),
            PlanSettings {
                quota: Some(QuotaSettings { requests: 1_000_000, per: CalendarWindow::Month }),
                rate_limit: None,
            },
        );
        plans
    }

    fn consumers(plan_claim: Option<&str>, default_plan: Option<&str>) -> ConsumersSettings {
        ConsumersSettings {
            plan_claim: plan_claim.map(String::from),
            default_plan: default_plan.map(String::from),
            tenant_claim: Some("tenant".into()),
        }
    }

    fn claims<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn key_file_then_claim_then_default() {
        let plans = Plans::compile(&settings(), &consumers(Some("plan"), Some("free"))).expect("valid");
        let (free, pro) = (plans.find("free").expect("free"), plans.find("pro").expect("pro"));
        let pro_claim = claims(&[("plan", "pro")]);
        assert_eq!(plans.resolve(Some("free"), &pro_claim), Resolved::Plan(free, PlanSource::KeyFile));
        assert_eq!(plans.resolve(None, &pro_claim), Resolved::Plan(pro, PlanSource::Claim));
        assert_eq!(plans.resolve(None, &claims(&[])), Resolved::Plan(free, PlanSource::Default));
        assert_eq!(plans.resolve(None, &claims(&[("plan", "")])), Resolved::Plan(free, PlanSource::Default));
        let gold = claims(&[("plan", "gold")]);
        assert_eq!(plans.resolve(None, &gold), Resolved::Plan(free, PlanSource::DefaultForUnknown));
        let free_plan = plans.get(free).expect("plan");
        assert_eq!(free_plan.rate_limit.as_ref().map(|r| (r.requests, r.key.clone())), Some((10, LimitKey::Consumer)));
    }

    #[test]
    fn without_a_default_an_unknown_claim_is_refused_and_no_claim_is_no_plan() {
        let plans = Plans::compile(&settings(), &consumers(Some("plan"), None)).expect("valid");
        assert_eq!(plans.resolve(None, &claims(&[("plan", "gold")])), Resolved::Unknown("gold".into()));
        assert_eq!(plans.resolve(None, &claims(&[])), Resolved::NoPlan);
        // Without `plan_claim`, a claim named `plan` means nothing.
        let plans = Plans::compile(&settings(), &consumers(None, None)).expect("valid");
        assert_eq!(plans.resolve(None, &claims(&[("plan", "pro")])), Resolved::NoPlan);
    }

    #[test]
    fn tenants_come_from_the_key_file_or_a_clean_claim() {
        let plans = Plans::compile(&settings(), &consumers(None, None)).expect("valid");
        assert_eq!(plans.tenant(Some("acme"), &claims(&[("tenant", "globex")])), Ok(Some("acme".into())));
        assert_eq!(plans.tenant(None, &claims(&[("tenant", "globex")])), Ok(Some("globex".into())));
        assert_eq!(plans.tenant(None, &claims(&[])), Ok(None));
        for bad in ["a/b", "..", "x y", "a\u{e9}", ""] {
            assert!(plans.tenant(None, &claims(&[("tenant", bad)])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mistakes_are_named_by_key() {
        let mut plans = settings();
        plans.insert("bad name".into(), PlanSettings { quota: None, rate_limit: None });
        plans.insert(
            "zero".into(),
            PlanSettings {
                quota: Some(QuotaSettings { requests: 0, per: CalendarWindow::Day }),
                rate_limit: Some(PlanRateSettings { requests: 0, per: Duration::from_millis(500) }),
            },
        );
        let problems = Plans::compile(&plans, &consumers(Some(" "), Some("gold"))).expect_err("invalid");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "plans.bad name",
                "plans.bad name",
                "plans.zero.quota.requests",
                "plans.zero.rate_limit.requests",
                "plans.zero.rate_limit.per",
                "consumers.default_plan",
                "consumers.plan_claim",
            ]
        );
        assert!(
            problems[5].message.contains("`gold` is not a plan (plans: bad name, free, pro, zero)"),
            "{problems:?}"
        );
    }

    #[test]
    fn telegram_users_never_share_an_operator_consumer() {
        assert_eq!(consumer_name("api_key", "acme"), "acme");
        assert_eq!(consumer_name("jwt", "acme"), "acme");
        assert_eq!(consumer_name("telegram", "12345"), "telegram:12345");
    }
}
