use super::*;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn metrics() -> ConnectionMetrics {
    let counter = |n: &str| IntCounter::new(n, "test").unwrap();
    ConnectionMetrics {
        open: IntGauge::new("open", "test").unwrap(),
        refused_total: counter("refused_total"),
        refused_per_ip: counter("refused_per_ip"),
        evicted: counter("evicted"),
        header_timeouts: counter("header_timeouts"),
        body_timeouts: counter("body_timeouts"),
        send_timeouts: counter("send_timeouts"),
        heads_too_large: counter("heads_too_large"),
        proxy_protocol: crate::observability::ProxyProtocolMetrics {
            invalid: counter("invalid"),
            closed: counter("closed"),
            timed_out: counter("timed_out"),
        },
    }
}

fn limits(max: usize, per_ip: Option<usize>) -> Limits {
    Limits {
        max_connections: max,
        max_connections_per_ip: per_ip,
        header_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        send_timeout: Duration::from_millis(300),
        ..Limits::default()
    }
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn per_ip_bound_counts_ipv6_by_its_64_and_frees_on_close() {
    let c = Connections::new(&limits(100, Some(2)), &TrustedProxies::default(), &[], metrics());
    let a = c.admit(ip("2001:db8::1"), false).unwrap();
    let _b = c.admit(ip("2001:db8::2"), false).unwrap();
    assert_eq!(c.admit(ip("2001:db8::3"), false).unwrap_err(), Refusal::PerIp);
    let _other = c.admit(ip("127.0.0.2"), false).unwrap();
    let _unbounded = c.admit(None, false).unwrap();
    drop(a);
    let _c = c.admit(ip("2001:db8::3"), false).unwrap();
    assert_eq!(c.open.load(Ordering::Relaxed), 4);
    assert_eq!(c.metrics.refused_per_ip.get(), 1);
}

/// A connection that began waiting `ago_ms` ago, in `phase`.
fn waiting(c: &Arc<Connections>, phase: Phase, ago_ms: u64) -> Ticket {
    let t = c.admit(None, false).unwrap();
    t.conn.enter(phase);
    t.conn.since_ms.store(now_ms() - ago_ms, Ordering::Relaxed);
    t
}

#[test]
fn the_end_of_a_head_is_found_however_the_reads_split_it() {
    let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody";
    let end = head.len() - 4;
    // Every split into two reads: the head ends only once its empty line is all there.
    for split in 0..=head.len() {
        let first = head_end(&head[..split], 0);
        assert_eq!(first, (split >= end).then_some(end), "first read of {split} bytes");
        if first.is_none() {
            assert_eq!(head_end(head, split), Some(end), "second read after {split} bytes");
        }
    }
    // One byte per read (a slowloris): found exactly at the last byte of the empty line.
    let found = (1..=head.len()).find(|&n| head_end(&head[..n], n - 1).is_some());
    assert_eq!(found, Some(end));
    // Bare line feeds end a head too; a line feed with no empty line does not.
    assert_eq!(head_end(b"GET / HTTP/1.0\n\nnext", 0), Some(16));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\n\r\n", 0), Some(26));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
    assert_eq!(head_end(b"", 0), None);
    // Looked-at bytes past the end (a caller's slip) are not a panic.
    assert_eq!(head_end(b"ab", 5), None);
}

#[test]
fn empty_lines_before_a_request_line_are_dropped_as_httparse_skips_them() {
    let mut head = BytesMut::from(&b"\r\n\n\r\nGET / HTTP/1.1\r\n"[..]);
    assert_eq!(skip_empty_lines(&mut head), 5);
    assert_eq!(&head[..], b"GET / HTTP/1.1\r\n");
    // A lone CR waits for what follows it; a CR before anything else is not an empty line.
    let mut head = BytesMut::from(&b"\r\n\r"[..]);
    assert_eq!((skip_empty_lines(&mut head), &head[..]), (2, &b"\r"[..]));
    let mut head = BytesMut::from(&b"\rGET"[..]);
    assert_eq!((skip_empty_lines(&mut head), &head[..]), (0, &b"\rGET"[..]));
}

#[test]
fn header_fields_are_counted_only_in_heads_that_could_hold_too_many() {
    let head = |fields: usize| {
        let mut h = String::from("GET / HTTP/1.1\r\n");
        for i in 0..fields {
            h.push_str(&format!("X-{i}: v\r\n"));
        }
        h + "\r\n"
    };
    assert!(!too_many_fields(head(256).as_bytes()));
    assert!(too_many_fields(head(257).as_bytes()));
    // Short heads are not scanned: 257 field lines take more bytes than this.
    assert!(!too_many_fields(&b"\n".repeat(MAX_HEADER_FIELDS * 3)));
}

#[test]
fn at_the_bound_the_longest_waiting_connection_gives_way() {
    let c = Connections::new(&limits(4, None), &TrustedProxies::default(), &[], metrics());
    let idle = waiting(&c, Phase::Idle, 5_000);
    let slow_head = waiting(&c, Phase::Head, 8_000);
    let active = waiting(&c, Phase::Idle, 10); // between two requests of a busy client
    let serving = waiting(&c, Phase::Body, 60_000);
    let _new = waiting(&c, Phase::Done, 0);
    assert!(slow_head.conn.evict.load(Ordering::Relaxed), "the head arriving for 8 s goes first");
    let _newer = waiting(&c, Phase::Done, 0);
    assert!(idle.conn.evict.load(Ordering::Relaxed));
    // Only an active client and a request being served are left: new connections are
    // refused, and the registry is not scanned again before one could qualify.
    assert_eq!(c.admit(None, false).unwrap_err(), Refusal::Total);
    assert!(!active.conn.evict.load(Ordering::Relaxed) && !serving.conn.evict.load(Ordering::Relaxed));
    assert!(c.no_eviction_before.load(Ordering::Relaxed) > now_ms() + 900);
    assert_eq!((c.metrics.evicted.get(), c.metrics.refused_total.get()), (2, 1));
}

#[test]
fn at_the_bound_without_a_candidate_new_connections_are_refused_before_setup() {
    let c = Connections::new(&limits(2, None), &TrustedProxies::default(), &[], metrics());
    let _a = waiting(&c, Phase::Done, 0);
    assert!(!c.refuse_early(), "below the bound");
    let _b = waiting(&c, Phase::Idle, 10);
    assert!(!c.refuse_early(), "at the bound, but no scan has found it without candidates");
    assert_eq!(c.admit(None, false).unwrap_err(), Refusal::Total);
    assert!(c.refuse_early(), "the scan found none: refused at accept until one could qualify");
    assert_eq!(c.metrics.refused_total.get(), 2);
    c.no_eviction_before.store(now_ms(), Ordering::Relaxed);
    assert!(!c.refuse_early(), "once one could, admission decides again");
}

#[test]
fn evictions_follow_the_wait_order_across_rescans() {
    let c = Connections::new(&limits(200, None), &TrustedProxies::default(), &[], metrics());
    // Connection i has waited 10 s + i × 10 ms: the last is the oldest.
    let old: Vec<Ticket> = (0..200).map(|i| waiting(&c, Phase::Idle, 10_000 + i * 10)).collect();
    let _first = waiting(&c, Phase::Done, 0);
    assert!(old[199].conn.evict.load(Ordering::Relaxed));
    // The next oldest are served, or begin a new wait, before their turn comes.
    old[198].conn.enter(Phase::Done);
    old[197].conn.enter(Phase::Idle);
    let _new: Vec<Ticket> = (0..150).map(|_| waiting(&c, Phase::Done, 0)).collect();
    let evicted: Vec<usize> = (0..200).filter(|&i| old[i].conn.evict.load(Ordering::Relaxed)).collect();
    let expected: Vec<usize> = (47..197).chain([199]).collect();
    assert_eq!(evicted, expected, "151 evictions, oldest first, past {EVICTION_BATCH}-connection batches");
    assert_eq!(c.metrics.evicted.get(), 151);
}

fn guarded(c: &Arc<Connections>) -> (Guarded, tokio::io::DuplexStream, Arc<Conn>) {
    let (client, server) = tokio::io::duplex(4096);
    let stream = Guarded::new(Box::new(server), c.admit(None, false).unwrap());
    let conn = stream.conn();
    (stream, client, conn)
}

#[tokio::test]
async fn a_trickled_head_gets_408_at_the_deadline() {
    let c = Connections::new(&limits(10, None), &TrustedProxies::default(), &[], metrics());
    let (mut stream, mut client, conn) = guarded(&c);
    client.write_all(b"GET / HT").await.unwrap();
    let mut buf = [0u8; 64];
    let started = Instant::now();
    assert_eq!(stream.read(&mut buf).await.unwrap(), 8);
    assert_eq!(conn.phase(), Phase::Head);
    let err = stream.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(290), "{:?}", started.elapsed());
    let mut answer = vec![0u8; 512];
    let n = client.read(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408 ") && text.contains("\"request_timeout\""), "{text}");
    assert_eq!(c.metrics.header_timeouts.get(), 1);
}

