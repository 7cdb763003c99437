//! One connection to a tagent's listener (SPEC §5.2-5.4): connect, the
//! handshake, one request, its answer. Every read and write is bounded by
//! [`Limits::read`], the connect by [`Limits::connect`]; sizes by the caller.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::Framed;

use super::codec::{ChunkCodec, Frame, MAX_CHUNK, Out};
use super::error::excerpt;
use super::handshake::{Greeting, HandshakeError, MAX_GREETING, Mode};
use super::metrics::OpenConnection;
use super::{Limits, ListenerError, Password, Request};

/// The largest data chunk an upload sends (SPEC §5.4: at most 32 KiB).
pub const UPLOAD_CHUNK: usize = 32 * 1024;

/// A logged-in connection, ready for its one request.
#[derive(Debug)]
pub struct Connection {
    framed: Framed<TcpStream, ChunkCodec>,
    greeting: Greeting,
    read_timeout: Duration,
    _open: OpenConnection,
}

/// What a command ended with: its tail (SPEC §5.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecStatus {
    /// The exit code (an empty tail: 0).
    Exited(i32),
    /// Any other text: `execute timeout(N seconds)`, `Launch '...' failed: ...`.
    Other(String),
}

/// A command's output lines (stderr merged) and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub lines: Vec<String>,
    pub status: ExecStatus,
}

impl ExecOutput {
    /// The output of a command that exited 0, else [`ListenerError::Failed`]
    /// with the status and the output's first line.
    pub fn success(self) -> Result<ExecOutput, ListenerError> {
        let why = match &self.status {
            ExecStatus::Exited(0) => return Ok(self),
            ExecStatus::Exited(code) => format!("the command exited {code}"),
            ExecStatus::Other(text) => text.clone(),
        };
        Err(ListenerError::Failed(match self.lines.first() {
            Some(first) => format!("{why}: {}", excerpt(first.as_bytes())),
            None => why,
        }))
    }
}

/// What a download sends: a file, or a directory as a tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    File,
    Dir,
}

/// A download under way: its data chunks, at most `max` bytes in all.
#[derive(Debug)]
pub struct Download {
    conn: Connection,
    file_type: FileType,
    received: u64,
    max: u64,
    done: bool,
}

