//! Upgrades (SPEC §5.5): installation packages and rollouts.
//!
//! - [`packages`]: the packages in the data directory, by SHA-256, streamed
//!   in, matched by version, os type and arch (else `default`).
//! - [`rollout`]: a version to many tagents at a concurrency, stopping
//!   after so many failures, abortable; each tagent's steps over its
//!   listener, then the wait for it to register with the new version.
//! - [`history`]: every change written to the store in order; what a
//!   stopped hub left running, marked interrupted at the next start.

pub mod history;
pub mod packages;
pub mod rollout;

pub use packages::{PackageError, Packages};
pub use rollout::{Plan, Progress, RolloutError, Rollouts};
