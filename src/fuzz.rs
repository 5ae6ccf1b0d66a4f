//! Property tests over every parser that takes bytes from a client or a file (issue 18,
//! ARCHITECTURE.md §7.8). Each target runs `SIGER_FUZZ_CASES` cases (default 2,000, so the
//! test suite stays quick); `scripts/fuzz` runs them with a million or more. Inputs mix
//! structured pieces (path segments, escapes, header words) with arbitrary bytes, so both the
//! interesting corners and the garbage are covered; proptest shrinks any failure to a minimal
//! input.
//!
//! Targets: path normalisation (also differentially, against an independent model of how a
//! backend resolves a path), header templates, the config loader, bearer / `tma` / API-key
//! credentials, Content-Length framing, JSON Schema input, the connection gate's end of a
//! request head (differentially, against httparse, the parser Pingora runs on what the gate
//! hands it), and body transforms (`allow` / `deny` against an independent model, forms).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

fn config() -> ProptestConfig {
    let cases = std::env::var("SIGER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    ProptestConfig { cases, failure_persistence: None, max_shrink_iters: 20_000, ..ProptestConfig::default() }
}

/// Strings built from pieces that matter to the parser under test, or arbitrary text.
fn pieces_or_any(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(proptest::sample::select(pieces), 0..max).prop_map(|v| v.concat()),
        1 => any::<String>(),
    ]
}

mod paths {
    use super::*;
    use crate::normalize::{normalize_path, route_path};

    const PIECES: &[&str] = &[
        "/", "/", "/", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2f", "%2F", "%5c", "%00", ";", ";x=1", "a",
        "admin", "api", "v1", "%41", "%61dmin", "%3B", "%3b", "%25", "%252e", "\\", "%", "%z", "%4", "~", "é",
        "%C3%A9", "%FF", "//", "?", "#", " ", "%20", "-", "_",
    ];

    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }

    /// Percent-decode every escape (a backend that decodes before resolving).
    fn decode(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        out
    }

    /// How a servlet-style backend resolves a path, written independently of the gateway:
    /// split on `/`, drop each segment's `;` parameters, decode, then remove `.`/`..` and empty
    /// segments (RFC 3986 §5.2.4, merged slashes). `None` when `..` climbs above the root.
    fn backend_segments(raw: &str) -> Option<Vec<Vec<u8>>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for segment in raw.split('/').skip(1) {
            let name = segment.split(';').next().unwrap_or("");
            let name = decode(name.as_bytes());
            match name.as_slice() {
                b"" | b"." => {}
                b".." => {
                    out.pop()?;
                }
                _ => out.push(name),
            }
        }
        Some(out)
    }

    /// The segments the gateway routes on, decoded the same way.
    fn gateway_segments(routed: &str) -> Vec<Vec<u8>> {
        routed.split('/').filter(|s| !s.is_empty()).map(|s| decode(s.as_bytes())).collect()
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn normalised_paths_route_where_the_backend_resolves(raw in pieces_or_any(PIECES, 24)) {
            let Ok(normalized) = normalize_path(&raw) else { return Ok(()) };
            prop_assert!(normalized.starts_with('/'), "{normalized}");
            prop_assert!(!normalized.contains("//") && !normalized.contains('\\'), "{normalized}");
            prop_assert!(
                !normalized.split('/').any(|s| s == "." || s == ".."),
                "dot segment left in {normalized:?}"
            );
            // Idempotent: normalising again changes nothing.
            let again = normalize_path(&normalized).map(|p| p.into_owned());
            prop_assert_eq!(again, Ok(normalized.to_string()));
            let routed = route_path(&normalized);
            let rerouted = route_path(&routed).into_owned();
            prop_assert_eq!(&rerouted, routed.as_ref());
            // Differential: the backend receives the normalised path; the route is chosen on
            // the segments it resolves that to (so any prefix route matches both or neither).
            let backend = backend_segments(&normalized);
            prop_assert_eq!(Some(gateway_segments(&routed)), backend, "raw {:?} routed {:?}", raw, routed);
            // And wherever the raw path resolves at all, it resolves to the same segments.
            if let Some(direct) = backend_segments(&raw) {
                prop_assert_eq!(gateway_segments(&routed), direct, "raw {:?} routed {:?}", raw, routed);
            }
        }
    }
}

