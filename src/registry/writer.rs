//! The writer thread: the only code that changes the index or writes the store.
//!
//! It takes every job waiting (up to a batch) and opens a store transaction
//! (with a shared store this takes the registry's lock and first applies to
//! the index what other hubs committed). It decides each registration
//! against the index overlaid with the batch's earlier decisions, writes the
//! whole batch in that one durable transaction, then applies it to the index
//! and answers. A failed commit answers every registration of the batch with
//! an error and leaves the index untouched, so it still equals the store.

use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use std::net::IpAddr;
use std::sync::Arc;

use super::error::ChangeError;
use super::events::{Change, Event};
use super::index::{IndexView, Overlay};
use super::rules::{self, Decision};
use super::{
    Liveness, MAX_BATCH, Mine, RegisterError, RegisterRequest, Registered, Registry, StatusChange,
    apply_changes, to_stored,
};
use crate::model::{RunnerGroups, Status, Tagent, TagentId, now_millis};
use crate::store::{AccountOp, AccountPut, StoredGroup, WriteBatch};

pub(super) enum Job {
    Register {
        req: Box<RegisterRequest>,
        reply: oneshot::Sender<Result<Registered, RegisterError>>,
    },
    Status(Vec<StatusChange>),
    /// Another hub committed: bring the index up to date (and say when).
    Sync(Option<oneshot::Sender<()>>),

    /// Delete a tagent that has no live session.
    Delete {
        id: TagentId,
        reply: oneshot::Sender<Result<(), ChangeError>>,
    },
    /// Change the runner groups: the edit sees the current ones.
    Groups {
        edit: GroupEdit,
        reply: oneshot::Sender<Result<Arc<RunnerGroups>, ChangeError>>,
    },
    Stop,
}

/// Rule 3 in a runner group: a tagent is live when this hub holds its
/// session, or when the store says it is connected through another hub's
/// runner (that hub's lease expiring marks it `runner-lost`).
struct GroupLiveness<'a, V> {
    local: &'a dyn Liveness,
    view: &'a V,
    mine: &'a Mine,
}

impl<V: IndexView + Sync> Liveness for GroupLiveness<'_, V> {
    fn is_live(&self, id: TagentId) -> bool {
        self.local.is_live(id)
            || self
                .view
                .get(id)
                .is_some_and(|t| t.status == Status::Connected && !self.mine.holds(t.runner))
    }
}
pub(super) type GroupEdit =
    Box<dyn FnOnce(&RunnerGroups) -> Result<RunnerGroups, ChangeError> + Send>;

pub(super) fn spawn(registry: Registry, rx: mpsc::Receiver<Job>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("registry-writer".into())
        .spawn(move || run(registry, rx))
        .expect("spawn the registry writer thread")
}

fn run(registry: Registry, mut rx: mpsc::Receiver<Job>) {
    let mut stop = false;
    let mut retry: Vec<StatusChange> = Vec::new();
    while !stop {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut jobs = Vec::with_capacity(64);
        if !retry.is_empty() {
            jobs.push(Job::Status(std::mem::take(&mut retry)));
        }
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if let Some(pos) = jobs.iter().position(|j| matches!(j, Job::Stop)) {
            stop = true;
            jobs.truncate(pos);
            // Jobs that raced the stop still get decided.
            while let Ok(job) = rx.try_recv() {
                if !matches!(job, Job::Stop) {
                    jobs.push(job);
                }
            }
        }
        // A change of runner groups is applied alone, between the jobs
        // queued before it and after it, so every registration is decided
        // against one version of the groups.
        let mut rest = jobs.into_iter().peekable();
        while rest.peek().is_some() {
            let mut run = Vec::new();
            let mut groups = None;
            for job in rest.by_ref() {
                match job {
                    Job::Groups { edit, reply } => {
                        groups = Some((edit, reply));
                        break;
                    }
                    job => run.push(job),
                }
            }
            if !run.is_empty() || !retry.is_empty() {
                if !retry.is_empty() {
                    run.insert(0, Job::Status(std::mem::take(&mut retry)));
                }
                retry = process(&registry, run);
            }
            if let Some((edit, reply)) = groups {
                let _ = reply.send(change_groups(&registry, edit));
            }
        }
    }
}

