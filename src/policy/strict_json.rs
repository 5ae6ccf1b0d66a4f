//! What a validated JSON body must also be for its validation to hold for every backend
//! (I-JSON, RFC 7493 §2.3 and §2.2): no name twice in one object, and no number a double
//! cannot hold.
//!
//! `serde_json` reads `{"qty":-1,"qty":5}` last-wins and `100.0000000000000001` as `100.0`,
//! so the schema checks values a first-wins or decimal backend never sees. It exposes neither
//! repeated names nor the text of a number; its `arbitrary_precision` feature would keep the
//! text but changes `Number` for every crate in the build (numbers inside untagged enums, as
//! in JetStream's replies, stop deserializing). So one linear pass over the body, after
//! `serde_json` has parsed it, looks at exactly those two things.
//!
//! A number passes when it is written with no more significant digits than the shortest
//! decimal that reads back as its double (the value the schema checks): it is then one of the
//! shortest forms of that double, and a schema bound of up to 15 significant digits (the
//! digits a double always keeps) lies on the same side of the number as of its double. So
//! `0.1`, `99.99` or any double a JSON library wrote pass; `100.0000000000000001` (a double
//! reads `100`) and integers beyond 64 bits a double cannot hold do not.

use std::borrow::Cow;
use std::collections::HashSet;

/// Why a body is not strict JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strictness {
    /// A name appears twice in one object; the pointer of the second.
    DuplicateName(String),
    /// A number whose double is not its value.
    InexactNumber {
        /// Where the number is.
        pointer: String,
        /// The number as written (cut at 40 characters).
        number: String,
    },
}

/// Where the scan is inside one container.
enum Frame<'a> {
    Object {
        names: HashSet<Cow<'a, str>>,
        /// The member being read (its name is known once `:` is reached).
        name: Option<Cow<'a, str>>,
        /// The next string is a name.
        expect_name: bool,
    },
    Array {
        index: usize,
    },
}

