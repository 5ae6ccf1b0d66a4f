//! Quotas against a real `redis-server`: exact across two gateways' clients at a window
//! boundary, Retry-After to the window's end, a Cluster, a store outage under `allow` and
//! `deny`, plan changes applied to the window in progress, and the counters' expiry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::calendar::{span, SystemClock, TestClock};
use super::testing::{PlainScripts, TestRedis};
use super::*;
use crate::config::{ConsumersSettings, PlanSettings, PlansSettings, QuotaSettings};
use crate::observability::metrics::QuotaMetrics;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_millis(500);

fn plans(requests: u64, per: CalendarWindow) -> Plans {
    let mut settings = PlansSettings::new();
    settings.insert("free".into(), PlanSettings { quota: Some(QuotaSettings { requests, per }), rate_limit: None });
    settings.insert(
        "unmetered".into(),
        PlanSettings {
            quota: None,
            rate_limit: Some(crate::config::PlanRateSettings { requests: 1, per: Duration::from_secs(1) }),
        },
    );
    Plans::compile(&settings, &ConsumersSettings::default()).expect("valid plans")
}

/// A gateway's quotas: its own connection, the shared clock.
async fn gateway(redis: &TestRedis, plans: Plans, clock: Arc<TestClock>, on_error: OnStoreError) -> Quotas {
    let scripts = Arc::new(PlainScripts::single(&redis.url(), TIMEOUT).await);
    let store = Arc::new(QuotaStore::Shared(scripts));
    Quotas::new(plans, store, on_error, clock, Arc::new(board::QuotaBoard::default()), &QuotaMetrics::default())
}

