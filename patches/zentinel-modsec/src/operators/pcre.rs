//! The PCRE dialect of `@rx` patterns, rewritten into the `regex` crate's.
//!
//! ModSecurity compiles `@rx` with PCRE, and rule sets are written for it. A few PCRE forms
//! mean something else to the `regex` crate, or nothing at all, so a pattern using them either
//! failed to compile (the rule could never match) or -- worse -- compiled to something else:
//!
//! - a `{` that does not start a counted repetition is a literal in PCRE (`\s+{`, `{.*}`),
//!   an error here;
//! - `\<` and `\>` are literal `<` and `>` in PCRE, word boundaries here (and an error inside
//!   a class);
//! - a `[` inside a character class is a literal in PCRE, a nested class here; so are `&&`,
//!   `--` and `~~`, set operations here;
//! - a possessive quantifier (`*+`, `++`, `?+`, `{n}+`) has no equivalent here; it is read as the
//!   greedy one, which matches everything the possessive one does (a superset, never a miss).
//!
//! Look-around and back-references have no equivalent and are left as they are: such a pattern
//! still does not compile, and the rule is reported at load as one that can never match.

use std::borrow::Cow;

/// `pattern` with the PCRE forms above rewritten; borrowed when it has none.
pub(crate) fn translate(pattern: &str) -> Cow<'_, str> {
    if !pattern.contains(['{', '[', '\\', '+']) {
        return Cow::Borrowed(pattern);
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    // Inside a character class: where it opened (to know its first character).
    let mut class: Option<usize> = None;
    while i < chars.len() {
        let c = chars[i];
        match (c, class) {
            ('\\', _) => {
                let Some(&next) = chars.get(i + 1) else {
                    out.push(c);
                    break;
                };
                match next {
                    // PCRE escapes any punctuation to itself; `<` and `>` are the two the
                    // regex crate reads otherwise.
                    '<' | '>' => out.push(next),
                    _ => {
                        out.push(c);
                        out.push(next);
                    }
                }
                i += 2;
                continue;
            }
            ('[', None) => {
                out.push(c);
                let mut start = i + 1;
                if chars.get(start) == Some(&'^') {
                    out.push('^');
                    start += 1;
                }
                // A `]` first in a class is a literal (the same in both dialects).
                if chars.get(start) == Some(&']') {
                    out.push_str("\\]");
                    start += 1;
                }
                class = Some(start);
                i = start;
                continue;
            }
            (']', Some(_)) => {
                class = None;
                out.push(c);
            }
            ('[', Some(_)) => {
                // A POSIX class (`[:alpha:]`) is one in both dialects; any other `[` is a
                // literal in PCRE.
                if chars.get(i + 1) == Some(&':') {
                    if let Some(end) = find(&chars, i + 2, &[':', ']']) {
                        out.extend(&chars[i..end + 2]);
                        i = end + 2;
                        continue;
                    }
                }
                out.push_str("\\[");
            }
            ('&' | '~', Some(_)) => {
                out.push('\\');
                out.push(c);
            }
            ('-', Some(_)) if chars.get(i + 1) == Some(&'-') => out.push_str("\\-"),
            ('{', None) => match counted_repetition(&chars, i) {
                Some(end) => {
                    out.extend(&chars[i..=end]);
                    i = end + 1;
                    skip_possessive(&chars, &mut i);
                    continue;
                }
                None => out.push_str("\\{"),
            },
            ('}', None) => out.push_str("\\}"),
            ('*' | '+' | '?', None) => {
                out.push(c);
                i += 1;
                // `*?`, `+?`, `??` are lazy in both dialects; `*+`, `++`, `?+` possessive in PCRE.
                if chars.get(i) == Some(&'?') {
                    out.push('?');
                    i += 1;
                } else {
                    skip_possessive(&chars, &mut i);
                }
                continue;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(out)
}

/// Where `{` at `at` ends if it starts `{n}`, `{n,}` or `{n,m}`.
fn counted_repetition(chars: &[char], at: usize) -> Option<usize> {
    let mut i = at + 1;
    let digits = |i: &mut usize| {
        let start = *i;
        while chars.get(*i).is_some_and(char::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return None;
    }
    if chars.get(i) == Some(&',') {
        i += 1;
        digits(&mut i);
    }
    (chars.get(i) == Some(&'}')).then_some(i)
}

/// Step over the `+` that makes the quantifier just read possessive.
fn skip_possessive(chars: &[char], i: &mut usize) {
    if chars.get(*i) == Some(&'+') {
        *i += 1;
    }
}

/// The index of `needle` (a two-character sequence) from `from`, if any.
fn find(chars: &[char], from: usize, needle: &[char; 2]) -> Option<usize> {
    (from..chars.len().saturating_sub(1)).find(|&j| chars[j] == needle[0] && chars[j + 1] == needle[1])
}

#[cfg(test)]
mod tests {
    use super::translate;

    fn compiles(pcre: &str) -> regex::Regex {
        regex::Regex::new(&translate(pcre)).unwrap_or_else(|e| panic!("{pcre} -> {}: {e}", translate(pcre)))
    }

    #[test]
    fn patterns_without_pcre_forms_are_untouched() {
        for p in [r"(?i)union.*?select", r"^\d{1,3}$", r"[a-z\]]+", r"a{2,}b{3}", r"\bfoo\b", r"x+?y*?"] {
            assert_eq!(translate(p), p);
        }
    }

    #[test]
    fn a_brace_that_is_not_a_repetition_is_a_literal() {
        let re = compiles(r"^\(\s*\)\s+{");
        assert!(re.is_match("() {"));
        let re = compiles(r#"[oOcC]:\d+:".+?":\d+:{.*}"#);
        assert!(re.is_match(r#"O:8:"stdClass":1:{s:1:"a";}"#));
        assert!(compiles(r"{{.*?}}").is_match("{{7*7}}"));
        assert!(compiles(r"a{2}").is_match("aa") && !compiles(r"^a{2}$").is_match("a{2}"));
    }

    #[test]
    fn escaped_angle_brackets_are_literals() {
        let re = compiles(r"^[^:\(\)\&\|\!\<\>\~]*\)");
        assert!(re.is_match("a)") && !re.is_match("<)"));
        assert!(compiles(r"\<script").is_match("<script"));
        assert!(!compiles(r"\<script").is_match("script"));
    }

    #[test]
    fn a_bracket_or_set_operator_inside_a_class_is_a_literal() {
        let re = compiles(r#"^[^"(),\/:;<=>?![\x5c\]{}]+$"#);
        assert!(re.is_match("text") && !re.is_match("te[xt") && !re.is_match("a]b"));
        assert!(compiles(r"^[a&&b]+$").is_match("a&b"));
        assert!(compiles(r"^[[:alpha:]]+$").is_match("abc"));
    }

    #[test]
    fn possessive_quantifiers_read_as_greedy() {
        let re = compiles(r"^\s*+;\s*+charset");
        assert!(re.is_match("  ; charset"));
        assert!(compiles(r"a{2}+b").is_match("aab"));
        assert!(compiles(r"a++b").is_match("aab"));
    }

    #[test]
    fn look_around_and_back_references_still_do_not_compile() {
        assert!(regex::Regex::new(&translate(r"(?<!&)amp;")).is_err());
        assert!(regex::Regex::new(&translate(r"(\w+)\1")).is_err());
    }
}
