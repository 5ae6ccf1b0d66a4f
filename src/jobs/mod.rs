//! `/jobs/submit`: a validated JSON job is wrapped in an envelope and published to JetStream;
//! the client gets `202` only once JetStream acknowledged it (ARCHITECTURE.md §4, §6 Jobs).
//!
//! * [`request`] — the pure rules: content type, `Idempotency-Key`, body, job id, envelope.
//! * [`stream`] — stream bootstrap (create or verify, never change).
//! * [`service`] — the NATS connection: one shared client, made after Pingora's daemon fork by
//!   a task started with the proxy service ([`service::WithNats`]), with reconnect, stream
//!   bootstrap and drain on shutdown.
//! * [`Jobs`] — what the proxy holds: settings, the shared client once connected, readiness,
//!   and [`Jobs::publish`], which never waits longer than `jobs.ack_timeout`.
//!
//! The HTTP side (reading the body from the Pingora session) lives in `proxy::jobs`.

pub mod request;
pub(crate) mod service;
pub(crate) mod stream;

use crate::config::{JobsSettings, NatsSettings};
use crate::errors::GatewayError;
use crate::observability::Metrics;
use async_nats::connection::State;
use async_nats::jetstream::context::{Context, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `Retry-After` when NATS is disconnected: the reconnect back-off tops out at 2 s.
const RETRY_DISCONNECTED: u64 = 2;
/// `Retry-After` after an ack timeout or a failed publish.
const RETRY_PUBLISH: u64 = 1;
/// `Retry-After` when no stream captures the subject (an operator has to act).
const RETRY_NO_STREAM: u64 = 10;

/// The connected client and its JetStream context (set once by [`NatsService`]).
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) client: async_nats::Client,
    pub(crate) js: Context,
}

/// Jobs state shared by the proxy, the admin listener and the NATS background service.
#[derive(Debug)]
pub(crate) struct Jobs {
    /// `jobs:` settings.
    pub(crate) settings: JobsSettings,
    pub(crate) nats: NatsSettings,
    pub(crate) subject: Subject,
    pub(crate) link: OnceLock<Link>,
    /// Why the stream is not as configured (`None` when verified).
    stream_problem: Mutex<Option<String>>,
    /// Submissions between [`Jobs::begin`] and the end of their response.
    inflight: AtomicUsize,
    /// Signalled on every (re)connect so the stream is verified again.
    pub(crate) connected: tokio::sync::Notify,
    /// How long shutdown waits for in-flight submissions before draining the connection.
    pub(crate) shutdown_wait: Duration,
}

/// One job to publish: the envelope and what its headers and errors need.
#[derive(Debug)]
pub(crate) struct Submission<'a> {
    /// `Nats-Msg-Id`, so a retried submission is stored once.
    pub(crate) job_id: &'a str,
    /// `Siger-User-Id` header.
    pub(crate) user_id: &'a str,
    /// `Siger-Request-Id` header.
    pub(crate) request_id: &'a str,
    /// The serialised envelope.
    pub(crate) payload: Bytes,
    /// Length of the client's job inside it (to tell the envelope's overhead in a 413).
    pub(crate) job_len: usize,
    /// The `jobs` settings of the request's config generation (subject, ack timeout).
    pub(crate) settings: &'a JobsSettings,
    /// W3C `traceparent` header (tracing on).
    pub(crate) traceparent: Option<http::HeaderValue>,
    /// W3C `tracestate` header passed on with it.
    pub(crate) tracestate: Option<&'a str>,
}

/// A job JetStream acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// Stream that stored it.
    pub(crate) stream: String,
    /// Its sequence in the stream (the original one for a duplicate).
    pub(crate) seq: u64,
    /// JetStream recognised the `Nats-Msg-Id` within the duplicate window: nothing new stored.
    pub(crate) duplicate: bool,
}

/// Why a publish did not end in an ack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PublishFailure {
    /// No connection to NATS right now.
    #[error("the job queue is unavailable (NATS disconnected)")]
    Disconnected,
    /// No ack within `jobs.ack_timeout`; the job may or may not be stored.
    #[error(
        "no acknowledgement from the job queue within {0:?}; the job may have been stored — retry with the same Idempotency-Key"
    )]
    Timeout(Duration),
    /// Nothing answers on the subject: no stream captures it.
    #[error("no JetStream stream accepts the jobs subject")]
    NoStream,
    /// The envelope exceeds the server's `max_payload`.
    #[error("job too large for the queue")]
    TooLarge {
        /// Largest job body that would fit.
        limit: u64,
    },
    /// Too many publishes waiting for acks, or the pending buffer is full.
    #[error("the job queue is overloaded")]
    Overloaded,
    /// JetStream refused the message.
    #[error("the job queue refused the job: {0}")]
    Refused(String),
}