impl Connection {
    /// Connect to `addr` and log in with `password` (SPEC §5.3).
    pub async fn open(
        addr: SocketAddr,
        password: &Password,
        limits: &Limits,
    ) -> Result<Connection, ListenerError> {
        let stream = match timeout(limits.connect, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err(ListenerError::Timeout {
                    waited: limits.connect,
                    stage: "connect",
                });
            }
            Ok(Err(source)) => return Err(ListenerError::Connect { addr, source }),
            Ok(Ok(stream)) => stream,
        };
        let open = OpenConnection::new();
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, ChunkCodec::new(MAX_GREETING));
        let first = match read(&mut framed, limits.read, "greeting").await {
            Ok(Frame::Chunk(payload)) => payload,
            Ok(_) => return Err(not_a_tagent("it sent no greeting")),
            Err(ListenerError::Chunks(_)) => {
                return Err(not_a_tagent("its first chunk is not a greeting"));
            }
            Err(e) => return Err(e),
        };
        let greeting = Greeting::parse(&first).map_err(ListenerError::NotATagent)?;
        let answer = greeting
            .answer(password)
            .map_err(ListenerError::WrongCredential)?;
        if greeting.mode == Mode::Encrypted {
            framed.codec_mut().encrypt_with(password.clone());
        }
        write(&mut framed, Out::Chunk(&answer), limits.read).await?;
        match read(&mut framed, limits.read, "login").await? {
            Frame::Chunk(reply) if &reply[..] == b"auth succeed" => {}
            Frame::Chunk(reply) if reply.starts_with(b"auth failed") => {
                return Err(ListenerError::AuthRefused);
            }
            Frame::Chunk(reply) => {
                return Err(ListenerError::Protocol(format!(
                    "it answered the login with '{}'",
                    excerpt(&reply)
                )));
            }
            Frame::End | Frame::Tail(_) => return Err(ListenerError::AuthRefused),
        }
        framed.codec_mut().set_max_chunk(MAX_CHUNK);
        Ok(Connection {
            framed,
            greeting,
            read_timeout: limits.read,
            _open: open,
        })
    }

    /// What the tagent said of itself when it greeted the hub.
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    async fn next(&mut self, stage: &'static str) -> Result<Frame, ListenerError> {
        read(&mut self.framed, self.read_timeout, stage).await
    }

    async fn send(&mut self, out: Out<'_>) -> Result<(), ListenerError> {
        write(&mut self.framed, out, self.read_timeout).await
    }

    async fn request(&mut self, request: Request<'_>) -> Result<(), ListenerError> {
        let line = request.encode(&self.greeting.charset);
        self.send(Out::Chunk(line.as_bytes())).await
    }

    /// The tail after an end (the decoder yields nothing else there).
    async fn tail(&mut self, stage: &'static str) -> Result<Bytes, ListenerError> {
        match self.next(stage).await? {
            Frame::Tail(tail) => Ok(tail),
            _ => Err(ListenerError::Protocol(format!(
                "no tail after the {stage}"
            ))),
        }
    }

    /// A chunk; an end here is the tagent's refusal (its tail says why).
    async fn chunk(&mut self, stage: &'static str) -> Result<Bytes, ListenerError> {
        let tail = match self.next(stage).await? {
            Frame::Chunk(payload) => return Ok(payload),
            Frame::End => self.tail(stage).await?,
            Frame::Tail(tail) => tail,
        };
        Err(if tail.is_empty() {
            ListenerError::Protocol(format!("it ended its answer before the {stage}"))
        } else {
            ListenerError::Failed(excerpt(&tail))
        })
    }

    /// `echo`: the text must come back as it went.
    pub async fn echo(mut self, text: &str) -> Result<(), ListenerError> {
        self.request(Request::Echo { text }).await?;
        let back = self.chunk("echo").await?;
        if back != text.as_bytes() {
            return Err(ListenerError::Protocol(format!(
                "it echoed '{}'",
                excerpt(&back)
            )));
        }
        Ok(())
    }

    /// `reload`: the tagent answers `Status:200` and restarts.
    pub async fn reload(mut self) -> Result<(), ListenerError> {
        self.request(Request::Reload).await?;
        let head = self.chunk("reload status").await?;
        status_200(&head)
    }

    /// `execmd`: the output lines (at most `max_output` bytes) and the
    /// status. Never half-closes while the command runs (the tagent would
    /// kill it).
    pub async fn execmd(
        mut self,
        command: &str,
        max_output: usize,
    ) -> Result<ExecOutput, ListenerError> {
        self.request(Request::Execmd { command }).await?;
        let mut lines = Vec::new();
        let mut total = 0usize;
        loop {
            match self.next("command output").await? {
                Frame::Chunk(chunk) => {
                    total += chunk.len();
                    if total > max_output {
                        return Err(ListenerError::TooLarge {
                            max: max_output as u64,
                        });
                    }
                    let text = String::from_utf8_lossy(&chunk);
                    lines.extend(text.lines().map(str::to_owned));
                }
                Frame::End => break,
                Frame::Tail(_) => {
                    return Err(ListenerError::Protocol("a tail before the end".into()));
                }
            }
        }
        let tail = self.tail("exit status").await?;
        let text = String::from_utf8_lossy(&tail);
        let text = text.trim();
        let status = if text.is_empty() {
            ExecStatus::Exited(0)
        } else {
            match text.parse() {
                Ok(code) => ExecStatus::Exited(code),
                Err(_) => ExecStatus::Other(excerpt(text.as_bytes())),
            }
        };
        Ok(ExecOutput { lines, status })
    }

    /// `download`: the head is read here; the data through [`Download::next_chunk`].
    /// A path that does not exist is [`ListenerError::NotFound`].
    pub async fn download(
        mut self,
        path: &str,
        follow_links: bool,
        max_bytes: u64,
    ) -> Result<Download, ListenerError> {
        self.request(Request::Download { path, follow_links })
            .await?;
        let tail = match self.next("download head").await? {
            Frame::Chunk(head) => return self.downloading(&head, max_bytes),
            Frame::End => self.tail("download head").await?,
            Frame::Tail(tail) => tail,
        };
        Err(if tail.is_empty() {
            ListenerError::Protocol("it ended the download before its head".into())
        } else {
            ListenerError::NotFound(excerpt(&tail))
        })
    }

    fn downloading(self, head: &[u8], max_bytes: u64) -> Result<Download, ListenerError> {
        let file_type = match head {
            b"Status:200,FileType:file" => FileType::File,
            b"Status:200,FileType:dir" => FileType::Dir,
            _ => return Err(ListenerError::Failed(excerpt(head))),
        };
        Ok(Download {
            conn: self,
            file_type,
            received: 0,
            max: max_bytes,
            done: false,
        })
    }

    /// `upload`: `data` as `source_name` into `dest_dir`, then a half-close
    /// and the tagent's verdict.
    pub async fn upload(
        mut self,
        source_name: &str,
        dest_dir: &str,
        data: &[u8],
    ) -> Result<(), ListenerError> {
        self.request(Request::Upload {
            source_name,
            dest_dir,
        })
        .await?;
        let head = self.chunk("upload status").await?;
        status_200(&head)?;
        for piece in data.chunks(UPLOAD_CHUNK) {
            self.send(Out::Chunk(piece)).await?;
        }
        self.send(Out::End).await?;
        match timeout(self.read_timeout, self.framed.get_mut().shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ListenerError::Io(e)),
            Err(_) => {
                return Err(ListenerError::Timeout {
                    waited: self.read_timeout,
                    stage: "upload",
                });
            }
        }
        match self.next("upload result").await? {
            Frame::End => {}
            Frame::Chunk(c) | Frame::Tail(c) => {
                return Err(ListenerError::Protocol(format!(
                    "it answered the upload with '{}'",
                    excerpt(&c)
                )));
            }
        }
        let tail = self.tail("upload result").await?;
        if tail.is_empty() {
            Ok(())
        } else {
            Err(ListenerError::Failed(excerpt(&tail)))
        }
    }
}

