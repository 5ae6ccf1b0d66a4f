//! The PROXY protocol (HAProxy's specification, text v1 and binary v2) on listeners with
//! `proxy_protocol: true` (ARCHITECTURE.md §8.7).
//!
//! A TCP load balancer in front (a cloud network load balancer, HAProxy `send-proxy`) opens
//! each connection with a header naming the client it carries, before anything else — before
//! the TLS ClientHello on a TLS listener. The connection gate reads it right after admitting
//! the connection ([`read_header`]), under the deadlines of a request head, and the source
//! address it carries replaces the socket's peer address in the stream's socket digest: every
//! later use of the client address (the per-IP connection bound, `trusted_proxies`,
//! `X-Forwarded-For`, rate-limit keys, the access log) sees the client, not the load balancer.
//! A `LOCAL` header (v2: the balancer's own health check) or `UNKNOWN` (v1) keeps the socket's
//! peer, as the specification asks. A connection that does not open with a valid header is
//! closed and counted; nothing is guessed.
//!
//! The header is framed here ([`frame`]: how many bytes it is, read no further than the
//! specification's bounds) and decoded by the `ppp` crate ([`decode`]). Bytes read past the
//! header (a v1 header's request, a client that sent both in one segment) go back to the
//! stream for TLS or HTTP to read.

use crate::observability::ProxyProtocolMetrics;
use bytes::BytesMut;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncReadExt;

/// The binary (v2) header's first 12 bytes.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a v2 header: the signature, version and command, family and protocol,
/// and the length of what follows.
const V2_FIXED: usize = 16;
/// The text (v1) header's start.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// A v1 header is at most 107 bytes, its CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// The longest v2 header accepted. Its length field allows 64 KiB of addresses and TLVs; what
/// load balancers send is the addresses (36 bytes for IPv6) and a few TLVs of tens of bytes
/// (a VPC endpoint or private link id, ALPN, an SSL summary). A longer one is refused rather
/// than buffered for every connection still sending its header.
pub(crate) const V2_MAX: usize = 1024;

/// How much of a connection's first bytes make a PROXY header, as far as they have arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Framing {
    /// What arrived is the start of a header (or nothing yet): read on.
    More,
    /// The first this many bytes are a whole header (not checked beyond its framing yet).
    Header(usize),
    /// Not a PROXY header, or longer than accepted.
    Invalid(Invalid),
}

/// Why a connection's opening bytes are not an acceptable PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Invalid {
    /// The connection opens with something else (typically a request or a ClientHello sent
    /// straight to the listener, not through the load balancer).
    #[error("the connection does not open with a PROXY protocol header")]
    NoHeader,
    /// A v1 line with no CRLF within 107 bytes, or a v2 header over [`V2_MAX`].
    #[error("the PROXY header is longer than {0} bytes")]
    TooLong(usize),
    /// Framed as a header, but its content is not valid.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
}

/// Frame the header at the start of `bytes`.
pub(crate) fn frame(bytes: &[u8]) -> Framing {
    let n = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..n] == V2_SIGNATURE[..n] {
        if bytes.len() < V2_FIXED {
            return Framing::More;
        }
        let total = V2_FIXED + u16::from_be_bytes([bytes[14], bytes[15]]) as usize;
        return match total {
            t if t > V2_MAX => Framing::Invalid(Invalid::TooLong(V2_MAX)),
            t if bytes.len() < t => Framing::More,
            t => Framing::Header(t),
        };
    }
    let n = bytes.len().min(V1_PREFIX.len());
    if bytes[..n] == V1_PREFIX[..n] {
        let window = &bytes[..bytes.len().min(V1_MAX)];
        return match window.windows(2).position(|w| w == b"\r\n") {
            Some(cr) => Framing::Header(cr + 2),
            None if bytes.len() >= V1_MAX => Framing::Invalid(Invalid::TooLong(V1_MAX)),
            None => Framing::More,
        };
    }
    Framing::Invalid(Invalid::NoHeader)
}

