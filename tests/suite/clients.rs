//! More kinds of clients (ARCHITECTURE §7.5) against real siger and siger-echo: API keys made
//! by `siger apikey` (consumer identity, roles, reloadable keys file, limits per consumer) and
//! Telegram Mini App initData signed here exactly as Telegram documents it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::jwt::{claims, hs256, hs_auth};
use crate::support::*;
use ring::hmac;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// `siger apikey`: (key, keys-file entry).
fn new_key(consumer: &str, roles: &str) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_siger"))
        .args(["apikey", "--consumer", consumer, "--roles", roles])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().to_string();
    let (key, entry) = (field("key:"), field("entry:"));
    assert!(!entry.contains(&key), "the file entry never holds the key itself");
    (key, entry)
}

#[test]
fn api_keys_name_consumers_and_follow_the_keys_file() {
    let echo = Echo::start("e1");
    let keys_dir = tempfile::tempdir().unwrap();
    let keys_file = keys_dir.path().join("keys.yaml");
    let (acme, acme_entry) = new_key("acme", "partner");
    let (globex, globex_entry) = new_key("globex", "partner");
    std::fs::write(&keys_file, format!("{acme_entry}\n")).unwrap();
    let gw = Gateway::start(&format!(
        "{}  api_keys: {{header: X-Api-Key, file: {}}}\nservices:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /partner, service: s, schemes: [api_key], roles: [partner]}}\n  - {{path: /limited, service: s, schemes: [api_key, jwt], rate_limit: {{requests: 2, per: 1m, key: consumer}}}}\n  - {{path: /api, service: s}}\n",
        hs_auth(""),
        keys_file.display(),
        echo.addr
    ));
    let r = get_with(gw.addr, "/partner/x", &[("X-Api-Key", &acme), ("X-Consumer", "evil")]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-consumer"], serde_json::json!(["acme"]), "only the gateway names the consumer");
    assert!(seen.get("x-api-key").is_none(), "the key never reaches the backend");

    let r = get_with(gw.addr, "/partner/x", &[("X-Api-Key", "sk_not-a-key")]);
    assert_eq!((r.status, r.json()["error"].as_str()), (401, Some("invalid_token")));
    assert!(r.json()["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(get(gw.addr, "/partner/x").status, 401, "no credentials");
    let r = get_with(gw.addr, "/api/x", &[("X-Api-Key", &acme)]);
    assert_eq!(r.status, 401, "a JWT route refuses an API key");
    assert!(r.json()["message"].as_str().unwrap().contains("api_key"), "{}", r.json());
    let token = format!("Bearer {}", hs256(&claims("alice", &["partner"])));
    assert_eq!(get_with(gw.addr, "/partner/x", &[("Authorization", &token)]).status, 401, "a key route refuses a JWT");
    let both = get_with(gw.addr, "/limited/x", &[("Authorization", &token), ("X-Api-Key", &acme)]);
    assert_eq!(both.status, 401, "two credentials at once are refused");

    // Limits are per consumer: acme's third request in the window is refused; alice (a JWT
    // user on the same route) still has her own.
    for _ in 0..2 {
        assert_eq!(get_with(gw.addr, "/limited/x", &[("X-Api-Key", &acme)]).status, 200);
    }
    assert_eq!(get_with(gw.addr, "/limited/x", &[("X-Api-Key", &acme)]).status, 429);
    assert_eq!(get_with(gw.addr, "/limited/x", &[("Authorization", &token)]).status, 200);
    let logged = eventually(std::time::Duration::from_secs(3), || {
        gw.access_lines().iter().any(|l| l["path"] == "/limited/x" && l["status"] == 200 && l["user"] == "acme")
    });
    assert!(logged, "the access log names the consumer");

    // The keys file is part of the configuration: a reload applies an edit.
    std::fs::write(&keys_file, format!("{globex_entry}\n")).unwrap();
    let r = gw.reload();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(get_with(gw.addr, "/partner/x", &[("X-Api-Key", &globex)]).status, 200, "new key works");
    assert_eq!(get_with(gw.addr, "/partner/x", &[("X-Api-Key", &acme)]).status, 401, "removed key fails");
    // A broken keys file is refused and the keys in force keep working.
    std::fs::write(&keys_file, "- {sha256: nothex, consumer: x}\n").unwrap();
    assert_eq!(gw.reload().status, 422);
    assert_eq!(get_with(gw.addr, "/partner/x", &[("X-Api-Key", &globex)]).status, 200);
}

const BOT: &str = "7012345678:AAHk-test-bot-token-for-siger-tests";

/// initData as Telegram builds it: the fields URL-encoded, `hash` = hex HMAC-SHA256 of the
/// sorted `name=value` lines under the key HMAC-SHA256("WebAppData", bot token).
fn init_data(bot: &str, fields: &[(&str, String)]) -> String {
    let secret = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"WebAppData"), bot.as_bytes());
    let mut lines: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    lines.sort();
    let hash = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_ref()), lines.join("\n").as_bytes());
    let mut query = url_encode_pairs(fields);
    query.push_str(&format!("&hash={}", hex(hash.as_ref())));
    query
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn url_encode_pairs(fields: &[(&str, String)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn fields(auth_date: u64) -> Vec<(&'static str, String)> {
    vec![
        ("query_id", "AAHdF6IQAAAAAN0XohDhrOrc".to_string()),
        ("user", r#"{"id":279058397,"first_name":"Vlad","last_name":"","username":"vlad_dev","language_code":"en","allows_write_to_pm":true}"#.to_string()),
        ("auth_date", auth_date.to_string()),
    ]
}

#[test]
fn telegram_init_data_is_checked_as_telegram_signs_it() {
    let echo = Echo::start("e1");
    let gw = Gateway::start(&format!(
        "{}  telegram: {{bot_token: \"{BOT}\", max_age: 1h, forward: {{sub: X-Telegram-User, username: X-Telegram-Username}}}}\nservices:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{path: /tg, service: s, schemes: [telegram], rate_limit: {{requests: 100, per: 1m, key: consumer}}}}\n",
        hs_auth(""),
        echo.addr
    ));
    let tma = |data: &str| format!("tma {data}");
    let good = init_data(BOT, &fields(now() - 60));
    let r = get_with(gw.addr, "/tg/me", &[("Authorization", &tma(&good)), ("X-Telegram-User", "1")]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = &r.json()["headers"];
    assert_eq!(
        seen["x-telegram-user"],
        serde_json::json!(["279058397"]),
        "the user id is `sub`; client copies dropped"
    );
    assert_eq!(seen["x-telegram-username"], serde_json::json!(["vlad_dev"]));

    let refused = |data: String, what: &str| {
        let r = get_with(gw.addr, "/tg/me", &[("Authorization", &tma(&data))]);
        assert_eq!(r.status, 401, "{what}");
        assert_eq!(r.json()["error"], "invalid_token", "{what}");
        r.json()["message"].as_str().unwrap().to_string()
    };
    let tampered = good.replace("vlad_dev", "vlad_adm");
    assert!(refused(tampered, "tampered field").contains("signature"));
    refused(init_data("7012345678:AAHk-another-bot-token-xxxxxxxx", &fields(now())), "another bot's token");
    assert!(refused(init_data(BOT, &fields(now() - 7200)), "auth_date older than max_age").contains("expired"));
    let unhashed = good.split("&hash=").next().unwrap().to_string();
    assert!(refused(unhashed, "no hash").contains("hash"));
    // A JWT on a Telegram-only route is refused, never treated as anonymous.
    let token = format!("Bearer {}", hs256(&claims("alice", &["user"])));
    assert_eq!(get_with(gw.addr, "/tg/me", &[("Authorization", &token)]).status, 401);
}
