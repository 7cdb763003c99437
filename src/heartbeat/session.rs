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
use crate::model::{DisconnectReason, Sym, TagentId};

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

/// What a session tells the caller of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
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
    pub reply: Option<oneshot::Sender<Delivery>>,
}

/// Mutable per-session state, behind a lock that is never held across `.await`.
///
/// Kept small: it is in every idle session (see `Session`'s size test).
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
    pub heartbeats: u64,
    /// What the tagent last reported about itself.
    pub reported: Reported,
    pub commands: Commands,
    /// Set when the session must end; the task reads it when notified.
    pub close: Option<DisconnectReason>,
    /// A reload for an unregistered session is queued or sent.
    pub reload_queued: bool,
}

/// The last `pcpu`, `mem`, `version` and `ip` string a tagent reported:
/// the two strings share one allocation, and a missing number is NaN.
pub struct Reported {
    pcpu: f32,
    mem: f32,
    /// `version` then `ip_string`.
    text: Option<Box<str>>,
    /// Where `version` ends in `text`; `NONE` for no version.
    version_end: u32,
    has_ip_string: bool,
}

impl Default for Reported {
    fn default() -> Self {
        Reported {
            pcpu: f32::NAN,
            mem: f32::NAN,
            text: None,
            version_end: Self::NONE,
            has_ip_string: false,
        }
    }
}

impl Reported {
    const NONE: u32 = u32::MAX;

    /// Keep what a heartbeat reported; what it left out stays as it was.
    pub fn update(
        &mut self,
        pcpu: Option<f32>,
        mem: Option<f32>,
        version: Option<&str>,
        ip_string: Option<&str>,
    ) {
        if let Some(p) = pcpu {
            self.pcpu = p;
        }
        if let Some(m) = mem {
            self.mem = m;
        }
        let version = version.or(self.version());
        let ip_string = ip_string.or(self.ip_string());
        if version == self.version() && ip_string == self.ip_string() {
            return;
        }
        let (v, ips) = (version.unwrap_or(""), ip_string.unwrap_or(""));
        // A line or frame is far below 4 GiB; a longer version is cut off
        // at a character boundary rather than trusted to fit.
        let mut cut = v.len().min(Self::NONE as usize - 1);
        while !v.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut text = String::with_capacity(cut + ips.len());
        text.push_str(&v[..cut]);
        text.push_str(ips);
        let (has_version, has_ip_string) = (version.is_some(), ip_string.is_some());
        self.text = Some(text.into_boxed_str());
        self.version_end = if has_version { cut as u32 } else { Self::NONE };
        self.has_ip_string = has_ip_string;
    }

    pub fn pcpu(&self) -> Option<f32> {
        (!self.pcpu.is_nan()).then_some(self.pcpu)
    }

    pub fn mem(&self) -> Option<f32> {
        (!self.mem.is_nan()).then_some(self.mem)
    }

    pub fn version(&self) -> Option<&str> {
        let text = self.text.as_deref()?;
        (self.version_end != Self::NONE).then(|| &text[..self.version_end as usize])
    }

    pub fn ip_string(&self) -> Option<&str> {
        let text = self.text.as_deref()?;
        let start = if self.version_end == Self::NONE {
            0
        } else {
            self.version_end as usize
        };
        self.has_ip_string.then(|| &text[start..])
    }
}

/// Commands waiting to go out: one pointer while there are none.
#[derive(Default)]
#[allow(
    clippy::box_collection,
    reason = "the box is the point: 8 bytes in every idle session, not a VecDeque's 32"
)]
pub struct Commands(Option<Box<VecDeque<PendingCommand>>>);

impl Commands {
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    pub fn push_back(&mut self, c: PendingCommand) {
        self.0.get_or_insert_default().push_back(c);
    }

    pub fn pop_front(&mut self) -> Option<PendingCommand> {
        let q = self.0.as_mut()?;
        let c = q.pop_front();
        if q.is_empty() {
            self.0 = None;
        }
        c
    }

    pub fn retain(&mut self, keep: impl FnMut(&PendingCommand) -> bool) {
        if let Some(q) = self.0.as_mut() {
            q.retain(keep);
            if q.is_empty() {
                self.0 = None;
            }
        }
    }

    pub fn take(&mut self) -> VecDeque<PendingCommand> {
        self.0.take().map(|q| *q).unwrap_or_default()
    }
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
    pub fn push_command(&self, kind: CommandKind, reply: Option<oneshot::Sender<Delivery>>) {
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
        let commands = self.state.lock().commands.take();
        for c in commands {
            if let Some(reply) = c.reply {
                let _ = reply.send(Delivery::SessionClosed);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle session is mostly this struct: keep it within jemalloc's
    /// 320-byte size class (with the `Arc`'s two counters).
    #[test]
    fn a_session_fits_its_size_class() {
        let size = std::mem::size_of::<Session>() + 16;
        assert!(
            size <= 320,
            "Session and its Arc counters take {size} bytes"
        );
    }

    #[test]
    fn reported_facts_keep_what_a_heartbeat_left_out() {
        let mut r = Reported::default();
        assert_eq!(
            (r.pcpu(), r.mem(), r.version(), r.ip_string()),
            (None, None, None, None)
        );
        r.update(Some(1.5), None, None, Some("10.0.0.1,10.0.0.2"));
        assert_eq!(r.pcpu(), Some(1.5));
        assert_eq!(r.mem(), None);
        assert_eq!(r.version(), None);
        assert_eq!(r.ip_string(), Some("10.0.0.1,10.0.0.2"));
        r.update(None, Some(20.0), Some("7.1.0-é"), None);
        assert_eq!(r.pcpu(), Some(1.5));
        assert_eq!(r.mem(), Some(20.0));
        assert_eq!(r.version(), Some("7.1.0-é"));
        assert_eq!(r.ip_string(), Some("10.0.0.1,10.0.0.2"));
        r.update(None, None, Some(""), Some(""));
        assert_eq!(r.version(), Some(""));
        assert_eq!(r.ip_string(), Some(""));
        r.update(Some(f32::NAN), None, Some("8"), None);
        assert_eq!(r.pcpu(), None);
        assert_eq!(r.version(), Some("8"));
        assert_eq!(r.ip_string(), Some(""));
    }

    #[test]
    fn the_command_queue_frees_itself_when_empty() {
        let mut q = Commands::default();
        assert!(q.is_empty());
        for kind in [CommandKind::Reload, CommandKind::Resetcred] {
            q.push_back(PendingCommand { kind, reply: None });
        }
        q.retain(|c| c.kind != CommandKind::Reload);
        assert_eq!(q.pop_front().map(|c| c.kind), Some(CommandKind::Resetcred));
        assert!(q.0.is_none());
        assert!(q.pop_front().is_none());
    }
}
