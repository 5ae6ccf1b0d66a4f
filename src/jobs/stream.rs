//! Stream bootstrap: with `jobs.stream.create` the stream is created when missing, and an
//! existing one is compared with the config. A difference is reported (error log + `/ready`),
//! never "fixed": changing retention or storage of a live stream is an operator's decision.
//! Uses only the 2.9 stream API (STREAM.INFO / STREAM.CREATE). The job index (see
//! `jobs::status`) is a key-value bucket Siger owns (`crate::nats`): found, or created alike
//! with the stream.

use crate::config::{subject_matches, JobsSettings, StreamSettings, StreamStorage};
use crate::nats::{open_or_create_bucket, BucketLayout, BucketOpened};
use async_nats::jetstream::context::Context;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{Config, StorageType};
use async_nats::jetstream::ErrorCode;
use std::collections::BTreeSet;
use std::time::Duration;

/// What bootstrap found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamCheck {
    /// The stream exists and matches.
    Matches,
    /// The stream was missing and has been created.
    Created,
    /// The stream exists but differs (each entry says how).
    Differs(Vec<String>),
    /// The stream does not exist and `create` is off.
    Missing,
}

/// The stream config Siger creates.
pub(crate) fn desired_config(s: &StreamSettings) -> Config {
    Config {
        name: s.name.clone(),
        subjects: s.subjects.clone(),
        storage: storage_type(s.storage),
        num_replicas: s.replicas,
        max_age: s.max_age,
        duplicate_window: s.duplicate_window,
        max_bytes: -1,
        max_messages: -1,
        max_messages_per_subject: -1,
        max_consumers: -1,
        ..Config::default()
    }
}

fn storage_type(s: StreamStorage) -> StorageType {
    match s {
        StreamStorage::File => StorageType::File,
        StreamStorage::Memory => StorageType::Memory,
    }
}

fn storage_name(s: StorageType) -> &'static str {
    match s {
        StorageType::File => "file",
        StorageType::Memory => "memory",
    }
}

