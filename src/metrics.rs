//! Prometheus metrics: one process-wide recorder, rendered at `GET /metrics`.
//! Names follow Prometheus conventions (`_total` counters, `_seconds` units).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the recorder (once per process) and return the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ];
            let sizes = [
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), &sizes))
                .expect("bucket lists are not empty")
                .install_recorder()
                .expect("the metrics recorder is installed once");
            describe();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// `install_recorder` keeps every histogram sample until something drains
/// it; without a Prometheus scraping `/metrics`, that is a leak that grows
/// with every sampled heartbeat and registration. A plain thread (not a task:
/// the recorder outlives any one runtime, as in the tests) drains them.
fn spawn_upkeep(handle: PrometheusHandle) {
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        })
        .expect("a thread for metrics upkeep");
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "tagent_hub_registrations_total",
        "Registrations answered, by outcome (created, updated, or the error kind)."
    );
    describe_histogram!(
        "tagent_hub_registration_duration_seconds",
        "Time from a registration request to its reply, including the durable commit."
    );
    describe_gauge!("tagent_hub_tagents", "Registered tagents.");
    describe_histogram!(
        "tagent_hub_store_commit_duration_seconds",
        "Duration of one durable store transaction."
    );
    describe_histogram!(
        "tagent_hub_store_batch_size",
        "Registrations committed per store transaction."
    );
    describe_counter!(
        "tagent_hub_store_errors_total",
        "Store transactions that failed; their registrations were refused."
    );
    describe_counter!(
        "tagent_hub_status_transitions_total",
        "Status transitions persisted, by reason (connected, or the disconnect reason)."
    );
    describe_counter!(
        "tagent_hub_admin_auth_failures_total",
        "Admin API requests refused: no token (missing), unknown token (invalid), read token for a change (scope)."
    );
    describe_counter!(
        "tagent_hub_event_stream_gaps_total",
        "Event-stream watchers told to reload their view: unknown resume id, or fell behind the ring."
    );
    describe_counter!(
        "tagent_hub_http_rejected_total",
        "HTTP connections and requests refused by the server's limits, by reason \
         (header_too_large, header_timeout, malformed, slow_body)."
    );
}
