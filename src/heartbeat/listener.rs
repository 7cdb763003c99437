//! The accept loop and each connection's task.
//!
//! The loop never spins and never dies: on `EMFILE`/`ENFILE` it backs off
//! (up to a second), counts, and keeps the sessions it has; beyond
//! `max_sessions` a new connection is closed at once and counted. A
//! connection must identify itself within `first_message_timeout`; its
//! first byte picks the protocol.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{Instant, sleep_until, timeout_at};

use super::compat::CompatSession;
use super::conn::{Conn, Ended, Flow};
use super::metrics::HbMetrics;
use super::native::NativeSession;
use super::proto::MAGIC;
use super::session::{Protocol, Session};
use super::{Hub, OpenGuard};
use crate::registry::DisconnectReason;

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
    let mut backoff = Duration::from_millis(5);
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(5);
                x
            }
            Err(e) => {
                let kind = match e.raw_os_error() {
                    Some(libc_emfile) if libc_emfile == 24 => "emfile",
                    Some(23) => "enfile",
                    Some(12) | Some(105) => "enomem",
                    _ => "other",
                };
                HbMetrics::accept_error(kind);
                if kind == "other" {
                    // Aborted handshakes and the like: the next accept is fine.
                    continue;
                }
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, open = hub.open_connections(), "out of file descriptors: accept paused, existing sessions keep going");
                    last_warning = Some(Instant::now());
                }
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Some(guard) = hub.admit() else {
            HbMetrics::rejected("max_sessions");
            let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(stream);
            continue;
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

async fn serve(hub: Hub, stream: TcpStream, peer: SocketAddr, _guard: OpenGuard) {
    let deadline = Instant::now() + hub.settings().first_message_timeout;
    let sniffed = match timeout_at(deadline, sniff(&stream)).await {
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
            let session = hub.new_session(peer, Protocol::Compat);
            let reason = run_compat(&hub, Conn::new(stream), &session, deadline).await;
            hub.finish(&session, reason);
        }
        Sniffed::Native => {
            if !settings.native {
                HbMetrics::rejected("native_refused");
                return;
            }
            let mut stream = stream;
            let mut magic = [0u8; 4];
            if tokio::io::AsyncReadExt::read_exact(&mut stream, &mut magic)
                .await
                .is_err()
            {
                return;
            }
            let session = hub.new_session(peer, Protocol::Native);
            let reason = run_native(&hub, Conn::new(stream), &session, deadline).await;
            hub.finish(&session, reason);
        }
        Sniffed::Unknown => HbMetrics::rejected("unknown_protocol"),
    }
}

fn ended(e: Ended) -> DisconnectReason {
    if e == Ended::TooLong {
        HbMetrics::rejected("too_long");
    }
    e.reason()
}

async fn run_compat(
    hub: &Hub,
    mut conn: Conn,
    session: &Arc<Session>,
    deadline: Instant,
) -> DisconnectReason {
    let mut cs = CompatSession::new(hub.clone(), session.clone());
    let max_line = hub.settings().max_line;
    // Until it identifies itself, a connection lives on the first-message deadline.
    while !cs.identified() {
        tokio::select! {
            biased;
            _ = hub.shutdown_signal().wait() => return DisconnectReason::Shutdown,
            _ = sleep_until(deadline) => {
                HbMetrics::rejected("first_message_timeout");
                return DisconnectReason::ProtocolError;
            }
            r = conn.ready() => {
                if r.is_err() { return DisconnectReason::Reset; }
                match cs.on_readable(&mut conn, max_line) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Close(reason)) => return reason,
                    Err(e) => return ended(e),
                }
            }
        }
    }
    loop {
        if let Some(reason) = session.closing() {
            return reason;
        }
        let due = cs.command_due(&conn);
        tokio::select! {
            biased;
            _ = session.wake.notified() => {}
            _ = async { match due { Some(t) => sleep_until(t.into()).await, None => std::future::pending().await } } => {
                if let Err(e) = cs.send_due_command(&mut conn) {
                    return ended(e);
                }
            }
            r = conn.ready() => {
                if r.is_err() { return DisconnectReason::Reset; }
                match cs.on_readable(&mut conn, max_line) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Close(reason)) => return reason,
                    Err(e) => return ended(e),
                }
            }
        }
    }
}

async fn run_native(
    hub: &Hub,
    mut conn: Conn,
    session: &Arc<Session>,
    deadline: Instant,
) -> DisconnectReason {
    let mut ns = NativeSession::new(hub.clone(), session.clone());
    let max_frame = hub.settings().max_frame;
    let reason = loop {
        if ns.authenticated() {
            if let Some(reason) = session.closing() {
                ns.goodbye(&mut conn, reason);
                break reason;
            }
            if let Err(e) = ns.send_commands(&mut conn) {
                break ended(e);
            }
        }
        if let Some(need) = ns.need_credential.as_ref() {
            let store = hub.registry().store().clone();
            let (tenant, ip, port) = (need.tenant.to_string(), need.key.ip, need.key.port);
            let lookup = tokio::task::spawn_blocking(move || store.credential(&tenant, ip, port));
            let credential = match timeout_at(deadline, lookup).await {
                Ok(Ok(Ok(c))) => c,
                Ok(Ok(Err(e))) => {
                    tracing::error!(error = %e, "cannot read a credential for a native handshake");
                    None
                }
                _ => break DisconnectReason::ProtocolError,
            };
            match ns.challenge(&mut conn, credential) {
                Ok(Flow::Continue) => continue,
                Ok(Flow::Close(reason)) => break reason,
                Err(e) => break ended(e),
            }
        }
        let authenticated = ns.authenticated();
        tokio::select! {
            biased;
            _ = hub.shutdown_signal().wait(), if !authenticated => break DisconnectReason::Shutdown,
            _ = sleep_until(deadline), if !authenticated => {
                HbMetrics::rejected("first_message_timeout");
                break DisconnectReason::ProtocolError;
            }
            _ = session.wake.notified(), if authenticated => {}
            r = conn.ready() => {
                if r.is_err() { break DisconnectReason::Reset; }
                match ns.on_readable(&mut conn, max_frame) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Close(reason)) => break reason,
                    Err(e) => break ended(e),
                }
            }
        }
    };
    ns.fail_awaiting();
    let _ = conn.flush();
    reason
}
