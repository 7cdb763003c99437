//! The accept loop and each connection's task.
//!
//! The loop never spins and never dies: on `EMFILE`/`ENFILE` it backs off
//! (up to a second), counts, and keeps the sessions it has; beyond
//! `max_sessions` a new connection is closed at once and counted. A
//! connection must identify itself within `first_message_timeout`; its
//! first byte picks the protocol.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::{Instant, Sleep, sleep_until, timeout_at};

use super::compat::CompatSession;
use super::conn::{Conn, Ended, Flow, ParkedConn};
use super::metrics::HbMetrics;
use super::native::NativeSession;
use super::proto::MAGIC;
use super::session::{Protocol, Session};
use super::{Hub, OpenGuard};
use crate::model::DisconnectReason;
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
            // A task of its own, so the session carries nothing of the sniffing.
            let session = hub.new_session(peer, Protocol::Compat);
            let task = CompatTask {
                conn: Conn::new(stream),
                s: CompatSession::new(guard, session),
            };
            tokio::spawn(run_compat(task, Some(deadline)));
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
            let session = hub.new_session(peer, Protocol::Native);
            let task = NativeTask {
                conn: Conn::new(stream),
                s: NativeSession::new(guard, session),
            };
            tokio::spawn(run_native(task, Some(deadline)));
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

/// What woke a session task.
enum Wake {
    /// A command or a close was posted to the session.
    Posted,
    /// The timer fired (first-message deadline, or a command's quiet moment).
    Timer,
    /// The socket is readable (or writable, with output pending).
    Io,
}

/// Wait for the next thing a session must act on. Written as one `poll_fn`
/// over the socket's readiness, the session's waker and an optional boxed
/// timer, so an idle session's task holds a few pointers instead of the
/// `readable()`, `Notified` and `Sleep` futures (~330 bytes) a `select!` keeps.
fn next_wake<'a>(
    conn: &'a Conn,
    session: &'a Session,
    timer: &'a mut Option<Pin<Box<Sleep>>>,
) -> impl Future<Output = io::Result<Wake>> + 'a {
    std::future::poll_fn(move |cx| {
        if session.poll_woken(cx) {
            return Poll::Ready(Ok(Wake::Posted));
        }
        if let Some(t) = timer.as_mut()
            && t.as_mut().poll(cx).is_ready()
        {
            *timer = None;
            return Poll::Ready(Ok(Wake::Timer));
        }
        let ready = if conn.has_pending_output() {
            conn.stream.poll_write_ready(cx)
        } else {
            conn.stream.poll_read_ready(cx)
        };
        ready.map(|r| r.map(|()| Wake::Io))
    })
}

/// Point `timer` at `at`, reusing its allocation; `None` drops it.
fn set_timer(timer: &mut Option<Pin<Box<Sleep>>>, at: Option<Instant>) {
    match (timer.as_mut(), at) {
        (Some(t), Some(at)) => {
            if t.deadline() != at {
                t.as_mut().reset(at);
            }
        }
        (None, Some(at)) => *timer = Some(Box::pin(sleep_until(at))),
        (_, None) => *timer = None,
    }
}

/// A connection's task state: its connection (`C`: [`Conn`] while running,
/// [`ParkedConn`] while parked) and its protocol half (`S`).
pub(crate) struct Task<S, C = Conn> {
    conn: C,
    s: S,
}

pub(crate) type CompatTask = Task<CompatSession>;
pub(crate) type NativeTask = Task<NativeSession>;

/// A session's state between tasks: an idle session has no task (its state
/// waits in [`Session`], which is itself the waker that brings it back) and
/// its socket waits in the hub's [`Lot`](super::lot::Lot).
pub(crate) enum Parked {
    Compat(Task<CompatSession, ParkedConn>),
    Native(Task<NativeSession, ParkedConn>),
}

/// What both protocol halves give the parking code.
pub(crate) trait Half: Sized + Send + 'static {
    fn hub(&self) -> &Hub;
    fn park(t: Task<Self, ParkedConn>) -> Parked;
    /// `None` if `parked` is the other protocol's (cannot happen).
    fn unpark(parked: Parked) -> Option<Task<Self, ParkedConn>>;
}

