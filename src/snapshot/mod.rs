//! One configuration generation, immutable once built: the validated config with everything
//! derived from it that requests read — the route table, each service's pool, the
//! authenticator, the rate limits, the metric handles, and what [`compile`] built from the
//! settings (certificates, key tables, schemas).
//!
//! [`check`] is the one way from a config file to a generation's ingredients, used by `-t`,
//! a start, `siger token`, a reload and `siger upgrade`: load and validate the file, then
//! compile it; every problem of either step names its key and line.
//!
//! A request pins the snapshot in force when it starts (`new_ctx`) and finishes on it, so a
//! reload never changes the rules under a request in flight. What must survive a reload
//! (backend health, least-conn counters, limit counters, connections) lives in the process's
//! runtime and is shared by the snapshots built over it.

mod compile;

pub(crate) use compile::Compiled;

use crate::auth::Authenticator;
use crate::config::{self, Config, ConfigErrors, RouteId, RouteSettings, ServiceId, ServiceSettings};
use crate::forwarding;
use crate::jobs::Jobs;
use crate::observability::{ConfigMetrics, Metrics};
use crate::partner::{PartnerStores, Program};
use crate::policy::schema::BodySchema;
use crate::ratelimit::{LimitStores, RateLimiter};
use crate::routing::RouteTable;
use crate::upstream::{Pool, Upstreams};
use http::HeaderName;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// A config file that passed every check, with what was built from it: what a generation is
/// made of.
#[derive(Debug)]
pub struct Checked {
    pub(crate) config: Config,
    pub(crate) compiled: Compiled,
}

impl Checked {
    /// The validated configuration (its warnings include those of the compile step).
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Load, validate and compile the config file at `path`: its errors (the compile step's only
/// once the plain ones are fixed) with key and line, or the generation's ingredients.
pub(crate) fn check(path: &Path) -> Result<Checked, ConfigErrors> {
    let (config, locator) = config::load_located(path)?;
    compiled(config, &locator).map_err(|errors| ConfigErrors { file: path.display().to_string(), errors })
}

/// [`check`] for config text that is not a file of its own (a stored document merged with
/// the bootstrap file); relative paths in it resolve against `base`.
pub(crate) fn check_text(text: &str, base: &Path) -> Result<Checked, Vec<config::ConfigError>> {
    let (config, locator) = config::parse_located(text, base, &config::ProcessEnv)?;
    compiled(config, &locator)
}

/// Compile a validated `config` whose keys `locator` finds: what was built, its warnings merged
/// into the config's in file order; or the errors.
fn compiled(mut config: Config, locator: &config::Locator) -> Result<Checked, Vec<config::ConfigError>> {
    let (compiled, findings) = compile::compile(&config);
    let (errors, warnings) = locator.locate(findings);
    if !errors.is_empty() {
        return Err(errors);
    }
    config.warnings.extend(warnings);
    config.warnings.sort_by_key(|w| w.line.unwrap_or(usize::MAX));
    Ok(Checked { config, compiled })
}

/// Where a generation's config came from.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The config file.
    pub(crate) path: PathBuf,
    /// sha256 (hex) of the file's bytes.
    pub(crate) sha256: String,
    /// When it was loaded.
    pub(crate) loaded_at: SystemTime,
}

/// One configuration generation.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// 1 for the config the process started with, +1 per successful reload.
    pub(crate) generation: u64,
    /// The validated config.
    pub(crate) config: Config,
    /// Where it came from.
    pub(crate) source: Source,
    /// Route lookup structure.
    pub(crate) routes: RouteTable,
    /// Pools, indexed by [`ServiceId`].
    pub(crate) pools: Vec<Arc<Pool>>,
    /// JWT verification; `None` without `auth.jwt`, or (at start-up only) when its keys failed
    /// to load: routes needing auth then fail closed with 503.
    pub(crate) auth: Option<Arc<Authenticator>>,
    /// Route rate limits and their store.
    pub(crate) limiter: RateLimiter,
    /// This generation's metric handles.
    pub(crate) metrics: ConfigMetrics,
    /// Headers only the gateway sets upstream (forwarding and claim headers): no client
    /// spelling of them passes, underscore variants included.
    pub(crate) protected_headers: Vec<HeaderName>,
    /// Headers that carry a verified identity upstream ([`Config::identity_headers`]).
    pub(crate) identity_headers: Vec<HeaderName>,
    /// What was built from the settings (certificates, key tables, schemas, store clients).
    pub(crate) compiled: Compiled,
    /// Plans, quotas and usage (`None` without `plans` and `usage`: requests pay nothing).
    pub(crate) program: Option<Program>,
}

