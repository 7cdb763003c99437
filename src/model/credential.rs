//! What the registry keeps of a tagent's credential beside its record: a
//! keyed fingerprint, to tell "the same credential" from "a new one"
//! without unsealing anything (SPEC §6: an unauthenticated registration may
//! not replace a known tagent's credential).

use serde::{Deserialize, Serialize};

/// The first 16 bytes of HMAC-SHA256(key derived from the credential key,
/// credential). Without the key it says nothing about the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CredentialPrint(#[serde(with = "serde_bytes")] pub [u8; 16]);

/// Whether a registration may change what a known tagent holds: its
/// credential (`new` differs from `held`) or its primary ip
/// (`moves_primary`). Allowed when no credential is known yet (a record from
/// before fingerprints, or registered without one), when the change window
/// is open (the hub sent `resetcred`, or an operator allowed a reinstall,
/// until `open_until`), or, with no change of credential, when the request
/// proves the credential by bringing it. A request without a credential
/// proves nothing: it may change nothing of a tagent that holds one (not
/// its primary ip, nor the host facts a rollout goes by). `moves_primary`
/// then changes nothing; it is kept for the callers' clarity.
pub fn may_change(
    held: Option<CredentialPrint>,
    new: Option<CredentialPrint>,
    moves_primary: bool,
    open_until: u64,
    now: u64,
) -> bool {
    let _ = moves_primary;
    if held.is_none() || now <= open_until {
        return true;
    }
    new.is_some() && new == held
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<CredentialPrint> = Some(CredentialPrint([1; 16]));
    const B: Option<CredentialPrint> = Some(CredentialPrint([2; 16]));

    #[test]
    fn a_known_credential_changes_only_in_an_open_window() {
        // (held, new, moves, open_until, now) -> allowed
        let table = [
            (A, A, false, 0, 10, true),  // restart, reload
            (A, A, true, 0, 10, true),   // the same credential moves its primary ip
            (A, B, false, 0, 10, false), // a new credential: reinstall or impostor
            (A, B, true, 0, 10, false),
            (A, None, false, 0, 10, false), // proves nothing: changes nothing
            (A, None, true, 0, 10, false),  // nor moves the primary ip
            (A, B, false, 10, 10, true),    // resetcred / approval, within the window
            (A, B, true, 10, 11, false),    // the window has passed
            (None, B, true, 0, 10, true),   // nothing known yet
        ];
        for (held, new, moves, until, now, want) in table {
            assert_eq!(
                may_change(held, new, moves, until, now),
                want,
                "{held:?} {new:?} {moves} {until} {now}"
            );
        }
    }
}
