//! What each gateway reports back to the store (`<key>.status.<gateway-id>`) and how
//! `siger config status` shows it: every gateway's running revision, its last verdict, and how
//! far the fleet has drifted from the store's current revision.

use crate::config::STATUS_INFIX;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// How often a gateway re-writes its status while nothing changes (the wiring step), so that a
/// report older than [`STALE_AFTER`] says the gateway stopped reporting.
pub const STATUS_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);
/// A report older than this is shown as stale.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(180);

/// A gateway's verdict on a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It serves the revision.
    Applied,
    /// It refused the revision and serves [`GatewayStatus::running`].
    Refused,
}

/// One gateway's report (JSON under its status key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// The gateway's id (`config_source.gateway_id`, default its host name).
    pub gateway: String,
    /// The revision the verdict is about.
    pub revision: u64,
    /// Applied or refused.
    pub result: Outcome,
    /// Why it refused (each line names the key and line), empty when applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// When it decided (RFC 3339, UTC).
    pub time: String,
    /// The revision it serves, from the store or its cache file (0: none yet).
    pub running: u64,
    /// The gateway's Siger version.
    #[serde(default)]
    pub version: String,
}

impl GatewayStatus {
    /// A report made now.
    pub fn new(gateway: &str, revision: u64, result: Outcome, errors: Vec<String>, running: u64) -> Self {
        GatewayStatus {
            gateway: gateway.to_string(),
            revision,
            result,
            errors,
            time: now_rfc3339(),
            running,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// How old the report is at `now` (`None`: its time does not parse).
    pub fn age(&self, now: OffsetDateTime) -> Option<std::time::Duration> {
        let at = OffsetDateTime::parse(&self.time, &Rfc3339).ok()?;
        Some((now - at).try_into().unwrap_or_default())
    }
}

pub use crate::timestamp::now_rfc3339;

/// The status key of `gateway` for the document `key`.
pub fn status_key(key: &str, gateway: &str) -> String {
    format!("{key}{STATUS_INFIX}{gateway}")
}

/// The gateway a status key of `key` names (`None`: not one of its status keys).
pub fn gateway_of<'a>(key: &str, candidate: &'a str) -> Option<&'a str> {
    candidate.strip_prefix(key)?.strip_prefix(STATUS_INFIX).filter(|g| !g.is_empty())
}

