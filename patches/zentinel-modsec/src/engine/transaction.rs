//! Transaction processing for ModSecurity.

use std::cell::RefCell;
use std::sync::Arc;

use super::chain::ChainState;
use super::control::{CtlDirective, TransactionControls};
use super::intervention::Intervention;
use super::phase::Phase;
use super::prefilter::{summary_source, Memo};
use super::ruleset::{CompiledRule, CompiledRuleset, RuleEngineMode};
use super::scoring::AnomalyScore;
use crate::actions::{
    execute_actions, ActionResult, DisruptiveOutcome, FlowOutcome, SetVarOp, SetVarOperation,
};
use crate::error::Result;
use crate::operators::{compile_operator, Operator, OperatorResult};
use crate::parser::{OperatorSpec, VariableSpec};
use crate::variables::{
    Collection, RequestData, Resolved, ResponseData, TxCollection, VariableResolver,
};

/// Whether a lowercased Content-Type denotes a JSON body.
///
/// Covers the `+json` structured suffix (RFC 6839) as well as `application/json`,
/// so `application/vnd.api+json`, `application/problem+json` and friends are
/// inspected rather than silently falling through to the urlencoded parser.
fn is_json_content_type(ct_lower: &str) -> bool {
    let media_type = ct_lower.split(';').next().unwrap_or("").trim();
    media_type == "application/json" || media_type == "text/json" || media_type.ends_with("+json")
}

/// Whether a lowercased Content-Type denotes an XML body.
///
/// Covers the `+xml` structured suffix (RFC 6839), so SOAP
/// (`application/soap+xml`), Atom and friends are inspected rather than
/// falling through to a parser that finds nothing in them.
fn is_xml_content_type(ct_lower: &str) -> bool {
    let media_type = ct_lower.split(';').next().unwrap_or("").trim();
    media_type == "application/xml" || media_type == "text/xml" || media_type.ends_with("+xml")
}

/// A ModSecurity transaction for processing a single request.
pub struct Transaction {
    /// Compiled ruleset reference.
    ruleset: Arc<CompiledRuleset>,
    /// Request data.
    request: RequestData,
    /// Response data.
    response: ResponseData,
    /// TX collection (mutable variables).
    tx: TxCollection,
    /// Current phase.
    phase: Phase,
    /// Intervention (if any).
    intervention: Option<Intervention>,
    /// Anomaly score tracker.
    anomaly_score: AnomalyScore,
    /// Default block status.
    default_status: u16,
    /// Matched rules.
    matched_rules: Vec<String>,
    /// Allow flag (skip further processing).
    allowed: bool,
    /// Matched variables for current rule evaluation.
    matched_vars: Vec<(String, String)>,
    /// Regex captures from last match.
    captures: Vec<String>,
    /// Per-transaction `ctl:` overrides.
    controls: TransactionControls,
    /// Every variable that caused a rule to match, in order.
    ///
    /// Separate from `matched_vars`, which ModSecurity scopes to the current
    /// rule so that `MATCHED_VARS` reads correctly. This accumulates for the
    /// whole transaction, because audit logging wants to answer "what did
    /// rule 942100 actually see" after the fact.
    matched_data: Vec<MatchedData>,
    /// Transformed values and prefilter answers shared between rules (see `prefilter`).
    memo: RefCell<Memo>,
    /// Whether rules share transformed values and skip operators the prefilter rules out.
    prefilter: bool,
}

/// The variable a rule matched on.
#[derive(Debug, Clone)]
struct MatchedVariable {
    name: String,
    value: String,
    portion: Option<String>,
}

/// Result of evaluating one rule.
struct RuleOutcome {
    matched: bool,
    captures: Vec<String>,
    matched_variable: Option<MatchedVariable>,
}

impl RuleOutcome {
    fn no_match() -> Self {
        Self {
            matched: false,
            captures: Vec::new(),
            matched_variable: None,
        }
    }
}

/// What a rule matched on.
///
/// `matched_rules()` gives rule IDs, which says a rule fired but not why.
/// Without the variable and value there is no way to tell a true positive
/// from a false one, or to write a useful audit log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedData {
    /// ID of the rule that matched, if it has one.
    pub rule_id: Option<String>,
    /// Name of the variable that matched, e.g. `ARGS:json.q`.
    pub variable: String,
    /// The variable's value, after transformations were applied.
    ///
    /// This is what `MATCHED_VAR` resolves to -- the whole value, not the
    /// portion the operator hit.
    pub value: String,
    /// The portion of the value the operator matched, when it reports one.
    ///
    /// `@contains evil` against `something-evil-here` gives `evil` here and
    /// the full string in `value`. Operators that match the whole value, or
    /// do not report a portion, leave this `None`.
    pub matched_portion: Option<String>,
}

impl Transaction {
    /// Create a new transaction.
    pub fn new(ruleset: Arc<CompiledRuleset>, default_status: u16) -> Self {
        Self {
            ruleset,
            request: RequestData::new(),
            response: ResponseData::new(),
            tx: TxCollection::new(),
            phase: Phase::RequestHeaders,
            intervention: None,
            anomaly_score: AnomalyScore::new(),
            default_status,
            matched_rules: Vec::new(),
            allowed: false,
            matched_vars: Vec::new(),
            captures: Vec::new(),
            controls: TransactionControls::default(),
            matched_data: Vec::new(),
            memo: RefCell::new(Memo::default()),
            prefilter: true,
        }
    }

    /// Evaluate every rule's transformations and operator on every value, without sharing
    /// transformed values between rules or skipping operators by their literals (on by
    /// default). The verdict is the same either way; this exists to check that it is.
    pub fn set_prefilter(&mut self, enabled: bool) {
        self.prefilter = enabled;
    }

    /// Set the client address, backing `REMOTE_ADDR` and `REMOTE_PORT`.
    ///
    /// Without this there is no way for a caller to populate them, so every
    /// IP-based rule -- `@ipMatch`, CRS IP reputation, allow and deny lists --
    /// evaluated against an empty string and never matched.
    pub fn set_client_addr(&mut self, ip: &str, port: u16) {
        self.request.client_ip = ip.to_string();
        self.request.client_port = port;
    }

