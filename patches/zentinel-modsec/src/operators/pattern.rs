//! Pattern matching operators (@rx, @pm).
//!
//! Optimized with lazy regex compilation for fast rule parsing.

use super::traits::{ByteSet, Operator, OperatorResult};
use crate::error::{Error, Result};
use aho_corasick::AhoCorasick;
use once_cell::sync::OnceCell;
use regex::Regex;

/// The lazy DFA's cache for one `@rx` pattern, per thread, allocated as
/// states are built.
///
/// The `regex` crate's default (2 MiB) is too small for the largest CRS
/// patterns: 941160 (an `on*=` event-handler list behind `[\s\S]*`) cannot
/// build a single DFA state set in it, so every search of it fell back to the
/// bounded backtracker -- about 20x slower, and over a quarter of all
/// instructions a small JSON request cost. 4 MiB suffices; 8 leaves headroom.
const LAZY_DFA_CACHE: usize = 8 << 20;

/// Regex operator (@rx) with lazy compilation.
///
/// The pattern's *syntax* is validated when the rule is loaded, but the
/// automaton is only built on first use — CRS defines hundreds of regex rules
/// and most requests exercise few of them.
///
/// The distinction matters: an invalid pattern must be a load error. If it
/// were discovered at match time there would be nothing useful to do about it,
/// and the rule would silently never match — a dead rule that looks alive.
pub struct RxOperator {
    pattern_str: String,
    /// `None` once compilation has been attempted and failed, so a pattern
    /// that passes syntax validation but cannot be built (an oversized
    /// program, say) is reported once rather than retried per request.
    compiled: OnceCell<Option<Regex>>,
}

impl RxOperator {
    /// Create a new regex operator, validating the pattern's syntax.
    ///
    /// Parsing with `regex-syntax` catches every syntax error the full
    /// compiler would, without building the automaton, so loading stays fast
    /// while a malformed pattern fails loudly at load instead of turning into
    /// a rule that can never match.
    #[inline]
    pub fn new(pattern: &str) -> Result<Self> {
        if pattern.is_empty() {
            return Err(Error::RegexCompile {
                pattern: pattern.to_string(),
                source: regex::Error::Syntax("empty pattern".to_string()),
            });
        }

        // Rules are written for PCRE: rewrite the forms the regex crate reads
        // otherwise (see `pcre`).
        let translated = super::pcre::translate(pattern);
        if let Err(e) = regex_syntax::Parser::new().parse(&translated) {
            return Err(Error::RegexCompile {
                pattern: pattern.to_string(),
                source: regex::Error::Syntax(e.to_string()),
            });
        }

        Ok(Self {
            pattern_str: translated.into_owned(),
            compiled: OnceCell::new(),
        })
    }

    /// Get or compile the regex pattern.
    ///
    /// Returns `None` if compilation failed. Syntax was already validated in
    /// [`RxOperator::new`], so reaching this is rare — a program too large to
    /// build, for instance. It is reported once, because a rule that cannot
    /// match must not do so silently.
    #[inline]
    fn get_regex(&self) -> Option<&Regex> {
        self.compiled
            .get_or_init(|| match regex::RegexBuilder::new(&self.pattern_str)
                .dfa_size_limit(LAZY_DFA_CACHE)
                .build()
            {
                Ok(regex) => Some(regex),
                Err(e) => {
                    tracing::error!(
                        pattern = %self.pattern_str,
                        error = %e,
                        "regex could not be compiled at first use; this rule can never match"
                    );
                    None
                }
            })
            .as_ref()
    }
}

impl Operator for RxOperator {
    fn execute(&self, value: &str) -> OperatorResult {
        let Some(regex) = self.get_regex() else {
            return OperatorResult::no_match();
        };

        // Most evaluations do not match. `is_match` answers that with the
        // lazy DFA and no allocation; `captures` always runs a capturing
        // engine (the bounded backtracker, which clears a visited set sized by
        // the input) and allocates the groups. So capture only on a match.
        if !regex.is_match(value) {
            return OperatorResult::no_match();
        }
        if let Some(captures) = regex.captures(value) {
            let matched_value = captures.get(0).map(|m| m.as_str().to_string());
            let capture_groups: Vec<String> = captures
                .iter()
                .skip(1) // Skip the full match
                .filter_map(|c| c.map(|m| m.as_str().to_string()))
                .collect();

            OperatorResult {
                matched: true,
                captures: capture_groups,
                matched_value,
            }
        } else {
            OperatorResult::no_match()
        }
    }