/// This gateway's id: the configured one, else the host name made fit for a key (characters a
/// key cannot hold become `-`), else `gateway`.
pub fn gateway_id(configured: Option<&str>) -> String {
    if let Some(id) = configured {
        return id.to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String =
        host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    if id.is_empty() {
        "gateway".into()
    } else {
        id
    }
}

/// A duration as an operator reads it: `42s`, `3m`, `5h`, `2d`.
fn short(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `siger config status`: the store's revision, one line per gateway (its errors below it), and
/// a closing line saying whether the fleet runs the current revision.
pub fn render(store: &str, current: Option<u64>, statuses: &[GatewayStatus], now: OffsetDateTime) -> String {
    let mut out = String::new();
    match current {
        Some(rev) => {
            let _ = writeln!(out, "{store}: revision {rev}");
        }
        None => {
            let _ = writeln!(out, "{store}: no revision yet");
        }
    }
    if statuses.is_empty() {
        out.push_str("no gateway has reported\n");
        return out;
    }
    let width = statuses.iter().map(|s| s.gateway.len()).max().unwrap_or(0).max("GATEWAY".len());
    let _ =
        writeln!(out, "{:width$}  {:>8}  {:>8}  {:8}  {:>5}  NOTE", "GATEWAY", "RUNNING", "REVISION", "RESULT", "AGE");
    let mut behind = Vec::new();
    let mut stale = Vec::new();
    for s in statuses {
        let age = s.age(now);
        let result = match s.result {
            Outcome::Applied => "applied",
            Outcome::Refused => "refused",
        };
        let mut notes = Vec::new();
        if current.is_some_and(|c| s.running != c) {
            notes.push("behind the store".to_string());
            behind.push(format!("{} ({})", s.gateway, s.running));
        }
        if age.is_some_and(|a| a > STALE_AFTER) {
            notes.push("stale: no report since".to_string());
            stale.push(s.gateway.clone());
        }
        let age = age.map(short).unwrap_or_else(|| "?".into());
        let _ = writeln!(
            out,
            "{:width$}  {:>8}  {:>8}  {result:8}  {age:>5}  {}",
            s.gateway,
            s.running,
            s.revision,
            notes.join("; ")
        );
        for e in &s.errors {
            let _ = writeln!(out, "    {e}");
        }
    }
    match current {
        Some(c) if behind.is_empty() => {
            let _ = writeln!(out, "in step: all {} gateways run revision {c}", statuses.len());
        }
        Some(c) => {
            let _ = writeln!(
                out,
                "drift: {} of {} gateways do not run revision {c}: {}",
                behind.len(),
                statuses.len(),
                behind.join(", ")
            );
        }
        None => {}
    }
    if !stale.is_empty() {
        let _ = writeln!(
            out,
            "stale: no report for over {} from {} (stopped, or cut off from the store)",
            short(STALE_AFTER),
            stale.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(secs_ago: i64, now: OffsetDateTime) -> String {
        (now - time::Duration::seconds(secs_ago)).format(&Rfc3339).unwrap()
    }

    #[test]
    fn status_keys_name_their_gateway() {
        assert_eq!(status_key("gateway", "eu-1"), "gateway.status.eu-1");
        assert_eq!(gateway_of("gateway", "gateway.status.eu-1"), Some("eu-1"));
        assert_eq!(gateway_of("gateway", "gateway"), None);
        assert_eq!(gateway_of("gateway", "gateway.status."), None);
        assert_eq!(gateway_of("gate", "gateway.status.x"), None);
        assert_eq!(gateway_id(Some("gw-7")), "gw-7");
        let own = gateway_id(None);
        assert!(!own.is_empty() && own.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{own}");
    }

    #[test]
    fn a_report_reads_back_as_written() {
        let s = GatewayStatus::new("eu-1", 9, Outcome::Refused, vec!["listen: x".into()], 7);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"result\":\"refused\""), "{json}");
        assert_eq!(serde_json::from_str::<GatewayStatus>(&json).unwrap(), s);
        assert!(s.age(OffsetDateTime::now_utc()).unwrap() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn drift_and_refusals_are_visible() {
        let now = OffsetDateTime::now_utc();
        let statuses = vec![
            GatewayStatus {
                gateway: "eu-1".into(),
                revision: 12,
                result: Outcome::Applied,
                errors: vec![],
                time: at(3, now),
                running: 12,
                version: "0.1.0".into(),
            },
            GatewayStatus {
                gateway: "us-east-2".into(),
                revision: 12,
                result: Outcome::Refused,
                errors: vec!["listen[0].cert (line 3): cannot read /etc/siger/tls.pem".into()],
                time: at(400, now),
                running: 9,
                version: "0.1.0".into(),
            },
        ];
        let text = render("cfg/gw", Some(12), &statuses, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "cfg/gw: revision 12");
        assert!(lines[2].starts_with("eu-1") && lines[2].contains("applied") && lines[2].contains("3s"), "{text}");
        assert!(lines[3].contains("refused") && lines[3].contains("behind the store"), "{text}");
        assert!(lines[3].contains("6m") && lines[3].contains("stale"), "{text}");
        assert!(lines[4].contains("cannot read /etc/siger/tls.pem"), "{text}");
        assert!(text.contains("drift: 1 of 2 gateways do not run revision 12: us-east-2 (9)"), "{text}");
        assert!(text.contains("stale: no report for over 3m from us-east-2"), "{text}");
        let in_step = render("cfg/gw", Some(12), &statuses[..1], now);
        assert!(in_step.contains("in step: all 1 gateways run revision 12"), "{in_step}");
        assert!(render("cfg/gw", None, &[], now).contains("no gateway has reported"));
    }
}
