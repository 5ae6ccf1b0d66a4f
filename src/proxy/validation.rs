//! Where a route's JSON Schema meets the request: the media type is checked with the head,
//! then the body is checked whole before the backend gets any of it. Request inspection
//! (`waf`, docs/waf.md) holds the body the same way, up to `waf.max_body`: [`Held`] hands the
//! whole body (or the news that it outgrew the limit) to `proxy::inspection`.
//!
//! Whether there is a body comes from the session (an HTTP/2 stream without END_STREAM on
//! its HEADERS has one whatever its headers say), never from `Content-Length` or
//! `Transfer-Encoding` alone. Methods that carry a body (POST, PUT, PATCH) are always checked;
//! on the others a body that turns out empty is no body, and the media type is asked for
//! only once a byte arrives.
//!
//! A body that fits Pingora's 64 KiB retry buffer is read in `request_filter`, before any
//! backend is contacted: an invalid one is answered 400 and no backend ever hears of the
//! request; a valid one is sent from the retry buffer. A larger body is held back in
//! `request_body_filter` until complete, checked, then released in one piece: an invalid one
//! never reaches the backend either, but the backend has the request head by then and sees
//! its connection closed.
//!
//! No byte of the body is lost between the two: what was read ahead is either still in
//! Pingora's retry buffer (which Pingora sends through `request_body_filter` again) or, once
//! that buffer overflowed, only in the held body, which then keeps it for every attempt.
//! Pingora reads no more of a body it has seen end and sends nothing it no longer buffers, so
//! the read-ahead never consumes the end of a body past the buffer: over HTTP/2, where a
//! DATA frame may end the body, it stops a frame short of the buffer's end.

use crate::config::RouteSettings;
use crate::errors::GatewayError;
use crate::policy::schema;
use bytes::{Bytes, BytesMut};
use http::Method;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

/// Pingora's retry buffer (`BODY_BUF_LIMIT`): what it can send again by itself.
const RETRY_BUFFER: u64 = 64 * 1024;

/// The largest DATA frame an HTTP/2 client may send us: `SETTINGS_MAX_FRAME_SIZE`, left at
/// its initial value (RFC 9113 §6.5.2; `app::h2_limits` does not raise it). Pingora hands a
/// stream's body on one frame at a time.
const H2_MAX_FRAME: u64 = 16 * 1024;

/// A body being held for validation.
#[derive(Debug, Default)]
pub(crate) struct HeldBody {
    /// The route's schema (the snapshot's, shared).
    schema: Option<schema::BodySchema>,
    bytes: BytesMut,
    /// Checked and released: later passes (a retry resending the body) go through as they are.
    released: bool,
    /// A method without a body of its own: an empty body is no body (nothing to check).
    optional: bool,
    /// `Content-Type` says JSON (checked at the first byte when the body is optional).
    json: bool,
    /// The gateway answered `Expect: 100-continue` itself.
    continued: bool,
    /// The route validates the body against a schema (otherwise the body is held only to be
    /// inspected).
    validates: bool,
    /// Held only to be inspected: past this many bytes (`waf.max_body`) holding stops and
    /// everything held goes on ([`Held::Overflow`]).
    inspect_up_to: Option<u64>,
}

/// What [`HeldBody::take`] did with a chunk.
#[derive(Debug)]
pub(crate) enum Held {
    /// Holding: nothing goes upstream yet.
    Holding,
    /// Released before: the chunk passes as it is.
    Released,
    /// The body is complete (and valid): it is in the chunk, and here for inspection.
    Whole(Bytes),
    /// A body held only for inspection outgrew `waf.max_body` at this many bytes: everything
    /// held is in the chunk, and the rest streams.
    Overflow(u64),
}

/// Whether the route holds this request's body: to validate it (checking its media type now),
/// to transform it (`transforms`: held whole), or to inspect it (`inspect`: `Some(waf.max_body)`). `has_body`: the session may have a body
/// to read (see the module notes); `declared`: `Content-Length`.
pub(crate) fn start(
    schema: Option<&schema::BodySchema>,
    req: &RequestHeader,
    has_body: bool,
    declared: Option<u64>,
    inspect: Option<u64>,
    transforms: bool,
) -> Result<Option<HeldBody>, GatewayError> {
    let validates = schema.is_some();
    let body_method = req.method == Method::POST || req.method == Method::PUT || req.method == Method::PATCH;
    if !validates && !transforms && (inspect.is_none() || !has_body) {
        return Ok(None);
    }
    if !has_body && !body_method {
        return Ok(None);
    }
    let held = HeldBody {
        schema: schema.cloned(),
        optional: !body_method,
        json: schema::is_json(req.headers.get(http::header::CONTENT_TYPE)),
        validates,
        // A body to transform is held whole (bounded by `max_body`), whatever inspection's bound.
        inspect_up_to: if validates || transforms { None } else { inspect },
        ..HeldBody::default()
    };
    if validates && (body_method || declared.is_some_and(|n| n > 0)) {
        held.media_type()?;
    }
    Ok(Some(held))
}

