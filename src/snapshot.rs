//! One configuration generation, immutable once built: the validated config with everything
//! derived from it that requests read — the route table, each service's pool, the
//! authenticator, the rate limits, the metric handles.
//!
//! A request pins the snapshot in force when it starts (`new_ctx`) and finishes on it, so a
//! reload never changes the rules under a request in flight. What must survive a reload
//! (backend health, least-conn counters, limit counters, connections) lives in the process's
//! [`Runtime`](crate::runtime::Runtime) and is shared by the snapshots built over it.

use crate::auth::Authenticator;
use crate::config::{Config, RouteId, RouteSettings, ServiceId, ServiceSettings};
use crate::jobs::Jobs;
use crate::observability::ConfigMetrics;
use crate::ratelimit::RateLimiter;
use crate::routing::RouteTable;
use crate::upstream::Pool;
use http::HeaderName;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

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
    /// Request inspection's compiled rules (`config.waf`), when a route inspects.
    pub(crate) waf: Option<Arc<crate::waf::RuleSet>>,
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
}

impl Snapshot {
    /// The credential verifiers of this generation.
    pub(crate) fn verifiers(&self) -> crate::auth::Verifiers<'_> {
        crate::auth::Verifiers {
            jwt: self.auth.as_deref(),
            api_keys: self.config.api_keys.as_ref(),
            telegram: self.config.telegram.as_ref(),
        }
    }

    /// A route by id.
    pub(crate) fn route(&self, id: RouteId) -> &RouteSettings {
        &self.config.routes[id]
    }

    /// A service's settings by id.
    pub(crate) fn service(&self, id: ServiceId) -> &ServiceSettings {
        &self.config.services[id]
    }

    /// A service's pool by id.
    pub(crate) fn pool(&self, id: ServiceId) -> &Pool {
        &self.pools[id]
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
