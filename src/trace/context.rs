//! W3C Trace Context (`traceparent`, `tracestate`, Level 1): what a request arrives with, what
//! the gateway passes on, and the sampling decision. Pure functions over bytes: the client
//! controls these headers, so nothing here trusts them beyond the specification's grammar.

use opentelemetry::trace::{SpanId, TraceId};

/// The `traceparent` header.
pub(crate) const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// The `tracestate` header.
pub(crate) const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// Lower-case hex digits.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lower-case hex into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
}

/// Longest `tracestate` passed on (the specification's own bound: 512 characters).
const MAX_TRACESTATE: usize = 512;
/// Most `tracestate` list members.
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The caller's span, from a valid `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parent {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    /// The caller recorded its span (flag `01`).
    pub(crate) sampled: bool,
}

/// A `traceparent` value, or `None` when it does not follow the grammar: version `ff`, an
/// all-zero id, upper-case hex, wrong lengths, or (for version `00`) anything after the flags.
/// A later version is read for its first four fields, as the specification asks.
pub(crate) fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    let value = value.trim_ascii();
    if value.len() < 55 {
        return None;
    }
    let (version, rest) = (hex_bytes::<1>(&value[..2])?[0], &value[2..]);
    if version == 0xff || (version == 0 && value.len() != 55) || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    if rest[0] != b'-' || rest[33] != b'-' || rest[50] != b'-' {
        return None;
    }
    let trace_id = TraceId::from_bytes(hex_bytes::<16>(&rest[1..33])?);
    let span_id = SpanId::from_bytes(hex_bytes::<8>(&rest[34..50])?);
    let flags = hex_bytes::<1>(&rest[51..53])?[0];
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some(Parent { trace_id, span_id, sampled: flags & 1 == 1 })
}

/// Lower-case hex digits into `N` bytes (`None` for anything else, upper case included).
fn hex_bytes<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// The `traceparent` the gateway sends: version 00, `span_id` as the parent of whatever the
/// receiver does next, and the sampling decision. Every proxied request pays for this, so it
/// is written into a fixed buffer rather than formatted.
pub(crate) fn format_traceparent(trace_id: TraceId, span_id: SpanId, sampled: bool) -> [u8; 55] {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(&trace_id.to_bytes(), &mut out[3..35]);
    hex_into(&span_id.to_bytes(), &mut out[36..52]);
    if sampled {
        out[54] = b'1';
    }
    out
}

/// `tracestate` header lines (joined with commas, in order) when they make a list the
/// gateway can pass on unchanged: visible ASCII, at most 512 characters and 32 members, each
/// `key=value`. Anything else is dropped, which the specification allows.
pub(crate) fn tracestate<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let mut joined = String::new();
    for line in lines {
        let line = std::str::from_utf8(line).ok()?.trim();
        if line.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(line);
        if joined.len() > MAX_TRACESTATE {
            return None;
        }
    }
    let members = joined.split(',').map(str::trim).filter(|m| !m.is_empty());
    let mut count = 0;
    for member in members {
        count += 1;
        let (key, value) = member.split_once('=')?;
        if count > MAX_TRACESTATE_MEMBERS || key.is_empty() || value.is_empty() {
            return None;
        }
    }
    let visible = joined.bytes().all(|b| (0x20..0x7f).contains(&b));
    (count > 0 && visible).then_some(joined)
}

/// The sampling decision of a request: the caller's when there is one (parent-based), else
/// `ratio` of new traces, decided by the trace id so every gateway decides alike.
pub(crate) fn sampled(parent: Option<&Parent>, trace_id: TraceId, ratio: f64) -> bool {
    match parent {
        Some(p) => p.sampled,
        None if ratio >= 1.0 => true,
        None if ratio <= 0.0 => false,
        None => {
            let low = u64::from_be_bytes(trace_id.to_bytes()[8..].try_into().unwrap_or_default()) >> 1;
            (low as f64) < ratio * (1u64 << 63) as f64
        }
    }
}

/// A new trace id (never the invalid all-zero one).
pub(crate) fn new_trace_id() -> TraceId {
    TraceId::from_bytes(rand::random::<u128>().max(1).to_be_bytes())
}

/// A new span id (never the invalid all-zero one).
pub(crate) fn new_span_id() -> SpanId {
    SpanId::from_bytes(rand::random::<u64>().max(1).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let p = parse_traceparent(VALID.as_bytes()).expect("valid");
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id.to_string(), "00f067aa0ba902b7");
        assert!(p.sampled);
        let unsampled = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid");
        assert!(!unsampled.sampled);
        // Surrounding blanks are tolerated; other flag bits are ignored.
        assert!(parse_traceparent(format!(" {VALID}\t").as_bytes()).is_some());
        assert!(parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").unwrap().sampled);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        let bad = [
            "",
            "00",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for value in bad {
            assert_eq!(parse_traceparent(value.as_bytes()), None, "{value:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_for_its_known_fields() {
        let p = parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next");
        assert!(p.is_some_and(|p| p.sampled));
        assert!(parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
    }

    #[test]
    fn formatted_traceparents_read_back() {
        let (t, s) = (new_trace_id(), new_span_id());
        for sampled in [true, false] {
            let text = format_traceparent(t, s, sampled);
            let expected = format!("00-{t}-{s}-{}", if sampled { "01" } else { "00" });
            assert_eq!(std::str::from_utf8(&text), Ok(expected.as_str()));
            assert_eq!(parse_traceparent(&text), Some(Parent { trace_id: t, span_id: s, sampled }));
        }
    }

    #[test]
    fn tracestate_is_passed_on_only_when_well_formed() {
        fn lines(v: &[&str]) -> Option<String> {
            tracestate(v.iter().map(|s| s.as_bytes()))
        }
        assert_eq!(
            lines(&["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"]).as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        assert_eq!(lines(&[]), None);
        assert_eq!(lines(&["novalue"]), None);
        assert_eq!(lines(&["a=1\u{7f}"]), None);
        let long = format!("k={}", "v".repeat(600));
        assert_eq!(lines(&[long.as_str()]), None);
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(tracestate(std::iter::once(many.join(",").as_bytes())), None);
    }

    #[test]
    fn sampling_follows_the_parent_then_the_ratio() {
        let parent = |sampled| Parent { trace_id: new_trace_id(), span_id: new_span_id(), sampled };
        assert!(sampled(Some(&parent(true)), new_trace_id(), 0.0));
        assert!(!sampled(Some(&parent(false)), new_trace_id(), 1.0));
        assert!(sampled(None, new_trace_id(), 1.0));
        assert!(!sampled(None, new_trace_id(), 0.0));
        let hits = (0..20_000).filter(|_| sampled(None, new_trace_id(), 0.25)).count();
        assert!((4_000..6_000).contains(&hits), "{hits} of 20000 at 0.25");
    }
}
