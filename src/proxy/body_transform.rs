//! Where body transformation (`transform`, docs/transform.md) meets the request. The pure work
//! is `crate::transform`'s; this module reads and writes bodies around it.
//!
//! A route with `transform.response` is fetched by the gateway itself through the attempt
//! engine (`crate::upstream::fetch`), as aggregation parts are: Pingora writes a proxied
//! answer's head before its body filters run, and a transformed answer must be judged whole
//! before the client hears anything (an answer that cannot be transformed is a 502 with an
//! exact `Content-Length`, never the backend's body). The request body is read whole
//! (bounded by `max_body`), validated and inspected as on any route, transformed, and sent.
//!
//! A route with only `transform.request` stays on Pingora's proxy path: the body is held by
//! `validation::HeldBody` (whole, bounded by `max_body`). One that fits the retry buffer is
//! transformed before the head goes upstream, so its `Content-Length` is exact; a larger one is
//! transformed when complete and sent chunked (HTTP/1.1), its length being unknown when the
//! head left.

use super::jobs::{read_body, Failure};
use super::local::refuse;
use super::policies::{self, with_vars};
use super::{attempts, fill, inspection, Gateway, RequestCtx, RequestState};
use crate::config::WafMode;
use crate::errors::{GatewayError, UpstreamErrorKind};
use crate::policy::headers::Vars;
use crate::snapshot::Snapshot;
use crate::transform::{encoding, RequestBody, RequestTransform, ResponseTransform, TransformError};
use bytes::Bytes;
use http::header::{self, HeaderName};
use pingora::prelude::*;
use pingora::proxy::ProxyHttp;

/// Headers the upstream copy of a request has room for: what `upstream_request_filter` adds
/// (forwarding, identity, request id), as Pingora's proxy path sizes its own copy.
const UPSTREAM_HEADROOM: usize = 8;

/// The request body a `transform.request` route sends upstream.
#[derive(Debug)]
pub(crate) enum SentBody {
    /// Transformed before the head went upstream: its length is the `Content-Length`.
    Known(RequestBody),
    /// Not transformed (no body): sent as it came.
    Unchanged,
    /// Held as it streams and transformed at its end (`request_body_filter`).
    Streaming,
}

/// The transform error of a request body, as the client's answer (413, 415 or 400).
pub(crate) fn request_error(e: TransformError) -> GatewayError {
    match e {
        TransformError::TooLarge { limit } => GatewayError::PayloadTooLarge { limit: limit as u64 },
        TransformError::UnsupportedMediaType(_) => GatewayError::UnsupportedMediaType(e.to_string()),
        other => GatewayError::BadRequest(format!("the body cannot be transformed: {other}")),
    }
}

/// Transform a whole request body (the route has `transform.request`).
pub(crate) fn request_body(
    snap: &Snapshot,
    state: &RequestState,
    transform: &RequestTransform,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Option<RequestBody>, GatewayError> {
    let limit = state.route.map_or(usize::MAX, |r| usize::try_from(snap.route(r).max_body).unwrap_or(usize::MAX));
    with_vars(snap, state, |vars| transform.apply(body, content_type, vars, limit)).map_err(request_error)
}

/// The client's `Content-Type`, as text.
pub(crate) fn content_type(req: &RequestHeader) -> Option<&str> {
    req.headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"))
}

/// The upstream head of a request whose body a transform changed: its length and type.
pub(crate) fn on_upstream_request(sent: &SentBody, transform: &RequestTransform, upstream: &mut RequestHeader) {
    match sent {
        SentBody::Known(body) => {
            upstream.remove_header(&header::TRANSFER_ENCODING);
            let _ = upstream.insert_header(header::CONTENT_LENGTH, body.body.len());
            if let Some(ct) = body.content_type {
                let _ = upstream.insert_header(header::CONTENT_TYPE, ct);
            }
        }
        SentBody::Streaming => {
            // The length is known only at the end: Pingora sends it chunked.
            upstream.remove_header(&header::CONTENT_LENGTH);
            let _ = upstream.insert_header(header::CONTENT_TYPE, transform.content_type());
        }
        SentBody::Unchanged => {}
    }
}

/// Headers of the backend's answer that do not describe the transformed one (or are hop by
/// hop, or the gateway's own).
fn dropped(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-length"
            | "content-encoding"
            | "transfer-encoding"
            | "etag"
            | "content-md5"
            | "content-digest"
            | "content-range"
            | "accept-ranges"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "x-request-id"
    )
}

