//! The harness's one HTTP/1 message reader, for the responses tests receive and the requests
//! their fake servers (Consul, the JWKS server, the OTLP receiver) receive. Heads are parsed by
//! `httparse`; bodies are delimited as RFC 9112 §6.3 says: none for the answer to `HEAD` and for
//! 1xx, 204 and 304; `Transfer-Encoding: chunked` (with trailers) before `Content-Length`; a
//! response with neither runs until the connection closes, a request with neither has none.
//!
//! Readers take a [`BufRead`] and never read past the message, so a caller that keeps its
//! buffered reader can read the next message of a keep-alive or pipelined connection.
//! `Ok(None)` means the peer closed the connection before sending a byte of a message.
//!
//! Named `http1` rather than `http`: test files glob-import `support::*` and use the `http`
//! crate.

use std::io::{self, BufRead, Read};

/// The most a head may take (start line and header fields).
const MAX_HEAD: usize = 1 << 20;
const MAX_HEADERS: usize = 256;

/// Header fields in the order received, names as sent.
pub type Fields = Vec<(String, String)>;

/// A response, its body de-chunked.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// The minor version: `1` for HTTP/1.1.
    pub version: u8,
    pub headers: Fields,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Fields,
}

/// A request, its body de-chunked.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent (`/v1/health/service/a?index=3`).
    pub target: String,
    /// The target before `?`, not decoded.
    pub path: String,
    /// The target after `?`, not decoded; empty without one.
    pub query: String,
    /// The minor version: `1` for HTTP/1.1.
    pub version: u8,
    pub headers: Fields,
    pub body: Vec<u8>,
    pub trailers: Fields,
}

/// How a message's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The first field named `name` (case-insensitive).
pub fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        field(&self.headers, name)
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        field(&self.headers, name)
    }

    /// Whether the client expects the connection to stay open after the answer.
    pub fn keep_alive(&self) -> bool {
        let connection = |token: &str| {
            self.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
                .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        if self.version == 0 {
            connection("keep-alive")
        } else {
            !connection("close")
        }
    }
}

/// One response to a request made with `method` (the answer to `HEAD` has no body whatever its
/// headers say). Interim (1xx) responses are returned like any other.
pub fn read_response<R: BufRead>(r: &mut R, method: &str) -> io::Result<Option<Response>> {
    let Some(head) = read_head(r)? else { return Ok(None) };
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    complete(parsed.parse(&head))?;
    let status = parsed.code.unwrap_or(0);
    let reason = parsed.reason.unwrap_or("").to_string();
    let version = parsed.version.unwrap_or(1);
    let headers = fields(parsed.headers);
    let framing = response_framing(method, status, &headers)?;
    let (body, trailers) = read_body(r, framing)?;
    Ok(Some(Response { status, reason, version, headers, body, trailers }))
}

/// One request.
pub fn read_request<R: BufRead>(r: &mut R) -> io::Result<Option<Request>> {
    let Some(head) = read_head(r)? else { return Ok(None) };
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    complete(parsed.parse(&head))?;
    let method = parsed.method.unwrap_or("").to_string();
    let target = parsed.path.unwrap_or("").to_string();
    let version = parsed.version.unwrap_or(1);
    let headers = fields(parsed.headers);
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), query.to_string()),
        None => (target.clone(), String::new()),
    };
    let framing = request_framing(&headers)?;
    let (body, trailers) = read_body(r, framing)?;
    Ok(Some(Request { method, target, path, query, version, headers, body, trailers }))
}

/// The raw head: start line and header lines up to and including the empty line. Empty lines
/// before the start line are skipped (RFC 9112 §2.2).
pub fn read_head<R: BufRead>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        if r.by_ref().take((MAX_HEAD + 1 - before) as u64).read_until(b'\n', &mut head)? == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed inside a head"));
        }
        if head.len() > MAX_HEAD {
            return Err(invalid(format!("a head over {MAX_HEAD} bytes")));
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                head.clear(); // an empty line before the start line
                continue;
            }
            return Ok(Some(head));
        }
    }
}

