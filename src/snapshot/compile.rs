//! Settings → working objects: the one place where each module turns its own part of a
//! validated configuration into what requests use (certificates, key tables, verifiers,
//! schemas, store clients), reporting what is wrong into [`Findings`] under the config key it
//! is about, so `-t`, a start and a reload print it with its line like any other config error.
//!
//! A builder has one shape, `Module::build(&settings, …, &mut Findings) -> Option<Working>`,
//! and runs only on a configuration whose plain checks passed. A new feature that needs one
//! (gRPC descriptors, transforms, WAF rule sets, quota plans, resolved targets) adds a field
//! to [`Compiled`], one line to [`compile`], and reads it through a `Snapshot` accessor.

use crate::auth::api_keys::ApiKeyTable;
use crate::auth::telegram::TelegramVerifier;
use crate::config::{Config, Findings, RateLimitStore};
use crate::grpc::Transcoder;
use crate::policy::schema::BodySchema;
use crate::quota::Plans;
use crate::ratelimit::RedisStore;
use crate::tls::{ListenerMaterial, UpstreamTlsMaterial};
use crate::transform::{ResponseTransform, SettingsError, Transform};
use crate::waf::RuleSet;
use std::sync::Arc;
use std::time::SystemTime;

/// What one configuration generation builds from its settings and the files it read.
#[derive(Debug, Default)]
pub(crate) struct Compiled {
    /// Each listener's certificates and client CAs, by listener index (`None`: not TLS).
    pub(crate) listener_tls: Vec<Option<Arc<ListenerMaterial>>>,
    /// Each service's upstream TLS material, by service id (`None`: plain TCP).
    pub(crate) upstream_tls: Vec<Option<Arc<UpstreamTlsMaterial>>>,
    /// The API keys table (`auth.api_keys`).
    pub(crate) api_keys: Option<Arc<ApiKeyTable>>,
    /// The Telegram initData verifier (`auth.telegram`).
    pub(crate) telegram: Option<Arc<TelegramVerifier>>,
    /// Each route's request body schema, by route id.
    pub(crate) schemas: Vec<Option<BodySchema>>,
    /// Each route's REST/JSON ↔ gRPC transcoder (`grpc_transcode`), by route id.
    pub(crate) transcoders: Vec<Option<Transcoder>>,
    /// The schema of job payloads (`jobs.schema`).
    pub(crate) jobs_schema: Option<BodySchema>,
    /// The shared rate-limit store's clients (`rate_limit.store: redis`), not connected yet.
    pub(crate) redis: Option<Arc<RedisStore>>,
    /// Request inspection's compiled rules (`waf`), when a route inspects.
    pub(crate) waf: Option<Arc<RuleSet>>,
    /// Each route's body transformation (`transform`), by route id.
    pub(crate) transforms: Vec<Option<Arc<Transform>>>,
    /// Each aggregation part's `transform`, by aggregation id then part.
    pub(crate) part_transforms: Vec<Vec<Option<Arc<ResponseTransform>>>>,
    /// The plans and how consumers map to them (`plans`, `consumers`), when there are plans.
    pub(crate) plans: Option<Arc<Plans>>,
}

