//! Who the client is and what the upstream is told about it: request ids, the client IP behind
//! trusted proxies, and the `X-Forwarded-*` values (ARCHITECTURE.md §6).

use crate::config::{canonical_ip, TrustedProxies};
use http::header::{GetAll, HeaderMap, HeaderName, HeaderValue};
use pingora::http::{CasedHeaderName, RequestHeader};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// All lines of a list-valued header as one comma-separated value (RFC 9110 §5.3), so a
/// chain split over several `X-Forwarded-For` lines is read whole. `None` without any line; a
/// line that is not text becomes `?`, which no parser accepts, so nothing left of it is believed.
pub(crate) fn combined_lines(values: GetAll<'_, HeaderValue>) -> Option<Cow<'_, str>> {
    let mut lines = values.iter();
    let first = lines.next()?;
    let text = |v: &'_ HeaderValue| v.to_str().unwrap_or("?").to_string();
    match lines.next() {
        None => Some(first.to_str().map_or(Cow::Borrowed("?"), Cow::Borrowed)),
        Some(second) => {
            let mut all = text(first);
            for v in std::iter::once(second).chain(lines) {
                all.push_str(", ");
                all.push_str(&text(v));
            }
            Some(Cow::Owned(all))
        }
    }
}

/// The value of a header that must be sent on one line at most (it keys a limit, a hash, an
/// idempotent job): a second line is refused rather than guessing which one counts.
pub(crate) fn single_line<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a HeaderValue>, crate::errors::GatewayError> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next();
    if lines.next().is_some() {
        return Err(crate::errors::GatewayError::BadRequest(format!("`{name}` must not be sent more than once")));
    }
    Ok(first)
}

/// Headers that tell a backend to act on another method, path or client than the one the
/// gateway routed and authenticated (Symfony and Laravel honour the method overrides, Spring
/// prefers `Forwarded` to `X-Forwarded-*`, IIS-style apps read the original-URL headers). From
/// clients the gateway does not trust they are dropped; a trusted proxy in front may set them.
const OVERRIDE_HEADERS: &[&str] = &[
    "forwarded",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
];

/// Whether a request header of this name is removed before the request goes upstream (one of
/// [`rewrite`]'s removals, all found in one pass over the names): override headers from
/// untrusted peers (see [`OVERRIDE_HEADERS`]), and names with `_`. CGI-style servers (PHP,
/// WSGI, Rack) turn `X_User_Id` and `X-User-Id` into the same variable, so an underscore
/// spelling would smuggle past the removal of a protected header (nginx drops them too:
/// `underscores_in_headers off`). With `underscores_allowed`, only underscore spellings of
/// `protected` and override names are removed.
fn is_dropped(n: &str, from_trusted: bool, underscores_allowed: bool, protected: &[HeaderName]) -> bool {
    let overriding = !from_trusted && (n.starts_with("x-") || n == "forwarded") && OVERRIDE_HEADERS.contains(&n);
    overriding || (n.contains('_') && !underscore_allowed(n, underscores_allowed, protected))
}

fn underscore_allowed(name: &str, allowed: bool, protected: &[HeaderName]) -> bool {
    allowed && {
        let dashed = name.replace('_', "-");
        !protected.iter().any(|p| p.as_str() == dashed) && !OVERRIDE_HEADERS.contains(&dashed.as_str())
    }
}

/// The headers whose underscore spelling never passes even with `underscores_in_headers`:
/// those the gateway sets (forwarding headers, `identity` — the `auth.jwt.forward` headers),
/// those that frame or route the request, and `keys` (headers that key limits or hashing).
pub(crate) fn protected_headers(
    identity: impl IntoIterator<Item = HeaderName>,
    keys: impl IntoIterator<Item = HeaderName>,
) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "x-request-id",
        "x-client-cert-subject",
        "x-consumer",
        "host",
        "authorization",
        "content-length",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "cookie",
    ]
    .into_iter()
    .map(HeaderName::from_static)
    .collect();
    names.extend(identity);
    names.extend(keys);
    names
}

