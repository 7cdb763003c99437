//! `tagent-load floor`: the least any server can do per heartbeat, so every
//! figure of `compare` has the physical floor beside it.
//!
//! One thread, one `epoll` (mio), no logic: a session's bytes are answered
//! with the protocol's reply bytes and nothing else happens. Nothing is
//! registered, checked or remembered; a native proof is not verified.
//!
//! - `compat`: each `\n`-terminated line is answered `{"Status":"OK"}\n`.
//! - `native`: the magic, then frames of a 4-byte big-endian length and
//!   MessagePack; `hello` gets a fixed challenge, `auth` a welcome, and each
//!   `heartbeat` an `ack` with its `seq` (decoded and encoded with
//!   rmp-serde, as a real server must).
//!
//! Per heartbeat it makes the two syscalls no server can avoid, a read and
//! a write (a short read is taken as the socket drained: with edge-triggered
//! epoll, bytes arriving later raise a new event), plus its share of one
//! `epoll_wait`.
//!
//! What a connection has received but not yet answered is read into one
//! scratch buffer shared by every connection; only a partial message is
//! kept per connection, and only output the kernel would not take. So an
//! idle connection costs its slab slot and the kernel's socket: the floor
//! for memory too. Anything malformed closes the connection.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tagent_hub::heartbeat::compat::OK;
use tagent_hub::heartbeat::proto::{self, ClientMsg, MAGIC, ServerMsg};

use crate::session_args::Proto;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to listen (loopback only).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Which of tagent-hub's protocols to answer.
    #[arg(long, value_enum)]
    pub protocol: Proto,
    /// Exit after this many seconds (every run stops by itself).
    #[arg(long, default_value_t = 3600.0)]
    pub max_secs: f64,
}

const LISTENER: Token = Token(usize::MAX);
/// A message longer than this closes the connection (the hub's own bound
/// for a native frame and a compat line is of this order).
const MAX_MESSAGE: usize = 64 * 1024;
const SCRATCH: usize = 256 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Native: the magic is due.
    Magic,
    /// Native: frames; compat: lines.
    Messages,
}