    fn name(&self) -> &'static str {
        "rx"
    }

    fn supports_capture(&self) -> bool {
        true
    }

    fn required_literals(&self) -> Option<Vec<Vec<u8>>> {
        required_literals(&self.pattern_str)
    }

    fn matches_nothing_over(&self, alphabet: &ByteSet) -> bool {
        regex_syntax::Parser::new()
            .parse(&self.pattern_str)
            .is_ok_and(|hir| !possible_over(&hir, alphabet))
    }
}

/// Whether some string made only of bytes in `alphabet` (ASCII) can contain a match of `hir`.
/// Zero-width assertions count as satisfiable, so this errs towards `true`. Case-insensitive
/// parts are case classes by now, so they are judged byte by byte like the rest.
fn possible_over(hir: &regex_syntax::hir::Hir, alphabet: &ByteSet) -> bool {
    use regex_syntax::hir::{Class, HirKind};
    let any_of = |low: u32, high: u32| (low..=high.min(127)).any(|b| alphabet.contains(b as u8));
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => true,
        HirKind::Literal(literal) => alphabet.contains_all(&literal.0),
        HirKind::Class(Class::Unicode(class)) => {
            class.ranges().iter().any(|r| any_of(r.start().into(), r.end().into()))
        }
        HirKind::Class(Class::Bytes(class)) => {
            class.ranges().iter().any(|r| any_of(r.start().into(), r.end().into()))
        }
        HirKind::Repetition(rep) => rep.min == 0 || possible_over(&rep.sub, alphabet),
        HirKind::Capture(capture) => possible_over(&capture.sub, alphabet),
        HirKind::Concat(parts) => parts.iter().all(|part| possible_over(part, alphabet)),
        HirKind::Alternation(branches) => branches.iter().any(|b| possible_over(b, alphabet)),
    }
}

/// Shortest literal worth a prefilter: a one-byte literal occurs in nearly every value, so the
/// rule would run anyway, after a scan that reports it at every occurrence.
const MIN_PREFILTER_LITERAL: usize = 2;

/// Literals of which every match of `pattern` contains at least one, as the `regex` crate
/// compiles it (case-insensitive parts come out as their case variants). `None` when there is
/// no finite set of useful ones: a match may be anything (`\\w+`), or empty, or one byte long.
fn required_literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    required(&hir).map(|set| set.into_iter().collect())
}

type LiteralSet = std::collections::BTreeSet<Vec<u8>>;

/// A required set for `hir` (see [`required_literals`]), the most selective one found:
///
/// - what `regex-syntax` extracts as the literals every match begins with, or ends with;
/// - in a concatenation, any part's required set (a part's match lies inside the whole
///   match), and the prefixes of the concatenation from each part on;
/// - in an alternation, the union of the branches' sets (none if a branch has none);
/// - a group, or a repetition of at least once, has its body's set.
fn required(hir: &regex_syntax::hir::Hir) -> Option<LiteralSet> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    use regex_syntax::hir::{Hir, HirKind};
    let extracted = |hir: &Hir, kind: ExtractKind| -> Option<LiteralSet> {
        let seq = Extractor::new().kind(kind).extract(hir);
        let literals = seq.literals()?;
        let set: LiteralSet = literals.iter().map(|l| l.as_bytes().to_vec()).collect();
        usable(&set).then_some(set)
    };
    let mut candidates = vec![
        extracted(hir, ExtractKind::Prefix),
        extracted(hir, ExtractKind::Suffix),
    ];
    match hir.kind() {
        HirKind::Concat(parts) => {
            for (i, part) in parts.iter().enumerate() {
                candidates.push(required(part));
                if i > 0 && matches!(part.kind(), HirKind::Literal(_) | HirKind::Class(_)) {
                    candidates.push(extracted(&Hir::concat(parts[i..].to_vec()), ExtractKind::Prefix));
                }
            }
        }
        HirKind::Alternation(branches) => {
            let mut union = LiteralSet::new();
            for branch in branches {
                union.extend(required(branch)?);
            }
            candidates.push(usable(&union).then_some(union));
        }
        HirKind::Capture(group) => candidates.push(required(&group.sub)),
        HirKind::Repetition(repetition) if repetition.min >= 1 => {
            candidates.push(required(&repetition.sub))
        }
        _ => {}
    }
    candidates.into_iter().flatten().max_by_key(selectivity)
}

