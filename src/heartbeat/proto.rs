//! The native protocol (SPEC §3.3): after a 4-byte magic, every message is a
//! 4-byte big-endian length and a MessagePack map. See `docs/PROTOCOL.md`.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The first bytes a native client sends: never `{` or white space, so a
/// JSON line cannot start this way. The last byte is the protocol version.
pub const MAGIC: [u8; 4] = [0xA7, b'T', b'H', PROTOCOL_VERSION];
pub const PROTOCOL_VERSION: u8 = 1;
/// Length of the server's challenge nonce.
pub const NONCE_LEN: usize = 32;
/// Domain separation for the proof, so it cannot be reused for anything else.
const PROOF_CONTEXT: &[u8] = b"tagent-hub auth v1";

/// Client to server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientMsg<'a> {
    /// First message: who this is. `ip` is the management ip (else the peer
    /// address counts), as `mgmtIp` in the JSON-line protocol.
    Hello {
        v: u8,
        #[serde(borrow)]
        tenant: Cow<'a, str>,
        agent_id: u64,
        #[serde(borrow)]
        ip: Option<Cow<'a, str>>,
        port: u16,
        #[serde(borrow)]
        version: Option<Cow<'a, str>>,
    },
    /// Answer to the challenge: [`proof`] over the server's nonce.
    Auth {
        #[serde(with = "serde_bytes", borrow)]
        proof: Cow<'a, [u8]>,
    },
    Heartbeat {
        seq: u64,
        pcpu: Option<f32>,
        mem: Option<f32>,
    },
    CommandResult {
        id: u64,
        ok: bool,
        #[serde(borrow)]
        message: Option<Cow<'a, str>>,
    },
    Bye,
}

/// Commands the hub pushes down a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Restart and register again.
    Reload,
    /// Pick a new credential, restart and register again.
    Resetcred,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Reload => "reload",
            CommandKind::Resetcred => "resetcred",
        }
    }
}

/// Server to client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    Challenge {
        #[serde(with = "serde_bytes", borrow)]
        nonce: Cow<'a, [u8]>,
    },
    /// Authenticated: the session is live.
    Welcome {
        tagent_id: u64,
        #[serde(borrow)]
        proxy_group: Cow<'a, str>,
        idle_timeout_secs: u64,
    },
    Ack {
        seq: u64,
        /// The group's runner list, when it differs from what the hello
        /// said; the agent should reconnect to it.
        #[serde(borrow)]
        update_group: Option<Cow<'a, str>>,
    },
    Command {
        id: u64,
        kind: CommandKind,
    },
    Error {
        #[serde(borrow)]
        code: Cow<'a, str>,
        #[serde(borrow)]
        message: Cow<'a, str>,
    },
    Goodbye {
        #[serde(borrow)]
        reason: Cow<'a, str>,
    },
}

/// How deep a client message may nest. Real ones nest two maps deep;
/// rmp-serde's default (1024) lets a 1 KiB frame of nested arrays recurse
/// deep enough to overflow a runtime worker's stack and abort the hub.
const MAX_DEPTH: usize = 8;

/// Decode one frame's payload from a client, with nesting bounded.
pub fn decode_client(payload: &[u8]) -> Result<ClientMsg<'_>, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(payload);
    de.set_max_depth(MAX_DEPTH);
    ClientMsg::deserialize(&mut de)
}

/// HMAC-SHA256, keyed with the credential given at registration, over the
/// context, the nonce, and the identity the proof is for.
pub fn proof(credential: &[u8], nonce: &[u8], tenant: &str, agent_id: u64, port: u16) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(credential).expect("HMAC takes any key length");
    feed(&mut mac, nonce, tenant, agent_id, port);
    mac.finalize().into_bytes().into()
}

/// Constant-time check of a proof.
pub fn verify(
    credential: &[u8],
    nonce: &[u8],
    tenant: &str,
    agent_id: u64,
    port: u16,
    proof: &[u8],
) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(credential).expect("HMAC takes any key length");
    feed(&mut mac, nonce, tenant, agent_id, port);
    mac.verify_slice(proof).is_ok()
}

fn feed(mac: &mut Hmac<Sha256>, nonce: &[u8], tenant: &str, agent_id: u64, port: u16) {
    mac.update(PROOF_CONTEXT);
    mac.update(nonce);
    mac.update(tenant.as_bytes());
    mac.update(&[0]);
    mac.update(&agent_id.to_be_bytes());
    mac.update(&port.to_be_bytes());
}

