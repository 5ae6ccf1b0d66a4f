//! Configuration: one YAML file (ARCHITECTURE.md §3) parsed once into the validated [`Config`].
//!
//! Loading order: read the file → YAML tree → `${VAR}` interpolation → typed raw structs (unknown
//! keys rejected) → `validate` (semantic checks and cross-references, every file the config
//! names read into a [`LoadedFile`]). Every error carries the key path and, where the file has
//! it, the line.
//!
//! The result is plain data. What needs more than parsing (certificates, key tables, schemas,
//! store clients) is built by the module that uses it, from the settings and bytes here, where
//! a snapshot is built; such a builder reports into [`Findings`] by key, and the [`Locator`] of
//! the file gives those keys their lines, so its messages read like the loader's own.

mod config_source;
pub(crate) mod grpc;
mod model;
mod plans;
mod raw;
mod source;
mod transform;
mod units;
mod validate;
mod waf;
pub(crate) use validate::is_always_allowed_host;
pub(crate) use validate::redact_url;

pub use config_source::*;
pub use grpc::{GrpcTranscode, GrpcTranscodeSettings, MAX_DESCRIPTOR_BYTES};
pub use model::*;
pub use plans::*;
pub(crate) use source::{Environment, ProcessEnv};
pub use transform::*;
pub(crate) use units::parse_duration;
pub(crate) use validate::subject_matches;
pub use waf::{OnLargeBody, RouteWaf, WafMode, WafSettings, DEBIAN_CRS_RULES, MAX_INSPECTED_BODY};

pub(crate) use source::LineIndex;
use std::fmt;
use std::path::Path;

/// One problem in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `routes[2].service`; empty for whole-file problems.
    pub path: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// Why it is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path.is_empty(), self.line) {
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => write!(f, "{}", self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// The file that was loaded.
    pub file: String,
    /// Problems, in file order where lines are known.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(f, "{}: {n} configuration error{}", self.file, if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Problems found by a module building working objects from settings: `(key, message)` pairs,
/// keyed as the loader keys its own (`listen[0].certs[1].cert`), given their lines by the
/// [`Locator`] of the file.
#[derive(Debug, Default)]
pub struct Findings {
    errors: Vec<Finding>,
    warnings: Vec<Finding>,
}

/// One problem: the key it is at and the message.
pub type Finding = (String, String);

impl Findings {
    /// Something that makes the configuration unusable.
    pub fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push((key.into(), message.into()));
    }

    /// Something worth saying that changes nothing.
    pub fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.warnings.push((key.into(), message.into()));
    }

    /// Whether an error was found.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The errors and the warnings, for a caller that reports them itself (a file watcher).
    pub fn into_parts(self) -> (Vec<Finding>, Vec<Finding>) {
        (self.errors, self.warnings)
    }
}

/// Where each key of one config file is: gives [`Findings`] their lines.
#[derive(Debug)]
pub struct Locator(LineIndex);

impl Locator {
    /// The errors and warnings of `findings`, each with its line, in file order.
    pub fn locate(&self, findings: Findings) -> (Vec<ConfigError>, Vec<ConfigError>) {
        let located = |list: Vec<(String, String)>| {
            let mut out: Vec<ConfigError> = list
                .into_iter()
                .map(|(path, message)| ConfigError { line: self.0.line_of(&path), path, message })
                .collect();
            out.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            out
        };
        (located(findings.errors), located(findings.warnings))
    }
}

/// Load and validate a config file, with the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_located(path).map(|(config, _)| config)
}

/// [`load`], with the [`Locator`] of the file for what is built from the config next.
pub fn load_located(path: &Path) -> Result<(Config, Locator), ConfigErrors> {
    load_with_env(path, &ProcessEnv)
}

/// The largest config file accepted (a large real one is a few hundred KiB).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// The deepest nesting accepted (the schema itself needs fewer than ten levels).
pub const MAX_NESTING: usize = 32;