/// Build everything `config` needs beyond its plain data, in file order. What cannot be built
/// is in the findings' errors (and missing from the result); the caller refuses the config.
pub(crate) fn compile(config: &Config) -> (Compiled, Findings) {
    let mut f = Findings::default();
    let now = SystemTime::now();
    let api_keys = config.api_keys.as_ref().and_then(|k| ApiKeyTable::load(k, &mut f)).map(Arc::new);
    let plans = compile_plans(config, api_keys.as_deref(), &mut f);
    let compiled = Compiled {
        plans,
        listener_tls: config
            .listeners
            .iter()
            .map(|l| l.tls().and_then(|tls| ListenerMaterial::build(tls, now, &mut f)).map(Arc::new))
            .collect(),
        api_keys,
        telegram: config.telegram.as_ref().map(|t| Arc::new(TelegramVerifier::new(t))),
        redis: match &config.rate_limit.store {
            RateLimitStore::Redis(settings) => RedisStore::load(settings, &mut f).map(Arc::new),
            RateLimitStore::Local => None,
        },
        jobs_schema: config.jobs.as_ref().and_then(|j| j.schema.as_ref()).and_then(|s| BodySchema::compile(s, &mut f)),
        upstream_tls: config
            .services
            .iter()
            .map(|s| {
                let tls = s.transport.tls.as_ref()?;
                UpstreamTlsMaterial::build(&s.name, tls, now, &mut f).map(Arc::new)
            })
            .collect(),
        schemas: config
            .routes
            .iter()
            .map(|r| r.validate.as_ref().and_then(|s| BodySchema::compile(s, &mut f)))
            .collect(),
        waf: RuleSet::build(config, &mut f),
        transcoders: config
            .routes
            .iter()
            .map(|r| r.grpc_transcode.as_ref().and_then(|t| Transcoder::build(t, &mut f)))
            .collect(),
        transforms: config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let settings = r.transform.as_ref()?;
                report(Transform::from_settings(settings), &format!("routes[{i}].transform"), &mut f).map(Arc::new)
            })
            .collect(),
        part_transforms: part_transforms(config, &mut f),
    };
    (compiled, f)
}

/// A compiled transform, or its problems reported under `base` (the block's key).
fn report<T>(compiled: Result<T, Vec<SettingsError>>, base: &str, f: &mut Findings) -> Option<T> {
    compiled
        .map_err(|problems| {
            for problem in problems {
                let key = if problem.key.is_empty() { base.to_string() } else { format!("{base}.{}", problem.key) };
                f.error(key, problem.message);
            }
        })
        .ok()
}

/// Each aggregation part's `transform`, keyed as the route that holds the aggregation.
fn part_transforms(config: &Config, f: &mut Findings) -> Vec<Vec<Option<Arc<ResponseTransform>>>> {
    let route_of = |id: usize| {
        config.routes.iter().position(|r| matches!(r.target, crate::config::RouteTarget::Aggregate(a) if a == id))
    };
    config
        .aggregates
        .iter()
        .enumerate()
        .map(|(id, aggregate)| {
            aggregate
                .parts
                .iter()
                .enumerate()
                .map(|(i, part)| {
                    let settings = part.transform.as_ref()?;
                    let base = format!("routes[{}].aggregate.parts[{i}].transform", route_of(id).unwrap_or(id));
                    report(ResponseTransform::for_part(settings), &base, f).map(Arc::new)
                })
                .collect()
        })
        .collect()
}

/// The plans of `config` (`None` without any), with the API-key file's `plan` entries checked
/// against them (key `auth.api_keys.file`, with the entry's number) and plans nothing names.
fn compile_plans(config: &Config, keys: Option<&ApiKeyTable>, f: &mut Findings) -> Option<Arc<Plans>> {
    let named = keys.map(ApiKeyTable::named_plans).unwrap_or_default();
    if config.plans.is_empty() {
        if let (Some(file), Some((entry, plan))) = (&config.api_keys, named.first()) {
            f.error(
                &file.file.key,
                format!("{}: entry {entry}: plan `{plan}`, but there are no `plans`", file.file.shown()),
            );
        }
        return None;
    }
    let plans = match Plans::compile(&config.plans, &config.consumers) {
        Ok(plans) => plans,
        Err(problems) => {
            for problem in problems {
                f.error(problem.key, problem.message);
            }
            return None;
        }
    };
    if let Some(file) = &config.api_keys {
        for (entry, plan) in named.iter().filter(|(_, plan)| plans.find(plan).is_none()) {
            f.error(&file.file.key, format!("{}: entry {entry}: plan `{plan}` is not a plan", file.file.shown()));
        }
    }
    for plan in plans.all() {
        let is_default = config.consumers.default_plan.as_deref() == Some(&*plan.name);
        if !is_default && !named.iter().any(|(_, p)| *p == plan.name) {
            let how = if config.consumers.plan_claim.is_some() {
                "only a token's claim can name it"
            } else {
                "nothing can name it (no `consumers.plan_claim`)"
            };
            f.warn(
                format!("plans.{}", plan.name),
                format!("is neither `consumers.default_plan` nor named in the API-key file: {how}"),
            );
        }
    }
    Some(Arc::new(plans))
}

