//! [`Guarded`]: a client stream that knows its request's phase and enforces its deadlines.

use super::*;

/// How long, and for how many bytes, a connection answered early is read on before it closes
/// ([`Guarded::linger`]).
pub(super) const LINGER: Duration = Duration::from_secs(2);
pub(super) const LINGER_BYTES: usize = 1 << 20;

/// A client stream under its connection's bounds and deadlines (see the module docs).
pub(crate) struct Guarded {
    pub(super) inner: Stream,
    pub(super) ticket: Ticket,
    /// The deadline timer, made the first time a read has to wait in a clocked phase (a
    /// request whose head and body arrive at once never needs one).
    pub(super) timer: Option<Pin<Box<Sleep>>>,
    /// The `send_timeout` timer, made the first time a write has to wait.
    pub(super) send_timer: Option<Pin<Box<Sleep>>>,
    /// A write is waiting (the client is not reading); `Conn::write_stalled_since` says since when.
    pub(super) write_stalled: bool,
    /// Something was written since the current head began: an answer of the stream's own
    /// would be spliced into it, so a head refused then only fails the read.
    pub(super) wrote: bool,
    /// An answer written by the stream itself (a 408 at the header deadline, a 431 for a head
    /// Pingora reads on past `max_header_bytes`), how much of it is out and whether it is the
    /// 408; the read fails once it is out.
    pub(super) early_answer: Option<(Vec<u8>, usize, bool)>,
    /// Bytes read from the client but not consumed yet, served before the socket's: what
    /// follows the head Pingora was given (a body, a pipelined request), a request that
    /// arrived while the previous one was answered, or an h2c preface.
    pub(super) unread: Option<BytesMut>,
    /// The length of a head the gate took for whole, and what Pingora read on from it: should
    /// its parser want more, that is held to `max_header_bytes` too (`None` while the gate
    /// reads the head).
    pub(super) head_read_on: Option<usize>,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").field("inner", &self.inner).field("phase", &self.ticket.conn.phase()).finish()
    }
}

impl Guarded {
    pub(crate) fn new(inner: Stream, ticket: Ticket) -> Self {
        Guarded {
            inner,
            ticket,
            timer: None,
            send_timer: None,
            write_stalled: false,
            wrote: false,
            early_answer: None,
            unread: None,
            head_read_on: None,
        }
    }

    /// The connection's shared state (for [`serve`]).
    pub(crate) fn conn(&self) -> Arc<Conn> {
        self.ticket.conn.clone()
    }

    /// Put `bytes` back before anything not yet read (an h2c preface, for Pingora's HTTP/2).
    pub(crate) fn unread(&mut self, mut bytes: BytesMut) {
        if let Some(rest) = self.unread.take() {
            bytes.extend_from_slice(&rest);
        }
        if !bytes.is_empty() {
            self.unread = Some(bytes);
        }
    }

    /// Serve the connection from now on without clocks or bytes held back (HTTP/2).
    pub(crate) fn untimed(&self) {
        self.ticket.conn.enter(Phase::Untimed);
    }