mod templates {
    use super::*;
    use crate::policy::headers::{Template, Vars};
    use std::time::Duration;

    const PIECES: &[&str] = &[
        "$",
        "$$",
        "$request_id",
        "$client_ip",
        "$route",
        "$duration_ms",
        "$claim_",
        "$claim_sub",
        "$claim_a.b",
        "$nope",
        "text",
        " ",
        "/",
        "\t",
        "\r",
        "\n",
        "\0",
        "é",
        "_",
        ".",
        "x",
    ];
    const VARIABLES: &[&str] =
        &["$claim_x", "$client_ip", "$route", "x$claim_x", "$claim_x$claim_x", "$claim_x.$claim_x"];
    const VALUES: &[&str] = &["", ".", "..", "a/b", "a?b#c", "%2e%2e", "é", "\r\nX-Evil: 1", "\0", "ok", "../x"];

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn templates_parse_render_and_keep_values_in_one_segment(
            text in pieces_or_any(PIECES, 12),
            variable in proptest::sample::select(VARIABLES),
            claim in prop_oneof![3 => proptest::sample::select(VALUES).prop_map(str::to_string), 1 => any::<String>()],
            ip in proptest::sample::select(VALUES),
        ) {
            let Ok(template) = Template::parse(&text) else { return Ok(()) };
            let claim_of = |_: &str| Some(claim.clone());
            let vars = Vars { request_id: "rid", client_ip: ip, route: "r", elapsed: Duration::from_millis(3), claim: &claim_of, tenant: None };
            // A rendered header value is always valid header text (or refused as a whole).
            if let Some(value) = template.render(&vars) {
                prop_assert!(!value.as_bytes().iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
            }
            // As a path piece between two fixed segments, a value never adds or removes one.
            let path = Template::parse(&format!("/a/{variable}/b")).ok();
            if let Some(rendered) = path.and_then(|t| t.render_path(&vars)) {
                if let Ok(normalized) = crate::normalize::normalize_path(&rendered) {
                    let segments: Vec<&str> = normalized.split('/').filter(|s| !s.is_empty()).collect();
                    prop_assert_eq!(segments.first().copied(), Some("a"), "{}", rendered);
                    prop_assert_eq!(segments.last().copied(), Some("b"), "{}", rendered);
                }
            }
        }
    }
}

mod config_loader {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    const VALID: &str = "listen: [\"127.0.0.1:8080\"]\nlimits: {max_body: 1MiB, header_timeout: 5s}\nservices:\n  api:\n    targets: [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n    lb: least_conn\n    retry_on: [connect, 503]\n    circuit_breaker: {max_in_flight: 10, failure_rate: 50%, min_requests: 5, window: 10s, open_for: 5s, half_open_requests: 1}\nroutes:\n  - path: /api/\n    service: api\n    auth: public\n    methods: [GET, POST]\n    rate_limit: {requests: 10, per: 1s, key: ip}\n    request_headers: {set: {X-A: \"$route\"}}\n    cors: {origins: [\"https://a.example\"]}\n  - {path: /, service: api, auth: public, host: \"*.example.com\"}\n";

    const WORDS: &[&str] = &[
        "\n",
        " ",
        "  ",
        ":",
        "-",
        "[",
        "]",
        "{",
        "}",
        ",",
        "\"",
        "'",
        "#",
        "&a",
        "*a",
        "!!str",
        "${X}",
        "${X:-y}",
        "${",
        "0",
        "-1",
        "99999999999999999999",
        "1.5",
        "1KiB",
        "10s",
        "0s",
        "3650d",
        "true",
        "null",
        "~",
        "%",
        "path",
        "service",
        "routes",
        "services",
        "targets",
        "limits",
        "auth",
        "jwt",
        "é",
        "\t",
        "\0",
    ];

