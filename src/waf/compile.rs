//! The rule set a validated configuration asks for, compiled where the configuration is
//! checked — `-t`, start and reload call [`compile`] right after `config::load` — so that a rule
//! file that does not compile refuses the configuration (on reload the running one keeps
//! serving), and the snapshot carries the compiled set (`Snapshot::waf`). The configuration
//! itself stays plain data (`Config::waf`: the settings).

use super::{RuleSet, WafError};
use crate::config::{Config, ConfigError, ConfigErrors};
use std::path::Path;
use std::sync::Arc;

/// Compile `config.waf` (`None` when no route inspects), adding what the rules cannot do and
/// `waf_exclude` ids no rule has to `config.warnings`. `file`: the config file, for the errors.
pub fn compile(config: &mut Config, file: &Path) -> Result<Option<Arc<RuleSet>>, ConfigErrors> {
    let Some(settings) = &config.waf else { return Ok(None) };
    let rules = RuleSet::load(settings).map_err(|e| {
        let path = match &e {
            WafError::NoMatch { index, .. } | WafError::BadPattern { index, .. } => format!("waf.rules[{index}]"),
            _ => "waf.rules".to_string(),
        };
        ConfigErrors {
            file: file.display().to_string(),
            errors: vec![ConfigError { path, line: None, message: e.to_string() }],
        }
    })?;
    let warn = |path: String, message: String| ConfigError { path, line: None, message };
    let mut unsupported: Vec<u32> = rules.warnings().iter().filter_map(|w| w.rule).collect();
    unsupported.sort_unstable();
    unsupported.dedup();
    if !unsupported.is_empty() {
        let ids = unsupported.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
        config.warnings.push(warn(
            "waf.rules".into(),
            format!(
                "{} rule(s) cannot match with this engine (docs/waf.md, \"Not supported\"): {ids}",
                unsupported.len()
            ),
        ));
    }
    for (i, route) in config.routes.iter().enumerate() {
        let unknown = rules.unknown(&route.waf.exclude);
        if !unknown.is_empty() {
            let ids = unknown.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
            config.warnings.push(warn(
                format!("routes[{i}].waf_exclude"),
                format!("no rule has the id(s) {ids}: nothing is excluded"),
            ));
        }
    }
    Ok(Some(Arc::new(rules)))
}
