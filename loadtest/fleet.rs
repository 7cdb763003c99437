//! A fleet of fake tagent listeners in this process (the tests' fake,
//! `tests/fake_tagent`, each on 127.0.0.1:0), registered with the hub a
//! bounded number at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::StreamExt;

use crate::fake_tagent::{FakeTagent, Setup};
use crate::hub_api::{Hub, Registration};

/// Registrations in flight at once.
pub const REGISTER_AT_ONCE: usize = 64;
/// The most fakes one run starts (each holds a descriptor; the process may
/// hold 20,000).
pub const MAX_FAKES: usize = 18_000;

pub struct Fleet {
    pub fakes: Vec<FakeTagent>,
    pub tenant: String,
}

impl Fleet {
    /// `count` fakes, each with `setup`.
    pub async fn start(count: usize, setup: Setup, tenant: &str) -> anyhow::Result<Fleet> {
        if count == 0 || count > MAX_FAKES {
            bail!("--count must be between 1 and {MAX_FAKES}");
        }
        let mut fakes = Vec::with_capacity(count);
        for _ in 0..count {
            fakes.push(FakeTagent::start(setup.clone()).await);
        }
        Ok(Fleet {
            fakes,
            tenant: tenant.to_owned(),
        })
    }

    pub fn name(n: usize) -> String {
        format!("bench-{n}")
    }

    /// Register every fake with `version`, at most [`REGISTER_AT_ONCE`] at
    /// once, within `limit`: the seconds it took.
    pub async fn register_all(
        &self,
        hub: &Hub,
        version: &str,
        limit: Duration,
    ) -> anyhow::Result<f64> {
        let started = Instant::now();
        let work = futures_util::stream::iter(self.fakes.iter().enumerate())
            .map(|(n, f)| {
                let (name, credential) = (Fleet::name(n), f.credential());
                async move {
                    hub.register_retrying(&Registration {
                        tenant: &self.tenant,
                        port: f.port(),
                        name: &name,
                        version,
                        credential: &credential,
                    })
                    .await
                }
            })
            .buffer_unordered(REGISTER_AT_ONCE)
            .collect::<Vec<_>>();
        let results = match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => bail!("registering {} fakes took over {limit:?}", self.fakes.len()),
        };
        let failed: Vec<_> = results.into_iter().filter_map(Result::err).collect();
        if let Some(e) = failed.first() {
            bail!(
                "{} of {} registrations failed, e.g. {e:#}",
                failed.len(),
                self.fakes.len()
            );
        }
        Ok(started.elapsed().as_secs_f64())
    }
}

/// Watch every fake's reload count and, after a fake's first reload,
/// register it again with `version` (what a real tagent does when it
/// restarts with the new files). One task scans the counters every 20 ms
/// and spawns the re-registrations, at most [`REGISTER_AT_ONCE`] at once;
/// it stops when every fake re-registered or after `limit`. Returns how
/// many re-registrations failed, when it ends.
pub fn reregister_after_reload(
    fleet: &Fleet,
    hub: &Hub,
    version: &str,
    limit: Duration,
) -> tokio::task::JoinHandle<usize> {
    let watched: Vec<_> = fleet
        .fakes
        .iter()
        .enumerate()
        .map(|(n, f)| (n, f.port(), f.credential(), f.reloads_counter()))
        .collect();
    let (hub, version, tenant) = (hub.clone(), version.to_owned(), fleet.tenant.clone());
    tokio::spawn(async move {
        let gate = Arc::new(tokio::sync::Semaphore::new(REGISTER_AT_ONCE));
        let deadline = Instant::now() + limit;
        let mut pending = watched;
        let mut tasks = tokio::task::JoinSet::new();
        while !pending.is_empty() && Instant::now() < deadline {
            let (reloaded, rest): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .partition(|(_, _, _, r)| r.load(std::sync::atomic::Ordering::SeqCst) > 0);
            pending = rest;
            for (n, port, credential, _) in reloaded {
                let (hub, version, tenant, gate) =
                    (hub.clone(), version.clone(), tenant.clone(), gate.clone());
                tasks.spawn(async move {
                    let _permit = gate.acquire_owned().await;
                    hub.register_retrying(&Registration {
                        tenant: &tenant,
                        port,
                        name: &Fleet::name(n),
                        version: &version,
                        credential: &credential,
                    })
                    .await
                    .is_err()
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut failed = 0;
        while let Some(r) = tasks.join_next().await {
            failed += usize::from(r.unwrap_or(true));
        }
        failed
    })
}
