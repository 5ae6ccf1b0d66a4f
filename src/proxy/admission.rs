//! Who may make a request: authentication, roles and the rate limit of the matched route.

use super::{Gateway, RequestState};
use crate::auth;
use crate::config::{AuthMode, RouteTarget};
use crate::errors::GatewayError;
use crate::ratelimit::{self, Outcome, StoreError};
use crate::snapshot::Snapshot;
use pingora::http::RequestHeader;

impl Gateway {
    /// Authentication, roles and the rate limit of the matched route (in that order), the
    /// same for proxied routes and the jobs route.
    pub(super) async fn admit(
        &self,
        snap: &Snapshot,
        req: &RequestHeader,
        state: &mut RequestState,
        background: bool,
    ) -> Result<(), GatewayError> {
        let Some(route_id) = state.route else { return Ok(()) };
        let route = snap.route(route_id);
        let metrics = &self.runtime.metrics;
        if route.auth != AuthMode::Public {
            if snap.auth.is_none() && snap.config.auth.is_some() && route.schemes.contains(&auth::Scheme::Jwt) {
                // Keys failed to load at start-up: fail closed.
                return Err(GatewayError::Unavailable {
                    message: "authentication is unavailable".into(),
                    retry_after: 1,
                });
            }
            let verifiers = snap.verifiers();
            let verdict = match auth::authenticate(&verifiers, &route.schemes, route.auth, &req.headers, metrics).await
            {
                Ok(identity) => auth::authorize(identity.as_deref(), &route.roles).map(|_| identity),
                Err(e) => Err(e),
            };
            match verdict {
                Ok(identity) => state.identity = identity,
                Err(e) => {
                    metrics.auth_failure(e.metric_reason());
                    return Err(e.into());
                }
            }
            // A job belongs to someone: a token without `sub` cannot own one.
            if route.target == RouteTarget::Jobs
                && state.identity.as_ref().is_none_or(|i| i.sub.as_deref().is_none_or(str::is_empty))
            {
                metrics.auth_failure("invalid_token");
                return Err(GatewayError::InvalidToken {
                    reason: "the token has no `sub` claim to own the job".into(),
                });
            }
        }
        let Some(rule) = snap.limiter.rule(route_id).filter(|_| !background) else { return Ok(()) };
        let key = ratelimit::client_key(&rule.key, state.identity.as_deref(), state.client.ip, &req.headers)?;
        match snap.limiter.check(route_id, &key).await {
            Outcome::Unlimited => Ok(()),
            Outcome::Checked(d) => {
                state.rate_limit = Some(d);
                if d.allowed {
                    return Ok(());
                }
                snap.metrics.rate_limited(Some(route_id));
                Err(GatewayError::RateLimited { retry_after: d.reset, limit: d.limit })
            }
            Outcome::StoreFailed { allow, error } => {
                metrics.rate_limit_store_errors.inc();
                // While cooling down the failure was already logged.
                if !matches!(error, StoreError::CoolingDown) {
                    log::warn!("rate limit store failed ({}): {error}", if allow { "allowing" } else { "denying" });
                }
                if allow {
                    Ok(())
                } else {
                    Err(GatewayError::Unavailable { message: "rate limit store unavailable".into(), retry_after: 1 })
                }
            }
        }
    }
}
