//! Shared counters in Redis: one atomic Lua script per check implements the same sliding window
//! as the local store, on Redis's clock (so every gateway agrees on window boundaries), in one
//! hash per key. Connections are made lazily on the first check, inside the worker runtime (a
//! client made before Pingora's daemon fork would be lost), as a small pool of auto-reconnecting
//! multiplexed connections. Every check is bounded by `redis_timeout`; after a failure Redis is
//! skipped for a short cool-down, so a dead or black-holed Redis costs at most one timeout per
//! cool-down instead of one per request.
//!
//! Behind Sentinel the master is asked of the sentinels (in a task of its own, so a slow answer
//! never holds a request longer than the timeout) and asked again after any failure: a failover
//! shows as errors from the old master (gone, or demoted and read-only). The check that met the
//! error runs again on the master the sentinels name if they answer within its timeout, and a
//! master found during a cool-down ends it: requests are counted wherever a master is known. A Redis Cluster is reached through
//! the crate's cluster client, which follows MOVED/ASK and slot changes itself; a limit's key
//! carries a hash tag, so it lives in one slot whatever the key's other characters are.

use super::window::{Decision, Usage};
use crate::config::{Findings, RedisSettings, RedisTopology};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, TlsMode};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Multiplexed connections per process (each pipelines concurrent checks).
const POOL_SIZE: usize = 2;
/// How long Redis is not asked after a failure.
const COOL_DOWN: Duration = Duration::from_millis(250);

/// KEYS[1] = counter hash; ARGV = limit, window (ms). Returns {admitted, prev, curr, elapsed ms}.
/// Fields: w = current window number, c = its count, p = the previous window's count.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local win = tonumber(ARGV[2])
local id = math.floor(now / win)
local h = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local w = tonumber(h[1])
local c = tonumber(h[2]) or 0
local p = tonumber(h[3]) or 0
if w == nil or w < id - 1 then
  p = 0
  c = 0
elseif w == id - 1 then
  p = c
  c = 0
end
local elapsed = now - id * win
local estimate = p * (win - elapsed) / win + c
local admitted = 0
if estimate + 1 <= limit then
  c = c + 1
  admitted = 1
end
redis.call('HSET', KEYS[1], 'w', id, 'c', c, 'p', p)
redis.call('PEXPIRE', KEYS[1], win * 2)
return {admitted, p, c, elapsed}
"#;

/// Why Redis gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum StoreError {
    /// The URL or client could not be set up.
    #[error("redis client: {0}")]
    Client(String),
    /// Redis did not answer within `redis_timeout`.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(String),
    /// Skipped: Redis failed moments ago.
    #[error("redis unavailable (cooling down after a failure)")]
    CoolingDown,
}

/// The Redis store.
pub(crate) struct RedisStore {
    settings: RedisSettings,
    timeout: Duration,
    pool: OnceLock<Result<Vec<ConnectionManager>, String>>,
    next: AtomicUsize,
    /// Sentinel and cluster deployments: how the connection in use is found again.
    finder: Option<Arc<Finder>>,
    script: redis::Script,
    /// Unix milliseconds before which Redis is not asked.
    skip_until_ms: AtomicU64,
    /// Sentinel and cluster deployments: the finder's generation when the last check failed and
    /// the node it failed on; a connection found since, to another node, ends the cool-down.
    failed: Mutex<Option<(u64, Option<Arc<str>>)>>,
}

/// Our CA for the data nodes' certificates.
fn certificates(ca: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates { client_tls: None, root_cert: Some(ca.to_vec()) }
}

/// A connection the finder found: the link, the node it goes to (`cluster` for a cluster) and
/// its generation.
#[derive(Clone)]
struct Found {
    link: Link,
    node: Arc<str>,
    generation: u64,
}

