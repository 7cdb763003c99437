//! One connection's shared state: what the session table, the sweeper, the
//! admin API and the connection's own task all see.
//!
//! The task owns the socket and its buffers; everything here is small, so an
//! idle session costs little more than this struct and its map entries.
//! Its commands are in `commands.rs`, its parking in `parking.rs`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Context;

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

use super::commands::Commands;
use super::parking::Parking;
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

/// Which protocol a session speaks (its first byte told).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolKind {
    Compat,
    Native,
}

impl ProtocolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolKind::Compat => "compat",
            ProtocolKind::Native => "native",
        }
    }
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

    /// The longest `version` an unregistered session keeps.
    pub const UNREGISTERED_VERSION: usize = 64;
    /// The longest `ipString` an unregistered session keeps.
    pub const UNREGISTERED_IP_STRING: usize = 192;

    /// `version` cut to what an unregistered session keeps.
    pub fn clip_version(version: &str) -> &str {
        clip(version, Self::UNREGISTERED_VERSION)
    }

    /// `ipString` cut to what an unregistered session keeps, after its last
    /// whole ip.
    pub fn clip_ip_string(ips: &str) -> &str {
        if ips.len() <= Self::UNREGISTERED_IP_STRING {
            return ips;
        }
        let cut = clip(ips, Self::UNREGISTERED_IP_STRING + 1);
        cut.rfind(',').map_or("", |i| &cut[..i])
    }

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
        let v = clip(v, Self::NONE as usize - 1);
        let cut = v.len();
        let mut text = String::with_capacity(cut + ips.len());
        text.push_str(v);
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

/// `s` cut to at most `max` bytes, at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

pub struct Session {
    pub peer: SocketAddr,
    pub protocol: ProtocolKind,
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
    /// spawns a task again (see `parking.rs`). That saves the ~450
    /// bytes of a task and the 256 of tokio's registration per idle session.
    pub(super) parking: Mutex<Parking>,
    /// Set by the idle sweep: park once nothing is pending.
    pub(super) park_requested: AtomicBool,
}

impl Session {
    pub fn new(peer: SocketAddr, protocol: ProtocolKind, now: u64) -> Self {
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
    fn unregistered_facts_are_clipped_to_a_few_hundred_bytes() {
        assert_eq!(Reported::clip_version("1.5.4"), "1.5.4");
        let long = "é".repeat(100);
        let v = Reported::clip_version(&long);
        assert!(
            v.len() <= Reported::UNREGISTERED_VERSION && v.len() >= 62,
            "{v}"
        );
        let ips = "10.0.0.1,10.0.0.2";
        assert_eq!(Reported::clip_ip_string(ips), ips);
        let many: Vec<String> = (0..1000)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect();
        let joined = many.join(",");
        let clipped = Reported::clip_ip_string(&joined);
        assert!(clipped.len() <= Reported::UNREGISTERED_IP_STRING);
        assert!(clipped.len() > Reported::UNREGISTERED_IP_STRING - 12);
        // Whole ips only.
        assert!(clipped.split(',').all(|ip| many.iter().any(|m| m == ip)));
        assert_eq!(Reported::clip_ip_string(&"x".repeat(500)), "");
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
}
