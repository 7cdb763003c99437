//! The tagent registry: the registration rules over an in-memory index that
//! always equals what the store holds.
//!
//! - [`model`]: tagents, status, runner groups.
//! - [`request`]: a registration body, parsed and validated (rule 1).
//! - [`rules`]: rules 2–8 as a pure function over an [`index::IndexView`].
//! - [`index`]: lookups by id and by (tenant, port, ip).
//! - [`writer`]: the one thread that decides and group-commits changes.
//!
//! Readers take the index's read lock briefly and never across `.await`
//! (`parking_lot` guards are not `Send`, so the compiler enforces it).

pub mod error;
pub mod events;
pub mod index;
pub mod intern;
pub mod model;
pub mod query;
pub mod request;
pub mod rules;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use tokio::sync::{mpsc, oneshot};

pub use error::{ChangeError, RegisterError};
pub use events::{Event, EventKind, EventLog};
pub use index::{Index, IndexView};
pub use intern::{Interner, Sym};
pub use model::{DisconnectReason, RunnerGroup, RunnerGroups, Status, Tagent, TagentId};
pub use request::{Origin, RegisterRequest, Secret};

use crate::store::{Store, StoreError, StoredGroup, StoredTagent};
use writer::Job;

/// Whether a tagent holds a live heartbeat session (rule 3). The heartbeat
/// server implements it; the registry only asks.
pub trait Liveness: Send + Sync {
    fn is_live(&self, id: TagentId) -> bool;
}

/// For a registry with no heartbeat server attached.
pub struct NoSessions;

impl Liveness for NoSessions {
    fn is_live(&self, _: TagentId) -> bool {
        false
    }
}

/// A status transition reported by the heartbeat server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatusChange {
    pub id: TagentId,
    pub status: Status,
    /// Unix milliseconds.
    pub at: u64,
    /// The runner holding the session, when connected.
    pub runner: Option<u32>,
}

/// A successful registration.
#[derive(Debug, Clone)]
pub struct Registered {
    pub id: TagentId,
    pub created: bool,
    pub group: RunnerGroup,
}

/// Most jobs decided and committed in one transaction.
const MAX_BATCH: usize = 2048;
/// Jobs waiting for the writer before `register` pushes back.
const QUEUE: usize = 16 * 1024;

