//! Request inspection with the OWASP Core Rule Set (docs/waf.md).
//!
//! [`RuleSet::load`] turns `waf:` ([`WafSettings`]) into one compiled SecLang rule set: the files
//! in `waf.rules`, in order, behind a generated preamble that sets the CRS's paranoia level and
//! inbound anomaly threshold. Loading warms the set up with a few ordinary requests, so the
//! engine's lazily built regexes exist before the first real request, and refuses a set that
//! blocks an ordinary `GET /` (the CRS without its setup file does).
//!
//! [`RuleSet::inspect`] runs one [`Request`] (plain values: request line, headers, body) through phases 1 and 2 and answers a [`Verdict`]: the inbound anomaly score, the
//! rules that matched and report, and whether the request is refused. It is CPU work of
//! milliseconds, so the proxy runs it through an [`Inspector`] off the reactor.
//!
//! The engine is `zentinel-modsec` with the fixes in `patches/README.md`. What it does not
//! support of the CRS 3.3.4 is listed in `docs/waf.md`, and reported per rule at load
//! ([`RuleSet::warnings`]).

mod compile;
mod inspect;
mod load;
mod request;
mod runner;
#[cfg(test)]
mod tests;

pub use inspect::{Cause, Exclusions, Verdict};
pub use request::{Body, Request};
pub use runner::{InspectError, Inspector};

/// What a verdict does to a request on a route in `mode` (never `Off`: such a route is not
/// inspected): whether it is refused, and the `action` label it is counted under in
/// `siger_waf_matches_total`: `block` (refused) or `detect` (would have been, forwarded).
/// `None`: the verdict lets it through (rules that matched below the threshold are in the
/// access log only: a numeric `Host` alone scores 3).
pub fn outcome(mode: crate::config::WafMode, verdict: &Verdict) -> (bool, Option<&'static str>) {
    if !verdict.blocked {
        return (false, None);
    }
    match mode {
        crate::config::WafMode::Block => (true, Some("block")),
        _ => (false, Some("detect")),
    }
}

use crate::config::WafSettings;
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::PathBuf;
use zentinel_modsec::ModSecurity;

/// A compiled rule set, shared by every route that inspects (`Arc<RuleSet>` in the snapshot).
pub struct RuleSet {
    engine: ModSecurity,
    ids: BTreeSet<u32>,
    reportable: HashSet<u32>,
    warnings: Vec<LoadWarning>,
    files: Vec<PathBuf>,
    max_body: u64,
    block_large_bodies: bool,
}

/// Why `waf.rules` does not load. Every variant names the entry, file or line at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WafError {
    /// An entry of `waf.rules` (by index) matches no file.
    #[error("`{pattern}` matches no file")]
    NoMatch {
        /// Index in `waf.rules`.
        index: usize,
        /// The entry.
        pattern: String,
    },
    /// An entry of `waf.rules` is not a valid glob.
    #[error("`{pattern}` is not a valid path or glob: {reason}")]
    BadPattern {
        /// Index in `waf.rules`.
        index: usize,
        /// The entry.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file or directory a glob reached cannot be read.
    #[error("{}: {reason}", path.display())]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A rule file does not parse or compile.
    #[error("{}: {message}", At(file, *line))]
    Rules {
        /// The entry of `waf.rules` (by index) that loads the file, when it is one of theirs
        /// (not the generated preamble): `-t` names that entry's line too.
        entry: Option<usize>,
        /// The file with the offending directive.
        file: PathBuf,
        /// Its line, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A rule file sets a TX variable that `waf:` owns.
    #[error("{}: sets tx.{variable}, which Siger sets from `{key}`; remove one of them", At(file, Some(*line)))]
    Conflict {
        /// The file.
        file: PathBuf,
        /// The line of the SecAction.
        line: usize,
        /// The TX variable.
        variable: String,
        /// The `waf:` key that owns it.
        key: String,
    },
    /// The rules refuse an ordinary `GET /`: the CRS without `crs-setup.conf` does (rule 901001).
    #[error(
        "the rules refuse an ordinary `GET /` (rules {}); is the CRS setup file (crs-setup.conf) loaded first?",
        Ids(rules)
    )]
    RefusesOrdinaryRequest {
        /// The rules that matched.
        rules: Vec<u32>,
    },
}

/// A rule the engine loaded but cannot run as written, or a directive it skipped. The stock
/// CRS 3.3.4 has a few dozen (docs/waf.md); they are reported, not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadWarning {
    /// The file, when known.
    pub file: Option<PathBuf>,
    /// The line, when known.
    pub line: Option<usize>,
    /// The rule (a chain's starter), when it is one.
    pub rule: Option<u32>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", At(file, self.line))?;
        }
        if let Some(rule) = self.rule {
            write!(f, "rule {rule}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// `file` or `file:line`.
struct At<'a>(&'a PathBuf, Option<usize>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(line) => write!(f, "{}:{line}", self.0.display()),
            None => write!(f, "{}", self.0.display()),
        }
    }
}