    /// Wait until the stream can be read (data, end of stream or an error: true) or it is
    /// evicted at the bound with nothing arrived (false), without consuming anything: a read of
    /// zero bytes fills the connection's read buffer (`limits.read_buffer`) and leaves the
    /// bytes there for the request's reader.
    pub(crate) async fn readable(&mut self) -> bool {
        if self.unread.is_some() {
            return true;
        }
        std::future::poll_fn(|cx| {
            let conn = &self.ticket.conn;
            match Pin::new(&mut self.inner).poll_read(cx, &mut ReadBuf::new(&mut [])) {
                Poll::Ready(_) => Poll::Ready(true),
                Poll::Pending if conn.evicted(cx) => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Read a request head into a buffer of its own, up to and including its empty line: the
    /// bytes a new Pingora session is to parse first. What arrived after it (a body, pipelined
    /// requests) stays in the stream for the session's reads and the next head. Empty lines
    /// before the request line are dropped. `None` when the connection is to close instead:
    /// its client left, fell silent for `idle` between two reads or was evicted mid-head, the
    /// head missed `header_timeout` (the 408 is written by [`Self::poll_read`]), grew past
    /// `max_header_bytes` (looked up only for a head that takes more than one read, skipped
    /// empty lines counted) or has more fields than Pingora parses (answered 431 here, so the
    /// buffer is bounded by the limit, not by Pingora's 1 MiB).
    ///
    /// `h2c`: the connection may open with the HTTP/2 preface; the whole preface is then
    /// returned with what followed it.
    ///
    /// A slowloris trickling its head a byte at a time then costs one read per byte, not a pass
    /// through Pingora's parser with a timer each, and an evicted or abandoned head closes
    /// without a Pingora session, error path and log line. A head that arrives whole is read
    /// once, into the buffer Pingora would have allocated for it.
    pub(crate) async fn read_head(&mut self, idle: Duration, h2c: bool) -> Option<BytesMut> {
        use tokio::io::AsyncReadExt;
        self.head_read_on = None;
        self.wrote = false;
        let mut head = match self.unread.take() {
            // A request that arrived while the previous one was answered: its clock runs from now.
            Some(pipelined) => {
                self.ticket.conn.enter(Phase::Head);
                pipelined
            }
            None => BytesMut::with_capacity(HEAD_BUFFER),
        };
        // The timer is registered only if a read has to wait, and is moved on lazily when it
        // fires: a byte that arrives costs a clock read, not a timer.
        let silence = tokio::time::sleep(idle);
        tokio::pin!(silence);
        let mut last_read = tokio::time::Instant::now();
        let mut limit = None;
        let mut skipped = 0;
        let mut looked_at = 0usize;
        loop {
            if !head.is_empty() {
                if head[0] == b'\r' || head[0] == b'\n' {
                    let dropped = skip_empty_lines(&mut head);
                    skipped += dropped;
                    looked_at = looked_at.saturating_sub(dropped);
                }
                if h2c && H2_PREFACE.starts_with(&head[..head.len().min(H2_PREFACE.len())]) {
                    // Not looked at for the end of a head: should the bytes turn out not to
                    // be the preface, the scan starts from the beginning.
                    if head.len() >= H2_PREFACE.len() {
                        return Some(head);
                    }
                } else if let Some(end) = head_end(&head, looked_at) {
                    return self.hand_over(head, end).await;
                } else {
                    let limit = *limit.get_or_insert_with(|| self.ticket.connections.max_header_bytes());
                    // The empty line ending a head is not counted in `max_header_bytes`.
                    if head.len() + skipped > limit + 4 {
                        self.ticket.connections.metrics.heads_too_large.inc();
                        self.answer_and_close(GatewayError::HeadersTooLarge { limit }).await;
                        return None;
                    }
                    looked_at = head.len();
                }
            }
            tokio::select! {
                biased;
                read = self.read_buf(&mut head) => match read {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => last_read = tokio::time::Instant::now(),
                },
                () = &mut silence => {
                    if last_read + idle <= tokio::time::Instant::now() {
                        return None;
                    }
                    silence.as_mut().reset(last_read + idle);
                }
            }
        }
    }

    /// The head `head[..end]` is whole: keep what follows it, and refuse it if it has more
    /// fields than Pingora parses.
    pub(super) async fn hand_over(&mut self, mut head: BytesMut, end: usize) -> Option<BytesMut> {
        if end < head.len() {
            self.unread = Some(head.split_off(end));
        }
        if too_many_fields(&head) {
            self.ticket.connections.metrics.heads_too_large.inc();
            self.answer_and_close(GatewayError::TooManyHeaderFields { limit: MAX_HEADER_FIELDS }).await;
            return None;
        }
        self.head_read_on = Some(head.len());
        Some(head)
    }

    /// Answer a request cut short before all of it was read (nothing else was written for
    /// it), then close after a lingering read. A client that does not read cannot hold the
    /// connection: the answer fits the socket's buffer, and the linger is bounded.
    pub(super) async fn answer_and_close(&mut self, error: GatewayError) {
        use tokio::io::AsyncWriteExt;
        if self.write_all(&early_answer(error)).await.is_ok() && self.flush().await.is_ok() {
            self.linger().await;
        }
    }

    /// After an answer that ends a request before all of it was read: end the sending side, then
    /// read and discard what the client still sends, for at most [`LINGER`] and
    /// [`LINGER_BYTES`], so that closing with unread bytes does not reset the connection
    /// before the client has read the answer (nginx's lingering close).
    pub(super) async fn linger(&mut self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if AsyncWriteExt::shutdown(&mut self.inner).await.is_err() {
            return;
        }
        let mut discard = vec![0u8; 4096];
        let mut left = LINGER_BYTES;
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(n @ 1..) = self.inner.read(&mut discard).await {
                left = left.saturating_sub(n);
                if left == 0 {
                    break;
                }
            }
        })
        .await;
    }

    /// Poll the deadline of `phase`; ready when it passed.
    pub(super) fn poll_deadline(&mut self, cx: &mut Context<'_>, phase: Phase) -> Poll<()> {
        let deadline = tokio::time::Instant::from_std(self.ticket.connections.deadline(&self.ticket.conn, phase));
        poll_timer(&mut self.timer, deadline, cx)
    }

    /// Write the answer `refuse` makes, and counts, (nothing else was written for this
    /// request), then fail the read so Pingora closes the connection: a head that missed
    /// `header_timeout` (408), or one Pingora reads on past `max_header_bytes` (431).
    pub(super) fn poll_early_answer(
        &mut self,
        cx: &mut Context<'_>,
        refuse: fn(&Connections) -> GatewayError,
    ) -> Poll<io::Result<()>> {
        let connections = &self.ticket.connections;
        let wrote = self.wrote;
        let (bytes, written, timed_out) = self.early_answer.get_or_insert_with(|| {
            let error = refuse(connections);
            let timed_out = matches!(error, GatewayError::RequestTimeout);
            // An answer is under way already: the connection just closes.
            (if wrote { Vec::new() } else { early_answer(error) }, 0, timed_out)
        });
        while *written < bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => break,
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(_)) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        let timed_out = *timed_out;
        let _ = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        Poll::Ready(Err(if timed_out {
            io::Error::new(io::ErrorKind::TimedOut, "request head not received within header_timeout")
        } else {
            io::Error::new(io::ErrorKind::InvalidData, "request head past max_header_bytes")
        }))
    }

    /// The head missed `header_timeout`: answer 408 (see [`Self::poll_early_answer`]).
    pub(super) fn poll_header_timeout(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_early_answer(cx, |c| {
            c.metrics.header_timeouts.inc();
            GatewayError::RequestTimeout
        })
    }

    /// Pingora read on from a head the gate took for whole (its parser disagreed on the end):
    /// count what it reads against `max_header_bytes`; past it, answer 431 (see
    /// [`Self::poll_early_answer`]).
    pub(super) fn poll_head_read_on(&mut self, cx: &mut Context<'_>, read: usize) -> Poll<io::Result<()>> {
        let Some(head) = &mut self.head_read_on else { return Poll::Ready(Ok(())) };
        *head += read;
        // The empty line ending a head is not counted in `max_header_bytes`.
        if *head <= self.ticket.connections.max_header_bytes() + 4 {
            return Poll::Ready(Ok(()));
        }
        self.poll_early_answer(cx, |c| {
            c.metrics.heads_too_large.inc();
            GatewayError::HeadersTooLarge { limit: c.max_header_bytes() }
        })
    }

    /// A write could not go out: the client is not reading. Pending until `send_timeout` has
    /// passed since the stall began, or the connection was chosen to close at the bound; then
    /// the error that ends the write (and the connection).
    pub(super) fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let conn = &self.ticket.conn;
        if !self.write_stalled {
            self.write_stalled = true;
            conn.write_stalled_since.store(now_ms().max(1), Ordering::Relaxed);
        }
        if conn.evicted(cx) {
            return Poll::Ready(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed at max_connections: the client does not read its answer",
            ));
        }
        let connections = &self.ticket.connections;
        let since = conn.write_stalled_since.load(Ordering::Relaxed);
        let deadline = tokio::time::Instant::from_std(connections.send_deadline(since));
        ready!(poll_timer(&mut self.send_timer, deadline, cx));
        connections.metrics.send_timeouts.inc();
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "no write progress within send_timeout"))
    }

    /// Run a write operation on the client's stream; one that waits is clocked by
    /// [`Self::poll_stalled`], one that completes ends the stall.
    pub(super) fn poll_send<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut Stream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Pending => self.poll_stalled(cx).map(Err),
            done => {
                self.wrote = true;
                if self.write_stalled {
                    self.write_stalled = false;
                    self.ticket.conn.write_stalled_since.store(0, Ordering::Relaxed);
                }
                done
            }
        }
    }
}