#[tokio::test]
async fn a_stalled_body_fails_its_read_and_is_remembered() {
    let c = Connections::new(&limits(10, None), &TrustedProxies::default(), &[], metrics());
    let (mut stream, mut client, conn) = guarded(&c);
    client.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(stream.read(&mut buf).await.unwrap(), 19);
    conn.enter(Phase::Body);
    let err = stream.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(conn.body_timed_out.load(Ordering::Relaxed));
    assert_eq!(c.metrics.body_timeouts.get(), 1);
}

#[tokio::test]
async fn an_idle_connection_is_not_clocked_and_ends_when_evicted() {
    let c = Connections::new(&limits(1, None), &TrustedProxies::default(), &[], metrics());
    let (mut stream, _client, conn) = guarded(&c);
    conn.since_ms.store(now_ms() - 2_000, Ordering::Relaxed);
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 8];
        stream.read(&mut buf).await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!reader.is_finished(), "idle connections wait for idle_timeout, not header_timeout");
    let _new = c.admit(None, false).unwrap();
    assert_eq!(reader.await.unwrap().unwrap(), 0, "evicted: end of stream");
    assert!(conn.evict.load(Ordering::Relaxed));
}

#[tokio::test]
async fn a_head_is_handed_over_alone_and_what_follows_it_is_read_after_it() {
    let c = Connections::new(&limits(10, None), &TrustedProxies::default(), &[], metrics());
    let (mut stream, mut client, _conn) = guarded(&c);
    let idle = Duration::from_secs(5);
    client.write_all(b"\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\nbodyGET /b HTTP/1.1\r\n\r\n").await.unwrap();
    let head = stream.read_head(idle, false).await.unwrap();
    assert_eq!(&head[..], b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", "empty lines dropped, the rest kept");
    let mut body = [0u8; 4];
    stream.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"body");
    let next = stream.read_head(idle, false).await.unwrap();
    assert_eq!(&next[..], b"GET /b HTTP/1.1\r\n\r\n");
}