/// Load and validate a config file with an explicit environment (tests).
pub(crate) fn load_with_env(path: &Path, env: &dyn Environment) -> Result<(Config, Locator), ConfigErrors> {
    let file = path.display().to_string();
    let whole = |message: String| ConfigErrors {
        file: file.clone(),
        errors: vec![ConfigError { path: String::new(), line: None, message }],
    };
    let size = std::fs::metadata(path).map_err(|e| whole(format!("cannot read the file: {e}")))?.len();
    if size > MAX_CONFIG_BYTES {
        return Err(whole(format!("the file has {size} bytes; a config may have at most 4MiB")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read the file: {e}")))?;
    // Named files resolve against the config's directory, made absolute: a daemon runs from `/`
    // and re-reads them (JWKS files, reloads) long after start.
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base = absolute.parent().unwrap_or_else(|| Path::new("/"));
    let (mut config, locator) = parse_located(&text, base, env).map_err(|errors| ConfigErrors { file, errors })?;
    use sha2::Digest;
    let own = FileDigest { path: absolute.clone(), sha256: sha2::Sha256::digest(text.as_bytes()).into() };
    config.files.insert(0, own);
    Ok((config, locator))
}

/// Parse config text; relative file paths in it resolve against `base`.
#[cfg(test)]
pub(crate) fn parse(text: &str, base: &Path, env: &dyn Environment) -> Result<Config, Vec<ConfigError>> {
    parse_located(text, base, env).map(|(config, _)| config)
}

/// [`parse`], with the [`Locator`] of the text.
pub(crate) fn parse_located(
    text: &str,
    base: &Path,
    env: &dyn Environment,
) -> Result<(Config, Locator), Vec<ConfigError>> {
    let lines = LineIndex::build(text);
    let located = |path: String, message: String| ConfigError { line: lines.line_of(&path), path, message };
    if lines.max_depth > MAX_NESTING {
        let message = format!("the file nests deeper than {MAX_NESTING} levels");
        return Err(vec![ConfigError { path: String::new(), line: None, message }]);
    }

    let mut tree: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(serde_yaml::Value::Null) => {
            return Err(vec![ConfigError { path: String::new(), line: None, message: "the file is empty".into() }])
        }
        Ok(v) => v,
        Err(e) => {
            return Err(vec![ConfigError {
                path: String::new(),
                line: e.location().map(|l| l.line()),
                message: format!("not valid YAML: {e}"),
            }])
        }
    };
    let interpolated = source::interpolate(&mut tree, env);
    if !interpolated.errors.is_empty() {
        return Err(interpolated.errors.into_iter().map(|(p, m)| located(p, m)).collect());
    }
    // A whole-value substitution that reads as a number or boolean was typed as one; where the
    // schema wants a string there (a numeric password), it is put back as the string it was.
    let mut retried = 0;
    let raw: raw::RawConfig = loop {
        let error = match serde_path_to_error::deserialize(tree.clone()) {
            Ok(raw) => break raw,
            Err(e) => e,
        };
        let path = error.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = error.inner().to_string();
        let substituted = interpolated.substituted.iter().find(|(p, _)| *p == path);
        if let Some((_, text)) = substituted.filter(|_| message.contains("expected a string") && retried < 64) {
            if let Some(v) = source::value_at(&mut tree, &path) {
                *v = serde_yaml::Value::String(text.clone());
                retried += 1;
                continue;
            }
        }
        // Never echo a value that came from the environment (it may be a secret).
        let message = if substituted.is_some() { redact_values(&message) } else { message };
        // For an unknown key, point at the key itself.
        let key_path =
            unknown_field(&message).map(|f| if path.is_empty() { f.to_string() } else { format!("{path}.{f}") });
        let line = key_path.as_deref().and_then(|k| lines.line_of(k)).or_else(|| lines.line_of(&path));
        return Err(vec![ConfigError { path, line, message }]);
    };
    let in_file_order = |list: Vec<(String, String)>| {
        let mut out: Vec<ConfigError> = list.into_iter().map(|(p, m)| located(p, m)).collect();
        out.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        out
    };
    match validate::validate(raw, base) {
        Ok((mut config, problems)) => {
            config.warnings = in_file_order(problems.warnings);
            Ok((config, Locator(lines)))
        }
        Err(problems) => Err(in_file_order(problems.errors)),
    }
}

/// `message` with every value quoted in it (`` `x` `` or `"x"`, as serde quotes values)
/// replaced by `…`.
fn redact_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => {
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None if c == '`' || c == '"' => {
                out.push(c);
                out.push('…');
                quote = Some(c);
            }
            None => out.push(c),
        }
    }
    out
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env() -> HashMap<String, String> {
        HashMap::from([("SECRET".to_string(), "0123456789abcdef0123456789abcdef".to_string())])
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        parse(text, Path::new("."), &env()).expect_err("config must be rejected")
    }

    const MINIMAL: &str = "listen: [\"127.0.0.1:8080\"]\nservices:\n  echo:\n    targets: [\"127.0.0.1:9001\"]\nroutes:\n  - path: /\n    service: echo\n    auth: public\n";

    #[test]
    fn minimal_config_loads_with_defaults() {
        let c = parse(MINIMAL, Path::new("."), &env()).expect("valid");
        assert_eq!(c.routes[0].path, "/");
        assert_eq!(c.services[0].lb, LbAlgorithm::RoundRobin);
        assert_eq!(c.limits.max_body, 10 << 20);
        assert_eq!(c.server.grace_period, std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_minimal_entry_validates_to_its_default() {
        let c = parse(MINIMAL, Path::new("."), &env()).expect("valid");
        assert_eq!(c.limits, Limits::default());
        let echo = ServiceSettings {
            name: "echo".into(),
            targets: vec![Target { addr: "127.0.0.1:9001".parse().expect("addr"), weight: 1 }],
            ..ServiceSettings::default()
        };
        assert_eq!(c.services[0], echo);
        let route = RouteSettings {
            label: "/".into(),
            path: "/".into(),
            auth: AuthMode::Public,
            schemes: vec![Scheme::Jwt],
            ..RouteSettings::default()
        };
        assert_eq!(c.routes[0], route);
        // Empty sections take every default.
        let text = MINIMAL.replace("    targets:", "    outlier_detection: {}\n    circuit_breaker: {}\n    targets:");
        let c = parse(&text, Path::new("."), &env()).expect("valid");
        assert_eq!(c.services[0].outlier_detection, Some(OutlierSettings::default()));
        assert_eq!(c.services[0].circuit_breaker, Some(BreakerSettings::default()));
    }

    #[test]
    fn unknown_key_is_named_with_line() {
        let e = errors(&format!("{MINIMAL}limitz: {{}}\n"));
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("limitz"), "{e:?}");
        assert_eq!(e[0].line, Some(9));
    }

    #[test]
    fn unknown_service_names_route_key_and_line() {
        let e = errors(&MINIMAL.replace("service: echo", "service: nope"));
        assert_eq!(e[0].path, "routes[0].service");
        assert_eq!(e[0].line, Some(7));
        assert!(e[0].message.contains("nope"));
    }

    #[test]
    fn bad_duration_is_named() {
        let text = MINIMAL.replace("    targets:", "    connect_timeout: 5\n    targets:");
        let e = errors(&text);
        assert_eq!(e[0].path, "services.echo.connect_timeout");
        assert!(e[0].message.contains("no unit"), "{e:?}");
    }

    #[test]
    fn collects_several_semantic_errors() {
        let text = "listen: [\"127.0.0.1:8080\", \"nope\"]\nservices:\n  echo:\n    targets: [\"127.0.0.1:9001\"]\n    lb: fastest\nroutes:\n  - path: /a/../b\n    service: echo\n    auth: public\n";
        let e = errors(text);
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["listen[1]", "services.echo.lb", "routes[0].path"]);
    }

    #[test]
    fn env_interpolation_and_missing_variable() {
        let text = MINIMAL.replace("routes:", "auth:\n  jwt:\n    algorithms: [HS256]\n    secret: ${SECRET}\nroutes:");
        let c = parse(&text, Path::new("."), &env()).expect("valid");
        assert_eq!(c.auth.expect("auth").secret.as_deref(), Some("0123456789abcdef0123456789abcdef"));
        let e = errors(&text.replace("${SECRET}", "${UNSET_VAR}"));
        assert_eq!(e[0].path, "auth.jwt.secret");
        assert!(e[0].message.contains("UNSET_VAR"));
    }

    #[test]
    fn numeric_secrets_from_the_environment_stay_strings_and_are_never_echoed() {
        let env: HashMap<String, String> = HashMap::from([
            ("SECRET".into(), "01234567890123456789012345678901".into()),
            ("PORT".into(), "x8080".into()),
        ]);
        let text = MINIMAL.replace("routes:", "auth:\n  jwt:\n    algorithms: [HS256]\n    secret: ${SECRET}\nroutes:");
        let c = parse(&text, Path::new("."), &env).expect("a numeric secret is a string");
        assert_eq!(c.auth.expect("auth").secret.as_deref(), Some("01234567890123456789012345678901"));
        let e = parse(&MINIMAL.replace("    targets:", "    retries: ${PORT}\n    targets:"), Path::new("."), &env)
            .expect_err("not a number");
        assert!(!e[0].message.contains("x8080"), "{e:?}");
    }

    #[test]
    fn duplicate_routes_are_rejected_per_method_and_host() {
        let dup = format!("{MINIMAL}  - path: /\n    service: echo\n    auth: public\n");
        assert_eq!(errors(&dup)[0].path, "routes[1].path");
        let distinct = format!("{MINIMAL}  - path: /\n    host: a.example\n    service: echo\n    auth: public\n");
        assert!(parse(&distinct, Path::new("."), &env()).is_ok());
    }

    #[test]
    fn jobs_need_nats_and_auth() {
        let text =
            format!("{MINIMAL}jobs:\n  subject: jobs.submitted\n  stream: {{name: JOBS, subjects: [\"jobs.>\"]}}\n");
        let e = errors(&text);
        assert!(e.iter().any(|e| e.path == "jobs" && e.message.contains("nats")), "{e:?}");
        assert!(e.iter().any(|e| e.path == "jobs" && e.message.contains("auth")), "{e:?}");
    }

    const JOBS: &str = "auth:\n  jwt:\n    algorithms: [HS256]\n    secret: ${SECRET}\nnats:\n  url: nats://127.0.0.1:4222\njobs:\n  subject: jobs.submitted\n  stream: {name: JOBS, subjects: [\"jobs.>\"]}\n";

    #[test]
    fn jobs_defaults() {
        let c = parse(&format!("{MINIMAL}{JOBS}"), Path::new("."), &env()).expect("valid");
        let j = c.jobs.expect("jobs");
        assert_eq!(j.path, "/jobs/submit");
        assert_eq!(j.body_timeout, std::time::Duration::from_secs(10));
        assert_eq!(j.stream.storage, StreamStorage::File);
        assert_eq!(j.stream.duplicate_window, std::time::Duration::from_secs(120));
        assert_eq!(c.nats.expect("nats").pending_buffer, 1024);
    }

    #[test]
    fn jobs_key_errors_are_named() {
        let text = format!("{MINIMAL}{JOBS}")
            .replace(
                "  subject: jobs.submitted\n",
                "  subject: jobs.submitted\n  path: /health\n  body_timeout: 1ms\n  roles: [\"\"]\n",
            )
            .replace("  url: nats://127.0.0.1:4222\n", "  url: nats://127.0.0.1:4222\n  pending_buffer: 0\n");
        let paths: Vec<String> = errors(&text).into_iter().map(|e| e.path).collect();
        for key in ["jobs.path", "jobs.body_timeout", "jobs.roles[0]", "nats.pending_buffer"] {
            assert!(paths.iter().any(|p| p == key), "{key} not in {paths:?}");
        }
    }
}
