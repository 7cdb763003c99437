//! Servers the generator starts itself, on loopback, each in its own
//! temporary directory: tagent-hub (for the `restart` mode and `compare`),
//! and for `compare` the baseline peers mosquitto and nats-server and the
//! floor (`tagent-load floor`).
//!
//! A server is started with a config written into its directory, on ports
//! picked free on 127.0.0.1, and counts as up when its port accepts. It is
//! killed when dropped, so no run leaves one behind.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::session_args::Proto;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hub,
    Mosquitto,
    Nats,
    /// `tagent-load floor`: the least any server can do per heartbeat.
    Floor,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hub => "tagent-hub",
            Kind::Mosquitto => "mosquitto",
            Kind::Nats => "nats-server",
            Kind::Floor => "floor",
        }
    }
}

pub struct Server {
    pub kind: Kind,
    /// Where sessions connect (heartbeat port, MQTT listener, NATS port).
    pub addr: SocketAddr,
    /// tagent-hub's HTTP base URL.
    pub url: Option<String>,
    /// tagent-hub's admin token (`TAGENT_HUB_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    pub dir: PathBuf,
    command: Vec<String>,
    child: Child,
}

/// A port free on 127.0.0.1 right now (the OS picks it; the listener is
/// closed again so the server can take it).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The program's path: as given if it has a `/`, else looked up in `PATH`
/// and the sbin directories Debian installs servers into.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// tagent-hub serving `dir`, with a random admin token.
    pub fn hub(bin: &Path, dir: &Path) -> anyhow::Result<Server> {
        let (http, hb) = (free_port()?, free_port()?);
        let token = hex::encode(rand::random::<[u8; 16]>());
        // The hub runs in its own directory: a relative path would not name it there.
        let bin = std::fs::canonicalize(bin)
            .with_context(|| format!("no tagent-hub binary at {}", bin.display()))?;
        let command = vec![
            bin.display().to_string(),
            "serve".into(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--http-addr".into(),
            format!("127.0.0.1:{http}"),
            "--heartbeat-addr".into(),
            format!("127.0.0.1:{hb}"),
        ];
        Self::start(
            Kind::Hub,
            command,
            dir,
            SocketAddr::from(([127, 0, 0, 1], hb)),
            Some(format!("http://127.0.0.1:{http}")),
            Some(token),
        )
    }

    /// `tagent-load floor` (this program) answering `protocol`.
    pub fn floor(protocol: Proto, dir: &Path) -> anyhow::Result<Server> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let command = vec![
            std::env::current_exe()?.display().to_string(),
            "floor".into(),
            "--listen".into(),
            addr.to_string(),
            "--protocol".into(),
            protocol.name().into(),
        ];
        Self::start(Kind::Floor, command, dir, addr, None, None)
    }

    /// mosquitto with anonymous clients on one loopback listener, no
    /// persistence, and no connection limit of its own (the process's file
    /// limit is the bound).
    pub fn mosquitto(bin: &Path, dir: &Path) -> anyhow::Result<Server> {
        Self::peer(Kind::Mosquitto, bin, dir, "mosquitto.conf", |port| {
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n\
                 persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            )
        })
    }

    /// nats-server on one loopback port, with its connection limit above
    /// anything the generator opens.
    pub fn nats(bin: &Path, dir: &Path) -> anyhow::Result<Server> {
        Self::peer(Kind::Nats, bin, dir, "nats.conf", |port| {
            format!("listen: 127.0.0.1:{port}\nmax_connections: 1000000\n")
        })
    }

    /// A peer started as `bin -c <dir>/<file>`, the file written by `config`
    /// for the port it is to listen on.
    fn peer(
        kind: Kind,
        bin: &Path,
        dir: &Path,
        file: &str,
        config: impl FnOnce(u16) -> String,
    ) -> anyhow::Result<Server> {
        let port = free_port()?;
        let conf = dir.join(file);
        std::fs::write(&conf, config(port))?;
        let command = vec![
            bin.display().to_string(),
            "-c".into(),
            conf.display().to_string(),
        ];
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Self::start(kind, command, dir, addr, None, None)
    }

    fn start(
        kind: Kind,
        command: Vec<String>,
        dir: &Path,
        addr: SocketAddr,
        url: Option<String>,
        admin_token: Option<String>,
    ) -> anyhow::Result<Server> {
        let child = spawn(&command, dir, admin_token.as_deref())?;
        let mut s = Server {
            kind,
            addr,
            url,
            admin_token,
            dir: dir.to_owned(),
            command,
            child,
        };
        s.wait_up(Duration::from_secs(60))?;
        Ok(s)
    }

    /// Wait until the session port accepts (and the HTTP port, for the hub).
    pub fn wait_up(&mut self, within: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut ports = vec![self.addr];
        if let Some(url) = &self.url {
            ports.push(url.trim_start_matches("http://").parse()?);
        }
        for port in ports {
            while std::net::TcpStream::connect_timeout(&port, Duration::from_millis(200)).is_err() {
                if let Some(status) = self.child.try_wait()? {
                    bail!(
                        "{} exited ({status}) before it listened; see {}",
                        self.kind.name(),
                        self.dir.join("server.log").display()
                    );
                }
                if started.elapsed() > within {
                    bail!(
                        "{} did not listen on {port} within {within:?}",
                        self.kind.name()
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(started.elapsed())
    }

    /// SIGTERM, and wait (bounded: SIGKILL after `within`) until it has
    /// exited; how long that took.
    pub fn stop(&mut self, within: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        if self.child.try_wait()?.is_none() {
            // SAFETY: kill(2) on our own child's pid, which is not reaped
            // yet (try_wait saw it running), so it cannot be another process.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        }
        while self.child.try_wait()?.is_none() {
            if started.elapsed() > within {
                self.child.kill()?;
                self.child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(started.elapsed())
    }

    /// Start the same command again on the same directory and ports.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.child = spawn(&self.command, &self.dir, self.admin_token.as_deref())?;
        Ok(())
    }
}

fn spawn(command: &[String], dir: &Path, admin_token: Option<&str>) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))?;
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(token) = admin_token {
        cmd.env("TAGENT_HUB_ADMIN_TOKEN", token);
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", command[0]))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
