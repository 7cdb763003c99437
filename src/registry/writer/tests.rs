//! Each stage of the writer alone, then the whole writer over a store whose
//! disk fills up on demand: the failed-commit path in every `cargo test`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::decide::{Context, Decided, decide};
use super::enroll::{Enrollment, PolicyConfig};
use super::{Job, answer, apply, commit, publish};
use crate::model::{
    DisconnectReason, EnrollToken, Interner, Pending, Policy, Runner, RunnerGroup, RunnerGroups,
    Status, TagentId, account_name,
};
use crate::registry::events::{Change, EventLog};
use crate::registry::index::{Index, IndexView};
use crate::registry::liveness::{Liveness, Mine, NoSessions, Sessions};
use crate::registry::rules::tests::reg;
use crate::registry::{
    ChangeError, RegisterError, RegisterRequest, Registered, Registry, Secret, StatusChange,
    to_stored,
};
use crate::store::faulty_disk::Faults;
use crate::store::{
    AccountOp, CredentialCipher, RedbStore, RegistryStore, ScanItem, StoreError, StoredTagent,
    WriteTxn,
};

const KEY: &str = "4b1d000000000000000000000000000000000000000000000000000000000001";
const NOW: u64 = 1_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One group over 10/8, with runners 1 (this hub's, when it holds
/// [`Mine::Runners`]`([1])`) and 2 (another hub's).
fn groups() -> RunnerGroups {
    let runner = |id, port| Runner {
        id,
        name: format!("r{id}"),
        host: "10.255.0.1".into(),
        port,
        this_hub: false,
    };
    RunnerGroups {
        groups: vec![RunnerGroup {
            id: 1,
            name: "g1".into(),
            networks: vec!["10.0.0.0/8".parse().unwrap()],
            runners: vec![runner(1, 8888), runner(2, 8889)],
        }],
    }
}

fn req(primary: &str, contained: &[&str]) -> Box<RegisterRequest> {
    let mut r = reg("acme", None, primary, 3939, &contained.join(","));
    r.credential = Some(Secret(format!("secret-{primary}")));
    Box::new(r)
}

type Reply<T> = oneshot::Receiver<Result<T, RegisterError>>;

fn register(primary: &str, contained: &[&str]) -> (Job, Reply<Registered>) {
    let (reply, rx) = oneshot::channel();
    let job = Job::Register {
        req: req(primary, contained),
        reply,
    };
    (job, rx)
}

fn delete(id: TagentId) -> (Job, oneshot::Receiver<Result<(), ChangeError>>) {
    let (reply, rx) = oneshot::channel();
    (Job::Delete { id, reply }, rx)
}

fn status(id: TagentId, status: Status, runner: Option<u32>) -> StatusChange {
    StatusChange {
        id,
        status,
        at: NOW + 1,
        runner,
    }
}

const RUNNER_LOST: Status = Status::Disconnected(DisconnectReason::RunnerLost);

/// Tokens and pending registrations as a transaction reads them: what the
/// batch's [`Enrollment`] reads through; nothing is committed here.
#[derive(Default)]
struct Enrolled {
    tokens: std::collections::HashMap<String, EnrollToken>,
    pending: std::collections::HashMap<String, Pending>,
}

impl WriteTxn for Enrolled {
    fn changes(&mut self) -> Result<crate::store::Changes, StoreError> {
        Ok(Default::default())
    }
    fn token(&mut self, id: &str) -> Result<Option<EnrollToken>, StoreError> {
        Ok(self.tokens.get(id).cloned())
    }
    fn pending(&mut self, key: &str) -> Result<Option<Pending>, StoreError> {
        Ok(self.pending.get(key).cloned())
    }
    fn pending_len(&mut self) -> Result<u64, StoreError> {
        Ok(self.pending.len() as u64)
    }
    fn pending_stale(&mut self, before_ms: u64) -> Result<Vec<String>, StoreError> {
        Ok(crate::store::redb::stale(
            self.pending.values().cloned().collect(),
            before_ms,
        ))
    }
    fn commit(self: Box<Self>, _: &crate::store::WriteBatch<'_>) -> Result<(), StoreError> {
        unreachable!("stages are run alone here")
    }
}

/// The state stages run against.
struct World {
    index: Index,
    interner: Interner,
    groups: RunnerGroups,
    mine: Mine,
    sessions: Sessions,
    cipher: crate::store::CredentialCipher,
    enrolled: Enrolled,
    policy: PolicyConfig,
    /// The clock of the batch.
    now: u64,
}

impl World {
    fn new(mine: Mine) -> World {
        let mut index = Index::new();
        index.bump_next_id(1);
        World {
            index,
            interner: Interner::default(),
            groups: groups(),
            mine,
            sessions: Sessions::default(),
            cipher: crate::store::CredentialCipher::from_hex(&"00".repeat(32)).unwrap(),
            enrolled: Enrolled::default(),
            policy: PolicyConfig::default(),
            now: NOW,
        }
    }

    fn decide(&mut self, jobs: Vec<Job>) -> Decided {
        let cx = Context {
            interner: &self.interner,
            groups: &self.groups,
            local: &NoSessions,
            mine: &self.mine,
            cipher: &self.cipher,
            now: self.now,
        };
        let enroll = Enrollment::new(&mut self.enrolled, &self.policy, self.now);
        decide(&self.index, &cx, enroll, jobs)
    }

    /// Decide `jobs` and apply the result as a committed batch would be.
    fn run(&mut self, jobs: Vec<Job>) -> Decided {
        let mut d = self.decide(jobs);
        let changes = std::mem::take(&mut d.changes);
        apply::apply(
            &mut self.index,
            &self.sessions,
            &self.mine,
            changes,
            d.next_id,
        );
        d
    }
}

#[test]
fn decide_sees_the_batch_s_earlier_decisions() {
    let mut w = World::new(Mine::All);
    let (a, _ra) = register("10.0.0.1", &["10.0.0.2"]);
    // The same host again in the same batch: the overlay resolves it to
    // the tagent the first registration created.
    let (b, _rb) = register("10.0.0.1", &["10.0.0.2"]);
    // A status change for the tagent created above.
    let s = Job::Status(vec![status(1, Status::Connected, Some(1))]);
    let d = w.decide(vec![a, b, s]);

    assert_eq!(d.accepted.len(), 2);
    assert!(d.accepted[0].decision.created);
    assert!(!d.accepted[1].decision.created);
    assert_eq!(d.accepted[1].decision.tagent.id, 1);
    assert_eq!(d.transitions, vec![(1, Status::Connected, NOW + 1)]);
    assert_eq!(d.status_seen.len(), 1);
    assert_eq!((d.next_id, d.next_id_changed), (2, true));
    let [(1, Some(t))] = d.changes.as_slice() else {
        panic!("one changed record: {:?}", d.changes.len());
    };
    assert_eq!((t.status, t.runner), (Status::Connected, Some(1)));
    // Nothing is applied by deciding.
    assert!(w.index.is_empty());
}

#[test]
fn rule_3_across_hubs_follows_the_batch() {
    let mut w = World::new(Mine::Runners(vec![1]));
    let (a, _ra) = register("10.0.0.1", &[]);
    w.run(vec![
        a,
        Job::Status(vec![status(1, Status::Connected, Some(2))]),
    ]);
    // Connected through another hub's runner: live everywhere.
    let (again, mut refused) = register("10.0.0.1", &[]);
    let (del, mut not_deleted) = delete(1);
    let d = w.decide(vec![again, del]);
    assert!(d.accepted.is_empty() && d.deleted.is_empty());
    assert!(matches!(
        refused.try_recv(),
        Ok(Err(RegisterError::IpConflict { id: 1, .. }))
    ));
    assert!(matches!(
        not_deleted.try_recv(),
        Ok(Err(ChangeError::Connected(1)))
    ));

    // A disconnect from this hub does not end a session another hub holds.
    let d = w.decide(vec![Job::Status(vec![status(
        1,
        Status::Disconnected(DisconnectReason::Eof),
        None,
    )])]);
    assert!(d.transitions.is_empty());

    // That hub's lease lapses (runner-lost), earlier in the same batch as a
    // registration: the registration sees it, and succeeds.
    let (again, _r) = register("10.0.0.1", &[]);
    let d = w.decide(vec![
        Job::Status(vec![status(1, RUNNER_LOST, Some(2))]),
        again,
    ]);
    assert_eq!(d.transitions, vec![(1, RUNNER_LOST, NOW + 1)]);
    assert_eq!(d.accepted.len(), 1);
}

#[test]
fn the_batch_writes_records_accounts_and_the_next_id() {
    let mut w = World::new(Mine::All);
    let (a, _ra) = register("10.0.0.1", &["10.0.0.2"]);
    let (b, _rb) = register("10.0.0.9", &[]);
    w.run(vec![a, b]);
    // Tagent 1 drops 10.0.0.2; tagent 2 is deleted.
    let (a, _ra) = register("10.0.0.1", &[]);
    let (del, _rd) = delete(2);
    let d = w.decide(vec![a, del]);
    let batch = commit::batch(&d, &w.interner);

    assert_eq!(batch.tagents_put.len(), 1);
    assert_eq!(batch.tagents_put[0].id, 1);
    assert_eq!(batch.tagents_delete, vec![2]);
    assert_eq!(batch.next_id, None, "no new id handed out");
    let ops: Vec<String> = batch
        .accounts
        .iter()
        .map(|op| match op {
            AccountOp::Put(p) => format!("put {} {:?}", p.ip, p.credential),
            AccountOp::Delete { ip, .. } => format!("delete {ip}"),
        })
        .collect();
    assert_eq!(
        ops,
        [
            "delete 10.0.0.2",
            "put 10.0.0.1 Some(\"secret-10.0.0.1\")",
            "delete 10.0.0.9",
        ]
    );
}

#[test]
fn apply_puts_removes_and_tracks_other_hubs_sessions() {
    let mut w = World::new(Mine::Runners(vec![1]));
    let (a, _ra) = register("10.0.0.1", &[]);
    let (b, _rb) = register("10.0.0.2", &[]);
    w.run(vec![a, b]);
    assert_eq!((w.index.len(), w.index.next_id()), (2, 3));
    w.run(vec![Job::Status(vec![
        status(1, Status::Connected, Some(2)),
        status(2, Status::Connected, Some(1)),
    ])]);
    assert!(w.sessions.is_live(1));
    assert!(!w.sessions.is_live(2), "this hub's own, and not live here");
    w.run(vec![
        Job::Status(vec![status(1, RUNNER_LOST, Some(2))]),
        delete(2).0,
    ]);
    assert!(!w.sessions.is_live(1));
    assert_eq!(w.index.get(1).unwrap().status, RUNNER_LOST);
    assert!(w.index.get(2).is_none());
}

#[test]
fn answers_after_a_commit_and_after_a_failed_one() {
    let mut w = World::new(Mine::All);
    let (a, mut ra) = register("10.0.0.1", &[]);
    let d = w.decide(vec![a]);
    answer::committed(
        d.accepted, d.deleted, d.opened, d.refused, d.enrolled, &w.groups,
    );
    let ok = ra.try_recv().unwrap().unwrap();
    assert_eq!((ok.id, ok.created, ok.group.id), (1, true, 1));

    let (a, mut ra) = register("10.0.0.1", &[]);
    let s = status(1, Status::Connected, None);
    let d = w.decide(vec![a, Job::Status(vec![s])]);
    let e = crate::store::StoreError::from(redb::StorageError::Io(
        std::io::Error::from_raw_os_error(libc::ENOSPC),
    ));
    let carried = answer::commit_failed(d, &e);
    assert_eq!(carried, vec![s], "status changes go again");
    match ra.try_recv().unwrap() {
        Err(RegisterError::Store(e)) => assert!(e.is_io(), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn publish_tells_watchers_in_order() {
    let mut w = World::new(Mine::All);
    let events = EventLog::default();
    let mut live = events.subscribe(None).live;
    let (a, _ra) = register("10.0.0.1", &[]);
    let (b, _rb) = register("10.0.0.2", &[]);
    w.run(vec![a, b]);
    let (del, _rd) = delete(2);
    let d = w.run(vec![
        del,
        Job::Status(vec![status(1, Status::Connected, None)]),
    ]);
    publish::publish(
        &events,
        &w.index,
        &d.accepted,
        &d.transitions,
        &d.deleted,
        NOW,
    );
    let mut got = Vec::new();
    while let Ok(n) = live.try_recv() {
        got.push((n.event.tagent_id, n.event.change));
    }
    assert_eq!(got, vec![(1, Change::Connected), (2, Change::Deleted)]);
}

// ---------------------------------------------------------------------------
// The whole writer over a disk that fills up.

/// Every tagent and account the store holds, and its next id.
fn stored(store: &dyn RegistryStore) -> (Vec<StoredTagent>, TagentId, Vec<(String, String)>) {
    let mut tagents = Vec::new();
    let mut next_id = 0;
    store
        .scan(&mut |item| {
            match item {
                ScanItem::Info { next_id: n, .. } => next_id = n,
                ScanItem::Tagent(t) => tagents.push(t),
            }
            Ok(())
        })
        .unwrap();
    let mut accounts = store.account_names().unwrap();
    accounts.sort();
    (tagents, next_id, accounts)
}

/// The same, from the index: what the store must hold.
fn indexed(registry: &Registry) -> (Vec<StoredTagent>, TagentId, Vec<(String, String)>) {
    let index = registry.index();
    let interner = registry.interner();
    let tagents = index.iter().map(|t| to_stored(t, interner)).collect();
    let accounts: BTreeSet<(String, String)> = index
        .iter()
        .flat_map(|t| {
            let tenant = interner.resolve(t.tenant).to_string();
            t.all_ips()
                .map(move |(_, ip)| (tenant.clone(), account_name(ip, t.port)))
        })
        .collect();
    (tagents, index.next_id(), accounts.into_iter().collect())
}

#[track_caller]
fn assert_index_is_store(registry: &Registry) {
    assert_eq!(indexed(registry), stored(registry.store().as_ref()));
}

#[test]
fn a_failed_commit_leaves_the_index_as_the_store_is_and_the_store_recovers() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let cipher = CredentialCipher::from_hex(KEY).unwrap();
    let store = RedbStore::open_faulty(dir.path(), cipher, faults.clone()).unwrap();
    let registry = Registry::open(Arc::new(store), groups()).unwrap();
    let reg = |primary: &str| rt.block_on(registry.register(*req(primary, &[])));

    let first = reg("10.0.0.1").unwrap().id;
    reg("10.0.0.2").unwrap();
    assert_index_is_store(&registry);
    let before = indexed(&registry);

    // The disk fills up. A status change and a registration: neither can
    // be stored; the registration is told why.
    faults.fill();
    let connected = status(first, Status::Connected, None);
    assert!(rt.block_on(registry.report_status_async(vec![connected])));
    match reg("10.0.0.3") {
        Err(RegisterError::Store(e)) => {
            assert!(e.is_io(), "{e:?}");
            assert!(
                RegisterError::Store(e.clone())
                    .to_string()
                    .contains("not stored"),
                "{e}"
            );
        }
        other => panic!("a full disk must refuse: {other:?}"),
    }
    let gone = rt.block_on(registry.delete(2));
    assert!(
        matches!(gone, Err(ChangeError::Store(ref e)) if e.is_io()),
        "{gone:?}"
    );
    assert!(faults.refused() > 0);
    // Nothing of it reached the index: it is what the store last held.
    // (redb itself refuses reads until the file is reopened.)
    assert_eq!(indexed(&registry), before);
    let unreadable = registry.store().account_names();
    assert!(
        unreadable.as_ref().is_err_and(|e| e.is_io()),
        "{unreadable:?}"
    );
    assert_eq!(registry.tagent(first).unwrap().status, before.0[0].status);

    // Space is back: the next commit reopens the file and succeeds; the
    // status change held back goes with it, the refused registration
    // stored nothing (the next id was never handed out).
    faults.free();
    let third = reg("10.0.0.4").unwrap();
    assert_eq!(third.id, 3);
    assert_index_is_store(&registry);
    let (tagents, _, _) = stored(registry.store().as_ref());
    assert_eq!(tagents.len(), 3);
    assert_eq!(
        tagents[0].status,
        Status::Connected,
        "carried to the next batch"
    );
    assert!(tagents.iter().all(|t| t.ip != ip("10.0.0.3")));

    // And it all survives a reopen from the file.
    let after = indexed(&registry);
    rt.block_on(registry.shutdown());
    drop(registry);
    let cipher = CredentialCipher::from_hex(KEY).unwrap();
    let store = RedbStore::open(dir.path(), cipher, 1 << 20).unwrap();
    assert_eq!(stored(&store), after);
}

#[test]
fn a_single_use_token_admits_one_tagent_of_a_batch_and_its_use_is_written() {
    let mut w = World::new(Mine::All);
    w.policy.policies.default = Policy::Token;
    let (token, text) = EnrollToken::generate("acme", NOW, NOW + 10_000, 1, "token:ab", "", false);
    let id = token.id.clone();
    w.enrolled.tokens.insert(id.clone(), token);
    let with_token = |primary: &str| {
        let (reply, rx) = oneshot::channel();
        let mut r = req(primary, &[]);
        r.token = Some(Secret(text.clone()));
        (Job::Register { req: r, reply }, rx)
    };
    let (a, mut ra) = with_token("10.0.0.1");
    let (b, mut rb) = with_token("10.0.0.2");
    let (c, mut rc) = register("10.0.0.3", &[]);
    let d = w.decide(vec![a, b, c]);
    assert_eq!(d.accepted.len(), 1, "one use, one tagent");
    assert_eq!(d.accepted[0].decision.tagent.ip, ip("10.0.0.1"));
    assert!(ra.try_recv().is_err(), "answered after the commit");
    for rx in [&mut rb, &mut rc] {
        assert!(matches!(
            rx.try_recv(),
            Ok(Err(RegisterError::TokenRequired { .. }))
        ));
    }
    let [t] = d.enroll.tokens_put.as_slice() else {
        panic!("the token's use is written: {:?}", d.enroll.tokens_put);
    };
    assert_eq!(
        (t.id.as_str(), t.uses, t.last_used_ms),
        (id.as_str(), 1, NOW)
    );
    let batch = commit::batch(&d, &w.interner);
    assert_eq!(batch.tokens_put.len(), 1);
    assert!(d.enroll.pending_put.is_empty(), "token refusals never wait");
}

#[test]
fn an_approval_is_spent_by_the_registration_it_admits_in_the_same_batch() {
    let mut w = World::new(Mine::All);
    w.policy.policies.default = Policy::Approve;
    let (a, mut ra) = register("10.0.0.1", &[]);
    let d = w.decide(vec![a]);
    assert!(d.accepted.is_empty());
    let [p] = d.enroll.pending_put.as_slice() else {
        panic!("one pending entry")
    };
    assert!(ra.try_recv().is_err(), "told once the entry is durable");
    let [(reply, RegisterError::Pending { id, .. })] = d.refused.as_slice() else {
        panic!("refused as pending")
    };
    assert!(!reply.is_closed());
    assert_eq!(id, &p.id());
    // An operator approves, then the tagent retries: accepted, entry gone.
    let mut approved = p.clone();
    approved.approved_by = Some("token:ab".into());
    w.enrolled.pending.insert(p.id(), approved);
    let (again, _r) = register("10.0.0.1", &[]);
    let d = w.decide(vec![again]);
    assert_eq!(d.accepted.len(), 1);
    assert_eq!(d.enroll.pending_delete, vec![p.id()]);
    // The pending list is bounded.
    w.enrolled.pending.clear();
    w.policy.max_pending = 1;
    let (x, _rx) = register("10.0.0.5", &[]);
    let (y, mut ry) = register("10.0.0.6", &[]);
    let d = w.decide(vec![x, y]);
    assert_eq!(d.enroll.pending_put.len(), 1);
    assert!(matches!(
        ry.try_recv(),
        Ok(Err(RegisterError::PendingFull(1)))
    ));
}

#[test]
fn an_approval_admits_only_the_tagent_it_was_given_for() {
    let mut w = World::new(Mine::All);
    // Two tagents list the same ip (a Docker bridge): rule 7 allows it.
    let (a, _) = register("10.0.0.1", &["10.0.0.9"]);
    let (b, _) = register("10.0.0.2", &["10.0.0.9"]);
    w.run(vec![a, b]);
    let shared = |id| {
        let (reply, rx) = oneshot::channel();
        let mut r = reg("acme", Some(id), "10.0.0.9", 3939, "10.0.0.9");
        r.credential = Some(Secret("new".into()));
        (
            Job::Register {
                req: Box::new(r),
                reply,
            },
            rx,
        )
    };
    let print = Some(w.cipher.print("new"));
    let key = crate::model::pending_id("acme", ip("10.0.0.9"), 3939, print);
    let approved = Pending {
        tenant: "acme".into(),
        ip: ip("10.0.0.9"),
        port: 3939,
        tagent: Some(1),
        source: ip("10.0.0.9"),
        name: String::new(),
        version: String::new(),
        os_type: String::new(),
        print,
        first_ms: NOW,
        last_ms: NOW,
        attempts: 1,
        approved_by: Some("token:ab".into()),
        approved_ms: NOW,
    };
    w.enrolled.pending.insert(key.clone(), approved);
    // Shown and approved as tagent 1's: spent on tagent 2, it is not.
    let (job, _rx) = shared(2);
    let d = w.decide(vec![job]);
    assert!(
        d.accepted.is_empty(),
        "tagent 2 taken over with 1's approval"
    );
    assert!(matches!(
        d.refused.as_slice(),
        [(_, RegisterError::Pending { .. })]
    ));
    assert!(
        d.enroll.pending_put.is_empty() && d.enroll.pending_delete.is_empty(),
        "the approval is kept as it was given"
    );
    // For tagent 1, it is spent.
    let (job, _rx) = shared(1);
    let d = w.decide(vec![job]);
    assert_eq!(d.accepted.len(), 1);
    assert_eq!(d.accepted[0].decision.tagent.id, 1);
    assert_eq!(d.enroll.pending_delete, vec![key]);
}

#[test]
fn a_full_pending_list_drops_entries_no_attempt_renewed_for_a_day() {
    let mut w = World::new(Mine::All);
    w.policy.policies.default = Policy::Approve;
    w.policy.max_pending = 2;
    let (a, _ra) = register("10.0.0.1", &[]);
    let (b, _rb) = register("10.0.0.2", &[]);
    let d = w.decide(vec![a, b]);
    for mut p in d.enroll.pending_put {
        // Seen last two days ago; the second one approved.
        p.last_ms = 0;
        if p.ip == ip("10.0.0.2") {
            p.approved_by = Some("token:ab".into());
        }
        w.enrolled.pending.insert(p.id(), p);
    }
    let (c, mut rc) = register("10.0.0.3", &[]);
    w.now = NOW + 2 * 24 * 3600 * 1000;
    let d = w.decide(vec![c]);
    assert!(rc.try_recv().is_err(), "waits: told after the commit");
    assert_eq!(d.enroll.pending_put.len(), 1, "the new one waits");
    assert_eq!(
        d.enroll.pending_delete.len(),
        1,
        "the stale unapproved one went"
    );
    assert_eq!(
        w.enrolled.pending[&d.enroll.pending_delete[0]].ip,
        ip("10.0.0.1")
    );
}