/// Encode `msg` as one frame (length prefix and MessagePack) appended to `out`.
pub fn encode_frame<T: Serialize>(msg: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    rmp_serde::encode::write_named(out, msg).expect("writing to a Vec cannot fail");
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_round_trips_without_copying_strings() {
        let mut out = Vec::new();
        encode_frame(
            &ClientMsg::Heartbeat {
                seq: 7,
                pcpu: Some(0.5),
                mem: None,
            },
            &mut out,
        );
        let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(len, out.len() - 4);
        let back = decode_client(&out[4..]).unwrap();
        assert_eq!(
            back,
            ClientMsg::Heartbeat {
                seq: 7,
                pcpu: Some(0.5),
                mem: None
            }
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        // {"heartbeat": {"seq": 1, "x": [[[...]]]}}: an unknown field (which
        // is skipped, recursively), 1,000 arrays deep.
        let mut msg = vec![0x81, 0xa9];
        msg.extend_from_slice(b"heartbeat");
        msg.extend_from_slice(&[0x82, 0xa3, b's', b'e', b'q', 0x01, 0xa1, b'x']);
        msg.extend(std::iter::repeat_n(0x91, 1000));
        msg.push(0xc0);
        assert!(matches!(
            decode_client(&msg),
            Err(rmp_serde::decode::Error::DepthLimitExceeded)
        ));
    }

    fn hex(v: &[u8]) -> String {
        v.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Every frame the "Bytes" block of docs/PROTOCOL.md shows, as the code
    /// encodes it: credential `secret`, nonce `11` × 32, tenant `demo`,
    /// agent 1, port 3939.
    fn documented_frames() -> Vec<(&'static str, Vec<u8>)> {
        let p = proof(b"secret", &[0x11; 32], "demo", 1, 3939);
        let client = |m: ClientMsg| {
            let mut out = Vec::new();
            encode_frame(&m, &mut out);
            out
        };
        let server = |m: ServerMsg| {
            let mut out = Vec::new();
            encode_frame(&m, &mut out);
            out
        };
        vec![
            (
                "hello",
                client(ClientMsg::Hello {
                    v: 1,
                    tenant: "demo".into(),
                    agent_id: 1,
                    ip: Some("10.0.0.25".into()),
                    port: 3939,
                    version: None,
                }),
            ),
            (
                "challenge",
                server(ServerMsg::Challenge {
                    nonce: (&[0x11u8; 32][..]).into(),
                }),
            ),
            ("proof", p.to_vec()),
            (
                "auth",
                client(ClientMsg::Auth {
                    proof: (&p[..]).into(),
                }),
            ),
            (
                "welcome",
                server(ServerMsg::Welcome {
                    tagent_id: 1,
                    proxy_group: "10.0.0.21:8888".into(),
                    idle_timeout_secs: 300,
                }),
            ),
            (
                "heartbeat",
                client(ClientMsg::Heartbeat {
                    seq: 1,
                    pcpu: Some(0.5),
                    mem: None,
                }),
            ),
            (
                "ack",
                server(ServerMsg::Ack {
                    seq: 1,
                    update_group: None,
                }),
            ),
            (
                "command",
                server(ServerMsg::Command {
                    id: 1,
                    kind: CommandKind::Reload,
                }),
            ),
            (
                "result",
                client(ClientMsg::CommandResult {
                    id: 1,
                    ok: true,
                    message: None,
                }),
            ),
            (
                "error",
                server(ServerMsg::Error {
                    code: "auth-failed".into(),
                    message: "x".into(),
                }),
            ),
            (
                "goodbye",
                server(ServerMsg::Goodbye {
                    reason: "shutdown".into(),
                }),
            ),
            ("bye", client(ClientMsg::Bye)),
        ]
    }

    /// The "Bytes" block of docs/PROTOCOL.md: each frame's name and its hex
    /// bytes (continuation lines included, `= …` decodings left out).
    fn documented_hex() -> Vec<(String, String)> {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let block = doc
            .split("### Bytes")
            .nth(1)
            .and_then(|b| b.split("```").nth(1))
            .expect("docs/PROTOCOL.md has a Bytes block");
        let mut frames: Vec<(String, String)> = Vec::new();
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            let continued = line.starts_with(' ');
            let text = line.trim();
            if text.starts_with('=') {
                continue;
            }
            match frames.last_mut() {
                Some((_, hex)) if continued => {
                    hex.push(' ');
                    hex.push_str(text);
                }
                _ => {
                    let (name, hex) = text.split_once(' ').expect("name, then bytes");
                    frames.push((name.to_owned(), hex.trim().to_owned()));
                }
            }
        }
        frames
    }

    /// docs/PROTOCOL.md cannot drift from the code: every frame it shows is
    /// what the code sends (a `…` there elides the middle of a long run).
    /// `cargo test documented_bytes -- --nocapture` prints them all.
    #[test]
    fn documented_bytes_are_what_the_code_sends() {
        let documented = documented_hex();
        let frames = documented_frames();
        let doc_names: Vec<&str> = documented.iter().map(|(n, _)| n.as_str()).collect();
        let code_names: Vec<&str> = frames.iter().map(|(n, _)| *n).collect();
        assert_eq!(doc_names, code_names, "the frames docs/PROTOCOL.md shows");
        for ((name, doc_hex), (_, bytes)) in documented.iter().zip(&frames) {
            let code_hex = hex(bytes);
            println!("{name:<10} {code_hex}");
            match doc_hex.split_once(" … ") {
                Some((head, tail)) => assert!(
                    code_hex.starts_with(head) && code_hex.ends_with(tail),
                    "{name}: documented {doc_hex}, sent {code_hex}"
                ),
                None => assert_eq!(&code_hex, doc_hex, "{name}"),
            }
        }
    }

    #[test]
    fn proof_binds_nonce_and_identity() {
        let p = proof(b"cred", &[1; 32], "t", 5, 3939);
        assert!(verify(b"cred", &[1; 32], "t", 5, 3939, &p));
        assert!(!verify(b"cred", &[2; 32], "t", 5, 3939, &p));
        assert!(!verify(b"cred", &[1; 32], "t", 6, 3939, &p));
        assert!(!verify(b"other", &[1; 32], "t", 5, 3939, &p));
        assert!(!verify(b"cred", &[1; 32], "t", 5, 3939, &p[..31]));
    }
}