#[tokio::test]
async fn bytes_arriving_while_a_whole_request_is_answered_wait_for_the_next_head() {
    let c = Connections::new(&limits(10, None), &TrustedProxies::default(), &[], metrics());
    let (mut stream, mut client, conn) = guarded(&c);
    let idle = Duration::from_secs(5);
    client.write_all(b"GET /a HTTP/1.1\r\n\r\n").await.unwrap();
    stream.read_head(idle, false).await.unwrap();
    conn.enter(Phase::Done);
    client.write_all(b"GET /b HTTP/1.1\r\n\r\n").await.unwrap();
    // Pingora's look for the client leaving (a one-byte read) does not take them...
    let mut probe = [0u8; 1];
    assert!(tokio::time::timeout(Duration::from_millis(200), stream.read(&mut probe)).await.is_err());
    assert!(tokio::time::timeout(Duration::from_millis(50), stream.read(&mut probe)).await.is_err());
    // ...the next head gets them whole.
    let next = stream.read_head(idle, false).await.unwrap();
    assert_eq!(&next[..], b"GET /b HTTP/1.1\r\n\r\n");
    // An upgraded connection's bytes are read as they come; a client leaving is seen.
    conn.enter(Phase::Done);
    upgraded_in(&conn);
    client.write_all(b"frame").await.unwrap();
    let mut frame = [0u8; 5];
    stream.read_exact(&mut frame).await.unwrap();
    assert_eq!(&frame, b"frame");
    let (mut stream, client, conn) = guarded(&c);
    conn.enter(Phase::Done);
    drop(client);
    assert_eq!(stream.read(&mut probe).await.unwrap(), 0);
}

