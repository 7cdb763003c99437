//! The registry's handle: what the HTTP side and the heartbeat server call
//! (register, status changes, queries, runner groups), and the state it
//! shares with the writer thread.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use tokio::sync::{mpsc, oneshot};

use super::liveness::{Liveness, Mine, Sessions};
use super::stored::{apply_changes, from_stored, to_stored};
use super::writer::Job;
use super::{
    ChangeError, EnrollJob, EnrollOutcome, EventLog, Index, IndexView, PolicyConfig, RegisterError,
    RegisterRequest,
};
use super::{query, writer};

use crate::model::{
    self, DisconnectReason, Interner, RunnerGroup, RunnerGroups, Status, Tagent, TagentId,
};
use crate::store::{RegistryStore, ScanItem, StoreError, StoredGroup, StoredTagent, WriteBatch};

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
pub(super) const MAX_BATCH: usize = 2048;
/// Jobs waiting for the writer before `register` pushes back.
pub(super) const QUEUE: usize = 16 * 1024;

/// A cheap-to-clone handle to the registry.
#[derive(Clone)]
pub struct Registry {
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) index: RwLock<Index>,
    pub(super) interner: Interner,
    pub(super) groups: RwLock<Arc<RunnerGroups>>,
    pub(super) store: Arc<dyn RegistryStore>,
    /// This hub's heartbeat address: names its runners in a runner group,
    /// and stands for the runners stored as "this hub".
    pub(super) advertised: (String, u16),
    /// This hub's runners under the current groups.
    pub(super) mine: RwLock<Mine>,
    pub(super) jobs: mpsc::Sender<Job>,
    /// A change notification is queued for the writer (coalesces them).
    pub(super) sync_pending: Arc<AtomicBool>,
    /// Bumped after every change applied to the index, so a session can keep
    /// its resolved tagent until the registry changes.
    pub(super) generation: AtomicU64,
    pub(super) sessions: Sessions,
    pub(super) events: EventLog,
    /// What registrations need, per tenant (SPEC §6).
    pub(super) policy: RwLock<Arc<PolicyConfig>>,
    pub(super) writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Registry {
    /// Rebuild the index from the store and start the writer thread, as
    /// the only hub of the store. Every tagent stored as connected becomes
    /// disconnected (reason: restart): no session survives a restart.
    /// `groups` are the runner groups to use (see [`Registry::load_groups`]);
    /// a store that holds none gets them.
    pub fn open(
        store: Arc<dyn RegistryStore>,
        groups: RunnerGroups,
    ) -> Result<Registry, StoreError> {
        let advertised = groups
            .groups
            .iter()
            .flat_map(|g| &g.runners)
            .find(|r| r.this_hub)
            .map_or_else(|| ("127.0.0.1".into(), 8888), |r| (r.host.clone(), r.port));
        Self::open_as(store, groups, advertised)
    }

    /// As [`Registry::open`], for the hub whose heartbeat address is
    /// `advertised`. With a shared store, only the tagents connected through
    /// its runners are marked disconnected (restart): other hubs hold the
    /// rest; and the index then follows other hubs' commits.
    pub fn open_as(
        store: Arc<dyn RegistryStore>,
        groups: RunnerGroups,
        advertised: (String, u16),
    ) -> Result<Registry, StoreError> {
        let interner = Interner::default();
        // Records are decoded one at a time straight into the index: holding
        // them all first doubles the peak memory and leaves the freed copies
        // fragmenting the heap for good.
        let mut index: Option<Index> = None;
        store.scan(&mut |item| {
            match item {
                ScanItem::Info {
                    len,
                    max_id,
                    next_id,
                } => {
                    // Most tagents answer for two ips (the primary and one
                    // more); the table grows if they answer for more.
                    let mut i = Index::with_capacity(max_id, 2 * len as usize);
                    i.bump_next_id(next_id);
                    index = Some(i);
                }
                ScanItem::Tagent(stored) => index
                    .get_or_insert_with(Index::new)
                    .put(from_stored(&stored, &interner)),
            }
            Ok(())
        })?;
        let mut index = index.unwrap_or_default();
        index.bump_next_id(1);
        let now = model::now_millis();
        let mut groups = groups;
        let mine;
        {
            let mut txn = store.begin()?;
            let changes = txn.changes()?;
            if let Some(stored) = &changes.groups {
                groups = StoredGroup::resolve(stored, &advertised).map_err(StoreError::Corrupt)?;
            }
            apply_changes(&mut index, &interner, changes);
            mine = if store.shared() {
                Mine::at(&groups, &advertised)
            } else {
                Mine::All
            };
            let restarted: Vec<TagentId> = index
                .iter()
                .filter(|t| t.status == Status::Connected && mine.holds(t.runner))
                .map(|t| t.id)
                .collect();
            if !restarted.is_empty() {
                tracing::info!(
                    tagents = restarted.len(),
                    "marking tagents connected before the restart as disconnected"
                );
            }
            let mut batch = WriteBatch::default();
            if store.groups()?.is_none() {
                batch.groups = Some(StoredGroup::from_groups(&groups));
            }
            let mut after = Vec::with_capacity(restarted.len());
            for id in restarted {
                if let Some(t) = index.get(id) {
                    let mut t = t.clone();
                    t.status = Status::Disconnected(DisconnectReason::Restart);
                    t.last_status_change = now;
                    batch.tagents_put.push(to_stored(&t, &interner));
                    after.push(t);
                }
            }
            if !batch.is_empty() {
                txn.commit(&batch)?;
            }
            for t in after {
                index.update(t.id, |x| *x = t.clone());
            }
        }
        metrics::gauge!("tagent_hub_tagents").set(index.len() as f64);
        let sessions = Sessions::default();
        sessions.track_all(&mine, &index);
        let (tx, rx) = mpsc::channel(QUEUE);
        let sync_pending = Arc::new(AtomicBool::new(false));
        if store.shared() {
            let jobs = tx.downgrade();
            let pending = sync_pending.clone();
            store.subscribe(Arc::new(move || {
                if pending.swap(true, Ordering::AcqRel) {
                    return;
                }
                let queued = jobs
                    .upgrade()
                    .is_some_and(|j| j.try_send(Job::Sync(None)).is_ok());
                if !queued {
                    // The next batch reads the changes anyway, under the lock.
                    pending.store(false, Ordering::Release);
                }
            }));
        }
        let registry = Registry {
            shared: Arc::new(Shared {
                index: RwLock::new(index),
                interner,
                groups: RwLock::new(Arc::new(groups)),
                store,
                advertised,
                mine: RwLock::new(mine),
                jobs: tx,
                sync_pending,
                generation: AtomicU64::new(1),
                sessions,
                events: EventLog::default(),
                policy: RwLock::new(Arc::default()),
                writer: Mutex::new(None),
            }),
        };
        let handle = writer::spawn(registry.clone(), rx);
        *registry.shared.writer.lock() = Some(handle);
        Ok(registry)
    }

    /// Attach the heartbeat server's view of live sessions (rule 3).
    pub fn set_liveness(&self, live: Arc<dyn Liveness>) {
        let _ = self.shared.sessions.local.set(live);
    }

    /// The runner groups to open with: the store's, once it has any (the
    /// admin API changes them there); else `seed` (from the configuration).
    pub fn load_groups(
        store: &dyn RegistryStore,
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
        &self.shared.sessions
    }

    /// Decide and durably store a registration. Resolves once it is on disk.
    pub async fn register(&self, req: RegisterRequest) -> Result<Registered, RegisterError> {
        let req = Box::new(req);
        self.ask(
            |reply| Job::Register { req, reply },
            || RegisterError::ShuttingDown,
        )
        .await
    }

    /// Queue the job `job` makes of a reply channel and wait for the
    /// writer's answer; `stopped` when the writer is gone.
    pub(super) async fn ask<T, E>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, E>>) -> Job,
        stopped: impl Fn() -> E,
    ) -> Result<T, E> {
        let (reply, rx) = oneshot::channel();
        self.shared
            .jobs
            .send(job(reply))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Bring the index up to date with what other hubs committed; returns
    /// once it is (at once with a store no other hub shares).
    pub async fn refresh(&self) {
        let (reply, rx) = oneshot::channel();
        if self.shared.jobs.send(Job::Sync(Some(reply))).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Queue status transitions, waiting for room in the writer's queue.
    pub async fn report_status_async(&self, changes: Vec<StatusChange>) -> bool {
        self.shared.jobs.send(Job::Status(changes)).await.is_ok()
    }

    /// Report the tagents of the hub at `hub` runner-lost, its lease seen
    /// lapsed at `epoch`; dropped by the writer if the hub renewed since.
    pub async fn report_runner_lost(
        &self,
        hub: String,
        epoch: u64,
        changes: Vec<StatusChange>,
    ) -> bool {
        self.shared
            .jobs
            .send(Job::RunnerLost {
                hub,
                epoch,
                changes,
            })
            .await
            .is_ok()
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

    pub fn store(&self) -> &Arc<dyn RegistryStore> {
        &self.shared.store
    }

    /// The registration policy in force.
    pub fn policy(&self) -> Arc<PolicyConfig> {
        self.shared.policy.read().clone()
    }

    /// Make `policy` the registration policy (at start, from the config).
    pub fn set_policy(&self, policy: PolicyConfig) {
        *self.shared.policy.write() = Arc::new(policy);
    }

    /// Create or revoke an enrollment token, approve or reject a pending
    /// registration; returns once it is durable.
    pub async fn enroll(&self, job: EnrollJob) -> Result<EnrollOutcome, ChangeError> {
        self.ask(
            |reply| Job::Enroll { job, reply },
            || ChangeError::ShuttingDown,
        )
        .await
    }

    /// The runners whose sessions this hub holds.
    pub fn mine(&self) -> Mine {
        self.shared.mine.read().clone()
    }

    /// Make `groups` current (after an edit here or on another hub).
    pub(super) fn set_groups(&self, groups: Arc<RunnerGroups>) {
        if self.shared.store.shared() {
            let mine = Mine::at(&groups, &self.shared.advertised);
            if mine != *self.shared.mine.read() {
                self.shared
                    .sessions
                    .track_all(&mine, &self.shared.index.read());
                *self.shared.mine.write() = mine;
            }
        }
        *self.shared.groups.write() = groups;
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

    /// Visit every tagent matching `filter`, chunk by chunk (see
    /// [`Registry::for_each_chunked`]), with the liveness it was judged by.
    pub fn for_each_matching(
        &self,
        filter: &query::Filter,
        mut f: impl FnMut(&Tagent, &dyn Liveness),
    ) {
        let Some(m) = query::Compiled::new(filter, self.interner()) else {
            return;
        };
        let live = self.liveness();
        self.for_each_chunked(|t| {
            if m.matches(t, live) {
                f(t, live);
            }
        });
    }

    pub fn contains(&self, id: TagentId) -> bool {
        self.index().get(id).is_some()
    }

    /// A copy of one tagent's record.
    pub fn tagent(&self, id: TagentId) -> Option<Tagent> {
        self.index().get(id).cloned()
    }

    /// The accounts of `t`'s ips, one per ip in [`Tagent::all_ips`] order,
    /// each with whether it holds a credential. Reads the store: blocking.
    pub fn accounts(&self, t: &Tagent) -> Result<Vec<(IpAddr, bool)>, StoreError> {
        let tenant = self.shared.interner.resolve(t.tenant);
        t.all_ips()
            .map(|(_, ip)| {
                let account = self.shared.store.account(&tenant, ip, t.port)?;
                Ok((ip, account.is_some_and(|a| a.credential.is_some())))
            })
            .collect()
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
    /// Let tagent `id` register with a new credential during the next
    /// `within` (SPEC §6): opened, durably, before the hub sends it
    /// `resetcred`, or by an operator allowing a reinstall. The first
    /// registration that brings a new credential closes it.
    pub async fn open_credential_change(
        &self,
        id: TagentId,
        within: std::time::Duration,
    ) -> Result<(), ChangeError> {
        let until = crate::model::now_millis().saturating_add(within.as_millis() as u64);
        self.ask(
            |reply| Job::OpenCredentialChange { id, until, reply },
            || ChangeError::ShuttingDown,
        )
        .await
    }

    pub async fn delete(&self, id: TagentId) -> Result<(), ChangeError> {
        self.ask(
            |reply| Job::Delete { id, reply },
            || ChangeError::ShuttingDown,
        )
        .await
    }

    /// Change the runner groups: `edit` gets the current ones and returns
    /// the new ones, which are validated, stored, then made current. Edits
    /// run one at a time on the writer (and, with a shared store, under the
    /// registry's lock), so concurrent ones never overwrite each other. Live
    /// sessions learn a changed runner list on their next heartbeat
    /// (`updategroup`); tagents keep their group until they register again.
    pub async fn edit_groups(
        &self,
        edit: impl FnOnce(&RunnerGroups) -> Result<RunnerGroups, ChangeError> + Send + 'static,
    ) -> Result<Arc<RunnerGroups>, ChangeError> {
        let edit = Box::new(edit);
        self.ask(
            |reply| Job::Groups { edit, reply },
            || ChangeError::ShuttingDown,
        )
        .await
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
