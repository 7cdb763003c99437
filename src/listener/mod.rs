//! The hub as a client of each tagent's own listener (SPEC §5: its
//! `listen.port`, 3939 by default): config, logs and reload without a
//! heartbeat session. One request per connection; every peer is hostile,
//! every wait and size bounded.
//!
//! - [`cipher`]: RC4 as the tagent uses it; the [`Password`] a stored
//!   credential stands for (never printed).
//! - [`codec`]: the chunks (2-byte length, `00 00` end, the tail), in clear
//!   or RC4'd (`Tagent1.1s`); pure, fuzzed.
//! - [`handshake`]: the tagent's greeting and the answer to its challenge; pure.
//! - [`request`]: the request chunk of each type.
//! - [`client`]: one connection: connect, log in, one request, its answer.
//! - [`error`]: why a connection or an operation failed, with metrics labels.
//! - [`limits`]: the waits and sizes, from `[listener]` of the configuration.
//! - [`gate`]: one operation per tagent, a bounded number per hub.
//! - [`commands`]: the operations' commands and paths per os; plain file names.
//! - [`config_file`]: the tagent's config lines; the credential masked.
//! - [`config_change`]: the whole file or some keys written, then a
//!   reload, step by step; the reload alone.
//! - [`upgrade`]: one tagent's upgrade steps (prepare, upload, unpack,
//!   reload), each reported as it ends.
//! - [`audit`]: each operation's entry in the store's audit log.
//! - [`reachability`]: the last check of each tagent (in memory).
//! - [`operations`]: the operations, as the admin API runs them.
//! - [`metrics`]: operations by kind and result, durations, connections open.

pub mod audit;
pub mod cipher;
pub mod client;
pub mod codec;
pub mod commands;
pub mod config_change;
pub mod config_file;
pub mod error;
pub mod gate;
pub mod handshake;
pub mod limits;
mod metrics;
pub mod operations;
pub mod reachability;
pub mod request;
pub mod upgrade;

pub use cipher::{CredentialError, Password};
pub use client::{Connection, Download, ExecOutput, ExecStatus, FileType};
pub use config_change::{ConfigChange, Step, StepName};
pub use config_file::{ConfigError, KeyChanges};
pub use error::{ListenerError, OperationError};
pub use handshake::{Greeting, HandshakeError, Mode};
pub use limits::Limits;
pub use operations::{ConfigFile, LogStream, Operations};
pub use reachability::Reachability;
pub use request::{Kind, Request};
pub use upgrade::{UpgradeStep, UpgradeStepResult};
