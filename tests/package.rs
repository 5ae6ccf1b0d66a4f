//! The Debian package (`scripts/package-deb`, built around the binary under test) and its debug
//! symbols: lintian from Debian finds no error and no warning in either; installed on this
//! machine with dpkg: files, owners and modes, the manual pages, the `siger` user, the conffile,
//! `siger -t` on the installed config (as root and as the service user), an upgrade that keeps a
//! local edit, `dpkg --remove` (the config stays) and `dpkg --purge` (the config goes).
//!
//! The test changes the system, so it needs root: it fails (it does not skip) without it, and CI
//! runs as root. A lock keeps two runs from overlapping, it refuses to start when siger is
//! already installed or configured here (a purge would delete that installation's config), and
//! a guard purges what it installed even when a check fails. The `siger` user stays afterwards,
//! as it does after a real purge (see packaging/debian/postrm).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Who the test packages name as maintainer (a reserved domain: lintian checks the form).
const MAINTAINER: &str = "Siger package test <package-test@siger.invalid>";
const CONFIG: &str = "/etc/siger/siger.yaml";
/// What the test appends to the installed config: a valid key, so `siger -t` still passes.
const EDIT: &str = "trusted_proxies: [10.0.0.0/8]   # local edit (tests/package.rs)\n";

/// Paths an installation of siger, packaged or by hand (systemd/README.md), would own.
const FOOTPRINT: &[&str] = &[
    "/etc/siger",
    "/var/lib/siger",
    "/var/log/siger",
    "/usr/bin/siger",
    "/usr/lib/systemd/system/siger.service",
    "/lib/systemd/system/siger.service",
    "/etc/systemd/system/siger.service",
];

#[test]
fn debian_package_installs_upgrades_removes_and_purges() {
    assert_eq!(
        effective_uid(),
        0,
        "tests/package.rs installs a .deb system-wide with dpkg and must run as root (CI does)"
    );
    let _lock = RunLock::acquire();
    refuse_existing_installation();
    let user_existed = getent("passwd", "siger").is_some();
    let arch = stdout(Command::new("dpkg").arg("--print-architecture")).trim().to_string();

    let out = tempfile::tempdir().unwrap();
    let (deb, dbgsym) = package(out.path(), None);
    assert_eq!(deb.file_name().unwrap().to_str().unwrap(), format!("siger_{VERSION}_{arch}.deb"));
    assert_eq!(dbgsym.file_name().unwrap().to_str().unwrap(), format!("siger-dbgsym_{VERSION}_{arch}.deb"));
    // lintian takes a while: it reads the packages while dpkg works below.
    let lintian = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--no-tag-display-limit"])
        .args([&deb, &dbgsym])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lintian (./scripts/install-deps installs it)");
    check_archive(&deb, &dbgsym);

    let _purge = PurgeOnDrop;
    dpkg(&["--install", deb.to_str().unwrap(), dbgsym.to_str().unwrap()]);
    assert_eq!(package_status().as_deref(), Some("installed"));
    check_installed_files();
    check_manual_and_debug_symbols();
    check_user(user_existed);
    check_conffile_and_config();

    // A local edit, and a file the operator adds (the env file holds secrets; not packaged).
    let mut config = std::fs::read_to_string(CONFIG).unwrap();
    config.push_str(EDIT);
    std::fs::write(CONFIG, &config).unwrap();
    std::fs::write("/etc/siger/siger.env", "SIGER_JWT_SECRET=set-by-tests-package-rs-0123456789abcdef\n").unwrap();
    run_ok(Command::new("/usr/bin/siger").args(["-t", "-c", CONFIG]), "siger -t after the local edit");

    // An upgrade: the package's conffile did not change, so dpkg keeps the edited one without
    // asking (stdin is closed: a prompt would fail the install).
    let newer = format!("{VERSION}+test1");
    let out2 = tempfile::tempdir().unwrap();
    let (deb2, dbgsym2) = package(out2.path(), Some(&newer));
    dpkg(&["--install", deb2.to_str().unwrap(), dbgsym2.to_str().unwrap()]);
    assert_eq!(stdout(Command::new("dpkg-query").args(["-W", "-f=${Version}", "siger"])), newer);
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), config, "the upgrade must keep the local edit");
    assert!(!Path::new("/etc/siger/siger.yaml.dpkg-dist").exists(), "no new conffile version to offer");
    let (root, siger) = (0, id_of("group", "siger"));
    expect_mode(CONFIG, 0o640, root, siger);
    expect_mode("/etc/siger", 0o750, root, siger);

    // Remove: the program goes, configuration, state and logs stay.
    dpkg(&["--remove", "siger-dbgsym", "siger"]);
    assert_eq!(package_status().as_deref(), Some("config-files"));
    for gone in ["/usr/bin/siger", "/usr/lib/systemd/system/siger.service", "/usr/share/siger"] {
        assert!(!Path::new(gone).exists(), "{gone} must be gone after dpkg --remove");
    }
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), config, "dpkg --remove must keep the edited config");
    for kept in ["/etc/siger/siger.env", "/var/lib/siger", "/var/log/siger"] {
        assert!(Path::new(kept).exists(), "{kept} must survive dpkg --remove");
    }

    // Purge: everything under /etc/siger (the operator's files too), state and logs go.
    dpkg(&["--purge", "siger"]);
    assert_eq!(package_status(), None);
    for gone in ["/etc/siger", "/var/lib/siger", "/var/log/siger"] {
        assert!(!Path::new(gone).exists(), "{gone} must be gone after dpkg --purge");
    }
    for path in ["/etc/siger", CONFIG] {
        let listed = Command::new("dpkg-statoverride").args(["--list", path]).output().unwrap();
        assert!(!listed.status.success(), "dpkg --purge must drop the stat override of {path}");
    }
    assert!(
        !Path::new("/var/lib/systemd/deb-systemd-helper-enabled/siger.service.dsh-also").exists(),
        "dpkg --purge must drop deb-systemd-helper's state"
    );
    assert!(getent("passwd", "siger").is_some(), "the siger user is kept on purge (packaging/debian/postrm)");

    let lintian = lintian.wait_with_output().unwrap();
    let said = text(&lintian);
    let tags: Vec<&str> = said.lines().filter(|l| l.starts_with("E: ") || l.starts_with("W: ")).collect();
    assert!(lintian.status.success() && tags.is_empty(), "lintian on the packages ({}):\n{said}", lintian.status);
}

