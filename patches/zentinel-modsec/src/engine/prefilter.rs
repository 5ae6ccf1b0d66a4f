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
//! - **The alphabet of the value.** Most values of an ordinary request are made of letters,
//!   digits and a little punctuation, and most operators cannot match anything made only of
//!   those: an attack needs a quote, a bracket, a slash. Each rule knows, from its operator, the
//!   widest of a few nested alphabets ([`LEVELS`]) over which it cannot match; a transformed
//!   value made of that alphabet does not run it.
//!
//! Rules whose operator has neither (`@rx \w+`), or whose operator argument has a macro
//! (compiled per evaluation), always run their operator.
//!
//! The two answers are also kept per variable and chain for a phase ([`Summary`]), so that a
//! rule none of whose values can match is passed over without resolving its variables at all:
//! for a clean request that is most of the CRS.

use super::ruleset::CompiledRule;
use crate::operators::ByteSet;
use crate::parser::{OperatorName, VariableName};
use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};

/// Letters, digits, space and `_ - .`: names, ids, numbers, words.
const WORDS: ByteSet = ByteSet::ALPHANUMERIC.with(b" _-.");
/// And `, @ +`: prose, e-mail addresses, phone numbers.
const TEXT: ByteSet = WORDS.with(b",@+");
/// And `:`: times, and what `javascript:` needs.
const TIMES: ByteSet = TEXT.with(b":");
/// And `/ ; = *`: media types, paths, user agents.
const HEADER: ByteSet = TIMES.with(b"/;=*");

/// The value alphabets, each a superset of the one before. A value's level is the first that
/// has all its bytes, [`NO_LEVEL`] when none has.
pub(crate) const LEVELS: [ByteSet; 4] = [WORDS, TEXT, TIMES, HEADER];
/// The level of a value made of none of [`LEVELS`].
const NO_LEVEL: u8 = LEVELS.len() as u8;

/// Each byte's level.
static BYTE_LEVEL: [u8; 256] = {
    let mut table = [NO_LEVEL; 256];
    let mut b = 0;
    while b < 256 {
        let mut level = 0;
        while level < LEVELS.len() {
            if LEVELS[level].contains(b as u8) {
                table[b] = level as u8;
                break;
            }
            level += 1;
        }
        b += 1;
    }
    table
};

/// The first of [`LEVELS`] that has every byte of `value`.
fn level_of(value: &str) -> u8 {
    let mut level = 0;
    for &b in value.as_bytes() {
        level = level.max(BYTE_LEVEL[b as usize]);
        if level == NO_LEVEL {
            break;
        }
    }
    level
}

/// Whether `rule` cannot match a value of `level`.
fn safe_at(rule: &CompiledRule, level: u8) -> bool {
    rule.safe_level.is_some_and(|safe| level <= safe)
}

/// The variable whose values, for a phase, include every value `name` resolves to whatever its
/// selection; `None` for variables whose values change within a phase (TX, MATCHED_VAR) or
/// that are not request data.
pub(crate) fn summary_source(name: VariableName) -> Option<VariableName> {
    use VariableName::*;
    match name {
        Args | ArgsGet | ArgsPost | ArgsNames | ArgsGetNames | ArgsPostNames | RequestHeaders | RequestHeadersNames
        | RequestCookies | RequestCookiesNames | Files | FilesNames | MultipartPartHeaders | RequestUri
        | RequestUriRaw | RequestMethod | RequestProtocol | QueryString | RequestFilename | RequestLine
        | RequestBasename | RequestBody => Some(name),
        // XML's values are the XML body's arguments (`xml.`-named, in ARGS_POST).
        Xml => Some(ArgsPost),
        _ => None,
    }
}

/// Most bytes of transformed values kept per transaction; past it, values are transformed per
/// rule as without the memo. Bounds the memory of a transaction with a large body (each value
/// can be kept once per chain).
const MEMO_BYTES_LIMIT: usize = 8 << 20;