    /// Set the local address, backing `SERVER_ADDR` and `SERVER_PORT`.
    pub fn set_server_addr(&mut self, ip: &str, port: u16) {
        self.request.server_addr = ip.to_string();
        self.request.server_port = port;
    }

    /// Set the server name, backing `SERVER_NAME`.
    pub fn set_server_name(&mut self, name: &str) {
        self.request.server_name = name.to_string();
    }

    /// Apply a `ctl:` directive from outside the rules, exactly as if a rule
    /// had fired it before the first phase.
    ///
    /// This is how an embedder excludes rules for one route, host or tenant
    /// (`ruleRemoveById`, `ruleRemoveTargetById`) without compiling a ruleset
    /// per exclusion list or generating a SecRule per route.
    pub fn apply_control(&mut self, directive: CtlDirective) {
        self.controls.apply(directive);
    }

    /// Every variable that caused a rule to match, in order.
    ///
    /// Pairs with [`matched_rules`](Self::matched_rules): that says which
    /// rules fired, this says what they saw.
    pub fn matched_data(&self) -> &[MatchedData] {
        &self.matched_data
    }

    /// Process the request URI.
    pub fn process_uri(&mut self, uri: &str, method: &str, protocol: &str) -> Result<()> {
        self.request.set_uri(uri);
        self.request.set_method(method);
        self.request.set_protocol(protocol);
        Ok(())
    }

    /// Add a request header.
    pub fn add_request_header(&mut self, name: &str, value: &str) -> Result<()> {
        self.request.add_header(name, value);
        Ok(())
    }

    /// Process request headers (Phase 1).
    pub fn process_request_headers(&mut self) -> Result<()> {
        self.phase = Phase::RequestHeaders;
        self.run_phase(Phase::RequestHeaders)?;
        Ok(())
    }

    /// Append data to request body.
    pub fn append_request_body(&mut self, data: &[u8]) -> Result<()> {
        self.request.append_body(data);
        Ok(())
    }

    /// Process request body (Phase 2).
    pub fn process_request_body(&mut self) -> Result<()> {
        self.phase = Phase::RequestBody;

        let content_type = self
            .request
            .headers
            .get("content-type")
            .and_then(|v| v.first().map(|s| s.to_string()));
        let ct_lower = content_type
            .as_deref()
            .map(|ct| ct.trim_start().to_ascii_lowercase())
            .unwrap_or_default();

        // ctl:requestBodyAccess=Off, typically set in phase 1, suppresses body
        // parsing entirely. Phase 2 rules still run; they just find no ARGS_POST
        // or FILES, which is what disabling body access means.
        if !self.controls.request_body_access() {
            self.run_phase(Phase::RequestBody)?;
            return Ok(());
        }

        // ctl:requestBodyProcessor overrides Content-Type sniffing. CRS relies
        // on this to force a processor when the header is absent or lying.
        if let Some(forced) = self.controls.request_body_processor() {
            match forced {
                "MULTIPART" => {
                    if !self
                        .request
                        .parse_multipart_body(content_type.as_deref().unwrap_or_default())
                    {
                        tracing::warn!(
                            "ctl:requestBodyProcessor=MULTIPART, but the body has no parseable \
                             boundary; body arguments were not extracted"
                        );
                    }
                }
                "URLENCODED" => {
                    self.request.parse_form_body();
                    self.request.body_processor = "URLENCODED".to_string();
                }
                "JSON" => self.process_json_body(),
                "XML" => self.process_xml_body(),
                // CtlDirective::parse admits no other value.
                other => debug_assert!(false, "unsupported forced body processor: {other}"),
            }
            self.run_phase(Phase::RequestBody)?;
            return Ok(());
        }

        if ct_lower.starts_with("multipart/form-data") {
            // Multipart body processor: populates ARGS_POST, FILES and
            // MULTIPART_PART_HEADERS. Never fall back to the urlencoded
            // parser for multipart payloads — that would produce bogus ARGS.
            if !self
                .request
                .parse_multipart_body(content_type.as_deref().unwrap_or_default())
            {
                tracing::warn!(
                    "multipart/form-data request without a parseable boundary; \
                     body arguments were not extracted"
                );
            }
        } else if is_xml_content_type(&ct_lower) {
            self.process_xml_body();
        } else if is_json_content_type(&ct_lower) {
            // JSON bodies previously fell through to the urlencoded parser,
            // which extracts nothing usable from them -- so ARGS was empty and
            // rules like CRS 942100 (`SecRule ARGS "@detectSQLi"`) had nothing
            // to inspect. An injection payload was blocked in a form body and
            // passed unexamined in a JSON body.
            self.process_json_body();
        } else if ct_lower.starts_with("application/x-www-form-urlencoded") {
            self.request.parse_form_body();
            self.request.body_processor = "URLENCODED".to_string();
        }
        // Any other body has no body processor, as in ModSecurity: the rules
        // see it whole, as REQUEST_BODY, and no arguments. Parsing it as a
        // form turned text and binary uploads into junk arguments -- a NUL
        // byte in an image made CRS 920270 refuse it.

        self.run_phase(Phase::RequestBody)?;
        Ok(())
    }

    /// Run the XML body processor, recording any failure.
    ///
    /// As with JSON, a failure is not fatal: phase 2 still runs so a rule
    /// testing `REQBODY_ERROR` can act on it.
    fn process_xml_body(&mut self) {
        if let Err(e) = self.request.parse_xml_body() {
            tracing::debug!(
                error = %e,
                "request body could not be processed as XML; REQBODY_ERROR is set"
            );
        }
    }

    /// Run the JSON body processor, recording any failure.
    ///
    /// A failure is deliberately not fatal: the request still goes through
    /// phase 2 so that rules testing `REQBODY_ERROR` can act on it, which is
    /// how CRS rule 200002 blocks bodies it could not parse. Dropping the
    /// request here instead would take that decision away from the ruleset.
    fn process_json_body(&mut self) {
        if let Err(e) = self.request.parse_json_body() {
            tracing::debug!(
                error = %e,
                "request body could not be processed as JSON; REQBODY_ERROR is set"
            );
        }
    }

    /// Add a response header.
    pub fn add_response_header(&mut self, name: &str, value: &str) -> Result<()> {
        self.response.add_header(name, value);
        Ok(())
    }

