//! Where Siger runs (ARCHITECTURE §8.7): the OCI image that `scripts/image` builds (around the
//! binary under test) run by podman as the image says, and the Kubernetes manifests in
//! `deploy/kubernetes` rendered as `kubectl kustomize` renders it (by the test itself: no
//! kubectl needed), validated against the Kubernetes API schemas and checked against the
//! configuration they mount.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::*;
use serde::Deserialize;
use serde_yaml::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    assert_eq!(image, "docker.io/library/siger:test", "the archive names the image as docker would");
    // The ports podman publishes the container's listeners on, held until it binds them.
    let ports = [Reserved::new(), Reserved::new()];
    let (http, admin) = (ports[0].port(), ports[1].port());
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
    // /ready speaks for the gateway; the runtime's port forwarding of the public port may
    // trail it by a moment.
    let public_addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let forwarded = eventually(Duration::from_secs(10), || http_get_status(public_addr, "/anything").is_some());
    assert!(forwarded, "the public port never answered:\n{}", podman.logs());
    let public = get(public_addr, "/anything");
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

#[test]
fn the_kubernetes_manifests_validate_and_agree_with_the_config_they_mount() {
    let base = Path::new(ROOT).join("deploy/kubernetes");
    // Every manifest in the directory is one the kustomization uses.
    let kustomization: Value =
        serde_yaml::from_str(&std::fs::read_to_string(base.join("kustomization.yaml")).unwrap()).unwrap();
    let mut used: Vec<String> = strings(&kustomization["resources"]);
    for generator in kustomization["configMapGenerator"].as_sequence().unwrap() {
        used.extend(strings(&generator["files"]));
    }
    let mut present: Vec<String> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    present.sort();
    used.sort();
    assert_eq!(present, used, "files in deploy/kubernetes vs. those kustomization.yaml lists");

    let docs = kustomize(&base);
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("siger.yaml");
    let rendered: Vec<String> = docs.iter().map(|d| serde_yaml::to_string(d).unwrap()).collect();
    std::fs::write(&manifests, rendered.join("---\n")).unwrap();
    // The oldest Kubernetes the manifests are for (the preStop sleep action is on by default
    // from 1.30) and the newest whose schemas the validator ships.
    for version in ["1.30.0", "1.37.0"] {
        let out = run(Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--kubernetes-version", version])
            .arg(&manifests));
        let said = text(&out);
        assert!(out.status.success() && !said.contains("WARN"), "kubernetes-validate against {version}:\n{said}");
        assert_eq!(said.matches(" passed for resource ").count(), 5, "{said}");
    }

    let kind = |kind: &str| docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind}"));
    let (deployment, service, configmap) = (kind("Deployment"), kind("Service"), kind("ConfigMap"));
    let (hpa, pdb) = (kind("HorizontalPodAutoscaler"), kind("PodDisruptionBudget"));

    // The mounted config passes `siger -t` and is what the pod spec expects of it.
    let config_text = configmap["data"]["siger.yaml"].as_str().unwrap();
    std::fs::write(work.path().join("config.yaml"), config_text).unwrap();
    run_ok(Command::new(SIGER).arg("-t").arg("-c").arg(work.path().join("config.yaml")), "siger -t on the ConfigMap");
    let config: Value = serde_yaml::from_str(config_text).unwrap();
    assert_eq!(config["server"]["watch_config"], true);
    let port_of = |addr: &Value| addr.as_str().unwrap().rsplit_once(':').unwrap().1.parse::<u64>().unwrap();
    let (http_port, admin_port) = (port_of(&config["listen"][0]), port_of(&config["admin"]["listen"]));

    let pod = &deployment["spec"]["template"];
    assert_eq!(deployment["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]);
    let labels = &pod["metadata"]["labels"];
    let spec = &pod["spec"];
    let container = &spec["containers"][0];
    let port_named = |name: &str| {
        let ports = container["ports"].as_sequence().unwrap();
        ports.iter().find(|p| p["name"] == name).unwrap()["containerPort"].as_u64().unwrap()
    };
    assert_eq!((port_named("http"), port_named("admin")), (http_port, admin_port));
    for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/health")] {
        assert_eq!(container[probe]["httpGet"]["path"], path);
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe} asks the admin listener");
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], admin_port.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // Termination: the preStop pause, then the drain, fit in the grace period with a margin.
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap();
    let drain = seconds(&config["server"]["grace_period"]) + seconds(&config["server"]["graceful_shutdown_timeout"]);
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap() as f64;
    assert!(pause >= 2, "a pause before SIGTERM while endpoints are updated");
    assert!(pause as f64 + drain + 2.0 <= grace, "preStop {pause}s + drain {drain}s must fit in {grace}s");

    // Non-root on a read-only root filesystem, writable /tmp, the whole config directory mounted
    // (a subPath mount would never see the kubelet's updates).
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["runAsUser"], IMAGE_USER);
    let security = &container["securityContext"];
    assert_eq!(
        (&security["readOnlyRootFilesystem"], &security["allowPrivilegeEscalation"]),
        (&true.into(), &false.into())
    );
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    let mount =
        |path: &str| mounts.iter().find(|m| m["mountPath"] == path).unwrap_or_else(|| panic!("no mount on {path}"));
    assert!(mount("/etc/siger").get("subPath").is_none());
    let config_volume = mount("/etc/siger")["name"].as_str().unwrap();
    let volumes = spec["volumes"].as_sequence().unwrap();
    let volume = volumes.iter().find(|v| v["name"] == config_volume).unwrap();
    assert_eq!(volume["configMap"]["name"], configmap["metadata"]["name"]);
    assert!(mount("/tmp")["name"].as_str().is_some());
    assert_eq!(strings(&container["args"]), ["-c", "/etc/siger/siger.yaml"]);
    let image = container["image"].as_str().unwrap();
    let tagged = image.contains('@') || image.rsplit_once(':').is_some_and(|(_, tag)| !tag.contains('/'));
    assert!(tagged, "a tagged image (not `latest`, which a node may hold stale): {image}");
    for quantity in ["cpu", "memory"] {
        assert!(container["resources"]["requests"].get(quantity).is_some(), "a {quantity} request");
    }
    assert!(container["resources"]["limits"].get("memory").is_some(), "a memory limit");
    let threads = config["server"]["threads"].as_u64().unwrap();
    assert_eq!(container["resources"]["limits"]["cpu"], threads.to_string(), "one worker thread per CPU of the limit");

    // The Service, the autoscaler and the disruption budget find the pods.
    assert_eq!(&service["spec"]["selector"], labels);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert!(
        service["spec"]["ports"].as_sequence().unwrap().iter().all(|p| p["targetPort"] != "admin"),
        "the Service does not expose the admin listener"
    );
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], deployment["metadata"]["name"]);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2, "one pod can be disrupted while another serves");
    assert!(deployment["spec"].get("replicas").is_none(), "the autoscaler owns the replica count");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
}

