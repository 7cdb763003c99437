//! The integration-test harness: the real `tagent-hub` binary on loopback
//! ports, with a temporary data directory and its stderr captured.
//!
//! ```ignore
//! mod common;
//! let mut hub = common::Server::start();
//! let (status, reply) = hub.register(&json!({"port": "3939"}), Some("t")).await;
//! hub.kill9();
//! hub.restart(); // same data dir, new ports
//! ```
//!
//! Every wait is bounded; a server that does not come up fails the test with
//! its log attached.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

/// How long a server may take to print its `listening` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop may take before the test fails.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The long registration path real tagents are configured with.
pub const REGISTER_PATH: &str = "/autoexecrunner/public/api/rest/tagent/register";

/// The admin token every test hub accepts (through `TAGENT_HUB_ADMIN_TOKEN`)
/// and every [`client`] sends.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// What to start a server with. Everything is optional.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Start without `TAGENT_HUB_ADMIN_TOKEN` (the hub then uses the config's
    /// tokens, or generates one).
    pub no_admin_token: bool,
    /// TOML text written to `<tmp>/hub.toml` and passed as `--config`.
    pub config: Option<String>,
    /// Extra command-line arguments after the standard ones.
    pub args: Vec<String>,
    /// Extra environment variables (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// The data directory, instead of `<tmp>/data` (e.g. a small tmpfs).
    pub data_dir: Option<PathBuf>,
}

impl Options {
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// The addresses a running server reported in its `listening` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addrs {
    pub http: SocketAddr,
    pub heartbeat: SocketAddr,
    /// `host:port` told to tagents.
    pub advertise: String,
}

/// Everything the server wrote to stderr, across restarts, plus a signal for
/// readers waiting on new lines.
#[derive(Default)]
struct LogBuf {
    text: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    text: String,
    /// Bumped when a process's stderr closes, so waiters stop early.
    eofs: u64,
}

/// A running (or stopped) `tagent-hub serve`.
pub struct Server {
    /// Holds the data dir and the config file; removed on drop.
    tmp: tempfile::TempDir,
    options: Options,
    child: Option<Child>,
    addrs: Addrs,
    logs: Arc<LogBuf>,
    /// Where this process's log starts in `logs`.
    log_start: usize,
    /// `LogState::eofs` when this process started: more means its stderr closed.
    eofs_at_start: u64,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// A server with the default configuration.
    pub fn start() -> Server {
        Self::start_with(Options::default())
    }

    /// A server with `toml` as its configuration file.
    pub fn with_config(toml: &str) -> Server {
        Self::start_with(Options::default().config(toml))
    }

