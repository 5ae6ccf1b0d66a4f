//! The pure core of DNS membership: what is looked up, when it is due again, and the member
//! list the answers (and the last good answers of failed look-ups) make.

use crate::config::{DnsDiscovery, Target};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Shortest time an answer is trusted: a record's TTL below it (0 included) is raised, so a
/// zero-TTL name does not turn into a busy loop.
pub(crate) const MIN_TTL: Duration = Duration::from_secs(1);
/// Longest time an answer is trusted: a long TTL is shortened, so a moved name is noticed
/// within five minutes whatever its zone says.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(300);
/// First retry after a failed look-up; doubles while failures go on.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest wait between retries of a failing name.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Largest weight taken from SRV records (Pingora expands each backend `weight` times).
pub(crate) const MAX_WEIGHT: u32 = 1000;

/// One thing to ask DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    /// A and AAAA of a host name of `targets`; every address gets `port` and `weight`.
    Host { host: String, port: u16, weight: u32 },
    /// `dns_srv`: SRV records, whose targets are looked up for A and AAAA.
    Srv(String),
}

impl Query {
    /// The name as `/status` and logs show it.
    pub(crate) fn label(&self) -> String {
        match self {
            Query::Host { host, port, .. } => format!("{host}:{port}"),
            Query::Srv(name) => name.clone(),
        }
    }

    /// The record types asked.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Query::Host { .. } => "A/AAAA",
            Query::Srv(_) => "SRV",
        }
    }
}

/// What one look-up found: its members and how long they may be trusted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub(crate) targets: Vec<Target>,
    pub(crate) ttl: Duration,
    /// What was left out of a usable answer (SRV targets that did not resolve).
    pub(crate) note: Option<String>,
}

/// A name followed over time.
#[derive(Debug, Clone)]
pub(crate) struct Tracked {
    pub(crate) query: Query,
    /// The last good answer's members (`None`: never resolved).
    pub(crate) last: Option<Vec<Target>>,
    /// The last good answer's TTL, as clamped.
    pub(crate) ttl: Duration,
    /// When the name is asked again.
    pub(crate) due: Instant,
    /// Failed look-ups in a row.
    pub(crate) failures: u32,
    /// Why the last look-up failed (cleared by a good answer).
    pub(crate) error: Option<String>,
    /// What the last good answer left out.
    pub(crate) note: Option<String>,
}

/// The names a service follows, all due at once.
pub(crate) fn track(source: &DnsDiscovery, now: Instant) -> Vec<Tracked> {
    let hosts = source.names.iter().map(|n| Query::Host { host: n.host.clone(), port: n.port, weight: n.weight });
    hosts
        .chain(source.srv.iter().map(|s| Query::Srv(s.clone())))
        .map(|query| Tracked { query, last: None, ttl: MIN_TTL, due: now, failures: 0, error: None, note: None })
        .collect()
}

/// A TTL as followed: within [`MIN_TTL`, `MAX_TTL`].
pub(crate) fn clamp_ttl(ttl: Duration) -> Duration {
    ttl.clamp(MIN_TTL, MAX_TTL)
}

/// The wait before asking again after `failures` failed look-ups in a row (1 s, 2 s, 4 s, …
/// at most 30 s).
pub(crate) fn retry_delay(failures: u32) -> Duration {
    let doubled = RETRY_BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(8));
    doubled.min(RETRY_MAX)
}

impl Tracked {
    /// Record a good answer at `now`.
    pub(crate) fn answered(&mut self, answer: Answer, now: Instant) {
        self.ttl = clamp_ttl(answer.ttl);
        self.due = now + self.ttl;
        self.last = Some(answer.targets);
        self.note = answer.note;
        self.failures = 0;
        self.error = None;
    }

    /// Record a failed look-up at `now`: the last good answer stays.
    pub(crate) fn failed(&mut self, error: String, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.due = now + retry_delay(self.failures);
        self.error = Some(error);
    }
}

/// The members of a service: its fixed addresses and every name's last good answer.
pub(crate) fn members(fixed: &[Target], tracked: &[Tracked]) -> Vec<Target> {
    let mut out = fixed.to_vec();
    out.extend(tracked.iter().flat_map(|t| t.last.iter().flatten()).cloned());
    out
}

