//! The native framed protocol (SPEC §3.3): hello, challenge, proof, then
//! heartbeats and acks; commands with a request id and their results. Each
//! message has its handler (`on_hello`, `on_auth`, `on_heartbeat`,
//! `on_command_result`), which checks that the session's phase expects it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use super::commands::Delivery;
use super::conn::{Conn, Ended, Framing};
use super::hub::{Facts, Hub, OpenGuard};
use super::metrics::{HbMetrics, LATENCY_SAMPLE};
use super::parking::{Idle, Parked};
use super::proto::{self, ClientMsg, CommandKind, NONCE_LEN, PROTOCOL_VERSION, ServerMsg};
use super::session::{ProtocolKind, Session, SessionKey};
use super::task::{Flow, Protocol};
use crate::model::DisconnectReason;
use crate::model::parse_ip;

fn error_frame(out: &mut Vec<u8>, code: &str, message: &str) {
    proto::encode_frame(
        &ServerMsg::Error {
            code: code.into(),
            message: message.into(),
        },
        out,
    );
}

/// Where the handshake stands.
enum Phase {
    /// Waiting for `Hello`.
    Hello,
    /// Challenge sent; waiting for `Auth`. Boxed: only handshakes pay for it.
    Challenged(Box<Challenge>),
    /// Authenticated; the session's state holds its key and agent id.
    Live,
}

pub struct Challenge {
    key: SessionKey,
    tenant: Box<str>,
    agent_id: u64,
    nonce: [u8; NONCE_LEN],
    credential: String,
}

/// A `Hello`'s fields.
struct Hello<'a> {
    v: u8,
    tenant: Cow<'a, str>,
    agent_id: u64,
    ip: Option<Cow<'a, str>>,
    port: u16,
    version: Option<Cow<'a, str>>,
}

/// A credential lookup the task must do off the I/O path before continuing.
pub struct NeedCredential {
    pub tenant: Box<str>,
    pub key: SessionKey,
    pub agent_id: u64,
}

/// A command written down the session, waiting for its result.
type Awaiting = (u64, Option<tokio::sync::oneshot::Sender<Delivery>>);

pub struct NativeSession {
    /// Counts the connection as open while the half lives.
    hub: OpenGuard,
    session: Arc<Session>,
    phase: Phase,
    /// Commands written, waiting for their result, by request id.
    /// Boxed: most sessions never have a command in flight, and a parked
    /// session keeps one pointer here instead of a `Vec`'s three words.
    #[allow(
        clippy::box_collection,
        reason = "the box is the point: 8 bytes in every idle session"
    )]
    awaiting: Option<Box<Vec<Awaiting>>>,
    next_command: u64,
    /// Set by `Hello`; the task fetches the credential and calls [`NativeSession::challenge`].
    need_credential: Option<Box<NeedCredential>>,
}

impl NativeSession {
    pub fn new(hub: OpenGuard, session: Arc<Session>) -> Self {
        NativeSession {
            hub,
            session,
            phase: Phase::Hello,
            awaiting: None,
            next_command: 1,
            need_credential: None,
        }
    }

    fn authenticated(&self) -> bool {
        matches!(self.phase, Phase::Live)
    }

    /// Decode one frame and hand its message to the handler for it.
    fn on_frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Flow {
        let started = Instant::now();
        let msg = match proto::decode_client(frame) {
            Ok(m) => m,
            Err(e) => {
                HbMetrics::rejected("bad_message");
                error_frame(
                    out,
                    "bad-message",
                    &format!("cannot decode the message: {e}"),
                );
                return Flow::Close(DisconnectReason::ProtocolError);
            }
        };
        if self.need_credential.is_some() {
            // Nothing may come between hello and the challenge.
            HbMetrics::rejected("out_of_order");
            error_frame(out, "out-of-order", "wait for the challenge");
            return Flow::Close(DisconnectReason::ProtocolError);
        }
        match msg {
            ClientMsg::Hello {
                v,
                tenant,
                agent_id,
                ip,
                port,
                version,
            } => self.on_hello(
                Hello {
                    v,
                    tenant,
                    agent_id,
                    ip,
                    port,
                    version,
                },
                out,
            ),
            ClientMsg::Auth { proof } => self.on_auth(&proof, out),
            ClientMsg::Heartbeat { seq, pcpu, mem } => {
                self.on_heartbeat(seq, pcpu, mem, started, out)
            }
            ClientMsg::CommandResult { id, ok, message } => {
                self.on_command_result(id, ok, message, out)
            }
            ClientMsg::Bye => Flow::Close(DisconnectReason::Eof),
        }
    }

