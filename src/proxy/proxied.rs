//! `request_filter` for a request proxied to a route's service: its body held, validated,
//! inspected and (with `transform.request`) transformed before the backend hears of it. With
//! `transform.response`, the whole exchange is made by the gateway in `proxy_upstream_filter`
//! once the cache has missed (`body_transform`).

use super::local::refuse;
use super::{body_transform, inspection, policies, validation, Gateway, RequestCtx};
use crate::config::WafMode;
use pingora::prelude::*;

impl Gateway {
    /// The request is admitted to a proxied route: `Ok(false)` to proxy it, `Ok(true)` when it
    /// was answered here.
    pub(super) async fn start_proxied(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let route_id = ctx.state.route.ok_or_else(|| Error::new(InternalError))?;
        if ctx.snapshot.transform(route_id).is_some_and(|t| t.response.is_some()) {
            // The gateway makes the exchange itself, after the cache's lookup (a hit is served
            // from the stored, transformed answer): `answer_transformed`.
            let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
            policies::enable_compression(snap, session, state);
            return Ok(false);
        }
        let (snap, state) = (&*ctx.snapshot, &mut ctx.state);
        let transform = snap.transform(route_id);
        let route = snap.route(route_id);
        let has_body = !session.is_body_empty();
        let declared = state.declared_length;
        let inspect = inspection::body_limit(snap, route, declared);
        let schema = snap.schema(route_id);
        let request_transform = transform.and_then(|t| t.request.as_ref());
        if request_transform.is_some()
            && has_body
            && !crate::transform::RequestTransform::accepts(body_transform::content_type(session.req_header()))
        {
            let ct = body_transform::content_type(session.req_header()).unwrap_or_default().to_string();
            let err = body_transform::request_error(crate::transform::TransformError::UnsupportedMediaType(ct));
            session.set_keepalive(None);
            return refuse(session, snap, state, &err).await.map(|_| true);
        }
        let transforms = request_transform.is_some();
        let checked = match validation::start(schema, session.req_header(), has_body, declared, inspect, transforms) {
            Ok(Some(mut held)) => match held.read_ahead(session, route, declared).await {
                Ok(body) => Ok((Some(held), body)),
                Err(validation::ReadAheadError::Refused(err)) => Err(err),
                Err(validation::ReadAheadError::Read(e)) => return Err(e),
            },
            Ok(None) => Ok((None, None)),
            Err(err) => Err(err),
        };
        let checked = match checked {
            // Inspected now unless the body is still streaming into the held copy.
            Ok((held, body)) if route.waf.mode != WafMode::Off && (held.is_none() || body.is_some()) => {
                let inspected = inspection::body(snap, body.clone(), declared);
                let head = session.req_header();
                inspection::inspect(&self.runtime, snap, route_id, state, head, inspected).await.map(|_| (held, body))
            }
            other => other,
        };
        // A body read whole is transformed now, so the head sent upstream has its length.
        let checked = match (checked, request_transform) {
            (Ok((held, body)), Some(t)) => {
                let sent = match (&held, body) {
                    (_, Some(body)) => {
                        let ct = body_transform::content_type(session.req_header());
                        body_transform::request_body(snap, state, t, ct, &body)
                            .map(|b| b.map_or(body_transform::SentBody::Unchanged, body_transform::SentBody::Known))
                    }
                    (Some(_), None) => Ok(body_transform::SentBody::Streaming),
                    (None, None) => Ok(body_transform::SentBody::Unchanged),
                };
                sent.map(|sent| {
                    state.sent_body = Some(sent);
                    held
                })
            }
            (other, _) => other.map(|(held, _)| held),
        };
        match checked {
            Ok(held) => state.validation = held,
            Err(err) => {
                if !session.is_body_empty() && !session.is_body_done() {
                    session.set_keepalive(None);
                }
                return refuse(session, snap, state, &err).await.map(|_| true);
            }
        }
        policies::enable_compression(snap, session, state);
        Ok(false)
    }
}
