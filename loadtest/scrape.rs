//! The hub's own view of a run: its `/metrics` read before and after, so the
//! report can say how many registrations went into each durable commit.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::client::{self, Target};

/// The histogram series whose `_sum` and `_count` are compared.
const SERIES: [&str; 3] = [
    "tagent_hub_store_batch_size",
    "tagent_hub_store_commit_duration_seconds",
    "tagent_hub_registration_duration_seconds",
];

/// `_sum` and `_count` of each of [`SERIES`] (0 when absent).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    values: [(f64, f64); SERIES.len()],
}

impl Scrape {
    pub async fn read(target: &Arc<Target>) -> Option<Scrape> {
        let body = client::get(target, "/metrics").await.ok()?;
        let text = std::str::from_utf8(&body).ok()?;
        let mut s = Scrape::default();
        for line in text.lines() {
            let Some((name, value)) = line.split_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            for (i, series) in SERIES.iter().enumerate() {
                match name.strip_prefix(series) {
                    Some("_sum") => s.values[i].0 = value,
                    Some("_count") => s.values[i].1 = value,
                    _ => {}
                }
            }
        }
        Some(s)
    }

    /// What happened between `self` (before) and `after`, over `secs`.
    pub fn delta(&self, after: &Scrape, secs: f64) -> ServerView {
        let d = |i: usize| {
            (
                after.values[i].0 - self.values[i].0,
                after.values[i].1 - self.values[i].1,
            )
        };
        let mean = |(sum, count): (f64, f64)| if count > 0.0 { sum / count } else { 0.0 };
        let (batch, commit, reg) = (d(0), d(1), d(2));
        ServerView {
            commits: commit.1,
            commits_per_sec: if secs > 0.0 { commit.1 / secs } else { 0.0 },
            mean_batch: mean(batch),
            mean_commit_ms: mean(commit) * 1e3,
            commit_busy_fraction: if secs > 0.0 { commit.0 / secs } else { 0.0 },
            mean_registration_ms: mean(reg) * 1e3,
        }
    }
}

/// The hub's metrics over a run.
#[derive(Debug, Clone)]
pub struct ServerView {
    pub commits: f64,
    pub commits_per_sec: f64,
    /// Registrations accepted per durable transaction.
    pub mean_batch: f64,
    pub mean_commit_ms: f64,
    /// Share of the run the writer spent inside `Store::commit`.
    pub commit_busy_fraction: f64,
    /// Server-side time from request to reply, as the hub measures it.
    pub mean_registration_ms: f64,
}

impl ServerView {
    pub fn to_json(&self) -> Value {
        json!({
            "commits": self.commits,
            "commits_per_sec": self.commits_per_sec,
            "mean_batch": self.mean_batch,
            "mean_commit_ms": self.mean_commit_ms,
            "commit_busy_fraction": self.commit_busy_fraction,
            "mean_registration_ms": self.mean_registration_ms,
        })
    }
}
