//! Commands for one tagent, run where its session is: on this hub's
//! session, or forwarded to the hub of the runner group that holds it. The
//! HTTP handlers call this; it calls the heartbeat server and the registry.
//!
//! - [`command`]: the commands an operator sends and a command's result.
//! - [`run`]: where a command runs (here, or the holding hub) and running it here.
//! - [`forward`]: asking the hub that holds the session, and how hubs
//!   prove themselves to each other.

pub mod command;
pub mod forward;
pub mod run;

pub use command::{Command, CommandResult};
pub use forward::{ForwardError, PEER_HEADER};
pub use run::Dispatch;
