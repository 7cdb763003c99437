//! A pending registration (SPEC §6): one the hub did not accept for want of
//! authority, kept for an operator to approve. Either a first registration
//! under the `approve` policy, or a known tagent's registration bringing a
//! new credential (a reinstall, or an impostor) in any policy.
//!
//! The tagent retries every few seconds (SPEC §2.2); once an operator has
//! approved its entry, its next registration bringing the same credential is
//! accepted, and the entry goes in the same commit.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{CredentialPrint, TagentId};

/// A registration waiting for an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub tenant: String,
    /// The primary ip it asked for, and its port: with the tenant, its key.
    pub ip: IpAddr,
    pub port: u16,
    /// The known tagent it would change (a reinstall); `None`: a new one.
    pub tagent: Option<TagentId>,
    /// Where the request came from (its TCP peer, or a trusted proxy's client).
    pub source: IpAddr,
    pub name: String,
    pub version: String,
    pub os_type: String,
    /// The fingerprint of the credential it brought: an approval admits
    /// that credential only.
    pub print: Option<CredentialPrint>,
    /// Unix ms of the first and the latest attempt, and how many.
    pub first_ms: u64,
    pub last_ms: u64,
    pub attempts: u32,
    /// Who approved it (an admin token's fingerprint), and when; `None`: waiting.
    pub approved_by: Option<String>,
    pub approved_ms: u64,
}

/// The store's key of the pending registration of (tenant, ip, port). A
/// tenant holds no `/`, so the last two fields split off unambiguously.
pub fn pending_key(tenant: &str, ip: IpAddr, port: u16) -> String {
    format!("{tenant}/{ip}/{port}")
}

impl Pending {
    pub fn key(&self) -> String {
        pending_key(&self.tenant, self.ip, self.port)
    }

    /// Whether an operator's approval admits a registration bringing `print`.
    pub fn admits(&self, print: Option<CredentialPrint>) -> bool {
        self.approved_by.is_some() && self.print == print
    }
}
