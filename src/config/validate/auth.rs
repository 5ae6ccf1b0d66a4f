//! `auth.jwt`: algorithms, secrets and key files (parsed by the same `jose` code auth uses),
//! and which headers may carry claims.

use super::*;

/// Headers a claim may never be forwarded as: they define framing, routing or the client.
pub(super) const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "authorization",
    "cookie",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-request-id",
];

pub(super) fn check_jwt(raw: &RawJwt, base: &Path, p: &mut Problems) -> Option<JwtSettings> {
    let mut algorithms = Vec::new();
    if raw.algorithms.is_empty() {
        p.add("auth.jwt.algorithms", "list at least one algorithm (e.g. [HS256])");
    }
    for (i, a) in raw.algorithms.iter().enumerate() {
        match JwtAlgorithm::parse(a) {
            Some(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
            Some(_) => p.add(format!("auth.jwt.algorithms[{i}]"), format!("`{a}` is listed twice")),
            None if a.eq_ignore_ascii_case("none") => {
                p.add(format!("auth.jwt.algorithms[{i}]"), "`none` is never accepted: unsigned tokens prove nothing")
            }
            None => p.add(
                format!("auth.jwt.algorithms[{i}]"),
                format!(
                    "unknown algorithm `{a}` (HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)"
                ),
            ),
        }
    }
    // The secret inline (often `${VAR}`, read from the environment the process started with)
    // or from a file, which a reload reads again: the way to rotate it without a restart.
    let secret = match (&raw.secret, &raw.secret_file) {
        (Some(_), Some(_)) => {
            p.add("auth.jwt.secret_file", "set `secret` or `secret_file`, not both");
            None
        }
        (Some(s), None) => Some(s.clone()),
        (None, Some(f)) => read_file("auth.jwt.secret_file", base, f, p)
            .map(|file| text(&file).trim_end_matches(['\r', '\n']).to_string()),
        (None, None) => None,
    };
    let has_hmac = algorithms.iter().any(|a| a.is_hmac());
    let has_asym = algorithms.iter().any(|a| !a.is_hmac());
    if has_hmac {
        match secret.as_deref() {
            None => p.add("auth.jwt.secret", "HS* algorithms need a `secret`"),
            Some(s) if s.len() < 32 => p.add(
                "auth.jwt.secret",
                "must be at least 32 bytes: a short HMAC secret can be brute-forced offline from one token",
            ),
            _ => {}
        }
    } else if secret.is_some() {
        p.warn("auth.jwt.secret", "set, but no HS* algorithm is allowed, so it is not used");
    }
    let key_sources =
        [raw.public_key_file.is_some(), raw.jwks_file.is_some(), raw.jwks_url.is_some()].iter().filter(|b| **b).count();
    if has_asym && key_sources == 0 {
        p.add("auth.jwt", "asymmetric algorithms need `public_key_file`, `jwks_file` or `jwks_url`");
    }
    if !has_asym && key_sources > 0 {
        p.warn("auth.jwt", "a public key or JWKS is configured but only HS* algorithms are allowed, so it is not used");
    }
    let jose: Vec<jsonwebtoken::Algorithm> = algorithms.iter().map(|a| a.jose()).collect();
    // The same parser the verifier's key store uses (`jose` is a leaf both share), so `-t`
    // refuses what the verifier could not load.
    let public_key_file = raw.public_key_file.as_ref().and_then(|f| {
        let file = read_file("auth.jwt.public_key_file", base, f, p)?;
        if !text(&file).contains("-----BEGIN") {
            p.add("auth.jwt.public_key_file", format!("{} is not a PEM file", file.shown()));
        } else if let Err(e) = crate::jose::parse_pem(&file.bytes, &jose) {
            p.add("auth.jwt.public_key_file", format!("{}: {e}", file.shown()));
        }
        Some(file.path)
    });
    let jwks_file = raw.jwks_file.as_ref().and_then(|f| {
        let file = read_file("auth.jwt.jwks_file", base, f, p)?;
        if let Err(e) = crate::jose::parse_jwks(&file.bytes) {
            p.add("auth.jwt.jwks_file", format!("{}: {e}", file.shown()));
        }
        Some(file.path)
    });
    if let Some(url) = &raw.jwks_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            p.add("auth.jwt.jwks_url", "must be an http(s) URL");
        }
    }
    let jwks_refresh = dur(&raw.jwks_refresh, Duration::from_secs(300));
    if jwks_refresh < Duration::from_secs(1) {
        p.add("auth.jwt.jwks_refresh", "must be at least 1s");
    }
    let leeway = dur(&raw.leeway, Duration::from_secs(30));
    if leeway > Duration::from_secs(300) {
        p.add("auth.jwt.leeway", "more than 5m of clock skew would keep expired tokens alive; use at most 5m");
    }
    let forward = check_forward("auth.jwt.forward", &raw.forward, p);
    let cache_size = raw.cache_size.unwrap_or(10_000);
    let max_token_bytes = raw.max_token_bytes.map(|s| s.0).unwrap_or(8 << 10) as usize;
    if algorithms.is_empty() {
        return None;
    }
    Some(JwtSettings {
        algorithms,
        secret,
        public_key_file,
        jwks_file,
        jwks_url: raw.jwks_url.clone(),
        jwks_refresh,
        issuer: raw.issuer.clone(),
        audience: raw.audience.clone(),
        leeway,
        roles_claim: raw.roles_claim.clone().unwrap_or_else(|| "roles".into()),
        forward,
        cache_size,
        max_token_bytes,
    })
}