/// Whether the request's own `X-Forwarded-Proto` goes upstream: only from a trusted proxy in
/// front (which knows the scheme its client used); otherwise the gateway tells the listener's,
/// [`listener_proto`]. The response cache keys on the same choice.
pub(crate) fn passes_forwarded_proto(headers: &HeaderMap, from_trusted: bool) -> bool {
    from_trusted && headers.contains_key(&X_FORWARDED_PROTO_NAME)
}

/// The scheme of the listener a request arrived on, as `X-Forwarded-Proto` names it.
pub(crate) fn listener_proto(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

/// A client-sent `X-Request-Id` is kept when it is 1–128 characters of `[A-Za-z0-9._:-]`.
pub(crate) fn is_sane_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// An IP address as text; IPv4 (the common case on every request) without the formatting
/// machinery of `Display`.
pub(crate) fn ip_text(ip: IpAddr) -> String {
    let mut out = String::with_capacity(15);
    push_ip(&mut out, ip);
    out
}

/// Append an IP address as text.
pub(crate) fn push_ip(out: &mut String, ip: IpAddr) {
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
pub(crate) fn new_request_id() -> String {
    // Encoded into a stack buffer: `to_string` would go through the formatting machinery.
    let mut text = uuid::Uuid::encode_buffer();
    next_v7().hyphenated().encode_lower(&mut text).to_owned()
}

/// The last UUIDv7 issued: its Unix time in milliseconds, shifted left 12 bits, plus its
/// 12-bit counter (`rand_a` in RFC 9562, its method 1 of keeping ids monotonic).
static LAST_V7: AtomicU64 = AtomicU64::new(0);

/// A UUIDv7 greater than every one issued before by this process: the millisecond clock and a
/// counter behind it (ids of one millisecond count up from 0; 4,096 of them in one millisecond
/// borrow from the next, still in order), then 62 random bits. What `Uuid::now_v7` gives, with
/// one atomic instead of its context's lock and the thread's generator instead of a `u128`
/// from its own.
fn next_v7() -> uuid::Uuid {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let at_now = (now_ms & ((1 << 48) - 1)) << 12;
    let mut last = LAST_V7.load(Ordering::Relaxed);
    let stamp = loop {
        let next = at_now.max(last + 1);
        match LAST_V7.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    v7_from(stamp, rand::random())
}

/// The UUIDv7 of a `stamp` (milliseconds << 12 | counter) and random bits (62 used).
fn v7_from(stamp: u64, random: u64) -> uuid::Uuid {
    let ms = stamp >> 12;
    let counter = (stamp & 0xfff) as u16;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    bytes[6..8].copy_from_slice(&(0x7000 | counter).to_be_bytes());
    bytes[8..].copy_from_slice(&((random >> 2) | (0b10 << 62)).to_be_bytes());
    uuid::Uuid::from_bytes(bytes)
}

/// IPv6 clients count by their /64 (rate limits, connections per IP): one host usually holds
/// a whole /64 and could otherwise rotate addresses to start afresh with every request.
pub(crate) const IPV6_CLIENT_PREFIX: u32 = 64;

/// The address block a client counts as: the address itself (IPv4, IPv4-mapped IPv6), or its
/// /64 (IPv6).
pub(crate) fn client_block(ip: IpAddr) -> IpAddr {
    match canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let masked = u128::from(v6) & (u128::MAX << (128 - IPV6_CLIENT_PREFIX));
            IpAddr::V6(std::net::Ipv6Addr::from(masked))
        }
        v4 => v4,
    }
}

/// The client IP: the TCP peer, unless the peer is a trusted proxy; then `X-Forwarded-For` is
/// walked from the right, skipping trusted addresses, and the first untrusted one is the client.
pub(crate) fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &TrustedProxies) -> IpAddr {
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
pub(crate) fn forwarded_for(peer: IpAddr, existing: Option<&str>, trusted: &TrustedProxies) -> String {
    let peer = canonical_ip(peer);
    match existing {
        Some(chain) if !chain.trim().is_empty() && trusted.contains(&peer) => format!("{}, {peer}", chain.trim()),
        _ => peer.to_string(),
    }
}

/// What the upstream is told about the request, as plain values: the head the gateway sends
/// is rewritten from these alone ([`rewrite`]), so the rules are read and tested here rather
/// than in the proxy's phases.
#[derive(Debug)]
pub(crate) struct Forwarding<'a> {
    /// The TCP peer (or the PROXY protocol's client).
    pub(crate) peer: IpAddr,
    /// The client behind `trusted_proxies`, as text.
    pub(crate) client: &'a str,
    pub(crate) request_id: &'a str,
    pub(crate) trusted: &'a TrustedProxies,
    /// `limits.underscores_in_headers`.
    pub(crate) underscores_allowed: bool,
    /// Names whose underscore spelling never passes ([`protected_headers`]).
    pub(crate) protected: &'a [HeaderName],
    /// Whether the request arrived over TLS.
    pub(crate) tls: bool,
    /// The subject of a client certificate this gateway verified.
    pub(crate) client_subject: Option<&'a HeaderValue>,
    /// Headers that carry a verified identity: client-sent copies never pass.
    pub(crate) identity_headers: &'a [HeaderName],
    /// The API key header: the gateway's credential, never the backend's.
    pub(crate) api_key_header: Option<&'a HeaderName>,
    /// The verified caller's identity headers.
    pub(crate) identity: &'a [(HeaderName, HeaderValue)],
    /// The route passes the client's `Authorization` on.
    pub(crate) forward_authorization: bool,
    /// The gateway answered `100 Continue` itself, so `Expect` is spent.
    pub(crate) continued: bool,
}

