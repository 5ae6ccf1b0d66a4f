//! Settings of request inspection (docs/waf.md): the `waf:` section and the per-route
//! `waf` and `waf_exclude` keys, as plain data. `src/waf` turns them into a compiled rule set;
//! nothing here reads a rule file.
//!
//! The serde mirrors (`RawWaf`, `RawRouteWaf`) and their checks live here too until the section
//! is wired into `raw.rs`/`validate`: each check returns the settings and the problems it found
//! as (key path, reason), the shape `validate::Problems` collects.

use super::units::{ByteSize, ConfDuration};
use serde::Deserialize;
use std::time::Duration;

/// The rule files of Debian's `modsecurity-crs` package (CRS 3.3.4), in its own load order
/// (`/usr/share/modsecurity-crs/owasp-crs.load`): the setup, the operator's exclusions before
/// the CRS, the request rules, the operator's exclusions after it. Response rules are left out:
/// Siger inspects requests only.
pub const DEBIAN_CRS_RULES: &[&str] = &[
    "/etc/modsecurity/crs/crs-setup.conf",
    "/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf",
    "/usr/share/modsecurity-crs/rules/REQUEST-*.conf",
    "/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf",
];

/// The largest `waf.max_body`: inspection costs CPU in proportion to the arguments a body holds
/// (about a millisecond per hundred JSON values), so bodies are inspected up to a size whose
/// cost stays bounded.
pub const MAX_INSPECTED_BODY: u64 = 1 << 20;

/// `waf:`: the rule set every route with `waf: detect | block` is inspected with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WafSettings {
    /// SecLang files or globs, loaded in this order (a glob's matches sorted, as ModSecurity's
    /// `Include` does). Default: [`DEBIAN_CRS_RULES`].
    pub rules: Vec<String>,
    /// CRS paranoia level, 1–4 (default 1): higher levels run more rules and flag more.
    pub paranoia_level: u8,
    /// The inbound anomaly score at which a request is refused (default 5: one critical match).
    pub inbound_anomaly_threshold: u32,
    /// Bodies are inspected up to this many bytes (default 128 KiB, at most 1 MiB).
    pub max_body: u64,
    /// What a larger body gets (default `block`).
    pub on_large_body: OnLargeBody,
    /// The longest one inspection may take, waiting for a worker included (default 2s): past
    /// it a `block` route refuses the request (fails closed), a `detect` route forwards it.
    pub timeout: Duration,
}

impl Default for WafSettings {
    fn default() -> Self {
        WafSettings {
            rules: DEBIAN_CRS_RULES.iter().map(|r| r.to_string()).collect(),
            paranoia_level: 1,
            inbound_anomaly_threshold: 5,
            max_body: 128 << 10,
            on_large_body: OnLargeBody::Block,
            timeout: Duration::from_secs(2),
        }
    }
}

/// What a body larger than `waf.max_body` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLargeBody {
    /// Inspected without its body (head, URI, query, cookies only).
    Pass,
    /// Refused like a request that matched: an uninspected body is not let through.
    #[default]
    Block,
}

/// A route's `waf:` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WafMode {
    /// Not inspected (the default): costs nothing.
    #[default]
    Off,
    /// Inspected and logged (`waf_score`, `waf_rules`), never refused.
    Detect,
    /// Inspected; a request that reaches the threshold is refused with 403 `request_blocked`.
    Block,
}

/// A route's inspection: its mode and the rules it excludes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteWaf {
    /// `waf:` (default `off`).
    pub mode: WafMode,
    /// `waf_exclude:` rule ids not run for this route (false positives), sorted, without repeats.
    pub exclude: Vec<u32>,
}

/// Serde mirror of `waf:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWaf {
    pub(crate) rules: Option<Vec<String>>,
    pub(crate) paranoia_level: Option<u8>,
    pub(crate) inbound_anomaly_threshold: Option<u32>,
    pub(crate) max_body: Option<ByteSize>,
    pub(crate) on_large_body: Option<OnLargeBody>,
    pub(crate) timeout: Option<ConfDuration>,
}

/// Serde mirror of a route's `waf` and `waf_exclude` keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteWaf {
    pub(crate) waf: Option<WafMode>,
    pub(crate) waf_exclude: Option<Vec<u32>>,
}

/// What a check found, as (key path, reason): errors refuse the config, warnings are reported.
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub(crate) errors: Vec<(String, String)>,
    pub(crate) warnings: Vec<(String, String)>,
}

impl Found {
    fn error(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.errors.push((key.into(), reason.into()));
    }
}