/// A set worth a prefilter: not empty, every literal at least [`MIN_PREFILTER_LITERAL`] long.
fn usable(set: &LiteralSet) -> bool {
    !set.is_empty() && set.iter().all(|l| l.len() >= MIN_PREFILTER_LITERAL)
}

/// Longer shortest literal first (rarer in ordinary text), then fewer literals.
fn selectivity(set: &LiteralSet) -> (usize, std::cmp::Reverse<usize>) {
    let shortest = set.iter().map(Vec::len).min().unwrap_or(0);
    (shortest.min(8), std::cmp::Reverse(set.len()))
}

/// Phrase match operator (@pm).
pub struct PmOperator {
    automaton: AhoCorasick,
    patterns: Vec<String>,
}

impl PmOperator {
    /// Create a new phrase match operator from space-separated patterns.
    pub fn new(patterns_str: &str) -> Result<Self> {
        let patterns: Vec<String> = patterns_str
            .split_whitespace()
            .map(|s| s.to_string())
            .collect();

        if patterns.is_empty() {
            return Err(Error::PatternSet {
                message: "empty pattern list".to_string(),
            });
        }

        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&patterns)
            .map_err(|e| Error::PatternSet {
                message: e.to_string(),
            })?;

        Ok(Self {
            automaton,
            patterns,
        })
    }

    /// Create a phrase match operator from a file.
    pub fn from_file(path: &str) -> Result<Self> {
        // Try the path as-is first, then common CRS locations
        let possible_paths = [
            path.to_string(),
            format!("test-rules/crs/rules/{}", path),
            format!("rules/{}", path),
        ];

        let mut content = None;
        let mut last_error = None;

        for p in &possible_paths {
            match std::fs::read_to_string(p) {
                Ok(c) => {
                    content = Some(c);
                    break;
                }
                Err(e) => {
                    last_error = Some(e);
                }
            }
        }

        let content = content.ok_or_else(|| Error::RuleFileLoad {
            path: path.into(),
            source: last_error.unwrap(),
        })?;

        let patterns: Vec<String> = content
            .lines()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|s| s.to_string())
            .collect();

        if patterns.is_empty() {
            return Err(Error::PatternSet {
                message: "empty pattern file".to_string(),
            });
        }

        let automaton = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&patterns)
            .map_err(|e| Error::PatternSet {
                message: e.to_string(),
            })?;

        Ok(Self {
            automaton,
            patterns,
        })
    }
}

impl Operator for PmOperator {
    fn execute(&self, value: &str) -> OperatorResult {
        if let Some(mat) = self.automaton.find(value) {
            let matched = &self.patterns[mat.pattern().as_usize()];
            OperatorResult::matched(matched.clone())
        } else {
            OperatorResult::no_match()
        }
    }

