//! Usage against a real `redis-server`: what two gateways recorded is what the store reads back
//! (requests by class, bytes), across a day boundary; keys expire `retention` after their day;
//! a write Redis applied but the gateway saw fail is not doubled; an outage keeps the records
//! pending (bounded) and a later flush writes them; the flush at shutdown writes the rest; a
//! Cluster serves a consumer's days in one script.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::flush::Flusher;
use super::meter::UsageMeter;
use super::store::{parts, record_key, UsageRow, UsageStore};
use super::UsageMetrics;
use crate::quota::calendar::{day_of, day_start, day_text, SystemClock, TestClock};
use crate::quota::testing::{PlainScripts, TestRedis};
use crate::quota::Clock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_millis(500);
const RETENTION: Duration = Duration::from_secs(90 * 86_400);

fn shared(scripts: PlainScripts) -> Arc<UsageStore> {
    Arc::new(UsageStore::Shared { scripts: Arc::new(scripts), retention: RETENTION })
}

/// A gateway's meter and flusher on `store`.
fn gateway(store: &Arc<UsageStore>, clock: &Arc<TestClock>) -> (Arc<UsageMeter>, Flusher) {
    let meter = Arc::new(UsageMeter::new(10_000));
    let flusher = Flusher::new(meter.clone(), store.clone(), clock.clone(), UsageMetrics::default());
    (meter, flusher)
}

/// The requests a test sends: (consumer, route, status, bytes in, bytes out) and the expected
/// totals per (day, consumer, route): [2xx, 3xx, 4xx, 5xx, in, out].
type Expected = BTreeMap<(String, String, String), [u64; 6]>;

fn record(
    meter: &UsageMeter,
    clock: &TestClock,
    expected: &mut Expected,
    consumer: &str,
    route: &str,
    status: u16,
    bytes: (u64, u64),
) {
    let day = day_of(clock.now_ms());
    meter.record(consumer, &Arc::from(route), day, status, bytes.0, bytes.1);
    let e = expected.entry((day_text(day), consumer.to_string(), route.to_string())).or_default();
    e[super::record::class_of(status)] += 1;
    e[4] += bytes.0;
    e[5] += bytes.1;
}

