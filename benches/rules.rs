//! Decisions per second of the registration rules (`rules::decide`) on an
//! index of 1,000,000 tagents with 2 ips each (target (c) of BENCHMARKS.md).
//!
//! Four kinds of registration, each over a pool of requests for tagents drawn
//! at random from the whole index (so the hash table and the records are
//! touched the way a real load touches them, not one cache-hot entry):
//! - `reregister_by_id`: a known tagent sends its tagentId (rule 2, first case);
//! - `register_by_lookup`: a known tagent without a tagentId (found by lookup);
//! - `new_tagent`: an ip no tagent answers for (a new id);
//! - `refused_contains_other_primary`: ipString lists another tagent's primary
//!   ip (rule 5), refused with an error that names it.
//!
//! Then the admin API's scans over the same index (`bench_queries`).
//!
//! Run: `cargo bench --bench rules` (env `RULES_BENCH_TAGENTS` overrides the size).

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tagent_hub::model::{DisconnectReason, Status};
use tagent_hub::model::{HostFacts, Interner, Tagent};
use tagent_hub::registry::rules::{self, Proof};
use tagent_hub::registry::{Index, NoSessions, RegisterRequest, Secret};

#[path = "common/fixtures.rs"]
mod fixtures;
use fixtures::{PORT, host, one_group, primary, secondary};

const POOL: usize = 4096;
fn tagents() -> u64 {
    std::env::var("RULES_BENCH_TAGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn build_index(n: u64, interner: &Interner) -> Index {
    let mut index = Index::with_capacity(n, 2 * n as usize);
    let tenant = interner.intern("t");
    let user = interner.intern("root");
    let version = interner.intern("1.5.4");
    let os_type = interner.intern("linux");
    let os_version = interner.intern("CentOS Linux 7.9.2009_3.10.0-1160.el7.x86_64");
    let osbit = interner.intern("x86_64");
    for i in 1..=n {
        index.put(Tagent {
            id: i,
            tenant,
            port: PORT,
            ip: primary(i),
            ips: vec![primary(i), secondary(i)].into_boxed_slice(),
            name: format!("host-{i}").into(),
            host: HostFacts {
                user,
                version,
                os_type,
                os_version,
                osbit,
                pcpu: Some(4.0),
                mem: Some(7.6),
            },
            status: Status::Disconnected(DisconnectReason::NeverConnected),
            credential: None,
            credential_change_until: 0,
            runner_group: 1,
            runner: None,
            first_registered: 1_700_000_000_000,
            last_registered: 1_700_000_000_000,
            last_status_change: 1_700_000_000_000,
        });
    }
    index
}

fn request(tagent_id: Option<u64>, ip: IpAddr, ips: Vec<IpAddr>, i: u64) -> RegisterRequest {
    RegisterRequest {
        tenant: "t".into(),
        tagent_id,
        ip,
        port: PORT,
        ips,
        name: format!("host-{i}"),
        host: host(),
        credential: Some(Secret("{ENCRYPTED}0af3c1d2e4b5a69788".into())),
        token: None,
        source: ip,
    }
}

/// A small deterministic generator: the pools are the same on every run.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn bench_decide(c: &mut Criterion) {
    let n = tagents();
    let interner = Interner::default();
    let started = std::time::Instant::now();
    let index = build_index(n, &interner);
    eprintln!(
        "index of {n} tagents ({} ip entries) built in {:.2?}",
        index.ip_entries(),
        started.elapsed()
    );
    let groups = one_group(&["0.0.0.0/0", "::/0"]);
    let live = NoSessions;
    let now = 1_800_000_000_000;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut known = || 1 + rng.below(n);

    let reregister: Vec<_> = (0..POOL)
        .map(|_| known())
        .map(|i| request(Some(i), primary(i), vec![primary(i), secondary(i)], i))
        .collect();
    let lookup: Vec<_> = (0..POOL)
        .map(|_| known())
        .map(|i| request(None, primary(i), vec![primary(i), secondary(i)], i))
        .collect();
    let new: Vec<_> = (1..=POOL as u64)
        .map(|k| n + k)
        .map(|i| request(None, primary(i), vec![primary(i), secondary(i)], i))
        .collect();
    let refused: Vec<_> = (0..POOL)
        .map(|_| (known(), known()))
        .filter(|(i, j)| i != j)
        .map(|(i, j)| request(None, primary(i), vec![primary(i), primary(j)], i))
        .collect();

    let mut group = c.benchmark_group(format!("decide_{n}_tagents"));
    group.throughput(Throughput::Elements(1));
    let cases: [(&str, &[RegisterRequest], bool); 4] = [
        ("reregister_by_id", &reregister, true),
        ("register_by_lookup", &lookup, true),
        ("new_tagent", &new, true),
        ("refused_contains_other_primary", &refused, false),
    ];
    for (name, pool, ok) in cases {
        // Check the case decides the way its name says before timing it.
        for req in pool.iter().take(16) {
            let d = rules::decide(
                &index,
                &interner,
                &groups,
                &live,
                req,
                Proof::default(),
                now,
            );
            assert_eq!(d.is_ok(), ok, "{name}: {d:?}");
            if let Ok(d) = d {
                assert_eq!(d.created, name == "new_tagent", "{name}");
            }
        }
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                let req = &pool[next % pool.len()];
                next = next.wrapping_add(1);
                black_box(rules::decide(
                    black_box(&index),
                    &interner,
                    &groups,
                    &live,
                    req,
                    Proof::default(),
                    now,
                ))
            })
        });
    }
    group.finish();
}

/// The admin API's scans over the same index: counts over every tagent, a
/// page of a filter that matches few (it runs into the scan budget), and a
/// page of one that matches all.
fn bench_queries(c: &mut Criterion) {
    use tagent_hub::registry::query::{self, Filter};
    let n = tagents();
    let interner = Interner::default();
    let index = build_index(n, &interner);
    let live = NoSessions;
    let mut group = c.benchmark_group(format!("admin_queries_{n}_tagents"));
    group.sample_size(20);
    let all = Filter::default();
    let counts = query::counts(&index, &interner, &live, &all);
    assert_eq!(counts.all.total, n);
    group.bench_function("counts_all", |b| {
        b.iter(|| black_box(query::counts(&index, &interner, &live, &all)))
    });
    // The last /24 of the primaries: a page scans the budget and matches nothing.
    let sparse = Filter {
        ip: query::parse_ip_or_net(&format!("{}/24", primary(n))),
        ..Filter::default()
    };
    let page = query::list(&index, &interner, &live, &sparse, 0, 1000);
    assert!(page.items.is_empty() && page.next.is_some());
    group.bench_function("list_sparse_page", |b| {
        b.iter(|| black_box(query::list(&index, &interner, &live, &sparse, 0, 1000)))
    });
    let page = query::list(&index, &interner, &live, &all, 0, 1000);
    assert_eq!(page.items.len(), 1000);
    group.bench_function("list_page_of_1000", |b| {
        b.iter(|| black_box(query::list(&index, &interner, &live, &all, n / 2, 1000)))
    });
    group.finish();
}

criterion_group!(benches, bench_decide, bench_queries);
criterion_main!(benches);
