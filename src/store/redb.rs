//! The embedded engine: the registry in one `redb` file, for a single hub.
//!
//! One [`WriteBatch`] is one redb write transaction: it lands whole or not at
//! all, and [`RedbStore::commit`] returns only once it is on disk. The
//! registry's writer thread is the only caller of `commit`, which is what
//! lets it group-commit many registrations and status changes per transaction.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use redb::{
    Database, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};

use super::{
    AccountKey, AccountOp, Changes, CredentialCipher, Engine, KEY_CHECK_TEXT, RegistryStore,
    ScanItem, StoreError, StoredAccount, StoredGroup, StoredTagent, WriteBatch, WriteTxn,
    account_aad, open_credential, wrong_key,
};
use crate::model::{
    AuditEntry, EnrollToken, Pending, Rollout, RolloutTarget, TagentId, account_name,
};

/// Tagent records by id (MessagePack, named fields so the schema can grow).
const TAGENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("tagents");
/// Accounts by (tenant, `<ip>_<port>_tagent`), with the sealed credential.
const ACCOUNTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("accounts");
/// Counters: the next tagent id, the schema version.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The runner groups, one ordered list under the key `all`.
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("runner_groups");
/// A value sealed with the credential key, to refuse a wrong key at start.
/// The audit log of operations over tagents' listeners, by seq (from 1).
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Enrollment tokens by id (MessagePack).
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("enroll_tokens");
/// Pending registrations by id (MessagePack).
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
/// Rollouts' headers by id, and their targets by (rollout id, tagent id).
const ROLLOUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("rollouts");
const ROLLOUT_TARGETS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("rollout_targets");
const KEY_CHECK: TableDefinition<&str, &[u8]> = TableDefinition::new("key_check");

const SCHEMA_VERSION: u64 = 1;
/// Persist the allocator state with every commit, so that opening after a
/// crash does not walk the whole store (about 13% of commit throughput).
const QUICK_REPAIR: bool = true;

/// The stored tagents, read in id order by [`TagentScan::for_each`].
pub struct TagentScan {
    table: ReadOnlyTable<u64, &'static [u8]>,
    pub len: u64,
    pub max_id: TagentId,
    pub next_id: TagentId,
}

impl TagentScan {
    /// Decode each record in id order and hand it to `each`.
    pub fn for_each(
        self,
        mut each: impl FnMut(StoredTagent) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for row in self.table.iter()? {
            let (k, v) = row?;
            let t: StoredTagent = rmp_serde::from_slice(v.value())
                .map_err(|e| StoreError::decode(format!("tagent {}", k.value()), e))?;
            each(t)?;
        }
        Ok(())
    }
}

pub struct RedbStore {
    /// `None` while the file is being (or could not be) reopened.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    cache_bytes: usize,
    cipher: CredentialCipher,
    /// A write failed on I/O (disk full, read-only, ...). redb then refuses
    /// every operation until the file is reopened, so the next commit
    /// reopens it first: the hub recovers without a restart once the disk
    /// does. Nothing half-written survives: the failed transaction never
    /// became durable, and the index was not changed (see the writer).
    failed: AtomicBool,
    /// When the last reopen was tried: at most one attempt a second.
    last_reopen: Mutex<Option<Instant>>,
    reopen_every: Duration,
    disk: Disk,
}

/// What the database file is opened through.
enum Disk {
    /// The file system.
    File,
    /// The file behind a disk that fills up on demand (tests).
    #[cfg(test)]
    Faulty(std::sync::Arc<super::faulty_disk::Faults>),
}

impl RedbStore {
    /// Open (or create) `dir/registry.redb`. `cache_bytes` bounds redb's page cache.
    pub fn open(
        dir: &Path,
        cipher: CredentialCipher,
        cache_bytes: usize,
    ) -> Result<RedbStore, StoreError> {
        Self::open_on(dir, cipher, cache_bytes, Disk::File)
    }

    /// As [`RedbStore::open`], on a disk that fills up when `faults` says
    /// so, and reopened after an I/O error without waiting.
    #[cfg(test)]
    pub(crate) fn open_faulty(
        dir: &Path,
        cipher: CredentialCipher,
        faults: std::sync::Arc<super::faulty_disk::Faults>,
    ) -> Result<RedbStore, StoreError> {
        let mut store = Self::open_on(dir, cipher, 1 << 20, Disk::Faulty(faults))?;
        store.reopen_every = Duration::ZERO;
        Ok(store)
    }

