//! Transformation functions for ModSecurity.

mod decode;
mod encode;
mod normalize;
mod pipeline;

pub use decode::*;
pub use encode::*;
pub use normalize::*;
pub use pipeline::TransformationPipeline;

use crate::error::{Error, Result};
use std::borrow::Cow;
use std::sync::Arc;

use crate::operators::ByteSet;

/// Trait for transformations.
pub trait Transformation: Send + Sync {
    /// Apply the transformation.
    fn transform<'a>(&self, input: &'a str) -> Cow<'a, str>;

    /// Get the transformation name.
    fn name(&self) -> &'static str;

    /// Whether, for every input made only of bytes in `alphabet`, the output is a substring of
    /// the input up to ASCII case (the input itself, usually). A prefilter may then judge the
    /// input in place of the output: the output has no byte and, compared ASCII-case-
    /// insensitively, no substring that the input has not. `false` when unknown.
    fn keeps_substring_over(&self, _alphabet: &ByteSet) -> bool {
        false
    }

    /// Whether, for every input made only of bytes in `alphabet` (ASCII, closed under ASCII
    /// case, with the space), the output is made only of bytes in `alphabet` too. `false` when
    /// unknown.
    fn keeps_within(&self, alphabet: &ByteSet) -> bool {
        self.keeps_substring_over(alphabet)
    }
}

/// ASCII.
const ASCII: ByteSet = ByteSet::of(&[]).with_range(0, 127);

/// Create a transformation from a name.
pub fn create_transformation(name: &str) -> Result<Arc<dyn Transformation>> {
    match name.to_lowercase().as_str() {
        // Decoding
        "urldecode" => Ok(Arc::new(UrlDecode)),
        "urldecodeuni" => Ok(Arc::new(UrlDecodeUni)),
        "base64decode" => Ok(Arc::new(Base64Decode)),
        "base64decodeext" => Ok(Arc::new(Base64DecodeExt)),
        "hexdecode" => Ok(Arc::new(HexDecode)),
        "htmlentitydecode" => Ok(Arc::new(HtmlEntityDecode)),
        "jsdecode" => Ok(Arc::new(JsDecode)),
        "cssdecode" => Ok(Arc::new(CssDecode)),

        // Encoding
        "base64encode" => Ok(Arc::new(Base64Encode)),
        "hexencode" => Ok(Arc::new(HexEncode)),
        "urlencode" => Ok(Arc::new(UrlEncode)),

        // Normalization
        "lowercase" => Ok(Arc::new(Lowercase)),
        "uppercase" => Ok(Arc::new(Uppercase)),
        "compresswhitespace" => Ok(Arc::new(CompressWhitespace)),
        "removewhitespace" => Ok(Arc::new(RemoveWhitespace)),
        "removenulls" => Ok(Arc::new(RemoveNulls)),
        "replacenulls" => Ok(Arc::new(ReplaceNulls)),
        "trim" => Ok(Arc::new(Trim)),
        "trimleft" => Ok(Arc::new(TrimLeft)),
        "trimright" => Ok(Arc::new(TrimRight)),
        // CRS uses the British spelling (normalise*); accept both.
        "normalizepath" | "normalisepath" => Ok(Arc::new(NormalizePath)),
        "normalizepathwin" | "normalisepathwin" => Ok(Arc::new(NormalizePathWin)),
        "removecomments" => Ok(Arc::new(RemoveComments)),
        "replacecomments" => Ok(Arc::new(ReplaceComments)),
        "cmdline" => Ok(Arc::new(CmdLine)),
        "removecommentschar" => Ok(Arc::new(RemoveCommentsChar)),

        // Hashing
        "md5" => Ok(Arc::new(Md5)),
        "sha1" => Ok(Arc::new(Sha1)),

        // Special
        "length" => Ok(Arc::new(Length)),
        "none" => Ok(Arc::new(None_)),

        // Additional CRS transformations
        "sqlhexdecode" => Ok(Arc::new(SqlHexDecode)),
        "utf8tounicode" => Ok(Arc::new(Utf8ToUnicode)),
        "escapeseqdecode" => Ok(Arc::new(EscapeSeqDecode)),
        "parityeven7bit" | "parityodd7bit" | "parityzero7bit" => {
            Ok(Arc::new(None_)) // Placeholder - pass through
        }
        "sha256" => Ok(Arc::new(Sha256)),

        _ => Err(Error::UnknownTransformation {
            name: name.to_string(),
        }),
    }
}

