//! Real tagents' JSON-line protocol (SPEC §3.1, §3.2).
//!
//! Every line gets exactly one reply line, at once. Commands go down only
//! into a quiet session: no partial line received, no reply pending, and the
//! last reply written at least `command_quiet` ago, because a real tagent
//! reads a line that arrives while it waits for a reply *as* that reply, and
//! its buffered reader strands a second line that arrives right behind one.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::commands::Delivery;
use super::conn::{Conn, Ended, Framing};
use super::hub::{Facts, Hub, OpenGuard};
use super::metrics::{HbMetrics, LATENCY_SAMPLE};
use super::parking::{Idle, Parked};
use super::proto::CommandKind;
use super::session::{ProtocolKind, Session};
use super::task::{Flow, Protocol};
use crate::model::DisconnectReason;
use crate::model::{parse_digits, parse_ip};

/// A heartbeat line. Fields the hub does not use (`appsInfo`, `status`, …)
/// are skipped without being built.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tenant: Option<Cow<'a, str>>,
    #[serde(rename = "agentId", default, deserialize_with = "loose_u64")]
    agent_id: Option<u64>,
    #[serde(default, deserialize_with = "loose_u64")]
    port: Option<u64>,
    #[serde(rename = "ipString", borrow, default)]
    ip_string: Option<Cow<'a, str>>,
    #[serde(rename = "proxyGroup", borrow, default)]
    proxy_group: Option<Cow<'a, str>>,
    #[serde(rename = "mgmtIp", borrow, default)]
    mgmt_ip: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "loose_f32")]
    pcpu: Option<f32>,
    #[serde(default, deserialize_with = "loose_f32")]
    mem: Option<f32>,
    #[serde(borrow, default)]
    version: Option<Cow<'a, str>>,
}

/// Only the type, to tell a bad monitor line from a line to ignore.
#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

/// A field tagents send as a number or as a string of one. Read by a
/// visitor straight from the parser: an untagged enum would buffer every
/// value and build an error for each variant that does not fit, which was
/// most of the CPU of a compat heartbeat.
enum Loose<'a> {
    U(u64),
    F(f64),
    S(Cow<'a, str>),
    /// A boolean, an array or an object (skipped).
    Other,
}

struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Option<Loose<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or a string")
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Some(Loose::U(n)))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Some(u64::try_from(n).map_or(Loose::F(n as f64), Loose::U)))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Self::Value, E> {
        Ok(Some(Loose::F(f)))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Loose::S(Cow::Borrowed(s))))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Some(Loose::S(Cow::Owned(s.to_owned()))))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Some(Loose::S(Cow::Owned(s))))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Some(Loose::Other))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Some(Loose::Other))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Some(Loose::Other))
    }
}

fn loose<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Loose<'de>>, D::Error> {
    d.deserialize_any(LooseVisitor)
}

/// A number, or a string of one (the tagent sends ids and ports either way).
fn loose_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    match loose(d)? {
        None => Ok(None),
        Some(Loose::U(n)) => Ok(Some(n)),
        Some(Loose::F(_)) => Err(D::Error::custom("expected an integer")),
        Some(Loose::S(s)) => parse_digits(&s)
            .map_err(|_| D::Error::custom("expected an integer or a string of digits")),
        Some(Loose::Other) => Err(D::Error::custom(
            "expected an integer or a string of digits",
        )),
    }
}

/// A number, or a string of one; anything else (even a number out of
/// range) counts as not given.
fn loose_f32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    Ok(match loose(d).ok().flatten() {
        Some(Loose::U(n)) => Some(n as f32),
        Some(Loose::F(f)) => Some(f as f32),
        Some(Loose::S(s)) => s.trim().parse().ok(),
        Some(Loose::Other) | None => None,
    })
}

/// What one JSON line says, decoded without touching any state (the
/// JSON-line decoder; `fuzz/` drives it with arbitrary bytes).
#[derive(Debug)]
pub enum Decoded<'a> {
    /// Not JSON, or not a heartbeat: answered OK and counted, not processed.
    Ignored,
    /// A heartbeat the hub cannot use: the message of its `ERROR:` reply.
    Refused(Cow<'static, str>),
    Heartbeat(HeartbeatLine<'a>),
}

/// A heartbeat line's fields, validated.
#[derive(Debug)]
pub struct HeartbeatLine<'a> {
    /// Not blank once trimmed.
    pub tenant: Cow<'a, str>,
    /// 1..=65535.
    pub port: u16,
    /// `mgmtIp`, when given; else the peer address counts.
    pub mgmt_ip: Option<IpAddr>,
    pub agent_id: u64,
    pub pcpu: Option<f32>,
    pub mem: Option<f32>,
    pub version: Option<Cow<'a, str>>,
    pub ip_string: Option<Cow<'a, str>>,
    pub proxy_group: Option<Cow<'a, str>>,
}