/// What a ruleset knows at load time: the distinct transformation chains, and per chain the
/// rules that have a literal set and the automaton of those literals.
#[derive(Default)]
pub struct Prefilter {
    chains: Vec<ChainFilter>,
    /// Every chain's literals in one automaton, each chain's slots from a word of its own
    /// (`offsets`): one pass over a value that its chain keeps a substring of (see
    /// `ChainFilter::substring_level`) answers for all such chains at once.
    global: ChainFilter,
    /// Per chain, the first word of its slots in `global`'s.
    offsets: Vec<usize>,
}

#[derive(Default)]
struct ChainFilter {
    /// `None` when no rule of this chain has a literal set.
    automaton: Option<AhoCorasick>,
    /// For each pattern of the automaton, the slots of the rules whose set has it.
    slots_of_pattern: Vec<Vec<u32>>,
    /// Rules of this chain with a literal set.
    slots: usize,
    /// The slots whose literals hold for ASCII values only: set for every other value.
    ascii_only: Vec<u64>,
    /// The highest level over which the chain keeps a substring of its input (see
    /// `TransformationPipeline::keeps_substring_over`): a value of that level or below is
    /// judged as it is, without being transformed.
    substring_level: Option<u8>,
    /// The highest level up to which the chain keeps a value within its level (see
    /// `TransformationPipeline::keeps_within`): the value's level bounds the output's.
    within_level: Option<u8>,
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
    /// Rules with targets whose operator cannot match over each of the value alphabets.
    pub safe_over: [usize; LEVELS.len()],
    /// Rules the prefilter can pass over without resolving their variables.
    pub summarizable: usize,
}

