//! Weighted traffic splits over services (canaries, blue/green): which service a request goes
//! to, and which ones take it when that one has no usable backend.

use crate::config::{ServiceId, StickyKey, TrafficSplit};
use http::HeaderMap;

/// FNV-1a: a stable hash, so a sticky value maps to the same service in every gateway process
/// and across upgrades (std's hasher promises neither).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The services of `split` in the order to try them: the one `sticky` (a header, cookie or
/// claim value) hashes to — or a random draw without one — then the others by weight,
/// heaviest first, as the fallback when the chosen one has no usable backend.
pub(crate) fn order(split: &TrafficSplit, sticky: Option<&[u8]>, random: u64) -> Vec<ServiceId> {
    let total: u64 = split.services.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut point = sticky.map_or(random, fnv1a) % total.max(1);
    let mut chosen = 0;
    for (i, (_, weight)) in split.services.iter().enumerate() {
        if point < u64::from(*weight) {
            chosen = i;
            break;
        }
        point -= u64::from(*weight);
    }
    let mut rest: Vec<(ServiceId, u32)> =
        split.services.iter().enumerate().filter(|(i, _)| *i != chosen).map(|(_, s)| *s).collect();
    rest.sort_by_key(|(_, w)| std::cmp::Reverse(*w));
    std::iter::once(split.services[chosen].0).chain(rest.into_iter().map(|(s, _)| s)).collect()
}

/// The value a sticky split hashes: the header (one line), the cookie or the verified claim
/// (`claim`). `None`: the request has none, and is drawn at random.
pub(crate) fn sticky_value(
    key: &StickyKey,
    headers: &HeaderMap,
    claim: impl Fn(&str) -> Option<String>,
) -> Option<Vec<u8>> {
    match key {
        StickyKey::Header(name) => {
            crate::forwarding::single_line(headers, name).ok().flatten().map(|v| v.as_bytes().to_vec())
        }
        StickyKey::Cookie(name) => headers.get_all(http::header::COOKIE).iter().find_map(|line| {
            let line = line.to_str().ok()?;
            line.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k == name).then(|| v.as_bytes().to_vec())
            })
        }),
        StickyKey::Claim(name) => claim(name).map(String::into_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split() -> TrafficSplit {
        TrafficSplit { services: vec![(7, 90), (8, 10)], sticky: None }
    }

    #[test]
    fn weights_hold_over_draws() {
        let s = split();
        let canary = (0..10_000u64).filter(|i| order(&s, None, i.wrapping_mul(0x9e37_79b9_7f4a_7c15))[0] == 8).count();
        assert!((900..1100).contains(&canary), "{canary}");
        assert_eq!(order(&s, None, 95), vec![8, 7], "the other service is the fallback");
        assert_eq!(order(&s, None, 5), vec![7, 8]);
    }

    #[test]
    fn sticky_values_come_from_a_header_a_cookie_or_a_claim() {
        let mut headers = HeaderMap::new();
        headers.insert("cookie", "a=1; canary=yes; b=2".parse().expect("value"));
        headers.insert("x-group", "g7".parse().expect("value"));
        let none = |_: &str| None;
        let cookie = StickyKey::Cookie("canary".into());
        assert_eq!(sticky_value(&cookie, &headers, none), Some(b"yes".to_vec()));
        assert_eq!(sticky_value(&StickyKey::Cookie("absent".into()), &headers, none), None);
        let header = StickyKey::Header("x-group".parse().expect("name"));
        assert_eq!(sticky_value(&header, &headers, none), Some(b"g7".to_vec()));
        headers.append("x-group", "g8".parse().expect("value"));
        assert_eq!(sticky_value(&header, &headers, none), None, "two lines: no sticky value");
        let claim = StickyKey::Claim("sub".into());
        assert_eq!(sticky_value(&claim, &headers, |_: &str| Some("alice".into())), Some(b"alice".to_vec()));
    }

    #[test]
    fn a_sticky_value_always_goes_to_the_same_service() {
        let s = split();
        for user in ["alice", "bob", "carol", "dave"] {
            let first = order(&s, Some(user.as_bytes()), 0)[0];
            assert!((0..50).all(|r| order(&s, Some(user.as_bytes()), r)[0] == first));
        }
        let spread = (0..1000).filter(|i| order(&s, Some(format!("user-{i}").as_bytes()), 0)[0] == 8).count();
        assert!((50..150).contains(&spread), "{spread}");
    }
}
