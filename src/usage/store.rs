//! Where usage records are kept (docs/plans.md "Usage"): in this process (`local`), or in the
//! shared store, as one hash per consumer × day (`siger:usage:{c:acme}:2026-12-01`, fields
//! `<2xx|3xx|4xx|5xx|in|out>|<route>`) plus, per day, a sorted set of consumers by requests
//! (`siger:usage:{d:2026-12-01}:consumers`) for "today's top consumers" and for queries that
//! name no consumer. Every key expires `usage.retention` after its day ended.
//!
//! Writes are exactly-once per gateway: each flush has a sequence number, and the script that
//! adds a part to a key first checks the last sequence number this gateway wrote there. A write
//! that timed out after Redis applied it is retried by the next flush and skipped by the script,
//! so an ambiguous failure neither loses nor doubles a request.

use super::record::{Counts, FIELDS};
use crate::quota::calendar::{day_start, day_text};
use crate::quota::scripts::{consumer_tag, day_tag, text, Scripts};
use crate::ratelimit::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use time::Date;

/// KEYS[1] = the record (a hash) or a day's consumer index (a sorted set); KEYS[2] = the hash
/// holding each writer's last sequence number (the record itself, for a record).
/// ARGV = writer, sequence number, expiry (Unix s), `h` | `z`, then name, amount pairs.
/// Returns 1 when applied, 0 when this writer already wrote this sequence number here.
const ADD: &str = r"
local field = 'seq|' .. ARGV[1]
local last = tonumber(redis.call('HGET', KEYS[2], field) or '0')
if last >= tonumber(ARGV[2]) then
  return 0
end
for i = 5, #ARGV, 2 do
  if ARGV[4] == 'h' then
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  else
    redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
  end
end
redis.call('HSET', KEYS[2], field, ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
redis.call('EXPIREAT', KEYS[2], ARGV[3])
return 1
";

/// KEYS = one consumer's day records. Returns their HGETALLs.
const READ: &str = r"
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('HGETALL', KEYS[i])
end
return out
";

/// KEYS[1] = a day's consumer index; ARGV[1] = how many (the busiest first).
const TOP: &str = r"
return redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
";

static ADD_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ADD));
static READ_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(READ));
static TOP_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(TOP));

/// Records the local store holds when not told otherwise.
pub(crate) const DEFAULT_MAX_LOCAL_RECORDS: usize = 1_000_000;

/// What one flush adds to one key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Target {
    /// A consumer's day: fields `<metric>|<route>`.
    Record {
        /// The consumer.
        consumer: String,
        /// The day.
        day: Date,
    },
    /// A day's consumer index: members are consumers, amounts their requests.
    Index(Date),
}

/// One flush's additions to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    /// The key.
    pub(crate) target: Target,
    /// The flush's sequence number.
    pub(crate) seq: u64,
    /// (field or member, amount), amounts above 0.
    pub(crate) adds: Vec<(String, u64)>,
    /// Consumer × route × day records it carries (0 for an index).
    pub(crate) records: usize,
}

/// One row of a usage answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UsageRow {
    /// `YYYY-MM-DD`.
    pub(crate) day: String,
    /// The consumer.
    pub(crate) consumer: String,
    /// The route's label.
    pub(crate) route: String,
    /// The numbers.
    #[serde(flatten)]
    pub(crate) counts: RowCounts,
}

/// A row's numbers as the API shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct RowCounts {
    /// Requests.
    pub(crate) requests: u64,
    /// By status class.
    pub(crate) status: StatusCounts,
    /// Request body bytes.
    pub(crate) bytes_in: u64,
    /// Response body bytes.
    pub(crate) bytes_out: u64,
}

/// `{"2xx": n, "3xx": n, "4xx": n, "5xx": n}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct StatusCounts {
    #[serde(rename = "2xx")]
    s2xx: u64,
    #[serde(rename = "3xx")]
    s3xx: u64,
    #[serde(rename = "4xx")]
    s4xx: u64,
    #[serde(rename = "5xx")]
    s5xx: u64,
}

impl From<Counts> for RowCounts {
    fn from(c: Counts) -> Self {
        let [s2xx, s3xx, s4xx, s5xx] = c.status;
        RowCounts {
            requests: c.requests(),
            status: StatusCounts { s2xx, s3xx, s4xx, s5xx },
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
        }
    }
}