/// What a whole header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carried {
    /// The balancer relays this client (v1 TCP4/TCP6, v2 PROXY over IPv4/IPv6).
    Client(SocketAddr),
    /// The connection is the balancer's own (v2 LOCAL), or the client's address is not an IP
    /// one (v1 UNKNOWN, v2 unspecified or Unix): the socket's peer stays the client.
    SocketPeer,
}

/// Decode a whole header, as framed by [`frame`].
pub(crate) fn decode(header: &[u8]) -> Result<Carried, Invalid> {
    if header.starts_with(V2_SIGNATURE) {
        let parsed = ppp::v2::Header::try_from(header).map_err(|e| Invalid::Malformed(e.to_string()))?;
        if parsed.command == ppp::v2::Command::Local {
            return Ok(Carried::SocketPeer);
        }
        return Ok(match parsed.addresses {
            ppp::v2::Addresses::IPv4(a) => Carried::Client(SocketAddr::from((a.source_address, a.source_port))),
            ppp::v2::Addresses::IPv6(a) => Carried::Client(ipv6_client(a.source_address, a.source_port)),
            ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => Carried::SocketPeer,
        });
    }
    let parsed = ppp::v1::Header::try_from(header).map_err(|e| Invalid::Malformed(e.to_string()))?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => Carried::Client(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Carried::Client(ipv6_client(a.source_address, a.source_port)),
        ppp::v1::Addresses::Unknown => Carried::SocketPeer,
    })
}

/// A carried IPv6 source; an IPv4 client a dual-stack balancer names as `::ffff:a.b.c.d` is
/// that IPv4 address (in logs, keys and `X-Forwarded-For` alike).
fn ipv6_client(ip: std::net::Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.to_ipv4_mapped().map_or(ip.into(), Into::into), port)
}

/// Why [`read_header`] closed a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Rejected {
    #[error("{0}")]
    Invalid(Invalid),
    #[error("closed after {0} bytes, before a whole PROXY header")]
    Closed(usize),
    #[error("reading the PROXY header: {0}")]
    Io(std::io::Error),
    /// The peer is not one of the listener's `proxy_protocol_from`.
    #[error("the peer is not in the listener's proxy_protocol_from")]
    Sender,
    /// Not a TCP stream from Pingora's listener (cannot happen: the gate's listeners are TCP).
    #[error("not a TCP stream")]
    NotTcp,
}

/// Read the PROXY header that opens `stream` and make the client it carries the stream's peer;
/// what follows the header stays in the stream. Unbounded in time: the caller runs it under
/// its deadlines (`Ticket::handshake`). A rejection is counted (and logged with the socket's
/// `peer`, at most a few lines a second) here.
pub(crate) async fn read_header(
    stream: Stream,
    peer: Option<std::net::IpAddr>,
    metrics: &ProxyProtocolMetrics,
) -> pingora::Result<Stream> {
    match read(stream).await {
        Ok(stream) => Ok(stream),
        Err(rejected) => {
            match &rejected {
                Rejected::Invalid(_) | Rejected::Sender | Rejected::NotTcp => {
                    metrics.invalid.inc();
                    log_rejection(peer, &rejected);
                }
                // A client that left (a TCP health check connects and closes) is no news.
                Rejected::Closed(_) | Rejected::Io(_) => metrics.closed.inc(),
            }
            Err(pingora::Error::explain(pingora::ErrorType::ConnectProxyFailure, rejected.to_string()))
        }
    }
}

/// Close a connection from a peer outside the listener's `proxy_protocol_from` before reading
/// anything: counted and logged as an invalid header (its header, if any, is not believed).
pub(crate) fn refuse_sender(peer: Option<std::net::IpAddr>, metrics: &ProxyProtocolMetrics) {
    metrics.invalid.inc();
    log_rejection(peer, &Rejected::Sender);
}

