//! tagent-hub: the runner-side heartbeat server and tagent registry.
//!
//! Data flows one way: socket -> codec -> session -> registry/status -> store.
//!
//! - [`model`]: the vocabulary (tagents, status, runner groups, the
//!   interner, number and address parsing), depending on nothing else here.
//! - [`config`]: the TOML file, environment and flags, and their defaults.
//! - [`registry`]: the registration rules (SPEC §2.3), pure, over an
//!   in-memory index; the writer thread that group-commits every change.
//! - [`store`]: one interface, two engines: `redb` (a single hub) and
//!   PostgreSQL (a runner group's hubs); credentials sealed at rest.
//! - [`group`]: hub leases in a shared store; a dead hub's tagents runner-lost.
//! - [`heartbeat`]: the session server on the heartbeat port, both protocols.
//! - [`listener`]: the hub as a client of each tagent's own listener
//!   (SPEC §5): config, logs, reload without a session.
//! - [`upgrade`]: installation packages and rollouts over tagents'
//!   listeners, their history in the store.
//! - [`dispatch`]: a command for a tagent, run on this hub's session or
//!   forwarded to the hub of the runner group that holds it.
//! - [`http`]: `POST /register`, the admin API (`/api/v1`, bearer tokens,
//!   OpenAPI), `/metrics`, `/healthz`; the HTTP accept loop with its head,
//!   header and body limits.
//! - [`net`]: what both accept loops do when `accept(2)` fails.
//! - [`metrics`]: the Prometheus recorder.
//! - [`shutdown`]: the signal that stops every task.
//! - [`app`]: wiring it all together for `tagent-hub serve`.
//! - [`ctl`]: `tagent-hub ctl`, the admin API's command-line client.

// Allowed only where it is needed (the lot in `heartbeat/lot.rs`), each
// block with its `// Safety:` reason.
#![deny(unsafe_code)]

pub mod app;
pub mod config;
pub mod console;
pub mod ctl;
pub mod data_dir;
pub mod dispatch;
pub mod group;
pub mod heartbeat;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod model;
pub mod net;
pub mod registry;
pub mod shutdown;
pub mod store;
pub mod upgrade;
