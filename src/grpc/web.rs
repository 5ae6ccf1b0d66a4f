//! gRPC-Web (PROTOCOL-WEB) ↔ gRPC: the content types, the base64 body of the `-text` form in
//! both directions (decoded and encoded in whatever chunks arrive), and the trailer frame
//! (flag 0x80) that carries a call's trailers in the response body. Messages are framed as in
//! gRPC, so the binary form passes through unchanged.

use super::frame::{self, TRAILERS};
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

const GRPC_WEB: &str = "application/grpc-web";
const GRPC_WEB_TEXT: &str = "application/grpc-web-text";

/// Which gRPC-Web form a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/grpc-web[+proto]`: frames as in gRPC.
    Binary,
    /// `application/grpc-web-text[+proto]`: the frames in base64.
    Text,
}

/// The gRPC-Web form of a request's `Content-Type`, `None` when it is not gRPC-Web.
pub fn encoding(content_type: &str) -> Option<Encoding> {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let (base, _suffix) = essence.split_once('+').unwrap_or((essence, ""));
    if base.eq_ignore_ascii_case(GRPC_WEB_TEXT) {
        Some(Encoding::Text)
    } else if base.eq_ignore_ascii_case(GRPC_WEB) {
        Some(Encoding::Binary)
    } else {
        None
    }
}

/// The `Content-Type` the gRPC backend gets: `application/grpc` with the request's message
/// format suffix (`+proto`, `+json`) kept.
pub fn upstream_content_type(content_type: &str) -> String {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    match essence.split_once('+') {
        Some((_, suffix)) => format!("application/grpc+{}", suffix.to_ascii_lowercase()),
        None => "application/grpc".to_string(),
    }
}

/// The `Content-Type` of the gRPC-Web answer for the backend's `Content-Type`.
pub fn response_content_type(upstream: Option<&str>, encoding: Encoding) -> String {
    let suffix = upstream.and_then(|ct| ct.split(';').next()).and_then(|ct| ct.trim().split_once('+')).map(|(_, s)| s);
    let base = match encoding {
        Encoding::Binary => GRPC_WEB,
        Encoding::Text => GRPC_WEB_TEXT,
    };
    format!("{base}+{}", suffix.unwrap_or("proto"))
}

/// Why a `-text` body is not base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the grpc-web-text body is not base64: {0}")]
pub struct TextError(String);

/// Decodes a `-text` request body. Clients may send several base64 chunks, each padded; a
/// quantum of four characters is decoded as soon as it is complete, so chunks may split
/// anywhere.
#[derive(Debug, Default)]
pub struct TextDecoder {
    quantum: Vec<u8>,
}

impl TextDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        TextDecoder { quantum: Vec::with_capacity(4) }
    }

    /// Decode the next chunk; returns the bytes complete so far.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, TextError> {
        let mut out = BytesMut::with_capacity(chunk.len() / 4 * 3 + 3);
        for &c in chunk {
            if c.is_ascii_whitespace() {
                continue;
            }
            self.quantum.push(c);
            if self.quantum.len() == 4 {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(&self.quantum)
                    .map_err(|e| TextError(e.to_string()))?;
                out.put_slice(&decoded);
                self.quantum.clear();
            }
        }
        Ok(out.freeze())
    }

    /// At the end of the body: an error when characters are left over.
    pub fn finish(&self) -> Result<(), TextError> {
        if self.quantum.is_empty() {
            Ok(())
        } else {
            Err(TextError(format!("{} characters after the last complete group", self.quantum.len())))
        }
    }
}

/// Encode one chunk of a `-text` answer: each chunk is base64 on its own, padded, so a
/// streaming client can decode every message as it arrives (PROTOCOL-WEB allows padded chunks).
pub fn encode_text(chunk: &[u8]) -> Bytes {
    Bytes::from(base64::engine::general_purpose::STANDARD.encode(chunk))
}

/// The trailer frame for a call's trailers: flag 0x80, length, then `name:value\r\n` lines
/// with lower-case names. Pseudo-headers and framing headers are left out.
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut block = BytesMut::with_capacity(64);
    for (name, value) in trailers {
        if matches!(name.as_str(), "content-length" | "content-type" | "transfer-encoding" | "te" | "connection") {
            continue;
        }
        block.put_slice(name.as_str().as_bytes());
        block.put_u8(b':');
        block.put_slice(value.as_bytes());
        block.put_slice(b"\r\n");
    }
    frame::encode_bytes(TRAILERS, &block)
}

