//! Shared counters in Redis: one atomic Lua script per check implements the same sliding window
//! as the local store, on Redis's clock (so every gateway agrees on window boundaries), in one
//! hash per key. Connections are made lazily on the first check, inside the worker runtime (a
//! client made before Pingora's daemon fork would be lost), as a small pool of auto-reconnecting
//! multiplexed connections. Every check is bounded by `redis_timeout`; after a failure Redis is
//! skipped for a short cool-down, so a dead or black-holed Redis costs at most one timeout per
//! cool-down instead of one per request.

use super::window::{Decision, Usage};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
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
    url: String,
    timeout: Duration,
    pool: OnceLock<Result<Vec<ConnectionManager>, String>>,
    next: AtomicUsize,
    script: redis::Script,
    /// Unix milliseconds before which Redis is not asked.
    skip_until_ms: AtomicU64,
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
    /// A store for `url`; nothing connects until the first check.
    pub(crate) fn new(url: &str, timeout: Duration) -> Self {
        RedisStore {
            url: url.to_string(),
            timeout,
            pool: OnceLock::new(),
            next: AtomicUsize::new(0),
            script: redis::Script::new(SCRIPT),
            skip_until_ms: AtomicU64::new(0),
        }
    }

    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let pool = self.pool.get_or_init(|| {
            let client = redis::Client::open(self.url.as_str()).map_err(|e| e.to_string())?;
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
        if now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            return Err(StoreError::CoolingDown);
        }
        let result = self.eval(key, limit, per).await;
        if result.is_err() {
            self.skip_until_ms.store(now_ms() + COOL_DOWN.as_millis() as u64, Ordering::Relaxed);
        }
        result
    }

    async fn eval(&self, key: &str, limit: u64, per: Duration) -> Result<Decision, StoreError> {
        let mut conn = self.connection()?;
        let per_ms = per.as_millis().max(1) as u64;
        let mut call = self.script.key(key);
        call.arg(limit).arg(per_ms);
        let reply: Vec<i64> = tokio::time::timeout(self.timeout, call.invoke_async(&mut conn))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))?
            .map_err(|e| StoreError::Redis(e.to_string()))?;
        let [admitted, prev, curr, elapsed] = reply[..] else {
            return Err(StoreError::Redis(format!("unexpected script reply {reply:?}")));
        };
        let usage = Usage {
            prev: prev.max(0) as u64,
            curr: curr.max(0) as u64,
            fraction: (elapsed.max(0) as f64 / per_ms as f64).min(1.0),
        };
        Ok(super::window::decide(admitted == 1, limit, per, usage))
    }
}
