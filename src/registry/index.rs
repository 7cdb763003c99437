//! The in-memory index over every registered tagent.
//!
//! Records live in a `Vec` addressed by id (ids are dense), and one hash table
//! maps (tenant, port, ip) to the tagents that answer for that ip, as primary
//! or contained. The table stores only 8-byte references (`id`, position of
//! the ip in the record) and hashes through the records themselves, so a
//! million tagents with two ips each cost ~40 MB of table, not ~170 MB.

use std::hash::BuildHasher;
use std::net::IpAddr;

use hashbrown::{HashMap, HashTable};
use smallvec::SmallVec;

use crate::model::Sym;
use crate::model::{Tagent, TagentId};

/// The ids that answer for one (tenant, port, ip). Almost always one.
pub type Ids = SmallVec<[TagentId; 2]>;

/// What the registration rules need to read: implemented by the index and by
/// the [`Overlay`] that layers a batch's undecided writes over it.
pub trait IndexView {
    fn get(&self, id: TagentId) -> Option<&Tagent>;
    /// Every tagent of `tenant` on `port` whose primary or contained ips include `ip`.
    fn lookup(&self, tenant: Sym, port: u16, ip: IpAddr) -> Ids;
    /// The id the next new tagent gets.
    fn next_id(&self) -> TagentId;
}

#[derive(Debug, Clone, Copy)]
struct IpRef {
    id: u32,
    pos: u16,
}

type Hasher = foldhash::fast::RandomState;

#[derive(Debug, Default)]
pub struct Index {
    slots: Vec<Option<Tagent>>,
    by_ip: HashTable<IpRef>,
    hasher: Hasher,
    len: usize,
    next_id: TagentId,
}

fn key_hash(hasher: &Hasher, tenant: Sym, port: u16, ip: IpAddr) -> u64 {
    hasher.hash_one((tenant, port, ip))
}

fn ref_hash(hasher: &Hasher, slots: &[Option<Tagent>], r: &IpRef) -> u64 {
    let t = slots[r.id as usize]
        .as_ref()
        .expect("index references a live slot");
    let ip = t.ip_at(r.pos).expect("index references a live ip");
    key_hash(hasher, t.tenant, t.port, ip)
}

impl Index {
    pub fn new() -> Self {
        Index {
            next_id: 1,
            ..Default::default()
        }
    }

    /// An empty index sized for ids up to `max_id` and about `ips` index entries.
    pub fn with_capacity(max_id: TagentId, ips: usize) -> Self {
        let mut index = Index::new();
        index.slots.reserve_exact(max_id as usize + 1);
        index.by_ip = HashTable::with_capacity(ips);
        index
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every tagent, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Tagent> {
        self.slots.iter().flatten()
    }

    /// The tagents with ids above `after`, by id.
    pub fn iter_after(&self, after: TagentId) -> impl Iterator<Item = &Tagent> {
        let from = (after as usize).saturating_add(1).min(self.slots.len());
        self.slots[from..].iter().flatten()
    }

    /// Raise the next id to at least `next` (the store keeps it, so ids of
    /// deleted tagents are never reused).
    pub fn bump_next_id(&mut self, next: TagentId) {
        self.next_id = self.next_id.max(next);
    }

    /// Insert or replace the record with `t.id`.
    pub fn put(&mut self, t: Tagent) {
        self.remove(t.id);
        let id = t.id as usize;
        if self.slots.len() <= id {
            self.slots.resize_with(id + 1, || None);
        }
        let refs: SmallVec<[(u16, IpAddr); 4]> = t.all_ips().collect();
        let (tenant, port) = (t.tenant, t.port);
        self.next_id = self.next_id.max(t.id + 1);
        self.slots[id] = Some(t);
        self.len += 1;
        let Index {
            slots,
            by_ip,
            hasher,
            ..
        } = self;
        for (pos, ip) in refs {
            let h = key_hash(hasher, tenant, port, ip);
            let r = IpRef { id: id as u32, pos };
            by_ip.insert_unique(h, r, |r| ref_hash(hasher, slots, r));
        }
    }

    /// Remove the record with `id`, returning it.
    pub fn remove(&mut self, id: TagentId) -> Option<Tagent> {
        let t = self.slots.get_mut(id as usize)?.take()?;
        for (pos, ip) in t.all_ips() {
            let h = key_hash(&self.hasher, t.tenant, t.port, ip);
            if let Ok(entry) = self
                .by_ip
                .find_entry(h, |r| r.id as u64 == id && r.pos == pos)
            {
                entry.remove();
            }
        }
        self.len -= 1;
        Some(t)
    }

    /// Change fields of a record that the ip table does not depend on
    /// (status, runner, host facts). Changing ips or port here would corrupt
    /// the table: use [`Index::put`] for those.
    pub fn update<R>(&mut self, id: TagentId, f: impl FnOnce(&mut Tagent) -> R) -> Option<R> {
        let t = self.slots.get_mut(id as usize)?.as_mut()?;
        let (ip, ips, tenant, port) = (t.ip, t.ips.clone(), t.tenant, t.port);
        let r = f(t);
        debug_assert!(t.ip == ip && t.ips == ips && t.tenant == tenant && t.port == port);
        Some(r)
    }

    /// Number of (tenant, port, ip) entries: for memory accounting.
    pub fn ip_entries(&self) -> usize {
        self.by_ip.len()
    }
}

impl IndexView for Index {
    fn get(&self, id: TagentId) -> Option<&Tagent> {
        self.slots.get(id as usize)?.as_ref()
    }