fn upgraded_in(conn: &Arc<Conn>) {
    CONNECTION.sync_scope(conn.clone(), upgraded);
    assert_eq!(conn.phase(), Phase::Untimed);
}

#[tokio::test]
async fn heads_with_too_many_fields_and_reads_past_the_bound_are_answered_431() {
    let mut l = limits(10, None);
    l.max_header_bytes = 8 << 10;
    let c = Connections::new(&l, &TrustedProxies::default(), &[], metrics());
    // More fields than Pingora parses, in one whole head.
    let (mut stream, mut client, _conn) = guarded(&c);
    let mut head = String::from("GET / HTTP/1.1\r\n");
    for i in 0..300 {
        head.push_str(&format!("X-{i}: v\r\n"));
    }
    client.write_all(format!("{head}\r\n").as_bytes()).await.unwrap();
    let reader = tokio::spawn(async move { stream.read_head(Duration::from_secs(5), false).await });
    let mut answer = vec![0u8; 1024];
    let n = client.read(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 431 ") && text.contains("more than 256 header fields"), "{text}");
    drop(client);
    assert!(reader.await.unwrap().is_none());
    // A parser that wants more than the gate found reads on within the same bound.
    let (mut stream, mut client, conn) = guarded(&c);
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    stream.read_head(Duration::from_secs(5), false).await.unwrap();
    assert_eq!(conn.phase(), Phase::Head);
    let pad = vec![b'a'; 1 << 10];
    let mut buf = vec![0u8; 1 << 10];
    let mut read = 0;
    let err = loop {
        client.write_all(&pad).await.unwrap();
        match stream.read(&mut buf).await {
            Ok(n) => read += n,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(((7 << 10)..=(8 << 10) + 4).contains(&read), "{read}");
    let n = client.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 431 "));
    assert_eq!(c.metrics.heads_too_large.get(), 2);
}

#[tokio::test]
async fn an_h2c_preface_is_read_whole_under_the_head_clock() {
    let c = Connections::new(&limits(10, None), &TrustedProxies::default(), &[], metrics());
    let (mut stream, mut client, conn) = guarded(&c);
    client.write_all(&H2_PREFACE[..18]).await.unwrap();
    let rest = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(&H2_PREFACE[18..]).await.unwrap();
        client.write_all(b"\0\0\0\x04").await.unwrap();
        client
    });
    let head = stream.read_head(Duration::from_secs(5), true).await.unwrap();
    assert!(head.starts_with(H2_PREFACE), "{head:?}");
    assert_eq!(conn.phase(), Phase::Head);
    // Put back for Pingora, which peeks at it and then reads it.
    stream.unread(head);
    stream.untimed();
    let mut peeked = [0u8; 24];
    assert!(stream.try_peek(&mut peeked).await.unwrap());
    assert_eq!(&peeked, H2_PREFACE);
    let mut all = [0u8; 28];
    stream.read_exact(&mut all).await.unwrap();
    assert_eq!(&all[..24], H2_PREFACE);
    drop(rest.await.unwrap());
    // Bytes that start like the preface and then differ are a head like any other.
    let (mut stream, mut client, _conn) = guarded(&c);
    client.write_all(&H2_PREFACE[..18]).await.unwrap();
    let rest = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(b"XY").await.unwrap();
        client
    });
    let head = stream.read_head(Duration::from_secs(5), true).await.unwrap();
    assert_eq!(&head[..], &H2_PREFACE[..18]);
    drop(rest.await.unwrap());
}

#[tokio::test]
async fn a_write_the_client_does_not_take_fails_at_the_send_timeout_one_it_takes_does_not() {
    let c = Connections::new(&limits(10, None), &TrustedProxies::default(), &[], metrics());
    // A client reading 1 KiB every 100 ms keeps writes moving past the 300 ms send_timeout.
    let (mut stream, mut client, conn) = guarded(&c);
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        let mut got = 0;
        while got < 16 << 10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            got += client.read(&mut buf).await.unwrap();
        }
        client
    });
    stream.write_all(&[7u8; 16 << 10]).await.unwrap();
    let client = reader.await.unwrap();
    assert_eq!(conn.write_stalled_since.load(Ordering::Relaxed), 0);
    // A client that stops reading: the write fails once it has waited send_timeout.
    let started = Instant::now();
    let err = stream.write_all(&[7u8; 64 << 10]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= Duration::from_millis(290), "{:?}", started.elapsed());
    assert_eq!(c.metrics.send_timeouts.get(), 1);
    drop(client);
}