    /// The valid config with edits: a word inserted, a byte range removed or replaced.
    fn mutated() -> impl Strategy<Value = String> {
        let edit = (0..VALID.len(), 0..8usize, proptest::sample::select(WORDS));
        proptest::collection::vec(edit, 1..6).prop_map(|edits| {
            let mut text = VALID.as_bytes().to_vec();
            for (at, remove, word) in edits {
                let at = at.min(text.len());
                let end = (at + remove).min(text.len());
                text.splice(at..end, word.bytes());
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn config_edits_load_or_name_what_is_wrong(text in prop_oneof![4 => mutated(), 1 => any::<String>()]) {
            let env: HashMap<String, String> = HashMap::from([("X".to_string(), "1".to_string())]);
            if let Err(errors) = crate::config::parse(&text, Path::new("/nonexistent"), &env) {
                prop_assert!(!errors.is_empty());
                for e in &errors {
                    prop_assert!(!e.message.is_empty(), "{e:?}");
                }
            }
        }
    }
}

mod credentials {
    use super::*;
    use crate::auth::api_keys::ApiKeyTable;
    use crate::auth::credentials::presented;
    use crate::auth::telegram::{TelegramSettings, TelegramVerifier};
    use crate::auth::token::bearer;
    use http::{HeaderMap, HeaderName, HeaderValue};
    use std::time::Duration;

    const PIECES: &[&str] = &[
        "Bearer",
        "bearer",
        "BEARER",
        "tma",
        "Basic",
        " ",
        "  ",
        "\t",
        "eyJhbGciOiJIUzI1NiJ9",
        ".",
        "..",
        "a",
        "-",
        "_",
        "=",
        "+",
        "/",
        "~",
        "%",
        "é",
        "auth_date=1",
        "&",
        "hash=00",
        "user=%7B%7D",
        "query_id=x",
        "==",
    ];

    fn header_values() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(
            prop_oneof![
                4 => pieces_or_any(PIECES, 10).prop_map(String::into_bytes),
                1 => proptest::collection::vec(any::<u8>(), 0..64),
            ],
            0..3,
        )
    }

    fn headers(name: &'static str, values: &[Vec<u8>]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                map.append(HeaderName::from_static(name), v);
            }
        }
        map
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn credentials_are_found_only_when_well_formed(values in header_values(), key in header_values()) {
            let mut map = headers("authorization", &values);
            for (name, value) in headers("x-api-key", &key) {
                map.append(name.unwrap_or(HeaderName::from_static("x-api-key")), value);
            }
            let key_header = HeaderName::from_static("x-api-key");
            let _ = presented(&map, Some(&key_header));
            if let Ok(Some(token)) = bearer(&map, 64) {
                prop_assert!(!token.is_empty() && token.len() <= 64);
                prop_assert_eq!(token.matches('.').count(), 2, "{}", token);
                prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b)), "{}", token);
            }
            // No random key belongs to a consumer; malformed ones are refused, never a panic.
            let table = ApiKeyTable::parse(b"- {sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, consumer: c, roles: []}\n").unwrap();
            if let Ok(Some(identity)) = table.authenticate(&map, &key_header) {
                let sent = map.get(&key_header).unwrap().as_bytes().trim_ascii();
                prop_assert_eq!(sent, b"test", "{:?}", identity);
            }
        }

        #[test]
        fn telegram_init_data_never_verifies_unsigned(data in pieces_or_any(PIECES, 16)) {
            let settings = TelegramVerifier::new(&TelegramSettings {
                bot_token: "1:bot-token".into(),
                max_age: Duration::from_secs(3600),
                roles: Vec::new(),
                forward: Vec::new(),
            });
            prop_assert!(settings.verify(&data, 1).is_err());
        }

        #[test]
        fn api_key_files_parse_or_say_which_entry(text in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Err(message) = ApiKeyTable::parse(&text) {
                prop_assert!(!message.is_empty());
            }
        }
    }
}

mod framing {
    use super::*;
    use pingora::http::RequestHeader;