/// None transformation (clears the transformation chain).
pub struct None_;

impl Transformation for None_ {
    fn transform<'a>(&self, input: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(input)
    }

    fn name(&self) -> &'static str {
        "none"
    }

    fn keeps_substring_over(&self, _alphabet: &ByteSet) -> bool {
        true
    }
}

/// Length transformation (returns the length of the input).
pub struct Length;

impl Transformation for Length {
    fn transform<'a>(&self, input: &'a str) -> Cow<'a, str> {
        Cow::Owned(input.len().to_string())
    }

    fn name(&self) -> &'static str {
        "length"
    }

    /// A decimal number.
    fn keeps_within(&self, alphabet: &ByteSet) -> bool {
        alphabet.contains_all(b"0123456789")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `keeps_substring_over` and `keeps_within` claim, checked on many inputs over
    /// alphabets of the kind a prefilter uses (ASCII, closed under case, with the space), with
    /// and without the bytes that start an encoding.
    #[test]
    fn what_a_transformation_says_it_keeps_holds() {
        let letters = ByteSet::ALPHANUMERIC.with(b" ");
        let alphabets = [
            letters.with(b"_-."),
            letters.with(b"_-.,@+:"),
            letters.with(b"_-.,@+:/;=*"),
            letters.with(b"/\\.%&"),
            letters.with(b"\t\n#*-/\\'\",;^("),
        ];
        let names = [
            "urlDecode",
            "urlDecodeUni",
            "base64Decode",
            "hexDecode",
            "htmlEntityDecode",
            "jsDecode",
            "cssDecode",
            "base64Encode",
            "hexEncode",
            "urlEncode",
            "lowercase",
            "uppercase",
            "compressWhitespace",
            "removeWhitespace",
            "removeNulls",
            "replaceNulls",
            "trim",
            "trimLeft",
            "trimRight",
            "normalizePath",
            "normalizePathWin",
            "removeComments",
            "replaceComments",
            "cmdLine",
            "removeCommentsChar",
            "md5",
            "sha1",
            "length",
            "none",
            "sqlHexDecode",
            "utf8toUnicode",
            "escapeSeqDecode",
            "sha256",
        ];
        let mut seed: u64 = 7;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let mut claims = 0;
        for name in names {
            let t = create_transformation(name).unwrap();
            for alphabet in &alphabets {
                let bytes: Vec<u8> = (0..=127u8).filter(|&b| alphabet.contains(b)).collect();
                let (substring, within) =
                    (t.keeps_substring_over(alphabet), t.keeps_within(alphabet));
                claims += usize::from(substring) + usize::from(within);
                for _ in 0..400 {
                    let input: String = (0..next(24))
                        .map(|_| bytes[next(bytes.len())] as char)
                        .collect();
                    let output = t.transform(&input);
                    if substring {
                        let (out, inp) = (output.to_ascii_lowercase(), input.to_ascii_lowercase());
                        assert!(
                            inp.contains(&out),
                            "{name}: {output:?} is not a substring of {input:?}"
                        );
                    }
                    if within {
                        assert!(
                            alphabet.contains_all(output.as_bytes()),
                            "{name}: {output:?} left the alphabet of {input:?}"
                        );
                    }
                }
            }
        }
        assert!(claims > 40, "{claims}");
    }
}
