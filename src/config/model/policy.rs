//! Edge policies of a route as the file states them, parsed once: header rules and their value
//! templates, CORS, compression. `policy` applies them per request.

use http::{HeaderName, HeaderValue};

/// A piece of a header value template.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Text as written.
    Text(String),
    /// The request id.
    RequestId,
    /// The client IP (after `trusted_proxies`).
    ClientIp,
    /// The route's label.
    Route,
    /// Milliseconds since the request started.
    DurationMs,
    /// A verified JWT claim (empty when absent or anonymous).
    Claim(String),
    /// The consumer's tenant (docs/plans.md "Tenant isolation"; empty without one).
    Tenant,
}

/// A header value with variables, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(pub Vec<Piece>);

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateError {
    /// `$something` that is not a known variable.
    #[error("unknown variable `${0}` (known: $request_id, $client_ip, $route, $duration_ms, $tenant, $claim_<name>)")]
    UnknownVariable(String),
    /// Bytes a header value cannot hold.
    #[error("text a header value cannot hold (control characters)")]
    NotHeaderText,
}

impl Template {
    /// Parse a header value template: [`Template::parse_text`] over text a header can hold.
    pub(crate) fn parse(text: &str) -> Result<Self, TemplateError> {
        if HeaderValue::from_str(&text.replace('$', "")).is_err() {
            return Err(TemplateError::NotHeaderText);
        }
        Self::parse_text(text)
    }

    /// Parse `text` (any text: body templates hold what a JSON string can): `$name` runs of
    /// `[A-Za-z0-9_.]` are variables, `$$` is a literal `$`.
    pub(crate) fn parse_text(text: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c != '$' {
                literal.push(c);
                continue;
            }
            if chars.peek().is_some_and(|(_, n)| *n == '$') {
                chars.next();
                literal.push('$');
                continue;
            }
            let start = i + 1;
            let mut end = start;
            while let Some((j, n)) = chars.peek().copied() {
                if n.is_ascii_alphanumeric() || n == '_' || n == '.' {
                    end = j + n.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let name = &text[start..end];
            let piece = match name {
                "request_id" => Piece::RequestId,
                "client_ip" => Piece::ClientIp,
                "route" => Piece::Route,
                "duration_ms" => Piece::DurationMs,
                "tenant" => Piece::Tenant,
                _ => match name.strip_prefix("claim_").filter(|c| !c.is_empty()) {
                    Some(claim) => Piece::Claim(claim.to_string()),
                    None => return Err(TemplateError::UnknownVariable(name.to_string())),
                },
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }
}

/// The rules for one direction of one route.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderRules {
    /// Replace (or create) these headers.
    pub set: Vec<(HeaderName, Template)>,
    /// Append these values (kept beside existing ones).
    pub add: Vec<(HeaderName, Template)>,
    /// Remove these headers.
    pub remove: Vec<HeaderName>,
}

impl HeaderRules {
    /// No rule at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Which origins a route accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Origins {
    /// Any origin (`*`); never with credentials.
    Any,
    /// Exactly these (`scheme://host[:port]`, lower-case).
    List(Vec<HeaderValue>),
}

/// A route's CORS policy, with its header values built once.
#[derive(Debug, Clone, PartialEq)]
pub struct CorsSettings {
    /// Accepted origins.
    pub origins: Origins,
    /// `Access-Control-Allow-Methods`.
    pub methods: HeaderValue,
    /// `Access-Control-Allow-Headers` (none: only CORS-safelisted request headers).
    pub headers: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers`.
    pub expose: Option<HeaderValue>,
    /// `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
    /// `Access-Control-Max-Age` (seconds).
    pub max_age: Option<HeaderValue>,
}

/// An encoding Siger produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `zstd`.
    Zstd,
    /// `br`.
    Brotli,
    /// `gzip`.
    Gzip,
}

impl Encoding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Zstd => "zstd",
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// From a token (case-insensitive).
    pub fn from_token(t: &str) -> Option<Self> {
        [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip].into_iter().find(|e| e.token().eq_ignore_ascii_case(t))
    }
}

/// A route's compression.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressSettings {
    /// Encodings offered, most preferred first.
    pub encodings: Vec<Encoding>,
    /// Responses smaller than this (by `Content-Length`) are sent as they are.
    pub min_size: u64,
    /// Levels: zstd, br, gzip.
    pub levels: [u32; 3],
}

impl Default for CompressSettings {
    fn default() -> Self {
        CompressSettings {
            encodings: vec![Encoding::Zstd, Encoding::Brotli, Encoding::Gzip],
            min_size: 1024,
            levels: [3, 4, 6],
        }
    }
}

impl CompressSettings {
    /// The level of `e`.
    pub fn level(&self, e: Encoding) -> u32 {
        match e {
            Encoding::Zstd => self.levels[0],
            Encoding::Brotli => self.levels[1],
            Encoding::Gzip => self.levels[2],
        }
    }
}
