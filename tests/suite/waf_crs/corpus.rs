//! The CRS 3.3.4 regression corpus (`tests/regression/tests/**/*.yaml`, the Python ftw 1.x
//! format) as cases a target can replay: each stage becomes the exact bytes ftw would send, and
//! what the stage expects of the WAF's log: a rule id present, a rule id absent, or a refusal.
//!
//! The bytes are built as ftw 1.3 builds them (`ftw/ruleset.py` `Input`, `ftw/http.py`
//! `build_request`): with a body and no Content-Type, `application/x-www-form-urlencoded`; a
//! form body without percent-escapes re-encoded as `urlencode(parse_qsl(data))`; a
//! Content-Length of the body's length in characters; headers in the file's order; the request
//! line `METHOD URI VERSION`. `stop_magic` turns all of that off; `raw_request` and
//! `encoded_request` are sent as written.

use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// One stage of one test.
#[derive(Debug, Clone)]
pub struct Case {
    /// The test's title, e.g. `942100-1` (unique in the corpus).
    pub title: String,
    /// The rule the test's file is named after, e.g. 942100.
    pub rule: u32,
    /// The request, as bytes on the wire.
    pub raw: Vec<u8>,
    /// What the WAF must log (or do).
    pub expect: Expect,
}

/// What a stage checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `log_contains: id "N"`: rule N matched.
    Logged(u32),
    /// `no_log_contains: id "N"`: rule N did not match.
    NotLogged(u32),
    /// `status: 4xx` or `expect_error`: the request is refused (by the WAF or the HTTP layer).
    Refused,
}

/// What a target did with a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request reached the WAF: the rules it logged, and whether it was refused.
    Inspected { rules: Vec<u32>, blocked: bool },
    /// The HTTP layer refused the request before the WAF saw it (malformed request line or
    /// headers): neither a pass nor a failure of the WAF.
    Rejected,
}

impl Case {
    /// Whether `outcome` is what the stage expects; `None` when the HTTP layer refused a
    /// request the stage meant for the WAF.
    pub fn judge(&self, outcome: &Outcome) -> Option<bool> {
        match (self.expect, outcome) {
            (Expect::Refused, Outcome::Rejected) => Some(true),
            (Expect::Refused, Outcome::Inspected { blocked, .. }) => Some(*blocked),
            (_, Outcome::Rejected) => None,
            (Expect::Logged(id), Outcome::Inspected { rules, .. }) => Some(rules.contains(&id)),
            (Expect::NotLogged(id), Outcome::Inspected { rules, .. }) => Some(!rules.contains(&id)),
        }
    }
}

/// Where `scripts/crs-tests` put the corpus (or `SIGER_CRS_TESTS`).
pub fn location() -> PathBuf {
    if let Some(dir) = std::env::var_os("SIGER_CRS_TESTS") {
        return PathBuf::from(dir).join("tests");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache.join("siger/crs-tests/tests")
}

/// Every case of the corpus, in file order, and the stages that could not be read as cases
/// (title and why).
pub fn load(dir: &Path) -> (Vec<Case>, Vec<(String, String)>) {
    let mut files = Vec::new();
    collect_yaml(dir, &mut files);
    assert!(!files.is_empty(), "no CRS regression tests in {}: run scripts/crs-tests", dir.display());
    files.sort();
    let mut cases = Vec::new();
    let mut unreadable = Vec::new();
    for file in files {
        let rule: u32 = file.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).unwrap_or(0);
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let doc: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for test in doc["tests"].as_sequence().into_iter().flatten() {
            let title = scalar(&test["test_title"]);
            for stage in test["stages"].as_sequence().into_iter().flatten() {
                let stage = if stage.get("stage").is_some() { &stage["stage"] } else { stage };
                match case(&stage["input"], &stage["output"]) {
                    Ok((raw, expect)) => cases.push(Case { title: title.clone(), rule, raw, expect }),
                    Err(why) => unreadable.push((title.clone(), why)),
                }
            }
        }
    }
    (cases, unreadable)
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}: run scripts/crs-tests", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_yaml(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

fn case(input: &Value, output: &Value) -> Result<(Vec<u8>, Expect), String> {
    let expect = if let Some(id) = output.get("log_contains").and_then(rule_id) {
        Expect::Logged(id)
    } else if let Some(id) = output.get("no_log_contains").and_then(rule_id) {
        Expect::NotLogged(id)
    } else if output.get("status").is_some() || output.get("expect_error").is_some() {
        Expect::Refused
    } else {
        return Err(format!("no output this runner checks: {output:?}"));
    };
    Ok((request_bytes(input), expect))
}

/// The rule id in `id "942100"` (ftw's log patterns name one rule each).
fn rule_id(pattern: &Value) -> Option<u32> {
    let text = scalar(pattern);
    let digits: String =
        text.split("id").nth(1)?.chars().skip_while(|c| !c.is_ascii_digit()).take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A YAML scalar as Python's `str()` shows it; a list (multi-line `data`) joined with CRLF.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Sequence(items) => items.iter().map(scalar).collect::<Vec<_>>().join("\r\n"),
        _ => String::new(),
    }
}