    /// `Hello`, first: check who this claims to be, then have the task read
    /// its credential (off the I/O path) for the challenge.
    fn on_hello(&mut self, hello: Hello<'_>, out: &mut Vec<u8>) -> Flow {
        if !matches!(self.phase, Phase::Hello) {
            return out_of_order(out);
        }
        let Hello {
            v,
            tenant,
            agent_id,
            ip,
            port,
            version,
        } = hello;
        if v != PROTOCOL_VERSION {
            error_frame(
                out,
                "version",
                &format!("protocol version {v} is not supported (use {PROTOCOL_VERSION})"),
            );
            return Flow::Close(DisconnectReason::ProtocolError);
        }
        let ip = match ip.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => match parse_ip(s) {
                Some(ip) => ip,
                None => {
                    error_frame(out, "bad-hello", "ip is not an ip address");
                    return Flow::Close(DisconnectReason::ProtocolError);
                }
            },
            None => self.session.peer.ip().to_canonical(),
        };
        if tenant.trim().is_empty() || port == 0 {
            error_frame(out, "bad-hello", "tenant and port are required");
            return Flow::Close(DisconnectReason::ProtocolError);
        }
        let peer = self.session.peer.ip();
        if !self.hub.inner.proofs.admits(peer) {
            return auth_failed(
                out,
                "throttled",
                "auth-throttled",
                "too many failed handshakes from this address: retry in a few seconds",
            );
        }
        if let Some(v) = version {
            let mut st = self.session.state.lock();
            st.reported.update(None, None, Some(&v), None);
        }
        let key = self.hub.key_for(&tenant, ip, port);
        if self.hub.resolve(&key, agent_id).is_none() {
            self.hub.inner.proofs.failed(peer);
            return auth_failed(
                out,
                "unknown_tagent",
                "unknown-tagent",
                "no tagent with this id is registered under this tenant, ip and port: register over HTTP first",
            );
        }
        self.need_credential = Some(Box::new(NeedCredential {
            tenant: tenant.as_ref().into(),
            key,
            agent_id,
        }));
        Flow::Continue
    }

    /// `Auth`, after the challenge: check the proof; the session is live.
    fn on_auth(&mut self, proof: &[u8], out: &mut Vec<u8>) -> Flow {
        let Phase::Challenged(c) = &self.phase else {
            return out_of_order(out);
        };
        let (key, agent_id) = (c.key, c.agent_id);
        let ok = proto::verify(
            c.credential.as_bytes(),
            &c.nonce,
            &c.tenant,
            agent_id,
            key.port,
            proof,
        );
        if !ok {
            self.hub.inner.proofs.failed(self.session.peer.ip());
            return auth_failed(
                out,
                "bad_proof",
                "auth-failed",
                "the proof does not match the credential given at registration",
            );
        }
        let facts = Facts {
            agent_id,
            ..Default::default()
        };
        let Ok(beat) = self.hub.heartbeat(&self.session, key, facts) else {
            return Flow::Close(DisconnectReason::ProtocolError);
        };
        let Some(tagent_id) = beat.tagent else {
            error_frame(
                out,
                "unknown-tagent",
                "the tagent was deleted during the handshake",
            );
            return Flow::Close(DisconnectReason::AuthFailed);
        };
        let idle = self.hub.settings().idle_timeout.as_secs();
        let group = beat.group.unwrap_or(0);
        self.hub.group_list(group, |list| {
            proto::encode_frame(
                &ServerMsg::Welcome {
                    tagent_id,
                    proxy_group: list.map_or("", |g| g.list.as_str()).into(),
                    idle_timeout_secs: idle,
                },
                out,
            )
        });
        self.phase = Phase::Live;
        Flow::Continue
    }

    /// `Heartbeat`, once live: account it and ack.
    fn on_heartbeat(
        &mut self,
        seq: u64,
        pcpu: Option<f32>,
        mem: Option<f32>,
        started: Instant,
        out: &mut Vec<u8>,
    ) -> Flow {
        if !matches!(self.phase, Phase::Live) {
            return out_of_order(out);
        }
        let (key, agent_id) = {
            let st = self.session.state.lock();
            (st.key, st.agent_id)
        };
        let Some(key) = key else {
            return Flow::Close(DisconnectReason::ProtocolError);
        };
        let facts = Facts {
            agent_id,
            pcpu,
            mem,
            ..Default::default()
        };
        let Ok(beat) = self.hub.heartbeat(&self.session, key, facts) else {
            return Flow::Close(DisconnectReason::ProtocolError);
        };
        if beat.tagent.is_none() {
            error_frame(
                out,
                "unknown-tagent",
                "the tagent is no longer registered: register again",
            );
            return Flow::Close(DisconnectReason::ProtocolError);
        }
        proto::encode_frame(
            &ServerMsg::Ack {
                seq,
                update_group: None,
            },
            out,
        );
        let metrics = self.hub.metrics();
        metrics.heartbeat(ProtocolKind::Native);
        if seq % LATENCY_SAMPLE == 1 {
            metrics.latency.record(started.elapsed().as_secs_f64());
        }
        Flow::Continue
    }

    /// `CommandResult`, once live: answer the command's caller.
    fn on_command_result(
        &mut self,
        id: u64,
        ok: bool,
        message: Option<Cow<'_, str>>,
        out: &mut Vec<u8>,
    ) -> Flow {
        if !matches!(self.phase, Phase::Live) {
            return out_of_order(out);
        }
        self.session.touch(crate::model::now_millis());
        let found = self.awaiting.as_mut().and_then(|a| {
            let i = a.iter().position(|(x, _)| *x == id)?;
            Some(a.swap_remove(i))
        });
        if self.awaiting.as_ref().is_some_and(|a| a.is_empty()) {
            self.awaiting = None;
        }
        if let Some((_, Some(reply))) = found {
            let _ = reply.send(if ok {
                Delivery::Delivered
            } else {
                Delivery::Failed(message.map(|m| m.into_owned()).unwrap_or_default())
            });
        }
        Flow::Continue
    }
}

