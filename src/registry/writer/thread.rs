//! The writer thread's loop: take every job waiting (up to a batch), run
//! it through the stages, and stop when asked.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::mpsc;

use super::{Job, answer, apply, commit, decide, enroll, groups, publish, sync};
use crate::model::now_millis;
use crate::registry::{MAX_BATCH, Registry, StatusChange};
use crate::store::WriteTxn;

pub(in crate::registry) fn spawn(
    registry: Registry,
    rx: mpsc::Receiver<Job>,
) -> std::thread::JoinHandle<()> {
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
                retry = bounded(process(&registry, run));
            }
            if let Some((edit, reply)) = groups {
                let _ = reply.send(groups::change_groups(&registry, edit));
            }
        }
    }
}

/// Status changes carried over failed commits, at most: beyond, the list
/// keeps each tagent's latest change only (about 32 bytes a change, so a
/// store down for long cannot grow the writer without bound).
const MAX_RETRY: usize = 1 << 20;

/// `retry`, compacted to each tagent's latest change when it grew past
/// [`MAX_RETRY`]: the latest report of a tagent is its state now.
fn bounded(mut retry: Vec<StatusChange>) -> Vec<StatusChange> {
    if retry.len() <= MAX_RETRY {
        return retry;
    }
    let before = retry.len();
    let mut seen = std::collections::HashSet::with_capacity(before / 2);
    retry.reverse();
    retry.retain(|c| seen.insert(c.id));
    retry.reverse();
    tracing::warn!(
        before,
        after = retry.len(),
        "status changes waiting for the store compacted to each tagent's latest"
    );
    retry
}

/// Lease fencing: a runner-lost report becomes status changes only if the
/// lapsed hub's lease is still lapsed at the epoch it was seen at, read in
/// this transaction (which holds the registry's lock): a hub that renewed
/// and reasserted its sessions meanwhile is never overwritten.
fn fence(
    txn: &mut dyn WriteTxn,
    jobs: Vec<Job>,
) -> Result<Vec<Job>, (Vec<Job>, crate::store::StoreError)> {
    let mut out = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    while let Some(job) = jobs.next() {
        let Job::RunnerLost {
            hub,
            epoch,
            changes,
        } = job
        else {
            out.push(job);
            continue;
        };
        match txn.still_lapsed(&hub, epoch) {
            Ok(true) => out.push(Job::Status(changes)),
            Ok(false) => {
                metrics::counter!("tagent_hub_runner_lost_fenced_total").increment(1);
                tracing::info!(%hub, epoch, tagents = changes.len(), "the hub renewed its lease: its tagents stay as it reported them");
            }
            Err(e) => {
                out.extend(jobs);
                return Err((out, e));
            }
        }
    }
    Ok(out)
}

/// Run one batch through the stages. Returns the status changes to try
/// again when it could not be committed.
fn process(registry: &Registry, mut jobs: Vec<Job>) -> Vec<StatusChange> {
    let shared = &registry.shared;
    let started = Instant::now();

    // Those waiting for a sync are answered when this function returns: by
    // then the batch's transaction has read every change committed before it.
    let _synced = sync::take_syncs(&mut jobs).map(|synced| {
        shared.sync_pending.store(false, Ordering::Release);
        sync::Answer(synced)
    });
    if _synced.is_some() && jobs.is_empty() {
        sync::sync(registry);
        return Vec::new();
    }

    let mut txn = match shared.store.begin() {
        Ok(txn) => txn,
        Err(e) => return answer::unreachable(jobs, &e),
    };
    match txn.changes() {
        Ok(changes) if changes.is_empty() => {}
        Ok(changes) => sync::apply(registry, changes),
        Err(e) => return answer::unreachable(jobs, &e),
    }
    let jobs = match fence(&mut *txn, jobs) {
        Ok(jobs) => jobs,
        Err((jobs, e)) => return answer::unreachable(jobs, &e),
    };

    let groups = registry.groups();
    let mine = registry.mine();
    let policy = registry.policy();
    let now = now_millis();
    let cx = decide::Context {
        interner: &shared.interner,
        groups: &groups,
        local: shared.sessions.local(),
        mine: &mine,
        cipher: shared.store.cipher(),
        now,
    };
    let enroll = enroll::Enrollment::new(&mut *txn, &policy, now);
    let decided = decide::decide(&shared.index.read(), &cx, enroll, jobs);

    let batch = commit::batch(&decided, &shared.interner);
    if batch.is_empty() {
        drop(batch);
        let decide::Decided {
            refused, enrolled, ..
        } = decided;
        answer::committed(
            Vec::new(),
            Vec::new(),
            Vec::new(),
            refused,
            enrolled,
            &groups,
        );
        return Vec::new();
    }
    let result = commit::commit(txn, &batch);
    drop(batch);
    if let Err(e) = result {
        return answer::commit_failed(decided, &e);
    }

    let decide::Decided {
        accepted,
        deleted,
        opened,
        refused,
        enrolled,
        transitions,
        changes,
        next_id,
        ..
    } = decided;
    apply::apply(
        &mut shared.index.write(),
        &shared.sessions,
        &mine,
        changes,
        next_id,
    );
    shared.generation.fetch_add(1, Ordering::AcqRel);
    metrics::histogram!("tagent_hub_store_batch_size").record(accepted.len() as f64);
    publish::publish(
        &shared.events,
        &shared.index.read(),
        &accepted,
        &transitions,
        &deleted,
        cx.now,
    );
    answer::committed(accepted, deleted, opened, refused, enrolled, &groups);
    tracing::trace!(elapsed = ?started.elapsed(), "batch applied");
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DisconnectReason, Status};

    #[test]
    fn a_long_retry_list_keeps_each_tagents_latest_change() {
        let change = |id, status, at| StatusChange {
            id,
            status,
            at,
            runner: None,
        };
        let down = Status::Disconnected(DisconnectReason::Eof);
        let short: Vec<_> = (0..10).map(|i| change(1, down, i)).collect();
        assert_eq!(bounded(short.clone()), short, "short lists are kept whole");
        let mut long: Vec<_> = (0..MAX_RETRY as u64 + 5)
            .map(|i| change(i % 3, if i % 2 == 0 { down } else { Status::Connected }, i))
            .collect();
        let last: Vec<_> = long.split_off(long.len() - 3);
        long.extend(last.iter().copied());
        assert_eq!(bounded(long), last);
    }
}