#[cfg(test)]
mod tests {
    use super::super::{compiled, Checked};
    use crate::config::{parse_located, ConfigError};
    use std::collections::HashMap;
    use std::path::Path;

    /// Parse, validate and compile `yaml` (files relative to `dir`), as `snapshot::check` does.
    fn check(yaml: &str, dir: &Path) -> Result<Checked, Vec<ConfigError>> {
        let (config, locator) = parse_located(yaml, dir, &HashMap::new())?;
        compiled(config, &locator)
    }

    fn errors(yaml: &str, dir: &Path) -> Vec<String> {
        match check(yaml, dir) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ConfigError::to_string).collect(),
        }
    }

    const SERVICE: &str = "services:\n  s: {targets: [\"127.0.0.1:2\"]}\n";

    #[test]
    fn redis_topologies_build_their_clients() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = |redis: &str| {
            format!("listen: [\"127.0.0.1:1\"]\nrate_limit:\n  store: redis\n  redis: {redis}\n{SERVICE}routes:\n  - {{path: /, service: s, auth: public}}\n")
        };
        for ok in [
            "{sentinels: [\"127.0.0.1:26379\", \"[::1]:26380\"], master_name: m, tls: true, password: pw}",
            "{cluster_nodes: [\"[::1]:7000\", \"127.0.0.1:7001\"], tls: true}",
            "{url: \"rediss://:pw@cache:6380/0\"}",
        ] {
            let checked = check(&config(ok), dir.path()).unwrap_or_else(|e| panic!("{ok}: {e:?}"));
            assert!(checked.compiled.redis.is_some(), "{ok}");
        }
        let found = errors(&config("{cluster_nodes: []}"), dir.path());
        assert!(found.iter().any(|p| p.starts_with("rate_limit.redis.cluster_nodes")), "{found:?}");
    }

    #[test]
    fn what_a_module_refuses_names_its_key_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("keys.yaml"), "- {sha256: nothex, consumer: acme}\n").expect("write");
        std::fs::write(dir.path().join("schema.json"), "{\"type\": 5}").expect("write");
        std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").expect("write");
        let yaml = format!(
            "listen: [\"127.0.0.1:1\"]\nauth:\n  api_keys:\n    file: keys.yaml\nrate_limit:\n  store: redis\n  redis:\n    url: rediss://cache:6380\n    ca_file: ca.pem\n{SERVICE}routes:\n  - path: /\n    service: s\n    schemes: [api_key]\n    validate:\n      schema: schema.json\n"
        );
        let found = errors(&yaml, dir.path());
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("auth.api_keys.file (line 4): `") && found[0].contains("entry 0"), "{found:?}");
        assert!(found[1].starts_with("rate_limit.redis.ca_file (line 9): `"), "{found:?}");
        assert!(found[2].starts_with("routes[0].validate.schema (line 17): `"), "{found:?}");
        assert!(found[2].contains("not a valid JSON Schema"), "{found:?}");
    }

    #[test]
    fn the_working_objects_are_built_once_by_route_and_service() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("keys.yaml"), "").expect("write");
        std::fs::write(dir.path().join("schema.json"), "{\"type\": \"object\"}").expect("write");
        let yaml = format!(
            "listen: [\"127.0.0.1:1\"]\nauth:\n  api_keys: {{file: keys.yaml}}\n{SERVICE}routes:\n  - {{path: /a, service: s, auth: public}}\n  - {{path: /b, service: s, schemes: [api_key], validate: {{schema: schema.json}}}}\n"
        );
        let checked = check(&yaml, dir.path()).expect("valid");
        let c = &checked.compiled;
        assert_eq!(c.schemas.iter().map(Option::is_some).collect::<Vec<_>>(), [false, true]);
        assert_eq!(c.upstream_tls.len(), 1);
        assert!(c.api_keys.is_some() && c.telegram.is_none() && c.redis.is_none());
        let warnings: Vec<String> = checked.config.warnings.iter().map(ConfigError::to_string).collect();
        assert!(warnings.iter().any(|w| w.starts_with("auth.api_keys.file (line 3)") && w.contains("lists no keys")));
    }
}