/// A connection to the master (Sentinel) or the cluster, and what found it.
enum Link {
    Master(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Clone for Link {
    fn clone(&self) -> Self {
        match self {
            Link::Master(c) => Link::Master(c.clone()),
            Link::Cluster(c) => Link::Cluster(c.clone()),
        }
    }
}

/// Finds (and finds again, after a failure) the connection of a Sentinel or cluster
/// deployment, one search at a time, in a task requests do not wait on beyond their timeout.
struct Finder {
    how: How,
    /// The connection in use.
    current: Mutex<Option<Found>>,
    /// Generations of found connections (a failure forgets only the one it happened on).
    generation: AtomicU64,
    searching: AtomicBool,
    /// The last search failed (its failures are logged once, not every cool-down).
    failing: AtomicBool,
    found: tokio::sync::Notify,
    /// Connection and response timeouts of the connections it makes.
    timeouts: AsyncConnectionConfig,
}

enum How {
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster(redis::cluster::ClusterClient),
}

impl Finder {
    fn build(settings: &RedisSettings, timeout: Duration) -> Result<Option<Finder>, String> {
        let connect = timeout.max(Duration::from_millis(250));
        let tls = settings.tls.then_some(TlsMode::Secure);
        let how = match &settings.topology {
            RedisTopology::Single { .. } => return Ok(None),
            RedisTopology::Sentinel { sentinels, master_name } => {
                let addrs = sentinels.iter().map(|(host, port)| match tls {
                    Some(_) => {
                        ConnectionAddr::TcpTls { host: host.clone(), port: *port, insecure: false, tls_params: None }
                    }
                    None => ConnectionAddr::Tcp(host.clone(), *port),
                });
                let mut builder = SentinelClientBuilder::new(addrs, master_name, SentinelServerType::Master)
                    .map_err(|e| e.to_string())?;
                if let Some(password) = &settings.password {
                    builder = builder.set_client_to_redis_password(password);
                }
                if let Some(mode) = tls {
                    builder = builder.set_client_to_redis_tls_mode(mode).set_client_to_sentinel_tls_mode(mode);
                }
                if let Some(ca) = &settings.ca {
                    builder = builder
                        .set_client_to_redis_certificates(certificates(&ca.bytes))
                        .set_client_to_sentinel_certificates(certificates(&ca.bytes));
                }
                How::Sentinel(tokio::sync::Mutex::new(builder.build().map_err(|e| e.to_string())?))
            }
            RedisTopology::Cluster { nodes } => {
                let scheme = if settings.tls { "rediss" } else { "redis" };
                let urls: Vec<String> =
                    nodes
                        .iter()
                        .map(|(h, p)| {
                            if h.contains(':') {
                                format!("{scheme}://[{h}]:{p}")
                            } else {
                                format!("{scheme}://{h}:{p}")
                            }
                        })
                        .collect();
                // Redirects are retried at once by the client; waits stay within a check's timeout.
                let mut builder = redis::cluster::ClusterClient::builder(urls)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(50)
                    .connection_timeout(connect)
                    .response_timeout(timeout);
                if let Some(password) = &settings.password {
                    builder = builder.password(password.clone());
                }
                if let Some(mode) = tls {
                    builder = builder.tls(mode);
                }
                if let Some(ca) = &settings.ca {
                    builder = builder.certs(certificates(&ca.bytes));
                }
                How::Cluster(builder.build().map_err(|e| e.to_string())?)
            }
        };
        Ok(Some(Finder {
            how,
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            searching: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            found: tokio::sync::Notify::new(),
            timeouts: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect))
                .set_response_timeout(Some(timeout)),
        }))
    }

    fn current(&self) -> Option<Found> {
        self.current.lock().ok()?.clone()
    }

    /// The node in use, for metrics.
    fn node(&self) -> Option<String> {
        self.current.lock().ok()?.as_ref().map(|f| f.node.to_string())
    }

    /// Forget the connection of `generation` (a failure on it), not one found since.
    fn forget(&self, generation: u64) {
        if let Ok(mut current) = self.current.lock() {
            if current.as_ref().is_some_and(|f| f.generation == generation) {
                *current = None;
            }
        }
    }

    /// The connection in use; with `failed`, only one found after it that goes to another node
    /// (the same node would fail alike: a master answering errors is not asked twice). When
    /// there is none, a search is started (unless one runs) and waited for until `deadline`.
    async fn usable(self: &Arc<Self>, failed: Option<&Found>, deadline: tokio::time::Instant) -> Option<Found> {
        let usable = |current: Option<Found>| {
            current.filter(|c| failed.is_none_or(|f| c.generation > f.generation && c.node != f.node))
        };
        // Registered before the search starts, so its end cannot be missed.
        let found = self.found.notified();
        if let Some(current) = usable(self.current()) {
            return Some(current);
        }
        self.search();
        let _ = tokio::time::timeout_at(deadline, found).await;
        usable(self.current())
    }

    /// Whether a connection to another node than `node` was found after `generation`.
    fn found_since(&self, generation: u64, node: Option<&Arc<str>>) -> bool {
        self.current().is_some_and(|c| c.generation > generation && Some(&c.node) != node)
    }

    /// Start a search unless one is running.
    fn search(self: &Arc<Self>) {
        if self.searching.swap(true, Ordering::AcqRel) {
            return;
        }
        let finder = self.clone();
        tokio::spawn(async move {
            match finder.find().await {
                Ok((link, node)) => {
                    let generation = finder.generation.fetch_add(1, Ordering::Relaxed) + 1;
                    if finder.failing.swap(false, Ordering::Relaxed) || generation > 1 {
                        log::info!("rate limit store: using {node}");
                    }
                    if let Ok(mut current) = finder.current.lock() {
                        *current = Some(Found { link, node: node.into(), generation });
                    }
                }
                Err(e) if !finder.failing.swap(true, Ordering::Relaxed) => {
                    log::warn!("rate limit store: {e} (retried after each failed check)");
                }
                Err(_) => {}
            }
            finder.searching.store(false, Ordering::Release);
            finder.found.notify_waiters();
        });
    }

