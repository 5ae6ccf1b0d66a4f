//! Sharing work between the rules of one transaction.
//!
//! The CRS evaluates a few hundred rules over the same values (every argument, header and
//! cookie), each through its own transformation chain and operator, and almost none of them
//! match a clean request. Two things are therefore done once per value instead of once per rule:
//!
//! - **The transformation chain.** Rules name a few dozen distinct chains between them
//!   (`t:urlDecodeUni,t:htmlEntityDecode,t:lowercase` ...). A value's output through a chain is
//!   computed the first time a rule asks and kept for the transaction ([`Memo`]): a
//!   transformation is a pure function of its input, so the same chain gives the same output.
//! - **The operator's required literals.** An `@rx` pattern usually cannot match unless the
//!   value contains one of a few literals (`regex-syntax` extracts them); `@pm` matches exactly
//!   when one of its phrases occurs. The literals of every such rule sharing a chain go into one
//!   Aho-Corasick automaton ([`Prefilter`]); one pass over a transformed value says which of
//!   those rules can match it, and the others' operators are not run. The pass compares
//!   ASCII-case-insensitively, which can only find more literals than the operator needs, never
//!   fewer: a rule it rules out cannot match.
//!
//! Rules whose operator has no literal set (`@detectSQLi`, `@rx` patterns such as `\w+`), or
//! whose operator argument has a macro (compiled per evaluation), always run their operator.

use super::ruleset::CompiledRule;
use crate::parser::OperatorName;
use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};

/// Most bytes of transformed values kept per transaction; past it, values are transformed per
/// rule as without the memo. Bounds the memory of a transaction with a large body (each value
/// can be kept once per chain).
const MEMO_BYTES_LIMIT: usize = 8 << 20;

/// What a ruleset knows at load time: the distinct transformation chains, and per chain the
/// rules that have a literal set and the automaton of those literals.
#[derive(Default)]
pub struct Prefilter {
    chains: Vec<ChainFilter>,
}

#[derive(Default)]
struct ChainFilter {
    /// `None` when no rule of this chain has a literal set.
    automaton: Option<AhoCorasick>,
    /// For each pattern of the automaton, the slots of the rules whose set has it.
    slots_of_pattern: Vec<Vec<u32>>,
    /// Rules of this chain with a literal set.
    slots: usize,
}

/// How many rules the prefilter covers, reported when a ruleset is built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefilterStats {
    /// Distinct transformation chains.
    pub chains: usize,
    /// Rules whose operator is skipped on values without one of its literals.
    pub filtered: usize,
    /// Rules with targets that always run their operator.
    pub unfiltered: usize,
    /// Of those, `@rx` rules: no finite set of literals of two bytes or more found in their
    /// pattern, or a macro in it.
    pub unfiltered_rx: usize,
}

impl Prefilter {
    /// Give each rule its chain (`CompiledRule::chain`) and, when its operator has a literal set,
    /// its slot in that chain's automaton (`CompiledRule::prefilter_slot`).
    pub(crate) fn build<'a>(rules: impl Iterator<Item = &'a mut CompiledRule>) -> (Prefilter, PrefilterStats) {
        let mut chain_ids: HashMap<Vec<&'static str>, usize> = HashMap::new();
        // Per chain: unique literal (ASCII-lowercased, as the automaton compares) -> slots.
        let mut literals: Vec<HashMap<Vec<u8>, Vec<u32>>> = Vec::new();
        let mut slots: Vec<u32> = Vec::new();
        let mut stats = PrefilterStats::default();
        for rule in rules {
            let next = chain_ids.len();
            let chain = *chain_ids.entry(rule.transformations.names()).or_insert(next);
            if chain == literals.len() {
                literals.push(HashMap::new());
                slots.push(0);
            }
            rule.chain = chain;
            rule.prefilter_slot = None;
            if rule.variables.is_empty() {
                continue;
            }
            let set = if rule.operator_spec.argument.contains("%{") {
                None
            } else {
                rule.operator.required_literals()
            };
            let Some(set) = set else {
                stats.unfiltered += 1;
                stats.unfiltered_rx += usize::from(rule.operator_spec.name == OperatorName::Rx);
                continue;
            };
            let slot = slots[chain];
            slots[chain] += 1;
            rule.prefilter_slot = Some(slot);
            stats.filtered += 1;
            for literal in set {
                let owners = literals[chain].entry(literal.to_ascii_lowercase()).or_default();
                if owners.last() != Some(&slot) {
                    owners.push(slot);
                }
            }
        }
        let chains = literals
            .into_iter()
            .zip(slots)
            .map(|(by_literal, slots)| {
                if by_literal.is_empty() {
                    return ChainFilter::default();
                }
                let (patterns, slots_of_pattern): (Vec<Vec<u8>>, Vec<Vec<u32>>) = by_literal.into_iter().unzip();
                // Standard semantics: the only kind that reports overlapping matches, and every
                // literal present must be reported.
                // A DFA: a few instructions a byte, where the default (a contiguous NFA) follows
                // failure transitions; the automata are small (hundreds of literals).
                let automaton = AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(&patterns)
                    .ok();
                ChainFilter { automaton, slots_of_pattern, slots: slots as usize }
            })
            .collect::<Vec<_>>();
        stats.chains = chains.len();
        (Prefilter { chains }, stats)
    }

    /// The slots of the rules of `chain` whose literals occur in `value`.
    fn hits(&self, chain: usize, value: &str) -> Option<Box<[u64]>> {
        let filter = self.chains.get(chain)?;
        let automaton = filter.automaton.as_ref()?;
        let mut bits = vec![0u64; filter.slots.div_ceil(64)].into_boxed_slice();
        for found in automaton.find_overlapping_iter(value) {
            for &slot in &filter.slots_of_pattern[found.pattern().as_usize()] {
                bits[slot as usize / 64] |= 1 << (slot % 64);
            }
        }
        Some(bits)
    }
}

