//! The audit log and the upgrade history in both store engines: entries
//! appended in their own transactions, numbered from 1, read newest first a
//! page at a time, and still there after the store is reopened; rollouts
//! and their targets replaced record by record. PostgreSQL where
//! `TAGENT_HUB_TEST_DATABASE_URL` is set (`.ci/with-postgres`).

mod common;

use tagent_hub::model::{AuditEntry, Rollout, RolloutState, RolloutTarget, TargetState};
use tagent_hub::store::{CredentialCipher, PgStore, RedbStore, RegistryStore};

const KEY: &str = "4b1d000000000000000000000000000000000000000000000000000000000001";

fn cipher() -> CredentialCipher {
    CredentialCipher::from_hex(KEY).unwrap()
}

fn entry(n: u64) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at_ms: 1_700_000_000_000 + n,
        who: "token:0a1b2c3d".into(),
        action: if n.is_multiple_of(2) {
            "reload"
        } else {
            "set-config"
        }
        .into(),
        tagent: 100 + n,
        result: if n == 3 { "wrong_credential" } else { "ok" }.into(),
        detail: (!n.is_multiple_of(2)).then(|| format!("proxy.group: try {n}")),
    }
}

/// Append five (three in one call), page through them by two, and check
/// every field.
fn check(store: &dyn RegistryStore) {
    assert_eq!(store.audit(None, 10).unwrap(), vec![]);
    store.append_audit(&[entry(1)]).unwrap();
    store.append_audit(&[entry(2), entry(3), entry(4)]).unwrap();
    store.append_audit(&[]).unwrap();
    store.append_audit(&[entry(5)]).unwrap();
    let all = store.audit(None, 10).unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        [5, 4, 3, 2, 1],
        "numbered from 1 in order, newest first"
    );
    for e in &all {
        assert_eq!(
            *e,
            AuditEntry {
                seq: e.seq,
                ..entry(e.seq)
            }
        );
    }
    let page = store.audit(None, 2).unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 4]);
    let page = store.audit(Some(4), 2).unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 2]);
    let page = store.audit(Some(2), 2).unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);
    assert_eq!(store.audit(Some(1), 2).unwrap(), vec![]);
}

fn rollout(id: &str, created_ms: u64, state: RolloutState) -> Rollout {
    Rollout {
        id: id.into(),
        version: "1.6.0".into(),
        created_ms,
        ended_ms: 0,
        by: "token:0a1b2c3d".into(),
        hub: "10.0.0.1:8888".into(),
        concurrency: 5,
        max_failures: 1,
        register_timeout_secs: 300,
        state,
        targets: 2,
        upgraded: 0,
        failed: 0,
        skipped: 0,
    }
}

fn rollout_target(tagent: u64, state: TargetState) -> RolloutTarget {
    RolloutTarget {
        tagent,
        ip: "10.0.0.9".into(),
        os_type: "Linux".into(),
        arch: "x86_64".into(),
        from_version: "1.5.0".into(),
        package: None,
        state,
        steps: Vec::new(),
        reason: None,
        started_ms: 0,
        ended_ms: 0,
    }
}

/// Rollouts: a header and targets written, then one target and the header
/// replaced; listed newest first.
fn check_rollouts(store: &dyn RegistryStore) {
    assert!(store.rollout("a1").unwrap().is_none());
    let targets = [
        rollout_target(7, TargetState::Waiting),
        rollout_target(3, TargetState::Waiting),
    ];
    store
        .put_rollout(&rollout("a1", 10, RolloutState::Running), &targets)
        .unwrap();
    store
        .put_rollout(&rollout("b2", 20, RolloutState::Running), &[])
        .unwrap();
    let mut done = rollout("a1", 10, RolloutState::Done);
    done.upgraded = 1;
    store
        .put_rollout(&done, &[rollout_target(7, TargetState::Upgraded)])
        .unwrap();
    let (header, got) = store.rollout("a1").unwrap().unwrap();
    assert_eq!(header, done);
    assert_eq!(
        got,
        vec![
            rollout_target(3, TargetState::Waiting),
            rollout_target(7, TargetState::Upgraded)
        ],
        "by tagent id"
    );
    let ids: Vec<String> = store
        .rollouts(10)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["b2", "a1"]);
    assert_eq!(store.rollouts(1).unwrap().len(), 1);
}

/// The same store opened again: the five kept, the next numbered 6.
fn check_reopened(store: &dyn RegistryStore) {
    assert_eq!(
        store.rollouts(10).unwrap().len(),
        2,
        "rollouts kept across a reopen"
    );
    assert_eq!(
        store.audit(None, 10).unwrap().len(),
        5,
        "kept across a reopen"
    );
    store.append_audit(&[entry(6)]).unwrap();
    assert_eq!(
        store.audit(None, 1).unwrap()[0],
        AuditEntry { seq: 6, ..entry(6) }
    );
}

#[test]
fn the_audit_log_in_redb() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = RedbStore::open(dir.path(), cipher(), 1 << 20).unwrap();
        check(&store);
        check_rollouts(&store);
    }
    let store = RedbStore::open(dir.path(), cipher(), 1 << 20).unwrap();
    check_reopened(&store);
}

#[test]
fn the_audit_log_in_postgres() {
    let Some((url, schema)) = common::postgres("the_audit_log_in_postgres") else {
        return;
    };
    let opts = common::pg_options(&url, &schema);
    {
        let store = PgStore::open(&opts, cipher()).unwrap();
        check(&store);
        check_rollouts(&store);
    }
    let store = PgStore::open(&opts, cipher()).unwrap();
    check_reopened(&store);
}
