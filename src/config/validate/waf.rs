//! `waf:` and the routes' `waf`/`waf_exclude`, as plain settings (`config::waf` checks them).
//! The rule files are compiled by `waf::RuleSet::build` with the snapshot, after validation —
//! by `-t`, start and reload alike — which names a rule file that does not compile with its
//! line.

use super::super::waf::{Found, RawRouteWaf, RawWaf};
use super::Problems;
use crate::config::raw::RawRoute;
use crate::config::{RouteSettings, RouteWaf, WafMode, WafSettings};
use std::path::Path;

fn absorb(found: Found, p: &mut Problems) {
    for (key, reason) in found.errors {
        p.add(key, reason);
    }
    for (key, reason) in found.warnings {
        p.warn(key, reason);
    }
}

/// A route's `waf` and `waf_exclude` (keys under `base`).
pub(super) fn check_route_waf(base: &str, r: &RawRoute, p: &mut Problems) -> RouteWaf {
    let raw = RawRouteWaf { waf: r.waf, waf_exclude: r.waf_exclude.clone() };
    let (waf, found) = raw.check(base);
    absorb(found, p);
    waf
}

/// The `waf:` settings when a route inspects (`None` otherwise: a gateway without inspecting
/// routes loads no rules and pays nothing), rule paths made absolute against the config's
/// directory like every other file it names.
pub(super) fn check_waf(
    raw: Option<&RawWaf>,
    routes: &[RouteSettings],
    base: &Path,
    p: &mut Problems,
) -> Option<WafSettings> {
    if routes.iter().all(|r| r.waf.mode == WafMode::Off) {
        if raw.is_some() {
            p.warn("waf", "configured, but no route has `waf: detect` or `waf: block`; no rules are loaded");
        }
        return None;
    }
    let (mut settings, found) = raw.map_or_else(|| RawWaf::default().check(), RawWaf::check);
    absorb(found, p);
    for rule in &mut settings.rules {
        if Path::new(rule.as_str()).is_relative() {
            *rule = base.join(rule.as_str()).to_string_lossy().into_owned();
        }
    }
    Some(settings)
}