impl Prefilter {
    /// Give each rule its chain (`CompiledRule::chain`) and, when its operator has a literal set,
    /// its slot in that chain's automaton (`CompiledRule::prefilter_slot`).
    pub(crate) fn build<'a>(rules: impl Iterator<Item = &'a mut CompiledRule>) -> (Prefilter, PrefilterStats) {
        let mut chain_ids: HashMap<Vec<&'static str>, usize> = HashMap::new();
        // Per chain: unique literal (ASCII-lowercased, as the automaton compares) -> slots.
        let mut literals: Vec<HashMap<Vec<u8>, Vec<u32>>> = Vec::new();
        let mut slots: Vec<u32> = Vec::new();
        let mut ascii_only: Vec<Vec<u32>> = Vec::new();
        let mut substring_levels: Vec<Option<u8>> = Vec::new();
        let mut within_levels: Vec<Option<u8>> = Vec::new();
        let mut stats = PrefilterStats::default();
        for rule in rules {
            let next = chain_ids.len();
            let chain = *chain_ids.entry(rule.transformations.names()).or_insert(next);
            if chain == literals.len() {
                literals.push(HashMap::new());
                slots.push(0);
                ascii_only.push(Vec::new());
                let keeps = (0..LEVELS.len()).rev().find(|&l| rule.transformations.keeps_substring_over(&LEVELS[l]));
                substring_levels.push(keeps.map(|l| l as u8));
                // Every level up to the one found, not only the one (`keeps_within` is not
                // monotone in the alphabet the way a substring is).
                let within = (0..LEVELS.len()).take_while(|&l| rule.transformations.keeps_within(&LEVELS[l])).last();
                within_levels.push(within.map(|l| l as u8));
            }
            rule.chain = chain;
            rule.prefilter_slot = None;
            rule.safe_level = None;
            rule.summarizable = false;
            if rule.variables.is_empty() {
                continue;
            }
            // A macro operator is compiled per evaluation: what this one says is not its.
            let dynamic = rule.operator_spec.argument.contains("%{");
            if !dynamic {
                let safe = (0..LEVELS.len()).rev().find(|&l| rule.operator.matches_nothing_over(&LEVELS[l]));
                rule.safe_level = safe.map(|l| l as u8);
                for count in stats.safe_over.iter_mut().take(safe.map_or(0, |l| l + 1)) {
                    *count += 1;
                }
            }
            // Passed over as a whole only when not matching is not matching: a negated operator
            // matches where its operator does not.
            rule.summarizable = !dynamic
                && !rule.operator_negated
                && rule.variables.iter().all(|spec| !spec.count_mode && summary_source(spec.name).is_some());
            let set = if dynamic { None } else { rule.operator.required_literals() };
            let Some(set) = set else {
                stats.unfiltered += 1;
                stats.unfiltered_rx += usize::from(rule.operator_spec.name == OperatorName::Rx);
                rule.summarizable &= rule.safe_level.is_some();
                stats.summarizable += usize::from(rule.summarizable);
                continue;
            };
            stats.summarizable += usize::from(rule.summarizable);
            let slot = slots[chain];
            slots[chain] += 1;
            rule.prefilter_slot = Some(slot);
            if rule.operator.literals_hold_for_ascii_only() {
                ascii_only[chain].push(slot);
            }
            stats.filtered += 1;
            for literal in set {
                let owners = literals[chain].entry(literal.to_ascii_lowercase()).or_default();
                if owners.last() != Some(&slot) {
                    owners.push(slot);
                }
            }
        }
        // The global automaton: each chain's slots moved to a word boundary of their own.
        let mut offsets = Vec::with_capacity(literals.len());
        let mut words = 0;
        let mut global_literals: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
        let mut global_ascii_only = Vec::new();
        for (chain, by_literal) in literals.iter().enumerate() {
            offsets.push(words);
            let base = (words * 64) as u32;
            for (literal, owners) in by_literal {
                global_literals.entry(literal.clone()).or_default().extend(owners.iter().map(|slot| base + slot));
            }
            global_ascii_only.extend(ascii_only[chain].iter().map(|slot| base + slot));
            words += (slots[chain] as usize).div_ceil(64);
        }
        let global = ChainFilter::build(global_literals, (words * 64) as u32, global_ascii_only, None, None);
        let chains = literals
            .into_iter()
            .zip(slots)
            .zip(ascii_only)
            .zip(substring_levels)
            .zip(within_levels)
            .map(|((((by_literal, slots), ascii_only_slots), substring_level), within_level)| {
                ChainFilter::build(by_literal, slots, ascii_only_slots, substring_level, within_level)
            })
            .collect::<Vec<_>>();
        stats.chains = chains.len();
        (Prefilter { chains, global, offsets }, stats)
    }

    /// The slots of the rules of `chain` whose literals occur in `value`.
    fn hits(&self, chain: usize, value: &str) -> Option<Box<[u64]>> {
        self.chains.get(chain)?.hits(value)
    }

    /// Whether `chain` has an automaton.
    fn filters(&self, chain: usize) -> bool {
        self.chains.get(chain).is_some_and(|filter| filter.automaton.is_some())
    }
}

