//! Everything built once from the config and shared by the proxy and admin services.

use crate::auth::Authenticator;
use crate::config::{Config, RouteSettings};
use crate::jobs::Jobs;
use crate::lifecycle::Lifecycle;
use crate::observability::Metrics;
use crate::ratelimit::RateLimiter;
use crate::routing::RouteTable;
use crate::upstream::Pools;
use std::sync::Arc;

/// Immutable per-process state.
#[derive(Debug)]
pub struct GatewayState {
    /// The validated config.
    pub config: Config,
    /// Route lookup structure.
    pub routes: RouteTable,
    /// Upstream pools by service id.
    pub pools: Pools,
    /// Metrics registry and handles.
    pub metrics: Metrics,
    /// In-flight requests and shutdown tasks (graceful drain).
    pub lifecycle: Arc<Lifecycle>,
    /// The `/jobs/submit` short-circuit, when `jobs` is configured.
    pub jobs: Option<Arc<Jobs>>,
    /// JWT verification; `None` without `auth.jwt` (or when its keys failed to load: routes
    /// needing auth then fail closed with 503).
    pub auth: Option<Authenticator>,
    /// Route rate limits and their store.
    pub limiter: RateLimiter,
}

impl GatewayState {
    /// Build state from a config, with static pools.
    pub fn new(config: Config) -> Self {
        let pools = Pools::new(&config);
        Self::with_pools(config, pools)
    }

    /// Build state with pools made elsewhere (e.g. with discovery).
    pub fn with_pools(config: Config, pools: Pools) -> Self {
        let auth = config.auth.as_ref().and_then(|s| match Authenticator::new(s) {
            Ok(a) => Some(a),
            Err(e) => {
                log::error!("auth.jwt: {e}; routes that need authentication will answer 503");
                None
            }
        });
        let jobs = match (&config.jobs, &config.nats) {
            (Some(jobs), Some(nats)) => {
                let wait = config.server.grace_period + config.server.graceful_shutdown_timeout;
                Some(Arc::new(Jobs::new(jobs.clone(), nats.clone(), wait)))
            }
            _ => None,
        };
        GatewayState {
            routes: RouteTable::new(&config.routes),
            metrics: Metrics::new(&config),
            lifecycle: Lifecycle::new(),
            limiter: RateLimiter::new(&config),
            auth,
            pools,
            jobs,
            config,
        }
    }

    /// A route by id.
    pub fn route(&self, id: usize) -> &RouteSettings {
        &self.config.routes[id]
    }

    /// Problems that make the gateway not ready (empty when ready).
    pub fn readiness_problems(&self) -> Vec<String> {
        let mut missing = Vec::new();
        missing.extend(self.pools.iter().filter_map(|pool| pool.readiness_problem()));
        if let Some(jobs) = &self.jobs {
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
