//! Parking: an idle session gives up its task.
//!
//! After a second of silence (`sweeper.rs` asks) a session with nothing
//! pending leaves its task: its connection state is parked in its
//! [`Session`], its socket leaves tokio's reactor (whose registration costs
//! 256 bytes) for the hub's lot (`lot.rs`: an `epoll` of its own), and the
//! `Session` itself becomes the waker of its posts (commands, close) and is
//! named by the lot's events. When anything happens it spawns a task again
//! ([`task::run`]). That saves the ~450 bytes of a task and the 256 of
//! tokio's registration per idle session.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Wake, Waker};

use super::compat::CompatSession;
use super::conn::{Conn, Held};
use super::hub::Hub;
use super::lot::{Lot, Watched};
use super::native::NativeSession;
use super::session::Session;
use super::task::{self, Protocol, Task};
use crate::model::DisconnectReason;

/// A parked session's task state: its socket in the lot, what its
/// connection held, and its protocol half.
pub(crate) struct Idle<P> {
    socket: Watched,
    held: Held,
    half: P,
}

/// A session's state between tasks, in its [`Session`].
pub(crate) enum Parked {
    Compat(Idle<CompatSession>),
    Native(Idle<NativeSession>),
}

/// A session's parking place.
#[derive(Default)]
pub(crate) struct Parking {
    slot: Option<Parked>,
    /// A wake came while nothing was parked: the next park attempt must not
    /// sleep through it.
    wake_pending: bool,
}

/// A session on its way back from the lot: its socket is in neither
/// reactor.
struct Leaving<P> {
    stream: std::net::TcpStream,
    held: Held,
    half: P,
}

impl<P: Protocol> Idle<P> {
    /// Take the socket back from the lot (from any thread). `session` is
    /// the one whose slot this was parked in.
    fn leave(self, lot: &Lot, session: &Arc<Session>) -> Leaving<P> {
        Leaving {
            stream: lot.forget(self.socket, session),
            held: self.held,
            half: self.half,
        }
    }

    /// Give the session a task again: its socket leaves the lot, and the
    /// task puts it back on tokio's reactor.
    fn resume(self, session: &Arc<Session>) {
        let hub = self.half.hub().clone();
        let leaving = self.leave(hub.lot(), session);
        hub.metrics().parked.decrement(1.0);
        let session = session.clone();
        hub.runtime().spawn(async move {
            match leaving.resume() {
                Ok(t) => task::run(t, None).await,
                Err(half) => half.hub().finish(&session, DisconnectReason::Reset),
            }
        });
    }
}

impl<P: Protocol> Leaving<P> {
    /// Put the socket back on tokio's reactor (from within the runtime). On
    /// failure the session is over (the socket is closed with its state)
    /// and the half is returned.
    fn resume(self) -> Result<Task<P>, P> {
        match Conn::resume(self.stream, self.held) {
            Ok(conn) => Ok(Task::new(conn, self.half)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot resume a parked session");
                Err(self.half)
            }
        }
    }
}

impl Parked {
    fn resume(self, session: &Arc<Session>) {
        match self {
            Parked::Compat(idle) => idle.resume(session),
            Parked::Native(idle) => idle.resume(session),
        }
    }
}

/// Park a session if nothing is pending: register the session as the waker
/// of its posts, hand its socket to the lot, then its state to the session.
/// `Some` gives the task back to keep running (something is pending, a wake
/// raced the parking, or the lot refused); `None` means the task must end:
/// the session is parked, or its socket was lost between the reactors and
/// the session is finished.
pub(super) fn try_park<P: Protocol>(session: &Arc<Session>, t: Task<P>) -> Option<Task<P>> {
    if t.conn.has_pending_output() || !session.state.lock().commands.is_empty() {
        return Some(t);
    }
    let waker = Waker::from(session.clone());
    if session.poll_woken(&mut Context::from_waker(&waker)) {
        return Some(t);
    }
    let hub = t.half.hub().clone();
    let lost = |hub: &Hub| {
        hub.finish(session, DisconnectReason::Reset);
        None
    };
    let Task { conn, half } = t;
    let Ok((stream, held)) = conn.park() else {
        return lost(&hub);
    };
    let socket = match hub.lot().watch(stream, session) {
        Ok(socket) => socket,
        Err((e, stream)) => {
            tracing::warn!(error = %e, "cannot park a session; it keeps its task");
            let back = Leaving { stream, held, half };
            return back.resume().ok().or_else(|| lost(&hub));
        }
    };
    let Some(back) = session.park(Idle { socket, held, half }) else {
        hub.metrics().parked.increment(1.0);
        return None;
    };
    back.leave(hub.lot(), session)
        .resume()
        .ok()
        .or_else(|| lost(&hub))
}

impl Session {
    /// Ask the session's task to park when it has nothing pending.
    pub fn request_park(&self) {
        if !self.park_requested.swap(true, Ordering::AcqRel) {
            self.post();
        }
    }

    pub fn take_park_request(&self) -> bool {
        self.park_requested.swap(false, Ordering::AcqRel)
    }

    pub fn is_parked(&self) -> bool {
        self.parking.lock().slot.is_some()
    }

    /// Park `idle`: the task that called this may end. The session (as a
    /// [`Waker`]) must already be registered for its posts, and its socket
    /// with the lot. Gives the state back when a wake came meanwhile.
    fn park<P: Protocol>(&self, idle: Idle<P>) -> Option<Idle<P>> {
        let mut p = self.parking.lock();
        if std::mem::take(&mut p.wake_pending) {
            return Some(idle);
        }
        p.slot = Some(P::parked(idle));
        None
    }

    /// The session's task, if it is parked.
    fn unpark(&self) -> Option<Parked> {
        let mut p = self.parking.lock();
        let slot = p.slot.take();
        if slot.is_none() {
            p.wake_pending = true;
        }
        slot
    }
}

/// A parked session is woken by its socket or by a post: spawn its task again.
impl Wake for Session {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(parked) = self.unpark() {
            parked.resume(self);
        }
    }
}
