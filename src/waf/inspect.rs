//! One request through phases 1 (request line and headers) and 2 (arguments and body), and
//! the [`Verdict`] read from the transaction.

use super::load::BODY_ERROR_VAR;
use super::{Body, Request, RuleSet};
use zentinel_modsec::engine::CtlDirective;
use zentinel_modsec::parser::ControlAction;
use zentinel_modsec::variables::Collection;
use zentinel_modsec::Transaction;

/// What inspection found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// The inbound anomaly score (the CRS's `tx.anomaly_score`).
    pub score: u32,
    /// The rules that matched and report, in the order they matched: chains under their
    /// starter's id, without the CRS's `nolog` bookkeeping (`waf_rules` in the access log).
    pub rules: Vec<u32>,
    /// Whether the request is refused (a route in `block` mode answers 403; `detect` logs).
    pub blocked: bool,
    /// Why it is refused.
    pub cause: Option<Cause>,
}

/// Why a [`Verdict`] refuses a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A rule refused it: in the CRS, 949110 when the score reached the threshold.
    Rule(u32),
    /// The body could not be parsed as its content type says (fails closed: what the rules
    /// could not read is not let through).
    UnparsableBody,
    /// The body is larger than `waf.max_body` and `waf.on_large_body` is `block`.
    BodyTooLarge,
    /// The engine failed on the request (fails closed); the message says how.
    Engine(String),
}

/// A route's `waf_exclude`, made once per route: the rules not run for its requests.
#[derive(Debug, Clone, Default)]
pub struct Exclusions(Option<CtlDirective>);

impl Exclusions {
    /// Exclude these rule ids.
    pub fn new(ids: &[u32]) -> Exclusions {
        if ids.is_empty() {
            return Exclusions(None);
        }
        let value = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let action = ControlAction { directive: "ruleRemoveById".to_string(), value };
        Exclusions(Some(CtlDirective::parse(&action)))
    }

    /// Exclude nothing.
    pub fn none() -> Exclusions {
        Exclusions(None)
    }
}

impl RuleSet {
    /// Inspect one request (CPU work of milliseconds: run it off the reactor, see
    /// [`super::Inspector`]).
    pub fn inspect(&self, request: &Request, exclusions: &Exclusions) -> Verdict {
        self.inspect_with(request, exclusions, true).0
    }

    /// [`RuleSet::inspect`] with the engine's prefilter (shared transformations, operators
    /// skipped on values without their literals) on or off, and every rule id that matched,
    /// `nolog` ones included: for the test that the prefilter never changes what matches.
    #[doc(hidden)]
    pub fn inspect_with(&self, request: &Request, exclusions: &Exclusions, prefilter: bool) -> (Verdict, Vec<String>) {
        let mut tx = self.engine.new_transaction();
        tx.set_prefilter(prefilter);
        if let Some(directive) = &exclusions.0 {
            tx.apply_control(directive.clone());
        }
        let outcome = run(&mut tx, request);
        let mut verdict = Verdict { score: score(&tx), rules: self.reported(&tx), blocked: false, cause: None };
        verdict.cause = match outcome {
            Err(e) => Some(Cause::Engine(e.to_string())),
            Ok(()) => {
                let refused_by = tx.intervention().and_then(|i| i.rule_ids.first()).and_then(|id| id.parse().ok());
                if let Some(rule) = refused_by {
                    Some(Cause::Rule(rule))
                } else if tx.intervention().is_some() {
                    Some(Cause::Engine("a rule without an id refused the request".into()))
                } else if tx.tx().get(BODY_ERROR_VAR).is_some() {
                    Some(Cause::UnparsableBody)
                } else if matches!(request.body, Body::TooLarge(_)) && self.block_large_bodies {
                    Some(Cause::BodyTooLarge)
                } else {
                    None
                }
            }
        };
        verdict.blocked = verdict.cause.is_some();
        (verdict, tx.matched_rules().to_vec())
    }

    /// The matched rules that report, in order, once each.
    fn reported(&self, tx: &Transaction) -> Vec<u32> {
        let mut rules: Vec<u32> = Vec::new();
        for id in tx.matched_rules().iter().filter_map(|id| id.parse::<u32>().ok()) {
            if self.reportable.contains(&id) && !rules.contains(&id) {
                rules.push(id);
            }
        }
        rules
    }
}

/// Phases 1 and 2. Phase 2 runs without a body too: most CRS rules (the query's arguments
/// included) are phase-2 rules.
fn run(tx: &mut Transaction, request: &Request) -> zentinel_modsec::Result<()> {
    if let Some(client) = request.client {
        tx.set_client_addr(&client.ip().to_string(), client.port());
    }
    tx.process_uri(&request.uri, &request.method, &request.protocol)?;
    for (name, value) in &request.headers {
        tx.add_request_header(name, value)?;
    }
    tx.process_request_headers()?;
    if tx.intervention().is_some() {
        return Ok(());
    }
    if let Body::Inspected(bytes) = &request.body {
        tx.append_request_body(bytes)?;
    }
    tx.process_request_body()
}

/// The inbound anomaly score: the CRS sums it per paranoia level into `tx.anomaly_score` in
/// phase 2 (REQUEST-949); when phase 1 refused, the per-level scores are all there is.
fn score(tx: &Transaction) -> u32 {
    let read = |name: &str| -> u32 {
        tx.tx().get(name).and_then(|v| v.first().and_then(|s| s.trim().parse::<i64>().ok())).unwrap_or(0).max(0) as u32
    };
    let total = read("anomaly_score");
    if total > 0 {
        return total;
    }
    ["anomaly_score_pl1", "anomaly_score_pl2", "anomaly_score_pl3", "anomaly_score_pl4"].iter().map(|n| read(n)).sum()
}