/// The documents `kubectl kustomize <base>` prints, for the features of kustomize the base uses:
/// its `resources` (files of one or more documents), a `configMapGenerator` of files (with
/// `generatorOptions.disableNameSuffixHash`) and `images` overrides of the containers' images.
/// A key it does not render fails the test, so the rendering cannot silently differ from kubectl's.
fn kustomize(base: &Path) -> Vec<Value> {
    let read = |name: &str| {
        std::fs::read_to_string(base.join(name)).unwrap_or_else(|e| panic!("{}: {e}", base.join(name).display()))
    };
    let kustomization: Value = serde_yaml::from_str(&read("kustomization.yaml")).unwrap();
    let rendered_keys = ["apiVersion", "kind", "resources", "configMapGenerator", "generatorOptions", "images"];
    for key in kustomization.as_mapping().unwrap().keys() {
        let key = key.as_str().unwrap();
        assert!(rendered_keys.contains(&key), "kustomization.yaml uses `{key}`, which this test does not render");
    }
    assert_eq!(kustomization["kind"], "Kustomization");
    // The generated ConfigMaps first, then the resources as listed (`kubectl kustomize` sorts
    // by kind; the documents are the same, and nothing here depends on their order).
    let mut docs = Vec::new();
    for generator in kustomization["configMapGenerator"].as_sequence().unwrap() {
        for key in generator.as_mapping().unwrap().keys() {
            assert!(
                ["name", "files"].contains(&key.as_str().unwrap()),
                "configMapGenerator: `{key:?}` is not rendered"
            );
        }
        assert_eq!(
            kustomization["generatorOptions"]["disableNameSuffixHash"], true,
            "a hash suffix (and the references it renames) is not rendered"
        );
        let mut data = serde_yaml::Mapping::new();
        for file in strings(&generator["files"]) {
            // `key=path`, or the file's name as its key.
            let (key, path) = file.split_once('=').unwrap_or((file.rsplit('/').next().unwrap(), file.as_str()));
            data.insert(key.into(), read(path).into());
        }
        let mut configmap = serde_yaml::Mapping::new();
        configmap.insert("apiVersion".into(), "v1".into());
        configmap.insert("kind".into(), "ConfigMap".into());
        let mut metadata = serde_yaml::Mapping::new();
        metadata.insert("name".into(), generator["name"].clone());
        configmap.insert("metadata".into(), metadata.into());
        configmap.insert("data".into(), data.into());
        docs.push(Value::Mapping(configmap));
    }
    for resource in strings(&kustomization["resources"]) {
        let text = read(&resource);
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc = Value::deserialize(doc).unwrap();
            if !doc.is_null() {
                docs.push(doc);
            }
        }
    }
    let images = kustomization.get("images").and_then(Value::as_sequence).cloned().unwrap_or_default();
    for image in &images {
        for key in image.as_mapping().unwrap().keys() {
            let key = key.as_str().unwrap();
            assert!(["name", "newName", "newTag", "digest"].contains(&key), "images: `{key}` is not rendered");
        }
    }
    for doc in &mut docs {
        retag(doc, &images);
    }
    docs
}