impl RowCounts {
    /// Requests by class: 2xx, 3xx, 4xx, 5xx.
    pub(crate) fn classes(&self) -> [u64; 4] {
        [self.status.s2xx, self.status.s3xx, self.status.s4xx, self.status.s5xx]
    }

    /// Add another row's numbers.
    pub(crate) fn add(&mut self, other: &RowCounts) {
        let mut mine = self.to_counts();
        mine.add(&other.to_counts());
        *self = mine.into();
    }

    fn to_counts(self) -> Counts {
        Counts { status: self.classes(), bytes_in: self.bytes_in, bytes_out: self.bytes_out }
    }
}

/// Why usage could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ReadError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The answer would be too large; the message says how to narrow it.
    #[error("{0}")]
    TooLarge(String),
}

/// Consumers a query without `consumer` may cover.
pub(crate) const MAX_QUERY_CONSUMERS: usize = 1000;

/// The store.
#[derive(Debug)]
pub(crate) enum UsageStore {
    /// In this process (lost at restart: one gateway, tests, development).
    Local(LocalUsage),
    /// The shared store.
    Shared {
        /// The rate limiter's connection.
        scripts: Arc<dyn Scripts>,
        /// `usage.retention`.
        retention: Duration,
    },
}

/// `siger:usage:{c:acme}:2026-12-01`.
pub(crate) fn record_key(consumer: &str, day: Date) -> String {
    format!("siger:usage:{}:{}", consumer_tag(consumer), day_text(day))
}

/// `siger:usage:{d:2026-12-01}:consumers` and its sequence hash.
fn index_keys(day: Date) -> [String; 2] {
    let tag = day_tag(&day_text(day));
    [format!("siger:usage:{tag}:consumers"), format!("siger:usage:{tag}:seq")]
}

/// When a day's keys expire: `retention` after the day ended.
pub(crate) fn expiry(day: Date, retention: Duration) -> i64 {
    day_start(day) + 86_400 + retention.as_secs().min(i64::MAX as u64 / 2) as i64
}

/// Days from `from` to `to`, both included.
pub(crate) fn days(from: Date, to: Date) -> impl Iterator<Item = Date> {
    std::iter::successors(Some(from), move |d| d.next_day().filter(|n| *n <= to)).filter(move |d| *d <= to)
}

impl UsageStore {
    /// Add `part` as `writer`'s; `Ok(true)` when applied, `Ok(false)` when it already was.
    pub(crate) async fn apply(&self, writer: &str, part: &Part, now_ms: i64) -> Result<bool, StoreError> {
        match self {
            UsageStore::Local(local) => {
                local.apply(part, now_ms);
                Ok(true)
            }
            UsageStore::Shared { scripts, retention } => {
                let (keys, kind, day) = match &part.target {
                    Target::Record { consumer, day } => {
                        let key = record_key(consumer, *day);
                        (vec![key.clone(), key], "h", *day)
                    }
                    Target::Index(day) => (index_keys(*day).to_vec(), "z", *day),
                };
                let mut args = Vec::with_capacity(4 + 2 * part.adds.len());
                args.extend([
                    writer.to_string(),
                    part.seq.to_string(),
                    expiry(day, *retention).to_string(),
                    kind.into(),
                ]);
                for (name, amount) in &part.adds {
                    args.push(name.clone());
                    args.push(amount.to_string());
                }
                let reply = scripts.invoke(&ADD_SCRIPT, &keys, &args).await?;
                Ok(matches!(reply, redis::Value::Int(1)))
            }
        }
    }

    /// The rows of `consumer` (every consumer when `None`) on `route` (every route when `None`)
    /// from `from` to `to`, by day, consumer, route.
    pub(crate) async fn rows(
        &self,
        consumer: Option<&str>,
        route: Option<&str>,
        from: Date,
        to: Date,
    ) -> Result<Vec<UsageRow>, ReadError> {
        let mut rows = match self {
            UsageStore::Local(local) => local.rows(consumer, from, to)?,
            UsageStore::Shared { scripts, .. } => {
                let consumers: BTreeMap<String, Vec<Date>> = match consumer {
                    Some(c) => BTreeMap::from([(c.to_string(), days(from, to).collect())]),
                    None => consumers_between(scripts.as_ref(), from, to).await?,
                };
                let mut rows = Vec::new();
                for (consumer, days) in consumers {
                    rows.extend(read_consumer(scripts.as_ref(), &consumer, &days).await?);
                }
                rows
            }
        };
        rows.retain(|r| route.is_none_or(|route| r.route == route));
        rows.sort_by(|a, b| (&a.day, &a.consumer, &a.route).cmp(&(&b.day, &b.consumer, &b.route)));
        Ok(rows)
    }

