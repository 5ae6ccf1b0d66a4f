//! Least-connections selection, which Pingora does not provide: per-backend in-flight counters
//! (kept outside the selector, which Pingora rebuilds on every membership change) and a pick of
//! the backend with the fewest in-flight requests per unit of weight.

use super::Selected;
use crate::config::HashKey;
use crate::errors::GatewayError;
use dashmap::DashMap;
use http::HeaderMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Releases one in-flight slot of a backend when dropped (the request ended or was retried).
#[derive(Debug)]
pub(crate) struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// In-flight counters of one service.
#[derive(Debug, Default)]
pub(crate) struct LeastConn {
    in_flight: DashMap<SocketAddr, Arc<AtomicUsize>>,
    /// Rotates the scan start so equally loaded backends share the traffic.
    cursor: AtomicUsize,
}

impl LeastConn {
    fn counter(&self, addr: SocketAddr) -> Arc<AtomicUsize> {
        if let Some(c) = self.in_flight.get(&addr) {
            return c.clone();
        }
        self.in_flight.entry(addr).or_default().clone()
    }

    /// Requests in flight to `addr` now.
    pub(crate) fn in_flight(&self, addr: &SocketAddr) -> usize {
        self.in_flight.get(addr).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Forget counters of backends that left the pool once nothing is in flight to them, so
    /// address churn cannot grow the table without bound.
    pub(crate) fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.in_flight.retain(|addr, count| keep(addr) || count.load(Ordering::Relaxed) > 0);
    }

    /// Choose among `candidates` (already filtered to healthy, untried backends), given as
    /// (address, weight); slow start passes scaled-down weights.
    pub(crate) fn select(&self, candidates: impl Iterator<Item = (SocketAddr, u64)>) -> Option<Selected> {
        let list: Vec<(SocketAddr, u64)> = candidates.map(|(a, w)| (a, w.max(1))).collect();
        if list.is_empty() {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) % list.len();
        let mut best: Option<(SocketAddr, Arc<AtomicUsize>, u128)> = None;
        for i in 0..list.len() {
            let (addr, weight) = list[(start + i) % list.len()];
            let counter = self.counter(addr);
            // Compare load/weight without division: a/wa < b/wb  ⇔  a·wb < b·wa.
            let load = counter.load(Ordering::Relaxed) as u128;
            let better = match &best {
                None => true,
                Some((_, _, best_scaled)) => {
                    let (best_load, best_weight) = (*best_scaled >> 64, *best_scaled & u64::MAX as u128);
                    load * best_weight < best_load * weight as u128
                }
            };
            if better {
                best = Some((addr, counter, load << 64 | weight as u128));
            }
        }
        let (addr, counter, _) = best?;
        counter.fetch_add(1, Ordering::Relaxed);
        Some(Selected { addr, guard: Some(InFlightGuard(counter)) })
    }
}

/// The bytes consistent hashing hashes for a request: the client IP (`client_ip`, as text), the
/// path sent upstream, a header (the IP without it; more than one line is refused), or a
/// verified claim (`claim`; the IP for anonymous callers and tokens without it).
pub(crate) fn hash_key(
    key: &HashKey,
    headers: &HeaderMap,
    path: &str,
    client_ip: &str,
    claim: impl Fn(&str) -> Option<String>,
) -> Result<Vec<u8>, GatewayError> {
    let ip = || client_ip.as_bytes().to_vec();
    Ok(match key {
        HashKey::Ip => ip(),
        HashKey::Path => path.as_bytes().to_vec(),
        HashKey::Header(name) => {
            crate::forwarding::single_line(headers, name)?.map(|v| v.as_bytes().to_vec()).unwrap_or_else(ip)
        }
        HashKey::Claim(name) => claim(name).map(String::into_bytes).unwrap_or_else(ip),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(port: u16, weight: u64) -> (SocketAddr, u64) {
        (SocketAddr::from(([127, 0, 0, 1], port)), weight)
    }

    #[test]
    fn prefers_the_least_loaded_per_weight() {
        let lc = LeastConn::default();
        let a = backend(1, 1);
        let b = backend(2, 1);
        let held: Vec<Selected> = (0..3).map(|_| lc.select([a].into_iter()).expect("a")).collect();
        for _ in 0..10 {
            let s = lc.select([a, b].into_iter()).expect("pick");
            assert_eq!(s.addr.port(), 2, "b has fewer in flight");
            drop(s);
        }
        drop(held);
        let heavy = backend(3, 3);
        let picks: Vec<Selected> = (0..8).map(|_| lc.select([a, heavy].into_iter()).expect("pick")).collect();
        let on_heavy = picks.iter().filter(|s| s.addr.port() == 3).count();
        assert_eq!(on_heavy, 6, "weight 3 carries three times the in-flight load");
    }

    #[test]
    fn hash_keys_fall_back_to_the_client_ip() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "u1".parse().expect("value"));
        let no_claim = |_: &str| None;
        let key = |k: &HashKey, headers: &HeaderMap| hash_key(k, headers, "/p", "10.0.0.1", no_claim);
        assert_eq!(key(&HashKey::Ip, &headers).expect("ip"), b"10.0.0.1");
        assert_eq!(key(&HashKey::Path, &headers).expect("path"), b"/p");
        let header = HashKey::Header("x-user".parse().expect("name"));
        assert_eq!(key(&header, &headers).expect("header"), b"u1");
        assert_eq!(key(&header, &HeaderMap::new()).expect("absent"), b"10.0.0.1");
        headers.append("x-user", "u2".parse().expect("value"));
        assert_eq!(key(&header, &headers).expect_err("two lines").status(), 400);
        let claim = HashKey::Claim("tenant".into());
        assert_eq!(key(&claim, &headers).expect("anonymous"), b"10.0.0.1");
        let tenant = |name: &str| (name == "tenant").then(|| "acme".to_string());
        assert_eq!(hash_key(&claim, &headers, "/p", "10.0.0.1", tenant).expect("claim"), b"acme");
    }

    #[test]
    fn guard_releases_slot() {
        let lc = LeastConn::default();
        let a = backend(1, 1);
        let s = lc.select([a].into_iter()).expect("a");
        assert_eq!(lc.counter(s.addr).load(Ordering::Relaxed), 1);
        drop(s);
        assert_eq!(lc.counter("127.0.0.1:1".parse().expect("addr")).load(Ordering::Relaxed), 0);
    }
}
