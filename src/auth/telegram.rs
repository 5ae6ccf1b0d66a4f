//! Telegram Mini App clients (ARCHITECTURE.md §7.5): `Authorization: tma <initData>`, checked
//! the way Telegram documents it — the data-check-string (every field but `hash`, sorted by
//! name, `name=value` joined by `\n`) signed with HMAC-SHA256 under the key
//! HMAC-SHA256(key = "WebAppData", message = bot token), compared in constant time, and
//! `auth_date` no older than `max_age` (nor ahead of our clock by more than the leeway).
//! The user's `id` becomes `sub`; the user's other fields and the launch fields are claims.

use super::{claims, Identity, Rejection};
pub use crate::config::TelegramSettings;
use http::{HeaderName, HeaderValue};
use ring::hmac;
use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;

/// Longest initData accepted (Telegram's are a few hundred bytes).
pub(crate) const MAX_INIT_DATA: usize = 8 * 1024;

/// How far `auth_date` may be ahead of our clock (clock skew).
const FUTURE_LEEWAY: u64 = 60;

/// The secret derived from a bot token, and what to accept: `auth.telegram` made ready.
#[derive(Clone)]
pub struct TelegramVerifier {
    key: hmac::Key,
    /// Oldest `auth_date` accepted.
    max_age: Duration,
    /// Roles every Telegram user gets.
    roles: Vec<String>,
    /// Claims sent upstream as headers (claim name → header).
    forward: Vec<(String, HeaderName)>,
}

impl fmt::Debug for TelegramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramVerifier")
            .field("max_age", &self.max_age)
            .field("roles", &self.roles)
            .field("forward", &self.forward)
            .finish_non_exhaustive()
    }
}

impl TelegramVerifier {
    /// The verifier of `auth.telegram` (its bot token's key derived once).
    pub fn new(settings: &TelegramSettings) -> Self {
        let web_app_data = hmac::Key::new(hmac::HMAC_SHA256, b"WebAppData");
        let secret = hmac::sign(&web_app_data, settings.bot_token.as_bytes());
        TelegramVerifier {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_ref()),
            max_age: settings.max_age,
            roles: settings.roles.clone(),
            forward: settings.forward.clone(),
        }
    }

    /// The identity in `init_data` (the text after `tma `), checked at `now` (Unix seconds).
    pub(crate) fn verify(&self, init_data: &str, now: u64) -> Result<Identity, Rejection> {
        if init_data.len() > MAX_INIT_DATA {
            return Err(Rejection::TooLarge { limit: MAX_INIT_DATA });
        }
        let mut fields: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(init_data.as_bytes()) {
            if fields.iter().any(|(n, _)| *n == name) {
                return Err(Rejection::DuplicateClaim);
            }
            fields.push((name.into_owned(), value.into_owned()));
        }
        let hash = match fields.iter().position(|(n, _)| n == "hash") {
            Some(i) => fields.swap_remove(i).1,
            None => return Err(Rejection::MissingClaim("hash".into())),
        };
        let signature = hex::decode(&hash).map_err(|_| Rejection::Malformed("initData hash is not hex"))?;
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        let mut check = String::with_capacity(init_data.len());
        for (i, (name, value)) in fields.iter().enumerate() {
            if i > 0 {
                check.push('\n');
            }
            check.push_str(name);
            check.push('=');
            check.push_str(value);
        }
        // ring compares in constant time.
        hmac::verify(&self.key, check.as_bytes(), &signature).map_err(|_| Rejection::BadSignature)?;

        let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let auth_date: u64 = field("auth_date")
            .ok_or_else(|| Rejection::MissingClaim("auth_date".into()))?
            .parse()
            .map_err(|_| Rejection::BadClaim("auth_date".into()))?;
        if auth_date > now.saturating_add(FUTURE_LEEWAY) {
            return Err(Rejection::NotYetValid);
        }
        if now.saturating_sub(auth_date) > self.max_age.as_secs() {
            return Err(Rejection::Expired);
        }
        let user = field("user").ok_or_else(|| Rejection::MissingClaim("user".into()))?;
        let user = claims::strict_object(user.as_bytes()).map_err(|_| Rejection::BadClaim("user".into()))?;
        let sub = match user.get("id") {
            Some(Value::Number(id)) if id.is_u64() || id.is_i64() => id.to_string(),
            _ => return Err(Rejection::BadClaim("user.id".into())),
        };
        let mut all = Map::new();
        for (name, value) in &user {
            all.insert(name.clone(), value.clone());
        }
        for (name, value) in &fields {
            if name != "user" {
                all.insert(name.clone(), Value::String(value.clone()));
            }
        }
        all.insert("sub".into(), Value::String(sub.clone()));
        let mut forward = Vec::with_capacity(self.forward.len());
        for (claim, header) in &self.forward {
            match claims::lookup(&all, claim).map(claims::header_text) {
                Some(Ok(Some(text))) => match HeaderValue::from_bytes(text.as_bytes()) {
                    Ok(v) => forward.push((header.clone(), v)),
                    Err(_) => return Err(Rejection::BadClaim(claim.clone())),
                },
                Some(Ok(None)) | None => {}
                Some(Err(())) => return Err(Rejection::BadClaim(claim.clone())),
            }
        }
        Ok(Identity {
            scheme: super::Scheme::Telegram,
            sub: Some(sub),
            roles: self.roles.clone(),
            claims: all,
            forward,
            plan: None,
            tenant: None,
        })
    }
}

