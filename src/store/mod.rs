//! Durable storage of the registry, behind one interface with two engines.
//!
//! - [`redb`]: the embedded default, one file, for a single hub.
//! - [`postgres`]: one PostgreSQL database shared by the hubs of a runner
//!   group (SPEC §4), with a hub lease per hub and change notifications.
//!
//! The registry's writer thread is the only code that writes. It opens a
//! [`WriteTxn`], applies to its index what other hubs committed meanwhile
//! ([`WriteTxn::changes`]), decides the batch against that index and
//! commits it: with PostgreSQL the transaction holds the registry's lock
//! from `begin` to `commit`, so no decision is ever made against an index
//! older than the database. Every method blocks: call them from the writer
//! thread, the hub's credential reader or `spawn_blocking`, never from an
//! async task.

mod batch;
pub mod crypto;
mod engine;
mod error;
#[cfg(test)]
pub(crate) mod faulty_disk;
pub mod postgres;
mod records;
pub mod redb;

pub use self::postgres::{PgOptions, PgStore};
pub use self::redb::RedbStore;
pub use batch::{AccountOp, AccountPut, Changes, ScanItem, WriteBatch};
pub use crypto::CredentialCipher;
pub(crate) use crypto::{KEY_CHECK_TEXT, account_aad, open_credential, wrong_key};
pub use engine::{AccountKey, Engine, HubInfo, HubLease, RegistryStore, WriteTxn};
pub use error::StoreError;
pub use records::{StoredAccount, StoredGroup, StoredRunner, StoredTagent};
