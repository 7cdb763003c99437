//! Rollouts: a version to a set of tagents, `concurrency` at a time,
//! stopping once `max_failures` failed, abortable. Per tagent the steps of
//! SPEC §5.5 over its listener with the package matched by version, os
//! type and arch (else arch `default`), then the wait for it to register
//! again reporting the new version. Every change of a rollout or of one of
//! its tagents is written to the store as it happens (by [`history`]'s
//! writer), so the history survives the hub; a rollout the hub was running
//! when it stopped is marked interrupted at the next start, each tagent
//! with what became of it.
//!
//! [`history`]: super::history

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use super::history::History;
use super::packages::Packages;
use crate::listener::Operations;
use crate::listener::upgrade::{UpgradeStep, UpgradeStepResult};
use crate::model::{Rollout, RolloutState, RolloutTarget, TagentId, TargetState, now_millis};
use crate::registry::Registry;

/// Most tagents one rollout may name, and most at once.
pub const MAX_TARGETS: usize = 100_000;
pub const MAX_CONCURRENCY: u32 = 500;

/// What an operator asks for.
#[derive(Debug, Clone)]
pub struct Plan {
    pub version: String,
    pub ids: Vec<TagentId>,
    pub concurrency: u32,
    pub max_failures: u32,
    pub register_timeout: Duration,
}

/// Why a rollout was not started.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("{0}")]
    Invalid(String),
    #[error("no rollout {0}")]
    NotFound(String),
    #[error("rollout {0} has ended")]
    Ended(String),
    #[error("{0}")]
    Store(String),
}

/// What a rollout's watchers hear: a tagent's change (with the header
/// after it), and the end.
#[derive(Debug, Clone)]
pub enum Progress {
    Target(Rollout, RolloutTarget),
    Ended(Rollout),
}

/// A rollout this hub runs: its header and targets, and whether an
/// operator aborted it.
struct Live {
    state: Mutex<(Rollout, BTreeMap<TagentId, RolloutTarget>)>,
    abort: AtomicBool,
}

impl Live {
    fn snapshot(&self) -> (Rollout, Vec<RolloutTarget>) {
        let st = self.state.lock();
        (st.0.clone(), st.1.values().cloned().collect())
    }
}

struct Inner {
    registry: Registry,
    operations: Operations,
    packages: Arc<Packages>,
    history: History,
    /// This hub's name in the history (its heartbeat address).
    hub: String,
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// Every running rollout's progress, for the event streams.
    progress: tokio::sync::broadcast::Sender<Progress>,
}

/// The rollouts of this hub.
#[derive(Clone)]
pub struct Rollouts {
    inner: Arc<Inner>,
}

impl Rollouts {
    /// Start the history writer (on the current runtime) and mark what a
    /// previous run of this hub left running as interrupted.
    pub async fn start(
        registry: Registry,
        operations: Operations,
        packages: Arc<Packages>,
        hub: String,
    ) -> Rollouts {
        let history = History::start(registry.store().clone());
        history.recover(&registry, &hub).await;
        Rollouts {
            inner: Arc::new(Inner {
                registry,
                operations,
                packages,
                history,
                hub,
                live: Mutex::new(HashMap::new()),
                progress: tokio::sync::broadcast::channel(4096).0,
            }),
        }
    }

    pub fn packages(&self) -> &Arc<Packages> {
        &self.inner.packages
    }