impl Gateway {
    /// `request_body_filter` on a `transform.request` route: a body held whole as it streamed
    /// (`whole`, the client's bytes) is transformed now; a transformed body replaces what
    /// passes (the retry buffer, on every attempt).
    pub(super) fn transform_request_chunk(
        &self,
        session: &Session,
        body: &mut Option<Bytes>,
        end: bool,
        whole: Option<Bytes>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
        let transform = state.route.and_then(|r| snap.transform(r)?.request.as_ref());
        if let (Some(SentBody::Streaming), Some(bytes), Some(t)) = (&state.sent_body, whole, transform) {
            match request_body(snap, state, t, content_type(session.req_header()), &bytes) {
                Ok(Some(sent)) => state.sent_body = Some(SentBody::Known(sent)),
                Ok(None) => state.sent_body = Some(SentBody::Unchanged),
                Err(err) => {
                    let status = err.status();
                    state.refusal = Some(err);
                    return Error::e_explain(HTTPStatus(status), "request body refused by the route's transform");
                }
            }
        }
        if let Some(SentBody::Known(sent)) = &state.sent_body {
            *body = Some(if end { sent.body.clone() } else { Bytes::new() });
        }
        Ok(())
    }

    /// Answer a request on a route with `transform.response` (see the module notes), once the
    /// cache (if the route has one) has missed; `Ok(true)` unless the client vanished.
    pub(super) async fn answer_transformed(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: crate::config::RouteId,
    ) -> Result<bool> {
        // The snapshot is held apart from the context the fetch updates.
        let snap = std::sync::Arc::clone(&ctx.snapshot);
        let transform = snap.transform(route).ok_or_else(|| Error::new(InternalError))?;
        let response = transform.response.as_ref().ok_or_else(|| Error::new(InternalError))?;
        let request = transform.request.as_ref();
        match self.fetch_transformed(session, ctx, response, request).await {
            Ok(done) => Ok(done),
            Err(Failure::Gone(e)) => Err(e),
            Err(Failure::Answer(err) | Failure::Counted(err)) => {
                let state = &mut ctx.state;
                if !session.is_body_empty() && !session.is_body_done() {
                    session.set_keepalive(None);
                }
                refuse(session, &snap, state, &err).await.map(|_| true)
            }
        }
    }