/// The bytes ftw 1.3 sends for one stage's `input`.
pub fn request_bytes(input: &Value) -> Vec<u8> {
    if let Some(encoded) = input.get("encoded_request") {
        return base64_decode(&scalar(encoded));
    }
    if let Some(raw) = input.get("raw_request") {
        // ftw decodes Python escapes in it (`unicode_escape`) and sends one byte per character.
        return unescape(&scalar(raw)).chars().map(|c| c as u32 as u8).collect();
    }
    let text = |key: &str, default: &str| input.get(key).map(scalar).unwrap_or_else(|| default.to_string());
    let (method, uri, version) = (text("method", "GET"), text("uri", "/"), text("version", "HTTP/1.1"));
    let mut headers: Vec<(String, String)> = input
        .get("headers")
        .and_then(Value::as_mapping)
        .map(|m| m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect())
        .unwrap_or_default();
    let magic = !input.get("stop_magic").and_then(Value::as_bool).unwrap_or(false);
    let mut data = input.get("data").map(scalar).unwrap_or_default();
    let has = |headers: &[(String, String)], name: &str| headers.iter().any(|(k, _)| k == name);
    if !data.is_empty() && magic {
        if !has(&headers, "Content-Type") {
            headers.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
        }
        let form = headers.iter().any(|(k, v)| k == "Content-Type" && v == "application/x-www-form-urlencoded");
        if form && !has_percent_escape(&data) {
            if let Some(encoded) = urlencode_parse_qsl(&data) {
                data = encoded;
            }
        }
        if !has(&headers, "Content-Length") {
            headers.push(("Content-Length".into(), data.chars().count().to_string()));
        }
    }
    let mut request = format!("{method} {uri} {version}\r\n");
    for (name, value) in &headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&data);
    request.into_bytes()
}

/// Whether Python's `unquote(data) != data`: some `%HH` decodes to something else.
fn has_percent_escape(data: &str) -> bool {
    data.as_bytes().windows(3).any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// Python's `urlencode(parse_qsl(data))`, or `None` when `parse_qsl` finds no pair (ftw then
/// sends the data as it is). Pairs without `=` or with an empty value are dropped, as
/// `parse_qsl` drops them.
fn urlencode_parse_qsl(data: &str) -> Option<String> {
    let quote = |s: &str| -> String {
        s.replace('+', " ")
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => (b as char).to_string(),
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let pairs: Vec<String> = data
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| format!("{}={}", quote(name), quote(value)))
        .collect();
    (!pairs.is_empty()).then(|| pairs.join("&"))
}

/// Python's `unicode_escape` decoding of the escapes ftw's raw requests use.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(decoded) => out.push(decoded),
                    None => out.push_str(&format!("\\x{hex}")),
                }
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let Some(value) = ALPHABET.iter().position(|&a| a == c) else { continue };
        buffer = (buffer << 6) | value as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// The rule ids of the CRS files, each with its paranoia level (`tag:'paranoia-level/N'`,
/// none meaning 1), read from the rule files' text.
pub fn paranoia_levels(rules_dir: &Path) -> std::collections::HashMap<u32, u8> {
    let mut levels = std::collections::HashMap::new();
    for entry in std::fs::read_dir(rules_dir).expect("the CRS rules directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|e| e != "conf") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a rule file");
        for directive in text.split("\nSecRule ").chain(text.split("\nSecAction ")) {
            let Some(id) = directive
                .split("id:")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|digits| digits.parse::<u32>().ok())
            else {
                continue;
            };
            let level = directive
                .split("paranoia-level/")
                .nth(1)
                .and_then(|rest| rest.chars().next())
                .and_then(|c| c.to_digit(10))
                .map_or(1, |l| l as u8);
            levels.entry(id).or_insert(level);
        }
    }
    levels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(yaml: &str) -> Vec<u8> {
        request_bytes(&serde_yaml::from_str(yaml).expect("YAML"))
    }

    #[test]
    fn form_data_is_encoded_and_framed_as_ftw_does() {
        let raw =
            input("method: POST\nuri: /\nversion: HTTP/1.0\nheaders: {Host: localhost}\ndata: \"var=1234 OR 1=1\"\n");
        assert_eq!(
            String::from_utf8(raw).expect("ASCII"),
            "POST / HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 17\r\n\r\nvar=1234+OR+1%3D1"
        );
    }

    #[test]
    fn escaped_data_and_stop_magic_are_sent_as_written() {
        let raw = input("headers: {Host: x}\ndata: \"a=%27b\"\n");
        assert!(raw.ends_with(b"Content-Length: 6\r\n\r\na=%27b"));
        let raw = input("headers: {Host: x}\ndata: \"a b\"\nstop_magic: true\n");
        assert_eq!(raw, b"GET / HTTP/1.1\r\nHost: x\r\n\r\na b");
    }

    #[test]
    fn expectations_are_read_from_the_log_patterns() {
        let v = |s: &str| serde_yaml::from_str::<Value>(s).expect("YAML");
        assert_eq!(rule_id(&v("id \"942100\"")), Some(942100));
        assert_eq!(case(&v("{}"), &v("{no_log_contains: id \"920100\"}")).map(|c| c.1), Ok(Expect::NotLogged(920100)));
        assert_eq!(case(&v("{}"), &v("{status: [403, 400]}")).map(|c| c.1), Ok(Expect::Refused));
    }
}
