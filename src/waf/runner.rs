//! Running inspections off the reactor, with a bound.
//!
//! One inspection is CPU work of 2–20 ms for ordinary requests and up to about a second for a
//! large JSON body. Run on a Tokio worker it would stall every other request that worker
//! serves. So each one runs on Tokio's blocking pool (`spawn_blocking`), at most `workers` at a
//! time; requests beyond that wait their turn asynchronously, at most `queue` of them, and past
//! that inspection refuses at once ([`InspectError::Busy`]) rather than letting a flood of
//! expensive bodies queue without end. The proxy fails closed on both errors in `block` mode.
//!
//! The bound is global (one `Inspector` for every Pingora runtime): Tokio's semaphore does not
//! belong to a runtime. A request abandoned while it waits frees its place in the queue; one
//! abandoned while it runs finishes its inspection (CPU work cannot be interrupted) and frees
//! its worker then.

use super::{Exclusions, Request, RuleSet, Verdict};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Runs inspections on the blocking pool, at most `workers` at once and `queue` waiting.
#[derive(Debug)]
pub struct Inspector {
    workers: Arc<Semaphore>,
    workers_total: usize,
    waiting: AtomicUsize,
    queue: usize,
}

/// Why an inspection did not produce a verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    /// `queue` inspections are already waiting for a worker.
    #[error("request inspection is at capacity ({waiting} requests waiting)")]
    Busy {
        /// How many were waiting.
        waiting: usize,
    },
    /// The inspection panicked (an engine defect); the message says where.
    #[error("request inspection failed: {0}")]
    Failed(String),
}

impl Inspector {
    /// An inspector running at most `workers` inspections at once (at least one) with at most
    /// `queue` more waiting.
    pub fn new(workers: usize, queue: usize) -> Inspector {
        let workers = workers.max(1);
        Inspector {
            workers: Arc::new(Semaphore::new(workers)),
            workers_total: workers,
            waiting: AtomicUsize::new(0),
            queue,
        }
    }

    /// One worker per CPU the process may use, and 64 waiting per worker.
    pub fn for_this_machine() -> Inspector {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Inspector::new(cpus, cpus * 64)
    }

    /// Inspect `request` with `rules` off the reactor.
    pub async fn inspect(
        &self,
        rules: Arc<RuleSet>,
        request: Request,
        exclusions: Exclusions,
    ) -> Result<Verdict, InspectError> {
        let permit = {
            let _place = Waiting::take(&self.waiting, self.queue)?;
            // The semaphore is never closed, so acquiring only waits.
            Arc::clone(&self.workers).acquire_owned().await.map_err(|e| InspectError::Failed(e.to_string()))?
        };
        let inspection = tokio::task::spawn_blocking(move || {
            let verdict = rules.inspect(&request, &exclusions);
            drop(permit);
            verdict
        });
        inspection.await.map_err(|e| InspectError::Failed(panic_message(e)))
    }

    /// How many inspections wait for a worker now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// How many inspections run now.
    pub fn running(&self) -> usize {
        self.workers_total - self.workers.available_permits()
    }
}

/// A place in the queue, given back when dropped (also when the waiting request is abandoned).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn take(waiting: &'a AtomicUsize, queue: usize) -> Result<Waiting<'a>, InspectError> {
        let before = waiting.fetch_add(1, Ordering::AcqRel);
        let place = Waiting(waiting);
        if before >= queue {
            return Err(InspectError::Busy { waiting: before });
        }
        Ok(place)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string()),
        Err(e) => e.to_string(),
    }
}