    /// The `n` consumers with the most requests on `day`, busiest first (written ones: this
    /// gateway's last `flush_interval` is not in yet).
    pub(crate) async fn top(&self, day: Date, n: usize) -> Result<Vec<(String, u64)>, StoreError> {
        match self {
            UsageStore::Local(local) => Ok(local.top(day, n)),
            UsageStore::Shared { scripts, .. } => {
                let [index, _] = index_keys(day);
                let reply = scripts.invoke(&TOP_SCRIPT, &[index], &[n.max(1).to_string()]).await?;
                let mut top: Vec<(String, u64)> = pairs(&reply)
                    .into_iter()
                    .map(|(c, score)| (c, score.parse::<f64>().unwrap_or(0.0) as u64))
                    .collect();
                // Redis orders ties in reverse; by name reads better, as the local store does.
                top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                Ok(top)
            }
        }
    }
}

/// A flat `[name, value, name, value…]` reply as pairs.
fn pairs(reply: &redis::Value) -> Vec<(String, String)> {
    let redis::Value::Array(items) = reply else { return Vec::new() };
    items.chunks_exact(2).filter_map(|pair| Some((text(&pair[0])?, text(&pair[1])?))).collect()
}

/// Every consumer with usage between `from` and `to`, and its days, from the days' indexes.
async fn consumers_between(
    scripts: &dyn Scripts,
    from: Date,
    to: Date,
) -> Result<BTreeMap<String, Vec<Date>>, ReadError> {
    let mut consumers: BTreeMap<String, Vec<Date>> = BTreeMap::new();
    for day in days(from, to) {
        let [index, _] = index_keys(day);
        let reply = scripts.invoke(&TOP_SCRIPT, &[index], &[(MAX_QUERY_CONSUMERS + 1).to_string()]).await?;
        for (consumer, _) in pairs(&reply) {
            consumers.entry(consumer).or_default().push(day);
        }
        if consumers.len() > MAX_QUERY_CONSUMERS {
            return Err(ReadError::TooLarge(format!(
                "more than {MAX_QUERY_CONSUMERS} consumers used the API from {} to {}; name one with `consumer` or shorten the range",
                day_text(from),
                day_text(day)
            )));
        }
    }
    Ok(consumers)
}

/// One consumer's rows on `days`, in one script (its keys share the consumer's hash tag).
async fn read_consumer(scripts: &dyn Scripts, consumer: &str, days: &[Date]) -> Result<Vec<UsageRow>, StoreError> {
    let keys: Vec<String> = days.iter().map(|d| record_key(consumer, *d)).collect();
    let reply = scripts.invoke(&READ_SCRIPT, &keys, &[]).await?;
    let redis::Value::Array(hashes) = reply else { return Ok(Vec::new()) };
    let mut rows = Vec::new();
    for (day, hash) in days.iter().zip(&hashes) {
        let mut routes: BTreeMap<String, Counts> = BTreeMap::new();
        for (field, value) in pairs(hash) {
            let Some((metric, route)) = field.split_once('|') else { continue };
            if FIELDS.contains(&metric) {
                routes.entry(route.to_string()).or_default().set(metric, value.parse().unwrap_or(0));
            }
        }
        rows.extend(routes.into_iter().map(|(route, counts)| UsageRow {
            day: day_text(*day),
            consumer: consumer.to_string(),
            route,
            counts: counts.into(),
        }));
    }
    Ok(rows)
}

/// Records of one process: days → consumers → routes.
type Days = BTreeMap<Date, BTreeMap<String, BTreeMap<String, Counts>>>;

/// The `local` store: this process's records, kept `retention`, at most `limit` of them.
#[derive(Debug)]
pub(crate) struct LocalUsage {
    days: Mutex<(Days, usize)>,
    /// `usage.retention` in seconds (a reload may change it).
    retention_secs: AtomicU64,
    limit: usize,
    /// Requests not kept because the store was full.
    pub(crate) dropped: AtomicU64,
}

impl LocalUsage {
    /// A store keeping records `retention`, at most `limit` of them.
    pub(crate) fn new(retention: Duration, limit: usize) -> Self {
        LocalUsage {
            days: Mutex::new((BTreeMap::new(), 0)),
            retention_secs: AtomicU64::new(retention.as_secs()),
            limit,
            dropped: AtomicU64::new(0),
        }
    }

