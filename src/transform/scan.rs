//! The extent of a JSON value in a body, validated without building it.
//!
//! [`super::node`] opens a body one level at a time: every value it does not edit is kept as
//! the exact text the backend wrote, and only its extent and validity matter. serde_json's
//! `RawValue` does that through its general deserializer (a visitor call per member, a state
//! check per token); on a 2 KiB order that was 44 k instructions, three quarters of what a
//! transform cost. This scanner does the same job in one pass over the bytes (≈ 24 k).
//!
//! It accepts exactly RFC 8259 JSON texts as serde_json does when it skips a value: the
//! caller has checked the body is UTF-8 (so only ASCII structure is looked at here), strings
//! may not hold control characters, escapes are the nine of the RFC (`\u` with four hex
//! digits; whether they pair into valid surrogates is left to whoever decodes the string, as
//! serde_json leaves it), numbers follow the RFC's grammar. Nesting deeper than
//! [`MAX_DEPTH`] is refused: serde_json skips any depth, but refuses it (its recursion limit)
//! wherever it builds values, as the gateway's other JSON entry points do.

/// How deeply arrays and objects may nest inside one value.
pub(crate) const MAX_DEPTH: usize = 128;

/// Why a text is not JSON, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanError {
    /// Byte offset of the problem.
    pub(crate) at: usize,
    /// What was expected or found.
    pub(crate) what: &'static str,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

#[cold]
#[inline(never)]
fn fail<T>(at: usize, what: &'static str) -> Result<T, ScanError> {
    Err(ScanError { at, what })
}

/// Byte classes: JSON whitespace, what ends the plain run of a string (the closing quote, an
/// escape, a control character), digits.
const WS: u8 = 1;
const STOP: u8 = 2;
const DIGIT: u8 = 4;
const CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = STOP;
        b += 1;
    }
    table[b' ' as usize] = WS;
    table[b'\t' as usize] = WS | STOP;
    table[b'\n' as usize] = WS | STOP;
    table[b'\r' as usize] = WS | STOP;
    table[b'"' as usize] = STOP;
    table[b'\\' as usize] = STOP;
    let mut d = b'0';
    while d <= b'9' {
        table[d as usize] = DIGIT;
        d += 1;
    }
    table
};

#[inline(always)]
fn is(b: &[u8], i: usize, class: u8) -> bool {
    i < b.len() && CLASS[b[i] as usize] & class != 0
}

/// The first byte at or after `i` that is not JSON whitespace.
#[inline(always)]
pub(crate) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while is(b, i, WS) {
        i += 1;
    }
    i
}

#[inline(always)]
fn skip_digits(b: &[u8], mut i: usize) -> usize {
    while is(b, i, DIGIT) {
        i += 1;
    }
    i
}

/// The first byte at or after `i` that is a quote, a backslash or a control character (or the
/// end): eight bytes at a time, then one at a time.
#[inline(always)]
fn plain_run_end(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let word = u64::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7]]);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        // A byte's high bit is set where it is zero (quote, backslash) or below 0x20; the
        // lowest such byte is exact (a borrow only spreads upwards from a hit).
        let hits = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word))
            & HIGH;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && CLASS[b[i] as usize] & STOP == 0 {
        i += 1;
    }
    i
}

/// The end of a string whose opening quote is at `i - 1` (the index after its closing quote),
/// and whether it holds an escape.
#[inline(always)]
pub(crate) fn string_end(b: &[u8], mut i: usize) -> Result<(usize, bool), ScanError> {
    let mut escaped = false;
    loop {
        i = plain_run_end(b, i);
        match b.get(i) {
            Some(b'"') => return Ok((i + 1, escaped)),
            Some(b'\\') => {
                escaped = true;
                match b.get(i + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                    Some(b'u') => match b.get(i + 2..i + 6) {
                        Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => i += 6,
                        _ => return fail(i, "invalid \\u escape"),
                    },
                    None => return fail(i, "unterminated string"),
                    Some(_) => return fail(i, "invalid escape"),
                }
            }
            Some(_) => return fail(i, "control character in a string"),
            None => return fail(i, "unterminated string"),
        }
    }
}

