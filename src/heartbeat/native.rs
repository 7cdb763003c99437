//! The native framed protocol (SPEC §3.3): hello, challenge, proof, then
//! heartbeats and acks; commands with a request id and their results.

use std::sync::Arc;
use std::time::Instant;

use super::conn::{Conn, Ended, Flow, Framing};
use super::metrics::{HbMetrics, LATENCY_SAMPLE};
use super::proto::{self, ClientMsg, CommandKind, NONCE_LEN, PROTOCOL_VERSION, ServerMsg};
use super::session::{Delivery, Session, SessionKey};
use super::{Facts, Hub, OpenGuard, Protocol};
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
    /// Authenticated.
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
    pub need_credential: Option<Box<NeedCredential>>,
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

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// No command waits for its result.
    pub fn idle(&self) -> bool {
        self.awaiting.as_ref().is_none_or(|a| a.is_empty())
    }

    pub fn authenticated(&self) -> bool {
        matches!(self.phase, Phase::Live)
    }

    pub fn on_readable(&mut self, conn: &mut Conn, max_frame: usize) -> Result<Flow, Ended> {
        conn.read_units(Framing::Frames { max: max_frame }, |frame, out| {
            self.on_frame(frame, out)
        })
    }

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
        match (&self.phase, msg) {
            (
                Phase::Hello,
                ClientMsg::Hello {
                    v,
                    tenant,
                    agent_id,
                    ip,
                    port,
                    version,
                },
            ) => {
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
                if let Some(v) = version {
                    let mut st = self.session.state.lock();
                    st.reported.update(None, None, Some(&v), None);
                }
                let key = self.hub.key_for(&tenant, ip, port);
                if self.hub.resolve(&key, agent_id).is_none() {
                    HbMetrics::auth_failure("unknown_tagent");
                    error_frame(
                        out,
                        "unknown-tagent",
                        "no tagent with this id is registered under this tenant, ip and port: register over HTTP first",
                    );
                    return Flow::Close(DisconnectReason::AuthFailed);
                }
                self.need_credential = Some(Box::new(NeedCredential {
                    tenant: tenant.as_ref().into(),
                    key,
                    agent_id,
                }));
                Flow::Continue
            }
            (Phase::Challenged(c), ClientMsg::Auth { proof }) => {
                let (key, agent_id) = (c.key, c.agent_id);
                let ok = proto::verify(
                    c.credential.as_bytes(),
                    &c.nonce,
                    &c.tenant,
                    agent_id,
                    key.port,
                    &proof,
                );
                if !ok {
                    HbMetrics::auth_failure("bad_proof");
                    error_frame(
                        out,
                        "auth-failed",
                        "the proof does not match the credential given at registration",
                    );
                    return Flow::Close(DisconnectReason::AuthFailed);
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
            (Phase::Live, ClientMsg::Heartbeat { seq, pcpu, mem }) => {
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
                metrics.heartbeat(Protocol::Native);
                if seq % LATENCY_SAMPLE == 1 {
                    metrics.latency.record(started.elapsed().as_secs_f64());
                }
                Flow::Continue
            }
            (Phase::Live, ClientMsg::CommandResult { id, ok, message }) => {
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
            (_, ClientMsg::Bye) => Flow::Close(DisconnectReason::Eof),
            (_, _) => {
                HbMetrics::rejected("out_of_order");
                error_frame(out, "out-of-order", "this message is not expected now");
                Flow::Close(DisconnectReason::ProtocolError)
            }
        }
    }
}

impl NativeSession {
    /// After the credential lookup: send the challenge (or refuse).
    pub fn challenge(
        &mut self,
        conn: &mut Conn,
        credential: Option<String>,
    ) -> Result<Flow, Ended> {
        let Some(need) = self.need_credential.take() else {
            return Ok(Flow::Continue);
        };
        let Some(credential) = credential else {
            HbMetrics::auth_failure("no_credential");
            conn.write_with(|out| {
                error_frame(
                    out,
                    "auth-failed",
                    "no credential is stored for this tagent: register with one",
                )
            })?;
            return Ok(Flow::Close(DisconnectReason::AuthFailed));
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
    pub fn send_commands(&mut self, conn: &mut Conn) -> Result<(), Ended> {
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

    /// Tell the agent why the session ends.
    pub fn goodbye(&self, conn: &mut Conn, reason: DisconnectReason) {
        let _ = conn.write_with(|out| {
            proto::encode_frame(
                &ServerMsg::Goodbye {
                    reason: reason.as_str().into(),
                },
                out,
            )
        });
    }

    /// Fail commands still waiting for a result.
    pub fn fail_awaiting(&mut self) {
        for (_, reply) in self.awaiting.take().map(|a| *a).unwrap_or_default() {
            if let Some(reply) = reply {
                let _ = reply.send(Delivery::SessionClosed);
            }
        }
    }
}
