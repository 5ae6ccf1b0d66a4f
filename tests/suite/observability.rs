//! Metrics (names and labels are contract, ARCHITECTURE §5), the access log, and the systemd
//! unit's validity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn metrics_have_contract_names_and_bounded_labels() {
    let echo = Echo::start("e");
    let dead_port = DeadPort::new();
    let dead = dead_port.addr();
    let gw = Gateway::start(&format!(
        "services:\n  users: {{targets: [\"{}\"]}}\n  broken: {{targets: [\"{dead}\"], retries: 0}}\nroutes:\n  - {{name: users-api, path: /users, service: users, auth: public}}\n  - {{path: /broken, service: broken, auth: public}}\n",
        echo.addr
    ));
    let before = scrape(&gw);
    for contract in [
        "siger_build_info{version=",
        "siger_backends{service=\"users\",state=\"healthy\"} 1",
        "siger_consul_errors_total 0",
        "siger_jobs_published_total 0",
        "siger_jobs_failed_total{reason=",
        "siger_auth_failures_total{reason=",
        "siger_rate_limited_total{route=\"users-api\"} 0",
        "siger_upstream_errors_total{kind=\"connect\",service=\"broken\"} 0",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(before.contains(contract), "missing {contract}:\n{before}");
    }

    for i in 0..5 {
        assert_eq!(get(gw.addr, &format!("/users/{i}?q={i}")).status, 200);
    }
    assert_eq!(get(gw.addr, "/nowhere/at/all").status, 404);
    assert_eq!(request(gw.addr, "POST", "/users/x", &[], b"{}").status, 200);
    assert_eq!(get(gw.addr, "/broken/1").status, 502);

    // Metrics are recorded in the logging phase, just after the response is written.
    assert!(eventually(Duration::from_secs(2), || metric(&scrape(&gw), "siger_requests_in_flight") == Some(0.0)));
    let after = scrape(&gw);
    let value = |series: &str| metric(&after, series).unwrap_or_else(|| panic!("no {series}:\n{after}"));
    assert_eq!(value("siger_requests_total{method=\"GET\",route=\"users-api\",status=\"200\"}"), 5.0);
    assert_eq!(value("siger_requests_total{method=\"POST\",route=\"users-api\",status=\"200\"}"), 1.0);
    assert_eq!(
        value("siger_requests_total{method=\"GET\",route=\"-\",status=\"404\"}"),
        1.0,
        "unmatched requests use route=\"-\""
    );
    assert_eq!(
        value("siger_requests_total{method=\"GET\",route=\"/broken\",status=\"502\"}"),
        1.0,
        "unnamed routes use their path"
    );
    assert_eq!(value("siger_request_duration_seconds_count{route=\"users-api\"}"), 6.0);
    assert!(after.contains("siger_request_duration_seconds_bucket{route=\"users-api\",le=\"0.0005\"}"));
    assert_eq!(value("siger_upstream_errors_total{kind=\"connect\",service=\"broken\"}"), 1.0);
    assert!(!after.contains("/users/3") && !after.contains("nowhere"), "raw paths never become labels");
}

