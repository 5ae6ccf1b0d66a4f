//! Who may make a request: authentication, roles and the rate limit of the matched route.

use super::{partner, Gateway, RequestState};
use crate::auth;
use crate::config::{AuthMode, LimitKey, RouteId, RouteTarget};
use crate::errors::GatewayError;
use crate::observability::Metrics;
use crate::ratelimit::{self, Decision, Outcome, StoreError};
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
        if background {
            return Ok(());
        }
        // Known before any refusal: a refused request is in its consumer's usage too.
        state.member = match (&snap.program, state.identity.as_deref()) {
            (Some(program), Some(identity)) => partner::member(program, identity)?,
            _ => None,
        };
        let route_limit = match snap.limiter.rule(route_id) {
            Some(rule) => {
                let key = ratelimit::client_key(&rule.key, state.identity.as_deref(), state.client.ip, &req.headers)?;
                limited(snap, metrics, route_id, snap.limiter.check(route_id, &key).await)?
            }
            None => None,
        };
        if let (Some(program), Some(member)) = (&snap.program, state.member.as_ref()) {
            let plan_limit = match member.plan {
                Some(plan) => {
                    let key = ratelimit::client_key(
                        &LimitKey::Consumer,
                        state.identity.as_deref(),
                        state.client.ip,
                        &req.headers,
                    )?;
                    limited(snap, metrics, route_id, snap.limiter.check_plan(plan, &key).await)?
                }
                None => None,
            };
            let quota = program.check(member, route.quota_cost).await?;
            state.rate_limit = partner::headers(route_limit, plan_limit, quota);
        } else {
            state.rate_limit = route_limit;
        }
        Ok(())
    }
}

/// What a rate limit's outcome means for the request: the decision of an admitted request (its
/// `RateLimit-*` headers), or the refusal (counted on `route`, whether its own limit or its
/// consumer's plan's refused it).
fn limited(
    snap: &Snapshot,
    metrics: &Metrics,
    route: RouteId,
    outcome: Outcome,
) -> Result<Option<Decision>, GatewayError> {
    match outcome {
        Outcome::Unlimited => Ok(None),
        Outcome::Checked(d) => {
            if d.allowed {
                return Ok(Some(d));
            }
            snap.metrics.rate_limited(Some(route));
            Err(GatewayError::RateLimited { retry_after: d.reset, limit: d.limit })
        }
        Outcome::StoreFailed { allow, error } => {
            metrics.rate_limit_store_errors.inc();
            // While cooling down the failure was already logged.
            if !matches!(error, StoreError::CoolingDown) {
                log::warn!("rate limit store failed ({}): {error}", if allow { "allowing" } else { "denying" });
            }
            if allow {
                Ok(None)
            } else {
                Err(GatewayError::Unavailable { message: "rate limit store unavailable".into(), retry_after: 1 })
            }
        }
    }
}