/// Names looked up on every request, parsed once (looked up by a string, a name is parsed and
/// checked first on every lookup).
pub(crate) const X_REQUEST_ID_NAME: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) const X_FORWARDED_FOR_NAME: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO_NAME: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The client-cert subject header (`X-Client-Cert-Subject`).
pub(crate) const CLIENT_CERT_SUBJECT: &str = "x-client-cert-subject";

// The headers the gateway sets on every proxied request, each parsed once, with the case it is
// sent in (named by a string, a header would be parsed and its lowercase copy allocated on
// every insert).
static X_FORWARDED_FOR: CasedHeaderName = CasedHeaderName::from_static("x-forwarded-for", "X-Forwarded-For");
static X_REAL_IP: CasedHeaderName = CasedHeaderName::from_static("x-real-ip", "X-Real-IP");
static X_FORWARDED_PROTO: CasedHeaderName = CasedHeaderName::from_static("x-forwarded-proto", "X-Forwarded-Proto");
static X_FORWARDED_HOST: CasedHeaderName = CasedHeaderName::from_static("x-forwarded-host", "X-Forwarded-Host");
static X_CLIENT_CERT_SUBJECT: CasedHeaderName = CasedHeaderName::from_static(CLIENT_CERT_SUBJECT, CLIENT_CERT_SUBJECT);

/// The headers [`rewrite`] removes, found in one pass over the head's names: override and
/// underscore headers ([`is_dropped`]), client-sent copies of the verified identity, the API
/// key, `Authorization` when the route keeps it, `Expect` once answered, and the headers the
/// gateway sets only from what it verified itself (`X-Client-Cert-Subject`, `X-Forwarded-Host`).
/// Removing a name costs a hash into each of the head's two maps (values and the names' case)
/// whether or not it is there; these are usually absent, so the usual list is empty.
fn headers_to_remove(headers: &HeaderMap, f: &Forwarding<'_>, from_trusted: bool) -> Vec<HeaderName> {
    let mut doomed = Vec::new();
    for name in headers.keys() {
        let n = name.as_str();
        let removed = is_dropped(n, from_trusted, f.underscores_allowed, f.protected)
            || n == CLIENT_CERT_SUBJECT
            || n == "x-forwarded-host"
            || f.identity_headers.contains(name)
            || f.api_key_header == Some(name)
            || (!f.forward_authorization && name == http::header::AUTHORIZATION)
            || (f.continued && name == http::header::EXPECT);
        if removed {
            doomed.push(name.clone());
        }
    }
    doomed
}