    fn open_on(
        dir: &Path,
        cipher: CredentialCipher,
        cache_bytes: usize,
        disk: Disk,
    ) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::file("create the data directory", dir.into(), e))?;
        let mut store = RedbStore {
            db: RwLock::new(None),
            path: dir.join("registry.redb"),
            cache_bytes,
            cipher,
            failed: AtomicBool::new(false),
            last_reopen: Mutex::new(None),
            reopen_every: Duration::from_secs(1),
            disk,
        };
        *store.db.get_mut() = Some(store.create_db()?);
        store.init()?;
        Ok(store)
    }

    /// Open (or create) the database file.
    fn create_db(&self) -> Result<Database, StoreError> {
        let mut builder = Database::builder();
        builder.set_cache_size(self.cache_bytes);
        Ok(match &self.disk {
            Disk::File => builder.create(&self.path)?,
            #[cfg(test)]
            Disk::Faulty(faults) => builder.create_with_backend(
                super::faulty_disk::FaultyDisk::open(&self.path, faults.clone())?,
            )?,
        })
    }

    /// Run `f` on the open database.
    fn with_db<R>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let guard = self.db.read();
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Unavailable),
        }
    }

    /// Close and reopen the file after an I/O error (redb repairs it on open).
    fn reopen(&self) -> Result<(), StoreError> {
        {
            let mut last = self.last_reopen.lock();
            if last.is_some_and(|t| t.elapsed() < self.reopen_every) {
                return Err(StoreError::Unavailable);
            }
            *last = Some(Instant::now());
        }
        let mut guard = self.db.write();
        // The old handle holds the file lock: close it first.
        drop(guard.take());
        *guard = Some(self.create_db()?);
        self.failed.store(false, Ordering::Release);
        tracing::info!("store reopened after an I/O error");
        Ok(())
    }

    /// Create the tables, record the schema, and check the credential key.
    fn init(&self) -> Result<(), StoreError> {
        self.with_db(|db| self.init_tables(db))
    }

    fn init_tables(&self, db: &Database) -> Result<(), StoreError> {
        let mut tx = db.begin_write()?;
        tx.set_quick_repair(QUICK_REPAIR);
        {
            tx.open_table(TAGENTS)?;
            tx.open_table(ACCOUNTS)?;
            tx.open_table(GROUPS)?;
            tx.open_table(AUDIT)?;
            tx.open_table(TOKENS)?;
            tx.open_table(PENDING)?;
            tx.open_table(ROLLOUTS)?;
            tx.open_table(ROLLOUT_TARGETS)?;
            let mut meta = tx.open_table(META)?;
            let version = meta.get("schema_version")?.map(|v| v.value());
            match version {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(v) => {
                    return Err(StoreError::Version {
                        found: v as i64,
                        known: SCHEMA_VERSION as i64,
                        hint: "open it with the hub version that wrote it",
                    });
                }
            }
            let mut check = tx.open_table(KEY_CHECK)?;
            let sealed = check.get("v1")?.map(|v| v.value().to_vec());
            match sealed {
                Some(sealed) => {
                    self.cipher
                        .open(b"key_check", &sealed)
                        .map_err(|_| wrong_key())?;
                }
                None => {
                    let sealed = self.cipher.seal(b"key_check", KEY_CHECK_TEXT);
                    check.insert("v1", sealed.as_slice())?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        let guard = self.db.read();
        Ok(guard
            .as_ref()
            .ok_or(StoreError::Unavailable)?
            .begin_read()?)
    }

    /// The tagents one at a time, from one read transaction: what the index is
    /// rebuilt from at start without holding a second copy of every record.
    pub fn scan_tagents(&self) -> Result<TagentScan, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(TAGENTS)?;
        let len = table.len()?;
        let max_id = table.last()?.map_or(0, |(k, _)| k.value());
        let next_id = tx
            .open_table(META)?
            .get("next_id")?
            .map_or(1, |v| v.value());
        Ok(TagentScan {
            table,
            len,
            max_id,
            next_id,
        })
    }

    /// Write a batch in one durable transaction.
    pub fn commit(&self, batch: &WriteBatch<'_>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.failed.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let result = self.with_db(|db| self.write(db, batch));
        // Only a failure of the storage leaves redb refusing work; a
        // corrupt record or a bug does not call for a reopen.
        if result.as_ref().is_err_and(StoreError::is_io) {
            self.failed.store(true, Ordering::Release);
        }
        result
    }

    fn write(&self, db: &Database, batch: &WriteBatch<'_>) -> Result<(), StoreError> {
        let mut tx = db.begin_write()?;
        tx.set_quick_repair(QUICK_REPAIR);
        {
            let mut tagents = tx.open_table(TAGENTS)?;
            for id in &batch.tagents_delete {
                tagents.remove(id)?;
            }
            let mut buf = Vec::with_capacity(256);
            for t in &batch.tagents_put {
                buf.clear();
                rmp_serde::encode::write_named(&mut buf, t)
                    .map_err(|e| StoreError::encode(format!("tagent {}", t.id), e))?;
                tagents.insert(t.id, buf.as_slice())?;
            }
            let mut accounts = tx.open_table(ACCOUNTS)?;
            for op in &batch.accounts {
                let a = match op {
                    AccountOp::Delete { tenant, ip, port } => {
                        accounts.remove((*tenant, account_name(*ip, *port).as_str()))?;
                        continue;
                    }
                    AccountOp::Put(a) => a,
                };
                let name = account_name(a.ip, a.port);
                let key = (a.tenant, name.as_str());
                let sealed = match a.credential {
                    Some(c) => Some(
                        self.cipher
                            .seal(&account_aad(a.tenant, &name), c.as_bytes()),
                    ),
                    None if accounts.get(key)?.is_some() => continue,
                    None => None,
                };
                let rec = StoredAccount {
                    ip: a.ip,
                    port: a.port,
                    credential: sealed,
                };
                buf.clear();
                rmp_serde::encode::write_named(&mut buf, &rec)
                    .map_err(|e| StoreError::encode(format!("account {name}"), e))?;
                accounts.insert(key, buf.as_slice())?;
            }
            if let Some(next) = batch.next_id {
                tx.open_table(META)?.insert("next_id", next)?;
            }
            if let Some(groups) = &batch.groups {
                buf.clear();
                rmp_serde::encode::write_named(&mut buf, groups)
                    .map_err(|e| StoreError::encode("the runner groups", e))?;
                tx.open_table(GROUPS)?.insert("all", buf.as_slice())?;
            }
            if !batch.tokens_put.is_empty() {
                let mut tokens = tx.open_table(TOKENS)?;
                for t in &batch.tokens_put {
                    buf.clear();
                    rmp_serde::encode::write_named(&mut buf, t)
                        .map_err(|e| StoreError::encode("an enrollment token", e))?;
                    tokens.insert(t.id.as_str(), buf.as_slice())?;
                }
            }
            if !batch.pending_put.is_empty() || !batch.pending_delete.is_empty() {
                let mut pending = tx.open_table(PENDING)?;
                for key in &batch.pending_delete {
                    pending.remove(*key)?;
                }
                for p in &batch.pending_put {
                    buf.clear();
                    rmp_serde::encode::write_named(&mut buf, p)
                        .map_err(|e| StoreError::encode("a pending registration", e))?;
                    pending.insert(p.id().as_str(), buf.as_slice())?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// The account of (tenant, ip, port) in `table`, if it exists.
fn read_account(
    table: &ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    tenant: &str,
    ip: IpAddr,
    port: u16,
) -> Result<Option<StoredAccount>, StoreError> {
    let name = account_name(ip, port);
    let Some(v) = table.get((tenant, name.as_str()))? else {
        return Ok(None);
    };
    let rec = rmp_serde::from_slice(v.value())
        .map_err(|e| StoreError::decode(format!("account {name}"), e))?;
    Ok(Some(rec))
}

struct RedbTxn<'a>(&'a RedbStore);

impl WriteTxn for RedbTxn<'_> {
    /// No other hub writes this file.
    fn changes(&mut self) -> Result<Changes, StoreError> {
        Ok(Changes::default())
    }

    /// The writer is the only one to write tokens and pending
    /// registrations, so a read transaction sees what it last committed.
    fn token(&mut self, id: &str) -> Result<Option<EnrollToken>, StoreError> {
        self.0.read_record(TOKENS, id, "an enrollment token")
    }

    fn pending(&mut self, key: &str) -> Result<Option<Pending>, StoreError> {
        self.0.read_record(PENDING, key, "a pending registration")
    }

    fn pending_stale(&mut self, before_ms: u64) -> Result<Vec<String>, StoreError> {
        let all: Vec<Pending> = self.0.read_all(PENDING, "a pending registration")?;
        Ok(stale(all, before_ms))
    }

    fn pending_len(&mut self) -> Result<u64, StoreError> {
        Ok(self.0.begin_read()?.open_table(PENDING)?.len()?)
    }

    fn commit(self: Box<Self>, batch: &WriteBatch<'_>) -> Result<(), StoreError> {
        self.0.commit(batch)
    }
}

/// The ids of the unapproved entries of `all` last seen before `before_ms`.
pub(crate) fn stale(all: Vec<Pending>, before_ms: u64) -> Vec<String> {
    all.into_iter()
        .filter(|p| !p.approved() && p.last_ms < before_ms)
        .map(|p| p.id())
        .collect()
}

impl RedbStore {
    fn read_record<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(table)?;
        let Some(v) = table.get(key)? else {
            return Ok(None);
        };
        rmp_serde::from_slice(v.value())
            .map(Some)
            .map_err(|e| StoreError::decode(what, e))
    }

    fn read_all<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        what: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(table)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(rmp_serde::from_slice(v.value()).map_err(|e| StoreError::decode(what, e))?);
        }
        Ok(out)
    }
}

impl RegistryStore for RedbStore {
    fn scan(
        &self,
        each: &mut dyn FnMut(ScanItem) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let scan = self.scan_tagents()?;
        each(ScanItem::Info {
            len: scan.len,
            max_id: scan.max_id,
            next_id: scan.next_id,
        })?;
        scan.for_each(|t| each(ScanItem::Tagent(t)))
    }

    fn begin(&self) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        Ok(Box::new(RedbTxn(self)))
    }

    fn changes(&self) -> Result<Changes, StoreError> {
        Ok(Changes::default())
    }

    fn cipher(&self) -> &CredentialCipher {
        &self.cipher
    }

    fn groups(&self) -> Result<Option<Vec<StoredGroup>>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(GROUPS)?;
        let Some(v) = table.get("all")? else {
            return Ok(None);
        };
        rmp_serde::from_slice(v.value())
            .map(Some)
            .map_err(|e| StoreError::decode("the runner groups", e))
    }

    fn account(
        &self,
        tenant: &str,
        ip: IpAddr,
        port: u16,
    ) -> Result<Option<StoredAccount>, StoreError> {
        let table = self.begin_read()?.open_table(ACCOUNTS)?;
        read_account(&table, tenant, ip, port)
    }

    /// All from one read transaction: a batch costs one snapshot, not one each.
    fn credentials(&self, keys: &[AccountKey<'_>]) -> Vec<Result<Option<String>, StoreError>> {
        let table = match self
            .begin_read()
            .and_then(|tx| Ok(tx.open_table(ACCOUNTS)?))
        {
            Ok(table) => table,
            Err(e) => return vec![Err(e); keys.len()],
        };
        keys.iter()
            .map(|&(tenant, ip, port)| {
                let rec = read_account(&table, tenant, ip, port)?;
                open_credential(
                    &self.cipher,
                    tenant,
                    ip,
                    port,
                    rec.and_then(|r| r.credential),
                )
            })
            .collect()
    }

    fn account_names(&self) -> Result<Vec<(String, String)>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(ACCOUNTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, _) = row?;
            let (tenant, name) = k.value();
            out.push((tenant.to_owned(), name.to_owned()));
        }
        Ok(out)
    }

    fn append_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        let records = entries
            .iter()
            .map(rmp_serde::to_vec_named)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::encode("an audit entry", e))?;
        if self.failed.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let result = self.with_db(|db| {
            let mut tx = db.begin_write()?;
            tx.set_quick_repair(QUICK_REPAIR);
            {
                let mut table = tx.open_table(AUDIT)?;
                let last = table.last()?.map_or(0, |(k, _)| k.value());
                for (seq, record) in (last + 1..).zip(&records) {
                    table.insert(seq, record.as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        });
        if result.as_ref().is_err_and(StoreError::is_io) {
            self.failed.store(true, Ordering::Release);
        }
        result
    }

    fn audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(AUDIT)?;
        let mut out = Vec::new();
        for item in table.range(..before.unwrap_or(u64::MAX))?.rev().take(limit) {
            let (k, v) = item?;
            let mut entry: AuditEntry = rmp_serde::from_slice(v.value())
                .map_err(|e| StoreError::decode("an audit entry", e))?;
            entry.seq = k.value();
            out.push(entry);
        }
        Ok(out)
    }

    fn put_rollout(&self, rollout: &Rollout, targets: &[RolloutTarget]) -> Result<(), StoreError> {
        let header =
            rmp_serde::to_vec_named(rollout).map_err(|e| StoreError::encode("a rollout", e))?;
        let records = targets
            .iter()
            .map(rmp_serde::to_vec_named)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::encode("a rollout target", e))?;
        if self.failed.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let result = self.with_db(|db| {
            let mut tx = db.begin_write()?;
            tx.set_quick_repair(QUICK_REPAIR);
            {
                tx.open_table(ROLLOUTS)?
                    .insert(rollout.id.as_str(), header.as_slice())?;
                let mut table = tx.open_table(ROLLOUT_TARGETS)?;
                for (t, record) in targets.iter().zip(&records) {
                    table.insert((rollout.id.as_str(), t.tagent), record.as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        });
        if result.as_ref().is_err_and(StoreError::is_io) {
            self.failed.store(true, Ordering::Release);
        }
        result
    }

    fn rollouts(&self, limit: usize) -> Result<Vec<Rollout>, StoreError> {
        let mut all: Vec<Rollout> = self.read_all(ROLLOUTS, "a rollout")?;
        all.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
        all.truncate(limit);
        Ok(all)
    }

    fn rollout(&self, id: &str) -> Result<Option<(Rollout, Vec<RolloutTarget>)>, StoreError> {
        let Some(header) = self.read_record::<Rollout>(ROLLOUTS, id, "a rollout")? else {
            return Ok(None);
        };
        let tx = self.begin_read()?;
        let table = tx.open_table(ROLLOUT_TARGETS)?;
        let mut targets = Vec::new();
        for row in table.range((id, 0)..=(id, u64::MAX))? {
            let (_, v) = row?;
            targets.push(
                rmp_serde::from_slice(v.value())
                    .map_err(|e| StoreError::decode("a rollout target", e))?,
            );
        }
        Ok(Some((header, targets)))
    }

    fn tokens(&self) -> Result<Vec<EnrollToken>, StoreError> {
        self.read_all(TOKENS, "an enrollment token")
    }

    fn pending_list(&self) -> Result<Vec<Pending>, StoreError> {
        self.read_all(PENDING, "a pending registration")
    }

    fn engine(&self) -> Engine {
        Engine::Redb
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::store::AccountPut;

    const KEY: &str = "4b1d000000000000000000000000000000000000000000000000000000000001";

    fn put<'a>(
        tenant: &'a str,
        ip: IpAddr,
        port: u16,
        credential: Option<&'a str>,
    ) -> AccountOp<'a> {
        AccountOp::Put(AccountPut {
            tenant,
            ip,
            port,
            credential,
        })
    }

    #[test]
    fn credentials_answer_a_batch_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(
            dir.path(),
            CredentialCipher::from_hex(KEY).unwrap(),
            1 << 20,
        )
        .unwrap();
        let a: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        let b: IpAddr = "fd00::2".parse().unwrap();
        let batch = WriteBatch {
            accounts: vec![
                put("acme", a, 7000, Some("secret-a")),
                put("acme", b, 7001, Some("secret-b")),
                put("acme", a, 7002, None),
                put("other", a, 7000, Some("secret-other")),
            ],
            ..WriteBatch::default()
        };
        store.commit(&batch).unwrap();

        let keys: Vec<AccountKey<'_>> = vec![
            ("acme", b, 7001),
            ("acme", a, 7000),
            ("acme", a, 7002),   // an account without a credential
            ("acme", a, 7003),   // no account
            ("nobody", a, 7000), // no such tenant
            ("other", a, 7000),
            ("acme", a, 7000), // asked twice
        ];
        let got: Vec<Option<String>> = store
            .credentials(&keys)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let want = [
            Some("secret-b"),
            Some("secret-a"),
            None,
            None,
            None,
            Some("secret-other"),
            Some("secret-a"),
        ];
        assert_eq!(got, want.map(|w| w.map(String::from)));
        // What the batch answers is what one lookup at a time answers.
        for (&(tenant, ip, port), got) in keys.iter().zip(&got) {
            assert_eq!(&store.credential(tenant, ip, port).unwrap(), got);
        }
        assert!(store.credentials(&[]).is_empty());
    }
}
