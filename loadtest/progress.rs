//! The live progress line on stderr (indicatif): the phase, sessions up,
//! answers and their rate, errors, and the server's RSS and CPU, redrawn
//! twice a second. Hidden with `--quiet` (and by indicatif when stderr is not
//! a terminal).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::outcomes::Live;
use crate::procstat::sample;

pub struct Progress {
    bar: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// `sessions`: how many sessions the run opens (shown as up/of).
    pub fn start(
        live: Arc<Live>,
        server: Option<u32>,
        sessions: Option<u64>,
        quiet: bool,
    ) -> Progress {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:>9} {elapsed:>4} {msg}")
                .expect("a valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut last = (Instant::now(), 0u64, sample(server).ok());
            loop {
                tick.tick().await;
                let now = Instant::now();
                let ok = live.ok.load(Ordering::Relaxed);
                let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
                let mut msg = String::new();
                if let Some(n) = sessions {
                    msg += &format!("up {}/{n}  ", live.up.load(Ordering::Relaxed));
                }
                msg += &format!(
                    "ok {ok}  {:.0}/s  errors {}",
                    (ok - last.1) as f64 / dt,
                    live.errors.load(Ordering::Relaxed)
                );
                let srv = server.and_then(|p| sample(Some(p)).ok());
                if let Some(s) = srv {
                    let cores = last
                        .2
                        .map_or(0.0, |l| (s.cpu_secs - l.cpu_secs) / dt)
                        .max(0.0);
                    msg += &format!("  server rss {} MiB cpu {cores:.2} cores", s.rss_kib / 1024);
                }
                shown.set_message(msg);
                last = (now, ok, srv);
            }
        });
        Progress { bar, task }
    }

    pub fn phase(&self, phase: &'static str) {
        self.bar.set_prefix(phase);
    }

    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