/// The end of a number starting at `i`.
#[inline(always)]
fn number_end(b: &[u8], mut i: usize) -> Result<usize, ScanError> {
    if b[i] == b'-' {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = skip_digits(b, i + 1),
        _ => return fail(i, "invalid number"),
    }
    if b.get(i) == Some(&b'.') {
        if !is(b, i + 1, DIGIT) {
            return fail(i, "invalid number");
        }
        i = skip_digits(b, i + 1);
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        if !is(b, i, DIGIT) {
            return fail(i, "invalid number");
        }
        i = skip_digits(b, i);
    }
    Ok(i)
}

/// A member name at `i` (whitespace skipped) and its colon: the index after the colon, the
/// name's extent with its quotes, and whether it holds an escape.
#[inline(always)]
pub(crate) fn member_name(b: &[u8], i: usize) -> Result<(usize, (usize, usize), bool), ScanError> {
    if b.get(i) != Some(&b'"') {
        return fail(i, "expected a member name");
    }
    let (end, escaped) = string_end(b, i + 1)?;
    // Compact JSON has the colon right there.
    let colon = if b.get(end) == Some(&b':') { end } else { skip_ws(b, end) };
    if b.get(colon) != Some(&b':') {
        return fail(colon, "expected `:`");
    }
    Ok((colon + 1, (i, end), escaped))
}

/// What follows a member or an item: `,` and the next one, or the container's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// A comma: another member or item starts after it (at the index given).
    More(usize),
    /// The closing bracket (the index after it).
    End(usize),
}

/// After a member or item of an object (`object`) or array, at `i`.
#[inline(always)]
pub(crate) fn next(b: &[u8], i: usize, object: bool) -> Result<Next, ScanError> {
    let i = skip_ws(b, i);
    match (b.get(i), object) {
        (Some(b','), _) => Ok(Next::More(skip_ws(b, i + 1))),
        (Some(b'}'), true) | (Some(b']'), false) => Ok(Next::End(i + 1)),
        (_, true) => fail(i, "expected `,` or `}`"),
        (_, false) => fail(i, "expected `,` or `]`"),
    }
}

/// The end of the JSON value that starts at `i` (whitespace before it is skipped). One pass:
/// whitespace is looked for only where a token was not found (compact JSON pays nothing for
/// it), strings are read eight bytes at a time, the nesting is a bit stack.
pub(crate) fn value_end(b: &[u8], mut i: usize) -> Result<usize, ScanError> {
    // Open containers, innermost in the low bit: 1 an object, 0 an array.
    let mut open: u128 = 0;
    let mut depth = 0usize;
    loop {
        // A value starts at `i`.
        match b.get(i) {
            Some(b' ' | b'\t' | b'\n' | b'\r') => {
                i += 1;
                continue;
            }
            Some(b'"') => i = string_end(b, i + 1)?.0,
            Some(&c @ (b'{' | b'[')) => {
                if depth == MAX_DEPTH {
                    return fail(i, "nested too deeply");
                }
                let object = c == b'{';
                let inner = skip_ws(b, i + 1);
                if b.get(inner) == Some(if object { &b'}' } else { &b']' }) {
                    i = inner + 1;
                } else {
                    depth += 1;
                    open = (open << 1) | u128::from(object);
                    i = if object { member_name(b, inner)?.0 } else { inner };
                    continue;
                }
            }
            Some(b'-' | b'0'..=b'9') => i = number_end(b, i)?,
            Some(b't') => i = literal(b, i, b"true")?,
            Some(b'f') => i = literal(b, i, b"false")?,
            Some(b'n') => i = literal(b, i, b"null")?,
            _ => return fail(i, "expected a value"),
        }
        // A value ended at `i`: the next member or item, or the ends of containers.
        loop {
            if depth == 0 {
                return Ok(i);
            }
            let object = open & 1 == 1;
            match b.get(i) {
                Some(b' ' | b'\t' | b'\n' | b'\r') => i += 1,
                Some(b',') => {
                    i = if object { member_name(b, skip_ws(b, i + 1))?.0 } else { i + 1 };
                    break;
                }
                Some(b'}') if object => {
                    i += 1;
                    depth -= 1;
                    open >>= 1;
                }
                Some(b']') if !object => {
                    i += 1;
                    depth -= 1;
                    open >>= 1;
                }
                _ if object => return fail(i, "expected `,` or `}`"),
                _ => return fail(i, "expected `,` or `]`"),
            }
        }
    }
}

