//! Aggregation routes (ARCHITECTURE.md §7.5): the gateway answers the route itself by calling
//! each part's service in parallel and merging the JSON answers under the parts' keys.
//!
//! Parts go through the same attempt engine as proxied requests ([`crate::upstream::fetch`]):
//! the service's pool (balancing, health, outlier ejection), its circuit breaker, its retry
//! policy and budget, its transport (TLS, HTTP/2) and timeouts, with the same metrics and log
//! lines. A part that cannot be answered, answers non-2xx, or answers something other than a
//! JSON document within the route's `max_body` has failed.

use crate::config::{AggregateSettings, OnFailure};
use crate::transform::ResponseTransform;
use crate::upstream;
use crate::upstream::attempt::Service;
use crate::upstream::fetch::{Fetch, Report};
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::time::Instant;

/// The header that marks a partial answer.
pub(crate) const COMPLETED_HEADER: &str = "Siger-Completed";

/// One part to fetch: where and with which request head.
#[derive(Debug)]
pub(crate) struct PartRequest {
    /// Index of the part in the route's list.
    pub(crate) index: usize,
    /// The path and query sent.
    pub(crate) path: String,
    /// Headers sent (forwarding, identity, request id, `traceparent`).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

/// What became of one part, for its span: when it ran, the backend of its last attempt, the
/// status it answered and how many attempts it took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartReport {
    pub(crate) started: Instant,
    pub(crate) ended: Instant,
    pub(crate) backend: Option<SocketAddr>,
    pub(crate) status: Option<u16>,
    pub(crate) attempts: u32,
}

/// Why a part has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PartFailure {
    /// Not answered within the route's timeout.
    Timeout,
    /// No backend could be asked (none healthy, circuit open, every connection refused).
    Unavailable(String),
    /// Answered with a status that is not 2xx.
    Status(u16),
    /// Answered 2xx with something that is not a JSON document (or larger than allowed).
    NotJson,
}

impl PartFailure {
    /// `result` label of `siger_aggregate_parts_total`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            PartFailure::Timeout => "timeout",
            PartFailure::Unavailable(_) => "unavailable",
            PartFailure::Status(_) => "status",
            PartFailure::NotJson => "not_json",
        }
    }
}

/// The merged answer.
#[derive(Debug, PartialEq)]
pub(crate) enum Merged {
    /// 200 with the object; `complete` false when a part is `null` for having failed.
    Answer { body: Value, complete: bool },
    /// Every part failed, or one did with `on_failure: fail`: 504 when a timeout was among
    /// the failures, else 502.
    Failed { timeout: bool, detail: String },
}