fn as_expected(rows: &[UsageRow]) -> Expected {
    rows.iter()
        .map(|r| {
            let [a, b, c, d] = r.counts.classes();
            ((r.day.clone(), r.consumer.clone(), r.route.clone()), [a, b, c, d, r.counts.bytes_in, r.counts.bytes_out])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_two_gateways_recorded_is_what_the_store_reads_back() {
    let redis = TestRedis::start();
    let store = shared(PlainScripts::single(&redis.url(), TIMEOUT).await);
    // Ten seconds before midnight of yesterday (real time, so expiries lie in the future).
    let today = day_of(SystemClock.now_ms());
    let yesterday = today.previous_day().expect("a day before");
    let clock = Arc::new(TestClock::at(day_start(today) * 1000 - 10_000));
    let (meter1, mut flusher1) = gateway(&store, &clock);
    let (meter2, mut flusher2) = gateway(&store, &clock);
    let mut expected = Expected::new();
    let statuses = [200, 201, 304, 404, 429, 500, 503, 101];
    for i in 0..400u64 {
        let meter = if i % 2 == 0 { &meter1 } else { &meter2 };
        let consumer = ["acme", "globex", "initech"][(i % 3) as usize];
        let route = if i % 5 == 0 { "/users" } else { "/orders" };
        record(meter, &clock, &mut expected, consumer, route, statuses[(i % 8) as usize], (i, 2 * i + 1));
        if i == 150 {
            flusher1.flush().await;
        }
        if i == 200 {
            // Midnight: the rest of the requests are today's.
            clock.set(day_start(today) * 1000);
        }
    }
    for flusher in [&mut flusher1, &mut flusher2] {
        let flushed = flusher.flush().await;
        assert!(!flushed.failed && flushed.pending == 0, "{flushed:?}");
    }
    let rows = store.rows(None, None, yesterday, today).await.expect("rows");
    assert_eq!(as_expected(&rows), expected, "every request, status class and byte, exactly once");
    let acme = store.rows(Some("acme"), Some("/users"), today, today).await.expect("rows");
    assert!(acme.iter().all(|r| r.consumer == "acme" && r.route == "/users" && r.day == day_text(today)));
    assert_eq!(acme.len(), 1);

    // Today's top consumers are the index's, busiest first, with today's requests.
    let top = store.top(today, 10).await.expect("top");
    let mut want: Vec<(String, u64)> = ["acme", "globex", "initech"]
        .iter()
        .map(|c| {
            let n = expected
                .iter()
                .filter(|((d, name, _), _)| *d == day_text(today) && name == c)
                .map(|(_, v)| v[..4].iter().sum::<u64>())
                .sum();
            (c.to_string(), n)
        })
        .collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    assert_eq!(top, want);

    // Retention: a day's keys expire 90 days after the day ended.
    let ttl = |key: &str| -> i64 { redis.query(&["TTL", key]).expect("ttl").parse().expect("seconds") };
    let expected_ttl = day_start(yesterday) + 86_400 + RETENTION.as_secs() as i64 - SystemClock.now_ms() / 1000;
    for key in [record_key("acme", yesterday), format!("siger:usage:{{d:{}}}:consumers", day_text(yesterday))] {
        let t = ttl(&key);
        assert!((expected_ttl - 5..=expected_ttl + 1).contains(&t), "{key}: TTL {t}, expected ≈ {expected_ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_applied_but_seen_failing_is_not_doubled() {
    let redis = TestRedis::start();
    let store = shared(PlainScripts::single(&redis.url(), TIMEOUT).await);
    let now = SystemClock.now_ms();
    let day = day_of(now);
    let gathered = vec![("acme".to_string(), Arc::<str>::from("/orders"), day, super::record::Counts::one(200, 5, 7))];
    for part in parts(gathered.clone(), 1) {
        assert!(store.apply("gw-a", &part, now).await.expect("written"), "first write applies");
        assert!(!store.apply("gw-a", &part, now).await.expect("answered"), "its retry is skipped");
        assert!(store.apply("gw-b", &part, now).await.expect("written"), "another gateway's write counts");
    }
    let rows = store.rows(Some("acme"), None, day, day).await.expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].counts.requests, rows[0].counts.bytes_in, rows[0].counts.bytes_out), (2, 10, 14));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_records_pending_and_bounded_then_writes_them() {
    let mut redis = TestRedis::start();
    let store = shared(PlainScripts::single(&redis.url(), TIMEOUT).await);
    let clock = Arc::new(TestClock::at(SystemClock.now_ms()));
    let meter = Arc::new(UsageMeter::new(2));
    let metrics = UsageMetrics::default();
    let mut flusher = Flusher::new(meter.clone(), store.clone(), clock.clone(), metrics.clone());
    let mut expected = Expected::new();
    redis.kill();
    record(&meter, &clock, &mut expected, "acme", "/orders", 200, (1, 2));
    record(&meter, &clock, &mut expected, "acme", "/orders", 500, (3, 4));
    let flushed = flusher.flush().await;
    assert!(flushed.failed && flushed.pending == 2, "the record and the day's index wait: {flushed:?}");
    // The pending record counts against the bound of 2: one more record fits, the next does not.
    record(&meter, &clock, &mut expected, "globex", "/orders", 200, (0, 0));
    record(&meter, &clock, &mut expected, "initech", "/orders", 200, (0, 0));
    assert_eq!(meter.dropped(), 1, "past the bound a request is counted as dropped, not held");
    expected.retain(|(_, consumer, _), _| consumer != "initech");
    redis.restart();
    // The reconnecting client reaches the restarted server after a moment.
    let mut flushed = flusher.flush().await;
    for _ in 0..50 {
        if !flushed.failed && flushed.pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        flushed = flusher.flush().await;
    }
    assert!(!flushed.failed && flushed.pending == 0, "{flushed:?}");
    record(&meter, &clock, &mut expected, "acme", "/orders", 404, (0, 9));
    assert!(!flusher.flush().await.failed);
    let day = day_of(clock.now_ms());
    assert_eq!(as_expected(&store.rows(None, None, day, day).await.expect("rows")), expected);
    assert_eq!(metrics.dropped.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flush_at_shutdown_writes_the_rest() {
    let redis = TestRedis::start();
    let store = shared(PlainScripts::single(&redis.url(), TIMEOUT).await);
    let clock = Arc::new(TestClock::at(SystemClock.now_ms()));
    let (meter, flusher) = gateway(&store, &clock);
    let lifecycle = crate::lifecycle::Lifecycle::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // An hour between flushes: only the shutdown writes.
    let running = tokio::spawn(flusher.run(Duration::from_secs(3600), stopped, Some(lifecycle.cleanup())));
    let mut expected = Expected::new();
    let in_flight = lifecycle.request();
    record(&meter, &clock, &mut expected, "acme", "/orders", 200, (1, 1));
    stop.send(true).expect("running");
    // A request still in flight at the signal is written when it ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    record(&meter, &clock, &mut expected, "acme", "/orders", 201, (2, 2));
    drop(in_flight);
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("done in time").expect("no panic");
    let day = day_of(clock.now_ms());
    assert_eq!(as_expected(&store.rows(Some("acme"), None, day, day).await.expect("rows")), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_reads_a_consumers_days_in_one_script() {
    let nodes = TestRedis::cluster();
    let store = shared(PlainScripts::cluster(&nodes, TIMEOUT).await);
    let today = day_of(SystemClock.now_ms());
    let first = today.previous_day().and_then(|d| d.previous_day()).expect("two days ago");
    let clock = Arc::new(TestClock::at(day_start(first) * 1000 + 1000));
    let (meter, mut flusher) = gateway(&store, &clock);
    let mut expected = Expected::new();
    for day in 0..3 {
        clock.set((day_start(first) + day * 86_400) * 1000 + 1000);
        for consumer in ["acme", "globex", "initech", "umbrella", "hooli"] {
            record(&meter, &clock, &mut expected, consumer, "/orders", 200, (day as u64, 1));
        }
    }
    let flushed = flusher.flush().await;
    assert!(!flushed.failed && flushed.pending == 0, "{flushed:?}");
    let rows = store.rows(None, None, first, today).await.expect("rows across slots");
    assert_eq!(as_expected(&rows), expected);
    let acme = store.rows(Some("acme"), None, first, today).await.expect("one consumer, three days");
    assert_eq!(acme.len(), 3);
}
