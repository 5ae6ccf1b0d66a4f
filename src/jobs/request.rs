//! The pure half of a submission: header checks, the job body, the job id and the envelope.
//! Nothing here touches the network, so every rule is unit-tested.

use crate::errors::GatewayError;
use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use uuid::Uuid;

/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// Domain separation for derived job ids: a different purpose hashing the same (user, key)
/// must never produce the same UUID.
const JOB_ID_CONTEXT: &[u8] = b"siger/jobs/idempotency/v1\0";

/// `Content-Type` must be `application/json`, optionally with parameters; a `charset`, when
/// given, must be UTF-8 (the body is embedded into a UTF-8 envelope as is).
pub(crate) fn check_content_type(value: Option<&[u8]>) -> Result<(), GatewayError> {
    let refuse = |got: &str| {
        Err(GatewayError::UnsupportedMediaType(format!("Content-Type must be application/json (got {got})")))
    };
    let Some(value) = value else { return refuse("none") };
    let Ok(value) = std::str::from_utf8(value) else { return refuse("a non-ASCII value") };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return refuse(&format!("`{}`", truncate(essence, 64)));
    }
    for param in parts {
        if let Some((name, val)) = param.split_once('=') {
            let val = val.trim().trim_matches('"');
            if name.trim().eq_ignore_ascii_case("charset")
                && !val.eq_ignore_ascii_case("utf-8")
                && !val.eq_ignore_ascii_case("utf8")
            {
                return Err(GatewayError::UnsupportedMediaType(format!(
                    "JSON bodies must be UTF-8 (got charset={})",
                    truncate(val, 32)
                )));
            }
        }
    }
    Ok(())
}

/// The `Idempotency-Key` header: absent, or 1–128 visible ASCII characters.
pub(crate) fn idempotency_key(value: Option<&[u8]>) -> Result<Option<String>, GatewayError> {
    let Some(value) = value else { return Ok(None) };
    if value.is_empty() || value.len() > MAX_IDEMPOTENCY_KEY {
        return Err(GatewayError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters (got {})",
            value.len()
        )));
    }
    if !value.iter().all(|b| b.is_ascii_graphic()) {
        return Err(GatewayError::BadRequest("Idempotency-Key must be visible ASCII characters".into()));
    }
    Ok(Some(String::from_utf8_lossy(value).into_owned()))
}

/// The client's job: a JSON object, kept byte for byte (numbers, key order) in the envelope.
pub(crate) fn parse_job(body: &[u8]) -> Result<&RawValue, GatewayError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        GatewayError::BadRequest(format!("request body is not UTF-8 (invalid byte at offset {})", e.valid_up_to()))
    })?;
    let Some(first) = text.trim_start().chars().next() else {
        return Err(GatewayError::BadRequest("request body is empty; a JSON object is required".into()));
    };
    let raw: &RawValue = serde_json::from_str(text)
        .map_err(|e| GatewayError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    if first != '{' {
        let kind = match first {
            '[' => "an array",
            '"' => "a string",
            't' | 'f' => "a boolean",
            'n' => "null",
            _ => "a number",
        };
        return Err(GatewayError::BadRequest(format!("request body must be a JSON object, not {kind}")));
    }
    Ok(raw)
}

/// The job id: a fresh UUIDv7 (time-ordered), or — with an `Idempotency-Key` — a UUIDv8 derived
/// from (user, key), so a retry by the same user maps to the same id (and JetStream's
/// `Nats-Msg-Id` de-duplication stores the job once) while two users' keys never collide.
pub fn job_id(user: &str, idempotency_key: Option<&str>) -> Uuid {
    let Some(key) = idempotency_key else { return Uuid::now_v7() };
    let mut h = Sha256::new();
    h.update(JOB_ID_CONTEXT);
    // Length prefix: ("ab", "c") and ("a", "bc") must not hash alike.
    h.update((user.len() as u64).to_be_bytes());
    h.update(user.as_bytes());
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

/// What is published to the stream.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    /// Job id (also `Nats-Msg-Id`).
    pub job_id: &'a str,
    /// The verified `sub` of the submitter.
    pub user_id: &'a str,
    /// RFC 3339 UTC with milliseconds.
    pub submitted_at: &'a str,
    /// The request id (also returned to the client as `X-Request-Id`).
    pub request_id: &'a str,
    /// The client's JSON object, unchanged.
    pub job: &'a RawValue,
}

