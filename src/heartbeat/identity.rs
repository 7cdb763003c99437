//! Who may speak for a tagent on the heartbeat port (SPEC §6).
//!
//! A compat line proves nothing: what it claims (`mgmtIp`, `agentId`) is
//! believed only from where the real tagent connects, its own address. A
//! native session proved the credential, and no session that did not is
//! ever put in its place.

use std::net::IpAddr;

use super::session::{ProtocolKind, Session, SessionKey};
use crate::model::{TagentId, parse_ip};
use crate::registry::IndexView;

/// Why a heartbeat was refused; the session is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It named another (tenant, ip, port) than the session's first heartbeat.
    IdentityChanged,
    /// A compat line from an address that is none of the claimed tagent's.
    Impostor,
    /// It would displace a session that proved the tagent's credential.
    Proved,
}

impl Refused {
    /// The label of `tagent_hub_identity_refused_total`, for the two that
    /// are about trust (`IdentityChanged` is a protocol error of its own).
    pub const LABELS: [&'static str; 2] = ["impostor", "proved_session"];

    pub fn as_str(self) -> &'static str {
        match self {
            Refused::IdentityChanged => "identity_changed",
            Refused::Impostor => Self::LABELS[0],
            Refused::Proved => Self::LABELS[1],
        }
    }

    /// What the peer is told before the close.
    pub fn message(self) -> &'static str {
        match self {
            Refused::IdentityChanged => {
                "this connection belongs to another tagent (tenant, ip or port changed)"
            }
            Refused::Impostor => {
                "this connection does not come from an ip of the tagent it names \
                 (list NAT or proxy ranges in heartbeat.compat_trusted_networks)"
            }
            Refused::Proved => "the tagent holds a session that proved its credential",
        }
    }
}

/// Whether `t` answers for `ip`, as primary or contained ip.
/// Whether `peer` is among the comma-joined ips of an `ipString`.
fn listed(ip_string: Option<&str>, peer: IpAddr) -> bool {
    ip_string.is_some_and(|s| {
        s.split(',')
            .filter_map(|ip| parse_ip(ip.trim()))
            .any(|ip| ip.to_canonical() == peer)
    })
}

/// Whether a compat connection from `peer` may claim `key`.
///
/// The peer may always claim its own address, and anything from a trusted
/// range. Otherwise it must be an ip of the tagent the line resolved to;
/// of one of the tagents under `key` when its `agentId` matched none; and,
/// when no tagent is registered under `key` at all (an unregistered
/// session, nothing to take over), one of the ips its own `ipString` lists.
pub(super) fn vouched(
    index: &impl IndexView,
    trusted: &[ipnet::IpNet],
    peer: IpAddr,
    key: &SessionKey,
    resolved: Option<TagentId>,
    ip_string: Option<&str>,
) -> bool {
    if peer == key.ip || trusted.iter().any(|n| n.contains(&peer)) {
        return true;
    }
    if let Some(id) = resolved {
        return index.get(id).is_some_and(|t| t.answers_for(peer));
    }
    let under = index.lookup(key.tenant, key.port, key.ip);
    if under.is_empty() {
        return listed(ip_string, peer);
    }
    under
        .iter()
        .any(|id| index.get(*id).is_some_and(|t| t.answers_for(peer)))
}

/// Whether `held` may not be replaced by `by`: it proved the credential
/// (native, past its handshake: only then is it in the tables), `by` did
/// not, and `held` is not already closing.
pub(super) fn outranks(held: &Session, by: &Session) -> bool {
    held.protocol == ProtocolKind::Native
        && by.protocol == ProtocolKind::Compat
        && held.closing().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DisconnectReason, HostFacts, Status, Sym, Tagent};
    use crate::registry::Index;

    /// Tagent 7 at 10.0.0.5:3939, which also holds 10.0.0.6.
    fn index() -> Index {
        let mut index = Index::new();
        index.put(Tagent {
            id: 7,
            tenant: Sym(0),
            port: 3939,
            ip: ip("10.0.0.5"),
            ips: vec![ip("10.0.0.5"), ip("10.0.0.6")].into(),
            name: "h".into(),
            host: HostFacts::default(),
            status: Status::Disconnected(DisconnectReason::NeverConnected),
            runner_group: 1,
            runner: None,
            first_registered: 0,
            last_registered: 0,
            last_status_change: 0,
            credential: None,
            credential_change_until: 0,
        });
        index
    }

    fn key(ip: &str) -> SessionKey {
        SessionKey {
            tenant: Sym(0),
            ip: ip.parse().unwrap(),
            port: 3939,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_peer_may_claim_its_own_address_or_another_ip_of_its_tagent() {
        let index = index();
        let k = key("10.0.0.5");
        assert!(vouched(&index, &[], ip("10.0.0.5"), &k, Some(7), None));
        assert!(vouched(&index, &[], ip("10.0.0.6"), &k, Some(7), None));
        assert!(vouched(&index, &[], ip("10.0.0.6"), &k, None, None));
    }

    #[test]
    fn another_address_may_not_claim_a_registered_tagent() {
        let index = index();
        let k = key("10.0.0.5");
        for resolved in [Some(7), None] {
            assert!(!vouched(&index, &[], ip("10.0.0.9"), &k, resolved, None));
            // What the line says of itself does not count for a known tagent.
            assert!(!vouched(
                &index,
                &[],
                ip("10.0.0.9"),
                &k,
                resolved,
                Some("10.0.0.9")
            ));
        }
    }

    #[test]
    fn a_trusted_range_may_claim_anything() {
        let index = index();
        let nat: Vec<ipnet::IpNet> = vec!["192.168.0.0/16".parse().unwrap()];
        let k = key("10.0.0.5");
        assert!(vouched(&index, &nat, ip("192.168.4.4"), &k, Some(7), None));
        assert!(!vouched(&index, &nat, ip("192.169.0.1"), &k, Some(7), None));
    }

    #[test]
    fn an_unknown_identity_is_vouched_for_by_its_own_ip_string() {
        let index = index();
        let k = key("10.0.0.50");
        assert!(vouched(
            &index,
            &[],
            ip("10.0.0.51"),
            &k,
            None,
            Some("10.0.0.50, 10.0.0.51")
        ));
        assert!(!vouched(
            &index,
            &[],
            ip("10.0.0.51"),
            &k,
            None,
            Some("x,10.0.0.52")
        ));
        assert!(!vouched(&index, &[], ip("10.0.0.51"), &k, None, None));
    }
}