    /// The request body of a fetched exchange: read whole within `max_body`, checked by the
    /// route's schema and inspection as on any route (they see the client's bytes), then
    /// transformed (`request`). With the Content-Type to send when it changed.
    async fn read_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        request: Option<&RequestTransform>,
    ) -> std::result::Result<(Bytes, Option<&'static str>), Failure> {
        let snap = std::sync::Arc::clone(&ctx.snapshot);
        let route_id = ctx.state.route.ok_or(GatewayError::Internal)?;
        let route = snap.route(route_id);
        let has_body = !session.is_body_empty();
        if request.is_some() && has_body && !RequestTransform::accepts(content_type(session.req_header())) {
            let ct = content_type(session.req_header()).unwrap_or_default().to_string();
            return Err(request_error(TransformError::UnsupportedMediaType(ct)).into());
        }
        let declared = ctx.state.declared_length;
        let expects_continue = session
            .req_header()
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if has_body && expects_continue {
            // The client waits for this before sending the body read here.
            session.write_continue_response().await.map_err(Failure::Gone)?;
        }
        let body = if has_body {
            read_body(session, route.max_body, declared, snap.config.limits.body_timeout).await?
        } else {
            Bytes::new()
        };
        // The route's schema and inspection see the client's body, as on any route.
        if let Some(schema) = snap.schema(route_id) {
            let method = &session.req_header().method;
            let body_method = matches!(*method, http::Method::POST | http::Method::PUT | http::Method::PATCH);
            if body_method || !body.is_empty() {
                if !crate::policy::schema::is_json(session.req_header().headers.get(header::CONTENT_TYPE)) {
                    return Err(GatewayError::UnsupportedMediaType(
                        "this route takes JSON: send Content-Type: application/json".into(),
                    )
                    .into());
                }
                schema.check(&body).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
            }
        }
        if route.waf.mode != WafMode::Off {
            let inspected = inspection::body(&snap, Some(body.clone()), declared);
            let head = session.req_header();
            inspection::inspect(&self.runtime, &snap, route_id, &mut ctx.state, head, inspected).await?;
        }
        let sent = match request {
            Some(t) => request_body(&snap, &ctx.state, t, content_type(session.req_header()), &body)?,
            None => None,
        };
        let (body, sent_type) = match sent {
            Some(b) => (b.body, b.content_type),
            None => (body, None),
        };
        Ok((body, sent_type))
    }

    async fn fetch_transformed(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        response: &ResponseTransform,
        request: Option<&RequestTransform>,
    ) -> std::result::Result<bool, Failure> {
        let snap = std::sync::Arc::clone(&ctx.snapshot);
        let route = snap.route(ctx.state.route.ok_or(GatewayError::Internal)?);
        let has_body = !session.is_body_empty();
        let (body, sent_type) = self.read_request(session, ctx, request).await?;
        // The exchange is the request's upstream attempt: its client span is the backend's parent.
        ctx.state.upstream.span = ctx.state.trace.as_ref().map(|_| crate::trace::context::new_span_id());
        // A miss (or a refetch) on a caching route stores the answer: the whole body is asked
        // for, as Pingora asks for what it will store (GET for HEAD, no conditions).
        let fills = fill::fills(session);
        // The head as the proxy path would send it (forwarding, identity, header rules), made
        // as Pingora makes its upstream copy: the parsed head, with room for what is added,
        // handed out and a copy left to the session.
        let mut head = session.req_header_mut().take_with_headroom(UPSTREAM_HEADROOM);
        if fills {
            pingora::cache::filters::upstream::request_filter(&mut head, None);
        }
        self.upstream_request_filter(session, &mut head, ctx).await.map_err(|_| GatewayError::Internal)?;
        let state = &mut ctx.state;
        // Sent as the gateway's own request (HTTP/1.1, or HTTP/2 to an `http2` service): an
        // HTTP/2 client's head carries its version and an absolute target.
        head.set_version(http::Version::HTTP_11);
        if let Some(target) = head.uri.path_and_query().and_then(|t| t.as_str().parse::<http::Uri>().ok()) {
            head.set_uri(target);
        }
        head.remove_header(&header::TRANSFER_ENCODING);
        head.remove_header(&header::EXPECT);
        // A part of a JSON document cannot be transformed; a coded one costs a decode.
        head.remove_header(&header::RANGE);
        head.remove_header(&header::IF_RANGE);
        let _ = head.insert_header(header::ACCEPT_ENCODING, "identity");
        if let Some(ct) = sent_type {
            let _ = head.insert_header(header::CONTENT_TYPE, ct);
        }
        if body.is_empty() && !has_body {
            head.remove_header(&header::CONTENT_LENGTH);
        } else {
            let _ = head.insert_header(header::CONTENT_LENGTH, body.len());
        }
        let service = attempts::chosen_service(&snap, session, state)?;
        state.upstream.service = Some(service);
        let upstream = snap.upstream(service);
        let hash = attempts::hash(&upstream, session, state)?;
        let fetch = crate::upstream::fetch::Fetch {
            head: &head,
            body: (!body.is_empty()).then_some(body),
            max_body: response.max_body() as u64,
            response_timeout: route.timeout,
            hash: &hash,
        };
        let mut report = crate::upstream::fetch::Report::default();
        let started = std::time::Instant::now();
        let fetched =
            crate::upstream::fetch::fetch_recorded(&upstream, &fetch, &mut state.upstream.attempts, &mut report).await;
        state.upstream.duration = Some(started.elapsed());
        attempts::record_span(&snap, state, fetched.as_ref().err().map(GatewayError::code));
        let fetched = fetched?;
        let status = fetched.status();
        let head_request = session.req_header().method == http::Method::HEAD;
        let answered =
            with_vars(&snap, state, |vars| transform_answer(response, head_request && !fills, fetched, vars));
        let (mut head, body) = match answered {
            Ok(answer) => answer,
            Err(reason) => {
                log::error!(
                    "request {} on route {}: the backend's answer ({status}) cannot be transformed: {reason}",
                    state.request_id,
                    route.label
                );
                return Err(GatewayError::BadGateway {
                    kind: UpstreamErrorKind::Other,
                    detail: format!("the backend's answer cannot be transformed: {reason}"),
                }
                .into());
            }
        };
        // Stored as transformed, before the gateway's own headers (a hit gets them from
        // `response_filter`), and before the client is written to: the requests waiting on the
        // key's lock need not wait for a slow reader.
        fill::store(&snap, session, state, &head, &body).await;
        state.cache.answered = Some(session.cache.phase());
        // What every answer carries, as `response_filter` adds it to a proxied one.
        let _ = state.stamp().apply(&mut head);
        policies::on_response(&snap, session, state, &mut head);
        let head_only = head_request || body.is_empty();
        session.write_response_header(Box::new(head), head_only).await.map_err(Failure::Gone)?;
        if !head_only {
            session.write_response_body(Some(body), true).await.map_err(Failure::Gone)?;
        }
        Ok(true)
    }
}

