//! One connection's shared state: what the session table, the sweeper, the
//! admin API and the connection's own task all see.
//!
//! The task owns the socket and its buffers; everything here is small, so an
//! idle session costs little more than this struct and its map entries.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Wake};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::listener::Parked;
use super::proto::CommandKind;
use crate::registry::{DisconnectReason, Sym, TagentId};

/// A session's identity: (tenant, ip, port), ip being `mgmtIp` or the peer's.
/// Tenants never registered share [`UNKNOWN_TENANT`], so a hostile peer cannot
/// grow the interner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub tenant: Sym,
    pub ip: IpAddr,
    pub port: u16,
}

pub const UNKNOWN_TENANT: Sym = Sym(u32::MAX);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Compat,
    Native,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Compat => "compat",
            Protocol::Native => "native",
        }
    }
}

/// What the caller of a command learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// Written to the session (compat), or acknowledged by the agent (native).
    Delivered,
    /// The agent answered the command with a failure (native only).
    Failed(String),
    /// The session closed before the command could go out.
    SessionClosed,
}

pub struct PendingCommand {
    pub kind: CommandKind,
    /// `None` for the hub's own reloads of unregistered sessions.
    pub reply: Option<oneshot::Sender<CommandOutcome>>,
}

/// Mutable per-session state, behind a lock that is never held across `.await`.
#[derive(Default)]
pub struct State {
    pub key: Option<SessionKey>,
    /// The registered tagent this session belongs to, as last resolved.
    pub tagent: Option<TagentId>,
    /// The registry generation `tagent` was resolved at.
    pub generation: u64,
    /// The `agentId` the last heartbeat named.
    pub agent_id: u64,
    /// The runner group of `tagent`.
    pub group: Option<u32>,
    pub pcpu: Option<f32>,
    pub mem: Option<f32>,
    pub version: Option<Box<str>>,
    pub ip_string: Option<Box<str>>,
    pub heartbeats: u64,
    pub commands: VecDeque<PendingCommand>,
    /// Set when the session must end; the task reads it when notified.
    pub close: Option<DisconnectReason>,
    /// A reload for an unregistered session is queued or sent.
    pub reload_queued: bool,
}

pub struct Session {
    pub peer: SocketAddr,
    pub protocol: Protocol,
    /// Unix milliseconds.
    pub connected_at: u64,
    /// Unix milliseconds of the last message received (idle sweep).
    pub last_seen: AtomicU64,
    pub state: Mutex<State>,
    /// Wakes the task for a command or a close. A bare waker and a flag cost
    /// 24 bytes here and nothing in the task, where a `Notified` future
    /// would cost 64 in every idle session.
    waker: AtomicWaker,
    woken: AtomicBool,
    /// An idle session has no task: its connection state is parked here (its
    /// socket in the hub's lot) and the session itself is the waker that
    /// spawns a task again (see [`Session::park`]). That saves the ~450
    /// bytes of a task and the 256 of tokio's registration per idle session.
    parking: Mutex<Parking>,
    /// Set by the idle sweep: park once nothing is pending.
    park_requested: AtomicBool,
}

#[derive(Default)]
struct Parking {
    slot: Option<Parked>,
    /// A wake came while nothing was parked: the next park attempt must not
    /// sleep through it.
    wake_pending: bool,
}

impl Session {
    pub fn new(peer: SocketAddr, protocol: Protocol, now: u64) -> Self {
        Session {
            peer,
            protocol,
            connected_at: now,
            last_seen: AtomicU64::new(now),
            state: Mutex::new(State::default()),
            waker: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            parking: Mutex::new(Parking::default()),
            park_requested: AtomicBool::new(false),
        }
    }

    /// Wake the task (or, if parked, give the session a task again).
    pub fn post(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

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

    /// Park `state`: the task that called this may end. The session (as a
    /// [`std::task::Waker`]) must already be registered for its posts, and
    /// its socket with the lot. Gives the state back when a wake came meanwhile.
    pub(crate) fn park(&self, state: Parked) -> Option<Parked> {
        let mut p = self.parking.lock();
        if std::mem::take(&mut p.wake_pending) {
            return Some(state);
        }
        p.slot = Some(state);
        None
    }

    /// From the task's poll: whether it was woken since the last call
    /// (registering for the next wake either way).
    pub fn poll_woken(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.woken.swap(false, Ordering::AcqRel)
    }

    /// Ask the task to end the session with `reason` (first reason wins).
    pub fn close(&self, reason: DisconnectReason) {
        self.state.lock().close.get_or_insert(reason);
        self.post();
    }

    pub fn closing(&self) -> Option<DisconnectReason> {
        self.state.lock().close
    }

    pub fn touch(&self, now: u64) {
        self.last_seen.store(now, Ordering::Relaxed);
    }

    /// Queue a command; the task sends it when the session allows.
    pub fn push_command(&self, kind: CommandKind, reply: Option<oneshot::Sender<CommandOutcome>>) {
        self.state
            .lock()
            .commands
            .push_back(PendingCommand { kind, reply });
        self.post();
    }

    /// Drop commands whose caller stopped waiting.
    pub fn withdraw_command(&self, kind: CommandKind) {
        self.state
            .lock()
            .commands
            .retain(|c| c.kind != kind || c.reply.as_ref().is_none_or(|r| !r.is_closed()));
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

    /// Fail every queued command: the session is gone.
    pub fn drain_commands(&self) {
        let commands = std::mem::take(&mut self.state.lock().commands);
        for c in commands {
            if let Some(reply) = c.reply {
                let _ = reply.send(CommandOutcome::SessionClosed);
            }
        }
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
