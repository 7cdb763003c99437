//! The vocabulary every layer speaks: tagents, their status, runner groups,
//! and how tagents write numbers and addresses. Depends on nothing else in
//! the crate; `store/`, `config.rs`, `registry/`, `heartbeat/` and `http/`
//! import it.
//!
//! - [`tagent`]: a registered tagent as the index holds it; account names.
//! - [`credential`]: a credential's fingerprint, and when it may change.
//! - [`host`]: what a tagent reports about its host, in every form.
//! - [`status`]: connected or disconnected, and why.
//! - [`command`]: what became of a command sent to a tagent.
//! - [`filter`]: the tagent filter operators write (API and `ctl`).
//! - [`group`]: runner groups, their ordered networks and rule 4's match.
//! - [`intern`]: the interner behind a tagent's repeated strings.
//! - [`number`]: the one reading of "a number or a string of digits".
//! - [`addr`]: ip and `host:port` parsing.
//! - [`clock`]: Unix milliseconds.
//! - [`audit`]: an entry of the audit log of operations over listeners.
//! - [`policy`]: what a first registration needs, per tenant.
//! - [`enrollment`]: enrollment tokens.
//! - [`pending`]: registrations waiting for an operator's approval.
//! - [`rollout`]: installation packages, rollouts and each tagent's steps.

pub mod addr;
pub mod audit;
pub mod clock;
pub mod command;
pub mod credential;
pub mod enrollment;
pub mod filter;
pub mod group;
pub mod host;
pub mod intern;
pub mod number;
pub mod pending;
pub mod policy;
pub mod rollout;
pub mod status;
pub mod tagent;

pub use addr::{host_port, parse_host_port, parse_ip};
pub use audit::AuditEntry;
pub use clock::now_millis;
pub use command::CommandOutcome;
pub use credential::CredentialPrint;
pub use enrollment::{EnrollToken, TokenRefusal};
pub use filter::FilterParams;
pub use group::{Runner, RunnerGroup, RunnerGroups};
pub use host::HostFacts;
pub use intern::{Interner, Sym};
pub use number::{NotDigits, parse_digits};
pub use pending::{Pending, pending_id};
pub use policy::{Policies, Policy};
pub use rollout::{Package, Rollout, RolloutState, RolloutTarget, TargetState};
pub use status::{DisconnectReason, Status};
pub use tagent::{MAX_TAGENT_ID, Tagent, TagentId, account_name};
