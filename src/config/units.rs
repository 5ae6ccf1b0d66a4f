//! Leaf value types of the config file: durations, byte sizes and the YAML forms that hold them.
//!
//! The grammar is the contract of ARCHITECTURE.md §6: durations are one or more `<int><unit>`
//! (`ms s m h d`, e.g. `1m30s`), sizes are bytes or `<int><unit>` with binary (`KiB MiB GiB`) or
//! decimal (`KB MB GB`) units. A bare number is never a duration: `timeout: 30` is ambiguous
//! (seconds? milliseconds?) and operators get it wrong under pressure, so it is rejected.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A duration written as `250ms`, `5s`, `1m30s`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ConfDuration(pub Duration);

/// A byte size written as `512KiB`, `10MiB`, `1MB` or a plain integer of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ByteSize(pub u64);

/// The longest duration any setting accepts. Timers add durations to "now"; an absurd value
/// would overflow that sum inside a background task instead of failing here, at `-t`.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// Parse a duration such as `1m30s`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. `500ms`, `5s`, `1m30s`".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` has no unit; write e.g. `{s}s` or `{s}ms` (units: ms, s, m, h, d)"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("`{s}` is not a duration (expected <number><unit>, e.g. `5s`)"));
        }
        let value: u64 = rest[..digits].parse().map_err(|_| format!("`{s}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "d" => Duration::from_secs(value.saturating_mul(86_400)),
            "" => return Err(format!("`{s}`: `{value}` has no unit (units: ms, s, m, h, d)")),
            other => return Err(format!("`{s}`: unknown unit `{other}` (units: ms, s, m, h, d)")),
        };
        total = total.checked_add(part).ok_or_else(|| format!("`{s}`: duration too large"))?;
    }
    if total > MAX_DURATION {
        return Err(format!("`{s}` is longer than 3650d, the longest duration a setting accepts"));
    }
    Ok(total)
}

/// Parse a size such as `10MiB`.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!("`{s}` is not a size (expected e.g. `512KiB`, `10MiB`, `1048576`)"));
    }
    let value: u64 = s[..digits].parse().map_err(|_| format!("`{s}`: number too large"))?;
    let multiplier: u64 = match s[digits..].trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("`{s}`: unknown unit `{other}` (units: B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    value.checked_mul(multiplier).ok_or_else(|| format!("`{s}`: size too large"))
}

impl<'de> Deserialize<'de> for ConfDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as `500ms`, `5s` or `1m30s`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(ConfDuration).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Err(E::custom(format!("`{v}` has no unit; write e.g. `{v}s` or `{v}ms` (units: ms, s, m, h, d)")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Err(E::custom(format!("`{v}` is not a duration")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Err(E::custom(format!("`{v}` is not a duration; write e.g. `1500ms`")))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as `512KiB`, `10MiB` or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom(format!("`{v}`: a size cannot be negative")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h1ms"), Ok(Duration::from_millis(3_600_001)));
        assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION));
        for bad in ["", "30", "5 s", "s", "5x", "1.5s", "-1s", "5sec", "3651d", "99999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("100B"), Ok(100));
        for bad in ["", "MiB", "10mb", "1.5MiB", "10 TiB", "99999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
