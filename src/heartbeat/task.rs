//! A session's task: one loop for both protocols, generic over the
//! [`Protocol`] (as rumqttd's `Network<P>`).
//!
//! The loop waits for the next thing to act on (a post, its timer, the
//! socket), lets the protocol act, and ends the session with the reason it
//! gives. An idle session leaves the loop parked (`parking.rs`) and comes
//! back through [`run`] when anything happens.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use tokio::time::{Instant, Sleep, sleep_until};

use super::conn::{self, Conn, Ended, Framing};
use super::hub::Hub;
use super::metrics::HbMetrics;
use super::parking::{Idle, Parked, try_park};
use super::session::{ProtocolKind, Session};
use crate::model::DisconnectReason;

/// What a protocol's handler wants next: go on, or close with a reason.
pub type Flow = conn::Flow<DisconnectReason>;

/// What the session loop asks of a protocol's half (the per-connection state
/// only its task touches).
pub(crate) trait Protocol: Sized + Send + 'static {
    /// The hub (a handle that counts the connection open while the half
    /// lives) and the session this half serves.
    fn link(&self) -> (&Hub, &Arc<Session>);

    fn hub(&self) -> &Hub {
        self.link().0
    }

    fn session(&self) -> &Arc<Session> {
        self.link().1
    }

    /// Which protocol this is (its framing and its metrics follow).
    const KIND: ProtocolKind;

    /// Past its handshake: identified (compat) or authenticated (native).
    /// Until then a session lives on its first-message deadline.
    fn established(&self) -> bool;

    /// An established session's turn before it waits: write what may go
    /// out now. Returns when its timer must wake it (a queued command's
    /// quiet moment), if ever.
    fn before_wait(&mut self, conn: &mut Conn) -> Result<Option<std::time::Instant>, Ended>;

    /// Handshake work that waits off the I/O path (native: the credential
    /// read), bounded by the first-message `deadline`. `None` when there is none.
    fn handshake(
        &mut self,
        conn: &mut Conn,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Option<Result<Flow, Ended>>> + Send;

    /// Read and answer what the socket has.
    fn on_readable(&mut self, conn: &mut Conn, framing: Framing) -> Result<Flow, Ended>;

    /// An established session's timer fired.
    fn on_timer(&mut self, conn: &mut Conn) -> Result<(), Ended>;

    /// Nothing is in flight that a parked session would lose track of.
    fn may_park(&self) -> bool;

    /// The session was asked to end with `reason`: tell the peer, if the
    /// protocol can.
    fn goodbye(&mut self, conn: &mut Conn, reason: DisconnectReason);

    /// The loop ended: settle what is in flight.
    fn on_end(&mut self, conn: &mut Conn);

    /// This protocol's variant of [`Parked`].
    fn parked(idle: Idle<Self>) -> Parked;
}

/// A running session's task state: its connection and its protocol half.
pub(crate) struct Task<P> {
    pub(super) conn: Conn,
    pub(super) half: P,
}

impl<P: Protocol> Task<P> {
    pub(super) fn new(conn: Conn, half: P) -> Self {
        Task { conn, half }
    }
}

/// The session's task. `deadline` is the first-message deadline of a new
/// connection (`None` when resumed from parking): one flat future.
pub(super) async fn run<P: Protocol>(mut t: Task<P>, deadline: Option<Instant>) {
    let session = t.half.session().clone();
    let hub = t.half.hub().clone();
    let framing = hub.settings().framing(P::KIND);
    // Until it identifies itself, a connection lives on the first-message deadline.
    let mut timer = deadline.map(|d| Box::pin(sleep_until(d)));
    let reason = loop {
        if t.half.established() {
            if let Some(reason) = session.closing() {
                t.half.goodbye(&mut t.conn, reason);
                break reason;
            }
            match t.half.before_wait(&mut t.conn) {
                Ok(at) => set_timer(&mut timer, at.map(Instant::from_std)),
                Err(e) => break ended(e),
            }
        } else {
            match t.half.handshake(&mut t.conn, deadline).await {
                None => {}
                Some(Ok(Flow::Continue)) => continue,
                Some(Ok(Flow::Close(reason))) => break reason,
                Some(Err(e)) => break ended(e),
            }
        }
        let wake = match next_wake(&t.conn, &session, &mut timer).await {
            Ok(w) => w,
            Err(_) => break DisconnectReason::Reset,
        };
        match wake {
            Wake::Posted => {
                if t.half.established()
                    && timer.is_none()
                    && t.half.may_park()
                    && session.take_park_request()
                {
                    match try_park(&session, t) {
                        Some(back) => t = back,
                        None => return,
                    }
                }
            }
            Wake::Timer if !t.half.established() => {
                HbMetrics::rejected("first_message_timeout");
                break DisconnectReason::ProtocolError;
            }
            Wake::Timer => {
                if let Err(e) = t.half.on_timer(&mut t.conn) {
                    break ended(e);
                }
            }
            Wake::Io => match t.half.on_readable(&mut t.conn, framing) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close(reason)) => break reason,
                Err(e) => break ended(e),
            },
        }
    };
    t.half.on_end(&mut t.conn);
    hub.finish(&session, reason);
}

/// The disconnect reason of a stream the byte layer ended.
fn ended(e: Ended) -> DisconnectReason {
    match e {
        Ended::Eof => DisconnectReason::Eof,
        Ended::Reset => DisconnectReason::Reset,
        Ended::TooLong => {
            HbMetrics::rejected("too_long");
            DisconnectReason::ProtocolError
        }
        Ended::Unread => {
            HbMetrics::rejected("unread_replies");
            DisconnectReason::ProtocolError
        }
    }
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