    /// Keep records `retention` from now on (a reloaded `usage.retention`).
    pub(crate) fn set_retention(&self, retention: Duration) {
        self.retention_secs.store(retention.as_secs(), Ordering::Relaxed);
    }

    fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_secs.load(Ordering::Relaxed))
    }

    fn apply(&self, part: &Part, now_ms: i64) {
        let Target::Record { consumer, day } = &part.target else { return };
        let mut guard = self.days.lock().unwrap_or_else(|p| p.into_inner());
        let (days, held) = &mut *guard;
        // Days past their retention go first.
        let now = now_ms.div_euclid(1000);
        while let Some(oldest) = days.keys().next().copied().filter(|d| expiry(*d, self.retention()) <= now) {
            if let Some(gone) = days.remove(&oldest) {
                *held -= gone.values().map(BTreeMap::len).sum::<usize>();
            }
        }
        let routes = days.entry(*day).or_default().entry(consumer.clone()).or_default();
        let mut parsed: BTreeMap<&str, Counts> = BTreeMap::new();
        for (field, amount) in &part.adds {
            if let Some((metric, route)) = field.split_once('|') {
                // A part names each field once.
                parsed.entry(route).or_default().set(metric, *amount);
            }
        }
        for (route, counts) in parsed {
            match routes.get_mut(route) {
                Some(existing) => existing.add(&counts),
                None if *held < self.limit => {
                    routes.insert(route.to_string(), counts);
                    *held += 1;
                }
                None => {
                    self.dropped.fetch_add(counts.requests(), Ordering::Relaxed);
                }
            }
        }
    }

    fn rows(&self, consumer: Option<&str>, from: Date, to: Date) -> Result<Vec<UsageRow>, ReadError> {
        let guard = self.days.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows = Vec::new();
        let mut consumers = BTreeSet::new();
        for (day, by_consumer) in guard.0.range(from..=to) {
            for (name, routes) in by_consumer.iter().filter(|(c, _)| consumer.is_none_or(|want| want == c.as_str())) {
                consumers.insert(name.as_str());
                for (route, counts) in routes {
                    rows.push(UsageRow {
                        day: day_text(*day),
                        consumer: name.clone(),
                        route: route.clone(),
                        counts: (*counts).into(),
                    });
                }
            }
        }
        if consumers.len() > MAX_QUERY_CONSUMERS {
            return Err(ReadError::TooLarge(format!(
                "more than {MAX_QUERY_CONSUMERS} consumers used the API in that range; name one with `consumer` or shorten the range"
            )));
        }
        Ok(rows)
    }

    fn top(&self, day: Date, n: usize) -> Vec<(String, u64)> {
        let guard = self.days.lock().unwrap_or_else(|p| p.into_inner());
        let mut top: Vec<(String, u64)> = guard.0.get(&day).map_or_else(Vec::new, |by_consumer| {
            by_consumer.iter().map(|(c, routes)| (c.clone(), routes.values().map(Counts::requests).sum())).collect()
        });
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(n);
        top
    }
}

/// The parts one flush writes for what the meter gathered: a record per consumer × day (its
/// routes' non-zero fields) and, per day, each consumer's requests for the day's index.
pub(crate) fn parts(gathered: super::meter::Gathered, seq: u64) -> Vec<Part> {
    let mut records: BTreeMap<(String, Date), BTreeMap<Arc<str>, Counts>> = BTreeMap::new();
    for (consumer, route, day, counts) in gathered {
        records.entry((consumer, day)).or_default().entry(route).or_default().add(&counts);
    }
    let mut index: BTreeMap<Date, BTreeMap<String, u64>> = BTreeMap::new();
    let mut out = Vec::with_capacity(records.len() + 1);
    for ((consumer, day), routes) in records {
        let mut adds = Vec::new();
        let mut requests = 0;
        let records = routes.len();
        for (route, counts) in routes {
            requests += counts.requests();
            for (metric, value) in FIELDS.iter().zip(counts.values()) {
                if value > 0 {
                    adds.push((format!("{metric}|{route}"), value));
                }
            }
        }
        *index.entry(day).or_default().entry(consumer.clone()).or_default() += requests;
        out.push(Part { target: Target::Record { consumer, day }, seq, adds, records });
    }
    for (day, consumers) in index {
        out.push(Part { target: Target::Index(day), seq, adds: consumers.into_iter().collect(), records: 0 });
    }
    out
}