    const PIECES: &[&str] = &[
        "0",
        "1",
        "5",
        "10",
        "007",
        "-1",
        "+1",
        " ",
        ",",
        "\t",
        "a",
        "0x10",
        "18446744073709551616",
        "99999999999999999999",
    ];

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn content_length_is_a_length_only_when_every_value_says_so(
            lengths in proptest::collection::vec(pieces_or_any(PIECES, 5), 0..3),
            chunked in proptest::option::of(prop_oneof![Just("chunked"), Just("gzip, chunked"), Just("chunked, chunked"), Just("identity")]),
            version in prop_oneof![Just(http::Version::HTTP_10), Just(http::Version::HTTP_11)],
        ) {
            let mut req = RequestHeader::build("POST", b"/", None).unwrap();
            req.set_version(version);
            for l in &lengths {
                if http::HeaderValue::from_str(l).is_ok() {
                    req.append_header("content-length", l.as_str()).unwrap();
                }
            }
            if let Some(te) = chunked {
                req.append_header("transfer-encoding", te).unwrap();
            }
            match crate::framing::inspect(&req) {
                Ok(Some(n)) => {
                    prop_assert!(chunked.is_none());
                    for value in req.headers.get_all("content-length") {
                        for part in value.to_str().unwrap().split(',') {
                            prop_assert_eq!(part.trim().parse::<u64>().ok(), Some(n), "{:?}", lengths);
                            prop_assert!(part.trim().bytes().all(|b| b.is_ascii_digit()));
                        }
                    }
                }
                Ok(None) => prop_assert!(chunked == Some("chunked") || req.headers.get("content-length").is_none()),
                Err(_) => {}
            }
        }
    }
}

mod schema {
    use super::*;
    use crate::policy::schema::BodySchema;
    use crate::policy::strict_json;
    use serde_json::Value;
    use std::path::Path;

    const SCHEMA: &str = r#"{"type": "object", "required": ["name"], "additionalProperties": false,
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 8, "pattern": "^[a-z]+$"},
                       "n": {"type": "integer", "minimum": 0, "maximum": 100},
                       "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3, "uniqueItems": true},
                       "x": {"oneOf": [{"type": "null"}, {"type": "number", "multipleOf": 0.5}]}}}"#;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            "[a-z]{0,10}".prop_map(Value::String),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("name".to_string()),
                        Just("n".to_string()),
                        Just("tags".to_string()),
                        Just("x".to_string()),
                        any::<String>()
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn schema_checks_agree_on_bytes_and_values(
            value in json_value(),
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let schema = BodySchema::from_bytes(Path::new("fuzz.json"), SCHEMA.as_bytes()).unwrap();
            let bytes = serde_json::to_vec(&value).unwrap();
            prop_assert_eq!(schema.check(&bytes).is_ok(), schema.check_value(&value).is_ok());
            // Arbitrary bytes: refused unless they are JSON the schema accepts.
            if schema.check(&garbage).is_ok() {
                let parsed: Value = serde_json::from_slice(&garbage).unwrap();
                prop_assert!(schema.check_value(&parsed).is_ok());
            }
        }

        #[test]
        fn whatever_serde_json_writes_is_strict_and_no_bytes_panic_the_scan(
            value in json_value(),
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            // One name per object, every number the shortest form of its double.
            let bytes = serde_json::to_vec(&value).unwrap();
            prop_assert_eq!(strict_json::check(&bytes), Ok(()));
            let pretty = serde_json::to_vec_pretty(&value).unwrap();
            prop_assert_eq!(strict_json::check(&pretty), Ok(()));
            let _ = strict_json::check(&garbage);
        }
    }
}