impl PublishFailure {
    /// `siger_jobs_failed_total` reason.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Disconnected => "nats_disconnected",
            Self::Timeout(_) => "ack_timeout",
            Self::NoStream => "no_stream",
            Self::TooLarge { .. } => "too_large",
            Self::Overloaded => "overloaded",
            Self::Refused(_) => "publish_error",
        }
    }
}

impl From<PublishFailure> for GatewayError {
    fn from(f: PublishFailure) -> Self {
        let retry_after = match f {
            PublishFailure::TooLarge { limit } => return GatewayError::PayloadTooLarge { limit },
            PublishFailure::Disconnected => RETRY_DISCONNECTED,
            PublishFailure::NoStream => RETRY_NO_STREAM,
            _ => RETRY_PUBLISH,
        };
        GatewayError::Unavailable { message: f.to_string(), retry_after }
    }
}

/// `siger_jobs_failed_total` reason for a submission refused before publishing; `None` for
/// refusals that are not about the job (authentication, method), counted elsewhere.
pub(crate) fn rejection_reason(e: &GatewayError) -> Option<&'static str> {
    match e {
        GatewayError::MissingToken
        | GatewayError::InvalidToken { .. }
        | GatewayError::Forbidden(_)
        | GatewayError::MethodNotAllowed { .. } => None,
        GatewayError::PayloadTooLarge { .. } => Some("too_large"),
        GatewayError::UnsupportedMediaType(_) => Some("unsupported_media_type"),
        GatewayError::RequestTimeout => Some("body_timeout"),
        _ => Some("invalid_request"),
    }
}

/// Counts a submission as in flight until dropped (shutdown waits for these).
#[derive(Debug)]
pub(crate) struct InflightGuard<'a>(&'a AtomicUsize);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Jobs {
    /// Jobs state for a config with `jobs` and `nats` sections. Connects nothing: the client is
    /// made by [`NatsService`] once Pingora runs.
    pub(crate) fn new(settings: JobsSettings, nats: NatsSettings, shutdown_wait: Duration) -> Self {
        let subject = Subject::from(settings.subject.as_str());
        Jobs {
            settings,
            nats,
            subject,
            link: OnceLock::new(),
            stream_problem: Mutex::new(Some("not verified yet (waiting for NATS)".into())),
            inflight: AtomicUsize::new(0),
            connected: tokio::sync::Notify::new(),
            shutdown_wait,
        }
    }

