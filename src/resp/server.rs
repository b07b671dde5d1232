//! The router's RESP listener: accepts connections, frames requests, runs
//! them through a [`Session`] in order and writes the replies back.
//!
//! Clients come plaintext ([`serve`]) or over TLS ([`serve_tls`], after the
//! handshake); the connection loop is the same for both.
//!
//! This module owns the sockets and the per-connection buffers, and with
//! them the limits that are about connections rather than commands:
//!
//! * the accept loop never ends: a failed accept (EMFILE when the process is
//!   out of file descriptors, ENFILE, ENOBUFS) is logged at most every few
//!   seconds and retried after a backoff of 10 ms doubling up to 1 s;
//! * the client count (`maxclients`);
//! * TCP keepalive on every accepted socket (`tcp-keepalive` seconds);
//! * a client idle longer than `timeout` seconds is closed (0: never);
//! * unparsed input over `client-query-buffer-limit` closes the connection;
//! * unread replies over `max_output_len` close it; each pipeline step gets
//!   what is left of that budget, so replies stop being produced once it is
//!   spent (see [`Session::handle_many`]).
//!
//! Request framing and its limits (bulk length, argument count, inline
//! length, Redis's caps before AUTH) belong to [`frame`](super::frame).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::FutureExt;
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::frame::{Limits, ProtocolError, RequestParser};
use super::pipeline::MAX_GROUP;
use super::reply::Reply;
use super::session::{After, Session, Shared};

/// Accept connections for ever; failed accepts are logged (rate-limited)
/// and retried after a growing pause.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) -> Infallible {
    accept_loop(&listener, &shared, |socket, peer, shared| {
        tokio::spawn(async move {
            if let Err(e) = connection(socket, peer.clone(), shared).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    })
    .await
}

/// [`serve`] for the TLS listener (`--tls-listen`): each connection is
/// served after its handshake, run in the connection's own task; a failed
/// handshake is one log line (`crate::tls::accept`).
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
) -> Infallible {
    let name = listener
        .local_addr()
        .map_or_else(|_| "the TLS port".to_string(), |a| format!("RESP TLS {a}"));
    accept_loop(&listener, &shared, |socket, peer, shared| {
        let (acceptor, name) = (acceptor.clone(), name.clone());
        tokio::spawn(async move {
            let Some(stream) = crate::tls::accept(&acceptor, socket, &peer, &name).await else {
                return;
            };
            if let Err(e) = connection(stream, peer.clone(), shared).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    })
    .await
}

/// Accept on `listener` for ever, configure each socket and hand it to
/// `each` with its peer address; failed accepts are logged (rate-limited)
/// and retried after a growing pause.
async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    each: impl Fn(TcpStream, String, Arc<Shared>),
) -> Infallible {
    let mut backoff = AcceptBackoff::default();
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff.succeeded();
                accepted
            }
            // The connection died in the backlog: nothing is wrong with us.
            Err(e) if is_connection_error(&e) => {
                tracing::debug!("accept: {e}");
                continue;
            }
            Err(e) => {
                let (delay, log) = backoff.failed(std::time::Instant::now());
                if let Some(suppressed) = log {
                    tracing::warn!(
                        retry_in_ms = delay.as_millis() as u64,
                        suppressed,
                        "accept failed: {e}; backing off (out of file descriptors? raise the open-file limit or lower maxclients)"
                    );
                }
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        configure(&socket, shared.limits.tcp_keepalive.load(Ordering::Relaxed));
        each(socket, peer.to_string(), shared.clone());
    }
}

/// A client connection, plaintext or TLS, as a read half and a write half
/// that the connection loop polls at once.
trait Halves: AsyncRead + AsyncWrite + Unpin {
    /// Whether written bytes may wait in a buffer until flushed (TLS
    /// records do; a TCP socket has nothing to flush).
    const BUFFERS: bool;
    type R<'a>: AsyncRead + Unpin
    where
        Self: 'a;
    type W<'a>: AsyncWrite + Unpin
    where
        Self: 'a;
    fn halves(&mut self) -> (Self::R<'_>, Self::W<'_>);
}

impl Halves for TcpStream {
    const BUFFERS: bool = false;
    type R<'a> = tokio::net::tcp::ReadHalf<'a>;
    type W<'a> = tokio::net::tcp::WriteHalf<'a>;
    fn halves(&mut self) -> (Self::R<'_>, Self::W<'_>) {
        self.split()
    }
}

impl Halves for TlsStream<TcpStream> {
    const BUFFERS: bool = true;
    type R<'a> = tokio::io::ReadHalf<&'a mut TlsStream<TcpStream>>;
    type W<'a> = tokio::io::WriteHalf<&'a mut TlsStream<TcpStream>>;
    fn halves(&mut self) -> (Self::R<'_>, Self::W<'_>) {
        tokio::io::split(self)
    }
}

