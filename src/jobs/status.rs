//! Following a job (ARCHITECTURE §8.8): the pure rules of `GET <jobs.path>/<job_id>` and of
//! telling a retried submission from another job under the same `Idempotency-Key`.
//!
//! JetStream finds a message by sequence or subject, never by `Nats-Msg-Id`, so every accepted
//! job is recorded in a key-value bucket of the same JetStream ([`index_bucket`]): job id →
//! [`IndexEntry`] (stream, sequence, owner, submission time, payload digest). It lives as long
//! as the stream keeps jobs, is shared by every gateway and survives restarts.
//!
//! A retry's publish is de-duplicated by JetStream, which only answers the original sequence:
//! the stored message is read back and its job compared byte for byte with the new one (the
//! index's digest when the message is gone, e.g. consumed from a work-queue stream).

use crate::auth::Identity;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// What the index holds for one job (JSON, under the job id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexEntry {
    /// Stream that stored the job.
    pub(crate) stream: String,
    /// Its sequence there.
    pub(crate) seq: u64,
    /// The `sub` that submitted it: the one identity (besides `jobs.status_roles`) that reads it.
    pub(crate) user_id: String,
    /// The envelope's `submitted_at`.
    pub(crate) submitted_at: String,
    /// SHA-256 (hex) of the job as submitted; jobs with an `Idempotency-Key` only (others can
    /// never be retried under the same id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) job_sha256: Option<String>,
}

/// Where a job is in its scheduler's hands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    /// In the stream, not handed to the scheduler's consumer yet (or no consumer is named).
    Stored,
    /// Delivered to the consumer, not acknowledged yet.
    Delivered,
    /// Acknowledged by the consumer.
    Acknowledged,
}

impl JobState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Delivered => "delivered",
            Self::Acknowledged => "acknowledged",
        }
    }
}

/// The index bucket of a stream: `siger_jobs_<stream>`, with characters a bucket name cannot
/// hold (`[A-Za-z0-9_-]` only) replaced by `_`.
pub(crate) fn index_bucket(stream: &str) -> String {
    let name: String =
        stream.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("siger_jobs_{name}")
}

/// SHA-256 (hex) of a job's bytes.
pub(crate) fn job_digest(job: &[u8]) -> String {
    hex::encode(Sha256::digest(job))
}

/// A job's state from its sequence and the consumer's progress: at or below the ack floor it is
/// acknowledged, at or below the last delivered sequence delivered (a job acknowledged out of
/// order above the floor still reads `delivered`: the consumer's state does not say more).
pub(crate) fn state(seq: u64, delivered_seq: u64, ack_floor_seq: u64) -> JobState {
    if seq <= ack_floor_seq {
        JobState::Acknowledged
    } else if seq <= delivered_seq {
        JobState::Delivered
    } else {
        JobState::Stored
    }
}

/// Whether `identity` may read the status of a job `owner` submitted: the owner itself, or an
/// identity with a role in `status_roles`. Everyone else is told the job does not exist.
pub(crate) fn may_read(owner: &str, identity: Option<&Identity>, status_roles: &[String]) -> bool {
    let Some(identity) = identity else { return false };
    identity.sub.as_deref().is_some_and(|sub| !sub.is_empty() && sub == owner)
        || identity.roles.iter().any(|r| status_roles.contains(r))
}

/// The job id of a status path (`<jobs.path>/<job_id>`, the route path without the jobs path):
/// one segment holding a UUID, written as the gateway writes it (hyphenated, lower-case).
pub(crate) fn job_id_of(rest: &str) -> Option<String> {
    let id = rest.strip_prefix('/')?;
    let id = id.strip_suffix('/').unwrap_or(id);
    let parsed = uuid::Uuid::try_parse(id).ok()?;
    let canonical = parsed.hyphenated().to_string();
    (canonical == id).then_some(canonical)
}

