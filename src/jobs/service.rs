//! The NATS connection, owned by [`NatsService`]. It starts after Pingora's daemon fork (a
//! client made earlier would lose its threads), connects in the background so Siger starts
//! with NATS down, reconnects forever with a capped back-off, verifies the stream after every
//! (re)connect, and on shutdown lets in-flight submissions finish before flushing and draining.
//!
//! [`WithNats`] starts it on the proxy service's runtime rather than a background service's
//! own: the client's connection task then shares worker threads with the requests that
//! publish, so a publish and its ack are task wake-ups, not cross-runtime thread wake-ups.
//! Measured with load-tests/jobs-bench.sh: about 20 % less gateway CPU per job.

use super::stream::{self, StreamCheck};
use super::{Jobs, Link};
use crate::backoff::Backoff;
use crate::config::NatsSettings;
use crate::lifecycle::{CleanupGuard, Lifecycle};
use crate::nats::{credentials, redact, server_addrs};
use async_nats::jetstream::context::ContextBuilder;
use async_nats::{ConnectOptions, Event};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest pause between reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// How often the server is pinged: a silently dead peer is noticed within two intervals.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// Bound on each of flush and drain at shutdown.
const SHUTDOWN_STEP: Duration = Duration::from_secs(2);

/// While NATS stays unreachable, a failed reconnect attempt is logged at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(30);

/// Owns the jobs NATS connection.
#[derive(Debug)]
pub(crate) struct NatsService {
    jobs: Arc<Jobs>,
    /// The max_payload warning is worth one line per process, not one per reconnect.
    payload_warned: AtomicBool,
}

impl NatsService {
    /// A service for this jobs state.
    pub(crate) fn new(jobs: Arc<Jobs>) -> Self {
        NatsService { jobs, payload_warned: AtomicBool::new(false) }
    }
}

/// Turns the client's event stream into log lines: state changes always, repeated connection
/// errors during an outage once per [`ERROR_LOG_EVERY`] with a count.
#[derive(Debug, Default)]
struct EventLog {
    /// When an error line was last written, and errors since.
    errors: Mutex<(Option<Instant>, u64)>,
}

impl EventLog {
    fn on_event(&self, jobs: &Jobs, event: Event) {
        match event {
            Event::Connected => {
                if let Ok(mut e) = self.errors.lock() {
                    *e = (None, 0);
                }
                log::info!("nats: connected");
                jobs.connected.notify_one();
            }
            Event::Disconnected => log::warn!("nats: disconnected; reconnecting"),
            Event::LameDuckMode => log::warn!("nats: server entered lame duck mode"),
            Event::Closed => log::info!("nats: connection closed"),
            Event::Draining => log::info!("nats: draining"),
            Event::ClientError(err) => {
                let Ok(mut e) = self.errors.lock() else { return };
                e.1 += 1;
                if e.0.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) {
                    log::warn!("nats: cannot connect ({err}); {} failed attempts so far, still retrying", e.1);
                    e.0 = Some(Instant::now());
                }
            }
            other => log::warn!("nats: {other}"),
        }
    }
}

/// Reconnect back-off (the client counts the attempts): the first two at once, then the
/// shared back-off from 100 ms up to [`MAX_RECONNECT_DELAY`], jittered so a fleet of gateways
/// does not reconnect in lock-step.
pub(crate) fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let n = u32::try_from(attempts - 2).unwrap_or(u32::MAX);
    Backoff::nth(n, Duration::from_millis(100), MAX_RECONNECT_DELAY, rand::random::<f64>())
}

async fn connect_options(n: &NatsSettings, jobs: &Arc<Jobs>) -> Result<ConnectOptions, String> {
    let options = credentials(n.credentials_file.as_deref(), n.token.as_deref(), n.user_password.as_ref()).await?;
    let events = Arc::clone(jobs);
    let event_log = Arc::new(EventLog::default());
    Ok(options
        .name(format!("siger {}", env!("CARGO_PKG_VERSION")))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(n.connect_timeout)
        .client_capacity(n.pending_buffer)
        .ping_interval(PING_INTERVAL)
        .request_timeout(Some(jobs.settings.ack_timeout))
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let (jobs, log) = (Arc::clone(&events), Arc::clone(&event_log));
            async move { log.on_event(&jobs, event) }
        }))
}

