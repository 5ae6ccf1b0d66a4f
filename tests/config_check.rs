//! `siger -t`: the shipped configs pass; broken ones exit 78 naming the key and the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use std::process::Command;
use support::SIGER;

fn check(text: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("siger.yaml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(SIGER);
    cmd.arg("-t").arg("-c").arg(&path).env_remove("SIGER_JWT_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

const GOOD: &str = "listen: [\"127.0.0.1:8080\"]\nservices:\n  s:\n    targets: [\"127.0.0.1:9001\"]\nroutes:\n  - path: /\n    service: s\n    auth: public\n";

#[test]
fn shipped_configs_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut checked = 0;
    for entry in std::fs::read_dir(format!("{root}/conf")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = Command::new(SIGER)
                .arg("-t")
                .arg("-c")
                .arg(&path)
                .env("SIGER_JWT_SECRET", "a-test-secret-that-is-long-enough-0123456789")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{}: {stderr}", path.display());
            assert!(stderr.contains("configuration OK"), "{stderr}");
            checked += 1;
        }
    }
    assert!(checked >= 2, "conf/siger.yaml and conf/demo.yaml at least");
}

#[test]
fn minimal_config_is_valid() {
    let (code, stderr) = check(GOOD, &[]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn broken_configs_name_the_key_and_exit_78() {
    let secret_route = GOOD.replace("    auth: public\n", "");
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown top-level key", format!("{GOOD}listeners: []\n"), "listeners"),
        ("typo in a service key", GOOD.replace("    targets:", "    target:"), "services.s"),
        ("route to an unknown service", GOOD.replace("service: s", "service: nope"), "routes[0].service"),
        (
            "duration without unit",
            GOOD.replace("    targets:", "    connect_timeout: 5\n    targets:"),
            "services.s.connect_timeout",
        ),
        ("bad listen address", GOOD.replace("127.0.0.1:8080", "localhost"), "listen[0]"),
        ("bad CIDR", format!("trusted_proxies: [10.0.0.0/33]\n{GOOD}"), "trusted_proxies[0]"),
        ("unknown lb", GOOD.replace("    targets:", "    lb: fastest\n    targets:"), "services.s.lb"),
        ("bad target", GOOD.replace("127.0.0.1:9001", "not-an-address"), "services.s.targets[0]"),
        ("non-normalised route path", GOOD.replace("path: /", "path: /a/../b"), "routes[0].path"),
        ("duplicate route", format!("{GOOD}  - path: /\n    service: s\n    auth: public\n"), "routes[1].path"),
        (
            "alg none",
            format!(
                "auth:\n  jwt:\n    algorithms: [none]\n    secret: 0123456789abcdef0123456789abcdef\n{secret_route}"
            ),
            "auth.jwt.algorithms[0]",
        ),
        (
            "missing environment variable",
            format!("auth:\n  jwt:\n    algorithms: [HS256]\n    secret: ${{SIGER_JWT_SECRET}}\n{secret_route}"),
            "auth.jwt.secret",
        ),
        ("route needs auth but none configured", secret_route.clone(), "routes[0].auth"),
        (
            "discovery without consul",
            GOOD.replace("    targets: [\"127.0.0.1:9001\"]", "    discovery: {consul: users}"),
            "services.s.discovery",
        ),
        (
            "jobs without nats",
            format!("{GOOD}jobs:\n  subject: jobs.submitted\n  stream: {{name: JOBS, subjects: [\"jobs.>\"]}}\n"),
            "jobs",
        ),
        ("size with a bad unit", format!("limits: {{max_body: 10MB/s}}\n{GOOD}"), "limits.max_body"),
        ("YAML syntax error", format!("{GOOD}  - path: [\n"), "line"),
        (
            "health-check interval that would overflow a timer",
            GOOD.replace("    targets:", "    health_check: {interval: 99999999999999d}\n    targets:"),
            "services.s.health_check.interval",
        ),
        (
            "nested default whose variable is unset too",
            format!(
                "auth:\n  jwt:\n    algorithms: [HS256]\n    secret: \"${{UNSET_A:-${{UNSET_B}}}}\"\n{secret_route}"
            ),
            "environment variable `UNSET_B` is not set",
        ),
        ("route path with parameters", GOOD.replace("path: /", "path: /a;b"), "routes[0].path"),
        ("nesting beyond any schema", format!("{GOOD}x: {}{}\n", "[".repeat(40), "]".repeat(40)), "nests deeper"),
    ];
    assert!(cases.len() >= 8);
    for (what, text, key) in cases {
        let (code, stderr) = check(&text, &[]);
        assert_eq!(code, 78, "{what}: exit code ({stderr})");
        assert!(stderr.contains(key), "{what}: stderr must name `{key}`:\n{stderr}");
    }
}

#[test]
fn an_oversized_file_is_refused_before_parsing() {
    let routes = "  - {path: /x, service: s, auth: public}\n".repeat(120_000);
    let (code, stderr) = check(&format!("{GOOD}{routes}"), &[]);
    assert_eq!(code, 78);
    assert!(stderr.contains("at most 4MiB"), "{stderr}");
}

#[test]
fn several_problems_are_reported_together_with_lines() {
    let text = "listen: [\"127.0.0.1:8080\", \"bad\"]\nservices:\n  s:\n    targets: [\"127.0.0.1:9001\"]\n    lb: fastest\nroutes:\n  - path: /\n    service: nope\n    auth: public\n";
    let (code, stderr) = check(text, &[]);
    assert_eq!(code, 78);
    assert!(stderr.contains("3 configuration errors"), "{stderr}");
    assert!(stderr.contains("listen[1] (line 1)"), "{stderr}");
    assert!(stderr.contains("services.s.lb (line 5)"), "{stderr}");
    assert!(stderr.contains("routes[0].service (line 8)"), "{stderr}");
}
