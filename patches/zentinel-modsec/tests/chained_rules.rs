//! Tests for `chain` semantics.
//!
//! A chain is one logical rule: its actions live on the starter and must fire
//! only when *every* link matches. Two bugs broke that.
//!
//! 1. The starter's disruptive action executed as soon as the starter's own
//!    condition matched, without waiting for the rest of the chain — so a
//!    chained CRS rule blocked on a partial match (false positive).
//! 2. Continuation rules carry no `phase` action, and the phase was derived
//!    per-rule, defaulting to phase 2. A chain starting in phase 1 therefore
//!    had its continuation filed under a different phase, leaving the chain
//!    permanently incomplete and the continuation evaluable on its own.
//!
//! Reported as part of zentinelproxy/zentinel#340.

use zentinel_modsec::ModSecurity;

fn blocked(rules: &str, uri: &str, method: &str) -> bool {
    let msc = ModSecurity::from_string(rules).expect("rules should load");
    let mut tx = msc.new_transaction();
    tx.process_uri(uri, method, "HTTP/1.1").unwrap();
    tx.add_request_header("Host", "example.com").unwrap();
    tx.process_request_headers().unwrap();
    tx.process_request_body().unwrap();
    tx.has_intervention()
}

/// Blocks only a GET of an admin path — both conditions required.
const CHAIN: &str = "SecRuleEngine On\n\
     SecRule REQUEST_URI \"@contains admin\" \"id:1,phase:1,deny,chain\"\n\
     SecRule REQUEST_METHOD \"@streq GET\"";

#[test]
fn chain_blocks_when_every_link_matches() {
    assert!(blocked(CHAIN, "/admin", "GET"));
}

#[test]
fn chain_does_not_block_when_a_later_link_fails() {
    // The starter matches (/admin) but the method does not. Before the fix
    // this blocked anyway, which is how a chained CRS rule produces a false
    // positive.
    assert!(!blocked(CHAIN, "/admin", "POST"));
}

#[test]
fn chain_does_not_block_when_the_starter_fails() {
    assert!(!blocked(CHAIN, "/public", "GET"));
}

#[test]
fn continuation_is_not_evaluated_as_a_standalone_rule() {
    // If the starter fails, the continuation must be skipped entirely rather
    // than evaluated on its own. Here the continuation would match any GET.
    assert!(!blocked(CHAIN, "/public", "GET"));
}

#[test]
fn three_link_chain_requires_all_three() {
    let rules = "SecRuleEngine On\n\
         SecRule REQUEST_URI \"@contains admin\" \"id:1,phase:1,deny,chain\"\n\
         SecRule REQUEST_METHOD \"@streq GET\" \"chain\"\n\
         SecRule REQUEST_HEADERS:Host \"@streq example.com\"";

    assert!(blocked(rules, "/admin", "GET"));
    assert!(!blocked(rules, "/admin", "POST"));
    assert!(!blocked(rules, "/public", "GET"));
}

#[test]
fn setvars_run_when_their_rule_matches_and_the_disruptive_action_waits_for_the_chain() {
    // ModSecurity (libmodsecurity's RuleWithActions) runs a matching rule's
    // setvars "independent of the chained rule result": a starter's setvar
    // applies as soon as the starter matches, even if a later link then
    // fails. Only the disruptive action (and ctl, flow, logging) waits for
    // the whole chain -- which `chain_does_not_block_when_a_later_link_fails`
    // checks. Rules rely on it: a link reads what the starter set.
    let rules = "SecRuleEngine On\n\
         SecRule REQUEST_URI \"@contains admin\" \"id:1,phase:1,pass,nolog,setvar:tx.score=5,chain\"\n\
         SecRule REQUEST_METHOD \"@streq GET\"\n\
         SecRule TX:score \"@ge 5\" \"id:2,phase:1,deny\"";

    assert!(blocked(rules, "/admin", "GET"), "complete chain sets the score");
    assert!(
        blocked(rules, "/admin", "POST"),
        "the starter matched, so its setvar ran although the chain failed"
    );
    assert!(!blocked(rules, "/public", "GET"), "the starter did not match");
}