    /// Process response headers (Phase 3).
    pub fn process_response_headers(&mut self) -> Result<()> {
        self.phase = Phase::ResponseHeaders;
        self.run_phase(Phase::ResponseHeaders)?;
        Ok(())
    }

    /// Append data to response body.
    pub fn append_response_body(&mut self, data: &[u8]) -> Result<()> {
        self.response.append_body(data);
        Ok(())
    }

    /// Process response body (Phase 4).
    pub fn process_response_body(&mut self) -> Result<()> {
        self.phase = Phase::ResponseBody;
        self.run_phase(Phase::ResponseBody)?;
        Ok(())
    }

    /// Process logging phase (Phase 5).
    pub fn process_logging(&mut self) -> Result<()> {
        self.phase = Phase::Logging;
        self.run_phase(Phase::Logging)?;
        Ok(())
    }

    /// Get current intervention (if any).
    pub fn intervention(&self) -> Option<&Intervention> {
        self.intervention.as_ref()
    }

    /// Check if there's an intervention.
    pub fn has_intervention(&self) -> bool {
        self.intervention.is_some()
    }

    /// Get matched rule IDs.
    pub fn matched_rules(&self) -> &[String] {
        &self.matched_rules
    }

    /// Get the anomaly score.
    pub fn anomaly_score(&self) -> i32 {
        self.anomaly_score.inbound
    }

    /// Get the TX collection.
    pub fn tx(&self) -> &TxCollection {
        &self.tx
    }

    /// Get mutable TX collection.
    pub fn tx_mut(&mut self) -> &mut TxCollection {
        &mut self.tx
    }

    /// The engine mode in force for this transaction.
    ///
    /// `ctl:ruleEngine` overrides the ruleset's configured mode for the
    /// remainder of the transaction; with no override this is the ruleset's
    /// own mode.
    fn engine_mode(&self) -> RuleEngineMode {
        self.controls.engine_mode(self.ruleset.engine_mode())
    }

