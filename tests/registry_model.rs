//! Property tests of the registration rules (SPEC §2.3) against a reference
//! model: plain `Vec`s and linear scans, written from the SPEC text alone.
//!
//! - `rules_match_the_model`: `decide` + `Index::put`, step by step.
//! - `batched_rules_match_the_model`: the same through an `Overlay`, in
//!   random batches, as the writer thread decides them.
//! - `registry_matches_the_model_and_survives_reopen`: the real `Registry`
//!   over a redb store on disk, reopened halfway and at the end.
//! - `three_hubs_match_the_model`: three registries (three hubs) over one
//!   PostgreSQL store, each registration sent to one of them at random.
//! - `concurrent_registrations_end_as_if_serial`: the same hubs, two or three
//!   registrations at the same moment on different hubs: the answers and the
//!   end state equal the model's for some order of them.
//!
//! The PostgreSQL tests need `TAGENT_HUB_TEST_DATABASE_URL` (`.ci/with-postgres`
//! sets it); without it they print that they were skipped.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use tagent_hub::model::{CredentialPrint, HostFacts, Runner, account_name};
use tagent_hub::model::{Interner, RunnerGroup, RunnerGroups, TagentId};
use tagent_hub::registry::index::Overlay;
use tagent_hub::registry::rules::{Decision, Proof, decide};
use tagent_hub::registry::{
    Index, IndexView, Liveness, RegisterRequest, Registry, Secret, to_stored,
};
use tagent_hub::store::{AccountKey, CredentialCipher, PgStore, RedbStore, StoredTagent};

// ---------------------------------------------------------------------------
// The world the sequences play in.

/// 6 IPv4 + 1 IPv6. Bit `i` of a `contained` mask is `POOL[i]`.
const POOL: [&str; 7] = [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.1.1",
    "10.0.1.2",
    "172.16.0.1",
    "192.168.5.5",
    "fd00::1",
];
const PORTS: [u16; 2] = [3939, 4040];
const TENANTS: [&str; 2] = ["t1", "t2"];

/// Runner groups in configured order: (id, has a runner, networks).
/// 10.0.0.x first matches group 2, which has no runner, so group 1 wins;
/// 10.0.1.x is group 1's too (first match, not longest prefix); 172.16.0.1
/// ends in group 3; 192.168.5.5 matches nothing.
const GROUPS: [(u32, bool, &[&str]); 3] = [
    (2, false, &["10.0.0.0/24", "172.16.0.0/12"]),
    (1, true, &["10.0.0.0/8"]),
    (
        3,
        true,
        &["fd00::/8", "10.0.1.0/24", "172.16.0.0/16", "::/0"],
    ),
];

fn pool(i: usize) -> IpAddr {
    POOL[i].parse().unwrap()
}