fn human(d: Duration) -> String {
    if d.is_zero() {
        return "unlimited".into();
    }
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 {
        format!("{}ms", d.as_millis())
    } else if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else if secs % 3_600 == 0 {
        format!("{}h", secs / 3_600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// How an existing stream's config differs from `jobs` (empty when it matches). With
/// `create: false` only what publishing depends on is checked: that the stream captures
/// `jobs.subject`.
pub(crate) fn differences(jobs: &JobsSettings, have: &Config) -> Vec<String> {
    let want = &jobs.stream;
    let mut out = Vec::new();
    if !have.subjects.iter().any(|p| subject_matches(p, &jobs.subject)) {
        out.push(format!("its subjects {:?} do not capture jobs.subject `{}`", have.subjects, jobs.subject));
    }
    if !want.create {
        return out;
    }
    let have_subjects: BTreeSet<&String> = have.subjects.iter().collect();
    let want_subjects: BTreeSet<&String> = want.subjects.iter().collect();
    if have_subjects != want_subjects {
        out.push(format!("subjects are {:?} (config: {:?})", have.subjects, want.subjects));
    }
    if have.storage != storage_type(want.storage) {
        out.push(format!(
            "storage is {} (config: {})",
            storage_name(have.storage),
            storage_name(storage_type(want.storage))
        ));
    }
    if have.num_replicas.max(1) != want.replicas {
        out.push(format!("replicas is {} (config: {})", have.num_replicas, want.replicas));
    }
    if have.max_age != want.max_age {
        out.push(format!("max_age is {} (config: {})", human(have.max_age), human(want.max_age)));
    }
    if have.duplicate_window != want.duplicate_window {
        out.push(format!(
            "duplicate_window is {} (config: {})",
            human(have.duplicate_window),
            human(want.duplicate_window)
        ));
    }
    out
}

/// Look the stream up; create it when missing and allowed. Errors are transport or API
/// failures worth retrying.
pub(crate) async fn ensure(js: &Context, jobs: &JobsSettings) -> Result<StreamCheck, String> {
    let name = &jobs.stream.name;
    match js.get_stream(name).await {
        Ok(stream) => {
            let diff = differences(jobs, &stream.cached_info().config);
            Ok(if diff.is_empty() { StreamCheck::Matches } else { StreamCheck::Differs(diff) })
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                if !jobs.stream.create {
                    return Ok(StreamCheck::Missing);
                }
                match js.create_stream(desired_config(&jobs.stream)).await {
                    Ok(_) => Ok(StreamCheck::Created),
                    // Another gateway instance created it first: compare with theirs.
                    Err(e) if e.to_string().contains("already in use") => {
                        let stream = js.get_stream(name).await.map_err(|e| e.to_string())?;
                        let diff = differences(jobs, &stream.cached_info().config);
                        Ok(if diff.is_empty() { StreamCheck::Matches } else { StreamCheck::Differs(diff) })
                    }
                    Err(e) => Err(format!("cannot create stream: {e}")),
                }
            }
            _ => Err(format!("cannot look up stream: {e}")),
        },
    }
}

/// The job index's key-value bucket: one entry per job id, kept as long as the stream keeps
/// jobs, stored and replicated as the stream is.
pub(crate) fn index_layout(s: &StreamSettings) -> BucketLayout {
    BucketLayout {
        bucket: super::status::index_bucket(&s.name),
        description: format!("Siger job index: job id -> sequence in stream {}", s.name),
        history: 1,
        max_age: s.max_age,
        storage: storage_type(s.storage),
        replicas: s.replicas,
    }
}

/// Find the job index bucket, creating it when missing (another gateway may create it at the
/// same moment: then theirs is used).
pub(crate) async fn ensure_index(js: &Context, jobs: &JobsSettings) -> Result<kv::Store, String> {
    let layout = index_layout(&jobs.stream);
    let (store, opened) = open_or_create_bucket(js, &layout).await?;
    if opened == BucketOpened::Created {
        log::info!("jobs index {}: created", layout.bucket);
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(create: bool) -> JobsSettings {
        JobsSettings {
            schema: None,
            rate_limit: None,
            path: "/jobs/submit".into(),
            subject: "jobs.submitted".into(),
            stream: StreamSettings {
                name: "JOBS".into(),
                subjects: vec!["jobs.>".into()],
                create,
                storage: StreamStorage::File,
                replicas: 1,
                max_age: Duration::from_secs(7 * 86_400),
                duplicate_window: Duration::from_secs(120),
            },
            roles: vec![],
            max_body: 1 << 20,
            ack_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            status_roles: vec![],
            consumer: None,
        }
    }

    #[test]
    fn desired_config_matches_itself() {
        let j = jobs(true);
        let c = desired_config(&j.stream);
        assert_eq!(c.storage, StorageType::File);
        assert_eq!(c.duplicate_window, Duration::from_secs(120));
        assert!(differences(&j, &c).is_empty());
    }

    #[test]
    fn every_difference_is_named() {
        let j = jobs(true);
        let mut have = desired_config(&j.stream);
        have.subjects = vec!["other.>".into()];
        have.storage = StorageType::Memory;
        have.num_replicas = 3;
        have.max_age = Duration::from_secs(3600);
        have.duplicate_window = Duration::from_secs(30);
        let d = differences(&j, &have).join("; ");
        for needle in [
            "do not capture jobs.subject",
            "storage is memory (config: file)",
            "replicas is 3 (config: 1)",
            "max_age is 1h (config: 7d)",
            "duplicate_window is 30s (config: 2m)",
        ] {
            assert!(d.contains(needle), "{needle:?} missing in {d}");
        }
    }

    #[test]
    fn unmanaged_stream_only_needs_to_capture_the_subject() {
        let j = jobs(false);
        let mut have = desired_config(&j.stream);
        have.max_age = Duration::ZERO;
        have.subjects = vec!["jobs.submitted".into()];
        assert!(differences(&j, &have).is_empty());
        have.subjects = vec!["x".into()];
        assert_eq!(differences(&j, &have).len(), 1);
    }
}