/// Decode one line (without its `\n`) as SPEC §3.1 reads it.
pub fn decode_line(line: &[u8]) -> Decoded<'_> {
    // One UTF-8 check of the whole line spares serde_json one per string;
    // a line that is not UTF-8 (allowed in the values the hub skips) is
    // read byte-wise as before.
    let read = match std::str::from_utf8(line) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(line),
    };
    let parsed: Line<'_> = match read {
        Ok(l) => l,
        Err(e) => {
            let monitor = serde_json::from_slice::<Kind<'_>>(line)
                .ok()
                .and_then(|k| k.kind)
                .is_some_and(|k| k == "monitor");
            if monitor {
                return Decoded::Refused(format!("malformed heartbeat: {e}").into());
            }
            return Decoded::Ignored;
        }
    };
    if parsed.kind.as_deref() != Some("monitor") {
        return Decoded::Ignored;
    }
    let Some(tenant) = parsed.tenant.filter(|t| !t.trim().is_empty()) else {
        return Decoded::Refused("Tenant is blank in the file 'tagent.conf' ".into());
    };
    let Some(port) = parsed
        .port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
    else {
        return Decoded::Refused("port is missing or not between 1 and 65535".into());
    };
    let mgmt_ip = match parsed
        .mgmt_ip
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(s) => match parse_ip(s) {
            Some(ip) => Some(ip),
            None => return Decoded::Refused("mgmtIp is not an ip address".into()),
        },
        None => None,
    };
    Decoded::Heartbeat(HeartbeatLine {
        tenant,
        port,
        mgmt_ip,
        agent_id: parsed.agent_id.unwrap_or(0),
        pcpu: parsed.pcpu,
        mem: parsed.mem,
        version: parsed.version,
        ip_string: parsed.ip_string,
        proxy_group: parsed.proxy_group,
    })
}

/// The reply to a heartbeat that needs nothing more.
pub const OK: &[u8] = b"{\"Status\":\"OK\"}\n";

/// `{"Status":"ERROR:<message>"}` and a newline, appended to `out`.
pub fn error_line(out: &mut Vec<u8>, message: &str) {
    out.extend_from_slice(b"{\"Status\":");
    let status = format!("ERROR:{message}");
    serde_json::to_writer(&mut *out, &status).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b"}\n");
}

/// The OK reply that tells the tagent its group's runner list changed
/// (public for the codec bench, `benches/codecs.rs`).
pub fn updategroup_line(out: &mut Vec<u8>, list: &str) {
    out.extend_from_slice(b"{\"type\":\"updategroup\",\"isNew\":\"1\",\"groupinfo\":");
    serde_json::to_writer(&mut *out, list).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b",\"Status\":\"OK\"}\n");
}

/// Whether to time this line: one in [`LATENCY_SAMPLE`] on each thread, so
/// the others read no clock and take no lock for it.
fn sample_latency() -> bool {
    thread_local! {
        static LINES: Cell<u64> = const { Cell::new(0) };
    }
    LINES.with(|n| {
        let lines = n.get().wrapping_add(1);
        n.set(lines);
        lines % LATENCY_SAMPLE == 1
    })
}

/// The per-connection half of a compat session: what only its task touches.
pub struct CompatSession {
    /// Counts the connection as open while the half lives.
    hub: OpenGuard,
    session: Arc<Session>,
    /// When the last reply line was written.
    last_reply: Instant,
    /// Whether the session has identified itself (its first heartbeat).
    identified: bool,
}

impl CompatSession {
    pub fn new(hub: OpenGuard, session: Arc<Session>) -> Self {
        CompatSession {
            hub,
            session,
            last_reply: Instant::now(),
            identified: false,
        }
    }

