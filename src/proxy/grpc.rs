//! Routes with `grpc_transcode` or `grpc_web` (docs/grpc.md), answered from `request_filter`
//! once the route admitted the request (authentication, roles, rate limit as on any route):
//! the request body read whole (bounded by the route's `max_body`) and translated by
//! `crate::grpc`, the call made through the service's pool by the one attempt engine
//! (`crate::upstream::fetch::open`), and
//! the answer translated back as it arrives. A native gRPC request (`application/grpc`) on
//! these routes is not translated: it is proxied as it is.
//!
//! A unary call is answered only once its status is known (the trailers), so a call that
//! fails after its message still gets its error status; a stream's head is written with its
//! first message.

use super::aggregation::forwarded_headers;
use super::jobs::{read_body, Failure};
use super::local::{local_head, refuse, respond, start_stream};
use super::{policies, RequestState};
use crate::answer::LocalAnswer;
use crate::config::{RouteSettings, RouteTarget};
use crate::errors::{GatewayError, UpstreamErrorKind};
use crate::grpc::{self, web, CallError, Code, Format, GrpcStatus};
use crate::snapshot::Snapshot;
use crate::upstream::fetch::{self, Fetch, Opened, Report};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName};
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;

/// How a request on a gRPC route is translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Translation {
    /// REST/JSON → gRPC.
    Transcode,
    /// gRPC-Web (binary or text) → gRPC.
    Web(web::Encoding),
}

/// The translation a request takes on a route with `grpc_transcode` (`transcode`) and/or
/// `grpc_web` (`web`), by its `Content-Type`; `None` proxies it as it is (native gRPC, or
/// anything but gRPC-Web on a route without transcoding).
pub(super) fn translation(transcode: bool, web: bool, content_type: &str) -> Option<Translation> {
    if let Some(encoding) = web::encoding(content_type).filter(|_| web) {
        return Some(Translation::Web(encoding));
    }
    let native = content_type.get(..16).is_some_and(|t| t.eq_ignore_ascii_case("application/grpc"));
    (transcode && !native).then_some(Translation::Transcode)
}

/// Answer the request; `Ok(true)` unless the client vanished.
pub(super) async fn handle(
    snap: &Snapshot,
    translation: Translation,
    session: &mut Session,
    state: &mut RequestState,
) -> Result<bool> {
    let route = snap.route(state.route.ok_or_else(|| Error::new(InternalError))?);
    let RouteTarget::Service(service) = route.target else {
        return refuse(session, snap, state, &GatewayError::Internal).await.map(|_| true);
    };
    state.upstream.service = Some(service);
    let body = match read_body(session, route.max_body, state.declared_length, snap.config.limits.body_timeout).await {
        Ok(body) => body,
        Err(Failure::Gone(e)) => return Err(e),
        Err(Failure::Answer(err) | Failure::Counted(err)) => {
            return refuse(session, snap, state, &err).await.map(|_| true);
        }
    };
    let result = match translation {
        Translation::Transcode => transcode(snap, route, service, body, session, state).await,
        Translation::Web(encoding) => grpc_web(snap, route, service, encoding, body, session, state).await,
    };
    match result {
        Ok(()) => Ok(true),
        Err(Outcome::Refuse(err)) => refuse(session, snap, state, &err).await.map(|_| true),
        Err(Outcome::Broken(e)) => Err(e),
    }
}

/// How a call ended when it did not answer normally.
enum Outcome {
    /// Nothing was written yet: answer this error.
    Refuse(GatewayError),
    /// The answer was under way (or the client left): the connection is broken off.
    Broken(Box<Error>),
}

impl From<Box<Error>> for Outcome {
    fn from(e: Box<Error>) -> Self {
        Outcome::Broken(e)
    }
}

/// Why reading a transcoded answer stopped.
enum ReadError {
    /// The backend's connection failed.
    Upstream(Box<Error>),
    /// Writing to the client failed.
    Client(Box<Error>),
    /// The answer is not one we can translate.
    Call(CallError),
}