    /// Start a rollout of `plan` on behalf of `who`; it runs on its own.
    pub async fn begin(&self, who: &str, plan: Plan) -> Result<Rollout, RolloutError> {
        super::packages::validate(&plan.version, "x", "x")
            .map_err(|e| RolloutError::Invalid(e.to_string()))?;
        if plan.ids.is_empty() {
            return Err(RolloutError::Invalid("the rollout names no tagent".into()));
        }
        if plan.ids.len() > MAX_TARGETS {
            return Err(RolloutError::Invalid(format!(
                "a rollout names at most {MAX_TARGETS} tagents"
            )));
        }
        if plan.concurrency == 0 || plan.concurrency > MAX_CONCURRENCY {
            return Err(RolloutError::Invalid(format!(
                "concurrency must be between 1 and {MAX_CONCURRENCY}"
            )));
        }
        let timeout = plan.register_timeout.as_secs();
        if !(10..=86_400).contains(&timeout) {
            return Err(RolloutError::Invalid(
                "register_timeout_secs must be between 10 and 86400".into(),
            ));
        }
        let available = self
            .inner
            .packages
            .list()
            .map_err(|e| RolloutError::Store(e.to_string()))?;
        if !available.iter().any(|p| p.version == plan.version) {
            return Err(RolloutError::Invalid(format!(
                "no package has version {}: upload one first",
                plan.version
            )));
        }
        let now = now_millis();
        let mut targets = BTreeMap::new();
        for id in &plan.ids {
            let t = self.inner.registry.get(*id);
            targets.insert(
                *id,
                RolloutTarget {
                    tagent: *id,
                    ip: t.as_ref().map(|t| t.ip.to_string()).unwrap_or_default(),
                    os_type: t
                        .as_ref()
                        .map(|t| t.host.os_type.clone())
                        .unwrap_or_default(),
                    arch: t.as_ref().map(|t| t.host.osbit.clone()).unwrap_or_default(),
                    from_version: t.map(|t| t.host.version).unwrap_or_default(),
                    package: None,
                    state: TargetState::Waiting,
                    steps: Vec::new(),
                    reason: None,
                    started_ms: 0,
                    ended_ms: 0,
                },
            );
        }
        let rollout = Rollout {
            id: hex::encode(rand::random::<[u8; 8]>()),
            version: plan.version.clone(),
            created_ms: now,
            ended_ms: 0,
            by: who.to_owned(),
            hub: self.inner.hub.clone(),
            concurrency: plan.concurrency,
            max_failures: plan.max_failures,
            register_timeout_secs: timeout,
            state: RolloutState::Running,
            targets: targets.len() as u32,
            upgraded: 0,
            failed: 0,
            skipped: 0,
        };
        // Durable before it starts: a crash right after leaves its history.
        let all: Vec<RolloutTarget> = targets.values().cloned().collect();
        self.inner
            .history
            .write_now(&rollout, &all)
            .await
            .map_err(RolloutError::Store)?;
        let live = Arc::new(Live {
            state: Mutex::new((rollout.clone(), targets)),
            abort: AtomicBool::new(false),
        });
        self.inner
            .live
            .lock()
            .insert(rollout.id.clone(), live.clone());
        metrics::counter!("tagent_hub_rollouts_total", "state" => "started").increment(1);
        tokio::spawn(run(self.inner.clone(), live, plan, who.to_owned()));
        Ok(rollout)
    }

    /// A rollout and its targets: as it runs here, else from the history.
    pub async fn get(&self, id: &str) -> Result<(Rollout, Vec<RolloutTarget>), RolloutError> {
        if let Some(live) = self.inner.live.lock().get(id).cloned() {
            return Ok(live.snapshot());
        }
        self.inner
            .history
            .read(id)
            .await
            .map_err(RolloutError::Store)?
            .ok_or_else(|| RolloutError::NotFound(format!("{id:.32}")))
    }

    /// The newest rollouts' headers (running ones as they are now).
    pub async fn list(&self, limit: usize) -> Result<Vec<Rollout>, RolloutError> {
        let mut stored = self
            .inner
            .history
            .list(limit)
            .await
            .map_err(RolloutError::Store)?;
        let live = self.inner.live.lock();
        for r in &mut stored {
            if let Some(l) = live.get(&r.id) {
                *r = l.state.lock().0.clone();
            }
        }
        Ok(stored)
    }

    /// Follow rollout `id`: the state now (`None`: it is not running on
    /// this hub), and what changes after.
    pub fn watch(
        &self,
        id: &str,
    ) -> (
        Option<(Rollout, Vec<RolloutTarget>)>,
        tokio::sync::broadcast::Receiver<Progress>,
    ) {
        // Subscribed under the map's lock: no change between the snapshot
        // and the subscription is missed.
        let live = self.inner.live.lock();
        let rx = self.inner.progress.subscribe();
        (live.get(id).map(|l| l.snapshot()), rx)
    }

    /// Stop starting tagents; those under way finish their step and end
    /// as they end.
    pub fn abort(&self, id: &str) -> Result<Rollout, RolloutError> {
        let Some(live) = self.inner.live.lock().get(id).cloned() else {
            return Err(RolloutError::Ended(format!("{id:.32}")));
        };
        live.abort.store(true, Ordering::Release);
        Ok(live.state.lock().0.clone())
    }
}