/// Apply kustomize's `images` overrides to every container and init container in `value`.
fn retag(value: &mut Value, images: &[Value]) {
    match value {
        Value::Mapping(map) => {
            for (key, child) in map.iter_mut() {
                if matches!(key.as_str(), Some("containers" | "initContainers")) {
                    for container in child.as_sequence_mut().into_iter().flatten() {
                        let image = &mut container["image"];
                        *image = retagged(image.as_str().unwrap(), images).into();
                    }
                } else {
                    retag(child, images);
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|item| retag(item, images)),
        _ => {}
    }
}

/// An image reference (`name`, `name:tag`, `name@digest`) after the override for its name.
fn retagged(reference: &str, images: &[Value]) -> String {
    let (name, suffix) = match reference.find('@') {
        Some(at) => reference.split_at(at),
        // A tag's colon comes after the last slash (a registry's port comes before it).
        None => match reference.rfind(':').filter(|colon| !reference[*colon..].contains('/')) {
            Some(colon) => reference.split_at(colon),
            None => (reference, ""),
        },
    };
    let Some(image) = images.iter().find(|i| i["name"] == name) else { return reference.to_string() };
    let new_name = image.get("newName").and_then(Value::as_str).unwrap_or(name);
    let suffix = match (image.get("digest").and_then(Value::as_str), image.get("newTag").and_then(Value::as_str)) {
        (Some(digest), _) => format!("@{digest}"),
        (None, Some(tag)) => format!(":{tag}"),
        (None, None) => suffix.to_string(),
    };
    format!("{new_name}{suffix}")
}

/// A list of strings in YAML.
fn strings(value: &Value) -> Vec<String> {
    value.as_sequence().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// A config duration such as `1s`, `500ms` in seconds.
fn seconds(value: &Value) -> f64 {
    let text = value.as_str().unwrap();
    match text.strip_suffix("ms") {
        Some(ms) => ms.parse::<f64>().unwrap() / 1000.0,
        None => text.strip_suffix('s').unwrap().parse().unwrap(),
    }
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