/// What a stored envelope says about its job: (job bytes, `user_id`, `submitted_at`).
#[derive(Debug, Deserialize)]
struct StoredEnvelope<'a> {
    user_id: String,
    submitted_at: String,
    #[serde(borrow)]
    job: &'a RawValue,
}

/// The job, owner and submission time of a stored envelope (`None`: not one of ours).
pub(crate) fn stored_job(payload: &[u8]) -> Option<(&str, String, String)> {
    let envelope: StoredEnvelope<'_> = serde_json::from_slice(payload).ok()?;
    Some((envelope.job.get(), envelope.user_id, envelope.submitted_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::request::{parse_job, Envelope};

    fn identity(sub: Option<&str>, roles: &[&str]) -> Identity {
        Identity {
            sub: sub.map(str::to_string),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            claims: Default::default(),
            forward: Vec::new(),
            scheme: Default::default(),
            plan: None,
            tenant: None,
        }
    }

    #[test]
    fn the_submitter_or_a_status_role_reads_a_job() {
        let ops = vec!["ops".to_string()];
        assert!(may_read("alice", Some(&identity(Some("alice"), &[])), &[]));
        assert!(!may_read("alice", Some(&identity(Some("bob"), &["user"])), &ops));
        assert!(may_read("alice", Some(&identity(Some("bob"), &["ops"])), &ops));
        assert!(may_read("alice", Some(&identity(None, &["ops"])), &ops));
        assert!(!may_read("", Some(&identity(Some(""), &[])), &[]), "an empty sub owns nothing");
        assert!(!may_read("alice", None, &ops));
    }

    #[test]
    fn state_follows_the_consumer() {
        assert_eq!(state(5, 4, 3), JobState::Stored);
        assert_eq!(state(5, 5, 4), JobState::Delivered);
        assert_eq!(state(5, 9, 5), JobState::Acknowledged);
        assert_eq!(state(1, 0, 0), JobState::Stored);
    }

    #[test]
    fn status_paths_name_one_canonical_uuid() {
        let id = "0190d7a4-7c3e-7a1b-9c2d-1234567890ab";
        assert_eq!(job_id_of(&format!("/{id}")).as_deref(), Some(id));
        assert_eq!(job_id_of(&format!("/{id}/")).as_deref(), Some(id));
        for bad in ["", "/", "/x", &format!("/{id}/more"), &format!("/{}", id.to_uppercase()), id] {
            assert_eq!(job_id_of(bad), None, "{bad}");
        }
        assert_eq!(job_id_of("/0190d7a47c3e7a1b9c2d1234567890ab"), None, "simple form is not how ids are written");
    }

    #[test]
    fn bucket_names_hold_only_what_nats_allows() {
        assert_eq!(index_bucket("JOBS"), "siger_jobs_JOBS");
        assert_eq!(index_bucket("render-jobs_v2"), "siger_jobs_render-jobs_v2");
        assert_eq!(index_bucket("a:b"), "siger_jobs_a_b");
    }

    #[test]
    fn a_stored_envelope_gives_back_its_job_byte_for_byte() {
        let job = parse_job(br#"{"n": 1.50, "a": [1]}"#).expect("object");
        let payload =
            Envelope { job_id: "id", user_id: "alice", submitted_at: "2026-01-02T03:04:05.678Z", request_id: "r", job }
                .to_bytes();
        let (stored, user, at) = stored_job(&payload).expect("ours");
        assert_eq!(stored, r#"{"n": 1.50, "a": [1]}"#);
        assert_eq!((user.as_str(), at.as_str()), ("alice", "2026-01-02T03:04:05.678Z"));
        assert_eq!(job_digest(stored.as_bytes()), job_digest(job.get().as_bytes()));
        assert_ne!(job_digest(b"{\"n\": 1.5, \"a\": [1]}"), job_digest(stored.as_bytes()));
        assert!(stored_job(b"not json").is_none());
    }
}