/// A handshake refused: counted by `reason`, told as `code` and `message`.
fn auth_failed(out: &mut Vec<u8>, reason: &'static str, code: &str, message: &str) -> Flow {
    HbMetrics::auth_failure(reason);
    error_frame(out, code, message);
    Flow::Close(DisconnectReason::AuthFailed)
}

/// A message the session's phase does not expect.
fn out_of_order(out: &mut Vec<u8>) -> Flow {
    HbMetrics::rejected("out_of_order");
    error_frame(out, "out-of-order", "this message is not expected now");
    Flow::Close(DisconnectReason::ProtocolError)
}

impl NativeSession {
    /// After the credential lookup: send the challenge (or refuse).
    fn challenge(&mut self, conn: &mut Conn, credential: Option<String>) -> Result<Flow, Ended> {
        let Some(need) = self.need_credential.take() else {
            return Ok(Flow::Continue);
        };
        let Some(credential) = credential else {
            let mut flow = Flow::Continue;
            conn.write_with(|out| {
                flow = auth_failed(
                    out,
                    "no_credential",
                    "auth-failed",
                    "no credential is stored for this tagent: register with one",
                )
            })?;
            return Ok(flow);
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        self.phase = Phase::Challenged(Box::new(Challenge {
            key: need.key,
            tenant: need.tenant,
            agent_id: need.agent_id,
            nonce,
            credential,
        }));
        conn.write_with(|out| {
            proto::encode_frame(
                &ServerMsg::Challenge {
                    nonce: nonce[..].into(),
                },
                out,
            )
        })?;
        Ok(Flow::Continue)
    }

    /// Write every queued command (framed messages cannot be mistaken for
    /// replies, so no quiet moment is needed).
    fn send_commands(&mut self, conn: &mut Conn) -> Result<(), Ended> {
        if !self.authenticated() {
            return Ok(());
        }
        loop {
            let Some(cmd) = self.session.state.lock().commands.pop_front() else {
                return Ok(());
            };
            let id = self.next_command;
            self.next_command += 1;
            conn.write_with(|out| {
                proto::encode_frame(&ServerMsg::Command { id, kind: cmd.kind }, out)
            })?;
            if cmd.kind == CommandKind::Reload && cmd.reply.is_none() {
                HbMetrics::reload_sent();
            }
            self.awaiting.get_or_insert_default().push((id, cmd.reply));
        }
    }
}

impl Protocol for NativeSession {
    const KIND: ProtocolKind = ProtocolKind::Native;