/// REST/JSON → gRPC and back.
async fn transcode(
    snap: &Snapshot,
    route: &RouteSettings,
    service: usize,
    body: Bytes,
    session: &mut Session,
    state: &mut RequestState,
) -> std::result::Result<(), Outcome> {
    let transcoder = state.route.and_then(|id| snap.transcoder(id)).ok_or(Outcome::Refuse(GatewayError::Internal))?;
    let pool = transcoder.pool();
    let fail = |e: CallError| Outcome::Refuse(GatewayError::from_grpc(e, pool));
    let req = session.req_header();
    let call = transcoder.route(&req.method, req.uri.path()).map_err(fail)?;
    let message = call.request(req.uri.query(), &body).map_err(fail)?;
    let accept = req.headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let mut answer = call.response(accept);
    let head = upstream_head(snap, route, session, state, &call.grpc_path(), "application/grpc", false)?;
    let deadline = route.timeout.filter(|_| !call.server_streaming()).map(|t| tokio::time::Instant::now() + t);
    let within = |deadline: Option<tokio::time::Instant>| async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let mut opened = tokio::select! {
        opened = call_service(snap, service, route, &head, message, state) => opened?,
        _ = within(deadline) => return Err(Outcome::Refuse(GatewayError::GatewayTimeout { after: route.timeout })),
    };
    let upstream = &mut opened.session;
    let (http_status, head_status) = answer_head(upstream);
    if http_status != 200 && head_status.is_none() {
        // Not a gRPC answer: the code gRPC infers from the HTTP status.
        let status = GrpcStatus {
            code: Code::from_http(http_status),
            message: format!("the backend answered HTTP {http_status} without a gRPC status"),
            details: None,
        };
        return Err(fail(CallError::Status(status)));
    }
    let format = answer.format();
    let stream_answer = LocalAnswer::bytes(200, format.content_type(), Bytes::new());
    let mut started = false;
    let read = async {
        while let Some(chunk) = upstream.read_response_body().await.map_err(ReadError::Upstream)? {
            let out = answer.push(&chunk).map_err(ReadError::Call)?;
            if !out.is_empty() {
                if !started {
                    start_stream(session, snap, state, &stream_answer).await.map_err(ReadError::Client)?;
                    started = true;
                }
                session.write_response_body(Some(out), false).await.map_err(ReadError::Client)?;
            }
        }
        read_trailers(upstream).await.map_err(ReadError::Upstream)
    };
    let read = tokio::select! {
        read = read => read,
        _ = within(deadline) => return Err(Outcome::Refuse(GatewayError::GatewayTimeout { after: route.timeout })),
    };
    let trailers = match read {
        Ok(trailers) => trailers,
        Err(ReadError::Client(e)) => return Err(Outcome::Broken(e)),
        Err(ReadError::Upstream(e)) if started => return Err(Outcome::Broken(e)),
        Err(ReadError::Upstream(e)) => {
            let detail = format!("the answer broke off: {}", e.etype.as_str());
            return Err(Outcome::Refuse(GatewayError::BadGateway { kind: UpstreamErrorKind::of(&e), detail }));
        }
        Err(ReadError::Call(e)) if started => {
            return Err(Outcome::Broken(Error::explain(InternalError, e.to_string())))
        }
        Err(ReadError::Call(e)) => return Err(fail(e)),
    };
    opened.release(snap.service(service).idle_timeout).await;
    let status = trailers.as_ref().and_then(GrpcStatus::from_headers).or(head_status);
    match answer.finish(status.as_ref(), &state.request_id) {
        Ok(tail) if started => session.write_response_body(Some(tail), true).await.map_err(Outcome::Broken),
        Ok(tail) if format == Format::Object => {
            let whole = LocalAnswer::bytes(200, format.content_type(), tail);
            respond(session, snap, state, whole).await.map_err(Outcome::Broken)
        }
        Ok(tail) => {
            start_stream(session, snap, state, &stream_answer).await?;
            session.write_response_body(Some(tail), true).await.map_err(Outcome::Broken)
        }
        Err(e) if started => Err(Outcome::Broken(Error::explain(InternalError, e.to_string()))),
        Err(e) => Err(fail(e)),
    }
}

