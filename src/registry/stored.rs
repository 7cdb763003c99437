//! The index's [`Tagent`] and the store's [`StoredTagent`], one from the
//! other, and other hubs' changes applied to the index.

use crate::model::{Interner, Tagent};
use crate::store::{Changes, StoredTagent};

use super::Index;

/// Apply what other hubs committed to `index`.
pub(super) fn apply_changes(index: &mut Index, interner: &Interner, changes: Changes) {
    for (id, t) in changes.tagents {
        match t {
            Some(t) => index.put(from_stored(&t, interner)),
            None => {
                index.remove(id);
            }
        }
    }
    index.bump_next_id(changes.next_id);
}

pub fn from_stored(s: &StoredTagent, interner: &Interner) -> Tagent {
    Tagent {
        id: s.id,
        tenant: interner.intern(&s.tenant),
        port: s.port,
        ip: s.ip,
        ips: s.ips.clone().into_boxed_slice(),
        name: s.name.as_str().into(),
        host: s.host.map(|v| interner.intern(v)),
        status: s.status,
        runner_group: s.runner_group,
        runner: s.runner,
        first_registered: s.first_registered,
        last_registered: s.last_registered,
        last_status_change: s.last_status_change,
    }
}

pub fn to_stored(t: &Tagent, interner: &Interner) -> StoredTagent {
    let s = |sym| interner.resolve(sym).to_string();
    StoredTagent {
        id: t.id,
        tenant: s(t.tenant),
        port: t.port,
        ip: t.ip,
        ips: t.ips.to_vec(),
        name: t.name.to_string(),
        host: t.host.map(|&v| s(v)),
        status: t.status,
        runner_group: t.runner_group,
        runner: t.runner,
        first_registered: t.first_registered,
        last_registered: t.last_registered,
        last_status_change: t.last_status_change,
    }
}
