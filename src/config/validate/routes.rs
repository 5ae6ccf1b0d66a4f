//! `routes[]`: paths, methods, hosts, targets and per-route policy.

use super::policies::{check_compress, check_cors, check_header_rules, check_route_cache, Direction};
use super::*;
use crate::config::{GrpcTranscode, GrpcTranscodeSettings, MAX_DESCRIPTOR_BYTES};

pub(super) fn check_routes(
    raw: &[RawRoute],
    services: &[ServiceSettings],
    limits: &Limits,
    schemes: &[Scheme],
    identity: &[HeaderName],
    base_dir: &Path,
    p: &mut Problems,
) -> (Vec<RouteSettings>, Vec<TrafficSplit>, Vec<AggregateSettings>) {
    let mut targets = Targets {
        services,
        index: services.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect(),
        splits: Vec::new(),
        aggregates: Vec::new(),
    };
    let mut out: Vec<RouteSettings> = Vec::new();
    let mut names = HashSet::new();
    // Routes by (path, host): only those can conflict, so the check stays linear in routes.
    let mut same_place: HashMap<(String, Option<String>), Vec<usize>> = HashMap::new();
    for (i, r) in raw.iter().enumerate() {
        let base = format!("routes[{i}]");
        let path = check_route_path(&base, &r.path, p);
        let methods = r.methods.as_ref().map(|ms| check_methods(&base, ms, p));
        let host = r.host.as_ref().map(|h| check_host(&base, h, p));
        let target = targets.check(&base, r, p);
        let match_headers = check_match_headers(&base, r, p);
        let auth = check_auth_mode(&base, r, p);
        let route_schemes = check_schemes(&base, r, auth, schemes, p);
        if !r.roles.is_empty() && auth == AuthMode::Public {
            p.add(format!("{base}.roles"), "a public route has no identity to check roles against");
        }
        if let Some(name) = &r.name {
            if !names.insert(name.clone()) {
                p.add(format!("{base}.name"), format!("route name `{name}` is used twice"));
            }
        }
        let rate_limit = r.rate_limit.as_ref().and_then(|rl| check_rule(&format!("{base}.rate_limit"), rl, p));
        let max_body = r.max_body.map(|b| b.0).unwrap_or(limits.max_body);
        if let Some(t) = r.timeout {
            if t.0.is_zero() {
                p.add(format!("{base}.timeout"), "must be positive");
            }
        }
        let route = RouteSettings {
            name: r.name.clone(),
            label: r.name.clone().unwrap_or_else(|| r.path.clone()),
            path,
            methods,
            host,
            match_headers,
            target,
            auth,
            roles: r.roles.clone(),
            strip_prefix: r.strip_prefix.unwrap_or(false),
            rate_limit,
            max_body,
            timeout: r.timeout.map(|t| t.0),
            forward_authorization: r.forward_authorization.unwrap_or(true),
            request_headers: check_header_rules(
                &format!("{base}.request_headers"),
                r.request_headers.as_ref(),
                Direction::Request,
                identity,
                p,
            ),
            response_headers: check_header_rules(
                &format!("{base}.response_headers"),
                r.response_headers.as_ref(),
                Direction::Response,
                identity,
                p,
            ),
            cors: r.cors.as_ref().and_then(|c| check_cors(&format!("{base}.cors"), c, p)),
            compress: r.compress.as_ref().and_then(|c| check_compress(&format!("{base}.compress"), c, p)),
            cache: r.cache.as_ref().map(|c| check_route_cache(&format!("{base}.cache"), c, p)),
            schemes: route_schemes,
            validate: r
                .validate
                .as_ref()
                .and_then(|v| read_file(&format!("{base}.validate.schema"), base_dir, &v.schema, p)),
            grpc_transcode: r
                .grpc_transcode
                .as_ref()
                .and_then(|g| check_grpc_transcode(&format!("{base}.grpc_transcode"), g, base_dir, p)),
            grpc_web: r.grpc_web.unwrap_or(false),
            waf: super::waf::check_route_waf(&base, r, p),
            transform: r.transform.clone(),
            quota_cost: super::super::quota_cost(r.quota_cost).unwrap_or_else(|message| {
                p.add(format!("{base}.quota_cost"), message);
                1
            }),
        };
        check_route_policies(&base, &route, p);
        check_grpc_route(&base, r, &route, services, p);
        let peers = same_place.entry((route.path.clone(), route.host.clone())).or_default();
        if let Some(j) = peers.iter().copied().find(|j| overlaps(&out[*j], &route)) {
            p.add(
                format!("{base}.path"),
                format!("`{}` duplicates routes[{j}] for the same host, headers and method", route.path),
            );
        }
        peers.push(out.len());
        out.push(route);
    }
    (out, targets.splits, targets.aggregates)
}