/// gRPC-Web → gRPC: the messages pass unchanged (base64 for `-text`), the trailers become the
/// body's last frame.
#[allow(clippy::too_many_arguments)]
async fn grpc_web(
    snap: &Snapshot,
    route: &RouteSettings,
    service: usize,
    encoding: web::Encoding,
    body: Bytes,
    session: &mut Session,
    state: &mut RequestState,
) -> std::result::Result<(), Outcome> {
    let req = session.req_header();
    let content_type = req.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let upstream_type = web::upstream_content_type(content_type);
    let message = match encoding {
        web::Encoding::Binary => body,
        web::Encoding::Text => {
            let mut decoder = web::TextDecoder::new();
            let decoded = decoder.push(&body).and_then(|d| decoder.finish().map(|_| d));
            decoded.map_err(|e| Outcome::Refuse(GatewayError::BadRequest(e.to_string())))?
        }
    };
    let path = crate::routing::normalize_path(req.uri.path()).map_err(|e| Outcome::Refuse(e.into()))?;
    let path = crate::routing::upstream_path(&path, &route.path, route.strip_prefix).to_string();
    let head = upstream_head(snap, route, session, state, &path, &upstream_type, true)?;
    let mut opened = call_service(snap, service, route, &head, message, state).await?;
    let upstream = &mut opened.session;
    let (http_status, head_status) = answer_head(upstream);
    let upstream_head = upstream.response_header().cloned();
    let answer_type = web::response_content_type(
        upstream_head.as_ref().and_then(|h| h.headers.get(CONTENT_TYPE)).and_then(|v| v.to_str().ok()),
        encoding,
    );
    let encode = |bytes: Bytes| match encoding {
        web::Encoding::Binary => bytes,
        web::Encoding::Text => web::encode_text(&bytes),
    };
    let mut answer = LocalAnswer::bytes(200, "application/grpc-web+proto", Bytes::new()).with_content_type(
        http::HeaderValue::from_str(&answer_type).map_err(|_| Outcome::Refuse(GatewayError::Internal))?,
    );
    // Response metadata (and a trailers-only answer's status) stays in the head.
    for (name, value) in upstream_head.iter().flat_map(|h| h.headers.iter()) {
        if passes_back(name) {
            answer = answer.header(name.clone(), value.clone());
        }
    }
    if http_status != 200 || head_status.is_some() {
        // Trailers-only, or not a gRPC answer: the status in the head and in a trailer frame.
        let mut trailers = HeaderMap::new();
        match &head_status {
            Some(_) => {
                for (name, value) in upstream_head.iter().flat_map(|h| h.headers.iter()) {
                    if name.as_str().starts_with("grpc-") {
                        trailers.append(name.clone(), value.clone());
                    }
                }
            }
            None => {
                let code = Code::from_http(http_status) as i32;
                let message = format!("the backend answered HTTP {http_status}");
                trailers.insert("grpc-status", code.into());
                if let Ok(value) = grpc::status::encode_message(&message).parse() {
                    trailers.insert("grpc-message", value);
                }
            }
        }
        let frame = encode(web::trailer_frame(&trailers));
        let mut head = local_head(session, snap, state, &answer)?;
        head.insert_header(http::header::CONTENT_LENGTH, frame.len())?;
        for (name, value) in &trailers {
            head.insert_header(name.clone(), value.clone())?;
        }
        session.write_response_header(Box::new(head), false).await?;
        session.write_response_body(Some(frame), true).await?;
        return Ok(());
    }
    start_stream(session, snap, state, &answer).await?;
    while let Some(chunk) = upstream.read_response_body().await? {
        session.write_response_body(Some(encode(chunk)), false).await?;
    }
    let trailers = read_trailers(upstream).await?;
    opened.release(snap.service(service).idle_timeout).await;
    let trailers = trailers.filter(|t| t.contains_key("grpc-status")).unwrap_or_else(|| {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", (Code::Internal as i32).into());
        t.insert("grpc-message", http::HeaderValue::from_static("the backend's answer ended without a status"));
        t
    });
    session.write_response_body(Some(encode(web::trailer_frame(&trailers))), true).await?;
    Ok(())
}

/// The call through the one attempt engine (the service's pool, breaker and retry policy),
/// its answer's head read; the attempts are the request's own (`state.upstream`), read by its
/// access log line. A gRPC call is not known to be idempotent: only an attempt that never
/// reached a backend is tried again. Each wait for the answer is bounded by the route's
/// `timeout`.
async fn call_service(
    snap: &Snapshot,
    service: usize,
    route: &RouteSettings,
    head: &RequestHeader,
    message: Bytes,
    state: &mut RequestState,
) -> std::result::Result<Opened, Outcome> {
    let started = std::time::Instant::now();
    state.upstream.service = Some(service);
    let request = Fetch { head, body: Some(message), max_body: 0, response_timeout: route.timeout, hash: &[] };
    let mut report = Report::default();
    let result = fetch::open(&snap.upstream(service), &request, &mut state.upstream.attempts, &mut report).await;
    state.upstream.duration = Some(started.elapsed());
    result.map_err(Outcome::Refuse)
}

/// The answer's HTTP status and the gRPC status its head carries (a trailers-only answer).
fn answer_head(upstream: &HttpSession) -> (u16, Option<GrpcStatus>) {
    match upstream.response_header() {
        Some(head) => (head.status.as_u16(), GrpcStatus::from_headers(&head.headers)),
        None => (0, None),
    }
}