impl ChainFilter {
    fn build(
        by_literal: HashMap<Vec<u8>, Vec<u32>>,
        slots: u32,
        ascii_only_slots: Vec<u32>,
        substring_level: Option<u8>,
        within_level: Option<u8>,
    ) -> ChainFilter {
        if by_literal.is_empty() {
            return ChainFilter { substring_level, within_level, ..ChainFilter::default() };
        }
        let mut ascii_only = vec![0u64; (slots as usize).div_ceil(64)];
        for slot in ascii_only_slots {
            ascii_only[slot as usize / 64] |= 1 << (slot % 64);
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
        ChainFilter { automaton, slots_of_pattern, slots: slots as usize, ascii_only, substring_level, within_level }
    }

    /// The slots whose literals occur in `value`; `None` without an automaton.
    fn hits(&self, value: &str) -> Option<Box<[u64]>> {
        let automaton = self.automaton.as_ref()?;
        let mut bits = vec![0u64; self.slots.div_ceil(64)].into_boxed_slice();
        for found in automaton.find_overlapping_iter(value) {
            for &slot in &self.slots_of_pattern[found.pattern().as_usize()] {
                bits[slot as usize / 64] |= 1 << (slot % 64);
            }
        }
        if !value.is_ascii() {
            for (word, ascii_only) in bits.iter_mut().zip(&self.ascii_only) {
                *word |= ascii_only;
            }
        }
        Some(bits)
    }
}

/// What the prefilter knows of the values of one variable for a phase, whatever the chain:
/// their levels, and the global automaton's hits on them as they are.
pub(crate) struct VarSummary {
    empty: bool,
    top: u8,
    /// Per level: the global hits of the values of that level or higher (below [`NO_LEVEL`]),
    /// together; `None` without a global automaton.
    hits_from: Option<Vec<Box<[u64]>>>,
}

impl VarSummary {
    fn new(prefilter: &Prefilter, values: &[Cow<'_, str>]) -> VarSummary {
        let words = prefilter.global.slots.div_ceil(64);
        let mut hits_from =
            prefilter.global.automaton.as_ref().map(|_| vec![vec![0u64; words].into_boxed_slice(); LEVELS.len() + 1]);
        let mut top = 0;
        for value in values {
            let level = level_of(value);
            top = top.max(level);
            if level == NO_LEVEL {
                continue;
            }
            if let (Some(hits_from), Some(hits)) = (hits_from.as_mut(), prefilter.global.hits(value)) {
                for from in &mut hits_from[..=level as usize] {
                    from.iter_mut().zip(&hits).for_each(|(word, hit)| *word |= hit);
                }
            }
        }
        VarSummary { empty: values.is_empty(), top, hits_from }
    }

    /// Whether no value can match `rule`; `None` when this summary cannot tell for the rule's
    /// chain (its output may leave the value's level, or not be a substring of it).
    fn rules_out(&self, prefilter: &Prefilter, rule: &CompiledRule) -> Option<bool> {
        if self.empty {
            return Some(true);
        }
        let chain = prefilter.chains.get(rule.chain)?;
        // Every output is no higher than its value: the levels hold for outputs.
        if !chain.within_level.is_some_and(|within| self.top <= within) {
            return None;
        }
        let exposed = rule.safe_level.map_or(0, |safe| safe + 1);
        if self.top < exposed {
            return Some(true);
        }
        let slot = rule.prefilter_slot?;
        // Every output is a substring of its value: the values' hits include the outputs'.
        if self.top == NO_LEVEL || !chain.substring_level.is_some_and(|keeps| self.top <= keeps) {
            return None;
        }
        let bits = self.hits_from.as_ref()?.get(exposed as usize)?;
        let global = prefilter.offsets[rule.chain] * 64 + slot as usize;
        Some(bits[global / 64] & (1 << (global % 64)) == 0)
    }
}

/// What the prefilter knows of every value of one variable through one chain, for a phase:
/// enough to tell, for each rule of that chain, whether any of them can match.
pub(crate) struct Summary {
    /// Each value's level, in the order the variable resolves them.
    levels: Vec<u8>,
    /// The highest of them.
    top: u8,
    /// Per level: the prefilter hits of the values of that level or higher, together; made when
    /// a rule first asks. Rules safe over a level need the hits of the values above it only.
    hits_from: [Option<Box<[u64]>>; LEVELS.len() + 1],
}

/// Whether `slot` is unset in `bits`.
fn missing(bits: &[u64], slot: u32) -> bool {
    bits[slot as usize / 64] & (1 << (slot % 64)) == 0
}

/// One value through one chain, for the rest of the transaction.
struct Memoized {
    input: Box<str>,
    /// `None`: the chain left the value as it was.
    output: Option<Box<str>>,
    /// Which of the chain's filtered rules can match the output; computed when first asked.
    /// `None` inside when the chain has no automaton (every rule runs).
    hits: Option<Option<Box<[u64]>>>,
    /// The output's level (see [`LEVELS`]).
    level: u8,
}

/// Per transaction: each value's output through each chain, and its prefilter hits.
#[derive(Default)]
pub(crate) struct Memo {
    /// Keyed by (chain, hash of the input); the input is kept and compared, so a hash collision
    /// costs a recomputation, never a wrong answer.
    entries: FxHashMap<(usize, u64), Memoized>,
    bytes: usize,
    /// Per (chain, variable), for the phase being run.
    summaries: FxHashMap<(usize, VariableName), Summary>,
    /// Per variable, for the phase being run.
    vars: FxHashMap<VariableName, VarSummary>,
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
        if rule.transformations.is_empty() && rule.prefilter_slot.is_none() && rule.safe_level.is_none() {
            return operator(value, false);
        }
        if !rule.operator_negated {
            // A value whose output cannot be of a level the rule can match: no need to make the
            // output (a negated operator would report it, so it is made then).
            let within = prefilter.chains.get(rule.chain).and_then(|filter| filter.within_level);
            let level = level_of(value);
            if safe_at(rule, level) && within.is_some_and(|keeps| level <= keeps) {
                return operator(value, true);
            }
        }
        let Some(memoized) = self.entry(rule, value) else {
            // Over the limit: as without the memo.
            let transformed = rule.transformations.apply(value);
            let ruled_out = safe_at(rule, level_of(&transformed));
            return operator(&transformed, ruled_out);
        };
        let output = memoized.output.as_deref().unwrap_or(value);
        let ruled_out = safe_at(rule, memoized.level)
            || match rule.prefilter_slot {
                Some(slot) => {
                    let hits = memoized.hits.get_or_insert_with(|| prefilter.hits(rule.chain, output));
                    hits.as_ref().is_some_and(|bits| bits[slot as usize / 64] & (1 << (slot % 64)) == 0)
                }
                None => false,
            };
        operator(output, ruled_out)
    }