    async fn find(&self) -> Result<(Link, String), String> {
        match &self.how {
            How::Sentinel(sentinel) => {
                let client = sentinel.lock().await.async_get_client().await.map_err(|e| format!("sentinels: {e}"))?;
                let node = client.get_connection_info().addr().to_string();
                let conn = client
                    .get_multiplexed_async_connection_with_config(&self.timeouts)
                    .await
                    .map_err(|e| format!("master {node}: {e}"))?;
                Ok((Link::Master(conn), node))
            }
            How::Cluster(client) => {
                let conn = client.get_async_connection().await.map_err(|e| format!("cluster: {e}"))?;
                Ok((Link::Cluster(conn), "cluster".into()))
            }
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("timeout", &self.timeout).finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl RedisStore {
    /// A store for `settings`; nothing connects until the first check.
    /// The store of `rate_limit.redis`, its clients built (no connection yet) exactly as the
    /// limiter uses them, so a setting the client refuses is reported under its key rather than
    /// found at the first request; the CA file's certificates are checked too.
    pub(crate) fn load(settings: &RedisSettings, findings: &mut Findings) -> Option<Self> {
        if let Some(ca) = &settings.ca {
            if let Err(e) = crate::tls::material::certificates(&ca.bytes) {
                findings.error(&ca.key, format!("{}: {e}", ca.shown()));
                return None;
            }
        }
        Self::new(settings).map_err(|e| findings.error("rate_limit.redis", e)).ok()
    }

    pub(crate) fn new(settings: &RedisSettings) -> Result<Self, String> {
        Ok(RedisStore {
            settings: settings.clone(),
            timeout: settings.timeout,
            pool: OnceLock::new(),
            next: AtomicUsize::new(0),
            finder: Finder::build(settings, settings.timeout)?.map(Arc::new),
            script: redis::Script::new(SCRIPT),
            skip_until_ms: AtomicU64::new(0),
            failed: Mutex::new(None),
        })
    }

    /// The settings it was made for.
    pub(crate) fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// The node in use: the server, the master Sentinel named, or `cluster`.
    pub(crate) fn node(&self) -> Option<String> {
        match (&self.finder, &self.settings.topology) {
            (Some(finder), _) => finder.node(),
            (None, RedisTopology::Single { url }) => {
                url.as_str().into_connection_info().ok().map(|i| i.addr().to_string())
            }
            (None, _) => None,
        }
    }

    /// One URL's pooled connections.
    fn single(&self, url: &str) -> Result<ConnectionManager, StoreError> {
        let pool = self.pool.get_or_init(|| {
            let mut info = url.into_connection_info().map_err(|e| e.to_string())?;
            if let (Some(password), None) = (&self.settings.password, info.redis_settings().password()) {
                let redis = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(redis);
            }
            let client = match &self.settings.ca {
                Some(ca) => redis::Client::build_with_tls(info, certificates(&ca.bytes)),
                None => redis::Client::open(info),
            }
            .map_err(|e| e.to_string())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(250))))
                .set_response_timeout(Some(self.timeout))
                // Reconnect attempts are short: requests never wait for them (see COOL_DOWN).
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_millis(500));
            (0..POOL_SIZE)
                .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
        });
        match pool {
            Ok(conns) if !conns.is_empty() => {
                Ok(conns[self.next.fetch_add(1, Ordering::Relaxed) % conns.len()].clone())
            }
            Ok(_) => Err(StoreError::Client("empty pool".into())),
            Err(e) => Err(StoreError::Client(e.clone())),
        }
    }

    /// Count one request for `key` if it fits in `limit` per `per`.
    pub(crate) async fn check(&self, key: &str, limit: u64, per: Duration) -> Result<Decision, StoreError> {
        let per_ms = per.as_millis().max(1) as u64;
        let reply = self.invoke(&self.script, &[key.to_string()], &[limit.to_string(), per_ms.to_string()]).await?;
        let numbers = integers(&reply);
        let Some([admitted, prev, curr, elapsed]) = numbers.as_deref().and_then(|n| <[i64; 4]>::try_from(n).ok())
        else {
            return Err(StoreError::Redis(format!("unexpected script reply {reply:?}")));
        };
        let usage = Usage {
            prev: prev.max(0) as u64,
            curr: curr.max(0) as u64,
            fraction: (elapsed.max(0) as f64 / per_ms as f64).min(1.0),
        };
        Ok(super::window::decide(admitted == 1, limit, per, usage))
    }

    /// Run `script` with `keys` (one hash tag) and `args` on the store: the rate limits' checks,
    /// and quotas' and usage's scripts, alike — one timeout, the cool-down after a failure,
    /// the Sentinel retry on a new master and the Cluster link.
    pub(crate) async fn invoke(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> Result<redis::Value, StoreError> {
        if now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            // A connection to another node found since the failure (the sentinels named the new
            // master) ends the cool-down: it spares requests a failing node, not a live one.
            let failed = self.failed.lock().ok().and_then(|f| f.clone());
            let moved_on = match (&self.finder, failed) {
                (Some(finder), Some((generation, node))) => finder.found_since(generation, node.as_ref()),
                _ => false,
            };
            if !moved_on {
                return Err(StoreError::CoolingDown);
            }
        }
        let call = Call { script, keys, args };
        let result = self.eval(&call).await;
        if result.is_err() {
            self.skip_until_ms.store(now_ms() + COOL_DOWN.as_millis() as u64, Ordering::Relaxed);
        }
        result
    }

    async fn eval(&self, call: &Call<'_>) -> Result<redis::Value, StoreError> {
        match (&self.finder, &self.settings.topology) {
            (None, RedisTopology::Single { url }) => {
                let mut conn = self.single(url)?;
                self.run(&mut conn, call, tokio::time::Instant::now() + self.timeout).await
            }
            (Some(finder), _) => self.eval_found(finder, call).await,
            (None, _) => Err(StoreError::Client("no connection for this topology".into())),
        }
    }

    /// A call on a Sentinel or cluster deployment; a failure is remembered with its node.
    async fn eval_found(&self, finder: &Arc<Finder>, call: &Call<'_>) -> Result<redis::Value, StoreError> {
        let fail = |node: Option<Arc<str>>, e: StoreError| {
            if let Ok(mut failed) = self.failed.lock() {
                *failed = Some((finder.generation.load(Ordering::Relaxed), node));
            }
            Err(e)
        };
        // One deadline for the waits and the scripts: a check never takes longer.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let Some(found) = finder.usable(None, deadline).await else {
            return fail(None, StoreError::Redis("no master or cluster connection yet".into()));
        };
        let e = match self.run_on(found.link.clone(), call, deadline).await {
            Ok(reply) => return Ok(reply),
            Err(e) if !matches!(self.settings.topology, RedisTopology::Sentinel { .. }) => {
                return fail(Some(found.node), e)
            }
            Err(e) => e,
        };
        // The master may be gone or demoted: ask the sentinels again, and when they name another
        // master within this check's time, count there. A gateway idle through a failover finds
        // its dead connection on its first check; letting that check (and the cool-down after
        // it) skip Redis would admit requests nobody counts while the new master is known.
        finder.forget(found.generation);
        let retry = match finder.usable(Some(&found), deadline).await {
            Some(retry) if tokio::time::Instant::now() < deadline => retry,
            _ => return fail(Some(found.node), e),
        };
        match self.run_on(retry.link.clone(), call, deadline).await {
            Ok(reply) => Ok(reply),
            Err(e) => {
                finder.forget(retry.generation);
                finder.search();
                fail(Some(retry.node), e)
            }
        }
    }

    /// Run the call on the connection of `link`, answered by `deadline`.
    async fn run_on(
        &self,
        link: Link,
        call: &Call<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<redis::Value, StoreError> {
        match link {
            Link::Master(mut conn) => self.run(&mut conn, call, deadline).await,
            Link::Cluster(mut conn) => self.run(&mut conn, call, deadline).await,
        }
    }

    /// Run the call on `conn`, answered by `deadline` (the script is sent by its hash; its body
    /// only when the server lacks it).
    async fn run<C: ConnectionLike>(
        &self,
        conn: &mut C,
        call: &Call<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<redis::Value, StoreError> {
        let mut invocation = call.script.prepare_invoke();
        for key in call.keys {
            invocation.key(key);
        }
        for arg in call.args {
            invocation.arg(arg);
        }
        tokio::time::timeout_at(deadline, invocation.invoke_async(conn))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
            .map_err(|e| StoreError::Redis(e.to_string()))
    }
}

/// One script call: what a retry on another node repeats.
struct Call<'a> {
    script: &'a redis::Script,
    keys: &'a [String],
    args: &'a [String],
}
/// A script's reply as integers (`{1, 42}` → `[1, 42]`); `None` for any other shape.
pub(crate) fn integers(reply: &redis::Value) -> Option<Vec<i64>> {
    match reply {
        redis::Value::Array(items) => items
            .iter()
            .map(|v| match v {
                redis::Value::Int(n) => Some(*n),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}