    fn name(&self) -> &'static str {
        "pm"
    }

    /// Exactly the phrases: the operator matches when one occurs, ASCII-case-insensitively.
    fn required_literals(&self) -> Option<Vec<Vec<u8>>> {
        Some(self.patterns.iter().map(|p| p.as_bytes().to_vec()).collect())
    }

    fn matches_nothing_over(&self, alphabet: &ByteSet) -> bool {
        !self
            .patterns
            .iter()
            .any(|p| alphabet.contains_all_ignoring_ascii_case(p.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rx_simple() {
        let op = RxOperator::new("^admin").unwrap();
        assert!(op.execute("admin").matched);
        assert!(!op.execute("user").matched);
    }

    #[test]
    fn test_rx_captures() {
        let op = RxOperator::new(r"user=(\w+)").unwrap();
        let result = op.execute("user=john");
        assert!(result.matched);
        assert_eq!(result.captures, vec!["john"]);
    }

    #[test]
    fn an_operator_matches_nothing_over_an_alphabet_without_what_a_match_needs() {
        let words = ByteSet::ALPHANUMERIC.with(b" _-.");
        let nothing =
            |pattern: &str, set: &ByteSet| RxOperator::new(pattern).unwrap().matches_nothing_over(set);
        assert!(nothing("<script", &words));
        assert!(nothing(r"(?i)java\s*script:", &words));
        assert!(!nothing(r"(?i)java\s*script:", &words.with(b":")));
        // One branch is enough; a repetition may be absent; a look-around is no obstacle.
        assert!(!nothing(r"'|select", &words));
        assert!(!nothing(r"\bx(?:;)*$", &words));
        assert!(nothing(r"x(?:;)+", &words));
        assert!(!nothing(r"\w+", &words));
        assert!(nothing(r"[^\x00-\x7f]", &words));
        // Case classes count either case.
        assert!(!nothing(r"(?i)SELECT", &ByteSet::of(b"select")));
        let values = ["plain words 12.5", "a-b_c", "<script>", "javascript:x", "'x'"];
        for alphabet in [words, words.with(b"<:/;'")] {
            for value in values.iter().filter(|v| alphabet.contains_all(v.as_bytes())) {
                for pattern in ["<script", r"(?i)java\s*script:", "'|select", r"x(?:;)+"] {
                    let op = RxOperator::new(pattern).unwrap();
                    let never = op.matches_nothing_over(&alphabet);
                    assert!(!(never && op.execute(value).matched), "{pattern} {value}");
                }
            }
        }
        let pm = PmOperator::new("sleep waitfor <x").unwrap();
        assert!(!pm.matches_nothing_over(&ByteSet::of(b"SLEP")));
        assert!(pm.matches_nothing_over(&ByteSet::of(b"slp<")));
    }

    #[test]
    fn rx_required_literals_are_those_every_match_contains() {
        let lits = |p: &str| RxOperator::new(p).unwrap().required_literals();
        // Alternation of words: each one.
        let mut words = lits("(?:select|union)\\s+all").unwrap();
        words.sort();
        assert_eq!(words, vec![b"select".to_vec(), b"union".to_vec()]);
        // Case-insensitive: the variants, all of them containing the same letters.
        let variants = lits("(?i)ab").unwrap();
        assert!(variants.iter().all(|l| l.eq_ignore_ascii_case(b"ab")), "{variants:?}");
        // No prefix but a suffix.
        assert_eq!(lits("[a-z]+=javascript").unwrap(), vec![b"=javascript".to_vec()]);
        // Neither, but a literal inside every match; in each branch of an alternation.
        assert_eq!(lits("\\W+script\\W+").unwrap(), vec![b"script".to_vec()]);
        let mut inner = lits("\\w+(?:\\W+abc|\\d+xyz\\s)").unwrap();
        inner.sort();
        assert_eq!(inner, vec![b"abc".to_vec(), b"xyz".to_vec()]);
        // Nothing every match must contain, or only one byte of it.
        assert_eq!(lits("\\w+"), None);
        assert_eq!(lits("a?b?"), None);
        assert_eq!(lits("[<>]"), None);
        assert_eq!(lits("\\w+(?:abc|\\d+)"), None);
    }

    #[test]
    fn test_pm_simple() {
        let op = PmOperator::new("admin root user").unwrap();
        assert!(op.execute("the admin user").matched);
        assert!(!op.execute("guest").matched);
    }

    #[test]
    fn test_pm_case_insensitive() {
        let op = PmOperator::new("ADMIN").unwrap();
        assert!(op.execute("admin").matched);
        assert!(op.execute("Admin").matched);
    }
}