mod trace_context {
    use super::*;
    use crate::trace::context::{format_traceparent, parse_traceparent, tracestate};

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// A valid `traceparent` with a few bytes replaced, cut or added, or any bytes.
    fn traceparents() -> impl Strategy<Value = Vec<u8>> {
        let edits = proptest::collection::vec((0..60usize, any::<u8>()), 0..4);
        let mutated =
            (edits, 0..70usize, proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(edits, cut, tail)| {
                let mut v = VALID.as_bytes().to_vec();
                for (at, b) in edits {
                    if at < v.len() {
                        v[at] = b;
                    }
                }
                v.truncate(cut);
                v.extend(tail);
                v
            });
        prop_oneof![4 => mutated, 1 => proptest::collection::vec(any::<u8>(), 0..80)]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn traceparents_are_read_only_as_the_grammar_allows(value in traceparents()) {
            let Some(parent) = parse_traceparent(&value) else { return Ok(()) };
            let text = value.trim_ascii();
            // Read ⇒ the ids are exactly the lower-case hex of the input, neither all zero,
            // the version is not ff, and version 00 has nothing after its flags.
            let again = format_traceparent(parent.trace_id, parent.span_id, parent.sampled);
            prop_assert_eq!(&again[2..53], &text[2..53]);
            prop_assert!(text[..53].iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b) || *b == b'-'));
            prop_assert!(&text[..2] != b"ff");
            prop_assert!(text.len() == 55 || (&text[..2] != b"00" && text[55] == b'-'));
            prop_assert_ne!(&text[3..35], &b"00000000000000000000000000000000"[..]);
            prop_assert_ne!(&text[36..52], &b"0000000000000000"[..]);
            prop_assert_eq!(parent.sampled, text[54] & 1 == 1 && text[54].is_ascii_digit() || matches!(text[54], b'b' | b'd' | b'f'));
        }

        #[test]
        fn tracestate_passes_only_short_visible_member_lists(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4)) {
            if let Some(state) = tracestate(lines.iter().map(|l| l.as_slice())) {
                prop_assert!(state.len() <= 512);
                prop_assert!(state.bytes().all(|b| (0x20..0x7f).contains(&b)));
                prop_assert!(state.split(',').map(str::trim).filter(|m| !m.is_empty()).all(|m| m.contains('=')));
            }
        }
    }
}

mod request_heads {
    use super::*;
    use crate::connections::{head_end, skip_empty_lines};
    use bytes::BytesMut;

    const PIECES: &[&str] = &[
        "GET", "POST", " ", " ", "/", "/a?b", "*", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "\r\n", "\r\n", "\n", "\n",
        "\r", "Host: x", "X-A: b", "X:", ": v", "\t", "a", "%", "|", "\0", "é", "PRI",
    ];

    proptest! {
        #![proptest_config(config())]

        /// Where the gate ends a head (empty lines before it dropped) is where httparse ends it,
        /// and where httparse wants more bytes the gate has not seen an end either: Pingora's
        /// parser never reads on from a head the gate handed it (should it, what it reads is held
        /// to the same bound: `Guarded::poll_head_read_on`).
        #[test]
        fn the_gate_ends_a_head_where_httparse_does(head in pieces_or_any(PIECES, 24)) {
            let mut buf = BytesMut::from(head.as_bytes());
            let skipped = skip_empty_lines(&mut buf);
            let gate = head_end(&buf, 0).map(|end| skipped + end);
            let mut fields = [httparse::EMPTY_HEADER; 64];
            match httparse::Request::new(&mut fields).parse(head.as_bytes()) {
                Ok(httparse::Status::Complete(end)) => prop_assert_eq!(gate, Some(end)),
                Ok(httparse::Status::Partial) => prop_assert_eq!(gate, None),
                Err(_) => {}
            }
        }
    }
}

mod transform {
    use super::*;
    use crate::config::{ResponseTransformSettings, TransformSettings};
    use crate::transform::{Transform, TransformError};
    use serde_json::{Map, Value};

