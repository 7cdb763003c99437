//! A `sessions` worker process as the parent holds it: started with its
//! share of the tagents, told what to do, and heard in [`crate::wire`]
//! messages. Dropping it kills the process.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::outcomes::Live;
use crate::session_args::Args;
use crate::wire::{self, FromWorker, MalformedLine, Tally, ToWorker};

pub struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    /// Its messages but `Tick`, which go straight into `live`.
    messages: Receiver<Result<FromWorker, MalformedLine>>,
}

impl WorkerProcess {
    /// Start a worker over sessions `range`; its `Tick`s feed `live`.
    pub fn spawn(args: &Args, range: (usize, usize), live: Arc<Live>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("sessions")
            .args(["--url", &args.url])
            .args(["--heartbeat", &args.heartbeat.to_string()])
            .args(["--protocol", args.protocol.name()])
            .args(["--mode", args.mode.name()])
            .args(["--sessions", &args.sessions.to_string()])
            .args(["--interval", &args.interval.to_string()])
            .args(["--hold", &args.hold.to_string()])
            .args(["--churn", &args.churn.to_string()])
            .args(["--tenant", &args.tenant])
            .args(["--worker", &format!("{}..{}", range.0, range.1)]);
        if args.reconnect {
            cmd.arg("--reconnect");
        }
        if args.floor {
            cmd.arg("--floor");
        }
        for a in &args.failover {
            cmd.arg("--failover").arg(a.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start a worker process")?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The worker's running totals; what changed goes into `live`.
            let mut last = [0u64; 3];
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let message = wire::decode::<FromWorker>(&line);
                if let Ok(FromWorker::Tick { ok, errors, up }) = message {
                    let counters = [&live.ok, &live.errors, &live.up];
                    for (i, v) in [ok, errors, up].into_iter().enumerate() {
                        // Wrapping: `up` may go down.
                        counters[i].fetch_add(v.wrapping_sub(last[i]), Ordering::Relaxed);
                        last[i] = v;
                    }
                } else if tx.send(message).is_err() {
                    break;
                }
            }
        });
        Ok(WorkerProcess {
            child,
            stdin,
            messages: rx,
        })
    }

    pub fn tell(&mut self, message: ToWorker) -> anyhow::Result<()> {
        writeln!(self.stdin, "{}", wire::encode(&message))?;
        Ok(self.stdin.flush()?)
    }

    /// Its tagents are registered; how many.
    pub async fn registered(&self, within: Duration) -> anyhow::Result<usize> {
        match self.next("registered", within).await? {
            FromWorker::Registered { sessions } => Ok(sessions),
            other => unexpected("registered", &other),
        }
    }

    /// Its connect storm is over: sessions up, and its CPU seconds.
    pub async fn ready(&self, within: Duration) -> anyhow::Result<(usize, f64)> {
        match self.next("ready", within).await? {
            FromWorker::Ready { up, storm_cpu_secs } => Ok((up, storm_cpu_secs)),
            other => unexpected("ready", &other),
        }
    }

    /// Its tally at the end.
    pub async fn done(&self, within: Duration) -> anyhow::Result<Tally> {
        match self.next("done", within).await? {
            FromWorker::Done(tally) => Ok(tally),
            other => unexpected("done", &other),
        }
    }

    /// The next message but a `Tick`. Polls, so the runtime (and the
    /// progress line) keeps going meanwhile.
    async fn next(&self, awaited: &str, within: Duration) -> anyhow::Result<FromWorker> {
        let deadline = Instant::now() + within;
        loop {
            match self.messages.try_recv() {
                Ok(message) => return Ok(message?),
                Err(TryRecvError::Empty) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => bail!("a worker did not say '{awaited}' in time ({e})"),
            }
        }
    }
}

fn unexpected<T>(awaited: &str, got: &FromWorker) -> anyhow::Result<T> {
    bail!("a worker said '{}' where '{awaited}' was due", got.name())
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