/// `path`: absolute and normalised, without `;` parameters (a trailing `/` is dropped).
fn check_route_path(base: &str, path: &str, p: &mut Problems) -> String {
    match normalize_path(path) {
        Ok(_) if path.contains(';') => {
            p.add(
                format!("{base}.path"),
                format!("`{path}`: routes match paths without their `;` parameters; remove them"),
            );
            path.to_string()
        }
        Ok(n) if path.starts_with('/') && (n == path || format!("{n}/") == path) => {
            if n.len() > 1 {
                n.trim_end_matches('/').to_string()
            } else {
                n.into_owned()
            }
        }
        _ => {
            p.add(format!("{base}.path"), format!("`{path}` must be an absolute, normalised path (no `.`/`..` segments, `//` or %-escapes of unreserved characters)"));
            path.to_string()
        }
    }
}

/// `methods`: at least one, upper case, each once.
fn check_methods(base: &str, ms: &[String], p: &mut Problems) -> Vec<Method> {
    if ms.is_empty() {
        p.add(format!("{base}.methods"), "list at least one method, or remove the key to allow all");
    }
    let mut out: Vec<Method> = Vec::new();
    for (j, m) in ms.iter().enumerate() {
        let upper = m.to_ascii_uppercase();
        match Method::from_bytes(upper.as_bytes()) {
            Ok(method) if upper == *m && !out.contains(&method) => out.push(method),
            Ok(_) if upper != *m => {
                p.add(format!("{base}.methods[{j}]"), format!("write methods in upper case: `{upper}`"))
            }
            Ok(_) => p.add(format!("{base}.methods[{j}]"), format!("`{m}` is listed twice")),
            Err(_) => p.add(format!("{base}.methods[{j}]"), format!("`{m}` is not an HTTP method")),
        }
    }
    out
}

/// `host`: a host name (lower-cased), no port, scheme or path.
fn check_host(base: &str, h: &str, p: &mut Problems) -> String {
    let h = h.trim().to_ascii_lowercase();
    let valid =
        !h.is_empty() && !h.contains(['/', ' ', '@']) && h.parse::<http::uri::Authority>().is_ok() && !h.contains(':');
    if !valid {
        p.add(format!("{base}.host"), format!("`{h}` is not a host name (no port, scheme or path)"));
    }
    h
}

/// `match_headers`: valid names and values, sorted by name.
fn check_match_headers(base: &str, r: &RawRoute, p: &mut Problems) -> Vec<(HeaderName, http::HeaderValue)> {
    let mut match_headers: Vec<(HeaderName, http::HeaderValue)> = Vec::new();
    for (name, value) in r.match_headers.iter().flatten() {
        let key = format!("{base}.match_headers.{name}");
        let Some(header) = check_header_name(&key, name, p) else { continue };
        match http::HeaderValue::from_str(value) {
            Ok(v) => match_headers.push((header, v)),
            Err(_) => p.add(key, "is not a valid header value"),
        }
    }
    match_headers.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    match_headers
}

/// `auth`: required (the default), optional or public.
fn check_auth_mode(base: &str, r: &RawRoute, p: &mut Problems) -> AuthMode {
    match r.auth.as_deref().unwrap_or("required") {
        "required" => AuthMode::Required,
        "optional" => AuthMode::Optional,
        "public" => AuthMode::Public,
        other => {
            p.add(format!("{base}.auth"), format!("`{other}` is not one of required, optional, public"));
            AuthMode::Required
        }
    }
}