/// `Half` for a protocol's half, parked as the `Parked` variant named.
macro_rules! half {
    ($half:ty, $variant:ident) => {
        impl Half for $half {
            fn hub(&self) -> &Hub {
                <$half>::hub(self)
            }
            fn park(t: Task<Self, ParkedConn>) -> Parked {
                Parked::$variant(t)
            }
            fn unpark(parked: Parked) -> Option<Task<Self, ParkedConn>> {
                match parked {
                    Parked::$variant(t) => Some(t),
                    _ => None,
                }
            }
        }
    };
}

half!(CompatSession, Compat);
half!(NativeSession, Native);

impl<S: Half> Task<S, ParkedConn> {
    /// Put the socket back on tokio's reactor. On failure the session is
    /// over (the socket is closed with its state) and the half is returned.
    fn resume(self) -> Result<Task<S>, S> {
        match self.conn.resume() {
            Ok(conn) => Ok(Task { conn, s: self.s }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot resume a parked session");
                Err(self.s)
            }
        }
    }
}

impl Parked {
    /// Give the session a task again: its socket leaves the lot, and the
    /// task puts it back on tokio's reactor.
    pub(crate) fn resume(self, session: &Arc<Session>) {
        let hub = self.hub().clone();
        hub.lot().forget(self.fd(), session);
        hub.metrics().parked.decrement(1.0);
        let session = session.clone();
        match self {
            Parked::Compat(t) => {
                hub.runtime().spawn(async move {
                    match t.resume() {
                        Ok(t) => run_compat(t, None).await,
                        Err(s) => s.hub().finish(&session, DisconnectReason::Reset),
                    }
                });
            }
            Parked::Native(t) => {
                hub.runtime().spawn(async move {
                    match t.resume() {
                        Ok(t) => run_native(t, None).await,
                        Err(s) => s.hub().finish(&session, DisconnectReason::Reset),
                    }
                });
            }
        }
    }

    fn hub(&self) -> &Hub {
        match self {
            Parked::Compat(t) => t.s.hub(),
            Parked::Native(t) => t.s.hub(),
        }
    }

    fn fd(&self) -> std::os::fd::RawFd {
        match self {
            Parked::Compat(t) => t.conn.fd(),
            Parked::Native(t) => t.conn.fd(),
        }
    }
}

/// Park a session if nothing is pending: register the session as the waker
/// of its posts, hand its socket to the lot, then its state to the session.
/// `Some` gives the task back to keep running (something is pending, a wake
/// raced the parking, or the lot refused); `None` means the task must end:
/// the session is parked, or its socket was lost between the reactors and
/// the session is finished.
fn try_park<S: Half>(session: &Arc<Session>, t: Task<S>) -> Option<Task<S>> {
    if t.conn.has_pending_output() || !session.state.lock().commands.is_empty() {
        return Some(t);
    }
    let waker = Waker::from(session.clone());
    if session.poll_woken(&mut Context::from_waker(&waker)) {
        return Some(t);
    }
    let hub = t.s.hub().clone();
    let lost = |hub: &Hub| {
        hub.finish(session, DisconnectReason::Reset);
        None
    };
    let Ok(conn) = t.conn.park() else {
        return lost(&hub);
    };
    let parked = Task { conn, s: t.s };
    let fd = parked.conn.fd();
    if let Err(e) = hub.lot().watch(fd, session) {
        tracing::warn!(error = %e, "cannot park a session; it keeps its task");
        return parked.resume().ok().or_else(|| lost(&hub));
    }
    let Some(back) = session.park(S::park(parked)) else {
        hub.metrics().parked.increment(1.0);
        return None;
    };
    hub.lot().forget(fd, session);
    match S::unpark(back).map(Task::resume) {
        Some(Ok(t)) => Some(t),
        _ => lost(&hub),
    }
}