fn runner_groups() -> RunnerGroups {
    RunnerGroups {
        groups: GROUPS
            .iter()
            .map(|(id, with_runner, nets)| RunnerGroup {
                id: *id,
                name: format!("g{id}"),
                networks: nets.iter().map(|n| n.parse().unwrap()).collect(),
                runners: if *with_runner {
                    vec![Runner {
                        id: *id,
                        name: format!("r{id}"),
                        host: "127.0.0.1".into(),
                        port: 8888,
                        this_hub: false,
                    }]
                } else {
                    Vec::new()
                },
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------
// The reference model.

#[derive(Debug, Clone, PartialEq)]
struct MTagent {
    id: TagentId,
    tenant: String,
    port: u16,
    ip: IpAddr,
    ips: Vec<IpAddr>,
    group: u32,
    /// The fingerprint of the credential it registered with.
    credential: Option<CredentialPrint>,
}

/// Fingerprints as the writer makes them, under a fixed key.
fn print_of(req: &RegisterRequest) -> Option<CredentialPrint> {
    let cipher = CredentialCipher::from_hex(KEY).unwrap();
    req.credential.as_ref().map(|c| cipher.print(&c.0))
}

impl MTagent {
    fn lists(&self, ip: IpAddr) -> bool {
        self.ip == ip || self.ips.contains(&ip)
    }

    /// The primary ip and every contained ip, once each.
    fn all_ips(&self) -> Vec<IpAddr> {
        let mut all = vec![self.ip];
        for ip in &self.ips {
            if !all.contains(ip) {
                all.push(*ip);
            }
        }
        all
    }
}

#[derive(Debug, Clone, PartialEq)]
struct MAccount {
    tenant: String,
    ip: IpAddr,
    port: u16,
    credential: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok {
        id: TagentId,
        created: bool,
        group: u32,
    },
    Err(&'static str),
}

/// What one accepted registration does to accounts: the ips put, the ips deleted.
type AccountChange = (BTreeSet<IpAddr>, BTreeSet<IpAddr>);

#[derive(Debug, Clone)]
struct Model {
    tagents: Vec<MTagent>,
    accounts: Vec<MAccount>,
    next_id: TagentId,
}

/// Whether the network `net` ("a.b.c.d/len") contains `ip`: same family,
/// same first `len` bits. `/0` is every address of its family.
fn net_contains(net: &str, ip: IpAddr) -> bool {
    let (addr, len) = net.split_once('/').unwrap();
    let len: u32 = len.parse().unwrap();
    let (a, b, width) = match (addr.parse::<IpAddr>().unwrap(), ip) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    len == 0 || (a ^ b) >> (width - len) == 0
}

impl Model {
    fn new() -> Self {
        Model {
            tagents: Vec::new(),
            accounts: Vec::new(),
            next_id: 1,
        }
    }

    /// `lookup(ip, port)`: the tenant's tagents on `port` whose primary or contained ips include `ip`.
    fn lookup(&self, tenant: &str, port: u16, ip: IpAddr) -> Vec<TagentId> {
        self.tagents
            .iter()
            .filter(|t| t.tenant == tenant && t.port == port && t.lists(ip))
            .map(|t| t.id)
            .collect()
    }

    fn register(
        &mut self,
        req: &RegisterRequest,
        live: impl Fn(TagentId) -> bool,
    ) -> (Outcome, Option<AccountChange>) {
        let (tenant, port, ip) = (req.tenant.as_str(), req.port, req.ip);

        // Rule 2.
        let known = req.tagent_id.and_then(|id| {
            self.tagents
                .iter()
                .find(|t| t.id == id && t.tenant == tenant)
        });
        let chosen = match known {
            Some(t) if t.port == port && t.lists(ip) => Some(t.id),
            _ => {
                let found = self.lookup(tenant, port, ip);
                match found.len() {
                    0 => None,
                    1 => Some(found[0]),
                    _ => return (Outcome::Err("multiple_tagents"), None),
                }
            }
        };

        // Rule 3.
        if let Some(id) = chosen
            && live(id)
        {
            return (Outcome::Err("ip_conflict"), None);
        }

        // SPEC §6: a known tagent's credential, and its primary ip without
        // proof of it, change only in an open window (never opened here).
        let print = print_of(req);
        let held = chosen.and_then(|id| self.tagents.iter().find(|t| t.id == id));
        if let Some(t) = held
            && t.credential.is_some()
            && match print {
                None => true,
                Some(p) => t.credential != Some(p),
            }
        {
            return (Outcome::Err("pending"), None);
        }
        let credential = print.or(held.and_then(|t| t.credential));

        // Rule 4.
        let mut group = None;
        'scan: for (id, with_runner, nets) in GROUPS {
            for net in nets {
                if with_runner && net_contains(net, ip) {
                    group = Some(id);
                    break 'scan;
                }
            }
        }
        let Some(group) = group else {
            return (Outcome::Err("no_runner_group"), None);
        };

        let is_other_primary = |ip: IpAddr| {
            self.tagents
                .iter()
                .any(|t| Some(t.id) != chosen && t.tenant == tenant && t.port == port && t.ip == ip)
        };
        // Rule 5.
        if req.ips.iter().any(|ip| is_other_primary(*ip)) {
            return (Outcome::Err("contains_other_primary"), None);
        }
        // Rule 6.
        if is_other_primary(ip) {
            return (Outcome::Err("primary_taken"), None);
        }

        // Rule 8: the record moves to the new primary ip.
        let new = MTagent {
            id: chosen.unwrap_or(self.next_id),
            tenant: tenant.to_owned(),
            port,
            ip,
            ips: req.ips.clone(),
            group,
            credential,
        };
        let old_ips = match chosen {
            Some(id) => {
                let pos = self.tagents.iter().position(|t| t.id == id).unwrap();
                let old = std::mem::replace(&mut self.tagents[pos], new.clone());
                old.all_ips()
            }
            None => {
                self.next_id += 1;
                self.tagents.push(new.clone());
                Vec::new()
            }
        };

        // Rule 7.
        let put: BTreeSet<IpAddr> = new.all_ips().into_iter().collect();
        let mut delete = BTreeSet::new();
        for ip in old_ips {
            if !new.lists(ip) && self.lookup(tenant, port, ip).is_empty() {
                delete.insert(ip);
            }
        }
        self.accounts
            .retain(|a| !(a.tenant == tenant && a.port == port && delete.contains(&a.ip)));
        let credential = req.credential.as_ref().map(|c| c.0.clone());
        for ip in &put {
            match self
                .accounts
                .iter_mut()
                .find(|a| a.tenant == tenant && a.port == port && a.ip == *ip)
            {
                Some(a) => {
                    if credential.is_some() {
                        a.credential = credential.clone();
                    }
                }
                None => self.accounts.push(MAccount {
                    tenant: tenant.to_owned(),
                    ip: *ip,
                    port,
                    credential: credential.clone(),
                }),
            }
        }

        let outcome = Outcome::Ok {
            id: new.id,
            created: chosen.is_none(),
            group,
        };
        (outcome, Some((put, delete)))
    }

    /// (tenant, account name) of every account, sorted.
    fn account_names(&self) -> Vec<(String, String)> {
        let mut names: Vec<_> = self
            .accounts
            .iter()
            .map(|a| (a.tenant.clone(), account_name(a.ip, a.port)))
            .collect();
        names.sort();
        names
    }

    fn accounts(&self) -> BTreeSet<(String, IpAddr, u16)> {
        self.accounts
            .iter()
            .map(|a| (a.tenant.clone(), a.ip, a.port))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Random sequences.

#[derive(Debug, Clone)]
enum IdChoice {
    Absent,
    /// The id of the model's n-th tagent (mod their number), whatever its
    /// tenant, port or ips: often a real one, sometimes another tenant's.
    Existing(usize),
    /// An id nobody has.
    Stale,
    /// A re-registration: the n-th tagent's id, tenant and port; with
    /// `true`, from one of its contained ips (a primary ip move, rule 8).
    Again(usize, bool),
}

#[derive(Debug, Clone)]
struct Step {
    tenant: usize,
    port: usize,
    primary: usize,
    contained: u8,
    id: IdChoice,
    /// Bit `id % 64` set: that tagent holds a live session (rule 3).
    live: u64,
    credential: Option<u8>,
    /// Whether the writer's batch ends after this step.
    batch_end: bool,
}

fn step() -> impl Strategy<Value = Step> {
    let id = prop_oneof![
        2 => Just(IdChoice::Absent),
        3 => (0usize..64).prop_map(IdChoice::Existing),
        1 => Just(IdChoice::Stale),
        3 => (0usize..64, any::<bool>()).prop_map(|(n, moves)| IdChoice::Again(n, moves)),
    ];
    // Mostly about one contained ip in four, so that rule 5 does not refuse everything.
    let contained = prop_oneof![
        1 => Just(0u8),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| a & b & 0x7f),
        1 => any::<u8>().prop_map(|a| a & 0x7f),
    ];
    let live = prop_oneof![3 => Just(0u64), 1 => any::<u64>()];
    (
        0..TENANTS.len(),
        0..PORTS.len(),
        0..POOL.len(),
        contained,
        id,
        live,
        proptest::option::of(0u8..4),
        any::<bool>(),
    )
        .prop_map(
            |(tenant, port, primary, contained, id, live, credential, batch_end)| Step {
                tenant,
                port,
                primary,
                contained,
                id,
                live,
                credential,
                batch_end,
            },
        )
}

fn steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(step(), 1..=max)
}

fn is_live(mask: u64, id: TagentId) -> bool {
    mask >> (id % 64) & 1 == 1
}

fn request(s: &Step, model: &Model) -> RegisterRequest {
    let nth = |n: usize| model.tagents.get(n % model.tagents.len().max(1));
    let mut tenant = TENANTS[s.tenant];
    let mut port = PORTS[s.port];
    let mut ip = pool(s.primary);
    let tagent_id = match s.id {
        IdChoice::Absent => None,
        IdChoice::Existing(n) => nth(n).map(|t| t.id),
        IdChoice::Stale => Some(model.next_id + 1000),
        IdChoice::Again(n, moves) => nth(n).map(|t| {
            (tenant, port) = (t.tenant.as_str(), t.port);
            if moves && !t.ips.is_empty() {
                ip = t.ips[s.primary % t.ips.len()];
            }
            t.id
        }),
    };
    RegisterRequest {
        tenant: tenant.to_owned(),
        tagent_id,
        ip,
        port,
        ips: (0..POOL.len())
            .filter(|i| s.contained >> i & 1 == 1)
            .map(pool)
            .collect(),
        name: format!("host-{}", s.primary),
        host: HostFacts {
            user: "root".into(),
            version: "1.0".into(),
            os_type: "Linux".into(),
            os_version: "9".into(),
            osbit: "x86_64".into(),
            pcpu: None,
            mem: None,
        },
        credential: s
            .credential
            .map(|c| Secret(format!("{{ENCRYPTED}}{c:02x}"))),
        token: None,
        source: ip,
    }
}

// ---------------------------------------------------------------------------
// Comparing the code with the model.

struct Mask(u64);

impl Liveness for Mask {
    fn is_live(&self, id: TagentId) -> bool {
        is_live(self.0, id)
    }
}

fn outcome_of(r: &Result<Decision, tagent_hub::registry::RegisterError>) -> Outcome {
    match r {
        Ok(d) => Outcome::Ok {
            id: d.tagent.id,
            created: d.created,
            group: d.tagent.runner_group,
        },
        // The rules refuse a new credential; the writer then keeps the
        // registration pending for an operator (the outcome the hub answers).
        Err(e) if e.kind() == "credential_change" => Outcome::Err("pending"),
        Err(e) => Outcome::Err(e.kind()),
    }
}

/// Every tagent and every lookup the view answers equals the model's.
fn check_view(
    view: &impl IndexView,
    interner: &Interner,
    model: &Model,
) -> Result<(), TestCaseError> {
    for m in &model.tagents {
        let t = view.get(m.id);
        prop_assert!(t.is_some(), "tagent {} missing", m.id);
        let t = t.unwrap();
        let got = MTagent {
            id: t.id,
            tenant: interner.resolve(t.tenant).to_string(),
            port: t.port,
            ip: t.ip,
            ips: t.ips.to_vec(),
            group: t.runner_group,
            credential: t.credential,
        };
        prop_assert_eq!(&got, m);
    }
    for id in 0..model.next_id + 2 {
        if !model.tagents.iter().any(|t| t.id == id) {
            prop_assert!(view.get(id).is_none(), "tagent {} should not exist", id);
        }
    }
    prop_assert_eq!(view.next_id(), model.next_id);
    for tenant in TENANTS {
        let sym = interner.intern(tenant);
        for port in PORTS {
            for ip in POOL.map(|ip| ip.parse::<IpAddr>().unwrap()) {
                let got = view.lookup(sym, port, ip).to_vec();
                prop_assert_eq!(
                    got,
                    model.lookup(tenant, port, ip),
                    "lookup {} {} {}",
                    tenant,
                    port,
                    ip
                );
            }
        }
    }
    Ok(())
}

fn check_index(index: &Index, interner: &Interner, model: &Model) -> Result<(), TestCaseError> {
    check_view(index, interner, model)?;
    prop_assert_eq!(index.len(), model.tagents.len());
    let ids: Vec<TagentId> = index.iter().map(|t| t.id).collect();
    let mut want: Vec<TagentId> = model.tagents.iter().map(|t| t.id).collect();
    want.sort();
    prop_assert_eq!(ids, want);
    Ok(())
}

/// Decide `req` against `view`, compare with the model, and apply the
/// decision's account changes to `accounts`. Returns the decision to apply.
fn step_and_compare(
    view: &impl IndexView,
    interner: &Interner,
    groups: &RunnerGroups,
    model: &mut Model,
    accounts: &mut BTreeSet<(String, IpAddr, u16)>,
    s: &Step,
) -> Result<Option<Decision>, TestCaseError> {
    let req = request(s, model);
    let got = decide(
        view,
        interner,
        groups,
        &Mask(s.live),
        &req,
        Proof::of(print_of(&req)),
        1,
    );
    let (want, change) = model.register(&req, |id| is_live(s.live, id));
    prop_assert_eq!(outcome_of(&got), want, "request {:?}", req);
    let Ok(d) = got else { return Ok(None) };
    let (put, delete) = change.unwrap();
    let got_put: BTreeSet<IpAddr> = d.accounts_put.iter().copied().collect();
    let got_delete: BTreeSet<IpAddr> = d.accounts_delete.iter().copied().collect();
    prop_assert_eq!(
        got_put.len(),
        d.accounts_put.len(),
        "accounts_put repeats an ip"
    );
    prop_assert_eq!(got_put, put, "accounts_put of {:?}", req);
    prop_assert_eq!(got_delete, delete, "accounts_delete of {:?}", req);
    for ip in &d.accounts_delete {
        accounts.remove(&(req.tenant.clone(), *ip, req.port));
    }
    for ip in &d.accounts_put {
        accounts.insert((req.tenant.clone(), *ip, req.port));
    }
    prop_assert_eq!(&*accounts, &model.accounts());
    Ok(Some(d))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rules_match_the_model(steps in steps(40)) {
        let groups = runner_groups();
        let interner = Interner::default();
        let mut index = Index::new();
        let mut model = Model::new();
        let mut accounts = BTreeSet::new();
        for s in &steps {
            let d = step_and_compare(&index, &interner, &groups, &mut model, &mut accounts, s)?;
            if let Some(d) = d {
                index.put(d.tagent);
            }
            check_index(&index, &interner, &model)?;
        }
    }

    #[test]
    fn batched_rules_match_the_model(steps in steps(40)) {
        let groups = runner_groups();
        let interner = Interner::default();
        let mut index = Index::new();
        let mut model = Model::new();
        let mut accounts = BTreeSet::new();
        let mut rest = steps.as_slice();
        while !rest.is_empty() {
            let end = rest.iter().position(|s| s.batch_end).map_or(rest.len(), |i| i + 1);
            let (batch, after) = rest.split_at(end);
            rest = after;
            let mut overlay = Overlay::new(&index);
            for s in batch {
                let d = step_and_compare(&overlay, &interner, &groups, &mut model, &mut accounts, s)?;
                if let Some(d) = d {
                    overlay.set(d.tagent.id, Some(d.tagent));
                }
                check_view(&overlay, &interner, &model)?;
            }
            let next_id = overlay.next_id();
            for (id, t) in overlay.into_changes() {
                match t {
                    Some(t) => index.put(t),
                    None => {
                        index.remove(id);
                    }
                }
            }
            index.bump_next_id(next_id);
            check_index(&index, &interner, &model)?;
        }
    }
}

// ---------------------------------------------------------------------------
// Through the real registry and store.

const KEY: &str = "4b1d000000000000000000000000000000000000000000000000000000000001";

struct SharedMask(Arc<AtomicU64>);

impl Liveness for SharedMask {
    fn is_live(&self, id: TagentId) -> bool {
        is_live(self.0.load(Ordering::SeqCst), id)
    }
}

fn open(dir: &std::path::Path, live: &Arc<AtomicU64>) -> Registry {
    let store = RedbStore::open(dir, CredentialCipher::from_hex(KEY).unwrap(), 1 << 20).unwrap();
    let registry = Registry::open(Arc::new(store), runner_groups()).unwrap();
    registry.set_liveness(Arc::new(SharedMask(live.clone())));
    registry
}

/// Every tagent as stored, by id, and the next id.
fn snapshot(registry: &Registry) -> (Vec<StoredTagent>, TagentId) {
    let index = registry.index();
    let tagents = index
        .iter()
        .map(|t| to_stored(t, registry.interner()))
        .collect();
    (tagents, index.next_id())
}

fn check_registry(registry: &Registry, model: &Model) -> Result<(), TestCaseError> {
    check_index(&registry.index(), registry.interner(), model)?;
    let mut names = registry.store().account_names().unwrap();
    names.sort();
    prop_assert_eq!(names, model.account_names());
    for a in &model.accounts {
        let got = registry
            .store()
            .credential(&a.tenant, a.ip, a.port)
            .unwrap();
        prop_assert_eq!(&got, &a.credential, "credential of {:?}", a);
    }
    // One batch answers every account in order, and None for one never made.
    let absent = ("no-such-tenant", IpAddr::from([192, 0, 2, 1]), 1);
    let keys: Vec<AccountKey<'_>> = model
        .accounts
        .iter()
        .map(|a| (a.tenant.as_str(), a.ip, a.port))
        .chain([absent])
        .collect();
    let got: Vec<Option<String>> = registry
        .store()
        .credentials(&keys)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let want: Vec<Option<String>> = model
        .accounts
        .iter()
        .map(|a| a.credential.clone())
        .chain([None])
        .collect();
    prop_assert_eq!(got, want);
    Ok(())
}

/// Run `steps` through `registry.register`, comparing each answer with the model.
fn run_steps(
    rt: &tokio::runtime::Runtime,
    registry: &Registry,
    live: &AtomicU64,
    model: &mut Model,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    for s in steps {
        let req = request(s, model);
        live.store(s.live, Ordering::SeqCst);
        let got = rt.block_on(registry.register(req.clone()));
        let (want, _) = model.register(&req, |id| is_live(s.live, id));
        let got = match got {
            Ok(r) => Outcome::Ok {
                id: r.id,
                created: r.created,
                group: r.group.id,
            },
            Err(e) => Outcome::Err(e.kind()),
        };
        prop_assert_eq!(got, want, "request {:?}", req);
    }
    Ok(())
}

/// Close `registry`, open the store again, and check nothing changed.
fn reopen(
    rt: &tokio::runtime::Runtime,
    registry: Registry,
    dir: &std::path::Path,
    live: &Arc<AtomicU64>,
    model: &Model,
) -> Result<Registry, TestCaseError> {
    let before = snapshot(&registry);
    rt.block_on(registry.shutdown());
    drop(registry);
    let registry = open(dir, live);
    prop_assert_eq!(snapshot(&registry), before);
    check_registry(&registry, model)?;
    Ok(registry)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn registry_matches_the_model_and_survives_reopen(steps in steps(40), split in any::<prop::sample::Index>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let live = Arc::new(AtomicU64::new(0));
        let mut model = Model::new();
        let (first, second) = steps.split_at(split.index(steps.len() + 1));

        let registry = open(dir.path(), &live);
        run_steps(&rt, &registry, &live, &mut model, first)?;
        check_registry(&registry, &model)?;
        let registry = reopen(&rt, registry, dir.path(), &live, &model)?;
        run_steps(&rt, &registry, &live, &mut model, second)?;
        check_registry(&registry, &model)?;
        let registry = reopen(&rt, registry, dir.path(), &live, &model)?;
        rt.block_on(registry.shutdown());
    }
}

// ---------------------------------------------------------------------------
// Several hubs over one PostgreSQL store.

const HUBS: usize = 3;

fn open_pg(url: &str, schema: &str, live: &Arc<AtomicU64>) -> Registry {
    let opts = common::pg_options(url, schema);
    let store = PgStore::open(&opts, CredentialCipher::from_hex(KEY).unwrap()).unwrap();
    let registry = Registry::open(Arc::new(store), runner_groups()).unwrap();
    registry.set_liveness(Arc::new(SharedMask(live.clone())));
    registry
}

fn answer(
    r: Result<tagent_hub::registry::Registered, tagent_hub::registry::RegisterError>,
) -> Outcome {
    match r {
        Ok(r) => Outcome::Ok {
            id: r.id,
            created: r.created,
            group: r.group.id,
        },
        Err(e) => Outcome::Err(e.kind()),
    }
}

/// Every hub's index, once refreshed, and the shared accounts equal the model.
fn check_hubs(
    rt: &tokio::runtime::Runtime,
    hubs: &[Registry],
    model: &Model,
) -> Result<(), TestCaseError> {
    for hub in hubs {
        rt.block_on(hub.refresh());
        check_registry(hub, model)?;
    }
    Ok(())
}

/// Shut the hubs down, open the store again as a new hub, and compare.
fn reopen_pg(
    rt: &tokio::runtime::Runtime,
    hubs: Vec<Registry>,
    url: &str,
    schema: &str,
    live: &Arc<AtomicU64>,
    model: &Model,
) -> Result<(), TestCaseError> {
    let before = snapshot(&hubs[0]);
    for hub in hubs {
        rt.block_on(hub.shutdown());
    }
    let again = open_pg(url, schema, live);
    prop_assert_eq!(snapshot(&again), before);
    check_registry(&again, model)?;
    rt.block_on(again.shutdown());
    Ok(())
}

/// Every order of `0..n`.
fn orders(n: usize) -> Vec<Vec<usize>> {
    if n <= 1 {
        return vec![(0..n).collect()];
    }
    let mut out = Vec::new();
    for first in 0..n {
        for rest in orders(n - 1) {
            let mut o = vec![first];
            o.extend(rest.into_iter().map(|i| if i >= first { i + 1 } else { i }));
            out.push(o);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn three_hubs_match_the_model(
        steps in steps(40),
        at in proptest::collection::vec(0..HUBS, 40),
    ) {
        let Some((url, schema)) = common::postgres("three_hubs_match_the_model") else {
            return Ok(());
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let live = Arc::new(AtomicU64::new(0));
        let hubs: Vec<Registry> = (0..HUBS).map(|_| open_pg(&url, &schema, &live)).collect();
        let mut model = Model::new();
        for (i, s) in steps.iter().enumerate() {
            let req = request(s, &model);
            live.store(s.live, Ordering::SeqCst);
            let got = answer(rt.block_on(hubs[at[i]].register(req.clone())));
            let (want, _) = model.register(&req, |id| is_live(s.live, id));
            prop_assert_eq!(got, want, "request {:?} on hub {}", req, at[i]);
        }
        check_hubs(&rt, &hubs, &model)?;
        reopen_pg(&rt, hubs, &url, &schema, &live, &model)?;
    }

    #[test]
    fn concurrent_registrations_end_as_if_serial(
        rounds in proptest::collection::vec(proptest::collection::vec(step(), 2..=HUBS), 1..12),
    ) {
        let Some((url, schema)) = common::postgres("concurrent_registrations_end_as_if_serial") else {
            return Ok(());
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let live = Arc::new(AtomicU64::new(0));
        let hubs: Vec<Registry> = (0..HUBS).map(|_| open_pg(&url, &schema, &live)).collect();
        let mut model = Model::new();
        for round in &rounds {
            let mask = round[0].live;
            live.store(mask, Ordering::SeqCst);
            let reqs: Vec<RegisterRequest> = round.iter().map(|s| request(s, &model)).collect();
            let got: Vec<Outcome> = rt
                .block_on(futures_util::future::join_all(
                    reqs.iter().enumerate().map(|(i, r)| hubs[i].register(r.clone())),
                ))
                .into_iter()
                .map(answer)
                .collect();
            // Some order of the requests gives exactly these answers and
            // the state the store holds now.
            let candidates: Vec<Model> = orders(reqs.len())
                .into_iter()
                .filter_map(|order| {
                    let mut m = model.clone();
                    let mut want = vec![Outcome::Err(""); reqs.len()];
                    for i in order {
                        want[i] = m.register(&reqs[i], |id| is_live(mask, id)).0;
                    }
                    (want == got).then_some(m)
                })
                .collect();
            prop_assert!(!candidates.is_empty(), "no order of {:?} answers {:?}", reqs, got);
            rt.block_on(hubs[0].refresh());
            let now = candidates
                .into_iter()
                .find(|m| check_registry(&hubs[0], m).is_ok());
            prop_assert!(now.is_some(), "no order of {:?} leaves the store as it is", reqs);
            model = now.unwrap();
        }
        check_hubs(&rt, &hubs, &model)?;
        reopen_pg(&rt, hubs, &url, &schema, &live, &model)?;
    }
}
