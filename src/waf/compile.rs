//! The rule set a validated configuration asks for, built where every working object of a
//! configuration is (`snapshot::compile`: `-t`, start and reload), so that a rule file that does
//! not compile refuses the configuration with its key and line (on reload the running one keeps
//! serving), and the snapshot carries the compiled set (`Snapshot::waf`). The configuration
//! itself stays plain data (`Config::waf`: the settings).

use super::{RuleSet, WafError};
use crate::config::{Config, Findings};
use std::sync::Arc;

impl RuleSet {
    /// Compile `config.waf` (`None` when no route inspects); what the rules cannot do and
    /// `waf_exclude` ids no rule has are warnings.
    pub(crate) fn build(config: &Config, findings: &mut Findings) -> Option<Arc<RuleSet>> {
        let settings = config.waf.as_ref()?;
        let rules = match RuleSet::load(settings) {
            Ok(rules) => rules,
            Err(e) => {
                let key = match &e {
                    WafError::NoMatch { index, .. }
                    | WafError::BadPattern { index, .. }
                    | WafError::Rules { entry: Some(index), .. } => format!("waf.rules[{index}]"),
                    _ => "waf.rules".to_string(),
                };
                findings.error(key, e.to_string());
                return None;
            }
        };
        let mut unsupported: Vec<u32> = rules.warnings().iter().filter_map(|w| w.rule).collect();
        unsupported.sort_unstable();
        unsupported.dedup();
        if !unsupported.is_empty() {
            let ids = unsupported.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
            findings.warn(
                "waf.rules",
                format!(
                    "{} rule(s) cannot match with this engine (docs/waf.md, \"Not supported\"): {ids}",
                    unsupported.len()
                ),
            );
        }
        for (i, route) in config.routes.iter().enumerate() {
            let unknown = rules.unknown(&route.waf.exclude);
            if !unknown.is_empty() {
                let ids = unknown.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
                findings.warn(
                    format!("routes[{i}].waf_exclude"),
                    format!("no rule has the id(s) {ids}: nothing is excluded"),
                );
            }
        }
        Some(Arc::new(rules))
    }
}
