//! The heartbeat port: bind, the accept loop, and protocol sniffing.
//!
//! The loop never spins and never dies: on `EMFILE`/`ENFILE` it backs off
//! (up to a second), counts, and keeps the sessions it has; beyond
//! `max_sessions` a new connection is closed at once and counted. A
//! connection must identify itself within `first_message_timeout`; its
//! first byte picks the protocol, and the session's task (`task.rs`) takes it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{Instant, timeout_at};

use super::compat::CompatSession;
use super::conn::Conn;
use super::hub::{Hub, OpenGuard};
use super::metrics::HbMetrics;
use super::native::NativeSession;
use super::proto::MAGIC;
use super::session::ProtocolKind;
use super::task::{self, Task};
use crate::net::AcceptBackoff;

/// Bind the heartbeat port with a deep backlog, so a whole estate
/// reconnecting at once after a restart waits in the kernel, not refused.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}

/// Accept until shutdown.
pub async fn run(hub: Hub, listener: TcpListener) {
    let shutdown = hub.shutdown_signal().clone();
    let mut backoff = AcceptBackoff::new("heartbeat");
    while let Some((stream, peer)) = backoff
        .accept(&listener, &shutdown, || hub.open_connections())
        .await
    {
        let guard = match hub.admit(peer.ip()) {
            Ok(guard) => guard,
            Err(bound) => {
                HbMetrics::rejected(bound);
                let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream);
                continue;
            }
        };
        configure(&stream);
        tokio::spawn(serve(hub.clone(), stream, peer, guard));
    }
    tracing::info!("heartbeat listener stopped");
}

fn configure(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let _ = SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

/// Which protocol the first bytes announce.
enum Sniffed {
    Compat,
    Native,
    Unknown,
}

async fn sniff(stream: &TcpStream) -> io::Result<Sniffed> {
    let mut head = [0u8; 4];
    loop {
        stream.readable().await?;
        let n = match stream.peek(&mut head).await {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if head[0] == b'{' || head[0].is_ascii_whitespace() {
            return Ok(Sniffed::Compat);
        }
        if head[..n] != MAGIC[..n] {
            return Ok(Sniffed::Unknown);
        }
        if n == MAGIC.len() {
            return Ok(Sniffed::Native);
        }
        // A prefix of the magic: wait for the rest (bounded by the deadline).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn serve(hub: Hub, stream: TcpStream, peer: SocketAddr, guard: OpenGuard) {
    let deadline = Instant::now() + hub.settings().first_message_timeout;
    // Boxed: the sniffing future is large and lives only until the first bytes.
    let sniffed = match Box::pin(timeout_at(deadline, sniff(&stream))).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return,
        Err(_) => {
            HbMetrics::rejected("first_message_timeout");
            return;
        }
    };
    let settings = hub.settings();
    match sniffed {
        Sniffed::Compat => {
            let ip = peer.ip().to_canonical();
            let allowed = settings.compat
                && (settings.compat_networks.is_empty()
                    || settings.compat_networks.iter().any(|n| n.contains(&ip)));
            if !allowed {
                HbMetrics::rejected("compat_refused");
                return;
            }
            // Replies are a few bytes and a real tagent reads each one before
            // its next line: a small kernel buffer bounds what a peer that
            // never reads can make the hub hold (see `conn.rs`).
            let _ = SockRef::from(&stream).set_send_buffer_size(settings.compat_max_unsent);
            // A task of its own, so the session carries nothing of the sniffing.
            let session = hub.new_session(peer, ProtocolKind::Compat);
            let task = Task::new(Conn::new(stream), CompatSession::new(guard, session));
            tokio::spawn(task::run(task, Some(deadline)));
        }
        Sniffed::Native => {
            if !settings.native {
                HbMetrics::rejected("native_refused");
                return;
            }
            let mut stream = stream;
            let mut magic = [0u8; 4];
            let read = Box::pin(tokio::io::AsyncReadExt::read_exact(&mut stream, &mut magic));
            if timeout_at(deadline, read)
                .await
                .map_or(true, |r| r.is_err())
            {
                return;
            }
            let session = hub.new_session(peer, ProtocolKind::Native);
            let task = Task::new(Conn::new(stream), NativeSession::new(guard, session));
            tokio::spawn(task::run(task, Some(deadline)));
        }
        Sniffed::Unknown => HbMetrics::rejected("unknown_protocol"),
    }
}