/// `scripts/package-deb` around the test binary, with the fastest compression lintian accepts
/// (the debug binary is large and the archive never leaves this machine); the paths of the .deb
/// and the -dbgsym .deb it printed.
fn package(out: &Path, version: Option<&str>) -> (PathBuf, PathBuf) {
    let mut cmd = Command::new(format!("{}/scripts/package-deb", env!("CARGO_MANIFEST_DIR")));
    cmd.args([
        "--binary",
        support::SIGER,
        "--compression",
        "gzip",
        "--level",
        "1",
        "--maintainer",
        MAINTAINER,
        "--out",
    ])
    .arg(out);
    if let Some(version) = version {
        cmd.args(["--version", version]);
    }
    let printed = stdout(&mut cmd);
    let debs: Vec<PathBuf> = printed.lines().map(PathBuf::from).collect();
    assert!(debs.len() == 2 && debs.iter().all(|d| d.is_file()), "package-deb printed {printed:?}, not two .debs");
    (debs[0].clone(), debs[1].clone())
}

/// The archive's control fields, the files that dpkg's path-exclude settings could keep off the
/// disk (documentation, manual pages), and the debug symbols split off the binary.
fn check_archive(deb: &Path, dbgsym: &Path) {
    let fields = stdout(Command::new("dpkg-deb").arg("--field").arg(deb).args(["Package", "Depends", "Maintainer"]));
    assert!(fields.contains("Package: siger"), "{fields}");
    assert!(fields.contains("libc6 (>= 2.") && fields.contains("passwd"), "Depends: {fields}");
    assert!(fields.contains(&format!("Maintainer: {MAINTAINER}")), "{fields}");
    let fields = stdout(Command::new("dpkg-deb").arg("--field").arg(dbgsym).args(["Package", "Depends", "Build-Ids"]));
    assert!(fields.contains("Package: siger-dbgsym"), "{fields}");
    assert!(fields.contains(&format!("Depends: siger (= {VERSION})")), "{fields}");
    let conffiles = stdout(Command::new("dpkg-deb").arg("--info").arg(deb).arg("conffiles"));
    assert_eq!(conffiles, format!("{CONFIG}\n"));
    let contents = stdout(Command::new("dpkg-deb").arg("--contents").arg(deb));
    for file in [
        "./usr/share/doc/siger/README.md",
        "./usr/share/doc/siger/config.md",
        "./usr/share/doc/siger/ARCHITECTURE.md",
        "./usr/share/doc/siger/systemd.md",
        "./usr/share/doc/siger/copyright",
        "./usr/share/doc/siger/changelog.gz",
        "./usr/share/man/man8/siger.8.gz",
        "./usr/share/man/man8/siger-upgrade.8.gz",
        "./usr/share/lintian/overrides/siger",
    ] {
        assert!(contents.lines().any(|l| l.ends_with(file)), "the package lacks {file}:\n{contents}");
    }
    assert!(contents.lines().all(|l| l.contains(" root/root ")), "every file is root's in the archive:\n{contents}");
    // Debian's standard modes in the archive; postinst narrows them (check_installed_files).
    for (mode, file) in [("drwxr-xr-x", "./etc/siger/"), ("-rw-r--r--", "./etc/siger/siger.yaml")] {
        assert!(contents.lines().any(|l| l.starts_with(mode) && l.ends_with(file)), "{file} {mode}:\n{contents}");
    }
}

