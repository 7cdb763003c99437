//! The writer thread: the only code that changes the index or writes the store.
//!
//! It takes every job waiting (up to a batch), decides each registration
//! against the index overlaid with the batch's earlier decisions, writes the
//! whole batch in one durable redb transaction, then applies it to the index
//! and answers. A failed commit answers every registration of the batch with
//! an error and leaves the index untouched, so it still equals the store.

use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use std::net::IpAddr;
use std::sync::Arc;

use super::error::ChangeError;
use super::events::{Event, EventKind};
use super::index::{IndexView, Overlay};
use super::model::{RunnerGroups, Status, Tagent, TagentId, now_millis};
use super::rules::{self, Decision};
use super::{
    MAX_BATCH, RegisterError, RegisterRequest, Registered, Registry, StatusChange, to_stored,
};
use crate::store::{AccountOp, AccountPut, StoredGroup, WriteBatch};

pub(super) enum Job {
    Register {
        req: Box<RegisterRequest>,
        reply: oneshot::Sender<Result<Registered, RegisterError>>,
    },
    Status(Vec<StatusChange>),
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
    let current = registry.groups();
    let groups = edit(&current)?.sorted_runners();
    groups.validate().map_err(ChangeError::Invalid)?;
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
    shared.store.commit(&batch).map_err(|e| {
        metrics::counter!("tagent_hub_store_errors_total").increment(1);
        ChangeError::Store(e.to_string())
    })?;
    let groups = Arc::new(groups);
    *shared.groups.write() = groups.clone();
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

fn event(t: &Tagent, tenant: Arc<str>, kind: EventKind, at: u64) -> Event {
    Event {
        seq: 0,
        at,
        kind,
        tagent_id: t.id,
        tenant,
        ip: t.ip,
        port: t.port,
        runner_group: t.runner_group,
        reason: None,
        created: None,
    }
}

struct Accepted {
    decision: Decision,
    req: Box<RegisterRequest>,
    reply: oneshot::Sender<Result<Registered, RegisterError>>,
}

/// Decide and commit one batch. Returns the status changes to try again
/// when the commit failed.
fn process(registry: &Registry, jobs: Vec<Job>) -> Vec<StatusChange> {
    let shared = &registry.shared;
    let started = Instant::now();
    let now = now_millis();
    let groups = registry.groups();
    let live = registry.liveness();

    let index = shared.index.read();
    let mut overlay = Overlay::new(&index);
    let mut accepted: Vec<Accepted> = Vec::new();
    let mut status_seen: Vec<StatusChange> = Vec::new();
    let mut transitions: Vec<(TagentId, Status, u64)> = Vec::new();
    let mut deleted: Vec<Deleted> = Vec::new();
    for job in jobs {
        match job {
            Job::Register { req, reply } => {
                match rules::decide(&overlay, &shared.interner, &groups, live, &req, now) {
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
            Job::Stop => {}
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
    let result = shared.store.commit(&batch);
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
    let interner = &shared.interner;
    let registered = accepted.iter().map(|a| {
        let t = &a.decision.tagent;
        Event {
            created: Some(a.decision.created),
            ..event(t, interner.resolve(t.tenant), EventKind::Registered, now)
        }
    });
    let changed = transitions.iter().filter_map(|(id, status, at)| {
        let t = index.get(*id)?;
        let kind = match status {
            Status::Connected => EventKind::Connected,
            Status::Disconnected(_) => EventKind::Disconnected,
        };
        Some(Event {
            reason: status.reason(),
            ..event(t, interner.resolve(t.tenant), kind, *at)
        })
    });
    let gone = deleted
        .iter()
        .map(|d| event(&d.tagent, d.tenant.clone(), EventKind::Deleted, now));
    shared.events.publish(registered.chain(changed).chain(gone));
}
