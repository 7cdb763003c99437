//! The persisted forms of a tagent and an account.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Runner, RunnerGroup, RunnerGroups, Status, TagentId, parse_host_port};

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

/// A runner group as stored: the whole ordered list is one record, so a
/// change to it is one atomic write and the order (first match wins) is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredGroup {
    pub id: u32,
    pub name: String,
    pub networks: Vec<ipnet::IpNet>,
    pub runners: Vec<StoredRunner>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRunner {
    pub id: u32,
    pub name: String,
    /// `host:port`; `None` for "this hub, at whatever address it advertises".
    pub heartbeat: Option<String>,
}

impl StoredGroup {
    pub fn from_groups(groups: &RunnerGroups) -> Vec<StoredGroup> {
        groups
            .groups
            .iter()
            .map(|g| StoredGroup {
                id: g.id,
                name: g.name.clone(),
                networks: g.networks.clone(),
                runners: g
                    .runners
                    .iter()
                    .map(|r| StoredRunner {
                        id: r.id,
                        name: r.name.clone(),
                        heartbeat: (!r.this_hub).then(|| r.heartbeat()),
                    })
                    .collect(),
            })
            .collect()
    }

    /// The groups as the rules use them; this hub's runners get `advertised`.
    pub fn resolve(
        stored: &[StoredGroup],
        advertised: &(String, u16),
    ) -> Result<RunnerGroups, String> {
        let mut groups = Vec::with_capacity(stored.len());
        for g in stored {
            let mut runners = Vec::with_capacity(g.runners.len());
            for r in &g.runners {
                let (host, port) = match &r.heartbeat {
                    Some(hb) => parse_host_port(hb)
                        .map_err(|e| format!("stored runner {} ({}): {e}", r.id, r.name))?,
                    None => advertised.clone(),
                };
                runners.push(Runner {
                    id: r.id,
                    name: r.name.clone(),
                    host,
                    port,
                    this_hub: r.heartbeat.is_none(),
                });
            }
            groups.push(RunnerGroup {
                id: g.id,
                name: g.name.clone(),
                networks: g.networks.clone(),
                runners,
            });
        }
        Ok(RunnerGroups { groups }.sorted_runners())
    }
}