impl Envelope<'_> {
    /// The message payload.
    pub fn to_bytes(&self) -> Bytes {
        // Serialising borrowed strings and an already-valid RawValue cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// A string safe as a NATS header value: control characters (CR/LF would end the header block)
/// and `%` are percent-encoded, everything else is kept.
pub fn header_value(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '%') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() || c == '%' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(body: &str) -> String {
        match parse_job(body.as_bytes()) {
            Err(GatewayError::BadRequest(m)) => m,
            other => panic!("expected 400 for {body:?}, got {other:?}"),
        }
    }

    #[test]
    fn content_type_must_be_json() {
        assert!(check_content_type(Some(b"application/json")).is_ok());
        assert!(check_content_type(Some(b"Application/JSON; charset=UTF-8")).is_ok());
        assert!(check_content_type(Some(b"application/json;charset=\"utf-8\"")).is_ok());
        for bad in [&b"text/plain"[..], b"application/jsonx", b"application/x-www-form-urlencoded", b""] {
            assert!(matches!(check_content_type(Some(bad)), Err(GatewayError::UnsupportedMediaType(_))));
        }
        assert!(matches!(check_content_type(None), Err(GatewayError::UnsupportedMediaType(_))));
        assert!(matches!(
            check_content_type(Some(b"application/json; charset=latin1")),
            Err(GatewayError::UnsupportedMediaType(m)) if m.contains("latin1")
        ));
    }

    #[test]
    fn idempotency_key_rules() {
        assert_eq!(idempotency_key(None).expect("none"), None);
        assert_eq!(idempotency_key(Some(b"order-42")).expect("ok").as_deref(), Some("order-42"));
        assert!(idempotency_key(Some("k".repeat(128).as_bytes())).is_ok());
        assert!(idempotency_key(Some("k".repeat(129).as_bytes())).is_err());
        assert!(idempotency_key(Some(b"")).is_err());
        assert!(idempotency_key(Some(b"has space")).is_err());
        assert!(idempotency_key(Some("caf\u{e9}".as_bytes())).is_err());
    }

    #[test]
    fn body_must_be_a_json_object() {
        let raw = parse_job(br#" {"image": "x", "n": 1.50} "#).expect("object");
        assert_eq!(raw.get(), r#"{"image": "x", "n": 1.50}"#);
        assert!(bad("").contains("empty"));
        assert!(bad("  \n").contains("empty"));
        assert!(bad("[1,2]").contains("not an array"));
        assert!(bad("\"s\"").contains("not a string"));
        assert!(bad("42").contains("not a number"));
        assert!(bad("null").contains("not null"));
        let m = bad("{\n  \"a\": 1,\n  \"b\": }");
        assert!(m.contains("line 3 column 8"), "{m}");
        assert!(bad("{} trailing").contains("line 1 column 4"));
        assert!(matches!(parse_job(&[b'{', 0xff, b'}']), Err(GatewayError::BadRequest(m)) if m.contains("UTF-8")));
    }

    #[test]
    fn job_ids() {
        let a = job_id("alice", None);
        assert_eq!(a.get_version_num(), 7);
        assert_ne!(a, job_id("alice", None));
        let k1 = job_id("alice", Some("k1"));
        assert_eq!(k1.get_version_num(), 8);
        assert_eq!(k1, job_id("alice", Some("k1")), "deterministic per (user, key)");
        assert_ne!(k1, job_id("bob", Some("k1")), "scoped per user");
        assert_ne!(k1, job_id("alice", Some("k2")));
        assert_ne!(job_id("ab", Some("c")), job_id("a", Some("bc")), "no concatenation ambiguity");
    }

    #[test]
    fn envelope_shape() {
        let job = parse_job(br#"{"x":[1,2]}"#).expect("object");
        let env = Envelope {
            job_id: "id-1",
            user_id: "alice",
            submitted_at: "2026-01-02T03:04:05.678Z",
            request_id: "rid",
            job,
        };
        let v: serde_json::Value = serde_json::from_slice(&env.to_bytes()).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"job_id": "id-1", "user_id": "alice", "submitted_at": "2026-01-02T03:04:05.678Z",
                "request_id": "rid", "job": {"x": [1, 2]}})
        );
    }

    #[test]
    fn header_values_cannot_inject() {
        assert_eq!(header_value("alice@example.com"), "alice@example.com");
        assert_eq!(header_value("a\r\nNats-Msg-Id: x"), "a%0D%0ANats-Msg-Id: x");
        assert_eq!(header_value("50%"), "50%25");
        assert_eq!(header_value("j\u{f6}rg"), "j\u{f6}rg");
    }
}