/// The trailer frame of a trailers-only answer, whose status came in the headers: the
/// `grpc-*` headers are the trailers.
pub fn trailers_only_frame(headers: &HeaderMap) -> Bytes {
    let mut trailers = HeaderMap::new();
    for (name, value) in headers {
        if name.as_str().starts_with("grpc-") {
            trailers.append(name.clone(), value.clone());
        }
    }
    trailer_frame(&trailers)
}

/// Parse a trailer frame's block (a client's side of [`trailer_frame`]).
pub fn parse_trailers(block: &[u8]) -> Option<HeaderMap> {
    let mut out = HeaderMap::new();
    for line in block.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let colon = line.iter().position(|b| *b == b':')?;
        let name = HeaderName::from_bytes(line[..colon].trim_ascii()).ok()?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
        out.append(name, value);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::frame::FrameDecoder;

    #[test]
    fn content_types() {
        assert_eq!(encoding("application/grpc-web"), Some(Encoding::Binary));
        assert_eq!(encoding("application/grpc-web+proto"), Some(Encoding::Binary));
        assert_eq!(encoding("Application/gRPC-Web-Text+proto; charset=x"), Some(Encoding::Text));
        assert_eq!(encoding("application/grpc"), None);
        assert_eq!(encoding("application/grpc-webx"), None);
        assert_eq!(upstream_content_type("application/grpc-web-text"), "application/grpc");
        assert_eq!(upstream_content_type("application/grpc-web+PROTO"), "application/grpc+proto");
        assert_eq!(response_content_type(Some("application/grpc"), Encoding::Text), "application/grpc-web-text+proto");
        assert_eq!(response_content_type(Some("application/grpc+json"), Encoding::Binary), "application/grpc-web+json");
    }

    #[test]
    fn text_bodies_in_padded_chunks_split_anywhere() {
        let first = frame::encode_bytes(0, b"hello");
        let second = frame::encode_bytes(0, &[0xff; 301]);
        // Two separately padded base64 chunks, as browsers send them.
        let mut text = encode_text(&first).to_vec();
        text.extend_from_slice(&encode_text(&second));
        text.extend_from_slice(b"\r\n");
        for split in 1..=text.len().min(64) {
            let mut decoder = TextDecoder::new();
            let mut frames = FrameDecoder::new(1024);
            let mut got = Vec::new();
            for chunk in text.chunks(split) {
                frames.push(&decoder.push(chunk).expect("base64"));
                while let Some(f) = frames.next_frame().expect("frame") {
                    got.push(f.payload);
                }
            }
            decoder.finish().expect("complete");
            frames.finish().expect("complete");
            assert_eq!(got.len(), 2, "split {split}");
            assert_eq!(&got[0][..], b"hello");
            assert_eq!(got[1].len(), 301);
        }
    }

    #[test]
    fn bad_text_is_an_error() {
        assert!(TextDecoder::new().push(b"ab$d").is_err());
        let mut d = TextDecoder::new();
        d.push(b"QUJD").expect("ok");
        d.push(b"QQ").expect("incomplete is fine until the end");
        assert!(d.finish().is_err());
    }

    #[test]
    fn trailer_frames_round_trip() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("3"));
        t.insert("grpc-message", HeaderValue::from_static("bad%20thing"));
        t.insert("x-extra", HeaderValue::from_static("1"));
        let bytes = trailer_frame(&t);
        assert_eq!(bytes[0], 0x80);
        assert_eq!(u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize, bytes.len() - 5);
        let block = std::str::from_utf8(&bytes[5..]).expect("ascii");
        assert!(block.contains("grpc-status:3\r\n") && block.contains("grpc-message:bad%20thing\r\n"), "{block}");
        assert_eq!(parse_trailers(&bytes[5..]), Some(t.clone()));
        let mut headers = t.clone();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        let only = trailers_only_frame(&headers);
        let parsed = parse_trailers(&only[5..]).expect("parses");
        assert_eq!(parsed.len(), 2);
        assert!(parsed.get("x-extra").is_none());
    }
}
