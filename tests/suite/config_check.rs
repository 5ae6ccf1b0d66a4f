//! `siger -t`: the shipped configs and ARCHITECTURE §3's example pass; every broken fixture
//! exits 78 with exactly the diagnostics in its `.expected` file (key path, line, reason), and
//! settings that have no effect are warnings (exit 0).
//!
//! Regenerate the golden files after an intended message change with
//! `SIGER_BLESS=1 cargo test --test suite config_check::`, then review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::SIGER;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `siger -t -c path` with the given environment (and no SIGER_JWT_SECRET otherwise): stderr
/// followed by `exit N`.
fn check_file(path: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(SIGER);
    cmd.arg("-t").arg("-c").arg(path).env_remove("SIGER_JWT_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    // Files named by a config appear with their absolute path: show the checkout as `.`.
    let here = std::env::current_dir().unwrap().display().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&here, ".");
    format!("{stderr}exit {}\n", out.status.code().unwrap_or(-1))
}

fn check(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("siger.yaml");
    std::fs::write(&path, text).unwrap();
    check_file(&path, &[])
}

/// Fixtures of one kind, as paths relative to the package (so the output names them alike on
/// every machine).
fn fixtures(kind: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(format!("tests/fixtures/config/{kind}"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn assert_golden(kind: &str, expected_exit: &str) {
    let files = fixtures(kind);
    assert!(!files.is_empty());
    let bless = std::env::var_os("SIGER_BLESS").is_some();
    let mut wrong = Vec::new();
    for file in &files {
        let actual = check_file(file, &[]);
        let golden = file.with_extension("expected");
        if bless {
            std::fs::write(&golden, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        assert!(actual.ends_with(expected_exit), "{}: {actual}", file.display());
        if actual != expected {
            wrong.push(format!("{}:\n--- expected\n{expected}--- actual\n{actual}", file.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\nafter an intended message change: SIGER_BLESS=1 cargo test --test suite config_check::, then review the diff",
        wrong.join("\n")
    );
}

#[test]
fn broken_configs_name_key_line_and_reason_and_exit_78() {
    assert_golden("invalid", "exit 78\n");
}

#[test]
fn settings_without_effect_are_warnings() {
    assert_golden("warnings", "exit 0\n");
}

#[test]
fn shipped_configs_and_the_architecture_example_are_valid() {
    let mut checked = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir("conf")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.push(PathBuf::from("tests/fixtures/config/architecture-example.yaml"));
    for path in files {
        let env = [("SIGER_JWT_SECRET", "a-test-secret-that-is-long-enough-0123456789"), ("CONSUL_HTTP_TOKEN", "t")];
        let out = check_file(&path, &env);
        assert!(out.ends_with("exit 0\n") && out.contains("configuration OK"), "{}: {out}", path.display());
        checked += 1;
    }
    assert!(checked >= 3, "conf/siger.yaml, conf/demo.yaml and the example at least");
}

#[test]
fn warnings_go_to_stderr_and_do_not_fail() {
    let text = "listen: [\"127.0.0.1:8080\"]\nrate_limit: {store: local, redis_url: \"redis://127.0.0.1:6379\"}\nservices:\n  s: {targets: [\"127.0.0.1:9001\"]}\nroutes:\n  - {path: /, service: s, auth: public}\n";
    let out = check(text);
    assert!(out.contains("warning: rate_limit.redis_url (line 2)"), "{out}");
    assert!(out.ends_with("exit 0\n"), "{out}");
}

#[test]
fn an_oversized_file_is_refused_before_parsing() {
    let head = "listen: [\"127.0.0.1:8080\"]\nservices:\n  s: {targets: [\"127.0.0.1:9001\"]}\nroutes:\n";
    let routes = "  - {path: /x, service: s, auth: public}\n".repeat(120_000);
    let out = check(&format!("{head}{routes}"));
    assert!(out.contains("at most 4MiB") && out.ends_with("exit 78\n"), "{out}");
}