/// A cheap-to-clone handle to the registry.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    index: RwLock<Index>,
    interner: Interner,
    groups: RwLock<Arc<RunnerGroups>>,
    store: Arc<Store>,
    jobs: mpsc::Sender<Job>,
    /// Bumped after every change applied to the index, so a session can keep
    /// its resolved tagent until the registry changes.
    generation: AtomicU64,
    liveness: OnceLock<Arc<dyn Liveness>>,
    events: EventLog,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Registry {
    /// Rebuild the index from the store and start the writer thread. Every
    /// tagent stored as connected becomes disconnected (reason: restart): no
    /// session survives a restart. `groups` are the runner groups to use
    /// (see [`Registry::load_groups`]); a store that holds none gets them.
    pub fn open(store: Arc<Store>, groups: RunnerGroups) -> Result<Registry, StoreError> {
        if store.groups()?.is_none() {
            store.commit(&crate::store::WriteBatch {
                groups: Some(StoredGroup::from_groups(&groups)),
                ..Default::default()
            })?;
        }
        let interner = Interner::default();
        // Records are decoded one at a time straight into the index: holding
        // them all first (as `Store::snapshot` does) doubles the peak memory
        // and leaves the freed copies fragmenting the heap for good.
        let scan = store.scan_tagents()?;
        // Most tagents answer for two ips (the primary and one more); the
        // table grows if they answer for more.
        let mut index = Index::with_capacity(scan.max_id, 2 * scan.len as usize);
        index.bump_next_id(scan.next_id);
        let now = model::now_millis();
        let mut restarted = Vec::new();
        scan.for_each(|stored| {
            let mut t = from_stored(&stored, &interner);
            if t.status == Status::Connected {
                t.status = Status::Disconnected(DisconnectReason::Restart);
                t.last_status_change = now;
                restarted.push(to_stored(&t, &interner));
            }
            index.put(t);
            Ok(())
        })?;
        if !restarted.is_empty() {
            tracing::info!(
                tagents = restarted.len(),
                "marking tagents connected before the restart as disconnected"
            );
            store.commit(&crate::store::WriteBatch {
                tagents_put: restarted,
                ..Default::default()
            })?;
        }
        metrics::gauge!("tagent_hub_tagents").set(index.len() as f64);
        let (tx, rx) = mpsc::channel(QUEUE);
        let registry = Registry {
            shared: Arc::new(Shared {
                index: RwLock::new(index),
                interner,
                groups: RwLock::new(Arc::new(groups)),
                store,
                jobs: tx,
                generation: AtomicU64::new(1),
                liveness: OnceLock::new(),
                events: EventLog::default(),
                writer: Mutex::new(None),
            }),
        };
        let handle = writer::spawn(registry.clone(), rx);
        *registry.shared.writer.lock() = Some(handle);
        Ok(registry)
    }

    /// Attach the heartbeat server's view of live sessions (rule 3).
    pub fn set_liveness(&self, live: Arc<dyn Liveness>) {
        let _ = self.shared.liveness.set(live);
    }

    /// The runner groups to open with: the store's, once it has any (the
    /// admin API changes them there); else `seed` (from the configuration).
    pub fn load_groups(
        store: &Store,
        seed: RunnerGroups,
        advertised: &(String, u16),
    ) -> Result<RunnerGroups, StoreError> {
        let Some(stored) = store.groups()? else {
            return Ok(seed);
        };
        if StoredGroup::from_groups(&seed) != stored {
            tracing::info!(
                "runner groups come from the store (change them with the admin API); \
                 the configuration's only seed a new store"
            );
        }
        StoredGroup::resolve(&stored, advertised).map_err(StoreError::Corrupt)
    }

    /// Whether a tagent holds a live session (rule 3; the status operators see).
    pub fn liveness(&self) -> &dyn Liveness {
        match self.shared.liveness.get() {
            Some(l) => l.as_ref(),
            None => &NoSessions,
        }
    }

    /// Decide and durably store a registration. Resolves once it is on disk.
    pub async fn register(&self, req: RegisterRequest) -> Result<Registered, RegisterError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .jobs
            .send(Job::Register {
                req: Box::new(req),
                reply,
            })
            .await
            .map_err(|_| RegisterError::ShuttingDown)?;
        rx.await.map_err(|_| RegisterError::ShuttingDown)?
    }

    /// Queue status transitions, waiting for room in the writer's queue.
    pub async fn report_status_async(&self, changes: Vec<StatusChange>) -> bool {
        self.shared.jobs.send(Job::Status(changes)).await.is_ok()
    }

    /// Read access to the index. Keep the guard short; it cannot cross `.await`.
    pub fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.shared.index.read()
    }

    pub fn interner(&self) -> &Interner {
        &self.shared.interner
    }

    pub fn groups(&self) -> Arc<RunnerGroups> {
        self.shared.groups.read().clone()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Visit every tagent in id order, holding the index's read lock for
    /// one chunk of [`query::SCAN_BUDGET`] at a time, so that a full scan
    /// (counts over a million tagents: tens of ms) never stalls the writer
    /// for all of it. Changes between chunks may or may not be seen.
    pub fn for_each_chunked(&self, mut f: impl FnMut(&Tagent)) {
        let mut after = 0;
        loop {
            let index = self.index();
            let mut seen = 0;
            for t in index.iter_after(after).take(query::SCAN_BUDGET) {
                f(t);
                after = t.id;
                seen += 1;
            }
            if seen < query::SCAN_BUDGET {
                return;
            }
        }
    }

    pub fn contains(&self, id: TagentId) -> bool {
        self.index().get(id).is_some()
    }

    /// A copy of one tagent's record.
    pub fn tagent(&self, id: TagentId) -> Option<Tagent> {
        self.index().get(id).cloned()
    }

    /// A tagent as stored (strings resolved), for views.
    pub fn get(&self, id: TagentId) -> Option<StoredTagent> {
        let index = self.index();
        index.get(id).map(|t| to_stored(t, &self.shared.interner))
    }

    /// Registrations, status changes and deletions, once durable.
    pub fn events(&self) -> &EventLog {
        &self.shared.events
    }

    /// Delete a tagent and the accounts no other tagent answers for.
    /// Refused while it has a live session, as the original does.
    pub async fn delete(&self, id: TagentId) -> Result<(), ChangeError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .jobs
            .send(Job::Delete { id, reply })
            .await
            .map_err(|_| ChangeError::ShuttingDown)?;
        rx.await.map_err(|_| ChangeError::ShuttingDown)?
    }

    /// Change the runner groups: `edit` gets the current ones and returns
    /// the new ones, which are validated, stored, then made current. Edits
    /// run one at a time on the writer, so concurrent ones never overwrite
    /// each other. Live sessions learn a changed runner list on their next
    /// heartbeat (`updategroup`); tagents keep their group until they
    /// register again.
    pub async fn edit_groups(
        &self,
        edit: impl FnOnce(&RunnerGroups) -> Result<RunnerGroups, ChangeError> + Send + 'static,
    ) -> Result<Arc<RunnerGroups>, ChangeError> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .jobs
            .send(Job::Groups {
                edit: Box::new(edit),
                reply,
            })
            .await
            .map_err(|_| ChangeError::ShuttingDown)?;
        rx.await.map_err(|_| ChangeError::ShuttingDown)?
    }

    /// Let queued work finish and stop the writer thread.
    pub async fn shutdown(&self) {
        let _ = self.shared.jobs.send(Job::Stop).await;
        let handle = self.shared.writer.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

pub fn from_stored(s: &StoredTagent, interner: &Interner) -> Tagent {
    Tagent {
        id: s.id,
        tenant: interner.intern(&s.tenant),
        port: s.port,
        ip: s.ip,
        ips: s.ips.clone().into_boxed_slice(),
        name: s.name.as_str().into(),
        user: interner.intern(&s.user),
        version: interner.intern(&s.version),
        os_type: interner.intern(&s.os_type),
        os_version: interner.intern(&s.os_version),
        osbit: interner.intern(&s.osbit),
        pcpu: s.pcpu,
        mem: s.mem,
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
        user: s(t.user),
        version: s(t.version),
        os_type: s(t.os_type),
        os_version: s(t.os_version),
        osbit: s(t.osbit),
        pcpu: t.pcpu,
        mem: t.mem,
        status: t.status,
        runner_group: t.runner_group,
        runner: t.runner,
        first_registered: t.first_registered,
        last_registered: t.last_registered,
        last_status_change: t.last_status_change,
    }
}
