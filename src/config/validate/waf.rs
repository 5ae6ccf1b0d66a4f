//! `waf:` and the routes' `waf`/`waf_exclude`: the settings are checked by `config::waf`; the
//! rule files are compiled here, once, when some route inspects — so `-t`, start and reload
//! all refuse a rule file that does not load, naming its file and line.

use super::super::waf::{Found, RawRouteWaf, RawWaf};
use super::Problems;
use crate::config::raw::RawRoute;
use crate::config::{RouteSettings, RouteWaf, WafMode, WafRules};
use std::path::Path;
use std::sync::Arc;

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

/// The `waf:` section, compiled when a route inspects (`None` otherwise: a gateway without
/// inspecting routes loads no rules and pays nothing).
pub(super) fn check_waf(
    raw: Option<&RawWaf>,
    routes: &[RouteSettings],
    base: &Path,
    p: &mut Problems,
) -> Option<WafRules> {
    let inspecting = routes.iter().any(|r| r.waf.mode != WafMode::Off);
    if !inspecting {
        if raw.is_some() {
            p.warn("waf", "configured, but no route has `waf: detect` or `waf: block`; no rules are loaded");
        }
        return None;
    }
    let (mut settings, found) = raw.map_or_else(|| RawWaf::default().check(), RawWaf::check);
    let refused = !found.errors.is_empty();
    absorb(found, p);
    if refused {
        return None;
    }
    // Relative entries are relative to the config file, like every other file it names.
    for rule in &mut settings.rules {
        if Path::new(rule.as_str()).is_relative() {
            *rule = base.join(rule.as_str()).to_string_lossy().into_owned();
        }
    }
    let rules = match crate::waf::RuleSet::load(&settings) {
        Ok(rules) => rules,
        Err(e) => {
            let key = match &e {
                crate::waf::WafError::NoMatch { index, .. } | crate::waf::WafError::BadPattern { index, .. } => {
                    format!("waf.rules[{index}]")
                }
                _ => "waf.rules".to_string(),
            };
            p.add(key, e.to_string());
            return None;
        }
    };
    let mut unsupported: Vec<u32> = rules.warnings().iter().filter_map(|w| w.rule).collect();
    unsupported.sort_unstable();
    unsupported.dedup();
    if !unsupported.is_empty() {
        p.warn(
            "waf.rules",
            format!(
                "{} rule(s) cannot match with this engine (docs/waf.md, \"Not supported\"): {}",
                unsupported.len(),
                unsupported.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
            ),
        );
    }
    for (i, route) in routes.iter().enumerate() {
        let unknown = rules.unknown(&route.waf.exclude);
        if !unknown.is_empty() {
            let ids = unknown.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
            p.warn(format!("routes[{i}].waf_exclude"), format!("no rule has the id(s) {ids}: nothing is excluded"));
        }
    }
    Some(WafRules { settings, rules: Arc::new(rules) })
}