struct Conn {
    stream: TcpStream,
    stage: Stage,
    /// A message begun but not complete.
    partial: Vec<u8>,
    /// Output the kernel did not take yet.
    unsent: Vec<u8>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!("--listen must be a loopback address");
    }
    if !matches!(args.protocol, Proto::Native | Proto::Compat) {
        bail!("--protocol takes native or compat");
    }
    if !(args.max_secs > 0.0 && args.max_secs <= 24.0 * 3600.0) {
        bail!("--max-secs must be above 0 and at most a day");
    }
    let native = args.protocol == Proto::Native;
    let challenge = frame(&ServerMsg::Challenge {
        nonce: [7u8; 32][..].into(),
    });
    let welcome = frame(&ServerMsg::Welcome {
        tagent_id: 1,
        proxy_group: "".into(),
        idle_timeout_secs: 300,
    });
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; SCRATCH];
    let mut out = Vec::with_capacity(SCRATCH);
    let end = Instant::now() + Duration::from_secs_f64(args.max_secs);
    while Instant::now() < end {
        match poll.poll(&mut events, Some(Duration::from_secs(1))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        for event in &events {
            if event.token() == LISTENER {
                accept(&listener, &poll, &mut conns, native);
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            let answers = Answers {
                native,
                challenge: &challenge,
                welcome: &welcome,
            };
            let open = (!event.is_writable() || flush(conn))
                && (!event.is_readable() || serve(conn, &mut scratch, &mut out, &answers));
            if !open {
                let mut conn = conns.remove(key);
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
    Ok(())
}

/// Every connection waiting in the backlog, registered for reads and writes
/// (edge-triggered: a write event comes only after a write would block).
fn accept(listener: &TcpListener, poll: &Poll, conns: &mut Slab<Conn>, native: bool) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let entry = conns.vacant_entry();
                let token = Token(entry.key());
                if poll
                    .registry()
                    .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                    .is_ok()
                {
                    entry.insert(Conn {
                        stream,
                        stage: if native {
                            Stage::Magic
                        } else {
                            Stage::Messages
                        },
                        partial: Vec::new(),
                        unsent: Vec::new(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // Out of files, a connection reset before accept: try the next
            // readiness event.
            Err(_) => return,
        }
    }
}

struct Answers<'a> {
    native: bool,
    challenge: &'a [u8],
    welcome: &'a [u8],
}

/// Read everything there is, answer every complete message, write the
/// answers. `false`: close the connection.
fn serve(conn: &mut Conn, scratch: &mut [u8], out: &mut Vec<u8>, answers: &Answers) -> bool {
    loop {
        let n = match conn.stream.read(scratch) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        out.clear();
        let ok = if conn.partial.is_empty() {
            let (ok, rest) = answer(conn, &scratch[..n], out, answers);
            conn.partial.extend_from_slice(rest);
            ok
        } else {
            let mut joined = std::mem::take(&mut conn.partial);
            joined.extend_from_slice(&scratch[..n]);
            let (ok, rest) = answer(conn, &joined, out, answers);
            conn.partial = rest.to_vec();
            ok
        };
        if !ok || conn.partial.len() > MAX_MESSAGE || !send(conn, out) {
            return false;
        }
        // A short read took everything the socket held: bytes that arrive
        // later raise a new edge, so the read that would say EAGAIN is
        // left out (one syscall a heartbeat fewer, as a floor should).
        if n < scratch.len() {
            return true;
        }
    }
}

/// The answers to every complete message of `input`, appended to `out`;
/// whether the input was well formed, and the incomplete rest.
fn answer<'i>(
    conn: &mut Conn,
    mut input: &'i [u8],
    out: &mut Vec<u8>,
    answers: &Answers,
) -> (bool, &'i [u8]) {
    if !answers.native {
        while let Some(i) = memchr::memchr(b'\n', input) {
            out.extend_from_slice(OK);
            input = &input[i + 1..];
        }
        return (true, input);
    }
    if conn.stage == Stage::Magic {
        if input.len() < MAGIC.len() {
            return (MAGIC.starts_with(input), input);
        }
        if input[..MAGIC.len()] != MAGIC {
            return (false, input);
        }
        input = &input[MAGIC.len()..];
        conn.stage = Stage::Messages;
    }
    while input.len() >= 4 {
        let len = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
        if len > MAX_MESSAGE {
            return (false, input);
        }
        if input.len() < 4 + len {
            break;
        }
        match proto::decode_client(&input[4..4 + len]) {
            Ok(ClientMsg::Hello { .. }) => out.extend_from_slice(answers.challenge),
            Ok(ClientMsg::Auth { .. }) => out.extend_from_slice(answers.welcome),
            Ok(ClientMsg::Heartbeat { seq, .. }) => proto::encode_frame(
                &ServerMsg::Ack {
                    seq,
                    update_group: None,
                },
                out,
            ),
            Ok(ClientMsg::CommandResult { .. }) => {}
            Ok(ClientMsg::Bye) | Err(_) => return (false, input),
        }
        input = &input[4 + len..];
    }
    (true, input)
}

/// Write `out`, keeping what the kernel does not take. `false`: close.
fn send(conn: &mut Conn, out: &[u8]) -> bool {
    if out.is_empty() {
        return true;
    }
    if !conn.unsent.is_empty() {
        conn.unsent.extend_from_slice(out);
        return conn.unsent.len() <= MAX_MESSAGE * 16;
    }
    match write_some(&mut conn.stream, out) {
        Ok(n) => {
            conn.unsent.extend_from_slice(&out[n..]);
            true
        }
        Err(_) => false,
    }
}

/// Write what was kept, now that the kernel takes more. `false`: close.
fn flush(conn: &mut Conn) -> bool {
    if conn.unsent.is_empty() {
        return true;
    }
    match write_some(&mut conn.stream, &conn.unsent) {
        Ok(n) => {
            conn.unsent.drain(..n);
            if conn.unsent.is_empty() {
                conn.unsent = Vec::new();
            }
            true
        }
        Err(_) => false,
    }
}

/// Bytes of `buf` written before the kernel would block.
fn write_some(stream: &mut TcpStream, buf: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match stream.write(&buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn frame(msg: &ServerMsg<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    proto::encode_frame(msg, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use tagent_hub::heartbeat::client::{Identity, NativeClient};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::*;

    /// A floor on a free loopback port, in its own thread for `secs`.
    fn start(protocol: Proto, secs: f64) -> SocketAddr {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        std::thread::spawn(move || {
            main(Args {
                listen,
                protocol,
                max_secs: secs,
            })
        });
        for _ in 0..200 {
            if std::net::TcpStream::connect(listen).is_ok() {
                return listen;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the floor did not listen");
    }

    #[tokio::test]
    async fn the_native_client_gets_welcomed_and_acked_by_the_floor() {
        let addr = start(Proto::Native, 30.0);
        let id = Identity {
            tenant: "t".into(),
            agent_id: 9,
            ip: Some(IpAddr::from([127, 0, 0, 1])),
            port: 3939,
            version: None,
        };
        let mut c = NativeClient::connect(addr, &id, "any").await.unwrap();
        for seq in 1..=3 {
            assert_eq!(c.heartbeat(None, None).await.unwrap().seq, seq);
        }
    }

    #[tokio::test]
    async fn a_compat_line_split_over_writes_is_answered_once_it_is_whole() {
        let addr = start(Proto::Compat, 30.0);
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"{\"type\":").await.unwrap();
        w.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        w.write_all(b"\"monitor\"}\n{}\n").await.unwrap();
        let mut line = String::new();
        for _ in 0..2 {
            line.clear();
            r.read_line(&mut line).await.unwrap();
            assert_eq!(line.as_bytes(), OK);
        }
    }

    #[tokio::test]
    async fn garbage_closes_a_native_connection() {
        let addr = start(Proto::Native, 30.0);
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(&mut s, &mut buf),
        )
        .await
        .expect("closed, not hung");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
}
