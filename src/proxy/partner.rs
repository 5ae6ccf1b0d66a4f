//! The partner program's part of a request (docs/plans.md): who it counts as, the one set of
//! `RateLimit-*` headers, its usage record. The work is `quota::program`'s; this only reads the
//! request's state for it.

use super::RequestState;
use crate::auth::Identity;
use crate::errors::GatewayError;
use crate::partner::{closest, Credential, Member, Program};
use crate::quota::LimitHeaders;
use crate::ratelimit::Decision;

/// The consumer, plan and tenant of a request authenticated as `identity` (`None`: an identity
/// without a subject counts as nobody's).
pub(super) fn member(program: &Program, identity: &Identity) -> Result<Option<Member>, GatewayError> {
    let Some(sub) = identity.sub.as_deref().filter(|s| !s.is_empty()) else { return Ok(None) };
    let claim = |name: &str| identity.claim_text(name);
    let who = Credential {
        scheme: identity.scheme.name(),
        sub,
        key_plan: identity.plan.as_deref(),
        key_tenant: identity.tenant.as_deref(),
        claim: &claim,
    };
    program.member(&who).map(Some)
}

/// The `RateLimit-*` headers of a request admitted by its route's rate limit, its plan's and
/// its quota: one set, of the policy closest to refusing it.
pub(super) fn headers(
    route: Option<Decision>,
    plan: Option<Decision>,
    quota: Option<LimitHeaders>,
) -> Option<Decision> {
    let as_headers = |d: Decision| LimitHeaders { limit: d.limit, remaining: d.remaining, reset: d.reset };
    closest(&[route.map(as_headers), plan.map(as_headers), quota]).map(|h| Decision {
        allowed: true,
        limit: h.limit,
        remaining: h.remaining,
        reset: h.reset,
    })
}

/// Record a finished request in its route's minutes and its consumer's usage.
pub(super) fn record(program: &Program, state: &RequestState, status: u16, bytes_in: u64, bytes_out: u64) {
    if let Some(route) = state.route {
        program.record(state.member.as_ref().map(|m| m.consumer.as_str()), route, status, bytes_in, bytes_out);
    }
}