    /// Run rules for a specific phase.
    fn run_phase(&mut self, phase: Phase) -> Result<()> {
        if self.allowed || self.intervention.is_some() {
            return Ok(());
        }

        // ctl:ruleEngine overrides the ruleset's mode for this transaction, so
        // the effective mode has to be re-read rather than captured once: a
        // rule in an earlier phase may have switched it off.
        if self.engine_mode() == RuleEngineMode::Off {
            return Ok(());
        }

        // Borrow the rules through a second handle on the ruleset, so that
        // `self` stays free to mutate. Copying the phase's rules instead cost
        // every transaction a clone and a drop of each rule with its actions:
        // about a tenth of all instructions for a small JSON request.
        let ruleset = Arc::clone(&self.ruleset);
        let rules: &[CompiledRule] = ruleset.rules_for_phase(phase);
        if rules.is_empty() {
            return Ok(());
        }

        self.memo.borrow_mut().new_phase();
        let mut chain_state = ChainState::new();
        // A chain is one logical rule: the starter's actions fire only when
        // every link matches, so they are held here until the chain completes.
        let mut pending_chain_actions: Option<ActionResult> = None;
        let mut skip_count: u32 = 0;
        let mut skip_after: Option<String> = None;

        let mut idx = 0;
        while idx < rules.len() {
            // Handle skip
            if skip_count > 0 {
                skip_count -= 1;
                idx += 1;
                continue;
            }

            // Handle skipAfter
            if let Some(ref marker) = skip_after {
                if let Some(marker_idx) = self.ruleset.marker(marker, phase) {
                    // `>=`: a marker right after the rule that skipped sits at
                    // that rule's index + 1, which is where `idx` already is;
                    // resuming there is the (empty) skip, not a jump backwards.
                    if marker_idx >= idx {
                        idx = marker_idx;
                        skip_after = None;
                        continue;
                    }
                }
                // The marker is unknown, or sits at or behind the current
                // position: ModSecurity does not jump backwards, so the rest of
                // the phase is skipped.
                idx += 1;
                continue;
            }

            // A ctl:ruleEngine=Off from an earlier rule stops this phase where
            // it stands, rather than only taking effect from the next phase.
            if self.engine_mode() == RuleEngineMode::Off {
                return Ok(());
            }

            let rule = &rules[idx];

            // ctl:ruleRemoveById excluded this rule for this transaction. Skip
            // it as though it were not in the ruleset -- including its chain
            // links, which cannot fire without their starter.
            if self.controls.is_rule_removed(rule.id.as_deref()) {
                if rule.is_chain {
                    chain_state.reset();
                    pending_chain_actions = None;
                    idx += 1;
                    while idx < rules.len() && rules[idx - 1].is_chain {
                        idx += 1;
                    }
                    continue;
                }
                idx += 1;
                continue;
            }

            // Handle chain continuation
            if chain_state.in_chain && !rule.is_chain && rule.chain_next.is_none() {
                // End of chain, check if previous rules in chain matched
                if !chain_state.chain_matched {
                    chain_state.reset();
                    idx += 1;
                    continue;
                }
            }

            // Evaluate rule
            let outcome = if self.ruled_out(rule) {
                RuleOutcome::no_match()
            } else {
                self.evaluate_rule(rule)?
            };
            let matched = outcome.matched;
            let captures = outcome.captures;

            if matched {
                // MATCHED_VARS is scoped to the current rule in ModSecurity,
                // so this replaces rather than appends -- otherwise a later
                // rule would read the previous rule's matches.
                self.matched_vars.clear();
                if let Some(ref var) = outcome.matched_variable {
                    self.matched_vars
                        .push((var.name.clone(), var.value.clone()));
                    self.matched_data.push(MatchedData {
                        rule_id: rule.id.clone(),
                        variable: var.name.clone(),
                        value: var.value.clone(),
                        matched_portion: var.portion.clone(),
                    });
                }
            }

            if matched {
                // Execute actions
                let mut action_result = execute_actions(&rule.actions, None, &captures);

                // `capture`: the match and its groups become TX:0..TX:9, for
                // this rule's setvars and for the rules after it.
                if has_capture(rule) {
                    let whole = outcome.matched_variable.as_ref().and_then(|v| v.portion.clone());
                    self.store_captures(whole, &captures);
                }

                // A matching rule's setvars run at once, whether or not it
                // is part of a chain that has yet to complete: ModSecurity
                // runs them "independent of the chained rule result"
                // (libmodsecurity's RuleWithActions). A chain's later links
                // read what the earlier ones set -- CRS 920420 captures the
                // media type into tx.content_type for its second link to
                // check -- and its last link may carry the score (920420
                // again). Everything else waits for the whole chain.
                for op in std::mem::take(&mut action_result.setvar_ops) {
                    self.apply_setvar(&op);
                }

                if rule.is_chain {
                    // A link that expects more links after it. Hold the
                    // starter's remaining actions: nothing else may fire
                    // until the whole chain has matched.
                    if !chain_state.in_chain {
                        chain_state.start_chain(idx);
                        pending_chain_actions = Some(action_result);
                    }
                    chain_state.continue_chain(true, &captures);
                    idx += 1;
                    continue;
                }

                // Either a standalone rule, or the final link of a chain that
                // has now matched in full. A completed chain executes the
                // starter's actions (its disruptive action, ctl and flow), and
                // matches as one rule, under its starter's id: a starter whose
                // later links failed did not match, and links carry no id of
                // their own.
                let (action_result, matched_id) = if chain_state.in_chain {
                    let start = chain_state.chain_start.unwrap_or(idx);
                    chain_state.reset();
                    (
                        pending_chain_actions.take().unwrap_or(action_result),
                        rules[start].id.clone(),
                    )
                } else {
                    (action_result, rule.id.clone())
                };
                if let Some(id) = matched_id {
                    self.matched_rules.push(id);
                }

                // Apply ctl: overrides before the disruptive action below, so
                // that ctl:ruleEngine=DetectionOnly on the same rule governs
                // whether that rule blocks.
                for ctl in &action_result.control_ops {
                    self.controls.apply(CtlDirective::parse(ctl));
                }

                // Handle flow control
                match action_result.flow {
                    FlowOutcome::Chain => {
                        if !chain_state.in_chain {
                            chain_state.start_chain(idx);
                        }
                        chain_state.continue_chain(true, &captures);
                    }
                    FlowOutcome::Skip(n) => {
                        skip_count = n;
                    }
                    FlowOutcome::SkipAfter(marker) => {
                        skip_after = Some(marker);
                    }
                    FlowOutcome::Continue => {}
                }

                // Handle disruptive action
                if let Some(outcome) = action_result.disruptive {
                    // Only apply if not in detection-only mode
                    let should_block = self.engine_mode() == RuleEngineMode::On;

                    match outcome {
                        DisruptiveOutcome::Deny(status) => {
                            if should_block {
                                let mut intervention =
                                    Intervention::deny(status, phase, rule.id.clone());
                                intervention.add_metadata(action_result.metadata);
                                self.intervention = Some(intervention);
                                return Ok(());
                            }
                        }
                        DisruptiveOutcome::Block => {
                            if should_block {
                                let mut intervention =
                                    Intervention::deny(self.default_status, phase, rule.id.clone());
                                intervention.add_metadata(action_result.metadata);
                                self.intervention = Some(intervention);
                                return Ok(());
                            }
                        }
                        DisruptiveOutcome::Allow => {
                            self.allowed = true;
                            return Ok(());
                        }
                        DisruptiveOutcome::Redirect(url) => {
                            if should_block {
                                let mut intervention =
                                    Intervention::redirect(url, phase, rule.id.clone());
                                intervention.add_metadata(action_result.metadata);
                                self.intervention = Some(intervention);
                                return Ok(());
                            }
                        }
                        DisruptiveOutcome::Drop => {
                            if should_block {
                                let mut intervention = Intervention::drop(phase, rule.id.clone());
                                intervention.add_metadata(action_result.metadata);
                                self.intervention = Some(intervention);
                                return Ok(());
                            }
                        }
                        DisruptiveOutcome::Pass => {
                            // Continue processing
                        }
                    }
                }
            } else {
                // Rule didn't match. If it belongs to a chain, the chain as a
                // whole cannot match: drop the starter's held actions and skip
                // past the remaining links so they are never evaluated on
                // their own.
                if chain_state.in_chain || rule.is_chain {
                    chain_state.reset();
                    pending_chain_actions = None;
                    while idx < rules.len() && rules[idx].is_chain {
                        idx += 1;
                    }
                    idx += 1;
                    continue;
                }
            }

            // End chain if this is the last rule in chain
            if chain_state.in_chain && !rule.is_chain {
                chain_state.end_chain();
            }

            idx += 1;
        }

        // Sync anomaly score to TX
        self.anomaly_score.sync_to_tx(&mut self.tx);

        Ok(())
    }

    /// Whether the prefilter knows that no value of any of `rule`'s variables can match it, so
    /// that the rule need not be evaluated (see `prefilter::Summary`).
    fn ruled_out(&self, rule: &CompiledRule) -> bool {
        if !self.prefilter || !rule.summarizable {
            return false;
        }
        let resolver = self.resolver();
        let mut memo = self.memo.borrow_mut();
        rule.variables.iter().all(|spec| {
            let Some(source) = summary_source(spec.name) else {
                return false;
            };
            let every = VariableSpec { name: source, selection: None, count_mode: false, exclusions: Vec::new() };
            memo.rules_out(self.ruleset.prefilter(), rule, source, || {
                resolver.resolve_values(&every).into_iter().map(|resolved| resolved.value).collect()
            })
        })
    }

