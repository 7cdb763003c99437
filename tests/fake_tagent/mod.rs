//! A fake tagent listener, written from SPEC §5 alone (not from the hub's
//! client): the greeting and challenge, both modes (`Tagent1.1`,
//! `Tagent1.1s`), `execmd` over a config file, log files and commands with
//! exit codes, `download`, `upload`, `reload` and `echo`; and the hostile
//! peers a hub must survive. It binds 127.0.0.1:0 and serves until dropped.
//!
//! ```ignore
//! mod fake_tagent;
//! let fake = fake_tagent::FakeTagent::start(fake_tagent::Setup::default()).await;
//! fake.addr(); fake.credential(); fake.requests(); fake.reloads();
//! ```

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rc4::{KeyInit, Rc4, StreamCipher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The tagent's public constant for `{ENCRYPTED}` credentials (SPEC §5.1).
const CREDENTIAL_KEY: &[u8] = b"#ts=9^0$1";

/// How the fake misbehaves, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// Greets like an SSH server, then waits.
    GarbageGreeting,
    /// A greeting whose version is not a tagent's.
    NotTagentVersion,
    /// A first chunk of 60,000 bytes.
    OversizedGreeting,
    /// Its challenge is made with another password (or it is an impostor).
    WrongPassword,
    /// Answers the login `auth failed`.
    AuthFailed,
    /// Accepts and never says anything.
    StallGreeting,
    /// Logs in, then never answers the request.
    StallRequest,
    /// Logs in, then sends bytes that are no chunk stream (a length header
    /// naming 65,535 bytes, a few of them, and a close).
    GarbageChunks,
    /// Logs in, then closes in the middle of a chunk.
    CloseEarly,
    /// `execmd` sends output forever.
    EndlessOutput,
    /// `download` sends data forever.
    EndlessDownload,
}

/// What the fake holds and how it behaves.
#[derive(Debug, Clone)]
pub struct Setup {
    pub password: String,
    /// `Tagent1.1s`: every chunk after the greeting RC4'd.
    pub encrypted: bool,
    /// `Linux`, `windows`, ...
    pub ostype: String,
    pub charset: String,
    /// `$TAGENT_HOME/conf/tagent.conf`.
    pub config: String,
    /// `$TAGENT_HOME/logs/<name>`.
    pub logs: BTreeMap<String, Vec<u8>>,
    /// Other commands: output lines and exit code.
    pub commands: BTreeMap<String, (Vec<String>, i32)>,
    pub hostile: Option<Hostile>,
}

pub const EXAMPLE_PASSWORD: &str = "h2WE1YStN2oI749g";

pub const EXAMPLE_CONFIG: &str = "\
# tagent configuration
tenant=demo
credential={ENCRYPTED}03b423680bafbbe3b506d377bec03c0b
listen.port=3939
proxy.registeraddress=http://127.0.0.1:8084/autoexecrunner/public/api/rest/tagent/register?tenant=demo

# runners, comma separated
proxy.group=127.0.0.1:8888,127.0.0.2:8888
";

impl Default for Setup {
    fn default() -> Self {
        let mut logs = BTreeMap::new();
        logs.insert("tagent.log".to_owned(), b"line one\nline two\n".to_vec());
        logs.insert("tagent.log.1".to_owned(), vec![b'x'; 100_000]);
        Setup {
            password: EXAMPLE_PASSWORD.into(),
            encrypted: false,
            ostype: "Linux".into(),
            charset: "UTF-8".into(),
            config: EXAMPLE_CONFIG.into(),
            logs,
            commands: BTreeMap::new(),
            hostile: None,
        }
    }
}

impl Setup {
    pub fn hostile(mut self, h: Hostile) -> Self {
        self.hostile = Some(h);
        self
    }

    pub fn encrypted(mut self) -> Self {
        self.encrypted = true;
        self
    }

    pub fn windows(mut self) -> Self {
        self.ostype = "windows".into();
        self.charset = "cp936".into();
        self
    }
}

/// One request as the fake decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub user: String,
    pub kind: String,
    pub charset: String,
    pub args: Vec<String>,
}

#[derive(Default)]
struct Record {
    requests: Mutex<Vec<Seen>>,
    uploads: Mutex<Vec<(String, String, Vec<u8>)>>,
    reloads: Arc<AtomicUsize>,
    logins: AtomicUsize,
    open: AtomicUsize,
    accepted: AtomicUsize,
}

