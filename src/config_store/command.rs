//! `siger config …`: the operator's side of the store (push, history, diff, rollback, status,
//! watch, split). Every command reads the bootstrap file given with `-c` for `nats` and
//! `config_source`; push and rollback check the document with it exactly as `-t` would and
//! write nothing when it fails.

use super::document::{split, Bootstrap, Checked, Origin};
use super::follow::Cursor;
use super::status::render;
use super::store::{ConfigStore, Followed, PushError, StoredRevision};
use crate::cli::ConfigCommand;
use crate::config::{ConfigError, ConfigErrors, ConfigSourceSettings, NatsSettings};
use std::path::Path;
use std::process::ExitCode;

/// sysexits.h EX_CONFIG, as `-t` answers an invalid configuration.
const EX_CONFIG: u8 = 78;

/// How a command ended: what to print on stderr and the exit status.
enum Failure {
    /// The configuration (document or bootstrap file) is invalid: nothing was written.
    Invalid(Vec<ConfigErrors>),
    /// Anything else (the store, a conflict, a file).
    Other(String),
}

impl From<super::store::StoreError> for Failure {
    fn from(e: super::store::StoreError) -> Self {
        Failure::Other(e.0)
    }
}

impl From<PushError> for Failure {
    fn from(e: PushError) -> Self {
        Failure::Other(e.to_string())
    }
}