#[test]
fn access_log_has_one_json_line_per_request() {
    let echo = Echo::start("e");
    let gw = Gateway::start(&format!(
        "services:\n  s: {{targets: [\"{}\"]}}\nroutes:\n  - {{name: r, path: /, service: s, auth: public}}\n",
        echo.addr
    ));
    let r = request(gw.addr, "POST", "/a?b=c", &[("X-Request-Id", "log-test-1")], b"hello");
    assert_eq!(r.status, 200);
    assert!(eventually(Duration::from_secs(2), || gw.access_lines().iter().any(|l| l["request_id"] == "log-test-1")));
    let lines = gw.access_lines();
    let line = lines.iter().find(|l| l["request_id"] == "log-test-1").unwrap();
    for field in [
        "time",
        "client_ip",
        "method",
        "path",
        "route",
        "service",
        "backend",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream_duration_ms",
    ] {
        assert!(line.get(field).is_some(), "access line lacks {field}: {line}");
    }
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/a");
    assert_eq!(line["route"], "r");
    assert_eq!(line["service"], "s");
    assert_eq!(line["backend"], echo.addr.to_string());
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_in"], 5);
    assert!(line["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(lines.iter().filter(|l| l["request_id"] == "log-test-1").count(), 1);
}

#[test]
fn systemd_unit_verifies() {
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = std::fs::read_to_string(format!("{root}/systemd/siger.service")).unwrap();
    for required in [
        "Type=forking",
        "PIDFile=/run/siger/siger.pid",
        "ExecStartPre=/usr/local/bin/siger -t -c",
        "ExecStart=/usr/local/bin/siger -d -c",
        "ExecReload=/usr/local/bin/siger upgrade",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "RuntimeDirectory=siger",
        "LogsDirectory=siger",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "LimitNOFILE=",
        "Restart=on-failure",
        "User=siger",
    ] {
        assert!(unit.contains(required), "unit lacks {required}");
    }
    let stop: u64 = unit.lines().find_map(|l| l.strip_prefix("TimeoutStopSec=")).unwrap().trim().parse().unwrap();
    assert!(stop > 5 + 10, "TimeoutStopSec must exceed grace_period + graceful_shutdown_timeout of conf/siger.yaml");
    // Point the unit at the binary under test so `verify` can check the commands exist.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("siger.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/siger", SIGER)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (install the systemd package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = stderr.lines().filter(|l| l.contains("siger.service")).collect();
    assert!(out.status.success() && problems.is_empty(), "systemd-analyze verify:\n{stderr}");
}

/// Every `siger_*` metric named in `text`, without histogram suffixes.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("siger_") {
        let start = i + pos;
        let end = bytes[start..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .map_or(text.len(), |p| start + p);
        let name = &text[start..end];
        let base = ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        names.insert(base.to_string());
        i = end;
    }
    names
}

#[test]
fn dashboard_and_alerts_use_real_metric_names() {
    let root = env!("CARGO_MANIFEST_DIR");
    // Every family's file of src/observability/metrics/.
    let mut sources = String::new();
    for entry in std::fs::read_dir(format!("{root}/src/observability/metrics")).unwrap() {
        sources.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let defined = metric_names(&sources);
    let alerts = std::fs::read_to_string(format!("{root}/conf/observability/alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(format!("{root}/conf/observability/grafana-dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let rules: serde_yaml::Value = serde_yaml::from_str(&alerts).expect("alerts are YAML");
    assert!(rules["groups"][0]["rules"].as_sequence().is_some_and(|r| r.len() >= 5));
    for (file, text) in [("alerts.yml", &alerts), ("grafana-dashboard.json", &dashboard)] {
        let used = metric_names(text);
        assert!(!used.is_empty());
        let unknown: Vec<_> = used.difference(&defined).collect();
        assert!(unknown.is_empty(), "{file} uses metrics that do not exist: {unknown:?}");
    }
    let shown = metric_names(&dashboard);
    let missing: Vec<_> = defined.difference(&shown).collect();
    assert!(missing.is_empty(), "grafana-dashboard.json has no panel for {missing:?}");
    for needed in [
        "siger_requests_total",
        "siger_backends",
        "siger_consul_errors_total",
        "siger_jobs_failed_total",
        "siger_request_duration_seconds",
        "siger_tls_cert_expiry_seconds",
        "siger_circuit_state",
        "siger_config_reloads_total",
        "siger_trace_spans_dropped_total",
        "siger_connections_refused_total",
        "siger_connections_evicted_total",
        "siger_request_timeouts_total",
    ] {
        assert!(metric_names(&alerts).contains(needed), "alerts should cover {needed}");
    }
}