/// What the policies of a built route say about each other.
fn check_route_policies(base: &str, route: &RouteSettings, p: &mut Problems) {
    if route.waf.mode != crate::config::WafMode::Off && matches!(route.target, RouteTarget::Aggregate(_)) {
        p.add(format!("{base}.waf"), "an aggregation route is answered by the gateway: nothing to inspect");
    }
    if route.validate.is_some() && matches!(route.target, RouteTarget::Aggregate(_)) {
        p.add(format!("{base}.validate"), "an aggregation route reads no request body");
    }
    if route.transform.is_some() && !matches!(route.target, RouteTarget::Service(_) | RouteTarget::Split(_)) {
        p.add(
            format!("{base}.transform"),
            "transforms bodies proxied to a `service` or `split`; an aggregation part takes its own `transform`",
        );
    }
    let reads = |ms: &Vec<Method>| ms.iter().any(|m| m == Method::GET || m == Method::HEAD);
    if route.cache.is_some() && route.methods.as_ref().is_some_and(|ms| !reads(ms)) {
        p.warn(format!("{base}.cache"), "only GET and HEAD answers are cached, and this route allows neither");
    }
}

/// A route with `grpc_transcode` or `grpc_web`: one service, spoken to over HTTP/2, and no
/// policy that transcoded calls would skip.
fn check_grpc_route(base: &str, r: &RawRoute, route: &RouteSettings, services: &[ServiceSettings], p: &mut Problems) {
    if route.grpc_transcode.is_some() || route.grpc_web {
        let key = if route.grpc_web { format!("{base}.grpc_web") } else { format!("{base}.grpc_transcode") };
        match route.target {
            // gRPC needs HTTP/2 to the backend (trailers).
            RouteTarget::Service(id) if r.service.is_some() && !services.get(id).is_some_and(|s| s.transport.http2) => {
                p.add(
                    key,
                    format!("service `{}` must set `http2: true`: gRPC needs HTTP/2 to the backend", services[id].name),
                )
            }
            RouteTarget::Service(_) => {}
            _ => p.add(key, "needs `service` (one gRPC service; not `split` or `aggregate`)"),
        }
    }
    if route.grpc_transcode.is_some() {
        // Transcoded requests are answered by the gateway itself: nothing is silently skipped.
        for (set, name) in [
            (route.validate.is_some(), "validate"),
            (route.cache.is_some(), "cache"),
            (route.compress.is_some(), "compress"),
            (route.transform.is_some(), "transform"),
        ] {
            if set {
                p.add(format!("{base}.{name}"), "does not apply to transcoded gRPC calls; remove it from this route");
            }
        }
    }
}

/// `grpc_transcode`: the settings checked and the descriptor set read (its contents are
/// checked where the transcoder is built, `grpc::Transcoder::build`, under this key; a reload
/// reads the file again).
fn check_grpc_transcode(
    key: &str,
    raw: &crate::config::grpc::RawGrpcTranscode,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<GrpcTranscode> {
    let settings = match GrpcTranscodeSettings::from_raw(raw) {
        Ok(s) => s,
        Err(errors) => {
            for (sub, message) in errors {
                p.add(format!("{key}.{sub}"), message);
            }
            return None;
        }
    };
    let file_key = format!("{key}.descriptors");
    let path = resolve_file(base_dir, &raw.descriptors);
    let read = |reason: String| format!("cannot read the descriptor set `{}`: {reason}", path.display());
    let bytes = match std::fs::metadata(&path) {
        Ok(m) if m.len() > MAX_DESCRIPTOR_BYTES => {
            Err(read(format!("{} bytes, over the limit of {MAX_DESCRIPTOR_BYTES}", m.len())))
        }
        Ok(_) => std::fs::read(&path).map_err(|e| read(e.to_string())),
        Err(e) => Err(read(e.to_string())),
    };
    let bytes = bytes.map_err(|e| p.add(&file_key, e)).ok()?;
    use sha2::Digest;
    p.files.push(FileDigest { path: path.clone(), sha256: sha2::Sha256::digest(&bytes).into() });
    let descriptors = LoadedFile { key: file_key, path, bytes: Arc::from(bytes) };
    Some(GrpcTranscode { key: key.to_string(), settings, descriptors })
}

/// Routes' targets: the services by name, and the splits and aggregations routes define.
struct Targets<'a> {
    services: &'a [ServiceSettings],
    index: HashMap<&'a str, usize>,
    splits: Vec<TrafficSplit>,
    aggregates: Vec<AggregateSettings>,
}

