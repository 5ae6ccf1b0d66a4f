//! `jobs`: the reserved submission path and its JetStream stream.

use super::*;

/// Whether NATS subject `subject` is matched by `pattern` (`*` one token, `>` the rest).
pub(crate) fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pt = pattern.split('.');
    let mut st = subject.split('.');
    loop {
        match (pt.next(), st.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

pub(super) fn valid_subject(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|t| !t.is_empty() && !t.contains(char::is_whitespace))
}

pub(super) fn check_jobs(raw: &RawJobs, base: &Path, p: &mut Problems) -> Option<JobsSettings> {
    let path = raw.path.clone().unwrap_or_else(|| "/jobs/submit".into());
    match normalize_path(&path) {
        Ok(n) if n == path && path != "/" => {}
        _ => p.add("jobs.path", format!("`{path}` must be a normalised absolute path other than `/`")),
    }
    if path == "/health" {
        p.add("jobs.path", "`/health` is the public health check");
    }
    if !valid_subject(&raw.subject) || raw.subject.contains(['*', '>']) {
        p.add("jobs.subject", format!("`{}` is not a concrete NATS subject (no wildcards)", raw.subject));
    }
    let s = &raw.stream;
    if s.name.is_empty() || s.name.contains(['.', '*', '>', ' ', '/', '\\']) {
        p.add("jobs.stream.name", format!("`{}` is not a valid stream name (no . * > / \\ or spaces)", s.name));
    }
    if s.subjects.is_empty() {
        p.add("jobs.stream.subjects", "list at least one subject");
    }
    for (i, subj) in s.subjects.iter().enumerate() {
        if !valid_subject(subj) {
            p.add(format!("jobs.stream.subjects[{i}]"), format!("`{subj}` is not a valid subject"));
        }
    }
    if !s.subjects.iter().any(|pat| subject_matches(pat, &raw.subject)) {
        p.add("jobs.subject", format!("`{}` is not captured by any of jobs.stream.subjects", raw.subject));
    }
    let storage = match s.storage.as_deref().unwrap_or("file") {
        "file" => StreamStorage::File,
        "memory" => StreamStorage::Memory,
        other => {
            p.add("jobs.stream.storage", format!("`{other}` is not one of file, memory"));
            StreamStorage::File
        }
    };
    let replicas = s.replicas.unwrap_or(1);
    if !(1..=5).contains(&replicas) {
        p.add("jobs.stream.replicas", "must be between 1 and 5");
    }
    let duplicate_window = dur(&s.duplicate_window, Duration::from_secs(120));
    if duplicate_window < Duration::from_secs(1) {
        p.add("jobs.stream.duplicate_window", "must be at least 1s: it is what makes Idempotency-Key retries safe");
    }
    let max_age = dur(&s.max_age, Duration::from_secs(7 * 86_400));
    if max_age != Duration::ZERO && max_age < duplicate_window {
        p.add("jobs.stream.max_age", "must not be shorter than duplicate_window");
    }
    let ack_timeout = dur(&raw.ack_timeout, Duration::from_secs(5));
    if ack_timeout < Duration::from_millis(10) || ack_timeout > Duration::from_secs(60) {
        p.add("jobs.ack_timeout", "must be between 10ms and 60s");
    }
    let max_body = raw.max_body.map(|b| b.0).unwrap_or(1 << 20);
    if max_body == 0 {
        p.add("jobs.max_body", "must be at least 1 byte");
    }
    let body_timeout = dur(&raw.body_timeout, Duration::from_secs(10));
    if body_timeout < Duration::from_millis(100) || body_timeout > Duration::from_secs(300) {
        p.add("jobs.body_timeout", "must be between 100ms and 5m");
    }
    for (i, role) in raw.roles.iter().enumerate() {
        if role.trim().is_empty() {
            p.add(format!("jobs.roles[{i}]"), "role names cannot be empty");
        }
    }
    for (i, role) in raw.status_roles.iter().enumerate() {
        if role.trim().is_empty() {
            p.add(format!("jobs.status_roles[{i}]"), "role names cannot be empty");
        }
    }
    if let Some(consumer) = &raw.consumer {
        if consumer.is_empty()
            || consumer.contains(['.', '*', '>', '/', '\\'])
            || consumer.contains(char::is_whitespace)
        {
            p.add(
                "jobs.consumer",
                format!("`{consumer}` is not a valid durable consumer name (no . * > / \\ or spaces)"),
            );
        }
    }
    let rate_limit = raw.rate_limit.as_ref().and_then(|r| check_rule("jobs.rate_limit", r, p));
    let schema = raw.schema.as_deref().and_then(|f| read_file("jobs.schema", base, f, p));
    Some(JobsSettings {
        schema,
        path,
        subject: raw.subject.clone(),
        stream: StreamSettings {
            name: s.name.clone(),
            subjects: s.subjects.clone(),
            create: s.create.unwrap_or(true),
            storage,
            replicas,
            max_age,
            duplicate_window,
        },
        roles: raw.roles.clone(),
        max_body,
        ack_timeout,
        body_timeout,
        rate_limit,
        status_roles: raw.status_roles.clone(),
        consumer: raw.consumer.clone(),
    })
}
