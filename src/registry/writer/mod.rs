//! The writer thread: the only code that changes the index or writes the store.
//!
//! It takes every job waiting (up to a batch) and runs it through named
//! stages, one file each:
//!
//! 0. [`sync`]: open the store transaction; with a shared store this takes
//!    the registry's lock and first applies what other hubs committed.
//! 1. [`decide`]: every job against the index overlaid with the batch's
//!    earlier decisions; [`enroll`]: the tokens and approvals of those
//!    that need authority, read in the batch's transaction.
//! 2. [`commit`]: the whole batch in that one durable transaction.
//! 3. [`apply`]: the committed batch becomes the index.
//! 4. [`answer`]: each job is told; after a failed commit, registrations get
//!    the error, status changes go again with the next batch, and the index
//!    is left as it was, so it still equals the store.
//! 5. [`publish`]: watchers hear of what became durable.
//!
//! A change of runner groups runs alone between two batches ([`groups`]).

mod answer;
mod apply;
mod commit;
mod decide;
mod enroll;
mod groups;
mod job;
mod publish;
mod sync;
#[cfg(test)]
mod tests;
mod thread;

pub use enroll::PolicyConfig;
pub(super) use job::{GroupEdit, Job};
pub(super) use thread::spawn;