/// initData signed with `bot_token` as Telegram signs it (for tests and load tests): `fields`
/// in any order, `hash` appended.
pub fn sign_init_data(bot_token: &str, fields: &[(&str, &str)]) -> String {
    let web_app_data = hmac::Key::new(hmac::HMAC_SHA256, b"WebAppData");
    let secret = hmac::sign(&web_app_data, bot_token.as_bytes());
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_ref());
    let mut sorted: Vec<&(&str, &str)> = fields.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let check: Vec<String> = sorted.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let hash = hex::encode(hmac::sign(&key, check.join("\n").as_bytes()).as_ref());
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (n, v) in fields {
        out.append_pair(n, v);
    }
    out.append_pair("hash", &hash);
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: &str = "123456:ABC-test-token";
    const USER: &str =
        r#"{"id":279058397,"first_name":"Vlad","username":"vlad","language_code":"en","is_premium":true}"#;

    fn verifier(bot_token: &str, roles: Vec<String>, forward: Vec<(String, HeaderName)>) -> TelegramVerifier {
        TelegramVerifier::new(&TelegramSettings {
            bot_token: bot_token.into(),
            max_age: Duration::from_secs(3600),
            roles,
            forward,
        })
    }

    fn settings() -> TelegramVerifier {
        verifier(BOT, vec!["tg".into()], vec![("username".into(), HeaderName::from_static("x-telegram-username"))])
    }

    fn signed(auth_date: u64) -> String {
        sign_init_data(BOT, &[("query_id", "AAHdF6IQ"), ("user", USER), ("auth_date", &auth_date.to_string())])
    }

    #[test]
    fn a_signed_init_data_names_its_user() {
        let now = 1_700_000_000;
        let id = settings().verify(&signed(now - 10), now).expect("valid");
        assert_eq!(id.sub.as_deref(), Some("279058397"));
        assert_eq!(id.roles, vec!["tg".to_string()]);
        assert_eq!(id.claim_text("username").as_deref(), Some("vlad"));
        assert_eq!(id.claim_text("query_id").as_deref(), Some("AAHdF6IQ"));
        assert_eq!(
            id.forward,
            vec![(HeaderName::from_static("x-telegram-username"), HeaderValue::from_static("vlad"))]
        );
    }

    #[test]
    fn tampering_wrong_bots_age_and_missing_fields_are_refused() {
        let now = 1_700_000_000;
        let s = settings();
        let good = signed(now);
        let tampered = good.replace("vlad", "vlaf");
        assert_eq!(s.verify(&tampered, now).err(), Some(Rejection::BadSignature));
        let other_bot = verifier("999:other", vec![], vec![]);
        assert_eq!(other_bot.verify(&good, now).err(), Some(Rejection::BadSignature));
        assert_eq!(s.verify(&signed(now - 3601), now).err(), Some(Rejection::Expired));
        assert_eq!(s.verify(&signed(now + 3600), now).err(), Some(Rejection::NotYetValid));
        let unhashed = good.split("&hash=").next().expect("fields").to_string();
        assert_eq!(s.verify(&unhashed, now).err(), Some(Rejection::MissingClaim("hash".into())));
        assert_eq!(s.verify(&format!("{good}&auth_date=1"), now).err(), Some(Rejection::DuplicateClaim));
        let no_user = sign_init_data(BOT, &[("auth_date", &now.to_string())]);
        assert_eq!(s.verify(&no_user, now).err(), Some(Rejection::MissingClaim("user".into())));
        assert!(s.verify(&"a".repeat(MAX_INIT_DATA + 1), now).is_err());
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let text = format!("{:?}", settings());
        assert!(!text.contains("ABC"), "{text}");
    }
}
