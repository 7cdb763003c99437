//! Socket I/O for sessions, with no buffer kept while a session is idle.
//!
//! A read goes into a per-thread scratch buffer and is handled synchronously
//! (no `.await` in between), so a heartbeat that arrives whole costs no
//! allocation. Only a partial line or frame is copied into the session's own
//! buffer, which is freed once consumed, and it can never grow past the
//! configured maximum: nothing is reserved for bytes that have not arrived.
//! Replies go out with a non-blocking write; what does not fit waits in the
//! session's out buffer, and reading pauses until it is flushed.
//!
//! Replies may be bounded too (compat): a peer that pipelines lines and
//! reads none of the answers is amplifying, not talking. With a bound, a
//! read whose replies (beyond its first unit's) pass it ends the stream, and
//! so does one whose replies the socket cannot take at once: the listener
//! sizes the kernel's send buffer to the bound, so a full one means that
//! much already waits unread. (No safe `SIOCOUTQ` wrapper is at hand in
//! socket2, rustix or the crates here to read the kernel's queue instead.)
//!
//! This is the byte layer: it knows lines, frames and sockets, nothing of
//! sessions or the registry. It ends a stream with its own [`Ended`], and
//! passes a handler's reason to close ([`Flow::Close`]) through unread.

use std::cell::RefCell;
use std::io::{self, Read};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// How units are cut from the byte stream.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    /// `\n`-terminated lines (a trailing `\r` is dropped), at most `max` bytes.
    Lines { max: usize },
    /// 4-byte big-endian length, then that many bytes, at most `max`.
    ///
    /// This is `LengthDelimitedCodec`'s default wire format. The server does
    /// not decode it with the codec because the codec reserves the announced
    /// length as soon as a header arrives; the client side uses the codec.
    Frames { max: usize },
}

/// What [`Framing::split`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `unit` is `buf[start..end]`; the next unit starts at `next`.
    Unit {
        start: usize,
        end: usize,
        next: usize,
    },
    NeedMore,
    TooLong,
}

impl Framing {
    /// Cut the first unit from `buf` (the frame decoder; `fuzz/` drives it
    /// with arbitrary bytes).
    pub fn split(self, buf: &[u8]) -> Split {
        match self {
            Framing::Lines { max } => match memchr::memchr(b'\n', buf) {
                Some(i) if i <= max => {
                    let end = if i > 0 && buf[i - 1] == b'\r' {
                        i - 1
                    } else {
                        i
                    };
                    Split::Unit {
                        start: 0,
                        end,
                        next: i + 1,
                    }
                }
                Some(_) => Split::TooLong,
                None if buf.len() > max => Split::TooLong,
                None => Split::NeedMore,
            },
            Framing::Frames { max } => {
                if buf.len() < 4 {
                    return Split::NeedMore;
                }
                let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if n > max {
                    Split::TooLong
                } else if buf.len() < 4 + n {
                    Split::NeedMore
                } else {
                    Split::Unit {
                        start: 4,
                        end: 4 + n,
                        next: 4 + n,
                    }
                }
            }
        }
    }
}

/// What the handler of a unit wants next. `C` is why it closes: the
/// session layer's reason, which this layer only hands back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow<C> {
    Continue,
    /// Flush what was written, then close.
    Close(C),
}

/// Why a stream ended on the I/O side (the session layer names the
/// disconnect reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The peer closed its side.
    Eof,
    /// Any other socket error, or a socket that takes no more bytes.
    Reset,
    /// A line or frame longer than the framing's maximum.
    TooLong,
    /// One read would have queued more reply bytes than allowed.
    Unread,
}

const SCRATCH: usize = 64 * 1024;

struct Scratch {
    input: Box<[u8]>,
    output: Vec<u8>,
}

thread_local! {
    static BUFS: RefCell<Scratch> = RefCell::new(Scratch {
        input: vec![0; SCRATCH].into_boxed_slice(),
        output: Vec::with_capacity(4096),
    });
}

pub struct Conn {
    pub stream: TcpStream,
    /// Allocated only while a partial unit or unsent output is pending.
    bufs: Option<Box<Bufs>>,
}