#[tokio::test]
async fn at_the_bound_a_writer_the_client_stopped_taking_gives_way() {
    let mut l = limits(1, None);
    l.send_timeout = Duration::from_secs(60);
    let c = Connections::new(&l, &TrustedProxies::default(), &[], metrics());
    let (mut stream, _client, conn) = guarded(&c);
    conn.enter(Phase::Done);
    let writer = tokio::spawn(async move { stream.write_all(&[7u8; 64 << 10]).await });
    while conn.write_stalled_since.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.admit(None, false).unwrap_err(), Refusal::Total, "stalled for less than a second");
    c.no_eviction_before.store(0, Ordering::Relaxed);
    conn.write_stalled_since.store(now_ms() - 2_000, Ordering::Relaxed);
    let _new = c.admit(None, false).unwrap();
    let err = writer.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    assert_eq!(c.metrics.evicted.get(), 1);
}

/// A loopback TCP connection: the client's end, and the server's as Pingora accepts it (a
/// buffered stream, whose read of zero bytes waits for the first bytes).
async fn tcp_pair() -> (tokio::net::TcpStream, Stream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, Box::new(pingora::protocols::l4::stream::Stream::from(server)))
}

#[tokio::test]
async fn a_tls_handshake_is_counted_and_meets_the_idle_and_head_deadlines() {
    let c = Connections::new(&limits(2, None), &TrustedProxies::default(), &[], metrics());
    // The stand-in handshake reads five bytes.
    async fn five_bytes(mut s: Stream) -> pingora::Result<Stream> {
        let mut b = [0u8; 5];
        s.read_exact(&mut b).await.map_err(|e| pingora::Error::because(pingora::ErrorType::ReadError, "", e))?;
        Ok(s)
    }
    let idle = Duration::from_millis(200);
    // Nothing sent: cut at idle_timeout.
    let (_client, server) = tcp_pair().await;
    let ticket = c.admit(None, false).unwrap();
    let started = Instant::now();
    let cut = ticket.handshake(server, idle, five_bytes).await.unwrap_err();
    assert!(matches!(cut, HandshakeCut::TimedOut), "{cut:?}");
    assert!(started.elapsed() < Duration::from_millis(290), "idle: {:?}", started.elapsed());
    drop(ticket);
    // Started, then stalled: cut at header_timeout (300 ms) from the first byte.
    let (mut client, server) = tcp_pair().await;
    let ticket = c.admit(None, false).unwrap();
    client.write_all(b"ab").await.unwrap();
    let started = Instant::now();
    let cut = ticket.handshake(server, idle, five_bytes).await.unwrap_err();
    assert!(matches!(cut, HandshakeCut::TimedOut), "{cut:?}");
    assert!(started.elapsed() >= Duration::from_millis(290), "head: {:?}", started.elapsed());
    drop(ticket);
    // Completed: the connection waits for its first request.
    let (mut client, server) = tcp_pair().await;
    let ticket = c.admit(None, false).unwrap();
    client.write_all(b"abcde").await.unwrap();
    assert!(ticket.handshake(server, idle, five_bytes).await.is_ok());
    assert_eq!(ticket.conn.phase(), Phase::Idle);
    drop(ticket);
    let _other = c.admit(None, false).unwrap();
    // At the bound, one waiting for its handshake long enough gives way.
    let (_client, server) = tcp_pair().await;
    let waiting = c.admit(None, false).unwrap();
    waiting.conn.since_ms.store(now_ms() - 2_000, Ordering::Relaxed);
    let cut = tokio::join!(waiting.handshake(server, Duration::from_secs(5), five_bytes), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.admit(None, false).map(|_| ())
    });
    assert!(matches!(cut, (Err(HandshakeCut::Evicted), Ok(()))), "{cut:?}");
}