    /// Handle one line, appending exactly one reply line to `out`.
    fn on_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Flow {
        let started = sample_latency().then(Instant::now);
        let parsed = match decode_line(line) {
            Decoded::Heartbeat(h) => h,
            Decoded::Ignored => {
                self.hub.metrics().ignored_lines.increment(1);
                out.extend_from_slice(OK);
                return Flow::Continue;
            }
            Decoded::Refused(message) => {
                error_line(out, &message);
                return Flow::Continue;
            }
        };
        let (tenant, port) = (parsed.tenant.trim(), parsed.port);
        let ip = parsed
            .mgmt_ip
            .unwrap_or_else(|| self.session.peer.ip().to_canonical());
        let key = self.hub.key_for(tenant, ip, port);
        let facts = Facts {
            agent_id: parsed.agent_id,
            pcpu: parsed.pcpu,
            mem: parsed.mem,
            version: parsed.version.as_deref(),
            ip_string: parsed.ip_string.as_deref(),
        };
        let beat = match self.hub.heartbeat(&self.session, key, facts) {
            Ok(beat) => beat,
            Err(refused) => {
                error_line(out, refused.message());
                return Flow::Close(DisconnectReason::ProtocolError);
            }
        };
        self.identified = true;
        let metrics = self.hub.metrics();
        metrics.heartbeat(ProtocolKind::Compat);
        match beat.group {
            Some(group) => self.hub.group_list(group, |list| match list {
                Some(g) if parsed.proxy_group.as_deref() != Some(g.list.as_str()) => {
                    out.extend_from_slice(&g.updategroup)
                }
                _ => out.extend_from_slice(OK),
            }),
            None => out.extend_from_slice(OK),
        }
        if let Some(started) = started {
            metrics.latency.record(started.elapsed().as_secs_f64());
        }
        Flow::Continue
    }

    /// When the next queued command may go out, if one is queued.
    fn command_due(&self, conn: &Conn) -> Option<Instant> {
        if self.session.state.lock().commands.is_empty() {
            return None;
        }
        let due = self.last_reply + self.hub.settings().command_quiet;
        if conn.mid_unit() || conn.has_pending_output() {
            // A heartbeat is in flight: its reply comes first.
            return Some(due.max(Instant::now() + self.hub.settings().command_quiet));
        }
        Some(due)
    }

    /// Send the first queued command if the session is quiet now.
    fn send_due_command(&mut self, conn: &mut Conn) -> Result<(), Ended> {
        if conn.mid_unit() || conn.has_pending_output() {
            return Ok(());
        }
        if self.last_reply.elapsed() < self.hub.settings().command_quiet {
            return Ok(());
        }
        let Some(cmd) = self.session.state.lock().commands.pop_front() else {
            return Ok(());
        };
        // The hub's own reload is for unregistered sessions only: skip it if
        // the tagent registered meanwhile.
        if cmd.reply.is_none() && self.still_registered() {
            return Ok(());
        }
        let line: &[u8] = match cmd.kind {
            CommandKind::Reload => b"{\"type\":\"reload\"}\n",
            CommandKind::Resetcred => b"{\"type\":\"resetcred\"}\n",
        };
        let written = conn.write(line);
        self.last_reply = Instant::now();
        if cmd.reply.is_none() {
            HbMetrics::reload_sent();
        }
        if let Some(reply) = cmd.reply {
            let _ = reply.send(match written {
                Ok(()) => Delivery::Delivered,
                Err(_) => Delivery::SessionClosed,
            });
        }
        written
    }

    fn still_registered(&self) -> bool {
        let (key, agent_id) = {
            let st = self.session.state.lock();
            (st.key, st.agent_id)
        };
        key.is_some_and(|k| self.hub.resolve(&k, agent_id).is_some())
    }
}

impl Protocol for CompatSession {
    const KIND: ProtocolKind = ProtocolKind::Compat;

    fn link(&self) -> (&Hub, &Arc<Session>) {
        (&self.hub, &self.session)
    }

    fn established(&self) -> bool {
        self.identified
    }

    fn before_wait(&mut self, conn: &mut Conn) -> Result<Option<Instant>, Ended> {
        Ok(self.command_due(conn))
    }

    /// The compat protocol has no handshake: its first heartbeat identifies it.
    fn handshake(
        &mut self,
        _: &mut Conn,
        _: Option<tokio::time::Instant>,
    ) -> impl Future<Output = Option<Result<Flow, Ended>>> + Send {
        std::future::ready(None)
    }