/// Rule ids separated by spaces.
struct Ids<'a>(&'a [u32]);

impl fmt::Display for Ids<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, id) in self.0.iter().enumerate() {
            write!(f, "{}{id}", if i == 0 { "" } else { " " })?;
        }
        Ok(())
    }
}

impl RuleSet {
    /// Load and compile `settings.rules` in order, set the paranoia level and threshold, and warm
    /// the set up. Takes about a second for the CRS (parse ≈ 0.5 s, warm-up ≈ 0.5 s) and ≈ 20 MiB
    /// at paranoia level 1: run it where the config is checked, never on the request path.
    pub fn load(settings: &WafSettings) -> Result<RuleSet, WafError> {
        let loaded = load::load(settings)?;
        let set = RuleSet {
            engine: loaded.engine,
            ids: loaded.ids,
            reportable: loaded.reportable,
            warnings: loaded.warnings,
            files: loaded.files,
            max_body: settings.max_body,
            block_large_bodies: settings.on_large_body == crate::config::OnLargeBody::Block,
        };
        set.warm_up()?;
        Ok(set)
    }

    /// The rule files loaded, in order (a reload re-reads them).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Rules that load but can never match here, and directives the engine skipped.
    pub fn warnings(&self) -> &[LoadWarning] {
        &self.warnings
    }

    /// How many rules (with an id) the set has.
    pub fn rule_count(&self) -> usize {
        self.ids.len()
    }

    /// How many rules the engine's literal prefilter covers (patches/README.md, section 10).
    pub fn prefilter_stats(&self) -> zentinel_modsec::engine::PrefilterStats {
        self.engine.ruleset().prefilter_stats()
    }

    /// The ids of `ids` that are not rules of this set (a `waf_exclude` naming one excludes
    /// nothing: `-t` says so).
    pub fn unknown(&self, ids: &[u32]) -> Vec<u32> {
        ids.iter().copied().filter(|id| !self.ids.contains(id)).collect()
    }

    /// The largest body inspected (`waf.max_body`): the proxy reads ahead at most one byte more.
    pub fn max_body(&self) -> u64 {
        self.max_body
    }

    /// Run requests of every shape the rules read (query and cookies, form, JSON, multipart)
    /// so that the regexes they reach are built now, not on the first real request; and refuse
    /// a set that blocks an ordinary `GET /`.
    fn warm_up(&self) -> Result<(), WafError> {
        let none = Exclusions::none();
        let get = Request::new("GET", "/", "HTTP/1.1")
            .header("Host", "warm-up.siger.invalid")
            .header("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
            .header("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
            .header("Accept-Language", "en-GB,en;q=0.5");
        let verdict = self.inspect(&get, &none);
        if verdict.blocked {
            return Err(WafError::RefusesOrdinaryRequest { rules: verdict.rules });
        }
        for request in warm_up_requests() {
            self.inspect(&request, &none);
        }
        Ok(())
    }
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet").field("rules", &self.ids.len()).field("files", &self.files).finish()
    }
}

/// Ordinary requests with arguments everywhere the rules look.
fn warm_up_requests() -> Vec<Request> {
    use bytes::Bytes;
    let head = |method: &str, uri: &str| {
        Request::new(method, uri, "HTTP/1.1")
            .header("Host", "warm-up.siger.invalid")
            .header("User-Agent", "curl/8.5.0")
            .header("Accept", "application/json")
            .header("Cookie", "session=6f1c2a9e; theme=dark")
            .header("Referer", "https://warm-up.siger.invalid/orders?page=1")
    };
    let body = |method: &str, content_type: &str, body: &'static [u8]| {
        head(method, "/orders/42?include=items&page=2")
            .header("Content-Type", content_type)
            .header("Content-Length", body.len().to_string())
            .with_body(Bytes::from_static(body), Some(body.len() as u64), u64::MAX)
    };
    vec![
        head("GET", "/orders/42?include=items&page=2&sort=-created_at&q=blue+shoes"),
        body("POST", "application/x-www-form-urlencoded", b"user=ada&password=s3cret%21&remember=1"),
        body(
            "PUT",
            "application/json",
            br#"{"id":42,"name":"Ada Lovelace","email":"ada@example.com","tags":["a","b"],"address":{"city":"London","zip":"NW1"},"note":"ring twice"}"#,
        ),
        body(
            "POST",
            "multipart/form-data; boundary=siger",
            b"--siger\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHoliday\r\n--siger\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff\r\n--siger--\r\n",
        ),
    ]
}