/// Accept errors that concern one pending connection, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

/// Shortest and longest wait after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one accept-failure log line per this interval.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Backoff and log throttling for failed accepts. Pure bookkeeping: the
/// accept loop does the sleeping and the logging.
#[derive(Debug, Default)]
struct AcceptBackoff {
    /// The last wait (zero after a successful accept).
    delay: Duration,
    /// When a failure was last logged.
    logged_at: Option<std::time::Instant>,
    /// Failures not logged since then.
    suppressed: u64,
}

impl AcceptBackoff {
    fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// A failed accept at `now`: how long to wait, and `Some(n)` when it is
    /// to be logged (`n`: failures left unlogged before it).
    fn failed(&mut self, now: std::time::Instant) -> (Duration, Option<u64>) {
        self.delay = (self.delay * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        let log = match self.logged_at {
            Some(at) if now.duration_since(at) < LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.logged_at = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        };
        (self.delay, log)
    }
}

/// Socket options of an accepted client: no Nagle delay, and keepalive
/// probes after `keepalive_s` idle seconds (every third of that, three
/// times, as Redis does) so dead peers are noticed; 0 leaves keepalive off.
fn configure(socket: &TcpStream, keepalive_s: u64) {
    let _ = socket.set_nodelay(true);
    if keepalive_s == 0 {
        return;
    }
    let idle = Duration::from_secs(keepalive_s);
    let keepalive = TcpKeepalive::new().with_time(idle);
    #[cfg(target_os = "linux")]
    let keepalive = keepalive
        .with_interval((idle / 3).max(Duration::from_secs(1)))
        .with_retries(3);
    if let Err(e) = SockRef::from(socket).set_tcp_keepalive(&keepalive) {
        tracing::debug!("cannot set TCP keepalive: {e}");
    }
}

async fn connection(
    mut socket: impl Halves,
    peer: String,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let max_clients = shared.limits.max_clients.load(Ordering::Relaxed);
    let Some(id) = shared.clients.register(peer.clone(), max_clients) else {
        let mut out = BytesMut::new();
        Reply::error("ERR max number of clients reached").encode(Default::default(), &mut out);
        socket.write_all(&out).await?;
        socket.flush().await?;
        return Ok(());
    };
    let kill = shared.clients.kill_handle(id).unwrap_or_default();
    let result = run(
        &mut socket,
        Session::new(shared.clone(), id),
        &shared,
        &kill,
        &peer,
    )
    .await;
    shared.views.monitors.unsubscribe(id);
    shared.clients.unregister(id);
    result
}

/// Initial size of the read and write buffers.
const BUF_START: usize = 16 * 1024;
/// Buffers bigger than this are reallocated once drained.
const SHRINK_ABOVE: usize = 1024 * 1024;
/// Replies pending past this are written out (without waiting) between
/// pipeline steps, so a reading client gets them while the rest runs.
const FLUSH_AT: usize = 64 * 1024;

/// The framing limits for this client now.
fn frame_limits(shared: &Shared, authenticated: bool) -> Limits {
    Limits {
        max_bulk_len: shared.limits.max_bulk_len.load(Ordering::Relaxed),
        max_args: shared.config.max_args,
        max_inline_len: shared.config.max_inline_len,
        unauthenticated: !authenticated,
    }
}

/// The connection loop. Requests are executed in order as they complete in
/// the read buffer; replies collect in `wbuf`, which is written to the
/// socket *while* the loop keeps reading, so a client may pipeline freely.
///
/// What bounds memory: `rbuf` holds the unparsed rest of the input, at most
/// `client-query-buffer-limit` (plus one read); `pending` at most
/// [`MAX_GROUP`] parsed requests; `wbuf` the replies the client has not read
/// yet, at most `max_output_len` plus one reply, and the replies being
/// produced are kept within what is left of that (see
/// [`Session::handle_many`]). Past either limit the client is disconnected
/// (Redis's `client-query-buffer-limit` and `client-output-buffer-limit`).
async fn run<S: Halves>(
    socket: &mut S,
    mut session: Session,
    shared: &Shared,
    kill: &Notify,
    peer: &str,
) -> std::io::Result<()> {
    let max_output = shared.config.max_output_len;
    // CLIENT KILL (`notify_one`, which keeps a permit for a future not yet
    // waiting): one future for the whole connection, not one per request
    // in each `select!` (registering and dropping a waiter takes the
    // Notify's lock each time).
    let killed = kill.notified();
    tokio::pin!(killed);
    // After MONITOR: the lines of the commands the router receives.
    let mut feed: Option<super::monitor::Feed> = None;
    // After SUBSCRIBE: the messages of the connection's subscriptions.
    let mut inbox: Option<super::pubsub::Inbox> = None;
    let mut rbuf = BytesMut::with_capacity(BUF_START);
    let mut wbuf = BytesMut::with_capacity(BUF_START);
    let mut parser = RequestParser::default();
    let mut pending: VecDeque<Vec<Bytes>> = VecDeque::new();
    let mut broken: Option<ProtocolError> = None;
    let mut timeout = shared.limits.timeout.subscribe();
    let mut timeout_live = true;
    let mut last_active = Instant::now();
    let (mut rd, mut wr) = socket.halves();
    // Written but maybe still in the stream's buffer (TLS only).
    let mut unflushed = false;
    loop {
        // Execute every complete request in the buffer, MAX_GROUP at a time
        // (see `pipeline.rs`); a protocol error comes after the requests
        // before it have been answered.
        loop {
            // Before AUTH one request at a time: its outcome decides the
            // limits of the next one.
            while broken.is_none()
                && pending.len() < MAX_GROUP
                && (session.authenticated || pending.is_empty())
            {
                let limits = frame_limits(shared, session.authenticated);
                match parser.parse(&mut rbuf, &limits) {
                    Ok(Some(parts)) if parts.is_empty() => {}
                    Ok(Some(parts)) => {
                        let monitors = &shared.views.monitors;
                        if monitors.active() {
                            if let Some(line) =
                                super::cmd_views::monitor_line(session.db, peer, &parts)
                            {
                                monitors.feed(line, max_output);
                            }
                        }
                        pending.push_back(parts)
                    }
                    Ok(None) => break,
                    Err(e) => broken = Some(e),
                }
            }
            if pending.is_empty() {
                break;
            }
            let budget = max_output.saturating_sub(wbuf.len());
            // While commands run (a blocking one may wait for long), the
            // socket is still read: a client that goes away has its command
            // dropped (a blocked pop then pops nothing), and CLIENT KILL
            // still ends it. Bytes that arrive meanwhile wait in `rbuf`,
            // within the query buffer limit.
            let query_limit = shared.limits.query_buffer_limit.load(Ordering::Relaxed);
            // Only while a blocking command is among them: other commands
            // already read are answered even if the client half-closed.
            let watch = pending.iter().any(|p| {
                // Every blocking command's name starts with a B: most
                // requests are told apart without a lookup.
                p.first().is_some_and(|name| {
                    name.first().is_some_and(|c| c.eq_ignore_ascii_case(&b'b'))
                        && std::str::from_utf8(name)
                            .ok()
                            .and_then(|n| super::commands::lookup(&n.to_ascii_lowercase()))
                            .is_some_and(|spec| spec.has(super::spec::flag::BLOCKING))
                })
            });
            let replies = {
                let run = session.handle_many(&mut pending, budget);
                tokio::pin!(run);
                loop {
                    tokio::select! {
                        replies = &mut run => break replies,
                        r = rd.read_buf(&mut rbuf), if watch && rbuf.len() < query_limit => {
                            if r? == 0 {
                                return Ok(());
                            }
                        }
                        _ = &mut killed => return Ok(()),
                    }
                }
            };
            for (reply, after) in replies {
                reply.encode(session.protocol, &mut wbuf);
                if after == After::Close {
                    wr.write_all(&wbuf).await?;
                    wr.flush().await?;
                    return Ok(());
                }
                if wbuf.len() > max_output {
                    tracing::warn!(
                        client = session.id,
                        pending = wbuf.len(),
                        "closing client: output buffer over max_output_len (client not reading)"
                    );
                    return Ok(());
                }
            }
            // Executing counts as activity (a slow command is not idleness).
            last_active = Instant::now();
            if wbuf.len() >= FLUSH_AT {
                // As much as the socket takes now, without waiting.
                match wr.write(&wbuf).now_or_never() {
                    Some(Ok(n)) => wbuf.advance(n),
                    Some(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                    _ => {}
                }
            }
        }
        // A new inbox after RESET left the old subscriptions.
        if let Some(new) = session.subs.inbox.take() {
            inbox = Some(new);
        }
        if inbox
            .as_ref()
            .is_some_and(|i| i.dropped.load(Ordering::Relaxed))
        {
            wr.write_all(&wbuf).await?;
            return Ok(());
        }
        // MONITOR starts the feed, RESET ends it.
        if session.monitor && feed.is_none() {
            feed = Some(shared.views.monitors.subscribe(session.id));
        } else if !session.monitor && feed.is_some() {
            shared.views.monitors.unsubscribe(session.id);
            feed = None;
        }
        if let Some(e) = broken {
            Reply::error(format!("ERR {e}")).encode(session.protocol, &mut wbuf);
            wr.write_all(&wbuf).await?;
            wr.flush().await?;
            return Ok(());
        }
        let query_limit = shared.limits.query_buffer_limit.load(Ordering::Relaxed);
        if rbuf.len() > query_limit {
            tracing::warn!(
                client = session.id,
                unparsed = rbuf.len(),
                "closing client: query buffer over client-query-buffer-limit"
            );
            return Ok(());
        }
        let idle_secs = *timeout.borrow_and_update();
        let idle_deadline = (idle_secs > 0)
            .then(|| last_active.checked_add(Duration::from_secs(idle_secs)))
            .flatten();
        tokio::select! {
            // Write what is pending; once it is all written, flush: TLS
            // holds records until flushed (TCP has nothing to flush).
            // Done in the select, a client that does not read stays
            // killable and subject to the timeout.
            wrote = async {
                if wbuf.is_empty() {
                    wr.flush().await.map(|()| false)
                } else {
                    wr.write_buf(&mut wbuf).await.map(|_| true)
                }
            }, if !wbuf.is_empty() || unflushed => {
                if wrote? {
                    unflushed = S::BUFFERS;
                    last_active = Instant::now();
                } else {
                    unflushed = false;
                }
            }
            r = rd.read_buf(&mut rbuf) => {
                if r? == 0 {
                    return Ok(());
                }
                last_active = Instant::now();
            }
            _ = &mut killed => return Ok(()),
            // Monitor lines, taken while the replies pending are few, so a
            // monitor that does not read leaves them queued, where the feed
            // bounds them (see `monitor.rs`).
            line = async { feed.as_mut().expect("a feed").rx.recv().await },
                if feed.is_some() && wbuf.len() < FLUSH_AT =>
            {
                let Some(feed) = feed.as_mut() else { continue };
                let Some(mut line) = line else {
                    // Cut off: it fell too far behind.
                    return Ok(());
                };
                loop {
                    feed.taken(&line);
                    wbuf.extend_from_slice(&line);
                    if wbuf.len() >= FLUSH_AT {
                        break;
                    }
                    match feed.rx.try_recv() {
                        Ok(next) => line = next,
                        Err(_) => break,
                    }
                }
                last_active = Instant::now();
            }
            // Pub/Sub messages, taken while the replies pending are few (a
            // subscriber that does not read leaves them queued, where the
            // output buffer limit bounds them, see `pubsub.rs`).
            msg = async { inbox.as_mut().expect("an inbox").rx.recv().await },
                if inbox.is_some() && wbuf.len() < FLUSH_AT =>
            {
                let Some(ib) = inbox.as_mut() else { continue };
                let Some(mut msg) = msg else { continue };
                loop {
                    ib.taken(&msg);
                    msg.encode(session.protocol, &mut wbuf);
                    if wbuf.len() >= FLUSH_AT {
                        break;
                    }
                    match ib.rx.try_recv() {
                        Ok(next) => msg = next,
                        Err(_) => break,
                    }
                }
                if ib.dropped.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(idle_deadline.unwrap_or(last_active)),
                if idle_deadline.is_some() =>
            {
                tracing::debug!(client = session.id, "closing client idle for {idle_secs} s (timeout)");
                return Ok(());
            }
            // CONFIG SET timeout: recompute the deadline.
            r = timeout.changed(), if timeout_live => timeout_live = r.is_ok(),
        }
        // Give back what a burst of big replies or requests grew.
        if feed
            .as_ref()
            .is_some_and(|f| f.dropped.load(Ordering::Relaxed))
        {
            return Ok(());
        }
        if wbuf.is_empty() && wbuf.capacity() > SHRINK_ABOVE {
            wbuf = BytesMut::with_capacity(BUF_START);
        }
        if rbuf.is_empty() && rbuf.capacity() > SHRINK_ABOVE {
            rbuf = BytesMut::with_capacity(BUF_START);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_cap_and_resets() {
        let mut b = AcceptBackoff::default();
        let now = std::time::Instant::now();
        let delays: Vec<u64> = (0..10)
            .map(|_| b.failed(now).0.as_millis() as u64)
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(now).0, BACKOFF_MIN);
    }

    #[test]
    fn accept_failures_are_logged_at_most_every_interval() {
        let mut b = AcceptBackoff::default();
        let t0 = std::time::Instant::now();
        assert_eq!(b.failed(t0).1, Some(0));
        for i in 1..=5 {
            assert_eq!(b.failed(t0 + Duration::from_secs(i)).1, None);
        }
        // Ten seconds after the last logged one: logged, with the count.
        assert_eq!(b.failed(t0 + LOG_EVERY).1, Some(5));
        assert_eq!(b.failed(t0 + LOG_EVERY).1, None);
    }

    #[test]
    fn per_connection_accept_errors_are_not_backed_off() {
        assert!(is_connection_error(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        assert!(!is_connection_error(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!is_connection_error(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
    }
}