/// Run `siger config <command>` with the bootstrap file `bootstrap`.
pub fn run(command: &ConfigCommand, bootstrap: &Path) -> ExitCode {
    let outcome = match command {
        ConfigCommand::Split { file, bootstrap, document } => write_split(file, bootstrap, document),
        _ => with_store(command, bootstrap),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Invalid(errors)) => {
            for e in errors {
                eprint!("{e}");
            }
            eprintln!("nothing was written");
            ExitCode::from(EX_CONFIG)
        }
        Err(Failure::Other(message)) => {
            eprintln!("siger config: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The bootstrap file, its `config_source` and its `nats` section.
fn read_bootstrap(path: &Path) -> Result<(Bootstrap, ConfigSourceSettings, NatsSettings), Failure> {
    let bootstrap = Bootstrap::read(path).map_err(|e| Failure::Invalid(vec![e]))?;
    let whole = |message: &str| {
        Failure::Invalid(vec![ConfigErrors {
            file: path.display().to_string(),
            errors: vec![ConfigError { path: String::new(), line: None, message: message.into() }],
        }])
    };
    let source = bootstrap.source.clone().ok_or_else(|| {
        whole("has no `config_source`: name the store with config_source.nats_kv {bucket, key} and cache_file")
    })?;
    // The bootstrap file alone is a configuration (listeners, admin, nats): checked as such.
    let alone = bootstrap.alone().map_err(Failure::Invalid)?;
    let nats = alone.config.nats.ok_or_else(|| whole("has `config_source` but no `nats` section to reach it"))?;
    Ok((bootstrap, source, nats))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(format!("cannot start: {e}")))
}

fn with_store(command: &ConfigCommand, path: &Path) -> Result<(), Failure> {
    let (bootstrap, source, nats) = read_bootstrap(path)?;
    // A push is checked before the store is even reached: an invalid one writes nothing.
    let pushed = match command {
        ConfigCommand::Push { file, .. } => Some(read_document(file, &bootstrap)?),
        _ => None,
    };
    let create = matches!(command, ConfigCommand::Push { .. } | ConfigCommand::Rollback { .. });
    let runtime = runtime()?;
    runtime.block_on(async {
        let (store, warnings) = ConfigStore::connect(&nats, &source.nats_kv, create).await?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        let done = match command {
            ConfigCommand::Push { file, expect_revision } => {
                let document = pushed.unwrap_or_default();
                push(&store, &document, *expect_revision, &format!("push {}", file.display())).await
            }
            ConfigCommand::History => history(&store).await,
            ConfigCommand::Diff { from, to } => diff(&store, *from, *to).await,
            ConfigCommand::Rollback { revision } => rollback(&store, &bootstrap, *revision).await,
            ConfigCommand::Status => status(&store).await,
            ConfigCommand::Watch => watch(&store, &bootstrap).await,
            ConfigCommand::Split { .. } => Ok(()),
        };
        store.close().await;
        done
    })
}

/// Print a check's warnings and its summary line.
fn report_checked(checked: &Checked, what: &str) {
    for part in &checked.warnings {
        for w in part.errors.iter().filter(|w| !super::document::unused_nats(w)) {
            eprintln!("{}: warning: {w}", part.file);
        }
    }
    let c = &checked.config;
    eprintln!(
        "{what}: configuration OK ({} listeners, {} services, {} routes, {} files read)",
        c.listeners.len(),
        c.services.len(),
        c.routes.len() - usize::from(c.jobs.is_some()),
        c.files.len(),
    );
}

/// Read FILE and check it merged with the bootstrap file.
fn read_document(file: &Path, bootstrap: &Bootstrap) -> Result<String, Failure> {
    let size = std::fs::metadata(file).map_err(|e| Failure::Other(format!("cannot read {}: {e}", file.display())))?;
    if size.len() > crate::config::MAX_CONFIG_BYTES {
        return Err(Failure::Other(format!(
            "{} has {} bytes; a config may have at most 4MiB",
            file.display(),
            size.len()
        )));
    }
    let text =
        std::fs::read_to_string(file).map_err(|e| Failure::Other(format!("cannot read {}: {e}", file.display())))?;
    let merged = bootstrap.merge(&text, Origin::File(file.to_path_buf())).map_err(|e| Failure::Invalid(vec![e]))?;
    let checked = merged.check().map_err(Failure::Invalid)?;
    report_checked(&checked, &file.display().to_string());
    Ok(text)
}

async fn push(store: &ConfigStore, document: &str, expect: Option<u64>, note: &str) -> Result<(), Failure> {
    let current = store.current().await?;
    let read = current.as_ref().map_or(0, |r| r.revision);
    if let Some(expected) = expect.filter(|e| *e != read) {
        return Err(PushError::Conflict { read: expected, now: read }.into());
    }
    let read = expect.unwrap_or(read);
    if current.as_ref().is_some_and(|r| !r.deleted && r.document == document) {
        println!("{}: revision {read} already holds this document; nothing written", store.name());
        return Ok(());
    }
    let pushed = store.push(document, read, note).await?;
    let retried = if pushed.retried { " (confirmed after a retry)" } else { "" };
    match read {
        0 => println!("{}: revision {} written, the first{retried}", store.name(), pushed.revision),
        _ => println!("{}: revision {} written, after revision {read}{retried}", store.name(), pushed.revision),
    }
    Ok(())
}

async fn history(store: &ConfigStore) -> Result<(), Failure> {
    let revisions = store.history().await?;
    if revisions.is_empty() {
        println!("{}: no revision yet", store.name());
        return Ok(());
    }
    println!("{:>8}  {:20}  {:>7}  {:12}  {:24}  NOTE", "REVISION", "TIME (UTC)", "BYTES", "SHA256", "PUSHED BY");
    for r in &revisions {
        let time = r.time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let time = time.split('.').next().unwrap_or_default().trim_end_matches('Z').to_string() + "Z";
        let digest = if r.deleted { "(deleted)".to_string() } else { short_digest(&r.document) };
        println!(
            "{:>8}  {time:20}  {:>7}  {digest:12}  {:24}  {}",
            r.revision,
            r.document.len(),
            r.pushed_by.as_deref().unwrap_or("-"),
            r.note.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

fn short_digest(document: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(document.as_bytes()))[..12].to_string()
}

async fn diff(store: &ConfigStore, from: u64, to: Option<u64>) -> Result<(), Failure> {
    let older = store.revision(from).await?;
    let newer = match to {
        Some(to) => store.revision(to).await?,
        None => store.current().await?.ok_or_else(|| Failure::Other(format!("{} has no revision", store.name())))?,
    };
    print!("{}", unified_diff(&store.name(), &older, &newer));
    Ok(())
}

/// The unified diff of two revisions' documents (empty when they are the same).
pub fn unified_diff(name: &str, older: &StoredRevision, newer: &StoredRevision) -> String {
    let diff = similar::TextDiff::from_lines(&older.document, &newer.document);
    diff.unified_diff()
        .context_radius(3)
        .header(&format!("{name} revision {}", older.revision), &format!("{name} revision {}", newer.revision))
        .to_string()
}

async fn rollback(store: &ConfigStore, bootstrap: &Bootstrap, revision: u64) -> Result<(), Failure> {
    let target = store.revision(revision).await?;
    if target.deleted {
        return Err(Failure::Other(format!("revision {revision} deleted the key; it holds no document")));
    }
    let origin = Origin::Revision { bucket: store.bucket.clone(), key: store.key.clone(), revision };
    let merged = bootstrap.merge(&target.document, origin.clone()).map_err(|e| Failure::Invalid(vec![e]))?;
    let checked = merged.check().map_err(Failure::Invalid)?;
    report_checked(&checked, &origin.to_string());
    push(store, &target.document, None, &format!("rollback to revision {revision}")).await
}

async fn status(store: &ConfigStore) -> Result<(), Failure> {
    let current = store.current().await?.map(|r| r.revision);
    let (statuses, unreadable) = store.statuses().await?;
    print!("{}", render(&store.name(), current, &statuses, time::OffsetDateTime::now_utc()));
    for line in unreadable {
        println!("unreadable: {line}");
    }
    Ok(())
}

async fn watch(store: &ConfigStore, bootstrap: &Bootstrap) -> Result<(), Failure> {
    crate::observability::logger::init();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    // The follower retries on its own: a failed request restarts its watch.
    let follower = store.clone().with_patience(std::time::Duration::from_secs(2));
    tokio::spawn(async move { follower.follow(&mut Cursor::default(), tx).await });
    while let Some(followed) = rx.recv().await {
        match followed {
            Followed::Apply(r) => {
                let origin =
                    Origin::Revision { bucket: store.bucket.clone(), key: store.key.clone(), revision: r.revision };
                let verdict = bootstrap.merge(&r.document, origin).map_err(|e| vec![e]).and_then(|m| m.check());
                match verdict {
                    Ok(_) => println!("revision {}: would apply ({})", r.revision, short_digest(&r.document)),
                    Err(errors) => {
                        println!("revision {}: would refuse", r.revision);
                        for e in errors {
                            print!("{e}");
                        }
                    }
                }
            }
            Followed::Superseded(revision) => println!("revision {revision}: skipped, a newer revision follows"),
            Followed::Deleted(revision) => println!("revision {revision}: the key was deleted; keeping the last"),
            Followed::Unreadable { revision, why } => println!("revision {revision}: would refuse: {why}"),
            Followed::NewHistory { previous, now } => println!(
                "new history: revision {} after {}",
                now.map_or("none".into(), |n| n.to_string()),
                previous.map_or("none".into(), |n| n.to_string())
            ),
        }
    }
    Ok(())
}

/// `siger config split`: write the two parts of a whole file to new files.
fn write_split(file: &Path, bootstrap: &Path, document: &Path) -> Result<(), Failure> {
    let text =
        std::fs::read_to_string(file).map_err(|e| Failure::Other(format!("cannot read {}: {e}", file.display())))?;
    let parts = split(&text, &Origin::File(file.to_path_buf())).map_err(|e| Failure::Invalid(vec![e]))?;
    if let Some(taken) = [bootstrap, document].into_iter().find(|p| p.exists()) {
        return Err(Failure::Other(format!("{} exists; split writes new files only", taken.display())));
    }
    for (path, body) in [(bootstrap, &parts.bootstrap), (document, &parts.document)] {
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, body.as_bytes()));
        written.map_err(|e| Failure::Other(format!("cannot write {}: {e}", path.display())))?;
    }
    if parts.bootstrap.contains("config_source:") {
        println!("{}: bootstrap file; {}: document to push", bootstrap.display(), document.display());
    } else {
        println!(
            "{}: bootstrap file (add config_source: {{nats_kv: {{bucket, key}}, cache_file}} to it); {}: document to push",
            bootstrap.display(),
            document.display()
        );
    }
    Ok(())
}
