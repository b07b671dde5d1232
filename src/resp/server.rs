//! The router's RESP listener: accepts connections, frames requests, runs
//! them through a [`Session`] in order and writes the replies back.
//!
//! Pipelining falls out of the loop: every complete request already in the
//! read buffer is executed, and replies are written while more requests are
//! read. Limits are enforced here: the client count, and (through
//! [`frame::parse_request`]) bulk length, argument count and inline length;
//! unread replies past `max_output_len` close the connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::frame::{self, Limits};
use super::pipeline::MAX_GROUP;
use super::reply::Reply;
use super::session::{After, Session, Shared};

/// Accept connections until the listener fails.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    loop {
        let (socket, peer) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(socket, peer.to_string(), shared).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

async fn connection(
    mut socket: TcpStream,
    peer: String,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    let max_clients = shared.limits.max_clients.load(Ordering::Relaxed);
    let Some(id) = shared.clients.register(peer, max_clients) else {
        let mut out = BytesMut::new();
        Reply::error("ERR max number of clients reached").encode(Default::default(), &mut out);
        socket.write_all(&out).await?;
        return Ok(());
    };
    let kill = shared.clients.kill_handle(id).unwrap_or_default();
    let result = run(
        &mut socket,
        Session::new(shared.clone(), id),
        &shared,
        &kill,
    )
    .await;
    shared.clients.unregister(id);
    result
}

/// The connection loop. Requests are executed in order as they complete in
/// the read buffer; replies collect in `wbuf`, which is written to the
/// socket *while* the loop keeps reading, so a client may pipeline freely.
/// What bounds memory: `rbuf` only ever holds one incomplete request (whose
/// size the framing limits cap), and `wbuf` holds the replies the client has
/// not read yet. A client that stops reading while it keeps sending makes
/// `wbuf` grow; past `max_output_len` it is disconnected (Redis's
/// `client-output-buffer-limit`).
/// Buffers bigger than this are reallocated once drained.
const SHRINK_ABOVE: usize = 1024 * 1024;

async fn run(
    socket: &mut TcpStream,
    mut session: Session,
    shared: &Shared,
    kill: &Notify,
) -> std::io::Result<()> {
    let max_output = shared.config.max_output_len;
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut wbuf = BytesMut::with_capacity(16 * 1024);
    let (mut rd, mut wr) = socket.split();
    loop {
        let limits = Limits {
            max_bulk_len: shared.limits.max_bulk_len.load(Ordering::Relaxed),
            max_args: shared.config.max_args,
            max_inline_len: shared.config.max_inline_len,
        };
        // Every complete request in the buffer is executed as one pipeline
        // (see `pipeline.rs`); a protocol error comes after the requests
        // before it have been answered.
        loop {
            let mut requests = Vec::new();
            let mut broken = None;
            while requests.len() < MAX_GROUP {
                match frame::parse_request(&mut rbuf, &limits) {
                    Ok(Some(parts)) if parts.is_empty() => continue,
                    Ok(Some(parts)) => requests.push(parts),
                    Ok(None) => break,
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                }
            }
            let more = requests.len() == MAX_GROUP;
            if !requests.is_empty() {
                for (reply, after) in session.handle_many(requests).await {
                    reply.encode(session.protocol, &mut wbuf);
                    if after == After::Close {
                        wr.write_all(&wbuf).await?;
                        return Ok(());
                    }
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
            if let Some(e) = broken {
                Reply::error(format!("ERR {e}")).encode(session.protocol, &mut wbuf);
                wr.write_all(&wbuf).await?;
                return Ok(());
            }
            if !more {
                break;
            }
        }
        tokio::select! {
            r = wr.write_buf(&mut wbuf), if !wbuf.is_empty() => {
                r?;
            }
            r = rd.read_buf(&mut rbuf) => {
                if r? == 0 {
                    return Ok(());
                }
            }
            _ = kill.notified() => return Ok(()),
        }
        // Give back what a burst of big replies or requests grew.
        if wbuf.is_empty() && wbuf.capacity() > SHRINK_ABOVE {
            wbuf = BytesMut::with_capacity(16 * 1024);
        }
        if rbuf.is_empty() && rbuf.capacity() > SHRINK_ABOVE {
            rbuf = BytesMut::with_capacity(16 * 1024);
        }
    }
}
