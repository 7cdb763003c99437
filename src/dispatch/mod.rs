//! Commands for one tagent, run where its session is: on this hub's
//! session, or forwarded to the hub of the runner group that holds it. The
//! HTTP handlers call this; it calls the heartbeat server and the registry.
//!
//! - [`command`]: the commands an operator sends and a command's result.
//! - [`run`]: where a command runs (here, or the holding hub) and running it here.
//! - [`forward`]: asking the hub that holds the session.
//! - [`signature`]: how hubs prove to each other that a request comes from
//!   one of them, now, once.

pub mod command;
pub mod forward;
pub mod run;
pub mod signature;

pub use command::{Command, CommandResult};
pub use forward::ForwardError;
pub use run::Dispatch;
pub use signature::{PeerRefusal, Verifier};