impl RawWaf {
    /// The settings, and every problem with them (keys under `waf.`). Rule files are not read
    /// here: `waf::RuleSet::load` reports those with their file and line.
    pub(crate) fn check(&self) -> (WafSettings, Found) {
        let defaults = WafSettings::default();
        let mut found = Found::default();
        let rules = self.rules.clone().unwrap_or(defaults.rules);
        if rules.is_empty() {
            found.error("waf.rules", "lists no rule files; leave it out for Debian's CRS");
        }
        for (i, rule) in rules.iter().enumerate() {
            if rule.trim().is_empty() {
                found.error(format!("waf.rules[{i}]"), "is empty");
            }
        }
        let paranoia_level = self.paranoia_level.unwrap_or(defaults.paranoia_level);
        if !(1..=4).contains(&paranoia_level) {
            found.error("waf.paranoia_level", format!("{paranoia_level} is not a CRS paranoia level (1–4)"));
        }
        let inbound_anomaly_threshold = self.inbound_anomaly_threshold.unwrap_or(defaults.inbound_anomaly_threshold);
        if inbound_anomaly_threshold == 0 {
            found.error("waf.inbound_anomaly_threshold", "must be at least 1: 0 refuses every request");
        }
        let max_body = self.max_body.map_or(defaults.max_body, |s| s.0);
        if max_body == 0 || max_body > MAX_INSPECTED_BODY {
            found.error("waf.max_body", format!("{max_body} bytes: must be from 1 byte to 1MiB"));
        }
        let timeout = self.timeout.map_or(defaults.timeout, |t| t.0);
        if timeout.is_zero() {
            found.error("waf.timeout", "must be positive");
        }
        let settings = WafSettings {
            rules,
            paranoia_level,
            inbound_anomaly_threshold,
            max_body,
            on_large_body: self.on_large_body.unwrap_or(defaults.on_large_body),
            timeout,
        };
        (settings, found)
    }
}

impl RawRouteWaf {
    /// The route's inspection, and every problem with it (keys under `base`, e.g. `routes[3]`).
    pub(crate) fn check(&self, base: &str) -> (RouteWaf, Found) {
        let mut found = Found::default();
        let mode = self.waf.unwrap_or_default();
        let mut exclude = self.waf_exclude.clone().unwrap_or_default();
        if mode == WafMode::Off && !exclude.is_empty() {
            found.warnings.push((format!("{base}.waf_exclude"), "has no effect: the route's `waf` is off".into()));
        }
        if let Some(i) = exclude.iter().position(|&id| id == 0) {
            found.error(format!("{base}.waf_exclude[{i}]"), "0 is not a rule id");
        }
        exclude.sort_unstable();
        exclude.dedup();
        (RouteWaf { mode, exclude }, found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waf(yaml: &str) -> (WafSettings, Found) {
        serde_yaml::from_str::<RawWaf>(yaml).expect("valid YAML for waf:").check()
    }

    fn route(yaml: &str) -> (RouteWaf, Found) {
        serde_yaml::from_str::<RawRouteWaf>(yaml).expect("valid YAML for a route").check("routes[2]")
    }

    #[test]
    fn an_empty_section_is_debians_crs_at_paranoia_level_1() {
        let (settings, found) = waf("{}");
        assert_eq!(settings, WafSettings::default());
        assert!(found.errors.is_empty() && found.warnings.is_empty(), "{found:?}");
        assert_eq!(settings.rules[0], "/etc/modsecurity/crs/crs-setup.conf");
        assert_eq!((settings.paranoia_level, settings.inbound_anomaly_threshold), (1, 5));
        assert_eq!((settings.max_body, settings.on_large_body), (128 << 10, OnLargeBody::Block));
    }

    #[test]
    fn every_key_is_read() {
        let (settings, found) = waf("rules: [/etc/crs/setup.conf, \"/etc/crs/rules/*.conf\"]\nparanoia_level: 2\n\
             inbound_anomaly_threshold: 10\nmax_body: 64KiB\non_large_body: pass\n");
        assert!(found.errors.is_empty() && found.warnings.is_empty(), "{found:?}");
        assert_eq!(settings.rules, ["/etc/crs/setup.conf", "/etc/crs/rules/*.conf"]);
        assert_eq!((settings.paranoia_level, settings.inbound_anomaly_threshold), (2, 10));
        assert_eq!((settings.max_body, settings.on_large_body), (64 << 10, OnLargeBody::Pass));
    }

    #[test]
    fn bad_values_are_named_by_key() {
        let (_, found) = waf("rules: [\"\"]\nparanoia_level: 5\ninbound_anomaly_threshold: 0\nmax_body: 2MiB\n");
        let keys: Vec<&str> = found.errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["waf.rules[0]", "waf.paranoia_level", "waf.inbound_anomaly_threshold", "waf.max_body"]);
        assert_eq!(waf("rules: []\n").1.errors[0].0, "waf.rules");
    }

    #[test]
    fn unknown_keys_and_values_are_refused() {
        assert!(serde_yaml::from_str::<RawWaf>("paranoia: 2\n").is_err());
        assert!(serde_yaml::from_str::<RawWaf>("on_large_body: skip\n").is_err());
        assert!(serde_yaml::from_str::<RawRouteWaf>("waf: on\n").is_err());
    }

    #[test]
    fn a_route_is_off_unless_it_says_detect_or_block() {
        assert_eq!(route("{}").0, RouteWaf::default());
        assert_eq!(route("waf: off\n").0.mode, WafMode::Off);
        assert_eq!(route("waf: detect\n").0.mode, WafMode::Detect);
        let (block, found) = route("waf: block\nwaf_exclude: [942100, 913100, 942100]\n");
        assert!(found.errors.is_empty() && found.warnings.is_empty(), "{found:?}");
        assert_eq!(block, RouteWaf { mode: WafMode::Block, exclude: vec![913100, 942100] });
    }

    #[test]
    fn exclusions_on_a_route_without_inspection_are_named() {
        let (_, found) = route("waf_exclude: [942100]\n");
        assert_eq!((found.errors.len(), found.warnings[0].0.as_str()), (0, "routes[2].waf_exclude"));
        let (_, found) = route("waf: block\nwaf_exclude: [0]\n");
        assert_eq!(found.errors[0].0, "routes[2].waf_exclude[0]");
    }
}