impl Targets<'_> {
    /// The service named `name` (reported at `key` when there is none).
    fn service_id(&self, key: String, name: &str, p: &mut Problems) -> ServiceId {
        match self.index.get(name) {
            Some(id) => *id,
            None => {
                let known: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
                p.add(
                    key,
                    format!(
                        "unknown service `{name}` (defined: {})",
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    ),
                );
                0
            }
        }
    }

    /// `service`, `split` (with `sticky`) or `aggregate`: exactly one.
    fn check(&mut self, base: &str, r: &RawRoute, p: &mut Problems) -> RouteTarget {
        match (&r.service, &r.split, &r.aggregate) {
            (None, None, Some(raw_aggregate)) => {
                let aggregate = check_aggregate(
                    &format!("{base}.aggregate"),
                    raw_aggregate,
                    &|k, n, p| self.service_id(k, n, p),
                    p,
                );
                self.aggregates.push(aggregate);
                RouteTarget::Aggregate(self.aggregates.len() - 1)
            }
            (_, _, Some(_)) => {
                p.add(base, "has `aggregate` and `service`/`split`; an aggregation route names its services per part");
                RouteTarget::Service(0)
            }
            (Some(name), None, None) => {
                if r.sticky.is_some() {
                    p.add(format!("{base}.sticky"), "only applies to `split` routes");
                }
                RouteTarget::Service(self.service_id(format!("{base}.service"), name, p))
            }
            (None, Some(list), None) => {
                let split = self.check_split(base, list, r.sticky.as_deref(), p);
                self.splits.push(split);
                RouteTarget::Split(self.splits.len() - 1)
            }
            (Some(_), Some(_), None) => {
                p.add(base, "has both `service` and `split`; choose one");
                RouteTarget::Service(0)
            }
            (None, None, None) => {
                p.add(base, "needs `service`, `split` or `aggregate`");
                RouteTarget::Service(0)
            }
        }
    }

    /// `split`: at least two known services, each once, weights 1–10000; `sticky`.
    fn check_split(&self, base: &str, list: &[RawSplit], sticky: Option<&str>, p: &mut Problems) -> TrafficSplit {
        let mut chosen: Vec<(ServiceId, u32)> = Vec::new();
        for (j, entry) in list.iter().enumerate() {
            let id = self.service_id(format!("{base}.split[{j}].service"), &entry.service, p);
            if entry.weight == 0 || entry.weight > 10_000 {
                p.add(format!("{base}.split[{j}].weight"), "must be between 1 and 10000");
            }
            if chosen.iter().any(|(c, _)| *c == id) && self.index.contains_key(entry.service.as_str()) {
                p.add(format!("{base}.split[{j}].service"), format!("`{}` is listed twice", entry.service));
            }
            chosen.push((id, entry.weight.clamp(1, 10_000)));
        }
        if list.len() < 2 {
            p.add(format!("{base}.split"), "list at least two services (or use `service`)");
        }
        let sticky = sticky.and_then(|s| check_sticky(&format!("{base}.sticky"), s, p));
        TrafficSplit { services: chosen, sticky }
    }
}

/// The credentials a route accepts: `schemes` (default `[jwt]`), each configured under `auth`.
fn check_schemes(base: &str, r: &RawRoute, auth: AuthMode, configured: &[Scheme], p: &mut Problems) -> Vec<Scheme> {
    let mut out = Vec::new();
    match &r.schemes {
        None => out.push(Scheme::Jwt),
        Some(list) => {
            if list.is_empty() {
                p.add(format!("{base}.schemes"), "list at least one of jwt, api_key, telegram");
            }
            for (j, name) in list.iter().enumerate() {
                match Scheme::from_name(name) {
                    Some(s) if out.contains(&s) => {
                        p.add(format!("{base}.schemes[{j}]"), format!("`{name}` is listed twice"))
                    }
                    Some(s) => out.push(s),
                    None => {
                        p.add(format!("{base}.schemes[{j}]"), format!("`{name}` is not one of jwt, api_key, telegram"))
                    }
                }
            }
            if auth == AuthMode::Public {
                p.add(format!("{base}.schemes"), "a public route checks no credentials");
            }
        }
    }
    if auth != AuthMode::Public {
        for scheme in &out {
            if configured.contains(scheme) {
                continue;
            }
            let section = match scheme {
                Scheme::Jwt => "auth.jwt",
                Scheme::ApiKey => "auth.api_keys",
                Scheme::Telegram => "auth.telegram",
            };
            let why = match (&r.auth, &r.schemes) {
                (_, Some(_)) => format!("route accepts `{}`", scheme.name()),
                (Some(mode), None) => format!("route is `{mode}`"),
                (None, None) => "routes need a token by default (`auth: required`)".to_string(),
            };
            p.add(
                format!("{base}.auth"),
                format!("{why}, but no `{section}` is configured; set `auth: public`, configure it, or list other `schemes`"),
            );
        }
    }
    out
}