#[inline(always)]
fn literal(b: &[u8], i: usize, word: &'static [u8]) -> Result<usize, ScanError> {
    if b.get(i..i + word.len()) == Some(word) {
        Ok(i + word.len())
    } else {
        fail(i, "expected a value")
    }
}

/// Whether `text` is one JSON value, with whitespace around it allowed (tests: the
/// differential property test in src/fuzz.rs compares it with serde_json).
#[cfg(test)]
pub(crate) fn is_json(text: &[u8]) -> bool {
    let start = skip_ws(text, 0);
    value_end(text, start).is_ok_and(|end| skip_ws(text, end) == text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_accepts(text: &[u8]) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok()
    }

    #[test]
    fn json_texts_are_accepted_and_their_extent_found() {
        for good in [
            "0",
            "-0.5e+10",
            "1E5",
            "\"a\\u00e9\\n\\\"\"",
            "\"\\ud800\"",
            "true",
            "null",
            "[]",
            "{}",
            " [ 1 , {\"a\" : [ ] , \"b\":{}} , \"x\" ] ",
            "{\"a\":{\"b\":{\"c\":[[[1]]]}}}",
        ] {
            assert!(is_json(good.as_bytes()), "{good}");
            assert!(serde_accepts(good.as_bytes()), "{good}");
        }
        assert_eq!(value_end(b"[1,2] ,3", 0), Ok(5));
        assert_eq!(value_end(b"\"a\\\"b\"x", 0), Ok(6));
        assert_eq!(value_end(b"12}", 0), Ok(2));
    }

    #[test]
    fn strings_end_where_they_end_at_every_position_in_a_word() {
        for run in 0..20 {
            let plain = "é".repeat(run / 2) + &"a".repeat(run % 2);
            let text = format!("\"{plain}\"tail");
            assert_eq!(string_end(text.as_bytes(), 1), Ok((plain.len() + 2, false)), "{text:?}");
            let text = format!("\"{plain}\\\"x\"");
            assert_eq!(string_end(text.as_bytes(), 1), Ok((text.len(), true)), "{text:?}");
            let text = format!("\"{plain}\u{1f}\"");
            assert!(string_end(text.as_bytes(), 1).is_err(), "{text:?}");
            let text = format!("\"{plain}\u{7f}\u{80}\"");
            assert_eq!(string_end(text.as_bytes(), 1), Ok((text.len(), false)), "{text:?}");
        }
    }

    #[test]
    fn what_is_not_json_is_refused() {
        for bad in [
            "",
            "-",
            "01",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "tru",
            "nul",
            "[1,]",
            "[,1]",
            "{\"a\"}",
            "{\"a\":}",
            "{a:1}",
            "{\"a\":1,}",
            "[1 2]",
            "\"a",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"\u{1}\"",
            "[}",
            "{]",
            "[",
            "{\"a\":1",
            "NaN",
        ] {
            assert!(!is_json(bad.as_bytes()), "{bad:?}");
            assert!(!serde_accepts(bad.as_bytes()), "{bad:?}");
        }
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(is_json(deep(MAX_DEPTH).as_bytes()));
        assert!(!is_json(deep(MAX_DEPTH + 1).as_bytes()));
        // Very deep input is refused without recursion.
        assert!(!is_json("[".repeat(1 << 20).as_bytes()));
    }
}
