//! Everything built once from the config and shared by the proxy and admin services.

use crate::auth::Authenticator;
use crate::config::{Config, RouteSettings};
use crate::observability::Metrics;
use crate::ratelimit::RateLimiter;
use crate::routing::RouteTable;
use crate::upstream::Pools;

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
        GatewayState {
            routes: RouteTable::new(&config.routes),
            metrics: Metrics::new(&config),
            limiter: RateLimiter::new(&config),
            auth,
            pools,
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
        for pool in self.pools.iter() {
            let (healthy, _) = pool.health_counts();
            if healthy == 0 {
                missing.push(format!("service {}: no healthy backend", pool.settings.name));
            }
        }
        if let Some(auth) = &self.auth {
            missing.extend(auth.readiness_problems());
        } else if self.config.auth.is_some() {
            missing.push("auth: verification keys failed to load".into());
        }
        missing
    }
}
