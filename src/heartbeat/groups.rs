//! The runner-group lists as tagents hold them (`proxy.group`), and the
//! `updategroup` reply that hands a list to a tagent on another one.

use std::collections::HashMap;
use std::sync::Arc;

use super::compat;
use super::hub::Hub;
use crate::model::RunnerGroups;

/// The lists, cached per version of the groups so a heartbeat compares
/// without allocating.
pub(super) struct GroupLists {
    groups: Arc<RunnerGroups>,
    /// By group id, sorted (a heartbeat looks its group up without hashing).
    lists: Vec<(u32, GroupList)>,
    /// The runner id of this hub in each group, if it is one of them.
    me: HashMap<u32, u32>,
}

/// A runner group's list, and the compat reply that hands it to a tagent.
pub struct GroupList {
    /// `ip:port,ip:port`, by runner id.
    pub list: String,
    /// `compat::updategroup_line` for `list`, written once per version of
    /// the groups rather than on every heartbeat of a tagent on another list.
    pub updategroup: Box<[u8]>,
}

impl GroupLists {
    /// The lists of `groups`, naming this hub's runner by `advertised`.
    pub(super) fn new(groups: Arc<RunnerGroups>, advertised: &(String, u16)) -> GroupLists {
        let mut lists: Vec<(u32, GroupList)> = groups
            .groups
            .iter()
            .map(|g| {
                let list = g.proxy_group();
                let mut updategroup = Vec::new();
                compat::updategroup_line(&mut updategroup, &list);
                let updategroup = updategroup.into_boxed_slice();
                (g.id, GroupList { list, updategroup })
            })
            .collect();
        // Group ids are unique (`RunnerGroups::validate`); sorted for `get`.
        lists.sort_unstable_by_key(|(id, _)| *id);
        let me = groups
            .groups
            .iter()
            .filter_map(|g| {
                g.runners
                    .iter()
                    .find(|r| r.host == advertised.0 && r.port == advertised.1)
                    .map(|r| (g.id, r.id))
            })
            .collect();
        GroupLists { groups, lists, me }
    }

    fn get(&self, group: u32) -> Option<&GroupList> {
        let i = self
            .lists
            .binary_search_by_key(&group, |(id, _)| *id)
            .ok()?;
        Some(&self.lists[i].1)
    }

    /// This hub's runner in `group`, if it is one.
    pub(super) fn my_runner(&self, group: u32) -> Option<u32> {
        self.me.get(&group).copied()
    }
}

impl Hub {
    /// The `proxy.group` list of a group, if it has one.
    pub fn group_list<R>(&self, group: u32, f: impl FnOnce(Option<&GroupList>) -> R) -> R {
        let inner = &self.inner;
        let current = inner.registry.groups();
        {
            let lists = inner.groups.read();
            if Arc::ptr_eq(&lists.groups, &current) {
                return f(lists.get(group));
            }
        }
        let mut lists = inner.groups.write();
        if !Arc::ptr_eq(&lists.groups, &current) {
            *lists = GroupLists::new(current, &inner.advertised);
        }
        f(lists.get(group))
    }
}