/// The manual pages as man reads them, and the debug symbols found by the binary's build id.
fn check_manual_and_debug_symbols() {
    let page = stdout(Command::new("man").args(["--warnings", "-P", "cat", "8", "siger"]).env("MANWIDTH", "100"));
    for needle in ["siger - API gateway", "--conf", "SIGNALS", "SIGHUP", "EXIT STATUS", "siger-upgrade(8)"] {
        assert!(page.contains(needle), "man 8 siger lacks {needle:?}:\n{page}");
    }
    let sections = stdout(Command::new("readelf").args(["--sections", "--wide", "/usr/bin/siger"]));
    assert!(
        [".debug_info", ".debug_line", ".symtab"].iter().all(|s| !sections.contains(s)),
        "/usr/bin/siger is not stripped:\n{sections}"
    );
    assert!(sections.contains(".gnu_debuglink"), "{sections}");
    let notes = stdout(Command::new("readelf").args(["--notes", "/usr/bin/siger"]));
    let build_id = notes.lines().find_map(|l| l.trim().strip_prefix("Build ID: ")).expect("a build id").trim();
    let debug = format!("/usr/lib/debug/.build-id/{}/{}.debug", &build_id[..2], &build_id[2..]);
    let sections = stdout(Command::new("readelf").args(["--sections", "--wide", &debug]));
    assert!(sections.contains(".debug_line") && sections.contains(".symtab"), "{debug}:\n{sections}");
}

fn check_installed_files() {
    let siger = id_of("group", "siger");
    let siger_user = id_of("passwd", "siger");
    expect_mode("/usr/bin/siger", 0o755, 0, 0);
    expect_mode("/usr/lib/systemd/system/siger.service", 0o644, 0, 0);
    // /etc/siger may hold secrets: root writes, the service's group reads, others nothing.
    expect_mode("/etc/siger", 0o750, 0, siger);
    expect_mode(CONFIG, 0o640, 0, siger);
    for file in [
        "/usr/share/siger/examples/siger.yaml",
        "/usr/share/siger/examples/siger.env.example",
        "/usr/share/siger/observability/alerts.yml",
        "/usr/share/siger/observability/grafana-dashboard.json",
        "/usr/share/doc/siger/copyright",
    ] {
        expect_mode(file, 0o644, 0, 0);
    }
    expect_mode("/var/lib/siger", 0o750, siger_user, siger);
    expect_mode("/var/log/siger", 0o750, siger_user, siger);
    assert!(!Path::new("/etc/siger/siger.env").exists(), "the env file is the operator's, not the package's");

    let unit = std::fs::read_to_string("/usr/lib/systemd/system/siger.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/siger -d -c /etc/siger/siger.yaml"), "{unit}");
    assert!(unit.contains("Documentation=man:siger(8) "), "{unit}");
    assert!(!unit.contains("/usr/local"), "the packaged unit runs /usr/bin/siger:\n{unit}");
    let shipped = std::fs::read_to_string(format!("{}/packaging/debian/siger.yaml", env!("CARGO_MANIFEST_DIR")));
    assert_eq!(std::fs::read_to_string(CONFIG).unwrap(), shipped.unwrap());
    let alerts = format!("{}/conf/observability/alerts.yml", env!("CARGO_MANIFEST_DIR"));
    assert_eq!(std::fs::read("/usr/share/siger/observability/alerts.yml").unwrap(), std::fs::read(alerts).unwrap());
}

fn check_user(existed: bool) {
    let passwd = getent("passwd", "siger").expect("postinst creates the siger user");
    let group = getent("group", "siger").expect("postinst creates the siger group");
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields[3], group.split(':').nth(2).unwrap(), "siger's primary group is siger: {passwd}");
    if !existed {
        assert_eq!(fields[5], "/var/lib/siger", "{passwd}");
        assert_eq!(fields[6], "/usr/sbin/nologin", "{passwd}");
        assert!(fields[2].parse::<u32>().unwrap() < 1000, "a system uid: {passwd}");
    }
}

