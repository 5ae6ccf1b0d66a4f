//! Bodies a transform must read although the backend (or the client) compressed them.
//!
//! Routes that transform responses ask the backend for `Accept-Encoding: identity`, which
//! costs nothing and leaves compression to the gateway's own `compress` (it sees the
//! transformed body). A backend may ignore the request, so a coded body is decoded here,
//! with the codecs Pingora's compression module already links (flate2, brotli, zstd), and
//! bounded: at most `limit` bytes come out whatever comes in, so a small bomb (a few KiB that
//! expand to gigabytes) stops at the bound, and the zstd window a frame may ask for is capped
//! so a hostile frame header cannot make the decoder allocate far more than the bound.

use std::io::Read;

/// Why a coded body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// A coding this gateway does not decode.
    #[error("the content coding `{0}` is not one the gateway decodes (gzip, br, zstd, deflate)")]
    Unsupported(String),
    /// More than `limit` bytes once decoded.
    #[error("the body is larger than {limit} bytes once decoded")]
    TooLarge {
        /// The bound.
        limit: usize,
    },
    /// Not a valid stream of its coding.
    #[error("the {coding} body is corrupt: {reason}")]
    Corrupt {
        /// The coding.
        coding: &'static str,
        /// The decoder's words.
        reason: String,
    },
}

/// The most codings stacked on one body (`Content-Encoding: gzip, br`); more is refused.
const MAX_CODINGS: usize = 2;

/// Whether a `Content-Encoding` value asks for nothing to be decoded.
pub(crate) fn is_identity(content_encoding: &str) -> bool {
    content_encoding.split(',').all(|c| {
        let c = c.trim();
        c.is_empty() || c.eq_ignore_ascii_case("identity")
    })
}

/// `body` decoded by every coding of a `Content-Encoding` value (the last applied first),
/// at most `limit` bytes.
pub(crate) fn decode(content_encoding: &str, body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let codings: Vec<&str> = content_encoding
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        .collect();
    if codings.len() > MAX_CODINGS {
        return Err(DecodeError::Unsupported(content_encoding.trim().to_string()));
    }
    let mut current = std::borrow::Cow::Borrowed(body);
    for coding in codings.iter().rev() {
        current = std::borrow::Cow::Owned(decode_one(coding, &current, limit)?);
    }
    if current.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(current.into_owned())
}

fn decode_one(coding: &str, body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let lower = coding.to_ascii_lowercase();
    let (name, reader): (&'static str, Box<dyn Read + '_>) = match lower.as_str() {
        "gzip" | "x-gzip" => ("gzip", Box::new(flate2::read::MultiGzDecoder::new(body))),
        "deflate" => ("deflate", Box::new(flate2::read::ZlibDecoder::new(body))),
        "br" => ("br", Box::new(brotli::Decompressor::new(body, 4096))),
        "zstd" => {
            let mut decoder = zstd::stream::read::Decoder::new(body).map_err(|e| corrupt("zstd", e))?;
            decoder.window_log_max(zstd_window_log(limit)).map_err(|e| corrupt("zstd", e))?;
            ("zstd", Box::new(decoder))
        }
        _ => return Err(DecodeError::Unsupported(coding.to_string())),
    };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit.saturating_add(1)));
    // One byte past the bound tells "exactly at the bound" from "over it".
    reader.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| corrupt(name, e))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
}

/// The largest zstd window accepted: what the bound needs, at least 8 MiB (RFC 8878 §3.1.1.1.2
/// asks decoders to support that much, and encoders choose it for streams of unknown size), at
/// most 128 MiB (zstd's own default cap).
fn zstd_window_log(limit: usize) -> u32 {
    let needed = usize::BITS - limit.saturating_sub(1).leading_zeros();
    needed.clamp(23, 27)
}

fn corrupt(coding: &'static str, e: std::io::Error) -> DecodeError {
    DecodeError::Corrupt { coding, reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TEXT: &[u8] = br#"{"id": 1, "items": [1, 2, 3], "note": "compressible compressible compressible"}"#;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).expect("write");
        }
        out
    }

    #[test]
    fn every_coding_decodes() {
        let mut deflate = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        deflate.write_all(TEXT).expect("write");
        let deflate = deflate.finish().expect("finish");
        let zstd = zstd::encode_all(TEXT, 3).expect("zstd");
        for (coding, body) in
            [("gzip", gzip(TEXT)), ("x-gzip", gzip(TEXT)), ("br", brotli(TEXT)), ("zstd", zstd), ("Deflate", deflate)]
        {
            assert_eq!(decode(coding, &body, 1 << 20).expect(coding), TEXT, "{coding}");
        }
        // Stacked codings: the last applied is undone first.
        assert_eq!(decode("gzip, br", &brotli(&gzip(TEXT)), 1 << 20).expect("both"), TEXT);
        assert_eq!(decode("identity", TEXT, 1 << 20).expect("identity"), TEXT);
        assert!(is_identity("identity") && is_identity("") && !is_identity("gzip"));
    }

    #[test]
    fn bombs_stop_at_the_bound() {
        let zeros = vec![0u8; 8 << 20];
        for (coding, body) in
            [("gzip", gzip(&zeros)), ("br", brotli(&zeros)), ("zstd", zstd::encode_all(&zeros[..], 3).expect("zstd"))]
        {
            assert!(body.len() < 64 << 10, "{coding}: {} bytes", body.len());
            assert_eq!(decode(coding, &body, 1 << 20), Err(DecodeError::TooLarge { limit: 1 << 20 }), "{coding}");
        }
        // Exactly at the bound is fine.
        assert_eq!(decode("gzip", &gzip(TEXT), TEXT.len()).expect("at the bound").len(), TEXT.len());
    }

    #[test]
    fn unknown_stacked_or_corrupt_codings_are_refused() {
        assert_eq!(decode("compress", TEXT, 1 << 20), Err(DecodeError::Unsupported("compress".into())));
        assert!(matches!(decode("gzip, gzip, gzip", TEXT, 1 << 20), Err(DecodeError::Unsupported(_))));
        for coding in ["gzip", "br", "zstd", "deflate"] {
            assert!(matches!(decode(coding, TEXT, 1 << 20), Err(DecodeError::Corrupt { .. })), "{coding}");
        }
        let truncated = gzip(TEXT);
        assert!(decode("gzip", &truncated[..truncated.len() - 4], 1 << 20).is_err());
    }

    #[test]
    fn the_zstd_window_follows_the_bound() {
        assert_eq!(zstd_window_log(1 << 20), 23);
        assert_eq!(zstd_window_log((16 << 20) + 1), 25);
        assert_eq!(zstd_window_log(usize::MAX), 27);
    }
}
