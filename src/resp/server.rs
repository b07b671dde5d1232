//! The router's RESP listener: accepts connections, frames requests, runs
//! them through a [`Session`] in order and writes the replies back.
//!
//! Pipelining falls out of the loop: every complete request already in the
//! read buffer is executed before the replies are flushed in one write.
//! Limits are enforced here: the client count, and (through
//! [`frame::parse_request`]) bulk length, argument count and inline length;
//! a reply buffer past `max_output` closes the connection.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::frame::{self, Limits};
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
    let Some(id) = shared.clients.register(peer, shared.config.max_clients) else {
        let mut out = BytesMut::new();
        Reply::error("ERR max number of clients reached").encode(Default::default(), &mut out);
        socket.write_all(&out).await?;
        return Ok(());
    };
    let result = run(&mut socket, Session::new(shared.clone(), id), &shared).await;
    shared.clients.unregister(id);
    result
}

async fn run(socket: &mut TcpStream, mut session: Session, shared: &Shared) -> std::io::Result<()> {
    let limits = Limits {
        max_bulk_len: shared.config.max_bulk_len,
        max_args: shared.config.max_args,
        max_inline_len: shared.config.max_inline_len,
    };
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut wbuf = BytesMut::with_capacity(16 * 1024);
    loop {
        loop {
            match frame::parse_request(&mut rbuf, &limits) {
                Ok(Some(parts)) if parts.is_empty() => continue,
                Ok(Some(parts)) => {
                    let (reply, after) = session.handle(parts).await;
                    reply.encode(session.protocol, &mut wbuf);
                    if after == After::Close {
                        socket.write_all(&wbuf).await?;
                        return Ok(());
                    }
                    // Don't let one pipeline build an unbounded reply buffer.
                    if wbuf.len() >= 1024 * 1024 {
                        socket.write_all(&wbuf).await?;
                        wbuf.clear();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    Reply::error(format!("ERR {e}")).encode(session.protocol, &mut wbuf);
                    socket.write_all(&wbuf).await?;
                    return Ok(());
                }
            }
        }
        if !wbuf.is_empty() {
            socket.write_all(&wbuf).await?;
            wbuf.clear();
        }
        if socket.read_buf(&mut rbuf).await? == 0 {
            return Ok(());
        }
    }
}