/// Apply an edit to the runner groups, store the result and make it
/// current. A group that registered tagents still belong to cannot go away.
fn change_groups(registry: &Registry, edit: GroupEdit) -> Result<Arc<RunnerGroups>, ChangeError> {
    let shared = &registry.shared;
    let store_error = |e: crate::store::StoreError| {
        metrics::counter!("tagent_hub_store_errors_total").increment(1);
        ChangeError::Store(e.to_string())
    };
    // With a shared store: under the registry's lock, and against the
    // groups and tagents other hubs committed.
    let mut txn = shared.store.begin().map_err(store_error)?;
    let changes = txn.changes().map_err(store_error)?;
    if !changes.is_empty() {
        apply(registry, changes);
    }
    let current = registry.groups();
    let groups = edit(&current)?.sorted_runners();
    groups.validate().map_err(ChangeError::Invalid)?;
    if shared.store.shared()
        && groups
            .groups
            .iter()
            .flat_map(|g| &g.runners)
            .any(|r| r.this_hub)
    {
        return Err(ChangeError::Invalid(
            "hubs sharing a store are each a runner with its own heartbeat address: \
             give every runner its heartbeat"
                .into(),
        ));
    }
    {
        let index = shared.index.read();
        for gone in current.groups.iter().filter(|g| groups.get(g.id).is_none()) {
            let tagents = index.iter().filter(|t| t.runner_group == gone.id).count();
            if tagents > 0 {
                return Err(ChangeError::GroupInUse {
                    group: gone.id,
                    tagents,
                });
            }
        }
    }
    let batch = WriteBatch {
        groups: Some(StoredGroup::from_groups(&groups)),
        ..Default::default()
    };
    txn.commit(&batch).map_err(store_error)?;
    let groups = Arc::new(groups);
    registry.set_groups(groups.clone());
    shared
        .generation
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    tracing::info!("runner groups changed");
    Ok(groups)
}

/// A deletion decided in this batch, waiting for the commit.
struct Deleted {
    tagent: Tagent,
    tenant: Arc<str>,
    /// Accounts no other tagent answers for.
    accounts: Vec<IpAddr>,
    reply: oneshot::Sender<Result<(), ChangeError>>,
}

struct Accepted {
    decision: Decision,
    req: Box<RegisterRequest>,
    reply: oneshot::Sender<Result<Registered, RegisterError>>,
}