impl Download {
    pub fn file_type(&self) -> FileType {
        self.file_type
    }

    /// The next data chunk; `None` at a successful end. After an error,
    /// `None`.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ListenerError> {
        if self.done {
            return Ok(None);
        }
        let next = self.step().await;
        if !matches!(next, Ok(Some(_))) {
            self.done = true;
        }
        next
    }

    async fn step(&mut self) -> Result<Option<Bytes>, ListenerError> {
        match self.conn.next("download data").await? {
            Frame::Chunk(data) => {
                self.received += data.len() as u64;
                if self.received > self.max {
                    return Err(ListenerError::TooLarge { max: self.max });
                }
                Ok(Some(data))
            }
            Frame::End => {
                let tail = self.conn.tail("download").await?;
                if tail.is_empty() {
                    Ok(None)
                } else {
                    Err(ListenerError::Failed(excerpt(&tail)))
                }
            }
            Frame::Tail(_) => Err(ListenerError::Protocol("a tail before the end".into())),
        }
    }
}

fn not_a_tagent(why: &'static str) -> ListenerError {
    ListenerError::NotATagent(HandshakeError::NotATagent(why))
}

fn status_200(head: &[u8]) -> Result<(), ListenerError> {
    if head == b"Status:200" {
        Ok(())
    } else {
        Err(ListenerError::Failed(excerpt(head)))
    }
}

/// The next frame within `wait`; the peer's close is [`ListenerError::ClosedEarly`].
async fn read(
    framed: &mut Framed<TcpStream, ChunkCodec>,
    wait: Duration,
    stage: &'static str,
) -> Result<Frame, ListenerError> {
    match timeout(wait, framed.next()).await {
        Err(_) => Err(ListenerError::Timeout {
            waited: wait,
            stage,
        }),
        Ok(None) => Err(ListenerError::ClosedEarly),
        Ok(Some(frame)) => Ok(frame?),
    }
}

async fn write(
    framed: &mut Framed<TcpStream, ChunkCodec>,
    out: Out<'_>,
    wait: Duration,
) -> Result<(), ListenerError> {
    match timeout(wait, framed.send(out)).await {
        Err(_) => Err(ListenerError::Timeout {
            waited: wait,
            stage: "write",
        }),
        Ok(result) => Ok(result?),
    }
}
