//! Prometheus metrics: one process-wide recorder, rendered at `GET /metrics`.
//! Names follow Prometheus conventions (`_total` counters, `_seconds` units).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::dispatch::PeerRefusal;
use crate::heartbeat::Refused;
use crate::model::DisconnectReason;

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
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("tagent_hub_listener_operation_duration_seconds".into()),
                        &LISTENER_SECONDS,
                    )
                })
                .expect("bucket lists are not empty")
                .install_recorder()
                .expect("the metrics recorder is installed once");
            register_all();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// A listener request takes from milliseconds to its operation's limit.
const LISTENER_SECONDS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0,
];

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

/// What a family is, as Prometheus' `# TYPE` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One label of a family and every value it takes (a closed set).
pub struct Label {
    pub name: &'static str,
    pub values: &'static [&'static str],
}

/// One metric family the hub exports.
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Every series is exported from start, at zero: one per combination.
    pub labels: &'static [Label],
}

const fn label(name: &'static str, values: &'static [&'static str]) -> Label {
    Label { name, values }
}

const fn family(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    labels: &'static [Label],
) -> Family {
    Family {
        name,
        kind,
        help,
        labels,
    }
}

const PROTOCOL: Label = label("protocol", &["compat", "native"]);

/// The label values of `reasons`, in their order.
const fn reason_names<const N: usize>(reasons: [DisconnectReason; N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = reasons[i].as_str();
        i += 1;
    }
    out
}

/// What a status transition is labelled with: `connected`, or the reason
/// (every one but `never-connected`, `ALL[0]`, which is where a record
/// starts, not a transition).
const TRANSITION_REASONS: [&str; DisconnectReason::ALL.len()] = {
    let mut out = reason_names(DisconnectReason::ALL);
    out[0] = "connected";
    out
};

/// What a closed session is labelled with: the reasons a session's end reports.
const SESSION_END_REASONS: [&str; DisconnectReason::SESSION_ENDS.len()] =
    reason_names(DisconnectReason::SESSION_ENDS);

/// Every metric family the hub emits, with its HELP text and label values.
/// [`install`] describes them all and creates every series at zero, so a
/// dashboard or an alert sees them from the first scrape;
/// `tests/metrics_start.rs` holds this table to the `counter!`, `gauge!` and
/// `histogram!` calls in `src/` and to what `/metrics` serves.
const PEER_REFUSALS: [&str; PeerRefusal::ALL.len()] = {
    let mut names = [""; PeerRefusal::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = PeerRefusal::ALL[i].label();
        i += 1;
    }
    names
};

pub const FAMILIES: &[Family] = &[
    // Registration (http/register.rs)
    family(
        "tagent_hub_registrations_total",
        Kind::Counter,
        "Registrations answered, by outcome (created, updated, or the error kind).",
        &[label(
            "outcome",
            &[
                "created",
                "updated",
                "too_large",
                "bad_body",
                "bad_content_type",
                "invalid",
                "multiple_tagents",
                "ip_conflict",
                "no_runner_group",
                "contains_other_primary",
                "primary_taken",
                "token_required",
                "pending",
                "pending_full",
                "ids_exhausted",
                "store_error",
                "shutting_down",
                "rate_limited_source",
                "rate_limited",
            ],
        )],
    ),
    // Registration policy (registry/writer/enroll.rs)
    family(
        "tagent_hub_enrollment_tokens_refused_total",
        Kind::Counter,
        "Enrollment tokens presented with a registration that needed one and admitted nothing, by why.",
        &[label(
            "reason",
            &["invalid", "expired", "revoked", "used_up"],
        )],
    ),
    family(
        "tagent_hub_enrollment_token_uses_total",
        Kind::Counter,
        "Registrations an enrollment token admitted (a tagent created or reinstalled).",
        &[],
    ),
    family(
        "tagent_hub_pending_created_total",
        Kind::Counter,
        "Registrations that began to wait for an operator's approval.",
        &[],
    ),
    family(
        "tagent_hub_pending_expired_total",
        Kind::Counter,
        "Unapproved pending registrations no attempt renewed for a day, dropped to make room.",
        &[],
    ),
    family(
        "tagent_hub_pending_full_total",
        Kind::Counter,
        "Registrations refused because max_pending registrations wait already.",
        &[],
    ),
    family(
        "tagent_hub_registration_duration_seconds",
        Kind::Histogram,
        "Time from a registration request to its reply, including the durable commit.",
        &[],
    ),
    // The registry and its store (registry/)
    family(
        "tagent_hub_tagents",
        Kind::Gauge,
        "Registered tagents.",
        &[],
    ),
    family(
        "tagent_hub_store_commit_duration_seconds",
        Kind::Histogram,
        "Duration of one durable store transaction.",
        &[],
    ),
    family(
        "tagent_hub_store_batch_size",
        Kind::Histogram,
        "Registrations committed per store transaction.",
        &[],
    ),
    family(
        "tagent_hub_store_errors_total",
        Kind::Counter,
        "Store transactions that failed; their registrations were refused.",
        &[],
    ),
    family(
        "tagent_hub_runner_lost_fenced_total",
        Kind::Counter,
        "Runner-lost reports about another hub dropped because that hub renewed its lease \
         since they were made (lease fencing).",
        &[],
    ),
    family(
        "tagent_hub_status_transitions_total",
        Kind::Counter,
        "Status transitions persisted, by reason (connected, or the disconnect reason).",
        &[label("reason", &TRANSITION_REASONS)],
    ),
    // The admin API and the HTTP server (http/)
    family(
        "tagent_hub_admin_auth_failures_total",
        Kind::Counter,
        "Admin API requests refused: no token (missing), unknown token (invalid), \
         read token for a change (scope).",
        &[label("reason", &["missing", "invalid", "scope"])],
    ),
    // The web console (console/)
    family(
        "tagent_hub_console_signins_total",
        Kind::Counter,
        "Console sign-ins: ok, an unknown token (invalid), or refused because \
         the most sessions are held (full).",
        &[label("result", &["ok", "invalid", "full"])],
    ),
    family(
        "tagent_hub_console_refusals_total",
        Kind::Counter,
        "Console requests refused: no session (no-session), a read sign-in \
         asking for a change (scope), a form too large (form), a missing or \
         wrong CSRF token (csrf).",
        &[label("reason", &["no-session", "scope", "form", "csrf"])],
    ),
    family(
        "tagent_hub_event_stream_gaps_total",
        Kind::Counter,
        "Event-stream watchers told to reload their view: unknown resume id, \
         or fell behind the ring.",
        &[],
    ),
    family(
        "tagent_hub_http_rejected_total",
        Kind::Counter,
        "HTTP connections and requests refused by the server's limits, by reason \
         (header_too_large, header_timeout, malformed, slow_body, max_connections, \
         max_connections_per_ip, tls_handshake).",
        &[label(
            "reason",
            &[
                "header_too_large",
                "header_timeout",
                "malformed",
                "slow_body",
                "max_connections",
                "max_connections_per_ip",
                "tls_handshake",
            ],
        )],
    ),
    family(
        "tagent_hub_peer_refused_total",
        Kind::Counter,
        "Requests on the hub-to-hub route refused: no signature (missing), one that does not \
         verify (bad_signature), outside the time window (stale), seen before (replayed), or too \
         many in the window (flooded).",
        &[label("reason", &PEER_REFUSALS)],
    ),
    // Both accept loops (net.rs)
    family(
        "tagent_hub_accept_errors_total",
        Kind::Counter,
        "Errors of an accept loop (heartbeat or http), by kind; out of descriptors it backs off.",
        &[
            label("listener", &["heartbeat", "http"]),
            label("kind", &["emfile", "enfile", "enomem", "other"]),
        ],
    ),
    // The heartbeat server (heartbeat/)
    family(
        "tagent_hub_heartbeats_total",
        Kind::Counter,
        "Heartbeats handled, by protocol.",
        &[PROTOCOL],
    ),
    family(
        "tagent_hub_heartbeat_duration_seconds",
        Kind::Histogram,
        "Time to handle a heartbeat, from its bytes read to its reply written (sampled).",
        &[],
    ),
    family(
        "tagent_hub_sessions",
        Kind::Gauge,
        "Identified heartbeat sessions, by protocol.",
        &[PROTOCOL],
    ),
    family(
        "tagent_hub_parked_sessions",
        Kind::Gauge,
        "Idle sessions parked: no task, their socket watched by the hub's lot.",
        &[],
    ),
    family(
        "tagent_hub_sessions_closed_total",
        Kind::Counter,
        "Identified sessions closed, by reason.",
        &[label("reason", &SESSION_END_REASONS)],
    ),
    family(
        "tagent_hub_unregistered_sessions_total",
        Kind::Counter,
        "Sessions whose heartbeat matched no registered tagent (each is sent a rate-limited reload).",
        &[],
    ),
    family(
        "tagent_hub_ignored_lines_total",
        Kind::Counter,
        "JSON-line messages answered OK but not processed (not JSON, or not a monitor).",
        &[],
    ),
    family(
        "tagent_hub_reloads_sent_total",
        Kind::Counter,
        "Reloads sent to unregistered sessions so their tagents register again.",
        &[],
    ),
    family(
        "tagent_hub_commands_total",
        Kind::Counter,
        "Commands sent down sessions, by command and result.",
        &[
            label("command", &["reload", "resetcred"]),
            label(
                "result",
                &["delivered", "failed", "session_closed", "timeout"],
            ),
        ],
    ),
    family(
        "tagent_hub_connection_errors_total",
        Kind::Counter,
        "Connections refused or closed for what they sent or when they came, by kind.",
        &[label(
            "kind",
            &[
                "max_sessions",
                "max_sessions_per_ip",
                "first_message_timeout",
                "compat_refused",
                "native_refused",
                "unknown_protocol",
                "too_long",
                "bad_message",
                "out_of_order",
                "unread_replies",
            ],
        )],
    ),
    family(
        "tagent_hub_identity_refused_total",
        Kind::Counter,
        "Heartbeat sessions closed for what they claimed: a compat line from an \
         address that is none of the named tagent's (impostor), or one that would \
         displace a session that proved the credential (proved_session).",
        &[label("reason", &Refused::LABELS)],
    ),
    family(
        "tagent_hub_auth_failures_total",
        Kind::Counter,
        "Native handshakes refused, by reason (throttled: the source failed too often lately).",
        &[label(
            "reason",
            &["unknown_tagent", "bad_proof", "no_credential", "throttled"],
        )],
    ),
    // The client of tagents' listeners (listener/)
    family(
        "tagent_hub_listener_operations_total",
        Kind::Counter,
        "Requests to tagents' listeners (SPEC §5), by kind and result (ok, or why not).",
        &[LISTENER_KIND, label("result", &LISTENER_RESULTS)],
    ),
    family(
        "tagent_hub_listener_operation_duration_seconds",
        Kind::Histogram,
        "Time of one request to a tagent's listener, connect and login included.",
        &[LISTENER_KIND],
    ),
    family(
        "tagent_hub_listener_connections",
        Kind::Gauge,
        "Connections to tagents' listeners open now.",
        &[],
    ),
    // The audit log of operations over tagents' listeners (listener/audit.rs)
    family(
        "tagent_hub_audit_entries_total",
        Kind::Counter,
        "Audit log entries of operations over tagents' listeners: written to the \
         store, or failed (the store refused them; logged, the operation stands).",
        &[label("result", &["written", "failed"])],
    ),
    // Upgrades (upgrade/)
    family(
        "tagent_hub_packages_total",
        Kind::Counter,
        "Installation packages added and deleted.",
        &[label("op", &["added", "deleted"])],
    ),
    family(
        "tagent_hub_rollouts_total",
        Kind::Counter,
        "Rollouts started, and how they ended.",
        &[label(
            "state",
            &["started", "done", "stopped", "aborted", "interrupted"],
        )],
    ),
    family(
        "tagent_hub_upgrades_total",
        Kind::Counter,
        "Tagents of rollouts, by how their upgrade ended.",
        &[label("result", &["upgraded", "skipped", "failed"])],
    ),
    family(
        "tagent_hub_upgrade_history_errors_total",
        Kind::Counter,
        "Changes of rollouts the store refused (logged; the rollout goes on).",
        &[],
    ),
];

const LISTENER_KIND: Label = label("kind", &["execmd", "download", "upload", "reload", "echo"]);

/// `ok`, the listener's errors, the operations' errors, and `cancelled`
/// (the HTTP client left in the middle).
const LISTENER_RESULTS: [&str; 20] = {
    let listener = crate::listener::ListenerError::LABELS;
    let operation = crate::listener::OperationError::LABELS;
    let mut out = [""; 20];
    out[0] = "ok";
    let mut i = 0;
    while i < listener.len() {
        out[1 + i] = listener[i];
        i += 1;
    }
    let mut j = 0;
    while j < operation.len() {
        out[1 + i + j] = operation[j];
        j += 1;
    }
    out[19] = "cancelled";
    out
};

/// Describe every family and create each of its series at zero.
fn register_all() {
    for f in FAMILIES {
        match f.kind {
            Kind::Counter => metrics::describe_counter!(f.name, f.help),
            Kind::Gauge => metrics::describe_gauge!(f.name, f.help),
            Kind::Histogram => metrics::describe_histogram!(f.name, f.help),
        }
        for labels in combinations(f.labels) {
            // Creating the handle is what makes the series appear.
            match f.kind {
                Kind::Counter => drop(metrics::counter!(f.name, labels)),
                Kind::Gauge => drop(metrics::gauge!(f.name, labels)),
                Kind::Histogram => drop(metrics::histogram!(f.name, labels)),
            }
        }
    }
}

/// Every combination of the labels' values (one empty set without labels).
pub fn combinations(labels: &[Label]) -> Vec<Vec<metrics::Label>> {
    let mut all = vec![Vec::new()];
    for label in labels {
        all = all
            .into_iter()
            .flat_map(|set: Vec<metrics::Label>| {
                label.values.iter().map(move |v| {
                    let mut set = set.clone();
                    set.push(metrics::Label::new(label.name, *v));
                    set
                })
            })
            .collect();
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(family: &str, label: &str) -> &'static [&'static str] {
        let f = FAMILIES.iter().find(|f| f.name == family).unwrap();
        f.labels.iter().find(|l| l.name == label).unwrap().values
    }

    #[test]
    fn transitions_start_at_connected_and_skip_never_connected() {
        let table = values("tagent_hub_status_transitions_total", "reason");
        assert_eq!(table[0], "connected");
        assert!(!table.contains(&"never-connected"));
        assert_eq!(
            values("tagent_hub_sessions_closed_total", "reason"),
            [
                "eof",
                "reset",
                "idle-timeout",
                "protocol-error",
                "auth-failed",
                "replaced",
                "shutdown"
            ]
        );
    }

    #[test]
    fn every_disconnect_reason_is_a_transition_label() {
        let table = values("tagent_hub_status_transitions_total", "reason");
        for r in DisconnectReason::ALL {
            if r != DisconnectReason::NeverConnected {
                assert!(table.contains(&r.as_str()), "{} missing", r.as_str());
            }
        }
    }

    #[test]
    fn names_are_unique_and_combinations_complete() {
        for (i, f) in FAMILIES.iter().enumerate() {
            assert!(FAMILIES[..i].iter().all(|g| g.name != f.name), "{}", f.name);
        }
        let accept = FAMILIES
            .iter()
            .find(|f| f.name == "tagent_hub_accept_errors_total")
            .unwrap();
        assert_eq!(combinations(accept.labels).len(), 8);
        assert_eq!(combinations(&[]).len(), 1);
    }
}
