//! Request heads read before a session exists: where one ends, how many fields it has, and
//! the answer to one that cannot be served.

use super::*;

/// The HTTP/2 client preface (RFC 9113 §3.4), which opens an h2c connection.
pub(crate) const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Header fields Pingora parses in a request head (its `MAX_HEADERS`); a head with more gets
/// Pingora's bare 400, so the gate answers it first.
pub(super) const MAX_HEADER_FIELDS: usize = 256;

/// Drop the empty lines before a request line ("\r\n" or "\n"; RFC 9112 §2.2 lets a server
/// skip them, as httparse does), so that they cannot pass for the end of the head. A lone
/// "\r" is kept until what follows it arrives. Returns how many bytes were dropped.
pub(crate) fn skip_empty_lines(head: &mut BytesMut) -> usize {
    use bytes::Buf;
    let mut skipped = 0;
    loop {
        let n = match head.first() {
            Some(b'\n') => 1,
            Some(b'\r') if head.get(1) == Some(&b'\n') => 2,
            _ => return skipped,
        };
        head.advance(n);
        skipped += n;
    }
}

/// Where the head that starts `head` (its request line first: see [`skip_empty_lines`]) ends,
/// just past its empty line ("\n\n" or "\n\r\n", as httparse ends one), if it holds it. The
/// first `looked_at` bytes were looked at already and hold no end.
pub(crate) fn head_end(head: &[u8], looked_at: usize) -> Option<usize> {
    // Two bytes back, so an end split across reads is found.
    let from = looked_at.saturating_sub(2).min(head.len());
    memchr::memchr_iter(b'\n', &head[from..]).find_map(|at| {
        let after = &head[from + at + 1..];
        if after.starts_with(b"\n") {
            Some(from + at + 2)
        } else if after.starts_with(b"\r\n") {
            Some(from + at + 3)
        } else {
            None
        }
    })
}

/// Whether a whole head has more header fields than Pingora parses: every line but the request
/// line and the empty one is a field (httparse refuses folded lines), and a field line takes at
/// least three bytes, so shorter heads are not counted.
pub(super) fn too_many_fields(head: &[u8]) -> bool {
    head.len() > MAX_HEADER_FIELDS * 3 && memchr::memchr_iter(b'\n', head).count() > MAX_HEADER_FIELDS + 2
}

/// The head buffer's first size: Pingora's own for a request head.
pub(super) const HEAD_BUFFER: usize = 4096;

/// The bytes of an answer the stream writes itself, before any Pingora session exists for the
/// request (a head cut at `header_timeout` or past `max_header_bytes`).
pub(super) fn early_answer(error: GatewayError) -> Vec<u8> {
    error.answer(&forwarding::new_request_id()).to_http1()
}
