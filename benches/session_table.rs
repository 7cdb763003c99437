//! The hub's session table (`heartbeat::Hub`: sessions by (tenant, ip,
//! port) and by tagent id), per operation, on a hub whose registry holds
//! `SESSION_BENCH_TAGENTS` registered tagents (default 4,096), each with one
//! session:
//!
//! - `insert`: a new session's first heartbeat (`Hub::heartbeat`: identify,
//!   resolve the tagent, enter both maps, report `connected`);
//! - `replace`: a reconnect, a new session's first heartbeat under a key
//!   that has a session (the old one is closed as `replaced`);
//! - `remove`: a session ends (`Hub::finish`: leave both maps, report
//!   `disconnected`).
//!
//! Only the operation is timed (`iter_custom`); making the sessions and
//! putting the table back for the next round are not. Status changes go to
//! the registry's writer as in the hub, which commits them in the background.
//!
//! Run: `cargo bench --bench session_table`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tagent_hub::config::HeartbeatConfig;
use tagent_hub::heartbeat::{Facts, Hub, ProtocolKind, Session, SessionKey, Settings};
use tagent_hub::model::DisconnectReason;
use tagent_hub::registry::{RegisterRequest, Registry, Secret};
use tagent_hub::shutdown::Shutdown;
use tagent_hub::store::{CredentialCipher, RedbStore};

#[path = "common/fixtures.rs"]
mod fixtures;
use fixtures::{PORT, host, one_group};

fn tagents() -> usize {
    std::env::var("SESSION_BENCH_TAGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096)
}

fn ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from_be_bytes([10, 0, 0, 1]).wrapping_add(i as u32),
    ))
}

fn request(i: usize) -> RegisterRequest {
    RegisterRequest {
        tenant: "t".into(),
        tagent_id: None,
        ip: ip(i),
        port: PORT,
        ips: vec![ip(i)],
        name: format!("host-{i}"),
        host: host(),
        credential: Some(Secret(format!("cred-{i}"))),
        token: None,
        source: ip(i),
    }
}

/// The registered tagents: (key, tagent id).
struct Fixture {
    hub: Hub,
    tagents: Vec<(SessionKey, u64)>,
}

impl Fixture {
    fn session(&self, i: usize) -> Arc<Session> {
        let peer = SocketAddr::new(ip(i), 40_000);
        Arc::new(Session::new(peer, ProtocolKind::Native, 0))
    }

    /// New sessions for the first `k` tagents, each identified by its
    /// first heartbeat (timed: returned), taking the place of `current`'s.
    fn renew(&self, current: &mut Vec<Arc<Session>>, k: usize) -> Duration {
        let fresh: Vec<_> = (0..k).map(|i| self.session(i)).collect();
        let t0 = Instant::now();
        for (i, s) in fresh.iter().enumerate() {
            self.beat(s, i);
        }
        let took = t0.elapsed();
        current.splice(0..k, fresh);
        took
    }

    fn beat(&self, session: &Arc<Session>, i: usize) {
        let (key, id) = self.tagents[i];
        let facts = Facts {
            agent_id: id,
            ..Default::default()
        };
        let beat = self.hub.heartbeat(session, key, facts).expect("same key");
        debug_assert_eq!(beat.tagent, Some(id));
    }
}

fn fixture(rt: &tokio::runtime::Runtime, dir: &std::path::Path, n: usize) -> Fixture {
    let cipher = CredentialCipher::from_hex(&"11".repeat(32)).unwrap();
    let store = RedbStore::open(dir, cipher, 16 << 20).unwrap();
    let registry = Registry::open(Arc::new(store), one_group(&["0.0.0.0/0"])).unwrap();
    let ids: Vec<u64> = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..n {
            let registry = registry.clone();
            tasks.push(tokio::spawn(async move {
                registry.register(request(i)).await.unwrap().id
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids
    });
    let _guard = rt.enter();
    let settings = Settings::from_config(&HeartbeatConfig::default(), 0);
    let hub = Hub::start(
        registry,
        settings,
        ("127.0.0.1".into(), 8888),
        Shutdown::new(),
    )
    .expect("the hub starts");
    let tagents = ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| (hub.key_for("t", ip(i), PORT), id))
        .collect();
    Fixture { hub, tagents }
}

fn bench_table(c: &mut Criterion) {
    let n = tagents();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = fixture(&rt, dir.path(), n);
    let _guard = rt.enter();
    // Every tagent starts with a session.
    let mut current: Vec<Arc<Session>> = (0..n).map(|i| f.session(i)).collect();
    for (i, s) in current.iter().enumerate() {
        f.beat(s, i);
    }
    assert_eq!(f.hub.live_sessions(), n, "every tagent resolved and live");

    let mut g = c.benchmark_group(format!("session_table_{n}"));
    g.throughput(Throughput::Elements(1));
    // Each bench does `iters` operations in rounds over the pool's keys.
    g.bench_function("insert", |b| {
        b.iter_custom(|iters| {
            rounds(iters, n, |k| {
                for s in current.iter().take(k) {
                    f.hub.finish(s, DisconnectReason::Eof);
                }
                f.renew(&mut current, k)
            })
        })
    });
    g.bench_function("replace", |b| {
        b.iter_custom(|iters| rounds(iters, n, |k| f.renew(&mut current, k)))
    });
    g.bench_function("remove", |b| {
        b.iter_custom(|iters| {
            rounds(iters, n, |k| {
                let t0 = Instant::now();
                for s in current.iter().take(k) {
                    f.hub.finish(s, DisconnectReason::Eof);
                }
                let took = t0.elapsed();
                f.renew(&mut current, k);
                took
            })
        })
    });
    g.finish();
    assert_eq!(
        f.hub.live_sessions(),
        n,
        "the table is whole after the bench"
    );
}

/// Run `iters` operations as rounds of at most `n` (the first `k` keys of
/// the pool each); `round(k)` returns the time of its timed part.
fn rounds(iters: u64, n: usize, mut round: impl FnMut(usize) -> Duration) -> Duration {
    let mut took = Duration::ZERO;
    let mut done = 0u64;
    while done < iters {
        let k = ((iters - done) as usize).min(n);
        took += round(k);
        done += k as u64;
    }
    took
}

criterion_group!(benches, bench_table);
criterion_main!(benches);
