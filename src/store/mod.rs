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

pub mod crypto;
mod error;
#[cfg(test)]
pub(crate) mod faulty_disk;
pub mod postgres;
mod records;
pub mod redb;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use self::postgres::{PgOptions, PgStore};
pub use self::redb::RedbStore;
pub use crypto::CredentialCipher;
pub use error::StoreError;
pub use records::{StoredAccount, StoredGroup, StoredRunner, StoredTagent};

use crate::model::TagentId;

/// An account write: `credential` `None` keeps what the account holds
/// (or creates it without one).
#[derive(Debug, Clone)]
pub struct AccountPut<'a> {
    pub tenant: &'a str,
    pub ip: IpAddr,
    pub port: u16,
    pub credential: Option<&'a str>,
}

/// An account change. Order matters: a batch may drop an account in one
/// registration and create it again in the next.
#[derive(Debug, Clone)]
pub enum AccountOp<'a> {
    Put(AccountPut<'a>),
    Delete {
        tenant: &'a str,
        ip: IpAddr,
        port: u16,
    },
}

/// Everything one transaction writes.
#[derive(Debug, Default)]
pub struct WriteBatch<'a> {
    pub tagents_put: Vec<StoredTagent>,
    pub tagents_delete: Vec<TagentId>,
    pub accounts: Vec<AccountOp<'a>>,
    pub next_id: Option<TagentId>,
    /// Replace the runner groups.
    pub groups: Option<Vec<StoredGroup>>,
}

impl WriteBatch<'_> {
    pub fn is_empty(&self) -> bool {
        self.groups.is_none()
            && self.tagents_put.is_empty()
            && self.tagents_delete.is_empty()
            && self.accounts.is_empty()
            && self.next_id.is_none()
    }
}

/// What the store holds, read at start: first one `Info`, then every tagent.
/// Items are handed over one at a time and never kept, so the size
/// difference costs nothing (boxing would cost an allocation per record).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ScanItem {
    Info {
        len: u64,
        max_id: TagentId,
        next_id: TagentId,
    },
    Tagent(StoredTagent),
}

/// What other hubs changed since this hub last read the store: tagents (the
/// new record, or `None` for a deleted one), the next id to hand out, and
/// the runner groups when an admin changed them.
#[derive(Debug, Default)]
pub struct Changes {
    pub tagents: Vec<(TagentId, Option<StoredTagent>)>,
    pub next_id: TagentId,
    pub groups: Option<Vec<StoredGroup>>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.tagents.is_empty() && self.groups.is_none()
    }
}

/// One write transaction, opened by [`RegistryStore::begin`]. Dropping it
/// without `commit` rolls it back.
pub trait WriteTxn {
    /// What other hubs committed since this hub last read the store. The
    /// caller applies it to its index before deciding anything.
    fn changes(&mut self) -> Result<Changes, StoreError>;
    /// Write `batch`; returns once it is durable.
    fn commit(self: Box<Self>, batch: &WriteBatch<'_>) -> Result<(), StoreError>;
}

/// The registry's storage engine.
pub trait RegistryStore: Send + Sync {
    /// `"redb"` or `"postgres"`, for logs.
    fn engine(&self) -> &'static str;
    /// Whether other hubs share this store (a runner group).
    fn shared(&self) -> bool;
    /// Read everything the index is rebuilt from, one item at a time.
    fn scan(
        &self,
        each: &mut dyn FnMut(ScanItem) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// Open a write transaction; with a shared store this takes the
    /// registry's lock, held until commit or drop.
    fn begin(&self) -> Result<Box<dyn WriteTxn + '_>, StoreError>;
    /// What other hubs committed since this hub last read the store, read
    /// without taking the lock (for index freshness between batches).
    fn changes(&self) -> Result<Changes, StoreError>;
    /// The account of (tenant, ip, port), if it exists.
    fn account(
        &self,
        tenant: &str,
        ip: IpAddr,
        port: u16,
    ) -> Result<Option<StoredAccount>, StoreError>;
    /// Every account as (tenant, name): for checks that the store and index agree.
    fn account_names(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// The runner groups, or `None` before they were first stored.
    fn groups(&self) -> Result<Option<Vec<StoredGroup>>, StoreError>;
    /// The cipher credentials are sealed with.
    fn cipher(&self) -> &CredentialCipher;

    /// The plaintext credential of (tenant, ip, port). Never log it.
    fn credential(
        &self,
        tenant: &str,
        ip: IpAddr,
        port: u16,
    ) -> Result<Option<String>, StoreError> {
        let rec = self.account(tenant, ip, port)?;
        open_credential(
            self.cipher(),
            tenant,
            ip,
            port,
            rec.and_then(|r| r.credential),
        )
    }

    /// The plaintext credentials of several accounts, one answer per key in
    /// order: what [`RegistryStore::credential`] answers for each. The
    /// handshakes' credential reader asks for a batch at a time, so an
    /// engine that can read them together (one transaction, one query)
    /// should. Never log them.
    fn credentials(&self, keys: &[AccountKey<'_>]) -> Vec<Result<Option<String>, StoreError>> {
        keys.iter()
            .map(|&(tenant, ip, port)| self.credential(tenant, ip, port))
            .collect()
    }

    /// Call `notify` (from any thread, quickly) whenever another hub may
    /// have committed changes. A store no other hub shares never calls it.
    fn subscribe(&self, notify: Arc<dyn Fn() + Send + Sync>) {
        let _ = notify;
    }

    /// Hub leases (shared stores only): renew this hub's lease for `ttl`.
    /// Returns true when the lease had lapsed (other hubs may have marked
    /// this hub's tagents `runner-lost`).
    fn renew_lease(&self, hub: &HubInfo, ttl: Duration) -> Result<bool, StoreError> {
        let _ = (hub, ttl);
        Ok(false)
    }

    /// The hubs whose lease has lapsed, and every hub alive, by heartbeat address.
    fn hubs(&self) -> Result<Vec<HubLease>, StoreError> {
        Ok(Vec::new())
    }
}

/// A hub as it announces itself in a runner group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubInfo {
    /// The heartbeat address told to tagents, `host:port`: the hub's name.
    pub heartbeat: String,
    /// Where its HTTP API answers, for commands forwarded by other hubs.
    pub http: String,
}

/// A hub's lease as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubLease {
    pub hub: HubInfo,
    /// Whether the lease is still running.
    pub alive: bool,
}

/// An account's key: (tenant, ip, port).
pub type AccountKey<'a> = (&'a str, IpAddr, u16);

/// Open the credential `sealed` of (tenant, ip, port); `None` stays `None`.
pub(crate) fn open_credential(
    cipher: &CredentialCipher,
    tenant: &str,
    ip: IpAddr,
    port: u16,
    sealed: Option<Vec<u8>>,
) -> Result<Option<String>, StoreError> {
    let Some(sealed) = sealed else {
        return Ok(None);
    };
    let name = crate::model::account_name(ip, port);
    let plain = cipher.open(&account_aad(tenant, &name), &sealed)?;
    String::from_utf8(plain)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("account {name}: credential: {e}")))
}

/// The associated data a credential is sealed with: the account's key.
pub(crate) fn account_aad(tenant: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(tenant.len() + name.len() + 1);
    aad.extend_from_slice(tenant.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Text sealed with the credential key, to refuse a wrong key at start.
pub(crate) const KEY_CHECK_TEXT: &[u8] = b"tagent-hub credential key check";

pub(crate) fn wrong_key() -> StoreError {
    StoreError::Key(
        "this store was written with another credential key; \
         configure that key (credential_key) or restore its key file"
            .into(),
    )
}
