//! `/jobs/submit`: a validated JSON job is wrapped in an envelope and published to JetStream;
//! the client gets `202` only once JetStream acknowledged it (ARCHITECTURE.md §4, §6 Jobs).
//!
//! * [`request`] — the pure rules: content type, `Idempotency-Key`, body, job id, envelope.
//! * [`stream`] — stream bootstrap (create or verify, never change), and the job index bucket.
//! * [`status`] — following a job: its index entry, who may read it, its state, and telling
//!   a retry from another job under the same `Idempotency-Key`.
//! * [`service`] — the NATS connection: one shared client, made after Pingora's daemon fork by
//!   a task started with the proxy service ([`service::WithNats`]), with reconnect, stream
//!   bootstrap and drain on shutdown.
//! * [`Jobs`] — what the proxy holds: settings, the shared client once connected, readiness,
//!   and [`Jobs::publish`], which never waits longer than `jobs.ack_timeout`.
//!
//! The HTTP side (reading the body from the Pingora session) lives in `proxy::jobs`.

pub mod request;
pub(crate) mod service;
pub(crate) mod status;
pub(crate) mod stream;

use crate::config::{JobsSettings, NatsSettings};
use crate::errors::GatewayError;
use crate::observability::Metrics;
use async_nats::connection::State;
use async_nats::jetstream::context::{ConsumerInfoErrorKind, Context, PublishErrorKind};
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use status::{IndexEntry, JobState};
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
    /// The job index (job id → sequence), once found or created.
    index: OnceLock<kv::Store>,
    /// Why the index is not usable (`None` when it is).
    index_problem: Mutex<Option<String>>,
    /// Submissions between [`Jobs::begin`] and the end of their response.
    in_flight: AtomicUsize,
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
    /// The envelope's `submitted_at` (recorded in the index).
    pub(crate) submitted_at: &'a str,
    /// The client's job, to compare with what a de-duplicated publish had stored.
    pub(crate) job: &'a [u8],
    /// The job id came from an `Idempotency-Key`: a later submission may reuse it.
    pub(crate) keyed: bool,
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

/// `200` of `GET <jobs.path>/<job_id>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct JobStatus {
    pub(crate) job_id: String,
    pub(crate) stream: String,
    pub(crate) seq: u64,
    pub(crate) submitted_at: String,
    pub(crate) state: &'static str,
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
    /// The `Idempotency-Key` already named another job (a different payload): nothing stored.
    #[error("this Idempotency-Key was already used for another job ({job_id}); use a new key for a different job")]
    Conflict {
        /// The job the key names.
        job_id: String,
    },
    /// The publish was de-duplicated, but the stored job could not be read to compare it.
    #[error("the job queue could not confirm that this retry is the stored job; retry with the same Idempotency-Key")]
    Unconfirmed,
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
            Self::Conflict { .. } => "idempotency_conflict",
            Self::Unconfirmed => "ack_timeout",
        }
    }
}