/// How the body of a response to `method` with this status and these fields is delimited.
pub fn response_framing(method: &str, status: u16, headers: &Fields) -> io::Result<Framing> {
    if method.eq_ignore_ascii_case("HEAD") || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::None);
    }
    match transfer_coding(headers) {
        Some(true) => Ok(Framing::Chunked),
        Some(false) => Ok(Framing::UntilClose),
        None => Ok(content_length(headers)?.map_or(Framing::UntilClose, Framing::Length)),
    }
}

/// How a request's body is delimited; a transfer coding other than a final `chunked` cannot be
/// read (a server answers 400).
pub fn request_framing(headers: &Fields) -> io::Result<Framing> {
    match transfer_coding(headers) {
        Some(true) => Ok(Framing::Chunked),
        Some(false) => Err(invalid("a request whose transfer coding does not end in chunked".into())),
        None => Ok(content_length(headers)?.map_or(Framing::None, Framing::Length)),
    }
}

/// The body and the trailer fields of a message framed as `framing`.
pub fn read_body<R: BufRead>(r: &mut R, framing: Framing) -> io::Result<(Vec<u8>, Fields)> {
    let mut body = Vec::new();
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            r.take(n).read_to_end(&mut body)?;
            if (body.len() as u64) < n {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the connection closed after {} of {n} body bytes", body.len()),
                ));
            }
        }
        Framing::UntilClose => {
            r.read_to_end(&mut body)?;
        }
        Framing::Chunked => return read_chunked(r, body),
    }
    Ok((body, Vec::new()))
}

fn read_chunked<R: BufRead>(r: &mut R, mut body: Vec<u8>) -> io::Result<(Vec<u8>, Fields)> {
    loop {
        let line = read_line(r)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| invalid(format!("chunk size {line:?}")))?;
        if size == 0 {
            break;
        }
        let start = body.len();
        r.take(size).read_to_end(&mut body)?;
        if ((body.len() - start) as u64) < size {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed inside a chunk"));
        }
        if !read_line(r)?.is_empty() {
            return Err(invalid("a chunk longer than its size".into()));
        }
    }
    let mut trailers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            return Ok((body, trailers));
        }
        let (name, value) = line.split_once(':').ok_or_else(|| invalid(format!("trailer line {line:?}")))?;
        trailers.push((name.trim().to_string(), value.trim().to_string()));
    }
}

/// One line without its CRLF (or LF); the connection closing first is an error.
fn read_line<R: BufRead>(r: &mut R) -> io::Result<String> {
    let mut line = Vec::new();
    if r.by_ref().take(MAX_HEAD as u64).read_until(b'\n', &mut line)? == 0 || line.last() != Some(&b'\n') {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed inside a chunked body"));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| invalid("a chunk line that is not UTF-8".into()))
}

/// `Some(true)` when `Transfer-Encoding` ends in `chunked`, `Some(false)` with another final
/// coding, `None` without the field.
fn transfer_coding(headers: &Fields) -> Option<bool> {
    let codings: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    codings.last().map(|last| last.eq_ignore_ascii_case("chunked"))
}

/// The `Content-Length`, which must be one number however many fields carry it.
fn content_length(headers: &Fields) -> io::Result<Option<u64>> {
    let mut length = None;
    for (_, value) in headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        for part in value.split(',') {
            let n: u64 = part.trim().parse().map_err(|_| invalid(format!("Content-Length {value:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid(format!("Content-Length values differ: {headers:?}")));
            }
            length = Some(n);
        }
    }
    Ok(length)
}

fn complete(parsed: httparse::Result<usize>) -> io::Result<()> {
    match parsed {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        Ok(httparse::Status::Partial) => Err(invalid("an incomplete head".into())),
        Err(e) => Err(invalid(format!("a head httparse refuses: {e}"))),
    }
}

fn fields(parsed: &[httparse::Header<'_>]) -> Fields {
    parsed.iter().map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned())).collect()
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