    /// Mark a submission in flight for the life of the guard.
    pub(crate) fn begin(&self) -> InflightGuard<'_> {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(&self.inflight)
    }

    pub(crate) fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Whether the shared client is connected right now.
    pub(crate) fn is_connected(&self) -> bool {
        self.link.get().is_some_and(|l| l.client.connection_state() == State::Connected)
    }

    pub(crate) fn set_stream_problem(&self, problem: Option<String>) {
        if let Ok(mut p) = self.stream_problem.lock() {
            *p = problem;
        }
    }

    /// What keeps jobs from being ready (`/ready`'s `missing` entries).
    pub(crate) fn readiness_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.is_connected() {
            out.push("nats: disconnected".to_string());
        }
        if let Some(p) = self.stream_problem.lock().ok().and_then(|p| p.clone()) {
            out.push(format!("jobs stream {}: {p}", self.settings.stream.name));
        }
        out
    }

    /// Publish one envelope and wait for JetStream's ack, at most `jobs.ack_timeout` in total
    /// (pending-buffer wait included). Records the jobs metrics.
    pub(crate) async fn publish(
        &self,
        submission: Submission<'_>,
        metrics: &Metrics,
    ) -> Result<Accepted, PublishFailure> {
        let (job_id, request_id) = (submission.job_id, submission.request_id);
        let result = self.publish_inner(submission, metrics).await;
        if let Err(f) = &result {
            metrics.job_failed(f.reason());
            match f {
                // The connection's own events already say so, once rather than per request.
                PublishFailure::Disconnected => log::debug!("job {job_id} (request {request_id}) not accepted: {f}"),
                _ => log::warn!("job {job_id} (request {request_id}) not accepted: {f}"),
            }
            if *f == PublishFailure::NoStream {
                // The stream vanished under us: verify (and, if allowed, recreate) it now.
                self.connected.notify_one();
            }
        }
        result
    }

    async fn publish_inner(&self, submission: Submission<'_>, metrics: &Metrics) -> Result<Accepted, PublishFailure> {
        let Submission { job_id, user_id, request_id, payload, job_len, settings, traceparent, tracestate } =
            submission;
        let link = self.link.get().ok_or(PublishFailure::Disconnected)?;
        // Queuing into a dead connection would hold the client until the timeout and might
        // still publish later; answering now is clearer.
        if link.client.connection_state() != State::Connected {
            return Err(PublishFailure::Disconnected);
        }
        let mut headers = HeaderMap::new();
        headers.insert("Siger-User-Id", request::header_value(user_id).as_ref());
        headers.insert("Siger-Request-Id", request::header_value(request_id).as_ref());
        if let Some(traceparent) = traceparent.as_ref().and_then(|v| v.to_str().ok()) {
            headers.insert("traceparent", traceparent);
        }
        if let Some(tracestate) = tracestate {
            headers.insert("tracestate", tracestate);
        }
        let envelope_overhead = (payload.len() - job_len.min(payload.len())) as u64;
        let message = PublishMessage::build().payload(payload).headers(headers).message_id(job_id);
        let timeout = settings.ack_timeout;
        // A reload may have changed the subject (validation keeps it inside the stream).
        let subject = if settings.subject == self.settings.subject {
            self.subject.clone()
        } else {
            Subject::from(settings.subject.as_str())
        };
        let started = Instant::now();
        let attempt = async {
            let ack = link.js.send_publish(subject, message).await?;
            ack.await
        };
        let ack = match tokio::time::timeout(timeout, attempt).await {
            Err(_) => return Err(PublishFailure::Timeout(timeout)),
            Ok(Ok(ack)) => ack,
            Ok(Err(e)) => {
                return Err(match e.kind() {
                    PublishErrorKind::TimedOut => PublishFailure::Timeout(timeout),
                    PublishErrorKind::StreamNotFound => PublishFailure::NoStream,
                    PublishErrorKind::MaxAckPending => PublishFailure::Overloaded,
                    PublishErrorKind::MaxPayloadExceeded => {
                        let max = link.client.server_info().max_payload as u64;
                        // Headers and protocol framing take a little more than the envelope.
                        PublishFailure::TooLarge { limit: max.saturating_sub(envelope_overhead + 256) }
                    }
                    PublishErrorKind::BrokenPipe => PublishFailure::Disconnected,
                    _ => PublishFailure::Refused(e.to_string()),
                });
            }
        };
        metrics.jobs_publish_seconds.observe(started.elapsed().as_secs_f64());
        if !ack.duplicate {
            metrics.jobs_published.inc();
        }
        Ok(Accepted { stream: ack.stream, seq: ack.sequence, duplicate: ack.duplicate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StreamSettings, StreamStorage};

    fn jobs() -> Jobs {
        let settings = JobsSettings {
            schema: None,
            rate_limit: None,
            path: "/jobs/submit".into(),
            subject: "jobs.submitted".into(),
            stream: StreamSettings {
                name: "JOBS".into(),
                subjects: vec!["jobs.>".into()],
                create: true,
                storage: StreamStorage::File,
                replicas: 1,
                max_age: Duration::from_secs(60),
                duplicate_window: Duration::from_secs(60),
            },
            roles: vec![],
            max_body: 1024,
            ack_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
        };
        let nats = NatsSettings {
            url: "nats://127.0.0.1:1".into(),
            credentials_file: None,
            token: None,
            user_password: None,
            connect_timeout: Duration::from_secs(1),
            pending_buffer: 16,
        };
        Jobs::new(settings, nats, Duration::from_secs(1))
    }

    #[test]
    fn not_ready_until_connected_and_verified() {
        let j = jobs();
        let p = j.readiness_problems();
        assert_eq!(p[0], "nats: disconnected");
        assert!(p[1].starts_with("jobs stream JOBS: "), "{p:?}");
        j.set_stream_problem(None);
        assert_eq!(j.readiness_problems(), ["nats: disconnected"]);
    }

    #[test]
    fn inflight_guard_counts() {
        let j = jobs();
        {
            let _a = j.begin();
            let _b = j.begin();
            assert_eq!(j.inflight(), 2);
        }
        assert_eq!(j.inflight(), 0);
    }

    #[test]
    fn failures_map_to_503_with_retry_after_or_413() {
        let e: GatewayError = PublishFailure::Timeout(Duration::from_secs(5)).into();
        assert_eq!((e.status(), e.code()), (503, "service_unavailable"));
        assert!(e.message().contains("Idempotency-Key"));
        let resp = GatewayError::from(PublishFailure::Disconnected).answer("r").response_header();
        assert_eq!(resp.headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"2"[..]));
        let e: GatewayError = PublishFailure::TooLarge { limit: 1000 }.into();
        assert_eq!(e.status(), 413);
    }

    #[tokio::test]
    async fn publish_without_connection_is_refused_at_once() {
        let j = jobs();
        let text = "listen: [\"127.0.0.1:8080\"]\nservices:\n  s:\n    targets: [\"127.0.0.1:9\"]\nroutes:\n  - path: /\n    service: s\n    auth: public\n";
        let env = std::collections::HashMap::<String, String>::new();
        let config = crate::config::parse(text, std::path::Path::new("."), &env).expect("config");
        let _ = config;
        let metrics = Metrics::new();
        let started = Instant::now();
        let r = j
            .publish(
                Submission {
                    job_id: "id",
                    user_id: "u",
                    request_id: "r",
                    payload: Bytes::from_static(b"{}"),
                    job_len: 2,
                    settings: &j.settings,
                    traceparent: None,
                    tracestate: None,
                },
                &metrics,
            )
            .await;
        assert_eq!(r, Err(PublishFailure::Disconnected));
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