impl Snapshot {
    /// Build a generation from `checked` over the process's lasting state (nothing is swapped
    /// or committed here). `auth` is the JWT verifier, built (or kept) by the caller;
    /// `previous_pools` are the pools of the generation in force, kept where unchanged.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build(
        generation: u64,
        checked: Checked,
        source: Source,
        auth: Option<Arc<Authenticator>>,
        upstreams: &Upstreams,
        limits: &LimitStores,
        metrics: &Metrics,
        previous_pools: &[Arc<Pool>],
        partners: &PartnerStores,
    ) -> Snapshot {
        let Checked { config, compiled } = checked;
        let pools = upstreams.plan(&config.services, &compiled.upstream_tls, previous_pools);
        let plan_rules: Vec<(&str, Option<&crate::config::LimitRule>)> = compiled
            .plans
            .iter()
            .flat_map(|plans| plans.all())
            .map(|plan| (&*plan.name, plan.rate_limit.as_ref()))
            .collect();
        let limiter = limits.plan(&config, compiled.redis.as_ref(), &plan_rules);
        let program = partners.program(&config, compiled.plans.as_ref(), limiter.redis_store());
        let identity_headers = config.identity_headers();
        let protected_headers = forwarding::protected_headers(identity_headers.iter().cloned(), key_headers(&config));
        Snapshot {
            generation,
            routes: RouteTable::new(&config.routes),
            metrics: metrics.for_config(&config, generation),
            pools,
            auth,
            limiter,
            protected_headers,
            identity_headers,
            compiled,
            program,
            source,
            config,
        }
    }

    /// The credential verifiers of this generation.
    pub(crate) fn verifiers(&self) -> crate::auth::Verifiers<'_> {
        crate::auth::Verifiers {
            jwt: self.auth.as_deref(),
            api_keys: self.config.api_keys.as_ref().zip(self.compiled.api_keys.as_deref()).map(|(k, t)| (&k.header, t)),
            telegram: self.compiled.telegram.as_deref(),
        }
    }

    /// The schema a route's request bodies must match.
    pub(crate) fn schema(&self, id: RouteId) -> Option<&BodySchema> {
        self.compiled.schemas.get(id).and_then(Option::as_ref)
    }

    /// A route's body transformation (`transform`, docs/transform.md).
    pub(crate) fn transform(&self, id: RouteId) -> Option<&crate::transform::Transform> {
        self.compiled.transforms.get(id).and_then(Option::as_deref)
    }

    /// An aggregation part's `transform`.
    pub(crate) fn part_transform(
        &self,
        aggregate: usize,
        part: usize,
    ) -> Option<&Arc<crate::transform::ResponseTransform>> {
        self.compiled.part_transforms.get(aggregate)?.get(part)?.as_ref()
    }

    /// Request inspection's compiled rules (`config.waf`), when a route inspects.
    pub(crate) fn waf(&self) -> Option<&Arc<crate::waf::RuleSet>> {
        self.compiled.waf.as_ref()
    }

    /// A route's REST/JSON ↔ gRPC transcoder (`grpc_transcode`).
    pub(crate) fn transcoder(&self, id: RouteId) -> Option<&crate::grpc::Transcoder> {
        self.compiled.transcoders.get(id).and_then(Option::as_ref)
    }

    /// The schema job payloads must match.
    pub(crate) fn jobs_schema(&self) -> Option<&BodySchema> {
        self.compiled.jobs_schema.as_ref()
    }

    /// A route by id.
    pub(crate) fn route(&self, id: RouteId) -> &RouteSettings {
        &self.config.routes[id]
    }

    /// A service's settings by id.
    pub(crate) fn service(&self, id: ServiceId) -> &ServiceSettings {
        &self.config.services[id]
    }

    /// A service as the upstream attempt engine takes it: its settings, pool, transport
    /// material and this generation's metrics.
    pub(crate) fn upstream(&self, id: ServiceId) -> crate::upstream::attempt::Service<'_> {
        crate::upstream::attempt::Service {
            id,
            settings: &self.config.services[id],
            pool: &self.pools[id],
            tls: self.compiled.upstream_tls.get(id).and_then(Option::as_deref),
            metrics: &self.metrics,
        }
    }

    /// Problems that make the gateway not ready (empty when ready).
    pub(crate) fn readiness_problems(&self, jobs: Option<&Jobs>) -> Vec<String> {
        let mut missing = Vec::new();
        missing.extend(self.pools.iter().filter_map(|pool| pool.readiness_problem()));
        if let (Some(jobs), Some(_)) = (jobs, &self.config.jobs) {
            missing.extend(jobs.readiness_problems());
        }
        if let Some(auth) = &self.auth {
            missing.extend(auth.readiness_problems());
        } else if self.config.auth.is_some() {
            missing.push("auth: verification keys failed to load".into());
        }
        missing
    }
}

/// Request headers that key a rate limit or a consistent hash: client spellings of them with
/// underscores never pass (they could pose as the header a backend reads).
fn key_headers(config: &Config) -> Vec<HeaderName> {
    use crate::config::{HashKey, LbAlgorithm, LimitKey};
    let limits = config.routes.iter().filter_map(|r| r.rate_limit.as_ref()).chain(config.rate_limit.default.as_ref());
    let limit_headers = limits.filter_map(|rule| match &rule.key {
        LimitKey::Header(h) => Some(h.clone()),
        _ => None,
    });
    let hash_headers = config.services.iter().filter_map(|s| match &s.lb {
        LbAlgorithm::ConsistentHash(HashKey::Header(h)) => Some(h.clone()),
        _ => None,
    });
    limit_headers.chain(hash_headers).collect()
}
