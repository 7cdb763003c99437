//! The heartbeat server on port 8888 (SPEC §3), one concept a file.
//!
//! Bytes, from the socket up:
//! - [`listener`]: bind, the accept loop (fd exhaustion, `max_sessions`), protocol sniffing.
//! - `conn`: socket I/O with no read buffer kept while idle, bounded lines
//!   and frames; it knows nothing of sessions or the registry.
//! - [`compat`]: real tagents' JSON lines.
//! - [`native`]: the framed MessagePack protocol, one handler per message.
//! - [`proto`]: native messages; [`client`]: a small async native client.
//!
//! Sessions:
//! - `task`: one session task loop, generic over the protocol.
//! - [`session`]: one connection's shared state.
//! - `parking`: an idle session gives up its task; `lot`: where its socket waits.
//! - `commands`: commands down a session, and what their caller learns.
//! - `identity`: who may speak for a tagent (compat lines from its own
//!   address; nothing displaces a session that proved the credential).
//!
//! The hub:
//! - `hub`: the session tables and heartbeat accounting ([`Hub`]).
//! - `status`: status transitions batched to the registry's writer, and the
//!   reasons of just-closed sessions until they are committed.
//! - `sweeper`: the idle timeout and park requests.
//! - `reloader`: rate-limited reloads of unregistered tagents.
//! - `groups`: runner-group lists as tagents hold them (the `updategroup` cache).
//! - `settings`: [`Settings`] from the configuration.
//! - `credentials`: native handshakes' credentials, read in batches by one thread.
//! - `proof_throttle`: failed native handshakes per source, with back-off.
//! - `metrics`: metric handles resolved once.

pub mod client;
mod commands;
pub mod compat;
pub mod conn;
mod credentials;
mod groups;
mod hub;
mod identity;
pub mod listener;
mod lot;
mod metrics;
pub mod native;
mod parking;
mod proof_throttle;
pub mod proto;
mod reloader;
pub mod session;
mod settings;
mod status;
mod sweeper;
mod task;

pub use commands::{CommandError, Delivery};
pub use groups::GroupList;
pub use hub::{Beat, Facts, Hub, OpenGuard, SessionView, UnregisteredPage};
pub use identity::Refused;
pub use metrics::HbMetrics;
pub use proto::CommandKind;
pub use session::{ProtocolKind, Session, SessionKey, UNKNOWN_TENANT};
pub use settings::Settings;