async fn read(stream: Stream) -> Result<Stream, Rejected> {
    // Pingora's plain listeners hand over their own L4 stream, boxed; it can take back the
    // bytes read past the header.
    let mut l4 = stream.into_any().downcast::<L4Stream>().map_err(|_| Rejected::NotTcp)?;
    let mut bytes = BytesMut::with_capacity(V1_MAX + 1);
    let len = loop {
        match frame(&bytes) {
            Framing::Header(len) => break len,
            Framing::Invalid(why) => return Err(Rejected::Invalid(why)),
            Framing::More => {}
        }
        // A v2 header's length is known from its 16th byte: room for all of it at once.
        if bytes.len() >= V2_FIXED && bytes.starts_with(V2_SIGNATURE) {
            let total = V2_FIXED + u16::from_be_bytes([bytes[14], bytes[15]]) as usize;
            bytes.reserve(total.saturating_sub(bytes.len()));
        } else if bytes.capacity() == bytes.len() {
            bytes.reserve(V1_MAX);
        }
        if l4.read_buf(&mut bytes).await.map_err(Rejected::Io)? == 0 {
            return Err(Rejected::Closed(bytes.len()));
        }
    };
    let carried = decode(&bytes[..len]).map_err(Rejected::Invalid)?;
    l4.rewind(&bytes[len..]);
    if let Carried::Client(client) = carried {
        let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
        let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(client)));
        // The local address stays the socket's: it says which listener accepted the connection.
        let local = l4.get_socket_digest().and_then(|d| d.local_addr().cloned());
        let _ = digest.local_addr.set(local);
        l4.set_socket_digest(digest);
    }
    Ok(l4)
}

/// Lines a second about rejected headers; a flood of them (a scanner, a listener reached
/// without the balancer) is counted in the metric, not written line by line.
const LOG_LINES_PER_SECOND: u64 = 5;