#[test]
fn a_link_reads_what_the_starter_captured_and_set() {
    // CRS 920420's shape: the starter captures the media type into
    // tx.content_type; the link checks it against the allowed list; the
    // link carries the score.
    let rules = "SecRuleEngine On\n\
         SecAction \"id:1,phase:1,pass,nolog,setvar:tx.allowed=|text/plain|\"\n\
         SecRule REQUEST_HEADERS:Content-Type \"@rx ^[^;\\s]+\" \
           \"id:2,phase:1,pass,capture,setvar:'tx.content_type=|%{tx.0}|',chain\"\n\
         SecRule TX:content_type \"!@within %{tx.allowed}\" \"setvar:tx.score=5\"\n\
         SecRule TX:score \"@ge 5\" \"id:3,phase:1,deny\"";
    let run = |content_type: &str| {
        let msc = ModSecurity::from_string(rules).expect("rules should load");
        let mut tx = msc.new_transaction();
        tx.process_uri("/", "POST", "HTTP/1.1").unwrap();
        tx.add_request_header("Content-Type", content_type).unwrap();
        tx.process_request_headers().unwrap();
        (tx.has_intervention(), tx.matched_rules().to_vec())
    };
    assert_eq!(run("text/plain; charset=utf-8"), (false, vec!["1".to_string()]));
    assert_eq!(
        run("my-new-content-type"),
        (true, vec!["1".to_string(), "2".into(), "3".into()])
    );
}

#[test]
fn rules_after_a_failed_chain_still_run() {
    // Skipping a failed chain's links must not skip past unrelated rules.
    let rules = "SecRuleEngine On\n\
         SecRule REQUEST_URI \"@contains admin\" \"id:1,phase:1,deny,chain\"\n\
         SecRule REQUEST_METHOD \"@streq POST\"\n\
         SecRule REQUEST_URI \"@contains admin\" \"id:2,phase:1,deny\"";

    // The chain fails on the method, but rule 2 still matches and blocks.
    assert!(blocked(rules, "/admin", "GET"));
}

/// Rule ids the transaction reports as matched.
fn matched(rules: &str, uri: &str, method: &str) -> Vec<String> {
    let msc = ModSecurity::from_string(rules).expect("rules should load");
    let mut tx = msc.new_transaction();
    tx.process_uri(uri, method, "HTTP/1.1").unwrap();
    tx.add_request_header("Host", "example.com").unwrap();
    tx.process_request_headers().unwrap();
    tx.process_request_body().unwrap();
    tx.matched_rules().to_vec()
}

#[test]
fn matched_rules_lists_a_chain_only_when_it_completes() {
    // The starter's id used to be recorded as soon as the starter itself
    // matched, so a chain whose later link failed was reported as matched:
    // CRS 920170, 920171, 920180 and 920450 showed up on every clean GET.
    let rules = "SecRuleEngine DetectionOnly\n\
         SecRule REQUEST_URI \"@contains admin\" \"id:1,phase:1,pass,chain\"\n\
         SecRule REQUEST_METHOD \"@streq GET\" \"chain\"\n\
         SecRule REQUEST_HEADERS:Host \"@streq example.com\"\n\
         SecRule REQUEST_URI \"@contains admin\" \"id:2,phase:1,pass\"";

    assert_eq!(matched(rules, "/admin", "GET"), vec!["1", "2"]);
    assert_eq!(matched(rules, "/admin", "POST"), vec!["2"]);
    assert_eq!(matched(rules, "/public", "GET"), Vec::<String>::new());
}

#[test]
fn a_macro_reads_any_collection_not_only_tx() {
    // CRS 931130's link: `!@endsWith .%{request_headers.host}`. Expanding
    // only TX macros left `.`, so a URL to the site's own host matched.
    let rules = "SecRuleEngine On\n\
         SecRule ARGS \"@endsWith .%{request_headers.host}\" \"id:1,phase:2,deny\"";
    let run = |arg: &str| {
        let msc = ModSecurity::from_string(rules).expect("rules should load");
        let mut tx = msc.new_transaction();
        tx.process_uri(&format!("/?x={arg}"), "GET", "HTTP/1.1").unwrap();
        tx.add_request_header("Host", "example.com").unwrap();
        tx.process_request_headers().unwrap();
        tx.process_request_body().unwrap();
        tx.has_intervention()
    };
    assert!(run("cdn.example.com"));
    assert!(!run("cdn.example.org"));
}
