//! What a `sessions` worker process and its parent say to each other: one
//! JSON message a line, the parent's on the worker's stdin ([`ToWorker`]),
//! the worker's on its stdout ([`FromWorker`]).
//!
//! In order: the worker says `Registered`; the parent says `Connect`, the
//! worker `Ready` once its connect storm is over; the parent says `Go`, and
//! optionally `Stop` (end before `--hold`); the worker says `Tick` twice a
//! second throughout and `Done` at the end.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::outcomes::Outcomes;

/// The parent to a worker.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ToWorker {
    /// Open every session at once (the connect storm).
    Connect,
    /// Start the mode: heartbeats, churn.
    Go,
    /// End before `--hold` (after a hub restart).
    Stop,
}

/// A worker to the parent.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FromWorker {
    /// Its tagents are registered (the peers' sessions need none).
    Registered { sessions: usize },
    /// The connect storm is over: sessions established, and the worker's
    /// CPU seconds during the storm.
    Ready { up: usize, storm_cpu_secs: f64 },
    /// Running totals since `Connect`: OK heartbeats, errors, sessions open.
    Tick { ok: u64, errors: u64, up: u64 },
    /// The end: what its sessions counted.
    Done(Tally),
}

impl FromWorker {
    /// The message's name, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            FromWorker::Registered { .. } => "registered",
            FromWorker::Ready { .. } => "ready",
            FromWorker::Tick { .. } => "tick",
            FromWorker::Done(_) => "done",
        }
    }
}

/// A worker's [`Outcomes`] over the mode, with the CPU and wall seconds it
/// took. Histograms travel as `[value, count]` pairs of their recorded
/// buckets, which record back into the same buckets.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct Tally {
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub extra: BTreeMap<String, u64>,
    pub latency: Vec<[u64; 2]>,
    pub connect: Vec<[u64; 2]>,
    pub cpu_secs: f64,
    pub wall_secs: f64,
}

impl Tally {
    pub fn new(o: &Outcomes, cpu_secs: f64, wall_secs: f64) -> Tally {
        let kinds = |m: &BTreeMap<&'static str, u64>| {
            m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        Tally {
            ok: o.ok,
            errors: kinds(&o.errors),
            extra: kinds(&o.extra),
            latency: buckets(&o.latency),
            connect: buckets(&o.connect),
            cpu_secs,
            wall_secs,
        }
    }

    /// The counts back as [`Outcomes`], to merge with the other workers'.
    pub fn outcomes(&self) -> Outcomes {
        let mut o = Outcomes {
            ok: self.ok,
            ..Default::default()
        };
        for (from, into) in [(&self.errors, &mut o.errors), (&self.extra, &mut o.extra)] {
            for (k, n) in from {
                // A handful of kinds per run: leaking them is cheaper than
                // making every counter own its name.
                let k: &'static str = Box::leak(k.clone().into_boxed_str());
                into.insert(k, *n);
            }
        }
        for (from, into) in [
            (&self.latency, &mut o.latency),
            (&self.connect, &mut o.connect),
        ] {
            for &[value, count] in from {
                let _ = into.record_n(value, count);
            }
        }
        o
    }
}

fn buckets(h: &Histogram<u64>) -> Vec<[u64; 2]> {
    h.iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect()
}

/// A line that is not a message of the protocol.
#[derive(Debug, thiserror::Error)]
#[error("not a worker protocol message: {line:?} ({source})")]
pub struct MalformedLine {
    /// The line, cut to its first 120 characters.
    pub line: String,
    #[source]
    pub source: serde_json::Error,
}

/// One message as one line, without the newline.
pub fn encode<M: Serialize>(message: &M) -> String {
    serde_json::to_string(message).expect("the protocol's messages serialize")
}

/// One line (a trailing newline or spaces allowed) as a message.
pub fn decode<M: DeserializeOwned>(line: &str) -> Result<M, MalformedLine> {
    serde_json::from_str(line.trim()).map_err(|source| MalformedLine {
        line: line.chars().take(120).collect(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outcomes::Live;

    fn round_trip<M: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(m: M) {
        let line = encode(&m);
        assert!(!line.contains('\n'), "one message, one line: {line}");
        assert_eq!(decode::<M>(&format!("{line}\n")).unwrap(), m);
    }

    #[test]
    fn every_message_round_trips() {
        for m in [ToWorker::Connect, ToWorker::Go, ToWorker::Stop] {
            round_trip(m);
        }
        let live = Live::default();
        let mut o = Outcomes::default();
        o.ok(Duration::from_micros(1_234), &live);
        o.ok(Duration::from_millis(250), &live);
        o.error("closed", &live);
        o.count("reconnects");
        o.connected(Duration::from_micros(870));
        let tally = Tally::new(&o, 1.5, 10.25);
        for m in [
            FromWorker::Registered { sessions: 4_500 },
            FromWorker::Ready {
                up: 4_499,
                storm_cpu_secs: 0.731,
            },
            FromWorker::Tick {
                ok: 12,
                errors: 1,
                up: 4_499,
            },
            FromWorker::Done(tally.clone()),
        ] {
            round_trip(m);
        }

        // And the counts come back as they were counted.
        let back = decode::<FromWorker>(&encode(&FromWorker::Done(tally))).unwrap();
        let FromWorker::Done(back) = back else {
            panic!("a tally decodes as a tally")
        };
        let again = back.outcomes();
        assert_eq!(again.ok, 2);
        assert_eq!(again.errors.get("closed"), Some(&1));
        assert_eq!(again.extra.get("reconnects"), Some(&1));
        assert_eq!(again.latency.len(), o.latency.len());
        assert_eq!(
            again.latency.value_at_quantile(0.99),
            o.latency.value_at_quantile(0.99)
        );
        assert_eq!(again.connect.len(), 1);
        assert_eq!((back.cpu_secs, back.wall_secs), (1.5, 10.25));
    }

    #[test]
    fn a_malformed_line_is_an_error_that_names_it() {
        for line in [
            "",
            "tick 1 2 3",
            "{\"tick\":{\"ok\":1}}",
            "\"launch\"",
            "{\"done\":",
        ] {
            let err = decode::<FromWorker>(line).expect_err(line);
            let text = err.to_string();
            assert!(text.starts_with("not a worker protocol message:"), "{text}");
            assert!(text.contains(&format!("{line:?}")), "{text}");
        }
        let err = decode::<ToWorker>("go now").unwrap_err();
        assert!(std::error::Error::source(&err).is_some());
    }
}