fn log_rejection(peer: Option<std::net::IpAddr>, rejected: &Rejected) {
    static SECOND: AtomicU64 = AtomicU64::new(0);
    static LOGGED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if SECOND.swap(now, Ordering::Relaxed) != now {
        LOGGED.store(0, Ordering::Relaxed);
    }
    if LOGGED.fetch_add(1, Ordering::Relaxed) < LOG_LINES_PER_SECOND {
        let peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        log::warn!(
            "connection from {peer} closed on a proxy_protocol listener: {rejected} \
             (at most {LOG_LINES_PER_SECOND} such lines a second; all are counted in siger_proxy_protocol_rejected_total)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&((addresses.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        [&src[..], &dst[..], &sport.to_be_bytes(), &dport.to_be_bytes()].concat()
    }

    #[test]
    fn v1_headers_frame_at_their_crlf_and_carry_the_source() {
        let h = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\nGET / HTTP/1.1\r\n";
        let Framing::Header(len) = frame(h) else { panic!("{:?}", frame(h)) };
        assert_eq!(&h[len..], b"GET / HTTP/1.1\r\n");
        assert_eq!(decode(&h[..len]), Ok(Carried::Client("203.0.113.7:51000".parse().unwrap())));
        let h6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n";
        assert_eq!(decode(h6), Ok(Carried::Client("[2001:db8::7]:51000".parse().unwrap())));
        let mapped = b"PROXY TCP6 ::ffff:203.0.113.7 ::ffff:192.0.2.1 51000 443\r\n";
        assert_eq!(decode(mapped), Ok(Carried::Client("203.0.113.7:51000".parse().unwrap())));
        assert_eq!(frame(b"PROXY UNKNOWN\r\n"), Framing::Header(15));
        assert_eq!(decode(b"PROXY UNKNOWN\r\n"), Ok(Carried::SocketPeer));
        assert_eq!(decode(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), Ok(Carried::SocketPeer));
    }

    #[test]
    fn partial_headers_ask_for_more_at_every_split() {
        let v1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n".to_vec();
        let v2 = v2(1, 0x11, &tcp4([203, 0, 113, 7], [192, 0, 2, 1], 51000, 443), &[0x04, 0, 1, 0]);
        for h in [v1, v2] {
            for cut in 0..h.len() {
                assert_eq!(frame(&h[..cut]), Framing::More, "cut at {cut} of {h:?}");
            }
            assert_eq!(frame(&h), Framing::Header(h.len()));
        }
    }

    #[test]
    fn v2_proxy_carries_the_source_and_local_keeps_the_peer() {
        let h = v2(1, 0x11, &tcp4([203, 0, 113, 7], [192, 0, 2, 1], 51000, 443), &[]);
        assert_eq!(decode(&h), Ok(Carried::Client("203.0.113.7:51000".parse().unwrap())));
        let mut six = Vec::new();
        six.extend_from_slice(&"2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
        six.extend_from_slice(&"2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        six.extend_from_slice(&[0xc7, 0x38, 0x01, 0xbb]);
        // With a TLV after the addresses (AWS sends its VPC endpoint id as one).
        let h = v2(1, 0x21, &six, &[0xea, 0, 3, b'v', b'p', b'c']);
        assert_eq!(frame(&h), Framing::Header(h.len()));
        assert_eq!(decode(&h), Ok(Carried::Client("[2001:db8::7]:51000".parse().unwrap())));
        // LOCAL: the balancer's own connection, whatever addresses follow.
        assert_eq!(decode(&v2(0, 0x00, &[], &[])), Ok(Carried::SocketPeer));
        assert_eq!(decode(&v2(0, 0x11, &tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), &[])), Ok(Carried::SocketPeer));
        assert_eq!(decode(&v2(1, 0x00, &[], &[])), Ok(Carried::SocketPeer));
    }

    #[test]
    fn anything_else_is_refused_at_its_first_wrong_byte() {
        assert_eq!(frame(b"G"), Framing::Invalid(Invalid::NoHeader));
        assert_eq!(frame(b"GET / HTTP/1.1\r\n"), Framing::Invalid(Invalid::NoHeader));
        // A TLS ClientHello sent straight to the listener.
        assert_eq!(frame(&[0x16, 0x03, 0x01]), Framing::Invalid(Invalid::NoHeader));
        assert_eq!(frame(b"\r\n\r\n\0\r\nQUIT"), Framing::More);
        assert_eq!(frame(b"\r\n\r\nX"), Framing::Invalid(Invalid::NoHeader));
        assert_eq!(frame(b"PROXX"), Framing::Invalid(Invalid::NoHeader));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 100]].concat();
        assert_eq!(frame(&long), Framing::Invalid(Invalid::TooLong(V1_MAX)));
        let big = v2(1, 0x11, &tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), &vec![0; V2_MAX]);
        assert_eq!(frame(&big[..V2_FIXED]), Framing::Invalid(Invalid::TooLong(V2_MAX)));
    }

    #[test]
    fn framed_but_malformed_headers_are_refused() {
        for bad in [
            b"PROXY TCP4 203.0.113.7\r\n".as_slice(),
            b"PROXY TCP4 example.com 192.0.2.1 1 2\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 99999 443\r\n",
            b"PROXY UDP4 203.0.113.7 192.0.2.1 1 2\r\n",
            b"PROXY \r\n",
        ] {
            let Framing::Header(len) = frame(bad) else { panic!("{bad:?} framed as {:?}", frame(bad)) };
            assert!(matches!(decode(&bad[..len]), Err(Invalid::Malformed(_))), "{bad:?}");
        }
        // v2 with version 1, an unknown command, or fewer bytes than its addresses need.
        let mut wrong_version = v2(1, 0x11, &tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), &[]);
        wrong_version[12] = 0x11;
        assert!(decode(&wrong_version).is_err());
        assert!(decode(&v2(5, 0x11, &tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), &[])).is_err());
        assert!(decode(&v2(1, 0x11, &[1, 2, 3, 4], &[])).is_err());
    }
}