/// Rewrite the head sent upstream per `f`: drop override and underscore headers, then set the
/// forwarding headers, the verified identity and nothing a client could have forged in their
/// place.
pub(crate) fn rewrite(head: &mut RequestHeader, f: &Forwarding<'_>) -> pingora::Result<()> {
    let from_trusted = f.trusted.contains(&f.peer);
    // Claim headers: client-sent copies are dropped on every route, public ones included, so
    // upstream identity headers can only come from a verified token. The names come from the
    // config, not the authenticator: stripping must not depend on keys loading. Only a
    // certificate this gateway verified names the client, and `X-Forwarded-Host` is always the
    // host that was routed: copies sent by clients (or proxies in front) never pass.
    for name in headers_to_remove(&head.headers, f, from_trusted) {
        head.remove_header(&name);
    }
    let chain = if from_trusted {
        let existing = combined_lines(head.headers.get_all(&X_FORWARDED_FOR_NAME));
        forwarded_for(f.peer, existing.as_deref(), f.trusted)
    } else {
        // From an untrusted peer the chain is just the peer, which is the client.
        f.client.to_owned()
    };
    head.insert_header(&X_FORWARDED_FOR, chain)?;
    head.insert_header(&X_REAL_IP, f.client)?;
    head.insert_header(&crate::answer::X_REQUEST_ID, f.request_id)?;
    for (name, value) in f.identity {
        head.insert_header(name.clone(), value.clone())?;
    }
    if !passes_forwarded_proto(&head.headers, from_trusted) {
        // A static value: no copy, no check.
        head.insert_header(&X_FORWARDED_PROTO, HeaderValue::from_static(listener_proto(f.tls)))?;
    }
    if let Some(subject) = f.client_subject {
        head.insert_header(&X_CLIENT_CERT_SUBJECT, subject.clone())?;
    }
    // Always the host that was routed, even from a trusted proxy: a backend that believes
    // X-Forwarded-Host must act on the host the gateway authenticated for.
    if let Some(host) = head.headers.get(http::header::HOST).cloned() {
        head.insert_header(&X_FORWARDED_HOST, host)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarding<'a>(trusted: &'a TrustedProxies, peer: &str) -> Forwarding<'a> {
        Forwarding {
            peer: peer.parse().expect("ip"),
            client: "203.0.113.9",
            request_id: "req-1",
            trusted,
            underscores_allowed: false,
            protected: &[],
            tls: false,
            client_subject: None,
            identity_headers: &[],
            api_key_header: None,
            identity: &[],
            forward_authorization: true,
            continued: false,
        }
    }

    fn head(headers: &[(&str, &str)]) -> RequestHeader {
        let mut head = RequestHeader::build("GET", b"/", None).expect("head");
        for (name, value) in headers {
            head.append_header(name.to_string(), *value).expect("header");
        }
        head
    }

    fn get<'h>(head: &'h RequestHeader, name: &str) -> Option<&'h str> {
        head.headers.get(name).map(|v| v.to_str().expect("text"))
    }

    #[test]
    fn an_untrusted_peer_forges_nothing() {
        let none = trusted(&[]);
        let mut h = head(&[
            ("host", "api.example"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            (CLIENT_CERT_SUBJECT, "CN=admin"),
            ("x_user", "x"),
        ]);
        rewrite(&mut h, &forwarding(&none, "203.0.113.9")).expect("rewrite");
        assert_eq!(get(&h, "x-forwarded-for"), Some("203.0.113.9"));
        assert_eq!(get(&h, "x-real-ip"), Some("203.0.113.9"));
        assert_eq!(get(&h, "x-request-id"), Some("req-1"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("api.example"));
        assert_eq!(get(&h, CLIENT_CERT_SUBJECT), None);
        assert_eq!(get(&h, "x_user"), None);
    }

    #[test]
    fn a_trusted_proxy_extends_its_chain_and_keeps_its_scheme() {
        let t = trusted(&["10.0.0.0/8"]);
        let mut h = head(&[("x-forwarded-for", "198.51.100.7"), ("x-forwarded-proto", "https")]);
        let f = Forwarding { client: "198.51.100.7", tls: false, ..forwarding(&t, "10.0.0.1") };
        rewrite(&mut h, &f).expect("rewrite");
        assert_eq!(get(&h, "x-forwarded-for"), Some("198.51.100.7, 10.0.0.1"));
        assert_eq!(get(&h, "x-real-ip"), Some("198.51.100.7"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
        // No Host to route by: no X-Forwarded-Host either.
        assert_eq!(get(&h, "x-forwarded-host"), None);
    }

    #[test]
    fn identity_comes_from_the_gateway_only() {
        let none = trusted(&[]);
        let claim = HeaderName::from_static("x-user");
        let key = HeaderName::from_static("x-api-key");
        let verified = [(claim.clone(), HeaderValue::from_static("alice"))];
        let subject = HeaderValue::from_static("CN=client");
        let mut h = head(&[
            ("x-user", "root"),
            ("x-api-key", "secret"),
            ("authorization", "Bearer t"),
            ("expect", "100-continue"),
        ]);
        let f = Forwarding {
            identity_headers: std::slice::from_ref(&claim),
            api_key_header: Some(&key),
            identity: &verified,
            forward_authorization: false,
            continued: true,
            tls: true,
            client_subject: Some(&subject),
            ..forwarding(&none, "203.0.113.9")
        };
        rewrite(&mut h, &f).expect("rewrite");
        assert_eq!(h.headers.get_all("x-user").iter().count(), 1);
        assert_eq!(get(&h, "x-user"), Some("alice"));
        assert_eq!(get(&h, "x-api-key"), None);
        assert_eq!(get(&h, "authorization"), None);
        assert_eq!(get(&h, "expect"), None);
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&h, CLIENT_CERT_SUBJECT), Some("CN=client"));
    }

    #[test]
    fn client_copies_of_gateway_headers_never_pass_and_the_rest_keeps_its_order() {
        let none = trusted(&[]);
        let mut h = head(&[
            ("accept", "*/*"),
            ("x-forwarded-host", "evil.example"),
            (CLIENT_CERT_SUBJECT, "CN=admin"),
            (CLIENT_CERT_SUBJECT, "CN=root"),
            ("user-agent", "t"),
        ]);
        let subject = HeaderValue::from_static("CN=client");
        let f = Forwarding { client_subject: Some(&subject), ..forwarding(&none, "203.0.113.9") };
        rewrite(&mut h, &f).expect("rewrite");
        // No Host: no X-Forwarded-Host at all, not the client's.
        assert_eq!(get(&h, "x-forwarded-host"), None);
        assert_eq!(h.headers.get_all(CLIENT_CERT_SUBJECT).iter().collect::<Vec<_>>(), vec!["CN=client"]);
        let names: Vec<&str> = h.headers.keys().map(|n| n.as_str()).take(2).collect();
        assert_eq!(names, ["accept", "user-agent"]);
    }

    fn headers_to_drop(
        headers: &HeaderMap,
        from_trusted: bool,
        underscores_allowed: bool,
        protected: &[HeaderName],
    ) -> Vec<HeaderName> {
        headers
            .keys()
            .filter(|n| is_dropped(n.as_str(), from_trusted, underscores_allowed, protected))
            .cloned()
            .collect()
    }

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies(nets.iter().map(|n| n.parse().expect("cidr")).collect())
    }

    #[test]
    fn several_lines_are_one_list() {
        let mut h = HeaderMap::new();
        assert!(combined_lines(h.get_all("x-forwarded-for")).is_none());
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        assert_eq!(combined_lines(h.get_all("x-forwarded-for")).as_deref(), Some("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2, 10.0.0.2"));
        assert_eq!(combined_lines(h.get_all("x-forwarded-for")).as_deref(), Some("1.1.1.1, 2.2.2.2, 10.0.0.2"));
        let t = trusted(&["10.0.0.0/8"]);
        let peer: IpAddr = "10.0.0.1".parse().expect("ip");
        let chain = combined_lines(h.get_all("x-forwarded-for"));
        assert_eq!(client_ip(peer, chain.as_deref(), &t).to_string(), "2.2.2.2");
    }

    #[test]
    fn underscore_spellings() {
        let mut h = HeaderMap::new();
        h.insert("x_user_id", HeaderValue::from_static("admin"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("my_header", HeaderValue::from_static("2"));
        let protected = [HeaderName::from_static("x-user-id")];
        assert_eq!(headers_to_drop(&h, false, true, &protected), vec![HeaderName::from_static("x_user_id")]);
        let mut all = headers_to_drop(&h, false, false, &protected);
        all.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(all, vec![HeaderName::from_static("my_header"), HeaderName::from_static("x_user_id")]);
        h.remove("x_user_id");
        h.remove("my_header");
        assert!(headers_to_drop(&h, false, false, &protected).is_empty());
    }

    #[test]
    fn override_headers_pass_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert("x-http-method-override", HeaderValue::from_static("DELETE"));
        h.insert("forwarded", HeaderValue::from_static("for=10.0.0.1;host=admin"));
        h.insert("x-original-url", HeaderValue::from_static("/admin"));
        h.insert("x_http_method_override", HeaderValue::from_static("DELETE"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        assert_eq!(headers_to_drop(&h, false, true, &[]).len(), 4, "underscore spelling too, even when allowed");
        assert_eq!(headers_to_drop(&h, true, true, &[]), vec![HeaderName::from_static("x_http_method_override")]);
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
    fn request_ids_are_uuid_v7_in_order_of_issue() {
        let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let ids: Vec<uuid::Uuid> = (0..10_000).map(|_| next_v7()).collect();
        for id in &ids {
            assert_eq!(id.get_version(), Some(uuid::Version::SortRand));
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
            let ms = secs * 1000 + u64::from(nanos / 1_000_000);
            // the clock, or a few ms ahead of it when a millisecond's counter ran out
            assert!(ms >= before && ms < before + 60_000, "{id}: {ms} vs {before}");
        }
        // strictly increasing, as bytes and as text
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let text: Vec<String> = ids.iter().map(|id| id.hyphenated().to_string()).collect();
        assert!(text.windows(2).all(|w| w[0] < w[1]));
        assert!(uuid::Uuid::parse_str(&new_request_id()).is_ok());
    }

    #[test]
    fn a_v7_holds_its_stamp_and_62_random_bits() {
        let id = v7_from((0x0123_4567_89ab << 12) | 0xcde, u64::MAX);
        assert_eq!(id.hyphenated().to_string(), "01234567-89ab-7cde-bfff-ffffffffffff");
        let id = v7_from(0, 0);
        assert_eq!(id.hyphenated().to_string(), "00000000-0000-7000-8000-000000000000");
        // a counter past 4,095 carries into the milliseconds
        assert_eq!(v7_from((5 << 12) | 0xfff, 0).get_timestamp().unwrap().to_unix(), (0, 5_000_000));
        assert_eq!(v7_from((5 << 12) + 0x1000, 0).get_timestamp().unwrap().to_unix(), (0, 6_000_000));
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
