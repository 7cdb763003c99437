//! Rule 3, "a tagent with a live session cannot be registered over", across
//! the hubs of a runner group: a tagent is live when this hub holds its
//! session, or when the registry shows it connected through a runner of
//! another hub (that hub's lease lapsing marks it `runner-lost`).
//!
//! The rule is written once, in [`live`]; [`Sessions`] (the status views,
//! over the index) and [`InView`] (the writer, over a batch's overlay) only
//! say where the record comes from.

use std::sync::{Arc, OnceLock};

use super::index::{Index, IndexView};
use crate::model::{DisconnectReason, RunnerGroups, Status, Tagent, TagentId};

/// Whether a tagent holds a live heartbeat session (rule 3). The heartbeat
/// server implements it; the registry only asks.
pub trait Liveness: Send + Sync {
    fn is_live(&self, id: TagentId) -> bool;

    /// Why the tagent's session just closed, while the index may still show
    /// its previous status (the disconnect is not committed yet).
    fn closed(&self, _id: TagentId) -> Option<DisconnectReason> {
        None
    }
}

/// For a registry with no heartbeat server attached.
pub struct NoSessions;

impl Liveness for NoSessions {
    fn is_live(&self, _: TagentId) -> bool {
        false
    }
}

/// The runners whose sessions this hub holds: a tagent connected through
/// another runner of a shared store is held by another hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mine {
    /// A single hub: every session is this hub's.
    All,
    /// This hub's runner ids (one per address; the same id in every group).
    Runners(Vec<u32>),
}

impl Mine {
    /// The runners of `groups` at this hub's heartbeat address.
    pub fn at(groups: &RunnerGroups, advertised: &(String, u16)) -> Mine {
        let mut ids: Vec<u32> = groups
            .groups
            .iter()
            .flat_map(|g| &g.runners)
            .filter(|r| r.host == advertised.0 && r.port == advertised.1)
            .map(|r| r.id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Mine::Runners(ids)
    }

    /// Whether a session through `runner` is this hub's (a record without
    /// a runner cannot be given to another hub).
    pub fn holds(&self, runner: Option<u32>) -> bool {
        match (self, runner) {
            (Mine::All, _) | (_, None) => true,
            (Mine::Runners(ids), Some(r)) => ids.contains(&r),
        }
    }

    /// The runner of another hub through which `t` is connected, if any.
    pub fn elsewhere(&self, t: &Tagent) -> Option<u32> {
        t.runner
            .filter(|r| t.status == Status::Connected && !self.holds(Some(*r)))
    }
}

/// Rule 3 across hubs: this hub holds the session, or another hub does.
fn live(local: &dyn Liveness, id: TagentId, elsewhere: impl FnOnce() -> bool) -> bool {
    local.is_live(id) || elsewhere()
}

/// Rule 3 over a view of the registry (the writer's overlay: a batch sees
/// its own earlier decisions).
pub(super) struct InView<'a, V> {
    pub local: &'a dyn Liveness,
    pub view: &'a V,
    pub mine: &'a Mine,
}

impl<V: IndexView + Sync> Liveness for InView<'_, V> {
    fn is_live(&self, id: TagentId) -> bool {
        live(self.local, id, || {
            self.view
                .get(id)
                .and_then(|t| self.mine.elsewhere(t))
                .is_some()
        })
    }
}

/// Rule 3 and the status views over the index: the writer keeps
/// `elsewhere` in step with the index, so that views never take the index
/// lock twice.
#[derive(Default)]
pub(super) struct Sessions {
    pub local: OnceLock<Arc<dyn Liveness>>,
    /// Tagents connected through other hubs' runners, with the runner.
    elsewhere: dashmap::DashMap<TagentId, u32>,
}

impl Liveness for Sessions {
    fn is_live(&self, id: TagentId) -> bool {
        live(self.local(), id, || self.elsewhere.contains_key(&id))
    }

    fn closed(&self, id: TagentId) -> Option<DisconnectReason> {
        self.local.get().and_then(|l| l.closed(id))
    }
}

impl Sessions {
    /// Whether this hub holds a tagent's session.
    pub fn local(&self) -> &dyn Liveness {
        match self.local.get() {
            Some(l) => l.as_ref(),
            None => &NoSessions,
        }
    }

    /// Record where tagent `id` (`None`: deleted) is connected now.
    pub fn track(&self, mine: &Mine, id: TagentId, t: Option<&Tagent>) {
        match t.and_then(|t| mine.elsewhere(t)) {
            Some(r) => {
                self.elsewhere.insert(id, r);
            }
            None => {
                self.elsewhere.remove(&id);
            }
        }
    }

    pub fn track_all(&self, mine: &Mine, index: &Index) {
        self.elsewhere.clear();
        if *mine == Mine::All {
            return;
        }
        for t in index.iter() {
            self.track(mine, t.id, Some(t));
        }
    }
}
