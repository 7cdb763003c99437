//! The hub's CPU seconds and memory over one phase of an operation bench:
//! [`crate::procstat::sample`] at the start and end, and RSS sampled while
//! it runs for the peak.

use crate::procstat::{Sample, sample};

pub struct HubUsage {
    pid: u32,
    start: Sample,
    max_rss_kib: u64,
}

impl HubUsage {
    pub fn start(pid: Option<u32>) -> anyhow::Result<Option<HubUsage>> {
        let Some(pid) = pid else { return Ok(None) };
        let start = sample(Some(pid))
            .map_err(|e| anyhow::anyhow!("cannot read /proc/{pid} (--hub-pid): {e}"))?;
        Ok(Some(HubUsage {
            pid,
            start,
            max_rss_kib: start.rss_kib,
        }))
    }

    /// One more RSS sample (call it while the phase runs).
    pub fn tick(&mut self) {
        if let Ok(s) = sample(Some(self.pid)) {
            self.max_rss_kib = self.max_rss_kib.max(s.rss_kib);
        }
    }

    /// One line: CPU seconds used, cores busy, RSS at start, peak and end,
    /// and VmHWM (the hub's peak since it started).
    pub fn finish(mut self, what: &str) -> String {
        self.tick();
        match sample(Some(self.pid)) {
            Ok(end) => {
                let cpu = end.cpu_secs - self.start.cpu_secs;
                let wall = end.at.duration_since(self.start.at).as_secs_f64();
                format!(
                    "hub during {what}: cpu {cpu:.2} s ({:.2} cores over {wall:.1} s), \
                     rss start {} MiB, peak {} MiB (sampled), end {} MiB, VmHWM {} MiB",
                    if wall > 0.0 { cpu / wall } else { 0.0 },
                    mib(self.start.rss_kib),
                    mib(self.max_rss_kib),
                    mib(end.rss_kib),
                    mib(end.hwm_kib),
                )
            }
            Err(e) => format!("hub during {what}: cannot read /proc/{}: {e}", self.pid),
        }
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}
