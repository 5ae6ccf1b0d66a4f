//! Graceful shutdown that waits only as long as it must.
//!
//! Pingora's shutdown (SIGTERM, or SIGQUIT after handing the listeners to a new process) stops
//! accepting, then sleeps a fixed grace period and then drops whatever is still running. We tell
//! Pingora to sleep the longest allowed time (`grace_period + graceful_shutdown_timeout`) and
//! watch the requests in flight ourselves: once `grace_period` has passed and nothing is in
//! flight (or the timeout is up), shutdown tasks have finished and the logs are flushed, the
//! process exits 0. A drained gateway therefore stops in about `grace_period`, and a request
//! in flight gets up to `graceful_shutdown_timeout` to finish.

use crate::observability::logger;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Process-wide counters the drain logic waits on.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    in_flight: AtomicUsize,
    cleanups: AtomicUsize,
}

/// Held by a request while it is in flight.
#[derive(Debug)]
pub(crate) struct InFlightRequest(Arc<Lifecycle>);

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Held by a shutdown task (deregistration, flushing a client) until it is done.
#[derive(Debug)]
pub(crate) struct CleanupGuard(Arc<Lifecycle>);

impl CleanupGuard {
    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.0.in_flight()
    }
}

/// A shutdown task registered when its service is built, before any signal can come, and
/// claimed by the service when it starts: the drain cannot exit between the signal and the
/// service noticing it.
#[derive(Debug)]
pub(crate) struct ReservedCleanup(std::sync::Mutex<Option<CleanupGuard>>);

impl ReservedCleanup {
    /// The guard, to the first caller: the service, when it starts.
    pub(crate) fn claim(&self) -> Option<CleanupGuard> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        self.0.cleanups.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Lifecycle {
    /// A new, shareable lifecycle.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Lifecycle::default())
    }

    /// Count one request in flight until the guard drops.
    pub(crate) fn request(self: &Arc<Self>) -> InFlightRequest {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightRequest(self.clone())
    }

    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Register a shutdown task; exit waits (bounded) until its guard drops.
    pub(crate) fn cleanup(self: &Arc<Self>) -> CleanupGuard {
        self.cleanups.fetch_add(1, Ordering::AcqRel);
        CleanupGuard(self.clone())
    }

    /// Register a shutdown task now for a service that starts later (see [`ReservedCleanup`]).
    pub(crate) fn reserve_cleanup(self: &Arc<Self>) -> ReservedCleanup {
        ReservedCleanup(std::sync::Mutex::new(Some(self.cleanup())))
    }

    /// Shutdown tasks not done yet.
    pub(crate) fn cleanups_pending(&self) -> usize {
        self.cleanups.load(Ordering::Acquire)
    }
}

/// The background service that ends the process once drained.
#[derive(Debug)]
pub(crate) struct Drain {
    lifecycle: Arc<Lifecycle>,
    grace_period: Duration,
    timeout: Duration,
}

impl Drain {
    /// Drain with the configured grace period and in-flight timeout.
    pub(crate) fn new(lifecycle: Arc<Lifecycle>, grace_period: Duration, timeout: Duration) -> Self {
        Drain { lifecycle, grace_period, timeout }
    }
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        let began = Instant::now();
        log::info!(
            "shutting down: {} request(s) in flight; waiting up to {:?}",
            self.lifecycle.in_flight(),
            self.grace_period + self.timeout
        );
        tokio::time::sleep(self.grace_period).await;
        let deadline = began + self.grace_period + self.timeout;
        while (self.lifecycle.in_flight() > 0 || self.lifecycle.cleanups_pending() > 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.lifecycle.in_flight();
        if left > 0 {
            log::warn!("shutdown timeout reached with {left} request(s) still in flight; they are cut");
        } else {
            log::info!("drained after {:?}; exiting", began.elapsed());
        }
        logger::flush();
        std::process::exit(0);
    }
}

/// A running background loop and the switch that stops it.
pub(crate) struct Running {
    stop: watch::Sender<bool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Run `work(stop)` in its own task until `stop` is sent; after a panic, log it and start it
/// again a second later.
pub(crate) fn spawn_supervised<F, Fut>(service: String, work: F) -> Running
where
    F: Fn(watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let task = tokio::spawn(work(stopped.clone()));
            match task.await {
                Err(e) if e.is_panic() => {
                    log::error!("service {service}: a background task panicked; restarting it in 1s");
                    let mut stopped = stopped.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stopped.changed() => return,
                    }
                    if *stopped.borrow() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    Running { stop }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_restarted_and_stops_when_asked() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let running = spawn_supervised("test".into(), move |mut stop| {
            let counter = counter.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first run fails");
                }
                let _ = stop.changed().await;
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while runs.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted after the panic");
        drop(running);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "not restarted after being stopped");
    }

    #[test]
    fn guards_count() {
        let l = Lifecycle::new();
        let a = l.request();
        let b = l.request();
        assert_eq!(l.in_flight(), 2);
        drop(a);
        assert_eq!(l.in_flight(), 1);
        let c = l.cleanup();
        assert_eq!(l.cleanups_pending(), 1);
        drop((b, c));
        assert_eq!((l.in_flight(), l.cleanups_pending()), (0, 0));
        let reserved = l.reserve_cleanup();
        assert_eq!(l.cleanups_pending(), 1, "counted before it is claimed");
        let claimed = reserved.claim();
        assert!(claimed.is_some() && reserved.claim().is_none(), "claimed once");
        drop(claimed);
        assert_eq!(l.cleanups_pending(), 0);
    }
}
