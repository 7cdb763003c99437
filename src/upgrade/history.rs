//! The upgrade history in the store: every change of a rollout or of one of
//! its tagents, written by a task of its own (never the registry writer's)
//! in the order it was made; changes that arrive together are coalesced to
//! each record's latest, one transaction per rollout, retried a few times
//! when the store refuses. At start, a rollout this hub was running when it stopped is
//! marked interrupted, and each of its tagents says what became of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::model::{Rollout, RolloutState, RolloutTarget, TagentId, TargetState, now_millis};
use crate::registry::Registry;
use crate::store::RegistryStore;

/// Changes written in one transaction at most.
const MAX_BATCH: usize = 1024;

enum Write {
    /// A header and one target as they are now.
    Change(Rollout, RolloutTarget),
    /// A header and targets, answered once durable.
    Now(
        Rollout,
        Vec<RolloutTarget>,
        oneshot::Sender<Result<(), String>>,
    ),
}

#[derive(Clone)]
pub struct History {
    store: Arc<dyn RegistryStore>,
    /// Unbounded: a rollout queues a few changes per tagent (its steps),
    /// at most `concurrency` tagents at a time, and the writer drains it.
    queue: mpsc::UnboundedSender<Write>,
}

impl History {
    pub fn start(store: Arc<dyn RegistryStore>) -> History {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(store.clone(), rx));
        History { store, queue }
    }

    /// Queue a change.
    pub fn write(&self, header: Rollout, target: RolloutTarget) {
        if self.queue.send(Write::Change(header, target)).is_err() {
            lost(1, "the history writer has stopped");
        }
    }

    /// Write `header` and `targets` after every change queued before;
    /// returns once they are durable.
    pub async fn write_now(
        &self,
        header: &Rollout,
        targets: &[RolloutTarget],
    ) -> Result<(), String> {
        let (done, written) = oneshot::channel();
        self.queue
            .send(Write::Now(header.clone(), targets.to_vec(), done))
            .map_err(|_| "the history writer has stopped".to_owned())?;
        written
            .await
            .map_err(|_| "the history writer has stopped".to_owned())?
    }

    pub async fn read(&self, id: &str) -> Result<Option<(Rollout, Vec<RolloutTarget>)>, String> {
        let (store, id) = (self.store.clone(), id.to_owned());
        tokio::task::spawn_blocking(move || store.rollout(&id))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    pub async fn list(&self, limit: usize) -> Result<Vec<Rollout>, String> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.rollouts(limit))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Mark the rollouts `hub` was running as interrupted (with a store of
    /// its own, every running one is this hub's, whatever its address was
    /// then): a tagent under
    /// way says the step it was at and the version it reports now; one
    /// not started yet, that it was not.
    pub async fn recover(&self, registry: &Registry, hub: &str) {
        let running = match self.list(10_000).await {
            Ok(all) => all
                .into_iter()
                .filter(|r| {
                    r.state == RolloutState::Running && (!self.store.shared() || r.hub == hub)
                })
                .collect::<Vec<_>>(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the upgrade history to recover it");
                return;
            }
        };
        for r in running {
            let Ok(Some((mut header, targets))) = self.read(&r.id).await else {
                continue;
            };
            let mut changed = Vec::new();
            for mut t in targets {
                match t.state {
                    TargetState::Running => {
                        let step = t.steps.last().map_or("start", |s| s.step.as_str());
                        let now = registry
                            .get(t.tagent)
                            .map(|x| x.host.version)
                            .unwrap_or_default();
                        t.state = TargetState::Interrupted;
                        t.reason = Some(format!(
                            "the hub stopped during its upgrade (last step: {step}); \
                             it reports version {now:?} now (was {:?})",
                            t.from_version
                        ));
                        t.ended_ms = now_millis();
                        changed.push(t);
                    }
                    TargetState::Waiting => {
                        t.state = TargetState::NotStarted;
                        t.reason = Some("the hub stopped before its turn".into());
                        changed.push(t);
                    }
                    _ => {}
                }
            }
            header.state = RolloutState::Interrupted;
            header.ended_ms = now_millis();
            tracing::warn!(rollout = %header.id, tagents = changed.len(), "a rollout this hub ran was interrupted by its stop");
            metrics::counter!("tagent_hub_rollouts_total", "state" => "interrupted").increment(1);
            if let Err(e) = self.write_now(&header, &changed).await {
                tracing::error!(rollout = %header.id, error = %e, "cannot mark the rollout interrupted");
            }
        }
    }
}

async fn write_loop(store: Arc<dyn RegistryStore>, mut rx: mpsc::UnboundedReceiver<Write>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Per rollout, its latest header and each target's latest record.
        let mut rollouts: HashMap<String, (Rollout, BTreeMap<TagentId, RolloutTarget>)> =
            HashMap::new();
        let mut waiters = Vec::new();
        let mut n = 0;
        for w in batch.drain(..) {
            let (header, targets) = match w {
                Write::Change(h, t) => (h, vec![t]),
                Write::Now(h, ts, done) => {
                    waiters.push(done);
                    (h, ts)
                }
            };
            n += targets.len().max(1);
            let entry = rollouts
                .entry(header.id.clone())
                .or_insert_with(|| (header.clone(), BTreeMap::new()));
            entry.0 = header;
            for t in targets {
                entry.1.insert(t.tagent, t);
            }
        }
        let work: Arc<Vec<(Rollout, Vec<RolloutTarget>)>> = Arc::new(
            rollouts
                .into_values()
                .map(|(h, t)| (h, t.into_values().collect()))
                .collect(),
        );
        // A store that refuses (a PostgreSQL failover, a full disk) gets
        // three more tries over 7 s before the changes are given up.
        let mut result = Err(String::new());
        for wait in [0u64, 1, 2, 4] {
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            let (store, work) = (store.clone(), work.clone());
            let written = tokio::task::spawn_blocking(move || {
                for (header, targets) in work.iter() {
                    store.put_rollout(header, targets)?;
                }
                Ok::<_, crate::store::StoreError>(())
            })
            .await;
            result = match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if result.is_ok() {
                break;
            }
        }
        if let Err(e) = &result {
            lost(n, e);
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

fn lost(n: usize, why: &str) {
    tracing::warn!(
        changes = n,
        error = why,
        "upgrade history changes were not written"
    );
    metrics::counter!("tagent_hub_upgrade_history_errors_total").increment(n as u64);
}