/// Check `text`, which `serde_json` has parsed already (on anything else the answer is
/// meaningless but the scan never panics).
pub fn check(text: &[u8]) -> Result<(), Strictness> {
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'{' => stack.push(Frame::Object { names: HashSet::new(), name: None, expect_name: true }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { expect_name, .. }) => *expect_name = true,
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            b'"' => {
                let end = string_end(text, i + 1);
                if let Some(Frame::Object { names, name, expect_name: expect @ true }) = stack.last_mut() {
                    *expect = false;
                    let member = decode_name(&text[i..end.min(text.len())]);
                    if !names.insert(member.clone()) {
                        *name = Some(member);
                        return Err(Strictness::DuplicateName(pointer(&stack)));
                    }
                    *name = Some(member);
                }
                i = end;
                continue;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < text.len() && matches!(text[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                    i += 1;
                }
                let number = std::str::from_utf8(&text[start..i]).unwrap_or("");
                if !exact(number) {
                    let mut shown: String = number.chars().take(40).collect();
                    if shown.len() < number.len() {
                        shown.push('…');
                    }
                    return Err(Strictness::InexactNumber { pointer: pointer(&stack), number: shown });
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The index just past the closing quote of a string whose content starts at `from`.
fn string_end(text: &[u8], mut from: usize) -> usize {
    while from < text.len() {
        match text[from] {
            b'\\' => from += 2,
            b'"' => return from + 1,
            _ => from += 1,
        }
    }
    text.len()
}

/// A member name as the parser reads it (`"\u0061"` is `a`): escapes decoded by `serde_json`.
fn decode_name(quoted: &[u8]) -> Cow<'_, str> {
    let inner = quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default();
    if !inner.contains(&b'\\') {
        if let Ok(name) = std::str::from_utf8(inner) {
            return Cow::Borrowed(name);
        }
    }
    serde_json::from_slice::<String>(quoted).map(Cow::Owned).unwrap_or_else(|_| String::from_utf8_lossy(inner))
}

/// The JSON pointer (RFC 6901) of the value being read; `/` for the root.
fn pointer(stack: &[Frame<'_>]) -> String {
    let mut out = String::new();
    for frame in stack {
        out.push('/');
        match frame {
            Frame::Object { name, .. } => {
                out.push_str(&name.as_deref().unwrap_or("").replace('~', "~0").replace('/', "~1"))
            }
            Frame::Array { index } => out.push_str(&index.to_string()),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Whether the value `serde_json` reads for `number` is `number` (see the module notes).
fn exact(number: &str) -> bool {
    // Integers that fit 64 bits are kept as integers.
    if !number.contains(['.', 'e', 'E']) && (number.parse::<i64>().is_ok() || number.parse::<u64>().is_ok()) {
        return true;
    }
    // The body's own reading (correctly rounded: serde_json's `float_roundtrip`).
    let Ok(double) = serde_json::from_str::<f64>(number) else { return false };
    // `{:e}` writes the fewest digits that read back as `double`.
    match (Decimal::parse(number), Decimal::parse(&format!("{double:e}"))) {
        (Some(written), Some(shortest)) => {
            written.digits.len() <= shortest.digits.len() && written.digits.is_empty() == shortest.digits.is_empty()
        }
        _ => false,
    }
}

/// A decimal number as its significant digits and a power of ten: `-12.50e1` is
/// `{negative, "125", 0}`; zero has no digits and no sign.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

impl Decimal {
    /// A JSON number (or Rust's `{:e}` output, the same grammar).
    fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let (negative, rest) = match bytes.first() {
            Some(b'-') => (true, &bytes[1..]),
            _ => (false, bytes),
        };
        let (mantissa, exponent) = match rest.iter().position(|b| *b == b'e' || *b == b'E') {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let (int, frac) = match mantissa.iter().position(|b| *b == b'.') {
            Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
            None => (mantissa, &[][..]),
        };
        if int.is_empty() || !int.iter().chain(frac).all(u8::is_ascii_digit) {
            return None;
        }
        let exponent = match exponent {
            Some(e) => {
                let (negative, digits) = match e.first() {
                    Some(b'-') => (true, &e[1..]),
                    Some(b'+') => (false, &e[1..]),
                    _ => (false, e),
                };
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                let n = digits.iter().fold(0i64, |n, d| n.saturating_mul(10).saturating_add(i64::from(d - b'0')));
                if negative {
                    -n
                } else {
                    n
                }
            }
            None => 0,
        };
        let mut digits: Vec<u8> = int.iter().chain(frac).copied().skip_while(|d| *d == b'0').collect();
        let trailing = digits.iter().rev().take_while(|d| **d == b'0').count();
        digits.truncate(digits.len() - trailing);
        if digits.is_empty() {
            return Some(Decimal { negative: false, digits, exponent: 0 });
        }
        let exponent = exponent.saturating_sub(frac.len() as i64).saturating_add(trailing as i64);
        Some(Decimal { negative, digits, exponent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(text: &str) -> Option<String> {
        match check(text.as_bytes()) {
            Err(Strictness::DuplicateName(p)) => Some(p),
            _ => None,
        }
    }

    #[test]
    fn repeated_names_are_found_with_their_pointer() {
        assert_eq!(check(br#"{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}"#), Ok(()));
        assert_eq!(dup(r#"{"qty":-1,"qty":5}"#).as_deref(), Some("/qty"));
        assert_eq!(dup(r#"{"qty":-1,"pad":"x","qty":5}"#).as_deref(), Some("/qty"));
        assert_eq!(dup(r#"{"x":[1,{"a":1,"b":2,"a":3}]}"#).as_deref(), Some("/x/1/a"));
        assert_eq!(dup(r#"{"a":1,"\u0061":2}"#).as_deref(), Some("/a"), "names compare decoded");
        assert_eq!(dup(r#"{"a/b~":1,"a/b~":2}"#).as_deref(), Some("/a~1b~0"));
        // Strings that look like structure are not structure.
        assert_eq!(check(br#"{"a":"{\"a\":1,","b":"\\","c":"\",\"a\":"}"#), Ok(()));
        assert_eq!(check(br#"[{"a":1},{"a":1}]"#), Ok(()));
        assert_eq!(check(br#"{"a":{"b":1},"b":1}"#), Ok(()));
    }

    #[test]
    fn numbers_pass_when_their_double_is_their_value() {
        for ok in [
            "0",
            "-0",
            "1",
            "-1",
            "0.1",
            "99.99",
            "1e2",
            "1E+2",
            "100.000",
            "0.30000000000000004",
            "1e308",
            "2.5e-5",
            "18446744073709551615",
            "-9223372036854775808",
            "1e20",
            "0e99999999999999999999",
            "5e-324",
        ] {
            assert_eq!(check(ok.as_bytes()), Ok(()), "{ok}");
        }
        for bad in [
            "100.0000000000000001",
            "12345678901234567890123",
            "1e-400",
            "99.99999999999999999",
            "18446744073709551616",
            "0.1000000000000000055511151231257827",
            "2e-324",
        ] {
            assert!(matches!(check(bad.as_bytes()), Err(Strictness::InexactNumber { .. })), "{bad}");
        }
        match check(br#"{"a":[1,{"price":100.0000000000000001}]}"#) {
            Err(Strictness::InexactNumber { pointer, number }) => {
                assert_eq!((pointer.as_str(), number.as_str()), ("/a/1/price", "100.0000000000000001"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_double_a_json_library_writes_passes() {
        // Doubles from all over the range, written by serde_json (ryu), whose 17-digit forms
        // may differ from Rust's own shortest form in the last digit.
        let mut bits: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            let double = f64::from_bits(bits);
            if double.is_finite() {
                let text = serde_json::to_string(&double).expect("finite");
                assert_eq!(check(text.as_bytes()), Ok(()), "{text}");
            }
        }
        assert_eq!(check(b"1658206780088562.2"), Ok(()));
    }

    #[test]
    fn decimals_compare_by_value() {
        let d = |s| Decimal::parse(s).expect("parses");
        assert_eq!(d("1.5"), d("15e-1"));
        assert_eq!(d("100"), d("1e2"));
        assert_eq!(d("0.00120"), d("1.2e-3"));
        assert_eq!(d("-0.0"), d("0e0"));
        assert_eq!(d("-12.50e1"), Decimal { negative: true, digits: b"125".to_vec(), exponent: 0 });
        assert_ne!(d("-1"), d("1"));
        assert_ne!(d("1.01"), d("1.1"));
        assert_ne!(d("101"), d("1.1e2"));
        assert_eq!(Decimal::parse(".5"), None);
    }
}