fn check_conffile_and_config() {
    let conffiles = stdout(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "siger"]));
    assert!(conffiles.lines().any(|l| l.split_whitespace().next() == Some(CONFIG)), "conffiles: {conffiles:?}");
    let overrides = stdout(Command::new("dpkg-statoverride").args(["--list", CONFIG]));
    assert_eq!(overrides.trim(), format!("root siger 640 {CONFIG}"));
    let verify = run(Command::new("dpkg").args(["--verify", "siger"]));
    assert!(verify.status.success() && verify.stdout.is_empty(), "dpkg --verify siger:\n{}", text(&verify));

    // The installed config passes the check without any environment ...
    run_ok(Command::new("/usr/bin/siger").args(["-t", "-c", CONFIG]).env_remove("SIGER_JWT_SECRET"), "siger -t");
    // ... the service user can read it, and other users cannot.
    run_ok(
        Command::new("setpriv")
            .args(["--reuid=siger", "--regid=siger", "--init-groups", "/usr/bin/siger", "-t", "-c"])
            .arg(CONFIG),
        "siger -t as the siger user",
    );
    let nobody = run(Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/siger", "-t", "-c"])
        .arg(CONFIG));
    assert!(!nobody.status.success(), "user nobody must not read {CONFIG}:\n{}", text(&nobody));
}

/// Fail with a clear message when siger is installed or configured here: the test would
/// overwrite that installation, and its purge would delete that configuration.
fn refuse_existing_installation() {
    if let Some(status) = package_status() {
        panic!(
            "a package named siger is already known to dpkg here (status: {status}); this test installs and purges \
             its own. Remove it first (dpkg --purge siger) or run the test on another machine"
        );
    }
    let present: Vec<&str> = FOOTPRINT.iter().copied().filter(|p| Path::new(p).exists()).collect();
    assert!(
        present.is_empty(),
        "siger seems installed by hand here ({present:?}); this test's purge would delete /etc/siger, /var/lib/siger \
         and /var/log/siger. Move them away or run the test on another machine"
    );
}

/// Purges the package when dropped, so a failing check leaves nothing installed.
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        if package_status().is_none() {
            return;
        }
        let out = Command::new("dpkg")
            .args(["--purge", "--force-remove-reinstreq", "siger-dbgsym", "siger"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => eprintln!("cleanup: purged the siger package"),
            Ok(out) => eprintln!("cleanup: dpkg --purge siger failed:\n{}", text(&out)),
            Err(e) => eprintln!("cleanup: cannot run dpkg --purge siger: {e}"),
        }
    }
}

/// Keeps two runs of this test (in any process) from overlapping: a directory created
/// atomically, holding the owner's pid. A holder that died leaves a stale lock, taken over.
struct RunLock(PathBuf);

impl RunLock {
    fn acquire() -> RunLock {
        let dir = if Path::new("/run/lock").is_dir() { PathBuf::from("/run/lock") } else { std::env::temp_dir() }
            .join("siger-package-test.lock");
        let mut holder = String::new();
        let acquired = support::eventually(Duration::from_secs(600), || match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::write(dir.join("pid"), std::process::id().to_string()).unwrap();
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                holder = std::fs::read_to_string(dir.join("pid")).unwrap_or_default();
                // No pid yet: its owner is between the two steps above; wait for it.
                let dead = holder.trim().parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
                if dead {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                false
            }
            Err(e) => panic!("cannot create the lock {}: {e}", dir.display()),
        });
        assert!(
            acquired,
            "another run of this test (pid {holder:?}) held {} for 10 minutes; remove it if no run is in progress",
            dir.display()
        );
        RunLock(dir)
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `dpkg ARGS` without a terminal; panics with dpkg's output when it fails.
fn dpkg(args: &[&str]) {
    run_ok(
        Command::new("dpkg").args(args).env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("dpkg {}", args.join(" ")),
    );
}

/// dpkg's status of the siger package (`installed`, `config-files`, …), None when unknown.
fn package_status() -> Option<String> {
    let out = Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", "siger"]).output().expect("dpkg-query");
    let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !status.is_empty() && status != "not-installed").then_some(status)
}

fn getent(database: &str, key: &str) -> Option<String> {
    let out = Command::new("getent").args([database, key]).output().expect("getent");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The numeric id (third field) of a passwd or group entry.
fn id_of(database: &str, key: &str) -> u32 {
    let entry = getent(database, key).unwrap_or_else(|| panic!("no {database} entry {key}"));
    entry.split(':').nth(2).unwrap().parse().unwrap()
}

fn expect_mode(path: &str, mode: u32, uid: u32, gid: u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (mode, uid, gid),
        "{path}: expected mode {mode:o} uid {uid} gid {gid}"
    );
}

fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = run(cmd);
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, text(&out));
    out
}

/// Stdout of a command that must succeed.
fn stdout(cmd: &mut Command) -> String {
    let out = run_ok(cmd, &format!("{cmd:?}"));
    String::from_utf8(out.stdout).unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