    /// Names that look alike once escaped (`~` is `~0`, `/` is `~1`), an index-like name, the
    /// wildcard's own spelling, and arbitrary text.
    const NAMES: &[&str] = &["a", "b", "id", "0", "1", "01", "*", "~", "/", "~0", "~1", "a/b", "m~n", ""];

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![8 => proptest::sample::select(NAMES).prop_map(str::to_string), 1 => any::<String>()]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            name().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map(name(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const FORM_PIECES: &[&str] =
        &["a", "b", "=", "=", "&", "&", "[", "]", "[]", "[0]", "[1]", "[x]", "%5B", "%5D", "+", "%", "%FF", "0", "1"];

    /// A pointer as unescaped tokens (`*` is the wildcard) and as written in a config.
    fn pointer() -> impl Strategy<Value = (Vec<String>, String)> {
        proptest::collection::vec(name(), 1..5).prop_map(|tokens| {
            let text: String =
                tokens
                    .iter()
                    .map(|t| {
                        if t == "*" {
                            "/*".to_string()
                        } else {
                            format!("/{}", t.replace('~', "~0").replace('/', "~1"))
                        }
                    })
                    .collect();
            (tokens, text)
        })
    }

    /// JSON text of `v`; with `escape`, every ASCII letter, digit, `~`, `/` and `*` of a member
    /// name is written as `\u00XX`, so names match only once decoded.
    fn write(v: &Value, escape: bool, out: &mut String) {
        match v {
            Value::Object(map) => {
                out.push('{');
                for (i, (k, c)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if escape {
                        out.push('"');
                        for ch in k.chars() {
                            if ch.is_ascii_alphanumeric() || matches!(ch, '~' | '/' | '*') {
                                out.push_str(&format!("\\u{:04x}", ch as u32));
                            } else {
                                let quoted = serde_json::to_string(&ch.to_string()).unwrap();
                                out.push_str(&quoted[1..quoted.len() - 1]);
                            }
                        }
                        out.push('"');
                    } else {
                        out.push_str(&serde_json::to_string(k).unwrap());
                    }
                    out.push(':');
                    write(c, escape, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, c) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(c, escape, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    /// The model's token match, written apart from the gateway's: an element's index is a
    /// name only as Rust prints the number.
    fn selects(token: &str, step: Step<'_>) -> bool {
        token == "*"
            || match step {
                Step::Member(k) => token == k,
                Step::Element(i) => token == i.to_string(),
            }
    }

    #[derive(Clone, Copy)]
    enum Step<'a> {
        Member(&'a str),
        Element(usize),
    }

    fn children<'v>(v: &'v Value) -> Vec<(Step<'v>, &'v Value)> {
        match v {
            Value::Object(m) => m.iter().map(|(k, c)| (Step::Member(k), c)).collect(),
            Value::Array(a) => a.iter().enumerate().map(|(i, c)| (Step::Element(i), c)).collect(),
            _ => Vec::new(),
        }
    }

    fn rebuild(v: &Value, kept: Vec<(Step<'_>, Value)>) -> Value {
        match v {
            Value::Object(_) => Value::Object(
                kept.into_iter()
                    .map(|(s, c)| (if let Step::Member(k) = s { k.to_string() } else { unreachable!() }, c))
                    .collect::<Map<_, _>>(),
            ),
            _ => Value::Array(kept.into_iter().map(|(_, c)| c).collect()),
        }
    }

    /// `allow` as the docs state it: a listed value whole; a container on the way with only
    /// its selected contents; nothing else.
    fn allow_model(v: &Value, pointers: &[&[String]]) -> Option<Value> {
        if pointers.iter().any(|p| p.is_empty()) {
            return Some(v.clone());
        }
        if !(v.is_object() || v.is_array()) {
            return None;
        }
        let kept = children(v)
            .into_iter()
            .filter_map(|(step, c)| {
                let below: Vec<&[String]> = pointers.iter().filter(|p| selects(&p[0], step)).map(|p| &p[1..]).collect();
                if below.is_empty() {
                    None
                } else {
                    allow_model(c, &below).map(|c| (step, c))
                }
            })
            .collect();
        Some(rebuild(v, kept))
    }

    /// `deny` as the docs state it: every selected value gone, the rest as it was.
    fn deny_model(v: &Value, pointers: &[&[String]]) -> Option<Value> {
        if pointers.iter().any(|p| p.is_empty()) {
            return None;
        }
        if !(v.is_object() || v.is_array()) {
            return Some(v.clone());
        }
        let kept = children(v)
            .into_iter()
            .filter_map(|(step, c)| {
                let below: Vec<&[String]> = pointers.iter().filter(|p| selects(&p[0], step)).map(|p| &p[1..]).collect();
                if below.is_empty() {
                    Some((step, c.clone()))
                } else {
                    deny_model(c, &below).map(|c| (step, c))
                }
            })
            .collect();
        Some(rebuild(v, kept))
    }

    /// Every path to a leaf of `v`, and whether that leaf is an empty object or array.
    fn leaf_paths<'v>(v: &'v Value, path: &mut Vec<Step<'v>>, out: &mut Vec<(Vec<Step<'v>>, bool)>) {
        let kids = children(v);
        if kids.is_empty() {
            out.push((path.clone(), v.is_object() || v.is_array()));
        }
        for (step, c) in kids {
            path.push(step);
            leaf_paths(c, path, out);
            path.pop();
        }
    }

    fn response(allow: Option<Vec<String>>, deny: Option<Vec<String>>) -> crate::transform::ResponseTransform {
        let settings = TransformSettings {
            request: None,
            response: Some(ResponseTransformSettings { allow, deny, ..Default::default() }),
        };
        Transform::from_settings(&settings).unwrap().response.unwrap()
    }

    /// Tokens JSON is made of, and some it is not: texts that are often nearly JSON.
    fn json_token() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\n",
            "\"a\"",
            "\"\\n\"",
            "\"\\u00e9\"",
            "\"\\q\"",
            "\"",
            "\\",
            "0",
            "-1",
            "1.5",
            "2e3",
            "01",
            "1.",
            "-",
            "e",
            "true",
            "false",
            "null",
            "nul",
            "\u{1}",
            "x",
            "é",
        ])
    }

    fn serde_accepts(text: &[u8]) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok()
    }

    proptest! {
        #![proptest_config(config())]

        /// The transform's JSON scanner (`transform::scan`) accepts exactly what serde_json
        /// accepts, on texts made of JSON's tokens…
        #[test]
        fn the_json_scanner_agrees_with_serde_json_on_token_soup(tokens in proptest::collection::vec(json_token(), 0..24)) {
            let text = tokens.concat();
            prop_assert_eq!(crate::transform::scan::is_json(text.as_bytes()), serde_accepts(text.as_bytes()), "{:?}", text);
        }

        /// … and on documents serde_json writes, whole, cut short, or with one byte changed.
        #[test]
        fn the_json_scanner_agrees_with_serde_json_on_damaged_documents(
            doc in json_value(),
            pretty in any::<bool>(),
            cut in any::<proptest::sample::Index>(),
            at in any::<proptest::sample::Index>(),
            byte in proptest::sample::select(b"{}[],:\"\\ 0-.eE+tfnx\x01".to_vec()),
        ) {
            let text = if pretty { serde_json::to_vec_pretty(&doc) } else { serde_json::to_vec(&doc) }.unwrap_or_default();
            prop_assert!(crate::transform::scan::is_json(&text));
            let short = &text[..cut.index(text.len() + 1)];
            // The scanner is given UTF-8 (the body is checked first); so is serde_json here.
            if std::str::from_utf8(short).is_ok() {
                prop_assert_eq!(crate::transform::scan::is_json(short), serde_accepts(short), "{:?}", String::from_utf8_lossy(short));
            }
            if !text.is_empty() {
                let mut changed = text.clone();
                changed[at.index(text.len())] = byte;
                if std::str::from_utf8(&changed).is_ok() {
                    prop_assert_eq!(
                        crate::transform::scan::is_json(&changed),
                        serde_accepts(&changed),
                        "{:?}",
                        String::from_utf8_lossy(&changed)
                    );
                }
            }
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn allow_lets_nothing_through_outside_its_list(
            doc in json_value(),
            pointers in proptest::collection::vec(pointer(), 1..5),
            escape in any::<bool>(),
        ) {
            let mut text = String::new();
            write(&doc, escape, &mut text);
            let t = response(Some(pointers.iter().map(|(_, p)| p.clone()).collect()), None);
            let tokens: Vec<&[String]> = pointers.iter().map(|(t, _)| t.as_slice()).collect();
            // Through `apply`, what the proxy calls on a backend's answer (its checks, then the
            // body operations).
            let claim = |_: &str| None;
            let vars = crate::policy::headers::Vars {
                request_id: "r",
                client_ip: "127.0.0.1",
                route: "/",
                elapsed: std::time::Duration::ZERO,
                claim: &claim,
                tenant: None,
            };
            let out = match t.apply(200, Some("application/json"), text.as_bytes(), &vars) {
                Ok(out) => out.body,
                Err(e) => {
                    // Only a top-level string, number, boolean or null has no field to keep.
                    prop_assert!(matches!(e, TransformError::Shape { .. }) && !(doc.is_object() || doc.is_array()), "{e}");
                    return Ok(());
                }
            };
            let out: Value = serde_json::from_slice(&out).expect("the output is JSON");
            prop_assert_eq!(Some(out.clone()), allow_model(&doc, &tokens));
            // And directly: every leaf kept lies under a listed pointer (array positions may
            // have moved, so any index-like token matches any position here), and every empty
            // container kept is on the way to one.
            let mut paths = Vec::new();
            leaf_paths(&out, &mut Vec::new(), &mut paths);
            let step_matches = |token: &String, step: &Step<'_>| match step {
                Step::Member(k) => token == "*" || token == k,
                Step::Element(_) => token == "*" || token.parse::<usize>().is_ok_and(|i| i.to_string() == *token),
            };
            for (path, empty_container) in paths {
                let along = |p: &&[String]| p.iter().zip(&path).all(|(t, s)| step_matches(t, s));
                let covered = tokens.iter().filter(|p| p.len() <= path.len()).any(along);
                let on_the_way = empty_container && tokens.iter().filter(|p| p.len() > path.len()).any(along);
                prop_assert!(covered || on_the_way, "{} → {}: a value outside {:?}", text, out, pointers);
            }
        }

        #[test]
        fn deny_removes_every_listed_field(
            doc in json_value().prop_filter("a container", |v| v.is_object() || v.is_array()),
            pointers in proptest::collection::vec(pointer(), 1..5),
            escape in any::<bool>(),
        ) {
            let mut text = String::new();
            write(&doc, escape, &mut text);
            let t = response(None, Some(pointers.iter().map(|(_, p)| p.clone()).collect()));
            let tokens: Vec<&[String]> = pointers.iter().map(|(t, _)| t.as_slice()).collect();
            let out: Value = serde_json::from_slice(&t.apply_body(text.as_bytes()).unwrap()).expect("the output is JSON");
            prop_assert_eq!(Some(out.clone()), deny_model(&doc, &tokens));
            // And directly: a listed pointer that names no array position reaches nothing.
            for p in tokens.iter().filter(|p| p.iter().all(|t| t == "*" || t.parse::<usize>().map_or(true, |i| i.to_string() != *t))) {
                let mut found = vec![&out];
                for token in p.iter() {
                    found = found.into_iter().flat_map(children).filter(|(s, _)| selects(token, *s)).map(|(_, c)| c).collect();
                }
                prop_assert!(found.is_empty(), "{} → {}: {:?} still there", text, out, p);
            }
        }

        #[test]
        fn forms_read_back_as_they_are_written(form in pieces_or_any(FORM_PIECES, 16)) {
            use crate::transform::form;
            // Whatever a form reads as (or a clear refusal), written as a form it reads the same.
            let Ok(read) = form::decode(form.as_bytes()) else { return Ok(()) };
            let json = read.into_value().unwrap();
            let written = form::encode(crate::transform::node::Node::Value(json.clone())).unwrap();
            let again = form::decode(written.as_bytes()).unwrap().into_value().unwrap();
            prop_assert_eq!(json, again, "{} → {}", form, written);
        }

        #[test]
        fn repeated_names_in_an_edited_object_are_refused(
            doc in proptest::collection::btree_map(name(), json_value(), 1..5),
            pick in any::<proptest::sample::Index>(),
            pointers in proptest::collection::vec(pointer(), 1..3),
        ) {
            // The top level is always edited: the same name twice there never passes.
            let (key, value) = doc.iter().nth(pick.index(doc.len())).unwrap();
            let mut text = String::new();
            write(&Value::Object(doc.clone().into_iter().collect()), false, &mut text);
            let twice = format!("{{{}:{},{}", serde_json::to_string(key).unwrap(), value, &text[1..]);
            let list: Vec<String> = pointers.iter().map(|(_, p)| p.clone()).collect();
            for t in [response(Some(list.clone()), None), response(None, Some(list))] {
                let refused = matches!(t.apply_body(twice.as_bytes()), Err(TransformError::RepeatedName { .. }));
                prop_assert!(refused);
            }
        }
    }
}