/// Decide and commit one batch. Returns the status changes to try again
/// when the commit failed.
fn process(registry: &Registry, mut jobs: Vec<Job>) -> Vec<StatusChange> {
    let shared = &registry.shared;
    let started = Instant::now();
    let local = registry.local_liveness();

    let mut synced: Vec<oneshot::Sender<()>> = Vec::new();
    let before = jobs.len();
    jobs.retain_mut(|j| match j {
        Job::Sync(reply) => {
            synced.extend(reply.take());
            false
        }
        _ => true,
    });
    if jobs.len() < before {
        shared
            .sync_pending
            .store(false, std::sync::atomic::Ordering::Release);
        if jobs.is_empty() {
            sync(registry);
            for w in synced {
                let _ = w.send(());
            }
            return Vec::new();
        }
    }
    // Answered when this function returns: by then the batch's transaction
    // has read every change committed before it.
    let _synced = Answer(synced);

    let mut txn = match shared.store.begin() {
        Ok(txn) => txn,
        Err(e) => return refuse(jobs, &e),
    };
    match txn.changes() {
        Ok(changes) if changes.is_empty() => {}
        Ok(changes) => {
            apply(registry, changes);
        }
        Err(e) => return refuse(jobs, &e),
    }

    let now = now_millis();
    let groups = registry.groups();
    let mine = registry.mine();
    let index = shared.index.read();
    let mut overlay = Overlay::new(&index);
    let mut accepted: Vec<Accepted> = Vec::new();
    let mut status_seen: Vec<StatusChange> = Vec::new();
    let mut transitions: Vec<(TagentId, Status, u64)> = Vec::new();
    let mut deleted: Vec<Deleted> = Vec::new();
    for job in jobs {
        match job {
            Job::Register { req, reply } => {
                let live = GroupLiveness {
                    local,
                    view: &overlay,
                    mine: &mine,
                };
                match rules::decide(&overlay, &shared.interner, &groups, &live, &req, now) {
                    Ok(decision) => {
                        overlay.set(decision.tagent.id, Some(decision.tagent.clone()));
                        accepted.push(Accepted {
                            decision,
                            req,
                            reply,
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Job::Status(changes) => {
                for c in changes {
                    status_seen.push(c);
                    let Some(t) = overlay.get(c.id) else { continue };
                    if t.status == c.status && (c.runner.is_none() || t.runner == c.runner) {
                        continue;
                    }
                    // A disconnect applies only to the session that held the
                    // tagent: the runner it names, else one of this hub's.
                    // The tagent may be connected through another hub since.
                    if t.status == Status::Connected
                        && c.status != Status::Connected
                        && !match c.runner {
                            Some(r) => t.runner == Some(r),
                            None => mine.holds(t.runner),
                        }
                    {
                        continue;
                    }
                    let mut t = t.clone();
                    t.status = c.status;
                    t.last_status_change = c.at;
                    if c.status == Status::Connected && c.runner.is_some() {
                        t.runner = c.runner;
                    }
                    transitions.push((c.id, c.status, c.at));
                    overlay.set(c.id, Some(t));
                }
            }
            Job::Delete { id, reply } => {
                let Some(t) = overlay.get(id).cloned() else {
                    let _ = reply.send(Err(ChangeError::NotFound(id)));
                    continue;
                };
                let live = GroupLiveness {
                    local,
                    view: &overlay,
                    mine: &mine,
                };
                if live.is_live(id) {
                    let _ = reply.send(Err(ChangeError::Connected(id)));
                    continue;
                }
                let accounts = t
                    .all_ips()
                    .map(|(_, ip)| ip)
                    .filter(|ip| {
                        overlay
                            .lookup(t.tenant, t.port, *ip)
                            .iter()
                            .all(|other| *other == id)
                    })
                    .collect();
                overlay.set(id, None);
                deleted.push(Deleted {
                    tenant: shared.interner.resolve(t.tenant),
                    tagent: t,
                    accounts,
                    reply,
                });
            }
            Job::Groups { reply, .. } => {
                // `run` splits batches at group changes; never reached.
                let _ = reply.send(Err(ChangeError::ShuttingDown));
            }
            Job::Sync(_) | Job::Stop => {}
        }
    }
    let next_id = overlay.next_id();
    let changes = overlay.into_changes();
    let next_id_changed = next_id > index.next_id();

    let mut batch = WriteBatch {
        next_id: next_id_changed.then_some(next_id),
        ..Default::default()
    };
    for (id, t) in &changes {
        match t {
            Some(t) => batch.tagents_put.push(to_stored(t, &shared.interner)),
            None => batch.tagents_delete.push(*id),
        }
    }
    for a in &accepted {
        let d = &a.decision;
        for ip in &d.accounts_delete {
            batch.accounts.push(AccountOp::Delete {
                tenant: &a.req.tenant,
                ip: *ip,
                port: d.tagent.port,
            });
        }
        for ip in &d.accounts_put {
            batch.accounts.push(AccountOp::Put(AccountPut {
                tenant: &a.req.tenant,
                ip: *ip,
                port: d.tagent.port,
                credential: a.req.credential.as_ref().map(|c| c.0.as_str()),
            }));
        }
    }
    for d in &deleted {
        for ip in &d.accounts {
            batch.accounts.push(AccountOp::Delete {
                tenant: &d.tenant,
                ip: *ip,
                port: d.tagent.port,
            });
        }
    }
    drop(index);
    if batch.is_empty() {
        return Vec::new();
    }

    let commit_started = Instant::now();
    let result = txn.commit(&batch);
    metrics::histogram!("tagent_hub_store_commit_duration_seconds")
        .record(commit_started.elapsed().as_secs_f64());
    drop(batch);

    if let Err(e) = result {
        metrics::counter!("tagent_hub_store_errors_total").increment(1);
        tracing::error!(error = %e, registrations = accepted.len(), "store commit failed; batch not applied");
        for a in accepted {
            let _ = a.reply.send(Err(RegisterError::Store(e.to_string())));
        }
        for d in deleted {
            let _ = d.reply.send(Err(ChangeError::Store(e.to_string())));
        }
        // Registrations were refused (their tagents retry); status changes
        // have no one to retry them, so they go again with the next batch.
        return status_seen;
    }

    {
        let mut index = shared.index.write();
        for (id, t) in changes {
            shared.sessions.track(&mine, id, t.as_ref());
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
    shared
        .generation
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    metrics::histogram!("tagent_hub_store_batch_size").record(accepted.len() as f64);
    publish(registry, &accepted, &transitions, &deleted, now);
    for d in deleted {
        let _ = d.reply.send(Ok(()));
    }

    for a in accepted {
        let group = groups
            .get(a.decision.tagent.runner_group)
            .cloned()
            .expect("a decision names a configured group");
        let _ = a.reply.send(Ok(Registered {
            id: a.decision.tagent.id,
            created: a.decision.created,
            group,
        }));
    }
    tracing::trace!(elapsed = ?started.elapsed(), "batch applied");
    Vec::new()
}

/// Answer a batch that could not reach the store: its registrations get the
/// error (their tagents retry), its status changes go again with the next.
fn refuse(jobs: Vec<Job>, e: &crate::store::StoreError) -> Vec<StatusChange> {
    metrics::counter!("tagent_hub_store_errors_total").increment(1);
    tracing::error!(error = %e, "the store cannot be written; batch not applied");
    let mut retry = Vec::new();
    for job in jobs {
        match job {
            Job::Register { reply, .. } => {
                let _ = reply.send(Err(RegisterError::Store(e.to_string())));
            }
            Job::Status(changes) => retry.extend(changes),
            Job::Delete { reply, .. } => {
                let _ = reply.send(Err(ChangeError::Store(e.to_string())));
            }
            Job::Groups { reply, .. } => {
                let _ = reply.send(Err(ChangeError::Store(e.to_string())));
            }
            Job::Sync(_) | Job::Stop => {}
        }
    }
    retry
}

/// Apply other hubs' commits to the index, so sessions resolve tagents
/// registered elsewhere and status views show every hub's sessions.
fn sync(registry: &Registry) {
    match registry.shared.store.changes() {
        Ok(changes) if changes.is_empty() => {}
        Ok(changes) => apply(registry, changes),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read other hubs' changes; the next batch will")
        }
    }
}

fn apply(registry: &Registry, mut changes: crate::store::Changes) {
    let shared = &registry.shared;
    if let Some(stored) = changes.groups.take() {
        match StoredGroup::resolve(&stored, &shared.advertised) {
            Ok(groups) => {
                tracing::info!("runner groups changed on another hub");
                registry.set_groups(Arc::new(groups));
            }
            Err(e) => {
                tracing::error!(error = %e, "another hub stored runner groups this hub cannot read")
            }
        }
    }
    {
        let ids: Vec<TagentId> = changes.tagents.iter().map(|(id, _)| *id).collect();
        let mine = registry.mine();
        let mut index = shared.index.write();
        apply_changes(&mut index, &shared.interner, changes);
        for id in ids {
            shared.sessions.track(&mine, id, index.get(id));
        }
        metrics::gauge!("tagent_hub_tagents").set(index.len() as f64);
    }
    shared
        .generation
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
}

/// Tells waiting [`Registry::refresh`] callers when dropped.
struct Answer(Vec<oneshot::Sender<()>>);

impl Drop for Answer {
    fn drop(&mut self) {
        for w in self.0.drain(..) {
            let _ = w.send(());
        }
    }
}

/// Count the batch's status transitions and tell watchers about everything
/// it made durable.
fn publish(
    registry: &Registry,
    accepted: &[Accepted],
    transitions: &[(TagentId, Status, u64)],
    deleted: &[Deleted],
    now: u64,
) {
    let shared = &registry.shared;
    for (_, status, _) in transitions {
        let reason = status.reason().map_or("connected", |r| r.as_str());
        metrics::counter!("tagent_hub_status_transitions_total", "reason" => reason).increment(1);
    }
    let index = shared.index.read();
    let registered = accepted.iter().filter_map(|a| {
        let change = if a.decision.created {
            Change::Created
        } else {
            Change::Reregistered
        };
        Event::of(&a.decision.tagent, change, now)
    });
    let changed = transitions.iter().filter_map(|(id, status, at)| {
        let change = match status {
            Status::Connected => Change::Connected,
            Status::Disconnected(r) => Change::Disconnected(*r),
        };
        Event::of(index.get(*id)?, change, *at)
    });
    let gone = deleted
        .iter()
        .filter_map(|d| Event::of(&d.tagent, Change::Deleted, now));
    shared.events.publish(registered.chain(changed).chain(gone));
}