/// A compat session's task: one flat future. `deadline` is the
/// first-message deadline of a new connection (`None` when resumed).
async fn run_compat(mut t: CompatTask, deadline: Option<Instant>) {
    let session = t.s.session().clone();
    let hub = t.s.hub().clone();
    let max_line = hub.settings().max_line;
    // Until it identifies itself, a connection lives on the first-message deadline.
    let mut timer = deadline.map(|d| Box::pin(sleep_until(d)));
    let reason = loop {
        if t.s.identified() {
            if let Some(reason) = session.closing() {
                break reason;
            }
            set_timer(&mut timer, t.s.command_due(&t.conn).map(Instant::from_std));
        }
        let wake = match next_wake(&t.conn, &session, &mut timer).await {
            Ok(w) => w,
            Err(_) => break DisconnectReason::Reset,
        };
        match wake {
            Wake::Posted => {
                if t.s.identified() && timer.is_none() && session.take_park_request() {
                    match try_park(&session, t) {
                        Some(back) => t = back,
                        None => return,
                    }
                }
            }
            Wake::Timer if !t.s.identified() => {
                HbMetrics::rejected("first_message_timeout");
                break DisconnectReason::ProtocolError;
            }
            Wake::Timer => {
                if let Err(e) = t.s.send_due_command(&mut t.conn) {
                    break ended(e);
                }
            }
            Wake::Io => match t.s.on_readable(&mut t.conn, max_line) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close(reason)) => break reason,
                Err(e) => break ended(e),
            },
        }
    };
    hub.finish(&session, reason);
}

/// A native session's task, like [`run_compat`].
async fn run_native(mut t: NativeTask, deadline: Option<Instant>) {
    let session = t.s.session().clone();
    let hub = t.s.hub().clone();
    let max_frame = hub.settings().max_frame;
    let mut timer = deadline.map(|d| Box::pin(sleep_until(d)));
    let reason = loop {
        if t.s.authenticated() {
            timer = None;
            if let Some(reason) = session.closing() {
                t.s.goodbye(&mut t.conn, reason);
                break reason;
            }
            if let Err(e) = t.s.send_commands(&mut t.conn) {
                break ended(e);
            }
        }
        if t.s.need_credential.is_some() {
            let Some(deadline) = deadline else {
                break DisconnectReason::ProtocolError;
            };
            let credential = match Box::pin(fetch_credential(&hub, &t.s, deadline)).await {
                Some(c) => c,
                None => break DisconnectReason::ProtocolError,
            };
            match t.s.challenge(&mut t.conn, credential) {
                Ok(Flow::Continue) => continue,
                Ok(Flow::Close(reason)) => break reason,
                Err(e) => break ended(e),
            }
        }
        let wake = match next_wake(&t.conn, &session, &mut timer).await {
            Ok(w) => w,
            Err(_) => break DisconnectReason::Reset,
        };
        match wake {
            Wake::Posted => {
                if t.s.authenticated() && t.s.idle() && session.take_park_request() {
                    match try_park(&session, t) {
                        Some(back) => t = back,
                        None => return,
                    }
                }
            }
            Wake::Timer => {
                HbMetrics::rejected("first_message_timeout");
                break DisconnectReason::ProtocolError;
            }
            Wake::Io => match t.s.on_readable(&mut t.conn, max_frame) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close(reason)) => break reason,
                Err(e) => break ended(e),
            },
        }
    };
    t.s.fail_awaiting();
    let _ = t.conn.flush();
    hub.finish(&session, reason);
}

/// Read the credential for a native handshake from the hub's credential
/// reader. `None` when the deadline passed or the reader is gone
/// (shutdown); `Some(None)` when there is none.
async fn fetch_credential(
    hub: &Hub,
    ns: &NativeSession,
    deadline: Instant,
) -> Option<Option<String>> {
    let need = ns.need_credential.as_ref()?;
    let read = hub
        .credentials()
        .read(&need.tenant, need.key.ip, need.key.port);
    match timeout_at(deadline, read).await {
        Ok(Some(Ok(c))) => Some(c),
        Ok(Some(Err(e))) => {
            tracing::error!(error = %e, "cannot read a credential for a native handshake");
            Some(None)
        }
        Ok(None) | Err(_) => None,
    }
}