impl NatsService {
    /// Make the client (it connects in the background). Only option errors fail here, e.g. an
    /// unreadable credentials file; those are retried so a fixed file is picked up.
    async fn connect(&self, shutdown: &mut ShutdownWatch) -> Option<Link> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let made = async {
                let addrs = server_addrs(&self.jobs.nats.url)?;
                let options = connect_options(&self.jobs.nats, &self.jobs).await?;
                options.connect(addrs).await.map_err(|e| format!("nats: {e}"))
            };
            match made.await {
                Ok(client) => {
                    log::info!("nats: connecting to {} in the background", redact(&self.jobs.nats.url));
                    // Acks bounded by ack_timeout; at most as many awaiting acks as the pending
                    // buffer holds, waiting (not failing) for a slot within the caller's timeout.
                    let js = ContextBuilder::new()
                        .timeout(self.jobs.settings.ack_timeout)
                        .max_ack_inflight(self.jobs.nats.pending_buffer.max(1))
                        .backpressure_on_inflight(true)
                        .build(client.clone());
                    return Some(Link { client, js });
                }
                Err(e) => {
                    let delay = backoff.next();
                    log::error!("{e}; retrying in {delay:?}");
                    self.jobs.set_stream_problem(Some(e));
                    tokio::select! {
                        _ = shutdown.changed() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Verify (or create) the stream, then find (or create) the job index; retried with
    /// back-off while connected.
    async fn bootstrap(&self, link: &Link) {
        let jobs = &self.jobs;
        let name = &jobs.settings.stream.name;
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        loop {
            let delay = backoff.next();
            if !jobs.is_connected() {
                return;
            }
            match stream::ensure(&link.js, &jobs.settings).await {
                Ok(check) => {
                    match &check {
                        StreamCheck::Matches => log::info!("jobs stream {name}: verified"),
                        StreamCheck::Created => log::info!("jobs stream {name}: created"),
                        StreamCheck::Differs(d) => log::error!(
                            "jobs stream {name} exists with a different configuration and was left unchanged: {}",
                            d.join("; ")
                        ),
                        StreamCheck::Missing => {
                            log::error!("jobs stream {name} does not exist and jobs.stream.create is false")
                        }
                    }
                    jobs.set_stream_problem(match check {
                        StreamCheck::Matches | StreamCheck::Created => None,
                        StreamCheck::Differs(d) => Some(format!("differs from the config: {}", d.join("; "))),
                        StreamCheck::Missing => Some("does not exist (jobs.stream.create is false)".into()),
                    });
                    self.check_max_payload(link);
                    if jobs.index.get().is_some() {
                        return;
                    }
                    match stream::ensure_index(&link.js, &jobs.settings).await {
                        Ok(index) => return jobs.set_index(Ok(index)),
                        Err(e) => {
                            log::warn!("jobs index: {e}; job status cannot be read yet; retrying in {delay:?}");
                            jobs.set_index(Err(e));
                        }
                    }
                }
                Err(e) => {
                    log::warn!("jobs stream {name}: {e}; retrying in {delay:?}");
                    jobs.set_stream_problem(Some(e));
                }
            }
            tokio::time::sleep(delay).await;
        }
    }

    fn check_max_payload(&self, link: &Link) {
        let max_payload = link.client.server_info().max_payload as u64;
        let max_body = self.jobs.settings.max_body;
        // Envelope fields and headers add a few hundred bytes to the client's body.
        if max_payload > 0 && max_body + 1024 > max_payload && !self.payload_warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "jobs.max_body ({max_body} bytes) plus the envelope can exceed the NATS server's max_payload \
                 ({max_payload} bytes); such jobs are refused with 413"
            );
        }
    }

    /// Let in-flight submissions finish (bounded), then flush and drain so nothing queued in
    /// the client is dropped on exit.
    async fn shut_down(&self, link: &Link) {
        let deadline = Instant::now() + self.jobs.shutdown_wait;
        while self.jobs.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if self.jobs.in_flight() > 0 {
            log::warn!("nats: {} job submissions still in flight at shutdown", self.jobs.in_flight());
        }
        if tokio::time::timeout(SHUTDOWN_STEP, link.client.flush()).await.is_err() {
            log::warn!("nats: flush did not finish within {SHUTDOWN_STEP:?}");
        }
        match tokio::time::timeout(SHUTDOWN_STEP, link.client.drain()).await {
            Ok(Ok(())) => log::info!("nats: drained"),
            Ok(Err(e)) => log::warn!("nats: drain failed: {e}"),
            Err(_) => log::warn!("nats: drain did not finish within {SHUTDOWN_STEP:?}"),
        }
    }
}

#[async_trait]
impl BackgroundService for NatsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(link) = self.connect(&mut shutdown).await else { return };
        let link = self.jobs.link.get_or_init(|| link);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = self.jobs.connected.notified() => {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = self.bootstrap(link) => {}
                    }
                }
            }
        }
        self.shut_down(link).await;
    }
}

/// Starts [`NatsService`] on the runtime of the service it wraps (the proxy) and otherwise
/// behaves exactly like that service (name, threads, listeners for upgrades, readiness).
pub(crate) struct WithNats<S> {
    inner: S,
    /// The NATS service and its hold on the process's exit, registered when built so that a
    /// signal during start-up cannot let the process exit before the service has drained.
    nats: Option<(NatsService, CleanupGuard)>,
}

impl<S> WithNats<S> {
    /// Wrap `inner`; `nats` (if any) starts with it, after Pingora's fork. The process does not
    /// exit before the NATS service has flushed and drained (see `lifecycle::Drain`).
    pub(crate) fn new(inner: S, nats: Option<NatsService>, lifecycle: Arc<Lifecycle>) -> Self {
        WithNats { inner, nats: nats.map(|n| (n, lifecycle.cleanup())) }
    }
}

#[async_trait]
impl<S: pingora::services::ServiceWithDependents> pingora::services::ServiceWithDependents for WithNats<S> {
    async fn start_service(
        &mut self,
        #[cfg(unix)] fds: Option<pingora::server::ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: pingora::services::ServiceReadyNotifier,
    ) {
        if let Some((nats, cleanup)) = self.nats.take() {
            let watch = shutdown.clone();
            tokio::spawn(async move {
                nats.start(watch).await;
                drop(cleanup);
            });
        }
        self.inner
            .start_service(
                #[cfg(unix)]
                fds,
                shutdown,
                listeners_per_fd,
                ready_notifier,
            )
            .await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(&self, global: &pingora::server::RuntimeOpts) -> Option<pingora::server::RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn on_startup_delay(&self, time_waited: Duration) {
        self.inner.on_startup_delay(time_waited)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_starts_at_once() {
        assert_eq!(reconnect_delay(0), Duration::ZERO);
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        let second = reconnect_delay(2);
        assert!(second >= Duration::from_millis(50) && second <= Duration::from_millis(100), "{second:?}");
        for n in [10, 100, usize::MAX] {
            let d = reconnect_delay(n);
            assert!(d >= MAX_RECONNECT_DELAY / 2 && d <= MAX_RECONNECT_DELAY, "{d:?}");
        }
    }
}
