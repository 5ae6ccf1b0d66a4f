//! Pools: slow start, retries and readiness of discovered pools; plans across reloads.

use super::*;
use crate::config::{ConsulDiscovery, LbAlgorithm, Target};
use std::net::SocketAddr;
use std::time::Duration;

fn settings(lb: LbAlgorithm, slow_start: Option<Duration>) -> ServiceSettings {
    ServiceSettings {
        name: "web".into(),
        discovery: Some(ConsulDiscovery { service: "web".into(), tags: Vec::new() }),
        dns: None,
        lb,
        read_timeout: Duration::from_secs(1),
        slow_start,
        ..ServiceSettings::default()
    }
}

fn discovered(s: &ServiceSettings, feed: MembershipFeed) -> Pool {
    Pool::build(s, None, Arc::new(ServiceState::new(&s.name, None, None)), Some(feed), None)
}

fn t(port: u16) -> Target {
    Target { addr: SocketAddr::from(([127, 0, 0, 1], port)), weight: 1 }
}

/// Share of picks landing on port 3 after it joined 1 and 2 (ramp factor ≈ 0.1 for the
/// whole run: the window is far longer than the test).
fn ramping_share(lb: LbAlgorithm, slow_start: Option<Duration>) -> f64 {
    let feed = MembershipFeed::new();
    let pool = discovered(&settings(lb, slow_start), feed.clone());
    assert!(pool.select(b"", &[]).is_none(), "empty before anything is published");
    feed.publish(vec![t(1), t(2)]);
    pool.refresh_now();
    feed.publish(vec![t(1), t(2), t(3)]);
    pool.refresh_now();
    let n = 30_000;
    let on_new = (0..n).filter(|_| pool.select(b"", &[]).expect("pick").addr.port() == 3).count();
    on_new as f64 / n as f64
}

#[test]
fn slow_start_scales_the_share_of_a_new_backend() {
    let ramp = Some(Duration::from_secs(3600));
    for lb in [LbAlgorithm::RoundRobin, LbAlgorithm::Random, LbAlgorithm::LeastConn] {
        let full = ramping_share(lb.clone(), None);
        assert!((full - 1.0 / 3.0).abs() < 0.02, "{lb:?} without slow start: {full}");
        let ratio = ramping_share(lb.clone(), ramp) / full;
        assert!((0.07..=0.13).contains(&ratio), "{lb:?}: share ratio {ratio} while at 10 %");
    }
}

#[test]
fn a_lone_ramping_backend_still_serves_and_retries_avoid_tried_ones() {
    let feed = MembershipFeed::new();
    let pool = discovered(&settings(LbAlgorithm::RoundRobin, Some(Duration::from_secs(3600))), feed.clone());
    feed.publish(vec![]);
    pool.refresh_now();
    feed.publish(vec![t(1)]);
    pool.refresh_now();
    for _ in 0..50 {
        assert_eq!(pool.select(b"", &[]).expect("the only backend").addr.port(), 1);
    }
    feed.publish(vec![t(1), t(2)]);
    pool.refresh_now();
    let tried = [t(1).addr];
    for _ in 0..50 {
        assert_eq!(pool.select(b"", &tried).expect("other").addr.port(), 2);
    }
}

#[test]
fn readiness_of_a_discovered_pool() {
    let feed = MembershipFeed::new();
    let pool = discovered(&settings(LbAlgorithm::RoundRobin, None), feed.clone());
    assert!(pool.readiness_problem().is_some_and(|p| p.contains("no answer from discovery")));
    feed.publish(vec![]);
    pool.refresh_now();
    assert!(pool.readiness_problem().is_some_and(|p| p.contains("no healthy backend")));
    feed.publish(vec![t(1)]);
    pool.refresh_now();
    assert_eq!(pool.readiness_problem(), None);
    assert_eq!(pool.health_counts(), (1, 0));
}

fn static_service(name: &str, ports: &[u16]) -> ServiceSettings {
    ServiceSettings {
        name: name.into(),
        targets: ports.iter().map(|p| t(*p)).collect(),
        discovery: None,
        dns: None,
        ..settings(LbAlgorithm::RoundRobin, None)
    }
}

#[test]
fn a_plan_keeps_unchanged_pools_and_shares_state_with_rebuilt_ones() {
    let upstreams = Upstreams::default();
    let first = [static_service("a", &[1]), static_service("b", &[2])];
    let pools = upstreams.plan(&first, &[], &[]);
    upstreams.commit(&first, &[], &pools);
    // `a` unchanged but for a timeout: same pool. `b` gets a target: a new pool, same state.
    let mut second = [static_service("a", &[1]), static_service("b", &[2, 3])];
    second[0].read_timeout = Duration::from_secs(9);
    let next = upstreams.plan(&second, &[], &pools);
    assert!(Arc::ptr_eq(&next[0], &pools[0]));
    assert!(!Arc::ptr_eq(&next[1], &pools[1]));
    assert!(Arc::ptr_eq(&next[1].state, &pools[1].state), "health and counters carry over");
    assert_eq!(next[1].members().len(), 2);
    upstreams.commit(&second, &[], &next);
    // A service that leaves and comes back starts afresh.
    let third = [static_service("a", &[1])];
    let after = upstreams.plan(&third, &[], &next);
    upstreams.commit(&third, &[], &after);
    let back = upstreams.plan(&second, &[], &after);
    assert!(!Arc::ptr_eq(&back[1].state, &pools[1].state));
}
