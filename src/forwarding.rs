//! Who the client is and what the upstream is told about it: request ids, the client IP behind
//! trusted proxies, and the `X-Forwarded-*` values (ARCHITECTURE.md §6).

use crate::config::{canonical_ip, TrustedProxies};
use std::net::IpAddr;

/// A client-sent `X-Request-Id` is kept when it is 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn is_sane_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// An IP address as text; IPv4 (the common case on every request) without the formatting
/// machinery of `Display`.
pub fn ip_text(ip: IpAddr) -> String {
    let mut out = String::with_capacity(15);
    push_ip(&mut out, ip);
    out
}

/// Append an IP address as text.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(*octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// A fresh request id (UUIDv7: time-ordered, so ids sort by arrival in logs).
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// The client IP: the TCP peer, unless the peer is a trusted proxy; then `X-Forwarded-For` is
/// walked from the right, skipping trusted addresses, and the first untrusted one is the client.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical_ip(peer);
    if trusted.is_empty() || !trusted.contains(&peer) {
        return peer;
    }
    let Some(xff) = forwarded_for else { return peer };
    let mut last_trusted = peer;
    for hop in xff.rsplit(',') {
        let Some(ip) = parse_hop(hop) else {
            // Garbage in the chain: do not believe anything left of it.
            return last_trusted;
        };
        if !trusted.contains(&ip) {
            return ip;
        }
        last_trusted = ip;
    }
    last_trusted
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    // "1.2.3.4:5678" or "[::1]:5678"
    hop.parse::<std::net::SocketAddr>().ok().map(|s| canonical_ip(s.ip()))
}

/// The `X-Forwarded-For` sent upstream: a trusted peer's chain plus the peer; from an untrusted
/// peer only the peer itself (a client-written chain is not passed on as if we vouched for it).
pub fn forwarded_for(peer: IpAddr, existing: Option<&str>, trusted: &TrustedProxies) -> String {
    let peer = canonical_ip(peer);
    match existing {
        Some(chain) if !chain.trim().is_empty() && trusted.contains(&peer) => format!("{}, {peer}", chain.trim()),
        _ => peer.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies(nets.iter().map(|n| n.parse().expect("cidr")).collect())
    }

    #[test]
    fn request_ids() {
        assert!(is_sane_request_id(b"abc-123_x.y:z"));
        assert!(!is_sane_request_id(b""));
        assert!(!is_sane_request_id(b"has space"));
        assert!(!is_sane_request_id(b"quote\""));
        assert!(!is_sane_request_id(&[b'a'; 129]));
        assert!(is_sane_request_id(&[b'a'; 128]));
        assert_eq!(new_request_id().len(), 36);
    }

    #[test]
    fn ip_text_matches_display() {
        for ip in ["0.0.0.0", "127.0.0.1", "255.255.255.255", "10.20.30.4", "::1", "2001:db8::8a2e:370:7334"] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        let peer: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(client_ip(peer, Some("1.2.3.4"), &t), peer);
        assert_eq!(forwarded_for(peer, Some("1.2.3.4"), &t), "203.0.113.9");
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let t = trusted(&["10.0.0.0/8"]);
        let peer: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(client_ip(peer, Some("6.6.6.6, 198.51.100.7, 10.1.1.1"), &t).to_string(), "198.51.100.7");
        assert_eq!(client_ip(peer, Some("10.2.2.2"), &t).to_string(), "10.2.2.2");
        assert_eq!(client_ip(peer, None, &t), peer);
        assert_eq!(client_ip(peer, Some("junk, 10.3.3.3"), &t).to_string(), "10.3.3.3");
        assert_eq!(forwarded_for(peer, Some("198.51.100.7"), &t), "198.51.100.7, 10.0.0.1");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(client_ip(mapped, Some("198.51.100.7"), &t).to_string(), "198.51.100.7");
    }
}
