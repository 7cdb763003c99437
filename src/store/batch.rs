//! What the writer hands the store and what the store hands back: one
//! transaction's batch, the scan at start, and other hubs' changes.

use std::net::IpAddr;

use super::{StoredGroup, StoredTagent};
use crate::model::{EnrollToken, Pending, TagentId};

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
    /// Enrollment tokens written whole: created, used, revoked.
    pub tokens_put: Vec<&'a EnrollToken>,
    /// Pending registrations written whole, and those gone (by key).
    pub pending_put: Vec<&'a Pending>,
    pub pending_delete: Vec<&'a str>,
}

impl WriteBatch<'_> {
    pub fn is_empty(&self) -> bool {
        self.groups.is_none()
            && self.tagents_put.is_empty()
            && self.tagents_delete.is_empty()
            && self.accounts.is_empty()
            && self.next_id.is_none()
            && self.tokens_put.is_empty()
            && self.pending_put.is_empty()
            && self.pending_delete.is_empty()
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
