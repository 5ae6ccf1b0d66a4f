//! `siger upgrade`: replace the running instance without dropping a request (ARCHITECTURE §5).
//!
//! Order matters (BUILD-NOTES): the old PID is read before anything starts (the new daemon
//! rewrites the pid file); the new process (`-u -d`) is started and must be listening on the
//! upgrade socket before the old one gets SIGQUIT — an old process that cannot hand over its
//! sockets shuts down anyway, so signalling early would turn a failed start into an outage. A
//! config that fails validation never gets that far.

use crate::config::{self, Config};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why an upgrade did not happen (or did not complete).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The new config is invalid; nothing was touched.
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    /// No running instance to replace.
    #[error("no running siger: {0}")]
    NoOldProcess(String),
    /// The new process could not be started; the old one keeps serving.
    #[error("the new process did not start: {0}; the running instance was left alone")]
    NewProcess(String),
    /// The hand-over was signalled but did not complete.
    #[error("hand-over did not complete: {0}")]
    HandOver(String),
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

fn read_pid(path: &str) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// Run the upgrade sequence; returns the new main PID.
pub fn upgrade(conf: &Path, old_pid: Option<i32>) -> Result<i32, UpgradeError> {
    // A bootstrap file (`config_source`) is checked alone: the new process takes its
    // configuration from the store (or its cache file) as any start does.
    let config: Config = if crate::config_store::gateway::configured(conf) {
        let bootstrap = crate::config_store::document::Bootstrap::read(conf)?;
        let whole = |found: Vec<config::ConfigErrors>| config::ConfigErrors {
            file: conf.display().to_string(),
            errors: found.into_iter().flat_map(|e| e.errors).collect(),
        };
        bootstrap.alone().map_err(whole)?.config
    } else {
        crate::snapshot::check(conf)?.config
    };
    let config = &config;
    let pid_file = config.server.pid_file.clone();
    let old = match old_pid.or_else(|| read_pid(&pid_file)) {
        Some(pid) if alive(pid) => pid,
        Some(pid) => return Err(UpgradeError::NoOldProcess(format!("PID {pid} (from {pid_file}) is not running"))),
        None => return Err(UpgradeError::NoOldProcess(format!("cannot read a PID from {pid_file}"))),
    };
    let sock = Path::new(&config.server.upgrade_sock);
    // Only a new process in bootstrap listens there; a leftover file is from a crashed attempt.
    let _ = std::fs::remove_file(sock);

    let exe = std::env::current_exe().map_err(|e| UpgradeError::NewProcess(e.to_string()))?;
    let mut child = Command::new(exe)
        .arg("-u")
        .arg("-d")
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        // stderr stays ours so start-up failures are visible; the daemon keeps it only when no
        // `server.error_log` is set.
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| UpgradeError::NewProcess(e.to_string()))?;

    let mut early_exit = None;
    let listening = wait_until(Duration::from_secs(5), || {
        if let Ok(Some(status)) = child.try_wait() {
            early_exit = Some(status);
            return true;
        }
        sock.exists()
    });
    if let Some(status) = early_exit {
        return Err(UpgradeError::NewProcess(format!("it exited with {status}")));
    }
    if !listening {
        let _ = child.kill();
        let _ = child.wait();
        return Err(UpgradeError::NewProcess(format!("it never listened on {}", sock.display())));
    }

    kill(Pid::from_raw(old), Signal::SIGQUIT)
        .map_err(|e| UpgradeError::HandOver(format!("cannot signal PID {old}: {e}")))?;

    // The new process's foreground half exits once it holds the sockets and has daemonised.
    let mut status = None;
    wait_until(Duration::from_secs(15), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    match status {
        Some(s) if s.success() => {}
        Some(s) => return Err(UpgradeError::HandOver(format!("the new process exited with {s}"))),
        None => return Err(UpgradeError::HandOver("the new process is still receiving sockets after 15s".into())),
    }
    let mut new = None;
    wait_until(Duration::from_secs(5), || {
        new = read_pid(&pid_file).filter(|p| *p != old && alive(*p));
        new.is_some()
    });
    new.ok_or_else(|| UpgradeError::HandOver(format!("{pid_file} does not name a new running process")))
}