    /// The variables of this transaction as they stand.
    fn resolver(&self) -> VariableResolver<'_> {
        VariableResolver::new(
            &self.request,
            &self.response,
            &self.tx,
            // MATCHED_VAR is the value the previous rule matched on. This was
            // a literal `None`, so a rule reading MATCHED_VAR could never
            // fire, however many rules had matched before it.
            self.matched_vars.last().map(|(_, value)| value.as_str()),
            &self.matched_vars,
            &self.captures,
        )
    }

    /// Evaluate a single rule.
    fn evaluate_rule(&self, rule: &CompiledRule) -> Result<RuleOutcome> {
        let resolver = self.resolver();

        // Resolve variables from all specs.
        //
        // A spec in count mode (`&VAR`) contributes the *number* of matching
        // values as a single value — 0 when the variable is absent — rather than
        // the values themselves. This matches ModSecurity's `&VARIABLE` semantics
        // and is what CRS's `SecRule &TX:x "@eq 0"` initialization relies on.
        // Emitting a value even for an absent count also keeps the spec out of
        // the "resolved to nothing" early-return below, so `&x "@eq 0"` matches.
        // ctl:ruleRemoveTargetById drops individual targets from this rule for
        // this transaction. The check is hoisted so rules with no exclusion --
        // effectively all of them -- pay one comparison rather than a scan per
        // variable.
        let filter_targets = self.controls.has_target_removals(rule.id.as_deref());

        let mut all_values: Vec<Resolved<'_>> = Vec::new();
        let mut any_excluded = false;
        for spec in &rule.variables {
            let mut resolved = resolver.resolve_values(spec);
            if filter_targets {
                let before = resolved.len();
                resolved.retain(|r| {
                    !self.controls.is_target_removed(
                        rule.id.as_deref(),
                        spec,
                        &r.name.to_string(),
                    )
                });
                any_excluded |= resolved.len() != before;
            }
            if spec.count_mode {
                // An exclusion reduces the count, which is what a rule like
                // `SecRule &ARGS:x "@eq 0"` is asking about.
                all_values.push(Resolved::scalar(
                    format!("&{:?}", spec.name),
                    resolved.len().to_string(),
                ));
            } else if all_values.is_empty() {
                // The common case, one variable or the first of several: take
                // its values as they are rather than copy them over.
                all_values = resolved;
            } else {
                all_values.extend(resolved);
            }
        }

        // Exclusions removed everything this rule had to test. Return before
        // the branch below: a rule stripped down to nothing is not the same as
        // a SecAction with no targets, and running the operator unconditionally
        // could match.
        if any_excluded && all_values.is_empty() {
            return Ok(RuleOutcome::no_match());
        }

        if all_values.is_empty() {
            // A rule with no variable specs at all (i.e. SecAction) runs its
            // operator unconditionally — this is how CRS sets up TX thresholds.
            if rule.variables.is_empty() {
                let result = rule.operator.execute("");
                let matched = if rule.operator_negated {
                    !result.matched
                } else {
                    result.matched
                };
                // A SecAction has no variable, so there is nothing to report
                // as the match target.
                return Ok(RuleOutcome {
                    matched,
                    captures: result.captures,
                    matched_variable: None,
                });
            }
            // Variables were specified but resolved to nothing (e.g. absent
            // header). ModSecurity does not run the operator when there is no
            // value to run it against, so the rule does not match -- including
            // when the operator is negated. Reporting a negated operator as a
            // match here inverts "this variable is absent" into "every request
            // matches", which is how an unimplemented variable turned CRS
            // 920100 (`REQUEST_LINE "!@rx ..."`) into a rule that denied all
            // traffic. Absence is tested with `&VAR "@eq 0"`, which resolves to
            // a count and so never reaches this branch.
            return Ok(RuleOutcome {
                matched: false,
                captures: Vec::new(),
                matched_variable: None,
            });
        }

        // If the operator argument references runtime macros (e.g.
        // `@ge %{tx.inbound_anomaly_score_threshold}`), expand them against the
        // current TX state and recompile the operator so the comparison runs
        // against the resolved value. Otherwise use the precompiled operator.
        let dynamic_operator;
        let operator: &dyn Operator = if rule.operator_spec.argument.contains("%{") {
            let expanded = self.expand_operator_macros(&rule.operator_spec.argument);
            dynamic_operator = compile_operator(&OperatorSpec {
                negated: rule.operator_spec.negated,
                name: rule.operator_spec.name,
                argument: expanded,
            })?;
            dynamic_operator.as_ref()
        } else {
            rule.operator.as_ref()
        };

        // Apply transformations and match. The operator runs on the transformed value; what
        // it needs of it past the call (the value, on a match) is copied out.
        let run = |transformed: &str, ruled_out: bool| {
            let result = if ruled_out {
                // The prefilter found none of the literals a match needs.
                OperatorResult::no_match()
            } else {
                operator.execute(transformed)
            };
            let final_match = result.matched != rule.operator_negated;
            let value = final_match.then(|| transformed.to_string());
            (result, value)
        };
        // A macro operator is compiled here, not the rule's: its literals are not the rule's.
        let shared = self.prefilter && std::ptr::addr_eq(operator, rule.operator.as_ref());
        let mut memo = self.memo.borrow_mut();
        for Resolved { name, value } in all_values {
            let (result, transformed) = if shared {
                memo.evaluate(self.ruleset.prefilter(), rule, &value, run)
            } else {
                run(&rule.transformations.apply(&value), false)
            };

            if let Some(transformed) = transformed {
                let matched = MatchedVariable {
                    name: name.to_string(),
                    // ModSecurity's MATCHED_VAR is the *variable's* value, not
                    // the portion the operator hit. The portion is reported
                    // separately, since an audit log wants both: the value to
                    // judge the match, the portion to see what triggered it.
                    value: transformed,
                    portion: result.matched_value,
                };
                return Ok(RuleOutcome {
                    matched: true,
                    captures: result.captures,
                    matched_variable: Some(matched),
                });
            }
        }

        Ok(RuleOutcome::no_match())
    }

    /// Store a match and its groups as TX:0 (the whole match) and TX:1..TX:9,
    /// as the `capture` action does.
    fn store_captures(&mut self, whole: Option<String>, groups: &[String]) {
        use crate::variables::MutableCollection;
        if let Some(whole) = whole {
            self.tx.set("0".to_string(), whole);
        }
        for (i, group) in groups.iter().take(9).enumerate() {
            self.tx.set((i + 1).to_string(), group.clone());
        }
    }

    /// Expand `%{...}` macros in an operator argument or setvar value.
    ///
    /// `%{tx.name}` reads the TX collection (thresholds, `tx.allowed_methods`);
    /// any other `%{collection.key}` or `%{VARIABLE}` is resolved like a rule
    /// target (`%{request_headers.host}` as `REQUEST_HEADERS:host`, CRS
    /// 931130; `%{MATCHED_VAR}`), taking its first value. An unresolved
    /// macro expands to an empty string, matching ModSecurity behaviour.
    fn expand_operator_macros(&self, arg: &str) -> String {
        // Compiled once: this runs on every evaluation of an operator whose
        // argument contains `%{`.
        static MACRO: once_cell::sync::Lazy<regex::Regex> = once_cell::sync::Lazy::new(|| {
            regex::Regex::new(r"%\{([^}]+)\}").expect("static macro regex is valid")
        });
        MACRO
            .replace_all(arg, |caps: &regex::Captures| {
                let inner = &caps[1];
                match inner.split_once('.') {
                    Some((c, name)) if c.eq_ignore_ascii_case("tx") => self
                        .tx
                        .get(name)
                        .and_then(|v| v.first().map(|s| s.to_string()))
                        .unwrap_or_default(),
                    Some((c, name)) => self.first_value_of(&format!("{c}:{name}")),
                    // A bare name is a variable (`%{MATCHED_VAR}`), or else
                    // a TX key, as this engine has always read it.
                    None => match crate::parser::parse_single_variable(inner) {
                        Ok(_) => self.first_value_of(inner),
                        Err(_) => self
                            .tx
                            .get(inner)
                            .and_then(|v| v.first().map(|s| s.to_string()))
                            .unwrap_or_default(),
                    },
                }
            })
            .into_owned()
    }

    /// The first value a rule target (`REQUEST_HEADERS:host`) resolves to now,
    /// or an empty string.
    fn first_value_of(&self, target: &str) -> String {
        let Ok(spec) = crate::parser::parse_single_variable(target) else {
            return String::new();
        };
        self.resolver()
            .resolve_values(&spec)
            .first()
            .map(|r| r.value.to_string())
            .unwrap_or_default()
    }

    /// Apply a setvar operation.
    fn apply_setvar(&mut self, op: &SetVarOp) {
        // A macro-bearing value (e.g. `+%{tx.critical_anomaly_score}`) is
        // resolved here, where TX state is available, then re-interpreted as a
        // concrete set/increment/decrement.
        if let SetVarOperation::Macro(raw) = &op.operation {
            let expanded = self.expand_operator_macros(raw);
            let resolved = SetVarOp {
                collection: op.collection.clone(),
                name: op.name.clone(),
                operation: interpret_setvar_rhs(&expanded),
            };
            crate::actions::apply_setvar(&mut self.tx, &resolved);
        } else {
            crate::actions::apply_setvar(&mut self.tx, op);
        }

        // Sync anomaly score from TX if relevant
        if op.name == "anomaly_score" {
            self.anomaly_score.sync_from_tx(&self.tx);
        }
    }
}

