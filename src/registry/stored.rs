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
    s.map(|v| interner.intern(v))
}

pub fn to_stored(t: &Tagent, interner: &Interner) -> StoredTagent {
    t.map(|&v| interner.resolve(v).to_string())
}