/// One value through one chain, for the rest of the transaction.
struct Memoized {
    input: Box<str>,
    /// `None`: the chain left the value as it was.
    output: Option<Box<str>>,
    /// Which of the chain's filtered rules can match the output; computed when first asked.
    /// `None` inside when the chain has no automaton (every rule runs).
    hits: Option<Option<Box<[u64]>>>,
}

/// Per transaction: each value's output through each chain, and its prefilter hits.
#[derive(Default)]
pub(crate) struct Memo {
    /// Keyed by (chain, hash of the input); the input is kept and compared, so a hash collision
    /// costs a recomputation, never a wrong answer.
    entries: FxHashMap<(usize, u64), Memoized>,
    bytes: usize,
}

impl Memo {
    /// Run `operator` on `value` through `rule`'s transformations, with the transformed value
    /// and the prefilter's answer shared with every other rule of the same chain. `operator`
    /// gets the transformed value and whether the prefilter rules out a match (then it must not
    /// match: it may return no match without running).
    pub(crate) fn evaluate<R>(
        &mut self,
        prefilter: &Prefilter,
        rule: &CompiledRule,
        value: &str,
        operator: impl FnOnce(&str, bool) -> R,
    ) -> R {
        if rule.transformations.is_empty() && rule.prefilter_slot.is_none() {
            return operator(value, false);
        }
        let hash = BuildHasherDefault::<rustc_hash::FxHasher>::default().hash_one(value);
        let fits = self.bytes + 2 * value.len() <= MEMO_BYTES_LIMIT;
        let memoized = match self.entries.entry((rule.chain, hash)) {
            MapEntry::Occupied(o) if *o.get().input == *value => o.into_mut(),
            MapEntry::Occupied(mut o) if fits => {
                o.insert(Memoized::new(rule, value, &mut self.bytes));
                o.into_mut()
            }
            MapEntry::Vacant(v) if fits => v.insert(Memoized::new(rule, value, &mut self.bytes)),
            _ => {
                // Over the limit: as without the memo.
                let transformed = rule.transformations.apply(value);
                return operator(&transformed, false);
            }
        };
        let output = memoized.output.as_deref().unwrap_or(value);
        let ruled_out = match rule.prefilter_slot {
            Some(slot) => {
                let hits = memoized.hits.get_or_insert_with(|| prefilter.hits(rule.chain, output));
                hits.as_ref()
                    .is_some_and(|bits| bits[slot as usize / 64] & (1 << (slot % 64)) == 0)
            }
            None => false,
        };
        operator(output, ruled_out)
    }
}

impl Memoized {
    fn new(rule: &CompiledRule, value: &str, bytes: &mut usize) -> Memoized {
        let output = match rule.transformations.apply(value) {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(s) => Some(s.into_boxed_str()),
        };
        *bytes += value.len() + output.as_ref().map_or(0, |s| s.len());
        Memoized { input: value.into(), output, hits: None }
    }
}