/// Merge the parts' results in the route's order.
pub(crate) fn merge(settings: &AggregateSettings, results: Vec<Result<Value, PartFailure>>) -> Merged {
    let failures: Vec<(usize, PartFailure)> =
        results.iter().enumerate().filter_map(|(i, r)| r.as_ref().err().map(|f| (i, f.clone()))).collect();
    let all_failed = failures.len() == results.len() && !results.is_empty();
    if !failures.is_empty() && (all_failed || settings.on_failure == OnFailure::Fail) {
        let timeout = failures.iter().any(|(_, f)| *f == PartFailure::Timeout);
        let detail = failures
            .iter()
            .map(|(i, f)| {
                let key = &settings.parts[*i].key;
                match f {
                    PartFailure::Timeout => format!("{key}: no answer within {:?}", settings.timeout),
                    PartFailure::Unavailable(why) => format!("{key}: {why}"),
                    PartFailure::Status(s) => format!("{key}: answered {s}"),
                    PartFailure::NotJson => format!("{key}: answer is not JSON"),
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Merged::Failed { timeout, detail };
    }
    let mut body = Map::new();
    for (part, result) in settings.parts.iter().zip(results) {
        body.insert(part.key.clone(), result.unwrap_or(Value::Null));
    }
    Merged::Answer { body: Value::Object(body), complete: failures.is_empty() }
}

/// Fetch one part from `service` through the attempt engine (its pool, breaker and retry
/// policy), the body bounded by `max_body`. The caller bounds the whole by the route's timeout.
pub(crate) async fn fetch(
    service: &Service<'_>,
    part: &PartRequest,
    host: Option<&HeaderValue>,
    max_body: u64,
    transform: Option<&ResponseTransform>,
    report: &mut Report,
) -> Result<Value, PartFailure> {
    let mut head = RequestHeader::build("GET", part.path.as_bytes(), None)
        .map_err(|_| PartFailure::Unavailable("the part's path cannot be sent".into()))?;
    if let Some(host) = host {
        let _ = head.insert_header(http::header::HOST, host.clone());
    }
    for (name, value) in &part.headers {
        let _ = head.insert_header(name.clone(), value.clone());
    }
    // The route's timeout bounds the whole (see `fetch_all`); parts are not hashed.
    let request = Fetch { head: &head, body: None, max_body, response_timeout: None, hash: &[] };
    let answer =
        upstream::fetch::fetch(service, &request, report).await.map_err(|e| PartFailure::Unavailable(e.message()))?;
    match (answer.status(), &answer.body) {
        (status, _) if !(200..300).contains(&status) => Err(PartFailure::Status(status)),
        // A part's `transform` works on the answer's bytes; one that cannot be transformed has
        // failed as an answer that is not JSON has.
        (_, Some(body)) => match transform {
            Some(t) => {
                let transformed = t.apply_body(body).map_err(|e| {
                    log::warn!("aggregation part {}: the answer cannot be transformed: {e}", part.path);
                    PartFailure::NotJson
                })?;
                serde_json::from_slice::<Value>(&transformed).map_err(|_| PartFailure::NotJson)
            }
            None => serde_json::from_slice::<Value>(body).map_err(|_| PartFailure::NotJson),
        },
        (_, None) => Err(PartFailure::NotJson),
    }
}

/// Run every part in parallel within the route's timeout (a part still running then is
/// [`PartFailure::Timeout`]), each with its report.
pub(crate) async fn fetch_all<'a>(
    services: impl Fn(usize) -> Service<'a>,
    settings: &AggregateSettings,
    requests: Vec<Result<PartRequest, PartFailure>>,
    host: Option<&HeaderValue>,
    max_body: u64,
    transforms: impl Fn(usize) -> Option<&'a ResponseTransform>,
) -> Vec<(Result<Value, PartFailure>, PartReport)> {
    let deadline = tokio::time::Instant::now() + settings.timeout;
    let services = &services;
    let transforms = &transforms;
    let futures = requests.into_iter().map(|part| async move {
        let started = Instant::now();
        let mut fetched = Report::default();
        let result = match part {
            Err(failure) => Err(failure),
            Ok(part) => {
                let service = services(settings.parts[part.index].service);
                let fetching = fetch(&service, &part, host, max_body, transforms(part.index), &mut fetched);
                tokio::time::timeout_at(deadline, fetching).await.unwrap_or(Err(PartFailure::Timeout))
            }
        };
        let Report { backend, status, attempts } = fetched;
        (result, PartReport { started, ended: Instant::now(), backend, status, attempts })
    });
    futures::future::join_all(futures).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AggregatePart;
    use crate::policy::headers::Template;
    use serde_json::json;
    use std::time::Duration;

    fn settings(on_failure: OnFailure) -> AggregateSettings {
        let part = |key: &str| AggregatePart {
            key: key.into(),
            service: 0,
            path: Template::parse("/x").expect("template"),
            transform: None,
        };
        AggregateSettings { timeout: Duration::from_secs(2), on_failure, parts: vec![part("user"), part("wallet")] }
    }

    #[test]
    fn parts_are_merged_under_their_keys() {
        let merged = merge(&settings(OnFailure::Partial), vec![Ok(json!({"id": 1})), Ok(json!([1, 2]))]);
        assert_eq!(merged, Merged::Answer { body: json!({"user": {"id": 1}, "wallet": [1, 2]}), complete: true });
    }

    #[test]
    fn partial_answers_null_the_failed_part_and_fail_refuses() {
        let results = || vec![Ok(json!({"id": 1})), Err(PartFailure::Timeout)];
        assert_eq!(
            merge(&settings(OnFailure::Partial), results()),
            Merged::Answer { body: json!({"user": {"id": 1}, "wallet": null}), complete: false }
        );
        match merge(&settings(OnFailure::Fail), results()) {
            Merged::Failed { timeout, detail } => {
                assert!(timeout);
                assert!(detail.contains("wallet"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        let down = vec![Err(PartFailure::Status(503)), Err(PartFailure::Unavailable("x".into()))];
        assert!(matches!(merge(&settings(OnFailure::Partial), down), Merged::Failed { timeout: false, .. }));
    }
}
