//! The interface both engines implement: [`RegistryStore`] and its
//! [`WriteTxn`], and the hub leases of a runner group.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::crypto::open_credential;
use super::{
    Changes, CredentialCipher, ScanItem, StoreError, StoredAccount, StoredGroup, WriteBatch,
};
use crate::model::{AuditEntry, EnrollToken, Pending, Rollout, RolloutTarget};

/// One write transaction, opened by [`RegistryStore::begin`]. Dropping it
/// without `commit` rolls it back.
pub trait WriteTxn {
    /// What other hubs committed since this hub last read the store. The
    /// caller applies it to its index before deciding anything.
    fn changes(&mut self) -> Result<Changes, StoreError>;
    /// Whether the lease of the hub at `heartbeat` is still lapsed at
    /// `epoch`, read inside this transaction: a runner-lost decision
    /// applies only then (the hub did not renew and reassert meanwhile).
    /// A store no other hub shares has no leases.
    fn still_lapsed(&mut self, _heartbeat: &str, _epoch: u64) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// The enrollment token `id`, read in this transaction.
    fn token(&mut self, id: &str) -> Result<Option<EnrollToken>, StoreError>;
    /// The pending registration of `key` ([`crate::model::pending_id`]),
    /// read in this transaction.
    fn pending(&mut self, key: &str) -> Result<Option<Pending>, StoreError>;
    /// How many registrations are pending, read in this transaction.
    fn pending_len(&mut self) -> Result<u64, StoreError>;
    /// The ids of the unapproved pending registrations whose last attempt
    /// is older than `before_ms`, read in this transaction.
    fn pending_stale(&mut self, before_ms: u64) -> Result<Vec<String>, StoreError>;
    /// Write `batch`; returns once it is durable.
    fn commit(self: Box<Self>, batch: &WriteBatch<'_>) -> Result<(), StoreError>;
}

/// The storage engines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// One file of this hub's own (the default).
    Redb,
    /// One database shared by a runner group's hubs.
    Postgres,
}

impl Engine {
    /// `"redb"` or `"postgres"`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Redb => "redb",
            Engine::Postgres => "postgres",
        }
    }

    /// Whether other hubs share a store of this engine.
    pub fn shared(self) -> bool {
        self == Engine::Postgres
    }
}

/// The registry's storage engine.
pub trait RegistryStore: Send + Sync {
    /// Which engine this is.
    fn engine(&self) -> Engine;
    /// Whether other hubs share this store (a runner group).
    fn shared(&self) -> bool {
        self.engine().shared()
    }
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

    /// Append `entries` to the audit log in one transaction of its own
    /// (never the registry writer's), numbered in order after the last
    /// (their `seq` is ignored).
    fn append_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError>;

    /// At most `limit` audit entries, newest first, those before the seq
    /// `before` (all with `None`).
    fn audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// Every enrollment token, by id.
    fn tokens(&self) -> Result<Vec<EnrollToken>, StoreError>;

    /// Every pending registration.
    fn pending_list(&self) -> Result<Vec<Pending>, StoreError>;

    /// Write a rollout's header and the given targets' records (each
    /// replacing what the store held for it), in one transaction of its
    /// own, never the registry writer's.
    fn put_rollout(&self, rollout: &Rollout, targets: &[RolloutTarget]) -> Result<(), StoreError>;

    /// Every rollout's header, newest first, at most `limit`.
    fn rollouts(&self, limit: usize) -> Result<Vec<Rollout>, StoreError>;

    /// One rollout's header and its targets by tagent id.
    fn rollout(&self, id: &str) -> Result<Option<(Rollout, Vec<RolloutTarget>)>, StoreError>;

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
    /// Grows each time the hub renews a lease that had lapsed.
    pub epoch: u64,
}

/// An account's key: (tenant, ip, port).
pub type AccountKey<'a> = (&'a str, IpAddr, u16);
