//! A registered tagent as the index holds it, and its accounts' names.

use std::net::IpAddr;

use super::intern::Sym;
use super::status::Status;

/// A tagent's id: positive, below 2^53 so that every JSON parser keeps it exact.
/// Ids are handed out densely from 1, which lets the index keep records in a `Vec`.
pub type TagentId = u64;

/// The largest id the hub hands out (the index addresses records by `u32`).
pub const MAX_TAGENT_ID: TagentId = u32::MAX as TagentId;

/// One registered tagent as the index holds it. Repeated strings are interned
/// ([`Sym`]); the credential is not here at all (it lives encrypted in the store).
#[derive(Debug, Clone, PartialEq)]
pub struct Tagent {
    pub id: TagentId,
    pub tenant: Sym,
    pub port: u16,
    /// The primary ip: `mgmtIp`, or the peer address of the registration.
    pub ip: IpAddr,
    /// The contained ips (the host's NICs, from `ipString`), deduplicated, in order.
    pub ips: Box<[IpAddr]>,
    pub name: Box<str>,
    pub user: Sym,
    pub version: Sym,
    pub os_type: Sym,
    pub os_version: Sym,
    pub osbit: Sym,
    pub pcpu: Option<f32>,
    pub mem: Option<f32>,
    pub status: Status,
    pub runner_group: u32,
    /// The runner that last held its heartbeat session; none until the first one.
    pub runner: Option<u32>,
    /// Unix milliseconds.
    pub first_registered: u64,
    pub last_registered: u64,
    pub last_status_change: u64,
}

impl Tagent {
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