/// Run a rollout to its end.
async fn run(inner: Arc<Inner>, live: Arc<Live>, plan: Plan, who: String) {
    let gate = Arc::new(Semaphore::new(plan.concurrency as usize));
    let data: Arc<tokio::sync::Mutex<HashMap<String, Bytes>>> = Arc::default();
    let mut running = tokio::task::JoinSet::new();
    let mut stopped = false;
    for id in plan.ids.iter().copied() {
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        let failed = live.state.lock().0.failed;
        if live.abort.load(Ordering::Acquire) {
            break;
        }
        if plan.max_failures > 0 && failed >= plan.max_failures {
            stopped = true;
            break;
        }
        let (inner, live, data, who) = (inner.clone(), live.clone(), data.clone(), who.clone());
        let (version, timeout) = (plan.version.clone(), plan.register_timeout);
        running.spawn(async move {
            let _permit = permit;
            upgrade_one(&inner, &live, &data, &who, id, &version, timeout).await;
        });
        // Reap the finished, so a long rollout holds only what runs.
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    let aborted = live.abort.load(Ordering::Acquire);
    let (rollout, rest) = {
        let mut st = live.state.lock();
        let mut rest = Vec::new();
        for t in st.1.values_mut() {
            if t.state == TargetState::Waiting {
                t.state = TargetState::NotStarted;
                t.reason = Some(if aborted { "aborted" } else { "stopped" }.into());
                rest.push(t.clone());
            }
        }
        st.0.state = if aborted {
            RolloutState::Aborted
        } else if stopped {
            RolloutState::Stopped
        } else {
            RolloutState::Done
        };
        st.0.ended_ms = now_millis();
        (st.0.clone(), rest)
    };
    let state = match rollout.state {
        RolloutState::Aborted => "aborted",
        RolloutState::Stopped => "stopped",
        _ => "done",
    };
    metrics::counter!("tagent_hub_rollouts_total", "state" => state).increment(1);
    tracing::info!(
        rollout = %rollout.id, version = %rollout.version, state,
        upgraded = rollout.upgraded, failed = rollout.failed, skipped = rollout.skipped,
        "rollout ended"
    );
    if let Err(e) = inner.history.write_now(&rollout, &rest).await {
        tracing::error!(rollout = %rollout.id, error = %e, "the rollout's end was not stored");
    }
    let mut live = inner.live.lock();
    live.remove(&rollout.id);
    let _ = inner.progress.send(Progress::Ended(rollout));
}

/// Change target `id` with `f`, count its end into the header, and queue
/// both for the history.
/// Queued under the lock, so the history gets a rollout's changes in the
/// order they were made.
fn update(inner: &Inner, live: &Live, id: TagentId, f: impl FnOnce(&mut RolloutTarget)) {
    let mut st = live.state.lock();
    let (header, targets) = &mut *st;
    let Some(t) = targets.get_mut(&id) else {
        return;
    };
    let before = t.state;
    f(t);
    if before != t.state {
        match t.state {
            TargetState::Upgraded => header.upgraded += 1,
            TargetState::Failed => header.failed += 1,
            TargetState::Skipped => header.skipped += 1,
            _ => {}
        }
    }
    inner.history.write(header.clone(), t.clone());
    let _ = inner
        .progress
        .send(Progress::Target(header.clone(), t.clone()));
}

fn end(t: &mut RolloutTarget, state: TargetState, reason: Option<String>) {
    t.state = state;
    t.reason = reason;
    t.ended_ms = now_millis();
    let label = match state {
        TargetState::Upgraded => "upgraded",
        TargetState::Skipped => "skipped",
        _ => "failed",
    };
    metrics::counter!("tagent_hub_upgrades_total", "result" => label).increment(1);
}

async fn upgrade_one(
    inner: &Inner,
    live: &Live,
    data: &tokio::sync::Mutex<HashMap<String, Bytes>>,
    who: &str,
    id: TagentId,
    version: &str,
    timeout: Duration,
) {
    let started = Instant::now();
    let Some(t) = inner.registry.get(id) else {
        update(inner, live, id, |t| {
            end(t, TargetState::Failed, Some("no such tagent".into()))
        });
        return;
    };
    let from = t.host.version.clone();
    if from == version {
        update(inner, live, id, |t| {
            end(
                t,
                TargetState::Skipped,
                Some(format!("already at {version}")),
            )
        });
        return;
    }
    let package = match inner.packages.find(version, &t.host.os_type, &t.host.osbit) {
        Ok(Some(p)) => p,
        Ok(None) => {
            let why = format!(
                "no package of version {version} for {}/{} (nor arch default)",
                t.host.os_type, t.host.osbit
            );
            update(inner, live, id, |t| end(t, TargetState::Failed, Some(why)));
            return;
        }
        Err(e) => {
            update(inner, live, id, |t| {
                end(t, TargetState::Failed, Some(e.to_string()))
            });
            return;
        }
    };
    let bytes = {
        let mut cache = data.lock().await;
        match cache.get(&package.sha256) {
            Some(b) => Ok(b.clone()),
            None => match inner.packages.data(&package).await {
                Ok(b) => {
                    cache.insert(package.sha256.clone(), b.clone());
                    Ok(b)
                }
                Err(e) => Err(e.to_string()),
            },
        }
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            update(inner, live, id, |t| end(t, TargetState::Failed, Some(e)));
            return;
        }
    };
    update(inner, live, id, |t| {
        t.state = TargetState::Running;
        t.started_ms = now_millis();
        t.package = Some(package.sha256.clone());
        t.from_version.clone_from(&from);
    });
    let file = package.file_name();
    let passed = inner
        .operations
        .upgrade_steps(id, &file, bytes, |step| {
            update(inner, live, id, |t| t.steps.push(step));
        })
        .await;
    let (result, reason) = if !passed {
        let last = live
            .state
            .lock()
            .1
            .get(&id)
            .and_then(|t| t.steps.last().cloned());
        let why = last.map_or_else(
            || "failed".to_owned(),
            |s| {
                format!(
                    "{} failed: {}",
                    s.step.as_str(),
                    s.error.as_deref().unwrap_or(&s.result)
                )
            },
        );
        update(inner, live, id, |t| {
            end(t, TargetState::Failed, Some(why.clone()))
        });
        ("failed", why)
    } else {
        let reported = wait_for_version(&inner.registry, id, version, timeout).await;
        match reported {
            Ok(()) => {
                update(inner, live, id, |t| {
                    t.steps.push(UpgradeStepResult {
                        step: UpgradeStep::Register,
                        result: "ok".into(),
                        output: String::new(),
                        error: None,
                    });
                    end(t, TargetState::Upgraded, None);
                });
                ("ok", String::new())
            }
            Err(now) => {
                let why = format!(
                    "it did not register with version {version} within {} s (it reports {now:?})",
                    timeout.as_secs()
                );
                update(inner, live, id, |t| {
                    t.steps.push(UpgradeStepResult {
                        step: UpgradeStep::Register,
                        result: "deadline".into(),
                        output: String::new(),
                        error: Some(why.clone()),
                    });
                    end(t, TargetState::Failed, Some(why.clone()));
                });
                ("deadline", why)
            }
        }
    };
    let rollout = live.state.lock().0.id.clone();
    inner
        .operations
        .audit_upgrade(
            who,
            id,
            result,
            format!(
                "rollout {rollout}: {from} -> {version}, package {}, {:.1} s{}{}",
                &package.sha256[..12],
                started.elapsed().as_secs_f64(),
                if reason.is_empty() { "" } else { ": " },
                reason
            ),
        )
        .await;
}

/// Wait until tagent `id` is registered reporting `version`; the version
/// it reports at the deadline otherwise. Woken by the registry's events
/// for it (published once a registration is durable), with a look every
/// 5 s besides (a watcher that lagged behind, or missed one).
async fn wait_for_version(
    registry: &Registry,
    id: TagentId,
    version: &str,
    timeout: Duration,
) -> Result<(), String> {
    use tokio::sync::broadcast::error::RecvError;
    let deadline = tokio::time::Instant::now() + timeout;
    // Subscribed before the first look: a registration between the two is
    // still heard.
    let mut live = registry.events().subscribe(None).live;
    loop {
        let now = registry.get(id).map(|t| t.host.version).unwrap_or_default();
        if now == version {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(now);
        }
        let wake = deadline.min(tokio::time::Instant::now() + Duration::from_secs(5));
        let _ = tokio::time::timeout_at(wake, async {
            loop {
                match live.recv().await {
                    Ok(n) if u64::from(n.event.tagent_id) == id => return,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return,
                    // No more events: the 5 s look is all there is.
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        })
        .await;
    }
}
