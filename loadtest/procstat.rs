//! CPU seconds and memory of a process, read from `/proc/<pid>/stat` and
//! `/proc/<pid>/status`, and a watcher that samples them during a run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::outcomes::Live;
use crate::progress::Progress;

/// `/proc/<pid>/stat` counts CPU time in clock ticks of `USER_HZ`, which the
/// kernel ABI fixes at 100 on every mainstream architecture.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// User + system CPU seconds since the process started.
    pub cpu_secs: f64,
    pub rss_kib: u64,
    /// Peak RSS since the process started.
    pub hwm_kib: u64,
    pub threads: u64,
}

/// `None` reads this process.
pub fn sample(pid: Option<u32>) -> std::io::Result<Sample> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_owned(),
    };
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // stat(5) numbers from 1: utime is 14, stime 15, num_threads 20; `fields[0]` is 3.
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let cpu_secs = (field(14) + field(15)) as f64 / USER_HZ;
    let threads = field(20);
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let kib = |key: &str| crate::proc_status::kib(&status, key);
    Ok(Sample {
        at,
        cpu_secs,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        threads,
    })
}

/// A process's use over a run.
#[derive(Debug, Clone)]
pub struct Usage {
    pub pid: Option<u32>,
    pub wall_secs: f64,
    pub cpu_secs: f64,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    /// Highest RSS seen by the once-a-second samples (and at start and end).
    pub rss_max_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
}

impl Usage {
    fn between(pid: Option<u32>, start: &Sample, end: &Sample, max_rss: u64) -> Usage {
        Usage {
            pid,
            wall_secs: end.at.duration_since(start.at).as_secs_f64(),
            cpu_secs: end.cpu_secs - start.cpu_secs,
            rss_start_kib: start.rss_kib,
            rss_end_kib: end.rss_kib,
            rss_max_kib: max_rss.max(start.rss_kib).max(end.rss_kib),
            hwm_kib: end.hwm_kib,
            threads: end.threads,
        }
    }

    /// Average cores busy: 1.0 is one core saturated.
    pub fn cores(&self) -> f64 {
        if self.wall_secs > 0.0 {
            self.cpu_secs / self.wall_secs
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "pid": self.pid,
            "wall_secs": self.wall_secs,
            "cpu_secs": self.cpu_secs,
            "cores_busy": self.cores(),
            "rss_start_kib": self.rss_start_kib,
            "rss_end_kib": self.rss_end_kib,
            "rss_max_kib": self.rss_max_kib,
            "vm_hwm_kib": self.hwm_kib,
            "threads": self.threads,
        })
    }
}

/// Samples the server (if given) and this process once a second (for the
/// highest RSS), and shows the progress line unless quiet.
pub struct Watcher {
    server: Option<u32>,
    start_server: Option<Sample>,
    start_self: Sample,
    max_server_rss: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
    progress: Progress,
}

impl Watcher {
    pub fn start(server: Option<u32>, live: Arc<Live>, quiet: bool) -> anyhow::Result<Watcher> {
        let start_server = match server {
            Some(pid) => Some(
                sample(Some(pid))
                    .map_err(|e| anyhow::anyhow!("cannot read /proc/{pid} (--server-pid): {e}"))?,
            ),
            None => None,
        };
        let start_self = sample(None)?;
        let max_server_rss = Arc::new(Mutex::new(0));
        let max = max_server_rss.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Some(s) = server.and_then(|p| sample(Some(p)).ok()) {
                    let mut m = max.lock();
                    *m = (*m).max(s.rss_kib);
                }
            }
        });
        let progress = Progress::start(live, server, None, quiet);
        progress.phase("running");
        Ok(Watcher {
            server,
            start_server,
            start_self,
            max_server_rss,
            task,
            progress,
        })
    }

    /// Stop sampling: (server's use, this process's use).
    pub fn finish(self) -> (Option<Usage>, Usage) {
        self.task.abort();
        self.progress.finish();
        let own_end = sample(None).unwrap_or(self.start_self);
        let own = Usage::between(None, &self.start_self, &own_end, 0);
        let server = match (self.server, self.start_server) {
            (Some(pid), Some(start)) => sample(Some(pid))
                .ok()
                .map(|end| Usage::between(Some(pid), &start, &end, *self.max_server_rss.lock())),
            _ => None,
        };
        (server, own)
    }
}