pub struct FakeTagent {
    addr: SocketAddr,
    setup: Arc<Setup>,
    record: Arc<Record>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTagent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeTagent {
    pub async fn start(setup: Setup) -> FakeTagent {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let setup = Arc::new(setup);
        let record = Arc::new(Record::default());
        let (s, r) = (setup.clone(), record.clone());
        let task = tokio::spawn(async move {
            // Bounded: a test opens a few connections, never a thousand.
            for _ in 0..1000 {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                r.accepted.fetch_add(1, Ordering::SeqCst);
                r.open.fetch_add(1, Ordering::SeqCst);
                let (s, r) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &s, &r).await;
                    r.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FakeTagent {
            addr,
            setup,
            record,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The credential a real tagent with this password registers.
    pub fn credential(&self) -> String {
        credential_of(&self.setup.password)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.record.requests.lock().unwrap().clone()
    }

    /// (source name, destination dir, bytes) of every upload.
    pub fn uploads(&self) -> Vec<(String, String, Vec<u8>)> {
        self.record.uploads.lock().unwrap().clone()
    }

    pub fn reloads(&self) -> usize {
        self.record.reloads.load(Ordering::SeqCst)
    }

    /// The count of reloads, to watch from a task of its own.
    pub fn reloads_counter(&self) -> Arc<AtomicUsize> {
        self.record.reloads.clone()
    }

    pub fn logins(&self) -> usize {
        self.record.logins.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.record.accepted.load(Ordering::SeqCst)
    }

    /// Connections the fake still has open.
    pub fn open(&self) -> usize {
        self.record.open.load(Ordering::SeqCst)
    }

    /// Wait (up to 10 s) until the hub has closed every connection.
    pub async fn wait_all_closed(&self) -> bool {
        for _ in 0..200 {
            if self.open() == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// `{ENCRYPTED}` + hex(RC4(key constant, password)).
pub fn credential_of(password: &str) -> String {
    let mut b = password.as_bytes().to_vec();
    rc4(CREDENTIAL_KEY, &mut b);
    format!("{{ENCRYPTED}}{}", hex::encode(b))
}

fn rc4(key: &[u8], data: &mut [u8]) {
    Rc4::new_from_slice(key).unwrap().apply_keystream(data);
}

/// One side's chunk stream: clear, or RC4'd per chunk once `key` is set.
struct Wire {
    stream: TcpStream,
    key: Option<Vec<u8>>,
}

impl Wire {
    async fn chunk(&mut self, payload: &[u8]) -> std::io::Result<()> {
        assert!(!payload.is_empty() && payload.len() <= 65535);
        let mut p = payload.to_vec();
        if let Some(k) = &self.key {
            rc4(k, &mut p);
        }
        self.stream
            .write_all(&(p.len() as u16).to_be_bytes())
            .await?;
        self.stream.write_all(&p).await
    }

    async fn end(&mut self, tail: &[u8]) -> std::io::Result<()> {
        let mut t = tail.to_vec();
        if let (Some(k), false) = (&self.key, t.is_empty()) {
            rc4(k, &mut t);
        }
        self.stream.write_all(&[0, 0]).await?;
        self.stream.write_all(&t).await?;
        self.stream.shutdown().await
    }

    /// A chunk, or `None` at `00 00`.
    async fn read(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).await?;
        let len = usize::from(u16::from_be_bytes(head));
        if len == 0 {
            return Ok(None);
        }
        let mut p = vec![0; len];
        self.stream.read_exact(&mut p).await?;
        if let Some(k) = &self.key {
            rc4(k, &mut p);
        }
        Ok(Some(p))
    }

    /// Wait for the peer to close (what a stalled tagent sees of a hub
    /// that gave up), at most 60 s.
    async fn until_closed(&mut self) {
        let mut buf = [0u8; 1024];
        let wait = async {
            while let Ok(n) = self.stream.read(&mut buf).await {
                if n == 0 {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(60), wait).await;
    }
}

async fn serve(stream: TcpStream, setup: &Setup, record: &Record) -> std::io::Result<()> {
    let mut w = Wire { stream, key: None };
    let pw = setup.password.as_bytes();
    match setup.hostile {
        Some(Hostile::GarbageGreeting) => {
            w.stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await?;
            w.until_closed().await;
            return Ok(());
        }
        Some(Hostile::OversizedGreeting) => {
            w.chunk(&vec![b'L'; 60_000]).await?;
            w.until_closed().await;
            return Ok(());
        }
        Some(Hostile::StallGreeting) => {
            w.until_closed().await;
            return Ok(());
        }
        _ => {}
    }
    // SPEC §5.3 step 1.
    let (f1, f2, t) = (1234u64, 5678u64, 1_700_000_000u64);
    let mut challenge = format!("{f1},{f2},{t}").into_bytes();
    let challenge_key: &[u8] = if setup.hostile == Some(Hostile::WrongPassword) {
        b"another-password"
    } else {
        pw
    };
    rc4(challenge_key, &mut challenge);
    let version = match setup.hostile {
        Some(Hostile::NotTagentVersion) => "Tagent9",
        _ if setup.encrypted => "Tagent1.1s",
        _ => "Tagent1.1",
    };
    let greeting = format!(
        "{}|{}|{}|{version}",
        setup.ostype,
        setup.charset,
        hex::encode(&challenge)
    );
    w.chunk(greeting.as_bytes()).await?;
    if setup.encrypted {
        w.key = Some(pw.to_vec());
    }
    // Step 3: the hub's answer.
    let Some(answer) = w.read().await? else {
        return Ok(());
    };
    let expected = format!("{},{t}", f1 * f2);
    let mut got = hex::decode(&answer).unwrap_or_default();
    rc4(pw, &mut got);
    if got != expected.as_bytes() || setup.hostile == Some(Hostile::AuthFailed) {
        w.chunk(b"auth failed").await?;
        return w.stream.shutdown().await;
    }
    w.chunk(b"auth succeed").await?;
    record.logins.fetch_add(1, Ordering::SeqCst);
    // SPEC §5.4: one request.
    let Some(line) = w.read().await? else {
        return Ok(());
    };
    let seen = parse_request(&line);
    record.requests.lock().unwrap().push(seen.clone());
    match setup.hostile {
        Some(Hostile::StallRequest) => {
            w.until_closed().await;
            return Ok(());
        }
        Some(Hostile::GarbageChunks) => {
            w.stream.write_all(b"\xff\xffgarbage").await?;
            return w.stream.shutdown().await;
        }
        Some(Hostile::CloseEarly) => {
            w.stream.write_all(b"\x00\x10Status").await?;
            return w.stream.shutdown().await;
        }
        _ => {}
    }
    let arg = |i: usize| seen.args.get(i).cloned().unwrap_or_default();
    let endless_output = setup.hostile == Some(Hostile::EndlessOutput);
    let endless_download = setup.hostile == Some(Hostile::EndlessDownload);
    match seen.kind.as_str() {
        "echo" => {
            w.chunk(arg(0).as_bytes()).await?;
            w.stream.shutdown().await
        }
        "reload" => {
            record.reloads.fetch_add(1, Ordering::SeqCst);
            w.chunk(b"Status:200").await?;
            w.stream.shutdown().await
        }
        "execmd" => {
            if endless_output {
                return forever(&mut w, b"more output").await;
            }
            let (lines, code) = run(setup, &arg(0));
            // One chunk a line, its newline kept (so a blank line is a
            // chunk too: a chunk is never empty).
            for l in lines {
                w.chunk(format!("{l}\n").as_bytes()).await?;
            }
            w.end(code.to_string().as_bytes()).await
        }
        "download" => {
            let path = arg(0);
            let name = path
                .strip_prefix("$TAGENT_HOME/logs/")
                .or_else(|| path.strip_prefix(r"%TAGENT_HOME%\logs\"));
            match name.and_then(|n| setup.logs.get(n)) {
                Some(data) => {
                    w.chunk(b"Status:200,FileType:file").await?;
                    if endless_download {
                        return forever(&mut w, &[b'z'; 4096]).await;
                    }
                    for piece in data.chunks(4096) {
                        w.chunk(piece).await?;
                    }
                    w.end(b"").await
                }
                None => w.end(format!("{path} not exists.").as_bytes()).await,
            }
        }
        "upload" => {
            w.chunk(b"Status:200").await?;
            let mut data = Vec::new();
            while let Some(c) = w.read().await? {
                data.extend_from_slice(&c);
            }
            // The hub half-closes after its `00 00`.
            let mut rest = Vec::new();
            w.stream.read_to_end(&mut rest).await?;
            record.uploads.lock().unwrap().push((arg(1), arg(2), data));
            w.end(b"").await
        }
        other => {
            w.end(format!("unknown request type {other}").as_bytes())
                .await
        }
    }
}

/// Chunks until the hub gives up (bounded: 1 GiB at most).
async fn forever(w: &mut Wire, piece: &[u8]) -> std::io::Result<()> {
    for _ in 0..(1 << 30) / piece.len() {
        w.chunk(piece).await?;
    }
    Ok(())
}

fn parse_request(line: &[u8]) -> Seen {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.split('|');
    let user = parts.next().unwrap_or_default().to_owned();
    let kind = parts.next().unwrap_or_default().to_owned();
    let charset = parts.next().unwrap_or_default().to_owned();
    let args = parts
        .map(|a| String::from_utf8_lossy(&hex::decode(a).unwrap_or_default()).into_owned())
        .collect();
    Seen {
        user,
        kind,
        charset,
        args,
    }
}

/// What the fake's "shell" prints for a command, and its exit code.
fn run(setup: &Setup, command: &str) -> (Vec<String>, i32) {
    match command {
        "cat $TAGENT_HOME/conf/tagent.conf" | r"type %TAGENT_HOME%\conf\tagent.conf" => {
            (setup.config.lines().map(str::to_owned).collect(), 0)
        }
        "cd $TAGENT_HOME/logs/ && ls *.log*" | r"cd /d %TAGENT_HOME%\logs && dir /B" => {
            if setup.logs.is_empty() {
                (
                    vec!["ls: cannot access '*.log*': No such file or directory".into()],
                    2,
                )
            } else {
                (setup.logs.keys().cloned().collect(), 0)
            }
        }
        other => match setup.commands.get(other) {
            Some((lines, code)) => (lines.clone(), *code),
            None => (vec![format!("sh: {other}: command not found")], 127),
        },
    }
}