/// What a connection holds besides its socket while parked (see
/// `parking.rs`): its partial unit or unsent output, if any.
pub struct Held(Option<Box<Bufs>>);

#[derive(Default)]
struct Bufs {
    /// A partial unit.
    pending_in: Vec<u8>,
    /// Reply bytes the socket did not take yet.
    pending_out: Vec<u8>,
}

fn classify(e: &io::Error) -> Ended {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => Ended::Eof,
        _ => Ended::Reset,
    }
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        Conn { stream, bufs: None }
    }

    /// Take the socket off tokio's reactor, for parking. Fails only if tokio
    /// cannot deregister it, and then the socket is gone.
    pub fn park(self) -> io::Result<(std::net::TcpStream, Held)> {
        Ok((self.stream.into_std()?, Held(self.bufs)))
    }

    /// Register a parked socket with tokio again (from within the runtime).
    /// On failure the socket is closed.
    pub fn resume(stream: std::net::TcpStream, held: Held) -> io::Result<Conn> {
        Ok(Conn {
            stream: TcpStream::from_std(stream)?,
            bufs: held.0,
        })
    }

    /// Whether a partial unit has been received (a message is in flight).
    pub fn mid_unit(&self) -> bool {
        self.bufs.as_ref().is_some_and(|b| !b.pending_in.is_empty())
    }

    /// Whether replies are waiting for the socket.
    pub fn has_pending_output(&self) -> bool {
        self.bufs
            .as_ref()
            .is_some_and(|b| !b.pending_out.is_empty())
    }

    fn bufs(&mut self) -> &mut Bufs {
        self.bufs.get_or_insert_with(Box::default)
    }

    /// Free the buffers once both are empty.
    fn release(&mut self) {
        if self
            .bufs
            .as_ref()
            .is_some_and(|b| b.pending_in.is_empty() && b.pending_out.is_empty())
        {
            self.bufs = None;
        }
    }

    /// Flush pending output without blocking.
    pub fn flush(&mut self) -> Result<(), Ended> {
        let Some(bufs) = self.bufs.as_mut() else {
            return Ok(());
        };
        while !bufs.pending_out.is_empty() {
            match self.stream.try_write(&bufs.pending_out) {
                Ok(0) => return Err(Ended::Reset),
                Ok(n) => {
                    bufs.pending_out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(classify(&e)),
            }
        }
        bufs.pending_out = Vec::new();
        self.release();
        Ok(())
    }

    /// Write `bytes` now, keeping what the socket does not take.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Ended> {
        if self.has_pending_output() {
            self.bufs().pending_out.extend_from_slice(bytes);
            return self.flush();
        }
        let mut done = 0;
        while done < bytes.len() {
            match self.stream.try_write(&bytes[done..]) {
                Ok(0) => return Err(Ended::Reset),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(classify(&e)),
            }
        }
        if done < bytes.len() {
            self.bufs().pending_out.extend_from_slice(&bytes[done..]);
        }
        Ok(())
    }

    /// Write with a per-thread buffer filled by `fill`: no allocation.
    pub fn write_with(&mut self, fill: impl FnOnce(&mut Vec<u8>)) -> Result<(), Ended> {
        BUFS.with_borrow_mut(|b| {
            b.output.clear();
            fill(&mut b.output);
            let r = self.write(&b.output);
            shrink(&mut b.output);
            r
        })
    }

    /// After readiness: flush, then read once and hand every complete unit to
    /// `on_unit` (which appends replies to the `Vec`), then write the replies.
    /// `Ok(Flow::Continue)` also when there was nothing to read. With
    /// `bound`, replies that pass it after the first unit's (then nothing is
    /// written) or that the socket does not take at once end the stream
    /// ([`Ended::Unread`]).
    pub fn read_units<C>(
        &mut self,
        framing: Framing,
        bound: Option<usize>,
        mut on_unit: impl FnMut(&[u8], &mut Vec<u8>) -> Flow<C>,
    ) -> Result<Flow<C>, Ended> {
        self.flush()?;
        if self.has_pending_output() {
            return Ok(Flow::Continue);
        }
        BUFS.with_borrow_mut(|b| {
            let Scratch { input, output } = b;
            output.clear();
            let n = match read_draining(&self.stream, input) {
                Ok(0) => return Err(Ended::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flow::Continue),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Flow::Continue),
                Err(e) => return Err(classify(&e)),
            };
            let from_scratch = !self.mid_unit();
            let mut partial = if from_scratch {
                Vec::new()
            } else {
                std::mem::take(&mut self.bufs().pending_in)
            };
            partial.extend_from_slice(if from_scratch { &[] } else { &input[..n] });
            let data: &[u8] = if from_scratch { &input[..n] } else { &partial };
            let mut at = 0;
            let mut flow = Flow::Continue;
            let mut too_long = false;
            let mut units = 0usize;
            while matches!(flow, Flow::Continue) {
                match framing.split(&data[at..]) {
                    Split::Unit { start, end, next } => {
                        flow = on_unit(&data[at + start..at + end], output);
                        at += next;
                        units += 1;
                        if units > 1 && bound.is_some_and(|max| output.len() > max) {
                            shrink(output);
                            return Err(Ended::Unread);
                        }
                    }
                    Split::NeedMore => break,
                    Split::TooLong => {
                        too_long = true;
                        break;
                    }
                }
            }
            let rest = data.len() - at;
            if rest > 0 && matches!(flow, Flow::Continue) && !too_long {
                if from_scratch {
                    self.bufs().pending_in.extend_from_slice(&input[at..n]);
                } else {
                    partial.drain(..at);
                    self.bufs().pending_in = partial;
                }
            }
            self.release();
            let written = self.write(output);
            shrink(output);
            written?;
            if bound.is_some() && self.has_pending_output() {
                return Err(Ended::Unread);
            }
            if too_long {
                return Err(Ended::TooLong);
            }
            Ok(flow)
        })
    }
}