impl From<PublishFailure> for GatewayError {
    fn from(f: PublishFailure) -> Self {
        let retry_after = match f {
            PublishFailure::TooLarge { limit } => return GatewayError::PayloadTooLarge { limit },
            PublishFailure::Conflict { .. } => return GatewayError::Conflict(f.to_string()),
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
pub(crate) struct InFlightGuard<'a>(&'a AtomicUsize);

impl Drop for InFlightGuard<'_> {
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
            index: OnceLock::new(),
            index_problem: Mutex::new(Some("not found yet (waiting for NATS)".into())),
            in_flight: AtomicUsize::new(0),
            connected: tokio::sync::Notify::new(),
            shutdown_wait,
        }
    }

    /// Mark a submission in flight for the life of the guard.
    pub(crate) fn begin(&self) -> InFlightGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(&self.in_flight)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
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

    /// The index is usable (`Err`: why not).
    pub(crate) fn set_index(&self, index: Result<kv::Store, String>) {
        let problem = match index {
            Ok(store) => {
                let _ = self.index.set(store);
                None
            }
            Err(e) => Some(e),
        };
        if let Ok(mut p) = self.index_problem.lock() {
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
        if let Some(p) = self.index_problem.lock().ok().and_then(|p| p.clone()) {
            out.push(format!("jobs index {}: {p}", status::index_bucket(&self.settings.stream.name)));
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
        let Submission {
            job_id,
            user_id,
            request_id,
            payload,
            job_len,
            settings,
            traceparent,
            tracestate,
            submitted_at,
            job,
            keyed,
        } = submission;
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
        let deadline = tokio::time::Instant::now() + timeout;
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
        metrics.jobs.publish_seconds.observe(started.elapsed().as_secs_f64());
        if !ack.duplicate {
            metrics.jobs.published.inc();
        }
        let accepted = Accepted { stream: ack.stream, seq: ack.sequence, duplicate: ack.duplicate };
        let entry = if accepted.duplicate {
            match self.stored_under(link, job_id, &accepted, job, deadline).await? {
                Some(entry) => entry,
                // Confirmed from the index, which therefore already holds it.
                None => return Ok(accepted),
            }
        } else {
            IndexEntry {
                stream: accepted.stream.clone(),
                seq: accepted.seq,
                user_id: user_id.to_string(),
                submitted_at: submitted_at.to_string(),
                job_sha256: keyed.then(|| status::job_digest(job)),
            }
        };
        self.record(job_id, &entry, deadline).await;
        Ok(accepted)
    }

    /// A de-duplicated publish: JetStream stored a job under this id before and only says
    /// where. Read it back: the same job is a retry (its index entry, to write again in case an
    /// earlier write was lost; `None` when the index itself confirmed it), another job is a
    /// conflict. Never answers "duplicate" without having compared.
    async fn stored_under(
        &self,
        link: &Link,
        job_id: &str,
        accepted: &Accepted,
        job: &[u8],
        deadline: tokio::time::Instant,
    ) -> Result<Option<IndexEntry>, PublishFailure> {
        let conflict = || PublishFailure::Conflict { job_id: job_id.to_string() };
        let stream = link.js.get_stream_no_info(&accepted.stream).await.map_err(|_| PublishFailure::Unconfirmed)?;
        match tokio::time::timeout_at(deadline, stream.get_raw_message(accepted.seq)).await {
            Ok(Ok(message)) => {
                let Some((stored, user_id, submitted_at)) = status::stored_job(&message.payload) else {
                    return Err(conflict());
                };
                if stored.as_bytes() != job {
                    return Err(conflict());
                }
                Ok(Some(IndexEntry {
                    stream: accepted.stream.clone(),
                    seq: accepted.seq,
                    user_id,
                    submitted_at,
                    job_sha256: Some(status::job_digest(job)),
                }))
            }
            // Consumed (a work-queue stream) or removed: the index kept the job's digest.
            Ok(Err(e)) if e.kind() == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                match self.index_entry(job_id, deadline).await {
                    Ok(Some(entry)) if entry.job_sha256.as_deref() == Some(&status::job_digest(job)) => Ok(None),
                    Ok(Some(_)) => Err(conflict()),
                    Ok(None) | Err(_) => Err(PublishFailure::Unconfirmed),
                }
            }
            Ok(Err(_)) | Err(_) => Err(PublishFailure::Unconfirmed),
        }
    }

    /// Write a job's index entry. The job is stored whatever happens here, so a failure is
    /// logged, not answered: the 202 stands, only its `Location` would not find the job.
    async fn record(&self, job_id: &str, entry: &IndexEntry, deadline: tokio::time::Instant) {
        let Some(index) = self.index.get() else {
            log::warn!(
                "job {job_id} stored as {} #{} but the job index is not ready: its status cannot be read",
                entry.stream,
                entry.seq
            );
            return;
        };
        let value = Bytes::from(serde_json::to_vec(entry).unwrap_or_default());
        // At least a moment for the write even when the publish used up the ack timeout.
        let deadline = deadline.max(tokio::time::Instant::now() + Duration::from_millis(250));
        match tokio::time::timeout_at(deadline, index.put(job_id, value)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::warn!("job {job_id}: index entry not written ({e}): its status cannot be read"),
            Err(_) => log::warn!("job {job_id}: index entry not written in time: its status cannot be read"),
        }
    }

    /// The index entry of a job (`Ok(None)`: no such job).
    async fn index_entry(
        &self,
        job_id: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<IndexEntry>, GatewayError> {
        let unavailable = |why: &str| GatewayError::Unavailable {
            message: format!("job status is unavailable ({why})"),
            retry_after: RETRY_PUBLISH,
        };
        let index = self.index.get().ok_or_else(|| unavailable("the job index is not ready"))?;
        match tokio::time::timeout_at(deadline, index.get(job_id)).await {
            Ok(Ok(Some(value))) => Ok(serde_json::from_slice(&value).ok()),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(unavailable(&e.to_string())),
            Err(_) => Err(unavailable("no answer from the job queue in time")),
        }
    }

    /// `GET <jobs.path>/<job_id>`: the job as JetStream knows it, for its submitter or a role
    /// in `jobs.status_roles`; anyone else, like an unknown id, is told there is no such job.
    pub(crate) async fn status(
        &self,
        settings: &JobsSettings,
        job_id: &str,
        identity: Option<&crate::auth::Identity>,
    ) -> Result<JobStatus, GatewayError> {
        let link = self.link.get().filter(|_| self.is_connected()).ok_or(PublishFailure::Disconnected)?;
        let deadline = tokio::time::Instant::now() + settings.ack_timeout;
        let no_such_job = || GatewayError::NotFound(format!("no job {job_id}"));
        let entry = self.index_entry(job_id, deadline).await?.ok_or_else(no_such_job)?;
        if !status::may_read(&entry.user_id, identity, &settings.status_roles) {
            return Err(no_such_job());
        }
        let state = match &settings.consumer {
            None => JobState::Stored,
            Some(consumer) => {
                let unavailable = |why: String| GatewayError::Unavailable {
                    message: format!("job state is unavailable: {why}"),
                    retry_after: RETRY_PUBLISH,
                };
                let stream = link.js.get_stream_no_info(&entry.stream).await.map_err(|e| unavailable(e.to_string()))?;
                match tokio::time::timeout_at(deadline, stream.consumer_info(consumer)).await {
                    Ok(Ok(info)) => {
                        status::state(entry.seq, info.delivered.stream_sequence, info.ack_floor.stream_sequence)
                    }
                    Ok(Err(e)) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                        log::warn!("jobs.consumer `{consumer}` does not exist on stream {}", entry.stream);
                        return Err(unavailable(format!(
                            "jobs.consumer `{consumer}` does not exist on stream {}",
                            entry.stream
                        )));
                    }
                    Ok(Err(e)) => return Err(unavailable(e.to_string())),
                    Err(_) => return Err(unavailable("no answer from the job queue in time".into())),
                }
            }
        };
        Ok(JobStatus {
            job_id: job_id.to_string(),
            stream: entry.stream,
            seq: entry.seq,
            submitted_at: entry.submitted_at,
            state: state.as_str(),
        })
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
            status_roles: vec![],
            consumer: None,
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
        assert!(p[2].starts_with("jobs index siger_jobs_JOBS: "), "{p:?}");
        j.set_stream_problem(None);
        j.set_index(Err("cannot create the bucket: denied".into()));
        assert_eq!(
            j.readiness_problems(),
            ["nats: disconnected", "jobs index siger_jobs_JOBS: cannot create the bucket: denied"]
        );
    }

    #[test]
    fn in_flight_guard_counts() {
        let j = jobs();
        {
            let _a = j.begin();
            let _b = j.begin();
            assert_eq!(j.in_flight(), 2);
        }
        assert_eq!(j.in_flight(), 0);
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
                    submitted_at: "2026-01-02T03:04:05.678Z",
                    job: b"{}",
                    keyed: false,
                },
                &metrics,
            )
            .await;
        assert_eq!(r, Err(PublishFailure::Disconnected));
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
