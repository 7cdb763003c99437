//! The persisted forms of a tagent and an account.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::registry::model::{Status, TagentId};

/// A tagent as stored: plain strings, no interning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTagent {
    pub id: TagentId,
    pub tenant: String,
    pub port: u16,
    pub ip: IpAddr,
    pub ips: Vec<IpAddr>,
    pub name: String,
    pub user: String,
    pub version: String,
    pub os_type: String,
    pub os_version: String,
    pub osbit: String,
    pub pcpu: Option<f32>,
    pub mem: Option<f32>,
    pub status: Status,
    pub runner_group: u32,
    pub runner: Option<u32>,
    pub first_registered: u64,
    pub last_registered: u64,
    pub last_status_change: u64,
}

/// An account: one per (tenant, ip, port). `credential` is sealed
/// (see [`super::CredentialCipher`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAccount {
    pub ip: IpAddr,
    pub port: u16,
    #[serde(with = "serde_bytes")]
    pub credential: Option<Vec<u8>>,
}
