//! Stage 3: a committed batch becomes the index (and the table of tagents
//! connected through other hubs follows it). Runs only after the commit,
//! so the index never holds what the store does not.

use crate::model::{Tagent, TagentId};
use crate::registry::index::Index;
use crate::registry::liveness::{Mine, Sessions};

/// Put (or remove, for `None`) each changed record and move the next id.
pub(super) fn apply(
    index: &mut Index,
    sessions: &Sessions,
    mine: &Mine,
    changes: Vec<(TagentId, Option<Tagent>)>,
    next_id: TagentId,
) {
    for (id, t) in changes {
        sessions.track(mine, id, t.as_ref());
        match t {
            Some(t) => index.put(t),
            None => {
                index.remove(id);
            }
        }
    }
    index.bump_next_id(next_id);
    metrics::gauge!("tagent_hub_tagents").set(index.len() as f64);
}