/// Poll the lazily made `timer` for `deadline` (moved there if it was set for another); ready
/// when it passed.
pub(super) fn poll_timer(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: tokio::time::Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let timer = match timer {
        Some(timer) => {
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            timer
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    timer.as_mut().poll(cx)
}

/// Copy from `unread` into `buf` what fits; `unread` is dropped once empty.
pub(super) fn take_unread(unread: &mut Option<BytesMut>, buf: &mut ReadBuf<'_>) {
    if let Some(bytes) = unread {
        let n = bytes.len().min(buf.remaining());
        buf.put_slice(&bytes.split_to(n));
        if bytes.is_empty() {
            *unread = None;
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.early_answer.is_some() {
            return this.poll_early_answer(cx, |_| GatewayError::Internal);
        }
        let conn = this.ticket.conn.clone();
        let phase = conn.phase();
        let before = buf.filled().len();
        let polled = match this.unread {
            // The next request's first bytes: kept for it (see `Phase::Done`).
            Some(_) if phase == Phase::Done => {
                conn.waker.register(cx.waker());
                return Poll::Pending;
            }
            Some(_) => {
                take_unread(&mut this.unread, buf);
                Poll::Ready(Ok(()))
            }
            None => Pin::new(&mut this.inner).poll_read(cx, buf),
        };
        match polled {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                match phase {
                    Phase::Idle if read > 0 => conn.enter(Phase::Head),
                    Phase::Head if this.head_read_on.is_some() => return this.poll_head_read_on(cx, read),
                    Phase::Done if read > 0 => {
                        // A pipelined request arriving while this one is answered: Pingora
                        // would take it for bytes after the end of this request and fail it.
                        this.unread = Some(BytesMut::from(&buf.filled()[before..]));
                        buf.set_filled(before);
                        conn.waker.register(cx.waker());
                        return Poll::Pending;
                    }
                    _ => {}
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match phase {
                // Closed to make room at the bound (bytes that already arrived were served):
                // the end of the stream ends the connection.
                Phase::Idle | Phase::Head if conn.evicted(cx) => Poll::Ready(Ok(())),
                Phase::Idle => Poll::Pending,
                Phase::Head => {
                    ready!(this.poll_deadline(cx, phase));
                    this.poll_header_timeout(cx)
                }
                Phase::Body => {
                    ready!(this.poll_deadline(cx, phase));
                    this.ticket.connections.metrics.body_timeouts.inc();
                    conn.body_timed_out.store(true, Ordering::Relaxed);
                    conn.enter(Phase::Done);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request body not received within body_timeout",
                    )))
                }
                Phase::Done | Phase::Untimed => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_send(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send(cx, |inner, cx| inner.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait::async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        // Through `poll_shutdown`: flushing to a client that does not read meets send_timeout.
        if let Err(e) = tokio::io::AsyncWriteExt::shutdown(self).await {
            log::debug!("client connection shutdown: {e}");
        }
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guarded {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait::async_trait]
impl Peek for Guarded {
    /// Pingora's look for the h2c preface: from the bytes put back, read on as needed.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        use tokio::io::AsyncReadExt;
        let mut unread = self.unread.take().unwrap_or_default();
        let peeked = loop {
            if unread.len() >= buf.len() {
                buf.copy_from_slice(&unread[..buf.len()]);
                break Ok(true);
            }
            match self.inner.read_buf(&mut unread).await {
                Ok(0) => break Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        self.unread(unread);
        peeked
    }
}

/// The client's address block for the per-IP bound, from the stream's socket.
pub(crate) fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    match digest.peer_addr()? {
        SocketAddr::Inet(addr) => Some(addr.ip()),
        _ => None,
    }
}
