//! Where a route's JSON Schema meets the request: the media type is checked with the head,
//! then the body is checked whole before the backend gets it.
//!
//! A body that fits Pingora's 64 KiB retry buffer (by `Content-Length`, or chunked and ending
//! within it) is read in `request_filter`, before any backend is contacted: an invalid one is
//! answered 400 and no backend ever hears of the request; a valid one is sent from the retry
//! buffer. A larger body is held back in `request_body_filter` until complete, checked, then
//! released in one piece: an invalid one never reaches the backend either, but the backend
//! has the request head by then and sees its connection closed.

use crate::config::RouteSettings;
use crate::errors::GatewayError;
use crate::policy::schema;
use bytes::{Bytes, BytesMut};
use http::Method;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

/// Pingora's retry buffer (`BODY_BUF_LIMIT`): what it can send again by itself.
const RETRY_BUFFER: u64 = 64 * 1024;

/// A body being held for validation.
#[derive(Debug, Default)]
pub(crate) struct HeldBody {
    bytes: BytesMut,
    /// Checked and released: later passes (a retry resending the body) go through as they are.
    released: bool,
}

/// Whether the route validates this request's body, checking its media type: methods that
/// carry a body (POST, PUT, PATCH) always, others when they have one.
pub(crate) fn start(
    route: &RouteSettings,
    req: &RequestHeader,
    declared: Option<u64>,
) -> Result<Option<HeldBody>, GatewayError> {
    if route.validate.is_none() {
        return Ok(None);
    }
    let has_body = declared.is_some_and(|n| n > 0) || req.headers.contains_key(http::header::TRANSFER_ENCODING);
    let body_method = req.method == Method::POST || req.method == Method::PUT || req.method == Method::PATCH;
    if !has_body && !body_method {
        return Ok(None);
    }
    if !schema::is_json(req.headers.get(http::header::CONTENT_TYPE)) {
        return Err(GatewayError::UnsupportedMediaType(
            "this route takes JSON: send Content-Type: application/json".into(),
        ));
    }
    Ok(Some(HeldBody::default()))
}

impl HeldBody {
    /// Read a body that fits the retry buffer now and check it (see the module notes). A
    /// larger body (chunked beyond the buffer) keeps what was read and is held as it streams.
    pub(crate) async fn read_ahead(
        &mut self,
        session: &mut Session,
        route: &RouteSettings,
        declared: Option<u64>,
    ) -> Result<(), ReadAheadError> {
        if declared.is_some_and(|n| n > RETRY_BUFFER) {
            return Ok(());
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
        }
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if self.bytes.len() as u64 + chunk.len() as u64 > route.max_body {
                        return Err(ReadAheadError::Refused(GatewayError::PayloadTooLarge { limit: route.max_body }));
                    }
                    self.bytes.extend_from_slice(&chunk);
                    if self.bytes.len() as u64 > RETRY_BUFFER {
                        return Ok(());
                    }
                }
                Ok(None) => {
                    crate::connections::body_read();
                    break;
                }
                Err(e) => return Err(ReadAheadError::Read(e)),
            }
        }
        let mut end = None;
        self.take(route, &mut end, true).map_err(ReadAheadError::Refused)?;
        Ok(())
    }

    /// Checked and on its way (the body was complete before any backend was asked).
    pub(crate) fn released(&self) -> bool {
        self.released
    }

    /// A new upstream attempt resends the body from the start.
    pub(crate) fn restart(&mut self) {
        if !self.released {
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
    ) -> Result<(), GatewayError> {
        if self.released {
            return Ok(());
        }
        if let Some(data) = chunk.take() {
            self.bytes.extend_from_slice(&data);
        }
        if !end {
            *chunk = Some(Bytes::new());
            return Ok(());
        }
        let body = std::mem::take(&mut self.bytes).freeze();
        if let Some(schema) = &route.validate {
            schema.check(&body).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        }
        self.released = true;
        *chunk = Some(body);
        Ok(())
    }
}

/// Why reading ahead stopped.
pub(crate) enum ReadAheadError {
    /// Answer the client with this.
    Refused(GatewayError),
    /// The client's body could not be read.
    Read(Box<pingora::Error>),
}
