//! A registered tagent as the index holds it, and its accounts' names.

use std::net::IpAddr;

use super::credential::CredentialPrint;
use super::host::HostFacts;
use super::intern::Sym;
use super::status::Status;

/// A tagent's id: positive, below 2^53 so that every JSON parser keeps it exact.
/// Ids are handed out densely from 1, which lets the index keep records in a `Vec`.
pub type TagentId = u64;

/// The largest id the hub hands out (the index addresses records by `u32`).
pub const MAX_TAGENT_ID: TagentId = u32::MAX as TagentId;

/// One registered tagent. `S` is the type of the strings that repeat across
/// tagents, as in [`HostFacts`]: the index holds `Tagent<Sym>` (interned), the
/// store `Tagent<String>`; [`Tagent::map`] converts. The credential itself
/// is not here (it lives encrypted in the store, with the accounts): only
/// its keyed fingerprint.
///
/// Serialized (the stored form) as a named map, the host facts among its own
/// fields.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Tagent<S = Sym> {
    pub id: TagentId,
    pub tenant: S,
    pub port: u16,
    /// The primary ip: `mgmtIp`, or the peer address of the registration.
    pub ip: IpAddr,
    /// The contained ips (the host's NICs, from `ipString`), deduplicated, in order.
    pub ips: Box<[IpAddr]>,
    pub name: Box<str>,
    #[serde(flatten)]
    pub host: HostFacts<S>,
    pub status: Status,
    pub runner_group: u32,
    /// The runner that last held its heartbeat session; none until the first one.
    pub runner: Option<u32>,
    /// Unix milliseconds.
    pub first_registered: u64,
    pub last_registered: u64,
    pub last_status_change: u64,
    /// The fingerprint of the credential it registered with, if any. (Not
    /// written when absent, nor the window when closed: a record without
    /// them encodes as before they existed.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialPrint>,
    /// Until when (Unix milliseconds) a registration may bring a new
    /// credential: the hub sent `resetcred`, or an operator allowed a
    /// reinstall. 0: no change is open.
    #[serde(skip_serializing_if = "is_zero")]
    pub credential_change_until: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl<S> Tagent<S> {
    /// The same tagent with its repeated strings converted by `f`.
    pub fn map<T>(&self, mut f: impl FnMut(&S) -> T) -> Tagent<T> {
        Tagent {
            id: self.id,
            tenant: f(&self.tenant),
            port: self.port,
            ip: self.ip,
            ips: self.ips.clone(),
            name: self.name.clone(),
            host: self.host.map(f),
            status: self.status,
            runner_group: self.runner_group,
            runner: self.runner,
            first_registered: self.first_registered,
            last_registered: self.last_registered,
            last_status_change: self.last_status_change,
            credential: self.credential,
            credential_change_until: self.credential_change_until,
        }
    }

    /// The distinct ips this tagent answers for: the primary first, then the
    /// contained ones that differ from it. `pos` 0 is the primary, `i + 1` is `ips[i]`.
    pub fn all_ips(&self) -> impl Iterator<Item = (u16, IpAddr)> + '_ {
        std::iter::once((0u16, self.ip)).chain(
            self.ips
                .iter()
                .enumerate()
                .filter(move |(_, ip)| **ip != self.ip)
                .map(|(i, ip)| ((i + 1) as u16, *ip)),
        )
    }

    /// The ip at `pos`, as numbered by [`Tagent::all_ips`].
    pub fn ip_at(&self, pos: u16) -> Option<IpAddr> {
        match pos {
            0 => Some(self.ip),
            n => self.ips.get(n as usize - 1).copied(),
        }
    }

    /// Whether `ip` is the primary ip or one of the contained ones.
    pub fn answers_for(&self, ip: IpAddr) -> bool {
        self.ip == ip || self.ips.contains(&ip)
    }
}

/// The name of the account of an (ip, port): `<ip>_<port>_tagent`.
pub fn account_name(ip: IpAddr, port: u16) -> String {
    format!("{ip}_{port}_tagent")
}