    /// Answer every line the socket has.
    fn on_readable(&mut self, conn: &mut Conn, framing: Framing) -> Result<Flow, Ended> {
        let mut answered = false;
        let bound = Some(self.hub.settings().compat_max_unsent);
        let flow = conn.read_units(framing, bound, |line, out| {
            answered = true;
            self.on_line(line, out)
        });
        if answered {
            self.last_reply = Instant::now();
        }
        flow
    }

    fn on_timer(&mut self, conn: &mut Conn) -> Result<(), Ended> {
        self.send_due_command(conn)
    }

    fn may_park(&self) -> bool {
        true
    }

    /// A JSON line would be read as a reply: the tagent just sees the close.
    fn goodbye(&mut self, _: &mut Conn, _: DisconnectReason) {}

    fn on_end(&mut self, _: &mut Conn) {}

    fn parked(idle: Idle<Self>) -> Parked {
        Parked::Compat(idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(fields: &str) -> Decoded<'static> {
        let line = format!(r#"{{"type":"monitor","tenant":"t",{fields}}}"#);
        decode_line(Box::leak(line.into_bytes().into_boxed_slice()))
    }

    fn beat(fields: &str) -> Decoded<'static> {
        line(&format!(r#""port":3939,{fields}"#))
    }

    fn agent_id(fields: &str) -> Result<u64, String> {
        match beat(fields) {
            Decoded::Heartbeat(h) => Ok(h.agent_id),
            Decoded::Refused(m) => Err(m.into_owned()),
            Decoded::Ignored => Err("ignored".into()),
        }
    }

    fn pcpu(fields: &str) -> Option<f32> {
        match beat(fields) {
            Decoded::Heartbeat(h) => h.pcpu,
            _ => panic!("not a heartbeat: {fields}"),
        }
    }

    #[test]
    fn ids_and_ports_come_as_numbers_or_strings_of_digits() {
        assert_eq!(agent_id(r#""agentId":42"#), Ok(42));
        assert_eq!(agent_id(r#""agentId":"42""#), Ok(42));
        assert_eq!(agent_id(r#""agentId":" 42 ""#), Ok(42));
        assert_eq!(agent_id(r#""agentId":"4\u0032""#), Ok(42));
        assert_eq!(agent_id(r#""agentId":"""#), Ok(0));
        assert_eq!(agent_id(r#""agentId":null"#), Ok(0));
        assert_eq!(agent_id(r#""agentId":18446744073709551615"#), Ok(u64::MAX));
        for bad in ["-1", "1.5", "true", "[1]", r#"{"a":1}"#, r#""x1""#] {
            let refused = agent_id(&format!(r#""agentId":{bad}"#));
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|m| m.starts_with("malformed heartbeat")),
                "agentId {bad}: {refused:?}"
            );
        }
        let port = |v: &str| match line(&format!(r#""agentId":1,"port":{v}"#)) {
            Decoded::Heartbeat(h) => Some(h.port),
            _ => None,
        };
        assert_eq!(port("\"8080\""), Some(8080));
        assert_eq!(port("70000"), None);
    }

    #[test]
    fn cpu_and_memory_figures_are_kept_when_readable_and_dropped_otherwise() {
        assert_eq!(pcpu(r#""pcpu":12"#), Some(12.0));
        assert_eq!(pcpu(r#""pcpu":-2.5"#), Some(-2.5));
        assert_eq!(pcpu(r#""pcpu":"7.25""#), Some(7.25));
        for dropped in ["null", "true", r#""n/a""#, "[1,2]", r#"{"a":[1]}"#, "1e999"] {
            assert_eq!(
                pcpu(&format!(r#""pcpu":{dropped}"#)),
                None,
                "pcpu {dropped}"
            );
        }
        // A skipped value leaves the rest of the line readable.
        match beat(r#""pcpu":{"a":[1,{"b":2}]},"mem":3,"version":"v""#) {
            Decoded::Heartbeat(h) => {
                assert_eq!((h.mem, h.version.as_deref()), (Some(3.0), Some("v")))
            }
            _ => panic!("a heartbeat"),
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_in_a_skipped_value_do_not_spoil_the_line() {
        let line = b"{\"type\":\"monitor\",\"tenant\":\"t\",\"port\":1,\"appsInfo\":\"\xff\xfe\",\"agentId\":5}";
        match decode_line(line) {
            Decoded::Heartbeat(h) => assert_eq!((h.port, h.agent_id), (1, 5)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode_line(b"{\"type\":\"monitor\",\"tenant\":\"\xff\",\"port\":1}"),
            Decoded::Refused(_)
        ));
    }
}
