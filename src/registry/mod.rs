//! The tagent registry: the registration rules over an in-memory index that
//! always equals what the store holds.
//!
//! - [`request`]: a registration body, parsed and validated (rule 1).
//! - [`rules`]: rules 2–8 as a pure function over an [`index::IndexView`].
//! - [`index`]: lookups by id and by (tenant, port, ip).
//! - [`liveness`]: rule 3 across the hubs of a runner group.
//! - [`writer`]: the one thread that decides and group-commits changes, in
//!   named stages.
//! - [`events`]: what watchers hear after each commit; [`query`]: filters.
//! - [`enrollment`]: operators' jobs on enrollment tokens and pending
//!   registrations (the registration policy of SPEC §6).
//!
//! Readers take the index's read lock briefly and never across `.await`
//! (`parking_lot` guards are not `Send`, so the compiler enforces it).

pub mod enrollment;
pub mod error;
pub mod events;
mod handle;
pub mod index;
mod liveness;
pub mod query;
pub mod request;
pub mod rules;
mod stored;
mod writer;

pub use enrollment::{EnrollJob, EnrollOutcome, PolicyConfig};
pub use error::{ChangeError, RegisterError};
pub use events::{Change, Event, EventKind, EventLog};
pub use handle::{Registered, Registry, StatusChange};
pub use index::{Index, IndexView};
pub use liveness::{Liveness, Mine, NoSessions};
pub use request::{Origin, RegisterRequest, Secret};
pub use stored::{from_stored, to_stored};

use handle::MAX_BATCH;
use stored::apply_changes;