    /// `value` through `rule`'s chain, from the memo or made and kept; `None` past the limit.
    fn entry(&mut self, rule: &CompiledRule, value: &str) -> Option<&mut Memoized> {
        let hash = BuildHasherDefault::<rustc_hash::FxHasher>::default().hash_one(value);
        let fits = self.bytes + 2 * value.len() <= MEMO_BYTES_LIMIT;
        match self.entries.entry((rule.chain, hash)) {
            MapEntry::Occupied(o) if *o.get().input == *value => Some(o.into_mut()),
            MapEntry::Occupied(mut o) if fits => {
                o.insert(Memoized::new(rule, value, &mut self.bytes));
                Some(o.into_mut())
            }
            MapEntry::Vacant(v) if fits => Some(v.insert(Memoized::new(rule, value, &mut self.bytes))),
            _ => None,
        }
    }

    /// Forget the summaries: a new phase may have new values (the body's).
    pub(crate) fn new_phase(&mut self) {
        self.summaries.clear();
        self.vars.clear();
    }

    /// Whether no value of `source` (see [`summary_source`]) can match `rule` through its chain.
    /// `values` gives the variable's values, always in the same order.
    pub(crate) fn rules_out<'v>(
        &mut self,
        prefilter: &Prefilter,
        rule: &CompiledRule,
        source: VariableName,
        values: impl Fn() -> Vec<Cow<'v, str>>,
    ) -> bool {
        let var = self.vars.entry(source).or_insert_with(|| VarSummary::new(prefilter, &values()));
        if let Some(ruled_out) = var.rules_out(prefilter, rule) {
            return ruled_out;
        }
        let key = (rule.chain, source);
        let mut summary = match self.summaries.remove(&key) {
            Some(summary) => summary,
            None => self.summarize(prefilter, rule, &values()),
        };
        let ruled_out = self.rules_out_by(prefilter, rule, &mut summary, &values);
        self.summaries.insert(key, summary);
        ruled_out
    }

