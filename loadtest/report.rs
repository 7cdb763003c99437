//! The end-of-run report, as a table for people and JSON for scripts.

use std::fmt::Write;

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use crate::outcomes::Outcomes;
use crate::procstat::Usage;
use crate::scrape::ServerView;

/// Above this share of its threads' capacity the generator is called
/// saturated: its figures then say as much about it as about the server.
const SATURATED: f64 = 0.9;

/// Cores this process may run on (`nproc`).
pub fn machine_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub struct Report {
    pub scenario: &'static str,
    /// The run's settings, in the order given.
    pub params: Vec<(&'static str, String)>,
    /// From the first request to the last answer.
    pub elapsed_secs: f64,
    pub outcomes: Outcomes,
    pub server: Option<Usage>,
    pub server_view: Option<ServerView>,
    pub generator: Usage,
    /// Threads the generator ran (worker processes for `sessions`, one
    /// thread each).
    pub generator_threads: usize,
    /// The busiest worker process's share of its one core, when the
    /// generator is several processes.
    pub generator_busiest: Option<f64>,
}

impl Report {
    pub fn ok_per_sec(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.outcomes.ok as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }

    /// The generator as a whole used ≥ 90% of its threads, or one of its
    /// worker processes ≥ 90% of its core.
    pub fn generator_saturated(&self) -> bool {
        self.generator.cores() >= SATURATED * self.generator_threads as f64
            || self.generator_busiest.is_some_and(|b| b >= SATURATED)
    }

    /// Server and generator together used ≥ 90% of the machine's cores.
    pub fn machine_saturated(&self) -> bool {
        let server = self.server.as_ref().map_or(0.0, Usage::cores);
        server + self.generator.cores() >= SATURATED * machine_cores() as f64
    }

    /// Latency quantiles of OK answers, in milliseconds.
    fn quantiles(&self) -> [(&'static str, f64); 5] {
        quantiles(&self.outcomes.latency)
    }

    /// Heartbeat reply latency at quantile `q`, in milliseconds.
    pub fn latency_ms(&self, q: f64) -> f64 {
        self.outcomes.latency.value_at_quantile(q) as f64 / 1e3
    }
}

/// Quantiles of a histogram of microseconds, in milliseconds.
fn quantiles(h: &Histogram<u64>) -> [(&'static str, f64); 5] {
    let ms = |us: u64| us as f64 / 1e3;
    [
        ("p50", ms(h.value_at_quantile(0.50))),
        ("p99", ms(h.value_at_quantile(0.99))),
        ("p999", ms(h.value_at_quantile(0.999))),
        ("max", ms(h.max())),
        ("mean", h.mean() / 1e3),
    ]
}

impl Report {
    pub fn table(&self) -> String {
        let mut s = String::new();
        let o = &self.outcomes;
        let _ = writeln!(s, "scenario            {}", self.scenario);
        let width = self
            .params
            .iter()
            .map(|(k, _)| k.len() + 2)
            .max()
            .unwrap_or(0);
        for (k, v) in &self.params {
            let _ = writeln!(s, "  {k:<width$}{v}");
        }
        let _ = writeln!(s, "elapsed             {:.3} s", self.elapsed_secs);
        let _ = writeln!(s, "OK                  {}", o.ok);
        let _ = writeln!(s, "OK/s                {:.0}", self.ok_per_sec());
        let _ = writeln!(s, "ERROR               {}", o.error_total());
        for (k, v) in &o.errors {
            let _ = writeln!(s, "  {k:<18}{v}");
        }
        for (k, v) in &o.extra {
            let _ = writeln!(s, "{k:<20}{v}");
        }
        let _ = writeln!(s, "latency of OK (ms)");
        for (k, v) in self.quantiles() {
            let _ = writeln!(s, "  {k:<18}{v:.3}");
        }
        if !o.connect.is_empty() {
            let _ = writeln!(s, "session open time (ms): connect, handshake, first reply");
            for (k, v) in quantiles(&o.connect) {
                let _ = writeln!(s, "  {k:<18}{v:.3}");
            }
        }
        if let Some(u) = &self.server {
            let _ = writeln!(
                s,
                "server pid {:<9}cpu {:.2} s ({:.2} cores), rss {} -> {} MiB (max {} MiB, peak {} MiB), {} threads",
                u.pid.unwrap_or(0),
                u.cpu_secs,
                u.cores(),
                u.rss_start_kib / 1024,
                u.rss_end_kib / 1024,
                u.rss_max_kib / 1024,
                u.hwm_kib / 1024,
                u.threads
            );
        }
        if let Some(v) = &self.server_view {
            let _ = writeln!(
                s,
                "server commits      {:.0} ({:.0}/s), mean batch {:.1}, mean commit {:.2} ms, writer in commit {:.0}% of the run",
                v.commits,
                v.commits_per_sec,
                v.mean_batch,
                v.mean_commit_ms,
                v.commit_busy_fraction * 100.0
            );
            let _ = writeln!(
                s,
                "server-side latency mean {:.2} ms",
                v.mean_registration_ms
            );
        }
        let g = &self.generator;
        let _ = writeln!(
            s,
            "generator           cpu {:.2} s ({:.2} cores of {} thread(s)){}",
            g.cpu_secs,
            g.cores(),
            self.generator_threads,
            if self.generator_saturated() {
                " -- SATURATED: the generator limits these figures"
            } else {
                ""
            }
        );
        if let Some(b) = self.generator_busiest {
            let _ = writeln!(s, "  busiest worker    {b:.2} of one core");
        }
        let _ = writeln!(
            s,
            "machine             {} cores{}",
            machine_cores(),
            if self.machine_saturated() {
                " -- SATURATED: server and generator together use them all"
            } else {
                ""
            }
        );
        s
    }

    /// On stdout: as JSON, or as the table.
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(&self.to_json())?);
        } else {
            print!("{}", self.table());
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        let o = &self.outcomes;
        let params: Map<String, Value> = self
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        let latency: Map<String, Value> = self
            .quantiles()
            .iter()
            .map(|(k, v)| (format!("{k}_ms"), json!(v)))
            .collect();
        json!({
            "scenario": self.scenario,
            "params": params,
            "elapsed_secs": self.elapsed_secs,
            "ok": o.ok,
            "ok_per_sec": self.ok_per_sec(),
            "errors": o.error_total(),
            "errors_by_kind": o.errors,
            "counters": o.extra,
            "latency_ok": latency,
            "session_open_ms": (!o.connect.is_empty()).then(|| {
                quantiles(&o.connect)
                    .iter()
                    .map(|(k, v)| (format!("{k}_ms"), json!(v)))
                    .collect::<Map<String, Value>>()
            }),
            "server": self.server.as_ref().map(Usage::to_json),
            "server_metrics": self.server_view.as_ref().map(ServerView::to_json),
            "generator": {
                "threads": self.generator_threads,
                "usage": self.generator.to_json(),
                "saturated": self.generator_saturated(),
                "busiest_worker_cores": self.generator_busiest,
            },
            "machine": {
                "cores": machine_cores(),
                "saturated": self.machine_saturated(),
            },
        })
    }
}