impl HeldBody {
    /// Read a body that fits the retry buffer now and check it (see the module notes): the
    /// whole body when it was read. A larger body keeps what was read and is held as it
    /// streams (`None`).
    pub(crate) async fn read_ahead(
        &mut self,
        session: &mut Session,
        route: &RouteSettings,
        declared: Option<u64>,
    ) -> Result<Option<Bytes>, ReadAheadError> {
        if declared.is_some_and(|n| n > RETRY_BUFFER) {
            return Ok(None);
        }
        session.as_mut().enable_retry_buffering();
        let expects_continue = session
            .req_header()
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects_continue {
            // The client waits for this before sending the body read here.
            session.write_continue_response().await.map_err(ReadAheadError::Read)?;
            self.continued = true;
        }
        let read_limit = if session.as_ref().is_http2() { RETRY_BUFFER - H2_MAX_FRAME } else { RETRY_BUFFER };
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    self.append(route, &chunk).map_err(ReadAheadError::Refused)?;
                    if session.is_body_done() {
                        if session.as_ref().retry_buffer_truncated() {
                            // Pingora would send none of it (see the module notes): refuse
                            // rather than leave the backend waiting for a body.
                            log::error!("a validated body ended past the retry buffer in the read-ahead");
                            return Err(ReadAheadError::Refused(GatewayError::Internal));
                        }
                        break;
                    }
                    if self.bytes.len() as u64 > read_limit {
                        // The rest streams through `request_body_filter`.
                        return Ok(None);
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(ReadAheadError::Read(e)),
            }
        }
        crate::connections::body_read();
        let mut end = None;
        match self.take(route, &mut end, true).map_err(ReadAheadError::Refused)? {
            Held::Whole(body) => Ok(Some(body)),
            _ => Ok(None),
        }
    }

    /// The client's `Expect: 100-continue` is answered: the backend must not answer it again.
    pub(crate) fn continued(&self) -> bool {
        self.continued
    }

    /// A new upstream attempt. Pingora sends its retry buffer again when it still holds the
    /// whole body read so far (`truncated` false): the held copy starts over. Once the buffer
    /// overflowed Pingora sends nothing again, and the held bytes are the only copy.
    pub(crate) fn restart(&mut self, truncated: bool) {
        if !self.released && !truncated {
            self.bytes.clear();
        }
    }

    /// Take `chunk` into the held body; at the end check it and put the whole body in `chunk`.
    /// Until then `chunk` is left empty (nothing goes upstream).
    pub(crate) fn take(
        &mut self,
        route: &RouteSettings,
        chunk: &mut Option<Bytes>,
        end: bool,
    ) -> Result<Held, GatewayError> {
        if self.released {
            return Ok(Held::Released);
        }
        if let Some(data) = chunk.take() {
            if self.inspect_up_to.is_some_and(|limit| self.bytes.len() as u64 + data.len() as u64 > limit) {
                // Too large to inspect: nothing more is held; what was goes on with this chunk
                // (Pingora no longer buffers it for a retry either way).
                self.bytes.extend_from_slice(&data);
                self.released = true;
                let body = std::mem::take(&mut self.bytes).freeze();
                let length = body.len() as u64;
                *chunk = Some(body);
                return Ok(Held::Overflow(length));
            }
            self.append(route, &data)?;
        }
        if !end {
            *chunk = Some(Bytes::new());
            return Ok(Held::Holding);
        }
        let body = std::mem::take(&mut self.bytes).freeze();
        if let Some(schema) = self.schema.as_ref().filter(|_| !(self.optional && body.is_empty())) {
            schema.check(&body).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        }
        self.released = true;
        *chunk = Some(body.clone());
        Ok(Held::Whole(body))
    }

    /// Hold `data`, within the route's `max_body` and once the media type is known to be JSON.
    fn append(&mut self, route: &RouteSettings, data: &[u8]) -> Result<(), GatewayError> {
        if data.is_empty() {
            return Ok(());
        }
        if self.bytes.is_empty() && self.validates {
            self.media_type()?;
        }
        if self.bytes.len() as u64 + data.len() as u64 > route.max_body {
            return Err(GatewayError::PayloadTooLarge { limit: route.max_body });
        }
        self.bytes.extend_from_slice(data);
        Ok(())
    }

    fn media_type(&self) -> Result<(), GatewayError> {
        if self.json {
            return Ok(());
        }
        Err(GatewayError::UnsupportedMediaType("this route takes JSON: send Content-Type: application/json".into()))
    }
}

/// Why reading ahead stopped.
pub(crate) enum ReadAheadError {
    /// Answer the client with this.
    Refused(GatewayError),
    /// The client's body could not be read.
    Read(Box<pingora::Error>),
}
