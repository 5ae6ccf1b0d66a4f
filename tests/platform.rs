//! Where Siger runs (ARCHITECTURE §8.7): the OCI image that `scripts/image` builds (around the
//! binary under test) run by podman as the image says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The uid and gid the image runs as (scripts/image, deploy/kubernetes/deployment.yaml).
const IMAGE_USER: u32 = 65532;

#[test]
fn the_container_image_serves_ready_as_a_non_root_user_and_drains_on_sigterm() {
    let work = tempfile::tempdir().unwrap();
    let out = run_ok(
        Command::new(format!("{ROOT}/scripts/image"))
            .args(["--binary", SIGER, "--tag", "test", "--out"])
            .arg(work.path().join("image")),
        "scripts/image",
    );
    let reference = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(reference, format!("oci:{}:test", work.path().join("image/oci").display()));
    check_image_config(&work.path().join("image/oci"));

    // The image, loaded from the archive, as a container runtime runs it: its entrypoint, user
    // and default config, a read-only root filesystem, the ports published on loopback.
    let podman = Podman::new(work.path());
    let loaded = podman.output(&["load", "--input", work.path().join("image/siger-test.oci.tar").to_str().unwrap()]);
    let image = loaded.lines().find_map(|l| l.strip_prefix("Loaded image: ")).expect(&loaded).trim().to_string();
    let (http, admin) = (free_port(), free_port());
    let (files, processes) = (hard_limit("Max open files").min(16384), hard_limit("Max processes").min(4096));
    let started = podman.run(&[
        "run",
        "--detach",
        "--name",
        &podman.name,
        "--read-only",
        // Within this machine's hard limits (podman's defaults are above them).
        &format!("--ulimit=nofile={files}:{files}"),
        &format!("--ulimit=nproc={processes}:{processes}"),
        "--publish",
        &format!("127.0.0.1:{http}:8080"),
        "--publish",
        &format!("127.0.0.1:{admin}:9901"),
        &image,
    ]);
    assert!(started.status.success(), "podman run:\n{}", text(&started));
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let ready = eventually(Duration::from_secs(30), || http_get_status(admin, "/ready") == Some(200));
    assert!(ready, "/ready did not answer 200:\n{}", podman.logs());
    assert_eq!(get(admin, "/ready").json()["ready"], true);
    assert_eq!(http_get_status(admin, "/health"), Some(200));
    let public = get(format!("127.0.0.1:{http}").parse().unwrap(), "/anything");
    assert_eq!(
        (public.status, public.json()["error"].as_str()),
        (404, Some("not_found")),
        "the default config routes nothing"
    );

    let pid = podman.output(&["inspect", "--format", "{{.State.Pid}}", &podman.name]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    for field in ["Uid:", "Gid:"] {
        let ids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap()
            .split_whitespace()
            .map(|id| id.parse().unwrap())
            .collect();
        assert_eq!(ids, [IMAGE_USER; 4], "the gateway's {field} (real, effective, saved, filesystem)");
    }

    // `podman stop` sends the image's stop signal (SIGTERM): drained and exited 0 within the
    // default config's grace_period + graceful_shutdown_timeout.
    let asked = Instant::now();
    podman.output(&["stop", "--time", "30", &podman.name]);
    let took = asked.elapsed();
    assert_eq!(podman.output(&["inspect", "--format", "{{.State.ExitCode}}", &podman.name]).trim(), "0");
    assert!(took < Duration::from_secs(9), "the stop took {took:?}");
    assert!(podman.logs().contains("drained after"), "{}", podman.logs());
}

/// The image's config as the layout holds it: the entrypoint, the numeric non-root user, the
/// ports, the stop signal.
fn check_image_config(layout: &Path) {
    let blob = |digest: &str| {
        let path = layout.join("blobs").join(digest.replacen(':', "/", 1));
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(path).unwrap()).unwrap()
    };
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1, "{manifest}");
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    let c = &config["config"];
    assert_eq!(c["User"], format!("{IMAGE_USER}:{IMAGE_USER}"));
    assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/bin/siger"]));
    assert_eq!(c["Cmd"], serde_json::json!(["-c", "/etc/siger/siger.yaml"]));
    assert_eq!(c["StopSignal"], "SIGTERM");
    for port in ["8080/tcp", "9901/tcp"] {
        assert!(c["ExposedPorts"].get(port).is_some(), "{c}");
    }
    assert_eq!(config["os"], "linux");

    // What the binary needs at run time and nothing a distroless image leaves out.
    let layer = layout.join("blobs").join(manifest["layers"][0]["digest"].as_str().unwrap().replacen(':', "/", 1));
    let listing = String::from_utf8(run_ok(Command::new("tar").arg("-tzf").arg(&layer), "tar -t").stdout).unwrap();
    let entries: Vec<&str> = listing.lines().map(|l| l.trim_end_matches('/')).collect();
    for needed in [
        "usr/bin/siger",
        "etc/siger/siger.yaml",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "etc/nsswitch.conf",
        "tmp",
        "usr/share/doc/libc6/copyright",
        "var/lib/dpkg/status.d/libc6",
    ] {
        assert!(entries.contains(&needed), "the image lacks {needed}");
    }
    for library in ["/libc.so.6", "/libgcc_s.so.1", "/libm.so.6"] {
        assert!(entries.iter().any(|e| e.starts_with("lib/") && e.ends_with(library)), "the image lacks {library}");
    }
    for absent in ["bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/apt", "usr/share/man"] {
        assert!(!entries.contains(&absent), "the image has {absent}");
    }
}

/// podman with its own storage (vfs) and run directory under `dir`, runc as the runtime, and
/// one container name; removes the container when dropped.
struct Podman {
    global: Vec<String>,
    name: String,
}

impl Podman {
    fn new(dir: &Path) -> Podman {
        let global = vec![
            format!("--root={}", dir.join("storage").display()),
            format!("--runroot={}", dir.join("run").display()),
            "--storage-driver=vfs".to_string(),
            // crun refuses cgroups in hybrid mode, as this machine has them; runc does not.
            "--runtime=runc".to_string(),
            "--cgroup-manager=cgroupfs".to_string(),
            "--events-backend=file".to_string(),
        ];
        Podman { global, name: format!("siger-image-test-{}", std::process::id()) }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .args(&self.global)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("podman (./scripts/install-deps installs it)")
    }

    /// Stdout of a podman command that must succeed.
    fn output(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "podman {args:?}:\n{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    fn logs(&self) -> String {
        text(&self.run(&["logs", &self.name]))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- container log ----\n{}", self.logs());
        }
        let _ = self.run(&["rm", "--force", "--time", "0", &self.name]);
        let _ = self.run(&["rmi", "--all", "--force"]);
    }
}

/// This process's hard limit named `what` in /proc/self/limits.
fn hard_limit(what: &str) -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with(what)).unwrap();
    let hard = line[what.len()..].split_whitespace().nth(1).unwrap();
    hard.parse().unwrap_or(u64::MAX)
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = run(cmd);
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, text(&out));
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