/// Unix ms `before` ms ahead of the end of the current real `per` window (keys expire on the
/// server's clock, so the test clock stays near the real one).
fn just_before_the_end(per: CalendarWindow, before: i64) -> i64 {
    span(per, SystemClock.now_ms()).end * 1000 - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_count_exactly_and_reset_at_the_boundary() {
    let redis = TestRedis::start();
    let start = just_before_the_end(CalendarWindow::Hour, 3_000);
    let clock = Arc::new(TestClock::at(start));
    let free = plans(25, CalendarWindow::Hour);
    let id = free.find("free").expect("free");
    let gw1 = Arc::new(gateway(&redis, free.clone(), clock.clone(), OnStoreError::Deny).await);
    let gw2 = Arc::new(gateway(&redis, free, clock.clone(), OnStoreError::Deny).await);

    // 80 concurrent requests through both gateways, costs 1 and 2: exactly 25 units admitted.
    let admitted_units = |gw1: Arc<Quotas>, gw2: Arc<Quotas>| async move {
        let checks = (0..80).map(|i| {
            let gw = if i % 2 == 0 { gw1.clone() } else { gw2.clone() };
            let cost = if i % 3 == 0 { 2 } else { 1 };
            tokio::spawn(async move { (cost, gw.check("acme", id, cost).await) })
        });
        let mut units = 0;
        for check in checks {
            let (cost, outcome) = check.await.expect("task");
            let Outcome::Checked(d) = outcome else { panic!("store failed: {outcome:?}") };
            assert!(d.used <= 25 && d.limit == 25, "{d:?}");
            if d.allowed {
                units += cost;
            }
        }
        units
    };
    let before = admitted_units(gw1.clone(), gw2.clone()).await;
    assert!((24..=25).contains(&before), "{before} units admitted for a quota of 25");
    // One more unit fits only if a 2 was refused at 24: fill it, then nothing fits.
    if before == 24 {
        assert!(gw1.check("acme", id, 1).await.passes());
    }
    let refused = gw2.check("acme", id, 1).await;
    let refusal = refused.refusal().expect("refused");
    assert_eq!(refusal.retry_after, 3, "Retry-After runs to the window's end");
    assert!(
        refusal.message().starts_with("quota of 25 requests per hour exceeded; it resets at "),
        "{}",
        refusal.message()
    );

    // Past the boundary both gateways count a fresh window, exactly again.
    let key = store::counter_key("acme", CalendarWindow::Hour, span(CalendarWindow::Hour, start));
    assert_eq!(redis.query(&["GET", &key]).as_deref(), Some("25"), "what was admitted is what was counted");
    clock.set(start + 3_000);
    let after = admitted_units(gw1.clone(), gw2.clone()).await;
    assert!((24..=25).contains(&after), "{after} units admitted in the new window");
    let Outcome::Checked(d) = gw1.check("acme", id, 30).await else { panic!("store failed") };
    assert!(!d.allowed);
    assert_eq!(d.reset, 3600, "a full hour to the next boundary");
    // Another consumer has its own count; a plan without a quota is not counted at all.
    assert!(gw2.check("globex", id, 25).await.passes());
    let unmetered = gw1.plans().find("unmetered").expect("plan");
    assert!(matches!(gw1.check("acme", unmetered, 1).await, Outcome::Unmetered));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_expire_after_their_window_and_a_reload_keeps_the_count() {
    let redis = TestRedis::start();
    let now = just_before_the_end(CalendarWindow::Day, 60_000);
    let clock = Arc::new(TestClock::at(now));
    let gw = gateway(&redis, plans(3, CalendarWindow::Day), clock.clone(), OnStoreError::Deny).await;
    let id = gw.plans().find("free").expect("free");
    for _ in 0..3 {
        assert!(gw.check("acme", id, 1).await.passes());
    }
    assert!(!gw.check("acme", id, 1).await.passes());
    let key = store::counter_key("acme", CalendarWindow::Day, span(CalendarWindow::Day, now));
    assert_eq!(redis.query(&["GET", &key]).as_deref(), Some("3"), "a refused request is not counted");
    let ttl: i64 = redis.query(&["TTL", &key]).expect("ttl").parse().expect("seconds");
    // The window ends in 60 s (of the test clock, which stands at the real time's day end
    // minus a minute only if the real clock agrees within a day: it does) plus the grace.
    let end = span(CalendarWindow::Day, now).end;
    let expected = end + 300 - SystemClock.now_ms() / 1000;
    assert!((expected - 5..=expected + 1).contains(&ttl), "TTL {ttl}, expected ≈ {expected}");

    // The reload that raises the plan applies to the window in progress, on the same counter.
    let raised = gateway(&redis, plans(5, CalendarWindow::Day), clock, OnStoreError::Deny).await;
    let Outcome::Checked(d) = raised.check("acme", id, 1).await else { panic!("store failed") };
    assert_eq!((d.allowed, d.used, d.remaining, d.limit), (true, 4, 1, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_counts_each_consumer_exactly_on_its_slot() {
    let nodes = TestRedis::cluster();
    let clock = Arc::new(TestClock::at(SystemClock.now_ms()));
    let make = || async {
        let store = Arc::new(QuotaStore::Shared(Arc::new(PlainScripts::cluster(&nodes, TIMEOUT).await)));
        Quotas::new(
            plans(7, CalendarWindow::Month),
            store,
            OnStoreError::Deny,
            clock.clone(),
            Arc::default(),
            &QuotaMetrics::default(),
        )
    };
    let (gw1, gw2) = (make().await, make().await);
    let id = gw1.plans().find("free").expect("free");
    for consumer in 0..12 {
        let name = format!("partner-{consumer}");
        let mut admitted = 0;
        for i in 0..10 {
            let gw = if i % 2 == 0 { &gw1 } else { &gw2 };
            match gw.check(&name, id, 1).await {
                Outcome::Checked(d) => admitted += u64::from(d.allowed),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(admitted, 7, "{name}");
    }
    // The consumers' counters are spread over the masters.
    let holding = nodes.iter().filter(|n| n.query(&["DBSIZE"]).is_some_and(|s| s != "0")).count();
    assert!(holding >= 2, "keys on {holding} of 3 masters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_follows_on_store_error() {
    let mut redis = TestRedis::start();
    let clock = Arc::new(TestClock::at(SystemClock.now_ms()));
    let metrics = QuotaMetrics::default();
    let make = |on_error| {
        let (redis, clock, metrics) = (&redis, clock.clone(), &metrics);
        async move {
            let scripts = Arc::new(PlainScripts::single(&redis.url(), TIMEOUT).await);
            let store = Arc::new(QuotaStore::Shared(scripts));
            Quotas::new(plans(10, CalendarWindow::Day), store, on_error, clock, Arc::default(), metrics)
        }
    };
    let (open, closed) = (make(OnStoreError::Allow).await, make(OnStoreError::Deny).await);
    let id = open.plans().find("free").expect("free");
    assert!(matches!(open.check("acme", id, 1).await, Outcome::Checked(_)));
    assert!(matches!(closed.check("acme", id, 1).await, Outcome::Checked(_)));
    redis.kill();
    let started = std::time::Instant::now();
    let outcome = open.check("acme", id, 1).await;
    assert!(matches!(outcome, Outcome::StoreFailed { allow: true, .. }), "{outcome:?}");
    assert!(outcome.passes() && outcome.refusal().is_none());
    let outcome = closed.check("acme", id, 1).await;
    assert!(matches!(outcome, Outcome::StoreFailed { allow: false, .. }), "{outcome:?}");
    assert!(!outcome.passes());
    assert!(started.elapsed() < TIMEOUT * 4 + Duration::from_secs(1), "bounded by the store's timeout");
    let text = {
        let registry = prometheus::Registry::new();
        for c in metrics.collectors() {
            registry.register(c).expect("registers");
        }
        let mut out = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut out).expect("text");
        String::from_utf8(out).expect("utf-8")
    };
    assert!(text.contains("siger_quota_requests_total{plan=\"free\",result=\"store_error_allowed\"} 1"), "{text}");
    assert!(text.contains("siger_quota_requests_total{plan=\"free\",result=\"store_error_denied\"} 1"), "{text}");
    assert!(text.contains("siger_quota_requests_total{plan=\"free\",result=\"allowed\"} 2"), "{text}");
}

#[test]
fn the_nearest_policy_speaks_for_both() {
    let rate = LimitHeaders { limit: 10, remaining: 4, reset: 1 };
    let quota = LimitHeaders { limit: 10_000, remaining: 9_000, reset: 86_000 };
    assert_eq!(nearest(Some(rate), Some(quota)), Some(rate));
    let nearly_spent = LimitHeaders { remaining: 2, ..quota };
    assert_eq!(nearest(Some(rate), Some(nearly_spent)), Some(nearly_spent));
    let tie = LimitHeaders { remaining: 4, ..quota };
    assert_eq!(nearest(Some(rate), Some(tie)), Some(tie), "a tie: the later reset is the one to wait for");
    assert_eq!(nearest(None, Some(quota)), Some(quota));
    assert_eq!(nearest(None, None), None);
}

#[test]
fn claims_naming_unknown_plans_are_counted_never_labelled() {
    let mut settings = PlansSettings::new();
    let quota = Some(QuotaSettings { requests: 10, per: CalendarWindow::Day });
    settings.insert("free".into(), PlanSettings { quota, rate_limit: None });
    let consumers =
        ConsumersSettings { plan_claim: Some("plan".into()), default_plan: Some("free".into()), tenant_claim: None };
    let plans = Plans::compile(&settings, &consumers).expect("valid");
    let metrics = QuotaMetrics::default();
    let store = Arc::new(QuotaStore::Local(store::LocalCounters::new(10)));
    let quotas = Quotas::new(plans, store, OnStoreError::Deny, Arc::new(SystemClock), Arc::default(), &metrics);
    let gold = |name: &str| (name == "plan").then(|| "gold".to_string());
    assert_eq!(quotas.plan_of(None, &gold), Resolved::Plan(0, plan::PlanSource::DefaultForUnknown));
    assert_eq!(quotas.plan_of(Some("free"), &gold), Resolved::Plan(0, plan::PlanSource::KeyFile));
    assert_eq!(metrics.unknown_plan.get(), 1);
}
