//! What a client counts while it runs; merged across clients at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Slowest latency recorded exactly (µs); slower ones are clamped to it.
const MAX_LATENCY_US: u64 = 120_000_000;

/// One client's tally, or the merge of all of them.
pub struct Outcomes {
    pub ok: u64,
    /// Errors by kind: the server's refusals by message kind, and transport
    /// failures (`connect`, `closed`, `http`, `timeout`, `bad_reply`, ...).
    pub errors: BTreeMap<&'static str, u64>,
    /// Latency of OK answers, in microseconds.
    pub latency: Histogram<u64>,
    /// Counters particular to the scenario (e.g. created vs re-registered).
    pub extra: BTreeMap<&'static str, u64>,
    /// Time to open a session (connect, handshake, first reply), in
    /// microseconds; empty for scenarios without sessions.
    pub connect: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

impl Default for Outcomes {
    fn default() -> Self {
        Outcomes {
            ok: 0,
            errors: BTreeMap::new(),
            latency: histogram(),
            extra: BTreeMap::new(),
            connect: histogram(),
        }
    }
}

impl Outcomes {
    pub fn ok(&mut self, latency: Duration, live: &Live) {
        self.ok += 1;
        self.latency.saturating_record(latency.as_micros() as u64);
        live.ok.fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&mut self, kind: &'static str, live: &Live) {
        *self.errors.entry(kind).or_default() += 1;
        live.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connected(&mut self, took: Duration) {
        self.connect.saturating_record(took.as_micros() as u64);
    }

    pub fn count(&mut self, what: &'static str) {
        *self.extra.entry(what).or_default() += 1;
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn merge(&mut self, other: Outcomes) {
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.extra {
            *self.extra.entry(k).or_default() += v;
        }
        self.latency
            .add(&other.latency)
            .expect("histograms with the same bounds merge");
        self.connect
            .add(&other.connect)
            .expect("histograms with the same bounds merge");
    }
}

/// Counters shared by every client, read by the progress line.
#[derive(Default)]
pub struct Live {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    /// Sessions open now (sessions scenario).
    pub up: AtomicU64,
}