/// Read once. A short read means the socket is drained: the readiness tokio
/// caches is cleared right away, which saves the `recv` that would only
/// return `EAGAIN` before the task sleeps (one syscall per heartbeat).
/// Clearing is safe: tokio keeps readiness that arrived after this read.
fn read_draining(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut drained = None;
    let r = stream.try_io(Interest::READABLE, || {
        let n = (&*SockRef::from(stream)).read(buf)?;
        if n > 0 && n < buf.len() {
            drained = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match drained {
        Some(n) => Ok(n),
        None => r,
    }
}

/// Keep the per-thread output buffer from holding on to a rare large reply.
fn shrink(v: &mut Vec<u8>) {
    if v.capacity() > 64 * 1024 {
        *v = Vec::with_capacity(4096);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_on_lf_and_crlf_and_respect_the_limit() {
        let f = Framing::Lines { max: 8 };
        assert!(matches!(
            f.split(b"abc\r\nx"),
            Split::Unit {
                start: 0,
                end: 3,
                next: 5
            }
        ));
        assert!(matches!(
            f.split(b"abc\nx"),
            Split::Unit {
                start: 0,
                end: 3,
                next: 4
            }
        ));
        assert!(matches!(f.split(b"abc"), Split::NeedMore));
        assert!(matches!(f.split(b"123456789"), Split::TooLong));
        assert!(matches!(f.split(b"123456789\n"), Split::TooLong));
    }

    #[test]
    fn frames_are_refused_by_their_header_before_any_payload() {
        let f = Framing::Frames { max: 16 };
        assert!(matches!(f.split(&[0, 0, 0, 17]), Split::TooLong));
        assert!(matches!(f.split(&[0xff, 0xff, 0xff, 0xff]), Split::TooLong));
        assert!(matches!(f.split(&[0, 0, 0, 2, 1]), Split::NeedMore));
        assert!(matches!(
            f.split(&[0, 0, 0, 2, 1, 2, 3]),
            Split::Unit {
                start: 4,
                end: 6,
                next: 6
            }
        ));
    }
}
