//! A small async client for the native protocol, used by the load generator
//! and the tests, and a reference for agents written against it.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::proto::{self, ClientMsg, CommandKind, MAGIC, PROTOCOL_VERSION, ServerMsg};

/// Who the agent is, as registered.
#[derive(Debug, Clone)]
pub struct Identity {
    pub tenant: String,
    pub agent_id: u64,
    /// The management ip; `None` lets the hub use the connection's source address.
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub version: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the hub refused: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("the hub said goodbye: {0}")]
    Goodbye(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("the connection closed")]
    Closed,
}

/// Something the hub sent on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Command { id: u64, kind: CommandKind },
    Goodbye(String),
}

pub struct NativeClient {
    framed: Framed<TcpStream, LengthDelimitedCodec>,
    seq: u64,
    /// Commands that arrived while waiting for an ack.
    events: VecDeque<Event>,
    pub tagent_id: u64,
    /// The runner list of the agent's group, from the welcome.
    pub proxy_group: String,
    pub idle_timeout_secs: u64,
}

/// An ack to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub seq: u64,
    pub update_group: Option<String>,
}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(max_frame)
        .new_codec()
}

fn encode(msg: &ClientMsg<'_>) -> Bytes {
    Bytes::from(rmp_serde::to_vec_named(msg).expect("messages always encode"))
}

impl NativeClient {
    pub async fn connect(
        addr: SocketAddr,
        id: &Identity,
        credential: &str,
    ) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        Self::handshake(stream, id, credential).await
    }

    /// Handshake on an already connected stream (e.g. bound to a chosen
    /// source address).
    pub async fn handshake(
        mut stream: TcpStream,
        id: &Identity,
        credential: &str,
    ) -> Result<Self, ClientError> {
        stream.set_nodelay(true)?;
        stream.write_all(&MAGIC).await?;
        let mut framed = Framed::new(stream, codec(64 * 1024));
        let ip = id.ip.map(|ip| ip.to_string());
        framed
            .send(encode(&ClientMsg::Hello {
                v: PROTOCOL_VERSION,
                tenant: id.tenant.as_str().into(),
                agent_id: id.agent_id,
                ip: ip.as_deref().map(Into::into),
                port: id.port,
                version: id.version.as_deref().map(Into::into),
            }))
            .await?;
        let nonce = match next(&mut framed).await? {
            Owned::Challenge(n) => n,
            other => return Err(unexpected(other)),
        };
        let proof = proto::proof(
            credential.as_bytes(),
            &nonce,
            &id.tenant,
            id.agent_id,
            id.port,
        );
        framed
            .send(encode(&ClientMsg::Auth {
                proof: proof[..].into(),
            }))
            .await?;
        match next(&mut framed).await? {
            Owned::Welcome {
                tagent_id,
                proxy_group,
                idle_timeout_secs,
            } => Ok(NativeClient {
                framed,
                seq: 0,
                events: VecDeque::new(),
                tagent_id,
                proxy_group,
                idle_timeout_secs,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Send a heartbeat and wait for its ack.
    pub async fn heartbeat(
        &mut self,
        pcpu: Option<f32>,
        mem: Option<f32>,
    ) -> Result<Ack, ClientError> {
        self.seq += 1;
        let seq = self.seq;
        self.framed
            .send(encode(&ClientMsg::Heartbeat { seq, pcpu, mem }))
            .await?;
        loop {
            match next(&mut self.framed).await? {
                Owned::Ack {
                    seq: s,
                    update_group,
                } if s == seq => return Ok(Ack { seq, update_group }),
                Owned::Command { id, kind } => self.events.push_back(Event::Command { id, kind }),
                other => return Err(unexpected(other)),
            }
        }
    }

    /// The next command or goodbye from the hub.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(e);
        }
        match next(&mut self.framed).await {
            Ok(Owned::Command { id, kind }) => Ok(Event::Command { id, kind }),
            Err(ClientError::Goodbye(reason)) => Ok(Event::Goodbye(reason)),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        }
    }

    /// Report a command's result.
    pub async fn command_result(
        &mut self,
        id: u64,
        ok: bool,
        message: Option<&str>,
    ) -> Result<(), ClientError> {
        self.framed
            .send(encode(&ClientMsg::CommandResult {
                id,
                ok,
                message: message.map(Into::into),
            }))
            .await?;
        Ok(())
    }

    /// End the session cleanly.
    pub async fn bye(mut self) -> Result<(), ClientError> {
        self.framed.send(encode(&ClientMsg::Bye)).await?;
        Ok(())
    }
}

/// A server message with owned data.
#[derive(Debug)]
enum Owned {
    Challenge(Vec<u8>),
    Welcome {
        tagent_id: u64,
        proxy_group: String,
        idle_timeout_secs: u64,
    },
    Ack {
        seq: u64,
        update_group: Option<String>,
    },
    Command {
        id: u64,
        kind: CommandKind,
    },
}

fn unexpected(m: Owned) -> ClientError {
    ClientError::Protocol(format!("unexpected message: {m:?}"))
}

async fn next(framed: &mut Framed<TcpStream, LengthDelimitedCodec>) -> Result<Owned, ClientError> {
    let frame: BytesMut = match framed.next().await {
        Some(f) => f?,
        None => return Err(ClientError::Closed),
    };
    let msg: ServerMsg<'_> =
        rmp_serde::from_slice(&frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(match msg {
        ServerMsg::Challenge { nonce } => Owned::Challenge(nonce.into_owned()),
        ServerMsg::Welcome {
            tagent_id,
            proxy_group,
            idle_timeout_secs,
        } => Owned::Welcome {
            tagent_id,
            proxy_group: proxy_group.into_owned(),
            idle_timeout_secs,
        },
        ServerMsg::Ack { seq, update_group } => Owned::Ack {
            seq,
            update_group: update_group.map(|g| g.into_owned()),
        },
        ServerMsg::Command { id, kind } => Owned::Command { id, kind },
        ServerMsg::Error { code, message } => {
            return Err(ClientError::Refused {
                code: code.into_owned(),
                message: message.into_owned(),
            });
        }
        ServerMsg::Goodbye { reason } => return Err(ClientError::Goodbye(reason.into_owned())),
    })
}