/// Whether a rule has the `capture` action.
fn has_capture(rule: &CompiledRule) -> bool {
    rule.actions
        .iter()
        .any(|a| matches!(a, crate::parser::Action::Data(crate::parser::DataAction::Capture)))
}

/// Interpret an already-expanded setvar right-hand side into a concrete
/// operation, honouring a leading `+`/`-` for increment/decrement. An empty or
/// non-numeric increment/decrement (e.g. an unresolved macro) becomes a no-op.
fn interpret_setvar_rhs(value: &str) -> SetVarOperation {
    if let Some(rest) = value.strip_prefix('+') {
        SetVarOperation::Increment(rest.trim().parse().unwrap_or(0))
    } else if let Some(rest) = value.strip_prefix('-') {
        SetVarOperation::Decrement(rest.trim().parse().unwrap_or(0))
    } else {
        SetVarOperation::Set(value.to_string())
    }
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("phase", &self.phase)
            .field("has_intervention", &self.intervention.is_some())
            .field("anomaly_score", &self.anomaly_score.inbound)
            .field("matched_rules", &self.matched_rules)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::variables::Collection;

    #[test]
    fn the_prefilter_rules_out_by_alphabet_and_substring_but_never_a_match() {
        // Rules safe over some of the value alphabets, with chains that keep a substring of
        // their input (urlDecode on a value without `%`), keep it within its alphabet only
        // (cmdLine), or neither (a value with `%` decodes into an attack).
        let ruleset = make_ruleset(
            r#"
            SecRule ARGS "@rx \+ADw-.*\+AD4-" "id:11,phase:2,t:none,t:urlDecodeUni,t:urlDecode,pass,log"
            SecRule ARGS|REQUEST_HEADERS "@rx <script" "id:12,phase:2,t:none,t:lowercase,pass,log"
            SecRule ARGS_NAMES|ARGS "@detectXSS" "id:13,phase:2,t:none,pass,log"
            SecRule ARGS "@pm sleep" "id:14,phase:2,t:none,t:cmdLine,pass,log"
            SecRule ARGS "@detectSQLi" "id:15,phase:2,t:none,t:urlDecodeUni,pass,log"
            SecRule ARGS|REQUEST_HEADERS "@rx javascript:" "id:16,phase:2,t:none,t:compressWhitespace,t:lowercase,pass,log"
            SecRule ARGS "@validateByteRange 32-126" "id:17,phase:2,t:none,pass,log"
        "#,
        );
        let matched = |query: &str, header: &str, prefilter: bool| {
            let mut tx = Transaction::new(Arc::clone(&ruleset), 403);
            tx.set_prefilter(prefilter);
            tx.process_uri(&format!("/?{query}"), "GET", "HTTP/1.1").unwrap();
            tx.add_request_header("X-Test", header).unwrap();
            tx.process_request_headers().unwrap();
            tx.process_request_body().unwrap();
            tx.matched_rules().to_vec()
        };
        for (query, header, expected) in [
            ("a=hello&b=world", "fine", vec![]),
            ("a=%252bADw-x%252bAD4-", "fine", vec!["11"]),
            ("a=%2BADw-x%2BAD4-", "fine", vec!["11"]),
            ("a=%3CSCRIPT%3E", "fine", vec!["12", "13"]),
            ("a=fine", "<ScRiPt>", vec!["12"]),
            ("a=a,SLEEP", "fine", vec!["14"]),
            ("a=JavaScript:%20alert", "fine", vec!["16"]),
            ("a=fine", "JAVASCRIPT:x", vec!["16"]),
            ("a=tab%09here", "fine", vec!["17"]),
        ] {
            let with = matched(query, header, true);
            assert_eq!(with, matched(query, header, false), "{query} {header}: with the prefilter vs without");
            // The rules each case is about (the detectors may add theirs).
            assert!(expected.iter().all(|id| with.contains(&id.to_string())), "{query} {header}: {with:?}");
            assert!(!expected.is_empty() || with.is_empty(), "{query} {header}: {with:?}");
        }
        // And any mixture of the characters these rules turn on.
        let pieces = [
            "a", "Z", "9", " ", "  ", ".", "-", "_", ",", "@", "+", ":", "/", ";", "=", "*", "%", "%25", "%2b",
            "%3c", "<", ">", "'", "\"", "\\", "&", "&lt;", "\t", "ADw-", "AD4-", "script", "sleep", "javascript",
            "on", "select", "union", "é", "\u{212A}",
        ];
        let mut seed: u64 = 0x5eed;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for _ in 0..3000 {
            let mut value = String::new();
            for _ in 0..1 + next(6) {
                value.push_str(pieces[next(pieces.len())]);
            }
            let query = format!("k{}={}", next(3), value.replace('&', "%26").replace('#', "%23"));
            let header = if next(2) == 0 { value.clone() } else { "plain".to_string() };
            assert_eq!(matched(&query, &header, true), matched(&query, &header, false), "{query} / {header}");
        }
    }

    fn make_ruleset(rules: &str) -> Arc<CompiledRuleset> {
        Arc::new(CompiledRuleset::from_string(rules).unwrap())
    }

    #[test]
    fn the_prefilter_skips_operators_but_never_a_match() {
        // Two rules share a chain (their transformed values are shared), a negated one is
        // covered too, and a rule without literals (`\w+`) always runs.
        let ruleset = make_ruleset(
            r#"
            SecRule ARGS "@rx (?i)union\s+select" "id:1,phase:2,t:none,t:urlDecodeUni,t:lowercase,pass,log"
            SecRule ARGS "@pm evil wicked" "id:2,phase:2,t:none,t:urlDecodeUni,t:lowercase,pass,log"
            SecRule ARGS "!@rx ^[a-z]+-ok$" "id:3,phase:2,t:none,t:lowercase,pass,log"
            SecRule ARGS:w "@rx \w+" "id:4,phase:2,pass,log"
        "#,
        );
        let stats = ruleset.prefilter_stats();
        assert_eq!((stats.filtered, stats.unfiltered), (3, 1), "{stats:?}");
        let matched = |query: &str, prefilter: bool| {
            let mut tx = Transaction::new(Arc::clone(&ruleset), 403);
            tx.set_prefilter(prefilter);
            tx.process_uri(&format!("/?{query}"), "GET", "HTTP/1.1").unwrap();
            tx.process_request_headers().unwrap();
            tx.process_request_body().unwrap();
            tx.matched_rules().to_vec()
        };
        for (query, expected) in [
            ("a=fine-ok", vec![]),
            ("a=1%20UNION%20%20SeLeCt%202", vec!["1", "3"]),
            ("a=WICKED-ok", vec!["2"]),
            ("a=Evil-ok&b=union%0aselect", vec!["1", "2", "3"]),
            ("a=nothing-here&w=x", vec!["3", "4"]),
        ] {
            assert_eq!(matched(query, true), expected, "{query}");
            assert_eq!(matched(query, false), expected, "{query} without the prefilter");
        }
    }

    #[test]
    fn test_basic_match() {
        let ruleset = make_ruleset(
            r#"
            SecRule REQUEST_URI "@contains /admin" "id:1,phase:1,deny"
        "#,
        );
        let mut tx = Transaction::new(ruleset, 403);
        tx.process_uri("/admin/dashboard", "GET", "HTTP/1.1")
            .unwrap();
        tx.process_request_headers().unwrap();

        assert!(tx.has_intervention());
        let intervention = tx.intervention().unwrap();
        assert_eq!(intervention.status, 403);
    }

    #[test]
    fn test_no_match() {
        let ruleset = make_ruleset(
            r#"
            SecRule REQUEST_URI "@contains /admin" "id:1,phase:1,deny"
        "#,
        );
        let mut tx = Transaction::new(ruleset, 403);
        tx.process_uri("/public/index.html", "GET", "HTTP/1.1")
            .unwrap();
        tx.process_request_headers().unwrap();

        assert!(!tx.has_intervention());
    }

    #[test]
    fn test_setvar() {
        let ruleset = make_ruleset(
            r#"
            SecRule REQUEST_URI "@contains /test" "id:1,phase:1,pass,setvar:TX.score=5"
        "#,
        );
        let mut tx = Transaction::new(ruleset, 403);
        tx.process_uri("/test/page", "GET", "HTTP/1.1").unwrap();
        tx.process_request_headers().unwrap();

        assert!(!tx.has_intervention());
        let score = tx
            .tx()
            .get("score")
            .and_then(|v| v.first().map(|s| s.to_string()));
        assert_eq!(score, Some("5".to_string()));
    }

    #[test]
    fn test_operator_arg_macro_ge_threshold() {
        // @ge with a %{tx.*} argument must compare against the resolved value.
        let ruleset = make_ruleset(
            r#"
            SecRule REQUEST_URI "@contains /" "id:1,phase:1,pass,nolog,setvar:tx.threshold=5"
            SecRule REQUEST_URI "@contains /" "id:2,phase:1,pass,nolog,setvar:tx.score=10"
            SecRule TX:score "@ge %{tx.threshold}" "id:3,phase:1,deny"
        "#,
        );
        let mut tx = Transaction::new(ruleset, 403);
        tx.process_uri("/", "GET", "HTTP/1.1").unwrap();
        tx.process_request_headers().unwrap();
        assert!(
            tx.has_intervention(),
            "score 10 >= threshold 5 should block"
        );
    }

    #[test]
    fn test_operator_arg_macro_ge_below_threshold() {
        let ruleset = make_ruleset(
            r#"
            SecRule REQUEST_URI "@contains /" "id:1,phase:1,pass,nolog,setvar:tx.threshold=5"
            SecRule REQUEST_URI "@contains /" "id:2,phase:1,pass,nolog,setvar:tx.score=3"
            SecRule TX:score "@ge %{tx.threshold}" "id:3,phase:1,deny"
        "#,
        );
        let mut tx = Transaction::new(ruleset, 403);
        tx.process_uri("/", "GET", "HTTP/1.1").unwrap();
        tx.process_request_headers().unwrap();
        assert!(
            !tx.has_intervention(),
            "score 3 < threshold 5 should not block"
        );
    }

    #[test]
    fn test_negated_within_macro_does_not_block_allowed() {
        // Regression for the 911100 case: a negated @within whose argument is a
        // resolvable macro must not block when the value IS in the list.
        let ruleset = make_ruleset(
            r#"
            SecRule REQUEST_URI "@contains /" "id:1,phase:1,pass,nolog,setvar:tx.allowed=GET"
            SecRule REQUEST_METHOD "!@within %{tx.allowed}" "id:2,phase:1,deny"
        "#,
        );
        let mut tx = Transaction::new(ruleset, 403);
        tx.process_uri("/", "GET", "HTTP/1.1").unwrap();
        tx.process_request_headers().unwrap();
        assert!(!tx.has_intervention(), "GET is allowed, must not block");
    }

    #[test]
    fn test_negated_within_macro_blocks_disallowed() {
        let ruleset = make_ruleset(
            r#"
            SecRule REQUEST_URI "@contains /" "id:1,phase:1,pass,nolog,setvar:tx.allowed=GET"
            SecRule REQUEST_METHOD "!@within %{tx.allowed}" "id:2,phase:1,deny"
        "#,
        );
        let mut tx = Transaction::new(ruleset, 403);
        tx.process_uri("/", "POST", "HTTP/1.1").unwrap();
        tx.process_request_headers().unwrap();
        assert!(tx.has_intervention(), "POST is not allowed, must block");
    }

    #[test]
    fn test_secaction_sets_tx_and_macro_resolves() {
        // CRS-style: SecAction (no variables) seeds a TX threshold that a later
        // rule's operator macro resolves against.
        let ruleset = make_ruleset(
            r#"
            SecAction "id:1,phase:1,pass,nolog,setvar:tx.threshold=5"
            SecRule REQUEST_URI "@contains /" "id:2,phase:1,pass,nolog,setvar:tx.score=10"
            SecRule TX:score "@ge %{tx.threshold}" "id:3,phase:1,deny"
        "#,
        );
        let mut tx = Transaction::new(ruleset, 403);
        tx.process_uri("/", "GET", "HTTP/1.1").unwrap();
        tx.process_request_headers().unwrap();
        let threshold = tx
            .tx()
            .get("threshold")
            .and_then(|v| v.first().map(|s| s.to_string()));
        assert_eq!(
            threshold,
            Some("5".to_string()),
            "SecAction setvar must apply"
        );
        assert!(tx.has_intervention(), "10 >= 5 should block");
    }

    #[test]
    fn test_request_header_named_selector_matches() {
        // REQUEST_HEADERS:User-Agent must match regardless of header-name case.
        let ruleset = make_ruleset(
            r#"
            SecRule REQUEST_HEADERS:User-Agent "@contains sqlmap" "id:1,phase:1,deny"
        "#,
        );
        let mut tx = Transaction::new(ruleset, 403);
        tx.process_uri("/", "GET", "HTTP/1.1").unwrap();
        tx.add_request_header("User-Agent", "sqlmap/1.0").unwrap();
        tx.process_request_headers().unwrap();
        assert!(tx.has_intervention(), "User-Agent selector should match");
    }

    #[test]
    fn test_setvar_value_macro_accumulates() {
        // CRS-style score accumulation: setvar:'tx.anomaly_score=+%{tx.critical_anomaly_score}'
        // must add the resolved delta (5), and twice must yield 10.
        let ruleset = make_ruleset(
            r#"
            SecAction "id:1,phase:1,pass,nolog,setvar:tx.critical_anomaly_score=5"
            SecRule REQUEST_URI "@contains /" "id:2,phase:1,pass,nolog,setvar:'tx.anomaly_score=+%{tx.critical_anomaly_score}'"
            SecRule REQUEST_URI "@contains /" "id:3,phase:1,pass,nolog,setvar:'tx.anomaly_score=+%{tx.critical_anomaly_score}'"
        "#,
        );
        let mut tx = Transaction::new(ruleset, 403);
        tx.process_uri("/", "GET", "HTTP/1.1").unwrap();
        tx.process_request_headers().unwrap();
        let score = tx
            .tx()
            .get("anomaly_score")
            .and_then(|v| v.first().map(|s| s.to_string()));
        assert_eq!(
            score,
            Some("10".to_string()),
            "two +5 macro increments should total 10"
        );
    }

    #[test]
    fn test_setvar_value_macro_unresolved_is_noop() {
        // An unresolved macro delta must not silently increment by 1.
        let ruleset = make_ruleset(
            r#"
            SecRule REQUEST_URI "@contains /" "id:1,phase:1,pass,nolog,setvar:'tx.anomaly_score=+%{tx.missing}'"
        "#,
        );
        let mut tx = Transaction::new(ruleset, 403);
        tx.process_uri("/", "GET", "HTTP/1.1").unwrap();
        tx.process_request_headers().unwrap();
        let score = tx
            .tx()
            .get("anomaly_score")
            .and_then(|v| v.first().map(|s| s.to_string()));
        assert_eq!(
            score,
            Some("0".to_string()),
            "unresolved macro increment should be a no-op"
        );
    }

    #[test]
    fn test_detection_only_mode() {
        let _ruleset = make_ruleset(
            r#"
            SecRuleEngine DetectionOnly
            SecRule REQUEST_URI "@contains /admin" "id:1,phase:1,deny"
        "#,
        );
        let mut tx = Transaction::new(
            Arc::new(
                CompiledRuleset::from_string(
                    r#"
                SecRuleEngine DetectionOnly
                SecRule REQUEST_URI "@contains /admin" "id:1,phase:1,deny"
            "#,
                )
                .unwrap(),
            ),
            403,
        );
        tx.process_uri("/admin/dashboard", "GET", "HTTP/1.1")
            .unwrap();
        tx.process_request_headers().unwrap();

        // Should match but not block
        assert!(!tx.has_intervention());
        assert!(tx.matched_rules().contains(&"1".to_string()));
    }
}