    pub fn start_with(options: Options) -> Server {
        Self::try_start_with(options).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Start a server, or say why it did not come up (with its log).
    pub fn try_start_with(options: Options) -> Result<Server, String> {
        let tmp = tempfile::Builder::new()
            .prefix("tagent-hub-test")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        std::fs::create_dir(tmp.path().join("data"))
            .map_err(|e| format!("cannot create the data dir: {e}"))?;
        if let Some(toml) = &options.config {
            std::fs::write(tmp.path().join("hub.toml"), toml)
                .map_err(|e| format!("cannot write the config: {e}"))?;
        }
        let mut server = Server {
            tmp,
            options,
            child: None,
            addrs: Addrs {
                http: ([127, 0, 0, 1], 0).into(),
                heartbeat: ([127, 0, 0, 1], 0).into(),
                advertise: String::new(),
            },
            logs: Arc::default(),
            log_start: 0,
            eofs_at_start: 0,
            reader: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tagent-hub"));
        cmd.arg("serve")
            .args(["--http-addr", "127.0.0.1:0"])
            .args(["--heartbeat-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(self.data_dir());
        if self.options.config.is_some() {
            cmd.arg("--config").arg(self.config_path());
        }
        cmd.args(&self.options.args);
        // Nothing from the test runner's environment configures the hub.
        for (key, _) in std::env::vars() {
            if key.starts_with("TAGENT_HUB_") {
                cmd.env_remove(key);
            }
        }
        if !self.options.env.iter().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        if !self.options.no_admin_token {
            cmd.env("TAGENT_HUB_ADMIN_TOKEN", ADMIN_TOKEN);
        }
        cmd.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start tagent-hub: {e}"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        self.join_reader();
        {
            let state = self.logs.text.lock().unwrap();
            self.log_start = state.text.len();
            self.eofs_at_start = state.eofs;
        }
        let logs = self.logs.clone();
        let reader = std::thread::Builder::new()
            .name("hub-stderr".into())
            .spawn(move || drain(stderr, &logs))
            .expect("spawn the stderr reader");
        self.reader = Some(reader);
        self.child = Some(child);

        match self.wait_log(START_TIMEOUT, parse_listening) {
            Ok(addrs) => {
                self.addrs = addrs;
                Ok(())
            }
            Err(log) => {
                self.kill_child();
                Err(format!(
                    "tagent-hub did not report `listening` within {START_TIMEOUT:?}; its log:\n{log}"
                ))
            }
        }
    }

    /// Wait (bounded) until `found` finds something in what the current
    /// process logged; on timeout, or if its stderr closes first, the log.
    fn wait_log<T>(
        &self,
        timeout: Duration,
        found: impl Fn(&str) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.logs.text.lock().unwrap();
        loop {
            if let Some(v) = found(&state.text[self.log_start..]) {
                return Ok(v);
            }
            let now = Instant::now();
            if now >= deadline || state.eofs > self.eofs_at_start {
                return Err(state.text[self.log_start..].to_owned());
            }
            state = self
                .logs
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap()
                .0;
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.addrs.http
    }

    pub fn heartbeat_addr(&self) -> SocketAddr {
        self.addrs.heartbeat
    }

    /// The `host:port` the server tells tagents (its `advertise`).
    pub fn advertise(&self) -> &str {
        &self.addrs.advertise
    }

    pub fn addrs(&self) -> &Addrs {
        &self.addrs
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addrs.http, path)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.options
            .data_dir
            .clone()
            .unwrap_or_else(|| self.tmp.path().join("data"))
    }

    pub fn config_path(&self) -> PathBuf {
        self.tmp.path().join("hub.toml")
    }

    /// A scratch directory removed with the server.
    pub fn tmp_dir(&self) -> &Path {
        self.tmp.path()
    }

    /// How many descriptors the server process holds now.
    pub fn open_fds(&self) -> usize {
        let pid = self.pid().expect("a running server");
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("read the server's fd table")
            .count()
    }

    /// Lower the running server's open-file limit (soft and hard) to what
    /// it holds now plus `room`; returns the new limit.
    pub fn limit_open_files(&self, room: usize) -> u64 {
        let limit = (self.open_fds() + room) as u64;
        rlimit::prlimit(
            self.pid().expect("a running server") as i32,
            rlimit::Resource::NOFILE,
            Some((limit, limit)),
            None,
        )
        .expect("lower the server's open-file limit");
        limit
    }

    /// `tagent-hub ctl` pointed at this hub with the admin token, and
    /// nothing else from the test runner's environment.
    pub fn ctl_command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tagent-hub"));
        cmd.arg("ctl");
        for (key, _) in std::env::vars() {
            if key.starts_with("TAGENT_HUB_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("TAGENT_HUB_URL", format!("http://{}", self.http_addr()))
            .env("TAGENT_HUB_ADMIN_TOKEN", ADMIN_TOKEN);
        cmd
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything every process of this server has logged so far.
    pub fn logs(&self) -> String {
        self.logs.text.lock().unwrap().text.clone()
    }

    /// What the current (or last) process has logged.
    pub fn current_logs(&self) -> String {
        self.logs.text.lock().unwrap().text[self.log_start..].to_owned()
    }

    /// Wait (bounded) until the current process logs a line containing
    /// `needle`; false on timeout or if its stderr closes first.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_log(timeout, |log| log.contains(needle).then_some(()))
            .is_ok()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Send a signal by name (`TERM`, `KILL`, `INT`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let pid = self.pid().expect("the server is running");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// SIGTERM, then wait (bounded) for a graceful exit. Panics if the
    /// process does not exit in time (it is killed first).
    pub fn stop(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("stop: the server is not running");
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for tagent-hub") {
                self.join_reader();
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.join_reader();
                panic!(
                    "tagent-hub did not stop within {STOP_TIMEOUT:?} of SIGTERM; its log:\n{}",
                    self.current_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: no chance to flush or clean up. Waits for the process to die.
    pub fn kill9(&mut self) {
        self.kill_child();
    }

    /// Start a new process on the same data dir and configuration, stopping
    /// the current one first (gracefully) if it still runs. The new process
    /// listens on new ports: read them again from [`Server::http_addr`].
    pub fn restart(&mut self) {
        if self.is_running() {
            self.stop();
        }
        self.child = None;
        self.spawn().unwrap_or_else(|e| panic!("restart: {e}"));
    }

    fn kill_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_reader();
    }

    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// `POST /register?tenant=...` with `body` as JSON; see [`register`].
    pub async fn register(&self, body: &Value, tenant: Option<&str>) -> (u16, Value) {
        register(self.http_addr(), body, tenant).await
    }

    /// Register a tagent at `ip`:3939 as a real tagent does; returns its id
    /// and its runner list as `proxy.group` holds it (`ip:port,ip:port`).
    pub async fn register_tagent(&self, tenant: &str, ip: &str, credential: &str) -> (u64, String) {
        let (status, reply) = self
            .register(
                &serde_json::json!({"tagentId":"","port":"3939","ipString":ip,"mgmtIp":ip,
                                    "name":"h","credential":credential}),
                Some(tenant),
            )
            .await;
        let id = ok_id(status, &reply);
        let group = reply["Data"]["proxyList"]
            .as_array()
            .expect("a proxyList")
            .iter()
            .map(|p| {
                format!(
                    "{}:{}",
                    p["ip"].as_str().unwrap(),
                    p["port"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        (id, group)
    }

    /// `GET path`: status and body text.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = client()
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("read the body"))
    }

    /// `GET /metrics`, parsed into samples.
    pub async fn metrics(&self) -> Metrics {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {text}");
        Metrics { text }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_child();
    }
}

fn drain(stderr: std::process::ChildStderr, logs: &LogBuf) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let mut state = logs.text.lock().unwrap();
                state.text.push_str(&String::from_utf8_lossy(&line));
                drop(state);
                logs.changed.notify_all();
            }
        }
    }
    logs.text.lock().unwrap().eofs += 1;
    logs.changed.notify_all();
}

/// Find `listening http=A heartbeat=B advertise=C` in a log.
fn parse_listening(log: &str) -> Option<Addrs> {
    let line = log
        .lines()
        .find(|l| l.contains(" listening ") && l.contains("http="))?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_owned)
    };
    Some(Addrs {
        http: field("http=")?.parse().ok()?,
        heartbeat: field("heartbeat=")?.parse().ok()?,
        advertise: field("advertise=")?,
    })
}

/// A reqwest client builder. reqwest is built without a crypto provider
/// of its own (the crate's is ring, installed here as `ctl` does), so every
/// client of the tests starts from this. The tests speak plain HTTP: no
/// roots, so building a client does not read the system's certificate
/// store (tens of milliseconds, each time).
pub fn http_builder() -> reqwest::ClientBuilder {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().tls_certs_only(std::iter::empty())
}

/// A plain HTTP client: no proxies from the environment, no pooling across
/// tests.
pub fn client() -> reqwest::Client {
    client_from(None)
}

/// A client whose connections come from `local` (any 127.0.0.0/8 address
/// works on loopback), so the server sees that peer address.
pub fn client_from(local: Option<IpAddr>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ADMIN_TOKEN}")
            .parse()
            .expect("a header value"),
    );
    http_builder()
        .default_headers(headers)
        .no_proxy()
        .local_address(local)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build an HTTP client")
}

/// `POST /register[?tenant=...]` with `body` as JSON. Returns the HTTP status
/// and the reply parsed as JSON (panics if it is not JSON: every reply of
/// this endpoint must be).
pub async fn register(http: SocketAddr, body: &Value, tenant: Option<&str>) -> (u16, Value) {
    register_with(&client(), http, body, tenant).await
}

/// [`register`] with a given client (e.g. one bound to a source address).
pub async fn register_with(
    client: &reqwest::Client,
    http: SocketAddr,
    body: &Value,
    tenant: Option<&str>,
) -> (u16, Value) {
    let mut url = format!("http://{http}/register");
    if let Some(t) = tenant {
        url.push_str("?tenant=");
        url.push_str(t);
    }
    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    reply_json(resp).await
}

/// The status and JSON body of a reply; panics (showing the text) if the
/// body is not JSON.
pub async fn reply_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("read the body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("reply (HTTP {status}) is not JSON ({e}): {text:?}"));
    (status, json)
}

/// The `tagentId` of an OK reply; panics with the reply otherwise.
pub fn ok_id(status: u16, reply: &Value) -> u64 {
    assert_eq!(status, 200, "not OK: {reply}");
    assert_eq!(reply["Status"], "OK", "not OK: {reply}");
    reply["Data"]["tagentId"]
        .as_u64()
        .unwrap_or_else(|| panic!("tagentId is not an integer: {reply}"))
}

/// Prometheus text, with a lookup for one sample.
pub struct Metrics {
    pub text: String,
}

impl Metrics {
    /// The value of the sample written exactly as `series`, e.g.
    /// `tagent_hub_registrations_total{outcome="created"}`; 0 if absent.
    pub fn value(&self, series: &str) -> f64 {
        self.text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }

    /// Whether any sample whose series starts with `prefix` has counted
    /// something. Every series is exported from start at zero, so a series
    /// that is there but zero counts as not had.
    pub fn has(&self, prefix: &str) -> bool {
        self.text.lines().any(|l| {
            !l.starts_with('#')
                && l.starts_with(prefix)
                && l.rsplit_once(' ')
                    .and_then(|(_, v)| v.parse::<f64>().ok())
                    .is_some_and(|v| v != 0.0)
        })
    }
}

/// How long a test waits for a reply or a close.
pub const WAIT: Duration = Duration::from_secs(10);

/// A TCP connection to `addr` from `local` (any 127.0.0.0/8 address).
pub async fn connect_from(addr: SocketAddr, local: IpAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(addr).await
}

/// A tagent speaking JSON lines, as the Perl tagent does.
pub struct Tagent {
    pub reader: AsyncBufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

impl Tagent {
    pub fn from_halves(reader: OwnedReadHalf, writer: OwnedWriteHalf) -> Tagent {
        Tagent {
            reader: AsyncBufReader::new(reader),
            writer,
        }
    }

    pub fn new(stream: TcpStream) -> Tagent {
        let (r, w) = stream.into_split();
        Tagent {
            reader: AsyncBufReader::new(r),
            writer: w,
        }
    }

    pub async fn connect(addr: SocketAddr) -> Tagent {
        Tagent::new(TcpStream::connect(addr).await.expect("connect"))
    }

    pub async fn connect_from(addr: SocketAddr, local: &str) -> Tagent {
        Tagent::new(
            connect_from(addr, local.parse().expect("an ip"))
                .await
                .expect("connect"),
        )
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    /// The next line, or `None` on EOF / reset / timeout.
    pub async fn line_within(&mut self, within: Duration) -> Option<String> {
        let mut line = String::new();
        match tokio::time::timeout(within, self.reader.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => Some(line),
            _ => None,
        }
    }

    pub async fn line(&mut self) -> Value {
        let line = self.line_within(WAIT).await.expect("a reply line");
        assert!(line.ends_with('\n'), "reply is one line: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply is JSON ({e}): {line:?}"))
    }

    pub async fn send(&mut self, v: &Value) -> Value {
        self.send_raw(format!("{v}\n").as_bytes()).await;
        self.line().await
    }

    /// Whether the hub closed the connection (within the wait).
    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(WAIT, self.reader.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// `GET /api/v1/tagents/{id}` as JSON (it must exist).
pub async fn tagent_json(hub: &Server, id: u64) -> Value {
    let (status, body) = hub.get(&format!("/api/v1/tagents/{id}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The throwaway PostgreSQL cluster `.ci/with-postgres` started: its URL and
/// a schema of this test's own. `None`, with the reason printed, when no
/// cluster was started, so that `cargo test` still passes on a bare machine.
/// The store options of a test's PostgreSQL schema: a pool of 2, no TLS.
#[allow(dead_code)] // not every test file opens a store itself
pub fn pg_options(url: &str, schema: &str) -> tagent_hub::store::PgOptions {
    tagent_hub::store::PgOptions {
        url: url.to_owned(),
        schema: schema.to_owned(),
        pool_size: 2,
        tls_ca: None,
    }
}

pub fn postgres(test: &str) -> Option<(String, String)> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let url = std::env::var("TAGENT_HUB_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let Some(url) = url else {
        // Once per test (a property test asks for every case), straight to
        // stderr past the harness's capture, so a plain `cargo test` shows it.
        static TOLD: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let mut told = TOLD.lock().unwrap_or_else(|e| e.into_inner());
        if told.iter().any(|t| t == test) {
            return None;
        }
        told.push(test.to_owned());
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped {test}: TAGENT_HUB_TEST_DATABASE_URL is not set \
             (run it under .ci/with-postgres to test against PostgreSQL)"
        );
        return None;
    };
    let name: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let schema = format!(
        "t_{name}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    Some((url, schema))
}

/// A native agent's identity: `tenant`, tagent `id` at `ip` (`None`: the
/// connection's source address counts), port 3939, version 2.0.
pub fn identity(
    tenant: &str,
    id: u64,
    ip: Option<&str>,
) -> tagent_hub::heartbeat::client::Identity {
    tagent_hub::heartbeat::client::Identity {
        tenant: tenant.into(),
        agent_id: id,
        ip: ip.map(|s| s.parse().expect("an ip")),
        port: 3939,
        version: Some("2.0".into()),
    }
}

/// A one-file tar, as `tar cf` writes it: what an installation package
/// needs to pass the hub's check (a ustar header).
pub fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    header[257..263].copy_from_slice(b"ustar\0");
    let mut out = header.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}