/// The client's answer from the backend's: status remapped, body decoded and transformed,
/// headers made consistent with it. `Err`: why it cannot be transformed (a 502).
fn transform_answer(
    transform: &ResponseTransform,
    head_only: bool,
    fetched: crate::upstream::fetch::Fetched,
    vars: &Vars<'_>,
) -> std::result::Result<(ResponseHeader, Bytes), TransformError> {
    let status = fetched.status();
    let backend = &fetched.head;
    let limit = transform.max_body();
    let no_body = head_only || matches!(status, 204 | 304) || status < 200;
    let (body, content_type) = if no_body {
        (Bytes::new(), None)
    } else if transform.replaces_body(status) {
        // The backend's body is not read at all (an HTML error page becomes clean JSON).
        let out = transform.apply(status, None, &[], vars)?;
        (out.body, out.content_type)
    } else {
        let raw = fetched.body.ok_or(TransformError::TooLarge { limit })?;
        let coding = backend.headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("(not text)"));
        let decoded = match coding.filter(|c| !encoding::is_identity(c)) {
            Some(coding) => Bytes::from(encoding::decode(coding, &raw, limit)?),
            None => raw,
        };
        let ct = backend.headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"));
        let out = transform.apply(status, ct, &decoded, vars)?;
        (out.body, out.content_type)
    };
    // The backend's head, edited: what does not describe the new body goes (found in one pass
    // over the names; a backend sends few of them), the rest keeps its order and case.
    let mut head = *fetched.head;
    head.set_version(http::Version::HTTP_11);
    let remapped = transform.status(status);
    if remapped != status {
        head.set_status(remapped).map_err(|_| TransformError::NotJson("the status cannot be sent".into()))?;
        let _ = head.set_reason_phrase(None);
    }
    let gone: Vec<HeaderName> = head.headers.keys().filter(|name| dropped(name)).cloned().collect();
    for name in &gone {
        head.remove_header(name);
    }
    if let Some(ct) = content_type {
        let _ = head.insert_header(header::CONTENT_TYPE, ct);
    }
    if !no_body {
        let _ = head.insert_header(header::CONTENT_LENGTH, body.len());
    }
    Ok((head, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ResponseTransformSettings, StatusRuleSettings, TransformSettings};
    use crate::transform::Transform;
    use crate::upstream::fetch::Fetched;
    use std::io::Write;

    fn response(settings: ResponseTransformSettings) -> ResponseTransform {
        let settings = TransformSettings { request: None, response: Some(settings) };
        Transform::from_settings(&settings).expect("valid").response.expect("response")
    }

    fn fetched(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Fetched {
        let mut head = ResponseHeader::build(status, None).expect("head");
        for (k, v) in headers {
            head.append_header(k.to_string(), *v).expect("header");
        }
        Fetched { head: Box::new(head), body: Some(Bytes::copy_from_slice(body)), trailers: None }
    }

    fn answer(t: &ResponseTransform, head_only: bool, f: Fetched) -> Result<(ResponseHeader, Bytes), TransformError> {
        let claim = |_: &str| None;
        let vars = Vars {
            request_id: "r1",
            client_ip: "127.0.0.1",
            route: "/",
            elapsed: Default::default(),
            claim: &claim,
            tenant: None,
        };
        transform_answer(t, head_only, f, &vars)
    }

    fn header<'a>(head: &'a ResponseHeader, name: &str) -> Option<&'a str> {
        head.headers.get(name).map(|v| v.to_str().expect("text"))
    }

    #[test]
    fn a_coded_answer_is_decoded_and_its_head_describes_the_new_body() {
        let t = response(ResponseTransformSettings { allow: Some(vec!["/id".into()]), ..Default::default() });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(br#"{"id": 1, "secret": "s"}"#).expect("write");
        let body = gz.finish().expect("gzip");
        let length = body.len().to_string();
        let f = fetched(
            200,
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
                ("content-length", &length),
                ("etag", "\"v1\""),
                ("content-md5", "x"),
                ("connection", "close"),
                ("last-modified", "Mon, 07 Dec 2026 00:00:00 GMT"),
                ("cache-control", "max-age=60"),
            ],
            &body,
        );
        let (head, out) = answer(&t, false, f).expect("transformed");
        assert_eq!(&out[..], br#"{"id":1}"#);
        assert_eq!(header(&head, "content-length"), Some("8"));
        for gone in ["content-encoding", "etag", "content-md5", "connection"] {
            assert_eq!(header(&head, gone), None, "{gone}");
        }
        assert_eq!(header(&head, "cache-control"), Some("max-age=60"));
        assert!(header(&head, "last-modified").is_some());
        assert_eq!(header(&head, "content-type"), Some("application/json"));
    }

    #[test]
    fn statuses_remap_and_bodiless_answers_keep_no_length() {
        let mut status = std::collections::BTreeMap::new();
        status.insert(409, StatusRuleSettings::Status(422));
        let t = response(ResponseTransformSettings { status, ..Default::default() });
        let (head, out) = answer(&t, false, fetched(409, &[], br#"{"a": 1}"#)).expect("remapped");
        assert_eq!(head.status.as_u16(), 422);
        assert_eq!(&out[..], br#"{"a":1}"#);
        // No Content-Type from the backend: the answer says JSON.
        assert_eq!(header(&head, "content-type"), Some("application/json"));
        let (head, out) = answer(&t, true, fetched(200, &[("content-length", "999")], b"")).expect("HEAD");
        assert!(out.is_empty() && header(&head, "content-length").is_none());
        let (head, _) = answer(&t, false, fetched(204, &[], b"")).expect("204");
        assert_eq!(head.status.as_u16(), 204);
    }

    #[test]
    fn what_cannot_be_transformed_is_an_error_never_the_body() {
        let t = response(ResponseTransformSettings { max_body: Some(16), ..Default::default() });
        let too_large = Fetched { body: None, ..fetched(200, &[], b"") };
        assert_eq!(answer(&t, false, too_large).err(), Some(TransformError::TooLarge { limit: 16 }));
        let html = fetched(200, &[("content-type", "text/html")], b"<p>");
        assert!(matches!(answer(&t, false, html), Err(TransformError::NotJson(_))));
        let coded = fetched(200, &[("content-encoding", "compress")], b"{}");
        assert!(matches!(answer(&t, false, coded), Err(TransformError::Decode(_))));
    }

    #[test]
    fn request_errors_map_to_the_clients_statuses() {
        assert_eq!(request_error(TransformError::TooLarge { limit: 5 }).status(), 413);
        assert_eq!(request_error(TransformError::UnsupportedMediaType("text/plain".into())).status(), 415);
        assert_eq!(request_error(TransformError::NotJson("x".into())).status(), 400);
    }
}
