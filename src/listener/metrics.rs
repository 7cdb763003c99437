//! The listener client's metrics: operations by request kind and result,
//! their durations, and the connections open (families in `src/metrics.rs`).

use std::time::Instant;

use super::Kind;

/// Counts one open connection while it lives.
#[derive(Debug)]
pub(crate) struct OpenConnection(());

impl OpenConnection {
    pub(crate) fn new() -> OpenConnection {
        metrics::gauge!("tagent_hub_listener_connections").increment(1.0);
        OpenConnection(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("tagent_hub_listener_connections").decrement(1.0);
    }
}

/// One request's count and duration, recorded once: by
/// [`Recorder::finish`], or as `cancelled` when dropped unfinished (the
/// HTTP client went away in the middle of a download).
#[derive(Debug)]
pub(crate) struct Recorder {
    kind: Kind,
    started: Instant,
    done: bool,
}

impl Recorder {
    pub(crate) fn start(kind: Kind) -> Recorder {
        Recorder {
            kind,
            started: Instant::now(),
            done: false,
        }
    }

    /// Record nothing (a request that was never made).
    pub(crate) fn discard(mut self) {
        self.done = true;
    }

    pub(crate) fn finish(&mut self, result: &'static str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let kind = self.kind.as_str();
        metrics::counter!("tagent_hub_listener_operations_total", "kind" => kind, "result" => result)
            .increment(1);
        metrics::histogram!("tagent_hub_listener_operation_duration_seconds", "kind" => kind)
            .record(self.started.elapsed());
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish("cancelled");
    }
}