async fn read_trailers(upstream: &mut HttpSession) -> Result<Option<HeaderMap>> {
    match upstream {
        HttpSession::H2(h2) => h2.read_trailers().await,
        _ => Ok(None),
    }
}

/// The backend request's head: `POST path` with the gRPC headers, the client's metadata
/// (minus what the gateway owns or strips), the forwarded and identity headers, the trace and
/// the route's request header rules.
fn upstream_head(
    snap: &Snapshot,
    route: &RouteSettings,
    session: &Session,
    state: &RequestState,
    path: &str,
    content_type: &str,
    client_grpc_headers: bool,
) -> std::result::Result<RequestHeader, Outcome> {
    let cannot = |_| Outcome::Refuse(GatewayError::BadRequest("the request cannot be sent as gRPC".into()));
    let req = session.req_header();
    let mut head = RequestHeader::build("POST", path.as_bytes(), Some(req.headers.len() + 12)).map_err(cannot)?;
    let api_key = snap.config.api_keys.as_ref().map(|k| &k.header);
    for (name, value) in &req.headers {
        let owned = snap.identity_headers.contains(name) || api_key == Some(name);
        let grpc_own = name.as_str().starts_with("grpc-") && !client_grpc_headers;
        if !owned && !grpc_own && passes_on(name) {
            head.append_header(name.clone(), value.clone()).map_err(cannot)?;
        }
    }
    let host = req.headers.get(HOST);
    if let Some(host) = host {
        head.insert_header(HOST, host.clone()).map_err(cannot)?;
    }
    for (name, value) in forwarded_headers(snap, state, req, host, route.forward_authorization) {
        head.insert_header(name, value).map_err(cannot)?;
    }
    if let Some(trace) = &state.trace {
        head.insert_header(crate::trace::context::TRACEPARENT, trace.traceparent(trace.span_id)).map_err(cannot)?;
    }
    head.insert_header(CONTENT_TYPE, content_type).map_err(cannot)?;
    head.insert_header(http::header::TE, "trailers").map_err(cannot)?;
    if let Some(timeout) = route.timeout {
        head.insert_header("grpc-timeout", grpc::status::grpc_timeout(timeout)).map_err(cannot)?;
    }
    policies::on_upstream_request(snap, session, state, &mut head);
    Ok(head)
}

/// Client headers passed to the backend as metadata: not the framing and hop-by-hop ones,
/// not the ones the gateway sets itself (forwarding, identity, trace, request id).
fn passes_on(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "content-length"
            | "content-type"
            | "accept"
            | "accept-encoding"
            | "expect"
            | "authorization"
            | "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-real-ip"
            | "x-request-id"
            | "x-client-cert-subject"
            | "traceparent"
            | "tracestate"
            | "x-grpc-web"
            | "grpc-accept-encoding"
            | "grpc-encoding"
    )
}

/// Backend response headers a gRPC-Web client gets in the head (its response metadata).
fn passes_back(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "content-type" | "date" | "server"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_requests_are_translated() {
        assert_eq!(translation(true, true, "application/json"), Some(Translation::Transcode));
        assert_eq!(translation(true, true, ""), Some(Translation::Transcode));
        assert_eq!(translation(true, true, "application/grpc"), None, "native gRPC passes");
        assert_eq!(translation(true, true, "Application/gRPC+proto"), None);
        assert_eq!(translation(true, true, "application/grpc-web-text"), Some(Translation::Web(web::Encoding::Text)));
        assert_eq!(translation(false, true, "application/json"), None);
        assert_eq!(
            translation(false, true, "application/grpc-web+proto"),
            Some(Translation::Web(web::Encoding::Binary))
        );
        // Without `grpc_web`, gRPC-Web goes to the backend as it is (which may speak it itself).
        assert_eq!(translation(true, false, "application/grpc-web"), None);
        assert_eq!(translation(false, false, "application/grpc-web"), None);
    }

    #[test]
    fn the_gateway_owns_forwarding_and_framing_headers() {
        for owned in ["x-forwarded-for", "authorization", "content-length", "te", "traceparent", "x-request-id"] {
            assert!(!passes_on(&HeaderName::from_static(owned)), "{owned}");
        }
        assert!(passes_on(&HeaderName::from_static("x-tenant")));
        assert!(passes_back(&HeaderName::from_static("grpc-status")));
        assert!(!passes_back(&HeaderName::from_static("content-length")));
    }
}