/// A header that `forward` overwrites carries the gateway's word upstream, but the client's word
/// before that: hashing or rate-limiting on it would trust the client. Point at the claim.
pub(super) fn check_identity_headers(
    auth: &JwtSettings,
    services: &[ServiceSettings],
    routes: &[RouteSettings],
    rate_limit: &RateLimitSettings,
    p: &mut Problems,
) {
    let claim_of = |h: &HeaderName| auth.forward.iter().find(|(_, fh)| fh == h).map(|(c, _)| c.clone());
    for s in services {
        if let LbAlgorithm::ConsistentHash(HashKey::Header(h)) = &s.lb {
            if let Some(claim) = claim_of(h) {
                p.add(
                    format!("services.{}.hash_key", s.name),
                    format!("`{h}` is an identity header set from claim `{claim}`; hash `claim:{claim}` instead"),
                );
            }
        }
    }
    let rules = rate_limit.default.iter().map(|r| ("rate_limit.default.key".to_string(), r)).chain(
        routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.rate_limit.as_ref().map(|l| (format!("routes[{i}].rate_limit.key"), l))),
    );
    for (path, rule) in rules {
        if let LimitKey::Header(h) = &rule.key {
            if let Some(claim) = claim_of(h) {
                p.add(
                    path,
                    format!("`{h}` is an identity header set from claim `{claim}`; use `key: consumer` instead"),
                );
            }
        }
    }
}

/// A `forward` map (claim → header): valid names, none reserved, each header once.
fn check_forward(key: &str, raw: &BTreeMap<String, String>, p: &mut Problems) -> Vec<(String, HeaderName)> {
    let mut forward = Vec::new();
    let mut seen = HashSet::new();
    for (claim, header) in raw {
        let path = format!("{key}.{claim}");
        if let Some(h) = check_header_name(&path, header, p) {
            if RESERVED_HEADERS.contains(&h.as_str()) || h == CONSUMER_HEADER {
                p.add(&path, format!("`{header}` is reserved by the gateway and cannot carry a claim"));
            } else if !seen.insert(h.clone()) {
                p.add(&path, format!("header `{header}` already carries another claim"));
            } else {
                forward.push((claim.clone(), h));
            }
        }
    }
    forward
}

/// `auth.api_keys`: the header (not one the gateway or HTTP gives a meaning) and the keys file,
/// read now (and again on every reload; `auth::api_keys` parses it).
pub(super) fn check_api_keys(raw: &RawApiKeys, base: &Path, p: &mut Problems) -> Option<ApiKeySettings> {
    let header = check_header_name("auth.api_keys.header", raw.header.as_deref().unwrap_or("X-Api-Key"), p)?;
    if RESERVED_HEADERS.contains(&header.as_str()) || header == CONSUMER_HEADER {
        p.add("auth.api_keys.header", format!("`{header}` has another meaning; name a header of its own (X-Api-Key)"));
        return None;
    }
    let file = read_file("auth.api_keys.file", base, &raw.file, p)?;
    Some(ApiKeySettings { header, file })
}

/// `auth.telegram`: the bot token (inline or from a file), `max_age`, roles and forwarded claims.
pub(super) fn check_telegram(raw: &RawTelegram, base: &Path, p: &mut Problems) -> Option<TelegramSettings> {
    let token = match (&raw.bot_token, &raw.bot_token_file) {
        (Some(_), Some(_)) => {
            p.add("auth.telegram.bot_token_file", "set `bot_token` or `bot_token_file`, not both");
            None
        }
        (Some(t), None) => Some(t.trim().to_string()),
        (None, Some(f)) => read_file("auth.telegram.bot_token_file", base, f, p).map(|f| text(&f).trim().to_string()),
        (None, None) => {
            p.add("auth.telegram", "needs `bot_token` (or `bot_token_file`)");
            None
        }
    };
    let token = token?;
    // A bot token is `<bot id>:<secret>` as @BotFather prints it.
    let well_formed = token
        .split_once(':')
        .is_some_and(|(id, secret)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && secret.len() >= 20);
    if !well_formed {
        p.add("auth.telegram.bot_token", "is not a bot token (`<digits>:<secret>` as @BotFather gives it)");
    }
    let max_age = raw.max_age.map_or(Duration::from_secs(3600), |d| d.0);
    if max_age.is_zero() || max_age > Duration::from_secs(7 * 86_400) {
        p.add("auth.telegram.max_age", "must be between 1s and 7d (initData older than that is a replay risk)");
    }
    let forward = check_forward("auth.telegram.forward", &raw.forward, p);
    Some(TelegramSettings { bot_token: token, max_age, roles: raw.roles.clone(), forward })
}