/// `aggregate`: parts with unique keys, known services and paths that are templates.
fn check_aggregate(
    key: &str,
    raw: &RawAggregate,
    service_id: &dyn Fn(String, &str, &mut Problems) -> ServiceId,
    p: &mut Problems,
) -> AggregateSettings {
    let timeout = raw.timeout.map_or(Duration::from_secs(5), |d| d.0);
    if timeout.is_zero() {
        p.add(format!("{key}.timeout"), "must be positive");
    }
    let on_failure = match raw.on_failure.as_deref().unwrap_or("partial") {
        "partial" => OnFailure::Partial,
        "fail" => OnFailure::Fail,
        other => {
            p.add(format!("{key}.on_failure"), format!("`{other}` is not one of partial, fail"));
            OnFailure::Partial
        }
    };
    if raw.parts.is_empty() {
        p.add(format!("{key}.parts"), "list at least one part");
    }
    if raw.parts.len() > 32 {
        p.add(format!("{key}.parts"), "at most 32 parts");
    }
    let mut parts: Vec<AggregatePart> = Vec::new();
    for (i, part) in raw.parts.iter().enumerate() {
        let base = format!("{key}.parts[{i}]");
        if part.key.is_empty() {
            p.add(format!("{base}.key"), "must not be empty");
        } else if parts.iter().any(|q| q.key == part.key) {
            p.add(format!("{base}.key"), format!("`{}` is used twice", part.key));
        }
        let service = service_id(format!("{base}.service"), &part.service, p);
        let path = match Template::parse(&part.path) {
            Ok(t) if part.path.starts_with('/') && !part.path.contains(char::is_whitespace) => t,
            Ok(t) => {
                p.add(format!("{base}.path"), "must be an absolute path (`/users/$claim_sub`)");
                t
            }
            Err(e) => {
                p.add(format!("{base}.path"), e.to_string());
                Template(Vec::new())
            }
        };
        parts.push(AggregatePart { key: part.key.clone(), service, path, transform: part.transform.clone() });
    }
    AggregateSettings { timeout, on_failure, parts }
}

/// `header:<Name>`, `cookie:<name>` or `claim:<name>`.
fn check_sticky(key: &str, text: &str, p: &mut Problems) -> Option<StickyKey> {
    let (kind, name) = text.split_once(':').unwrap_or((text, ""));
    match (kind, name.trim()) {
        (_, "") => None,
        ("header", h) => check_header_name(key, h, p).map(StickyKey::Header),
        ("cookie", c) => Some(StickyKey::Cookie(c.to_string())),
        ("claim", c) => Some(StickyKey::Claim(c.to_string())),
        _ => None,
    }
    .or_else(|| {
        if !p.errors.iter().any(|(k, _)| k == key) {
            p.add(key, format!("`{text}` is not one of header:<Name>, cookie:<name>, claim:<name>"));
        }
        None
    })
}

/// Two routes conflict when the same request could match both with equal specificity.
pub(super) fn overlaps(a: &RouteSettings, b: &RouteSettings) -> bool {
    if a.path != b.path || a.host != b.host || a.match_headers != b.match_headers {
        return false;
    }
    match (&a.methods, &b.methods) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            let x: BTreeSet<&str> = x.iter().map(Method::as_str).collect();
            y.iter().any(|m| x.contains(m.as_str()))
        }
        _ => false,
    }
}
