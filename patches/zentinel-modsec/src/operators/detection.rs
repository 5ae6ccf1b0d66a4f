//! Detection operators (@detectSQLi, @detectXSS).
//!
//! These use our pure Rust libinjection implementation.

use super::traits::{ByteSet, Operator, OperatorResult};
use crate::libinjection;

/// SQL injection detection operator (@detectSQLi).
pub struct DetectSqliOperator;

impl Operator for DetectSqliOperator {
    fn execute(&self, value: &str) -> OperatorResult {
        let result = libinjection::sqli::detect_sqli(value);
        if result.is_injection {
            OperatorResult::matched(result.fingerprint.unwrap_or_default())
        } else {
            OperatorResult::no_match()
        }
    }

    fn name(&self) -> &'static str {
        "detectSQLi"
    }

    /// The detector's first check: a value it flags contains one of these, after lowercasing
    /// with Unicode's rules (hence ASCII values only).
    fn required_literals(&self) -> Option<Vec<Vec<u8>>> {
        indicator_literals(&libinjection::sqli::INDICATORS)
    }

    fn literals_hold_for_ascii_only(&self) -> bool {
        true
    }
}

/// XSS detection operator (@detectXSS).
pub struct DetectXssOperator;

impl Operator for DetectXssOperator {
    fn execute(&self, value: &str) -> OperatorResult {
        let result = libinjection::xss::detect_xss(value);
        if result.is_injection {
            OperatorResult::matched(result.fingerprint.unwrap_or_default())
        } else {
            OperatorResult::no_match()
        }
    }

    fn name(&self) -> &'static str {
        "detectXSS"
    }

    /// The detector's first check, compared as the prefilter compares (ASCII case ignored).
    fn required_literals(&self) -> Option<Vec<Vec<u8>>> {
        indicator_literals(&libinjection::xss::INDICATORS)
    }

    fn matches_nothing_over(&self, alphabet: &ByteSet) -> bool {
        !libinjection::xss::INDICATORS
            .iter()
            .any(|i| alphabet.contains_all_ignoring_ascii_case(i.as_bytes()))
    }
}

/// A detector's indicator list as the prefilter's literals.
fn indicator_literals(indicators: &[&str]) -> Option<Vec<Vec<u8>>> {
    Some(indicators.iter().map(|i| i.as_bytes().to_vec()).collect())
}