/// The members of a host name's addresses.
pub(crate) fn host_targets(ips: impl IntoIterator<Item = IpAddr>, port: u16, weight: u32) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for ip in ips {
        let addr = SocketAddr::new(ip, port);
        if !out.iter().any(|t| t.addr == addr) {
            out.push(Target { addr, weight });
        }
    }
    out
}

/// One SRV record as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvRecord {
    pub(crate) priority: u16,
    pub(crate) weight: u16,
    pub(crate) port: u16,
    pub(crate) target: String,
}

/// The SRV records to use: those of the lowest priority (RFC 2782: the others are fallbacks,
/// which health checks and outlier detection do not reach here), minus `.` targets ("no
/// service"), with weights scaled into 1..=[`MAX_WEIGHT`] (keeping their ratios; weight 0, "very
/// small chance" in RFC 2782, becomes 1).
pub(crate) fn srv_choice(records: &[SrvRecord]) -> Vec<(String, u16, u32)> {
    let Some(best) = records.iter().map(|r| r.priority).min() else { return Vec::new() };
    let chosen: Vec<&SrvRecord> =
        records.iter().filter(|r| r.priority == best && r.target != "." && !r.target.is_empty()).collect();
    let heaviest = chosen.iter().map(|r| u32::from(r.weight)).max().unwrap_or(0);
    chosen
        .into_iter()
        .map(|r| {
            let w = u32::from(r.weight);
            let weight = if heaviest > MAX_WEIGHT { (w * MAX_WEIGHT / heaviest).max(1) } else { w.max(1) };
            (r.target.trim_end_matches('.').to_string(), r.port, weight)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DnsName;

    fn t(addr: &str, weight: u32) -> Target {
        Target { addr: addr.parse().expect("addr"), weight }
    }

    #[test]
    fn ttls_are_clamped_to_one_second_and_five_minutes() {
        assert_eq!(clamp_ttl(Duration::ZERO), Duration::from_secs(1));
        assert_eq!(clamp_ttl(Duration::from_secs(30)), Duration::from_secs(30));
        assert_eq!(clamp_ttl(Duration::from_secs(86_400)), Duration::from_secs(300));
    }

    #[test]
    fn retries_back_off_to_thirty_seconds() {
        let delays: Vec<u64> = (1..=7).map(|f| retry_delay(f).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn a_failure_keeps_the_last_good_answer() {
        let now = Instant::now();
        let source = DnsDiscovery {
            fixed: vec![t("10.0.0.9:80", 1)],
            names: vec![DnsName { host: "a.internal".into(), port: 80, weight: 2 }],
            srv: None,
        };
        let mut tracked = track(&source, now);
        assert_eq!(members(&source.fixed, &tracked), vec![t("10.0.0.9:80", 1)], "nothing resolved yet");
        let answer = Answer { targets: vec![t("10.0.0.1:80", 2)], ttl: Duration::from_secs(0), note: None };
        tracked[0].answered(answer, now);
        assert_eq!(tracked[0].due, now + Duration::from_secs(1));
        tracked[0].failed("NXDOMAIN".into(), now);
        tracked[0].failed("timeout".into(), now);
        assert_eq!(tracked[0].due, now + Duration::from_secs(2));
        assert_eq!(members(&source.fixed, &tracked), vec![t("10.0.0.9:80", 1), t("10.0.0.1:80", 2)]);
        assert_eq!(tracked[0].error.as_deref(), Some("timeout"));
    }

    #[test]
    fn host_addresses_are_listed_once() {
        let ips = ["10.0.0.1".parse().unwrap(), "::1".parse().unwrap(), "10.0.0.1".parse().unwrap()];
        assert_eq!(host_targets(ips, 8080, 3), vec![t("10.0.0.1:8080", 3), t("[::1]:8080", 3)]);
    }

    #[test]
    fn srv_uses_the_lowest_priority_and_scales_heavy_weights() {
        let r = |priority, weight, port, target: &str| SrvRecord { priority, weight, port, target: target.into() };
        let chosen = srv_choice(&[r(10, 0, 1, "a."), r(10, 60000, 2, "b.x."), r(20, 5, 3, "c."), r(10, 9, 4, ".")]);
        assert_eq!(chosen, vec![("a".into(), 1, 1), ("b.x".into(), 2, 1000)]);
        let light = srv_choice(&[r(1, 3, 80, "a."), r(1, 1, 81, "b.")]);
        assert_eq!(light, vec![("a".into(), 80, 3), ("b".into(), 81, 1)]);
        assert!(srv_choice(&[]).is_empty());
    }
}
