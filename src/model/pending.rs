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
use sha2::{Digest, Sha256};

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
    /// The fingerprint of the credential it brought (part of its id).
    pub print: Option<CredentialPrint>,
    /// Unix ms of the first and the latest attempt, and how many.
    pub first_ms: u64,
    pub last_ms: u64,
    pub attempts: u32,
    /// Who approved it (an admin token's fingerprint), and when; `None`: waiting.
    pub approved_by: Option<String>,
    pub approved_ms: u64,
}

/// The id of the pending registration of (tenant, ip, port) bringing the
/// credential of `print`: 16 hex digits of a SHA-256 over them. Each
/// credential waits apart, so an operator's approval admits exactly the
/// attempt it was shown (an impostor's attempt beside the real tagent's is
/// another entry, with its own source), and the id says nothing of the
/// credential (`print` is keyed by the hub's secret).
pub fn pending_id(tenant: &str, ip: IpAddr, port: u16, print: Option<CredentialPrint>) -> String {
    let mut h = Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(ip.to_string().as_bytes());
    h.update([0]);
    h.update(port.to_be_bytes());
    match print {
        Some(p) => h.update(p.0),
        None => h.update(b"none"),
    }
    hex::encode(&h.finalize()[..8])
}

impl Pending {
    pub fn id(&self) -> String {
        pending_id(&self.tenant, self.ip, self.port, self.print)
    }

    pub fn approved(&self) -> bool {
        self.approved_by.is_some()
    }
}