    fn link(&self) -> (&Hub, &Arc<Session>) {
        (&self.hub, &self.session)
    }

    fn established(&self) -> bool {
        self.authenticated()
    }

    /// Framed messages cannot be mistaken for replies: commands go out at
    /// once, and no timer is needed.
    fn before_wait(&mut self, conn: &mut Conn) -> Result<Option<Instant>, Ended> {
        self.send_commands(conn)?;
        Ok(None)
    }

    /// After `Hello`: read the credential, then send the challenge.
    async fn handshake(
        &mut self,
        conn: &mut Conn,
        deadline: Option<tokio::time::Instant>,
    ) -> Option<Result<Flow, Ended>> {
        self.need_credential.as_ref()?;
        let Some(deadline) = deadline else {
            return Some(Ok(Flow::Close(DisconnectReason::ProtocolError)));
        };
        // Boxed: the read is large and lives only through the handshake.
        let Some(credential) = Box::pin(fetch_credential(self, deadline)).await else {
            return Some(Ok(Flow::Close(DisconnectReason::ProtocolError)));
        };
        Some(self.challenge(conn, credential))
    }

    fn on_readable(&mut self, conn: &mut Conn, framing: Framing) -> Result<Flow, Ended> {
        // One ack per heartbeat frame: replies never outgrow what came in.
        conn.read_units(framing, None, |frame, out| self.on_frame(frame, out))
    }

    fn on_timer(&mut self, _: &mut Conn) -> Result<(), Ended> {
        Ok(())
    }

    /// No command waits for its result.
    fn may_park(&self) -> bool {
        self.awaiting.as_ref().is_none_or(|a| a.is_empty())
    }

    /// Tell the agent why the session ends.
    fn goodbye(&mut self, conn: &mut Conn, reason: DisconnectReason) {
        let _ = conn.write_with(|out| {
            proto::encode_frame(
                &ServerMsg::Goodbye {
                    reason: reason.as_str().into(),
                },
                out,
            )
        });
    }

    /// Fail commands still waiting for a result, and flush what is written.
    fn on_end(&mut self, conn: &mut Conn) {
        for (_, reply) in self.awaiting.take().map(|a| *a).unwrap_or_default() {
            if let Some(reply) = reply {
                let _ = reply.send(Delivery::SessionClosed);
            }
        }
        let _ = conn.flush();
    }

    fn parked(idle: Idle<Self>) -> Parked {
        Parked::Native(idle)
    }
}

/// Read the credential for a native handshake from the hub's credential
/// reader. `None` when the deadline passed or the reader is gone
/// (shutdown); `Some(None)` when there is none.
async fn fetch_credential(
    ns: &NativeSession,
    deadline: tokio::time::Instant,
) -> Option<Option<String>> {
    let need = ns.need_credential.as_ref()?;
    let read = ns
        .hub
        .credentials()
        .read(&need.tenant, need.key.ip, need.key.port);
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Some(Ok(c))) => Some(c),
        Ok(Some(Err(e))) => {
            tracing::error!(error = %e, "cannot read a credential for a native handshake");
            Some(None)
        }
        Ok(None) | Err(_) => None,
    }
}