    fn rules_out_by<'v>(
        &mut self,
        prefilter: &Prefilter,
        rule: &CompiledRule,
        summary: &mut Summary,
        values: &impl Fn() -> Vec<Cow<'v, str>>,
    ) -> bool {
        if summary.levels.is_empty() {
            return true;
        }
        // Values of this level or above may match as far as their alphabet goes.
        let exposed = rule.safe_level.map_or(0, |safe| safe + 1);
        if summary.top < exposed {
            return true;
        }
        let Some(slot) = rule.prefilter_slot else {
            return false;
        };
        if summary.hits_from[exposed as usize].is_none() {
            let hits = self.hits_of(prefilter, rule, &values(), &summary.levels, exposed);
            summary.hits_from[exposed as usize] = Some(hits);
        }
        summary.hits_from[exposed as usize].as_deref().is_some_and(|bits| missing(bits, slot))
    }

    fn summarize(&mut self, prefilter: &Prefilter, rule: &CompiledRule, values: &[Cow<'_, str>]) -> Summary {
        let within_level = prefilter.chains.get(rule.chain).and_then(|filter| filter.within_level);
        let levels: Vec<u8> = values
            .iter()
            .map(|value| {
                let level = level_of(value);
                if within_level.is_some_and(|keeps| level <= keeps) {
                    // The output is no higher.
                    return level;
                }
                match self.entry(rule, value) {
                    Some(memoized) => memoized.level,
                    None => level_of(&rule.transformations.apply(value)),
                }
            })
            .collect();
        let top = levels.iter().copied().max().unwrap_or(0);
        Summary { levels, top, hits_from: Default::default() }
    }

    /// The prefilter hits of the values of level `from` or higher, together (every slot set when
    /// the chain has no automaton).
    fn hits_of(
        &mut self,
        prefilter: &Prefilter,
        rule: &CompiledRule,
        values: &[Cow<'_, str>],
        levels: &[u8],
        from: u8,
    ) -> Box<[u64]> {
        let filter = prefilter.chains.get(rule.chain);
        let words = filter.map_or(0, |filter| filter.slots.div_ceil(64));
        let mut bits = vec![0u64; words].into_boxed_slice();
        if !prefilter.filters(rule.chain) {
            bits.fill(u64::MAX);
            return bits;
        }
        let substring_level = filter.and_then(|filter| filter.substring_level);
        let mut add = |hits: Option<&[u64]>| match hits {
            Some(hits) => bits.iter_mut().zip(hits).for_each(|(word, hit)| *word |= hit),
            None => bits.fill(u64::MAX),
        };
        for (value, &level) in values.iter().zip(levels) {
            if level < from {
                continue;
            }
            // `level` may be the output's: the input's decides whether the input can stand in.
            if substring_level.is_some_and(|keeps| level_of(value) <= keeps) {
                // The output's literals, compared ASCII-case-insensitively, are the input's, or
                // fewer.
                add(prefilter.hits(rule.chain, value).as_deref());
                continue;
            }
            match self.entry(rule, value) {
                Some(memoized) => {
                    let output = memoized.output.as_deref().unwrap_or(value);
                    add(memoized.hits.get_or_insert_with(|| prefilter.hits(rule.chain, output)).as_deref());
                }
                None => add(prefilter.hits(rule.chain, &rule.transformations.apply(value)).as_deref()),
            }
        }
        bits
    }
}

impl Memoized {
    fn new(rule: &CompiledRule, value: &str, bytes: &mut usize) -> Memoized {
        let output = match rule.transformations.apply(value) {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(s) => Some(s.into_boxed_str()),
        };
        *bytes += value.len() + output.as_ref().map_or(0, |s| s.len());
        let level = level_of(output.as_deref().unwrap_or(value));
        Memoized { input: value.into(), output, hits: None, level }
    }
}