    fn lookup(&self, tenant: Sym, port: u16, ip: IpAddr) -> Ids {
        let h = key_hash(&self.hasher, tenant, port, ip);
        let mut ids = Ids::new();
        for r in self.by_ip.iter_hash(h) {
            let Some(t) = self.slots[r.id as usize].as_ref() else {
                continue;
            };
            if t.tenant == tenant && t.port == port && t.ip_at(r.pos) == Some(ip) {
                ids.push(t.id);
            }
        }
        ids.sort_unstable();
        ids
    }

    fn next_id(&self) -> TagentId {
        self.next_id
    }
}

/// A batch's decided-but-not-yet-durable changes layered over the index, so
/// that each registration in a group commit is decided against every earlier one.
pub struct Overlay<'a> {
    base: &'a Index,
    changed: HashMap<TagentId, Option<Tagent>>,
    by_ip: HashMap<(Sym, u16, IpAddr), Ids>,
    next_id: TagentId,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a Index) -> Self {
        Overlay {
            base,
            changed: HashMap::new(),
            by_ip: HashMap::new(),
            next_id: base.next_id(),
        }
    }

    fn unlink(&mut self, id: TagentId) {
        if let Some(Some(old)) = self.changed.get(&id) {
            let keys: SmallVec<[(Sym, u16, IpAddr); 4]> = old
                .all_ips()
                .map(|(_, ip)| (old.tenant, old.port, ip))
                .collect();
            for key in keys {
                if let Some(ids) = self.by_ip.get_mut(&key) {
                    ids.retain(|x| *x != id);
                }
            }
        }
    }

    /// The batch's changes, in id order: `None` is a deletion.
    pub fn into_changes(self) -> Vec<(TagentId, Option<Tagent>)> {
        let mut changes: Vec<_> = self.changed.into_iter().collect();
        changes.sort_unstable_by_key(|(id, _)| *id);
        changes
    }

    /// Record the new state of a tagent (or its deletion, with `None`).
    pub fn set(&mut self, id: TagentId, t: Option<Tagent>) {
        self.unlink(id);
        if let Some(t) = &t {
            for (_, ip) in t.all_ips() {
                self.by_ip
                    .entry((t.tenant, t.port, ip))
                    .or_default()
                    .push(id);
            }
            self.next_id = self.next_id.max(id + 1);
        }
        self.changed.insert(id, t);
    }
}

impl IndexView for Overlay<'_> {
    fn get(&self, id: TagentId) -> Option<&Tagent> {
        match self.changed.get(&id) {
            Some(t) => t.as_ref(),
            None => self.base.get(id),
        }
    }

    fn lookup(&self, tenant: Sym, port: u16, ip: IpAddr) -> Ids {
        let mut ids: Ids = self
            .base
            .lookup(tenant, port, ip)
            .into_iter()
            .filter(|id| !self.changed.contains_key(id))
            .collect();
        if let Some(more) = self.by_ip.get(&(tenant, port, ip)) {
            ids.extend(more.iter().copied());
        }
        ids.sort_unstable();
        ids
    }

    fn next_id(&self) -> TagentId {
        self.next_id
    }
}
