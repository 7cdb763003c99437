//! The shared engine: the registry in PostgreSQL, for the hubs of a runner
//! group (SPEC §4).
//!
//! Every commit bumps one *revision* (a row of `registry_meta`) and stamps
//! the tagent rows it writes with it; a deleted tagent stays as a row
//! without a record, so other hubs learn of the deletion. A hub's writer
//! opens a transaction that locks the revision row (`FOR UPDATE`), reads
//! the rows stamped after the revision its index has seen, applies them,
//! decides its batch, writes and commits: decisions across hubs are
//! serialised, and none is made against a stale index. Commits `NOTIFY`
//! the other hubs, which then read the same changes between batches.
//!
//! The driver is async (tokio-postgres, deadpool pool) on a small runtime of
//! the store's own, so that the blocking [`RegistryStore`] methods can be
//! called from the writer thread and `spawn_blocking` alike. Migrations run
//! at open, under an advisory lock, each version in one transaction.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::{pg_err, pool_err};
use super::{
    AccountKey, AccountOp, Changes, CredentialCipher, Engine, HubInfo, HubLease, KEY_CHECK_TEXT,
    RegistryStore, ScanItem, StoreError, StoredAccount, StoredGroup, StoredTagent, WriteBatch,
    WriteTxn, account_aad, open_credential, wrong_key,
};
use crate::model::{
    AuditEntry, EnrollToken, Pending, Rollout, RolloutTarget, Status, TagentId, account_name,
};

/// How to reach the shared database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database` (libpq-style
    /// `key=value` strings work too). Never logged.
    pub url: String,
    /// The schema the registry's tables live in: several registries can
    /// share one database.
    pub schema: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// TLS to the database, verified against the CA certificates (PEM) in
    /// this file; `None`: plain TCP (sslmode is then `disable`).
    pub tls_ca: Option<std::path::PathBuf>,
}

/// The rustls connector for `ca` (PEM certificates the server's must chain
/// to).
fn tls_connector(ca: &std::path::Path) -> Result<MakeRustlsConnect, StoreError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .and_then(|c| c.collect())
        .map_err(|e| StoreError::Config(format!("postgres tls_ca {}: {e}", ca.display())))?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| StoreError::Config(format!("postgres tls_ca {}: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(StoreError::Config(format!(
            "postgres tls_ca {} holds no certificate",
            ca.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("postgres TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The schema, one step per version, each applied in one transaction.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE registry_meta (key text PRIMARY KEY, value bigint NOT NULL);
     INSERT INTO registry_meta (key, value) VALUES ('revision', 0), ('next_id', 1);
     CREATE TABLE tagents (
         id bigint PRIMARY KEY,
         rev bigint NOT NULL,
         tenant text,
         ip text,
         port integer,
         status text,
         runner integer,
         record bytea
     );
     CREATE INDEX tagents_rev ON tagents (rev);
     CREATE TABLE accounts (
         tenant text NOT NULL,
         name text NOT NULL,
         ip text NOT NULL,
         port integer NOT NULL,
         credential bytea,
         PRIMARY KEY (tenant, name)
     );
     CREATE TABLE runner_groups (name text PRIMARY KEY, rev bigint NOT NULL, record bytea NOT NULL);
     CREATE TABLE key_check (name text PRIMARY KEY, sealed bytea NOT NULL);
     CREATE TABLE hubs (
         heartbeat text PRIMARY KEY,
         http text NOT NULL,
         lease_until timestamptz NOT NULL
     );",
    ),
    // Lease fencing: a hub's lease epoch grows each time it renews a lease
    // that had lapsed, so another hub's runner-lost decision made against
    // an older epoch is never written over a newer reassert.
    (
        2,
        "ALTER TABLE hubs ADD COLUMN epoch bigint NOT NULL DEFAULT 1;",
    ),
    (
        3,
        "CREATE TABLE audit (
         seq bigserial PRIMARY KEY,
         at_ms bigint NOT NULL,
         who text NOT NULL,
         action text NOT NULL,
         tagent bigint NOT NULL,
         result text NOT NULL,
         detail text
     );",
    ),
    // Registration policy: enrollment tokens and pending registrations,
    // written by the registry's writer under the registry's lock.
    (
        4,
        "CREATE TABLE enroll_tokens (id text PRIMARY KEY, record bytea NOT NULL);
     CREATE TABLE pending (key text PRIMARY KEY, record bytea NOT NULL);",
    ),
    // Upgrade history: rollouts and each tagent's steps, written by the hub
    // running the rollout, outside the registry's lock.
    (
        5,
        "CREATE TABLE rollouts (id text PRIMARY KEY, created_ms bigint NOT NULL, record bytea NOT NULL);
     CREATE TABLE rollout_targets (
         rollout text NOT NULL,
         tagent bigint NOT NULL,
         record bytea NOT NULL,
         PRIMARY KEY (rollout, tagent)
     );",
    ),
];

/// Rows read per round trip while the index is rebuilt.
const SCAN_PAGE: i64 = 10_000;

pub struct PgStore {
    /// `None` only while dropping (a runtime cannot be dropped on an async thread).
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    /// For the notification connection, which is not pooled.
    pg: tokio_postgres::Config,
    channel: String,
    cipher: CredentialCipher,
    /// The revision the registry's index has seen: what the next
    /// [`WriteTxn::changes`] reads after. Only the writer thread moves it.
    seen: AtomicI64,
    /// TLS to the database, when configured.
    tls: Option<MakeRustlsConnect>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Schema names go into SQL and a channel name: letters, digits, `_` only.
fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

fn status_text(s: Status) -> String {
    match s.reason() {
        None => "connected".into(),
        Some(r) => format!("disconnected:{r}"),
    }
}

fn decode(id: i64, record: &[u8]) -> Result<StoredTagent, StoreError> {
    rmp_serde::from_slice(record).map_err(|e| StoreError::decode(format!("tagent {id}"), e))
}

fn decode_groups(record: &[u8]) -> Result<Vec<StoredGroup>, StoreError> {
    rmp_serde::from_slice(record).map_err(|e| StoreError::decode("the runner groups", e))
}

fn decode_record<T: serde::de::DeserializeOwned>(
    record: &[u8],
    what: &'static str,
) -> Result<T, StoreError> {
    rmp_serde::from_slice(record).map_err(|e| StoreError::decode(what, e))
}

fn encode_record<T: serde::Serialize>(t: &T, what: &'static str) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(t).map_err(|e| StoreError::encode(what, e))
}

const TOKEN: &str = "an enrollment token";
const PENDING: &str = "a pending registration";

fn encode(t: &StoredTagent) -> Result<Vec<u8>, StoreError> {
    let mut buf = Vec::with_capacity(256);
    rmp_serde::encode::write_named(&mut buf, t)
        .map_err(|e| StoreError::encode(format!("tagent {}", t.id), e))?;
    Ok(buf)
}

impl PgStore {
    /// Whether this store's connections to the database are encrypted
    /// (PostgreSQL's own view, `pg_stat_ssl`).
    pub fn encrypted(&self) -> Result<bool, StoreError> {
        self.block_on(async {
            let row = self
                .client()
                .await?
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .map_err(pg_err)?;
            Ok(row.get::<_, bool>(0))
        })
    }

    /// Connect, run the migrations, and check the credential key.
    pub fn open(opts: &PgOptions, cipher: CredentialCipher) -> Result<PgStore, StoreError> {
        if !valid_schema(&opts.schema) {
            return Err(StoreError::Config(format!(
                "postgres schema '{}' must be 1-40 lowercase letters, digits or _, not starting with a digit",
                opts.schema
            )));
        }
        let mut pg: tokio_postgres::Config = opts
            .url
            .parse()
            .map_err(|_| StoreError::Config("the postgres url cannot be parsed".into()))?;
        pg.connect_timeout(Duration::from_secs(5));
        // A hub that stops while it holds the registry lock (or waits for it
        // for ever) must not stop the others.
        pg.options(format!(
            "-c search_path={} -c idle_in_transaction_session_timeout=15000 -c lock_timeout=15000",
            opts.schema
        ));
        pg.application_name("tagent-hub");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pg-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Runtime(Arc::new(e)))?;
        let tls = match &opts.tls_ca {
            Some(ca) => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(tls_connector(ca)?)
            }
            None if pg.get_ssl_mode() == tokio_postgres::config::SslMode::Require => {
                return Err(StoreError::Config(
                    "the postgres url asks for sslmode=require: set store.tls_ca to the CA \
                     certificates the server's must chain to"
                        .into(),
                ));
            }
            None => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                None
            }
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let mgr = match &tls {
            Some(t) => Manager::from_config(pg.clone(), t.clone(), manager_config),
            None => Manager::from_config(pg.clone(), NoTls, manager_config),
        };
        let pool = {
            let _guard = rt.enter();
            Pool::builder(mgr)
                .max_size(opts.pool_size.max(2))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .create_timeout(Some(Duration::from_secs(5)))
                .wait_timeout(Some(Duration::from_secs(20)))
                .build()
                .map_err(|e| StoreError::Config(format!("postgres connection pool: {e}")))?
        };
        let store = PgStore {
            rt: Some(rt),
            pool,
            pg,
            channel: format!("tagent_hub_{}", opts.schema),
            cipher,
            seen: AtomicI64::new(0),
            tls,
        };
        store.block_on(store.migrate(&opts.schema))?;
        store.block_on(store.check_key())?;
        Ok(store)
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt
            .as_ref()
            .expect("the runtime lives as long as the store")
            .block_on(f)
    }

    fn records<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        what: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let rows =
            self.block_on(async { self.client().await?.query(sql, &[]).await.map_err(pg_err) })?;
        rows.iter()
            .map(|r| decode_record(r.get::<_, &[u8]>(0), what))
            .collect()
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    async fn migrate(&self, schema: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // Hubs starting together migrate one after the other.
        tx.execute("SELECT pg_advisory_xact_lock(7395001)", &[])
            .await
            .map_err(pg_err)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             SET LOCAL search_path = {schema};
             CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );"
        ))
        .await
        .map_err(pg_err)?;
        let have: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        let newest = MIGRATIONS.last().map_or(0, |m| m.0);
        if have > newest {
            return Err(StoreError::Version {
                found: have.into(),
                known: newest.into(),
                hint: "upgrade the hub",
            });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > have) {
            tx.batch_execute(sql).await.map_err(pg_err)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(pg_err)?;
            tracing::info!(version, "postgres schema migrated");
        }
        tx.commit().await.map_err(pg_err)
    }

    async fn check_key(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let sealed = self.cipher.seal(b"key_check", KEY_CHECK_TEXT);
        client
            .execute(
                "INSERT INTO key_check (name, sealed) VALUES ('v1', $1) ON CONFLICT DO NOTHING",
                &[&sealed],
            )
            .await
            .map_err(pg_err)?;
        let row = client
            .query_one("SELECT sealed FROM key_check WHERE name = 'v1'", &[])
            .await
            .map_err(pg_err)?;
        let stored: Vec<u8> = row.get(0);
        self.cipher
            .open(b"key_check", &stored)
            .map(|_| ())
            .map_err(|_| wrong_key())
    }

    /// Rows stamped after `after`, and the next id, on `client`.
    async fn read_changes(
        client: &impl deadpool_postgres::GenericClient,
        after: i64,
    ) -> Result<Changes, StoreError> {
        let rows = client
            .query(
                "SELECT id, record FROM tagents WHERE rev > $1 ORDER BY id",
                &[&after],
            )
            .await
            .map_err(pg_err)?;
        let mut changes = Changes::default();
        for row in rows {
            let id: i64 = row.get(0);
            let record: Option<Vec<u8>> = row.get(1);
            let t = record.map(|r| decode(id, &r)).transpose()?;
            changes.tagents.push((id as TagentId, t));
        }
        changes.next_id = meta(client, "next_id").await? as TagentId;
        let groups = client
            .query_opt(
                "SELECT record FROM runner_groups WHERE name = 'all' AND rev > $1",
                &[&after],
            )
            .await
            .map_err(pg_err)?;
        if let Some(row) = groups {
            changes.groups = Some(decode_groups(&row.get::<_, Vec<u8>>(0))?);
        }
        Ok(changes)
    }

    async fn scan_async(
        &self,
        each: &mut dyn FnMut(ScanItem) -> Result<(), StoreError>,
    ) -> Result<i64, StoreError> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let rev = meta(&tx, "revision").await?;
        let next = meta(&tx, "next_id").await?;
        let row = tx
            .query_one(
                "SELECT count(*), coalesce(max(id), 0) FROM tagents WHERE record IS NOT NULL",
                &[],
            )
            .await
            .map_err(pg_err)?;
        let (len, max_id): (i64, i64) = (row.get(0), row.get(1));
        each(ScanItem::Info {
            len: len as u64,
            max_id: max_id as TagentId,
            next_id: next as TagentId,
        })?;
        let mut after = 0i64;
        loop {
            let rows = tx
                .query(
                    "SELECT id, record FROM tagents WHERE record IS NOT NULL AND id > $1
                     ORDER BY id LIMIT $2",
                    &[&after, &SCAN_PAGE],
                )
                .await
                .map_err(pg_err)?;
            let Some(last) = rows.last() else { break };
            after = last.get(0);
            for row in &rows {
                let id: i64 = row.get(0);
                let record: Vec<u8> = row.get(1);
                each(ScanItem::Tagent(decode(id, &record)?))?;
            }
            if (rows.len() as i64) < SCAN_PAGE {
                break;
            }
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(rev)
    }
}

/// A read-only transaction that sees one committed state of the registry.
async fn snapshot(client: &mut Object) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_err)
}

/// A counter of `registry_meta`: `revision` or `next_id`.
async fn meta(
    client: &impl deadpool_postgres::GenericClient,
    key: &str,
) -> Result<i64, StoreError> {
    Ok(client
        .query_one("SELECT value FROM registry_meta WHERE key = $1", &[&key])
        .await
        .map_err(pg_err)?
        .get(0))
}

struct PgTxn<'a> {
    store: &'a PgStore,
    /// `None` once committed or rolled back.
    client: Option<Object>,
    /// The revision the lock was taken at.
    rev: i64,
}

impl Drop for PgTxn<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let rolled_back = self
            .store
            .block_on(client.batch_execute("ROLLBACK"))
            .is_ok();
        if !rolled_back {
            // Never hand a connection in an unknown state back to the pool.
            drop(Object::take(client));
        }
    }
}

/// What an account ends as after a batch's operations on it, in order.
enum AccountEnd {
    /// Write it with this sealed credential (or none).
    Set(Option<Vec<u8>>),
    /// Create it without a credential unless it exists.
    Ensure,
    Delete,
}

impl WriteTxn for PgTxn<'_> {
    fn still_lapsed(&mut self, heartbeat: &str, epoch: u64) -> Result<bool, StoreError> {
        let client = self.client.as_ref().expect("an open transaction");
        let row = self
            .store
            .block_on(client.query_opt(
                "SELECT lease_until < now() AND epoch = $2 FROM hubs WHERE heartbeat = $1",
                &[&heartbeat, &(epoch as i64)],
            ))
            .map_err(pg_err)?;
        // A hub whose lease row is gone has not come back.
        Ok(row.is_none_or(|r| r.get::<_, bool>(0)))
    }

    fn token(&mut self, id: &str) -> Result<Option<EnrollToken>, StoreError> {
        self.record("SELECT record FROM enroll_tokens WHERE id = $1", id, TOKEN)
    }

    fn pending(&mut self, key: &str) -> Result<Option<Pending>, StoreError> {
        self.record("SELECT record FROM pending WHERE key = $1", key, PENDING)
    }

    fn pending_stale(&mut self, before_ms: u64) -> Result<Vec<String>, StoreError> {
        let client = self.client.as_ref().expect("an open transaction");
        let rows = self
            .store
            .block_on(client.query("SELECT record FROM pending", &[]))
            .map_err(pg_err)?;
        let all = rows
            .iter()
            .map(|r| decode_record(r.get::<_, &[u8]>(0), PENDING))
            .collect::<Result<Vec<Pending>, _>>()?;
        Ok(super::redb::stale(all, before_ms))
    }

    fn pending_len(&mut self) -> Result<u64, StoreError> {
        let client = self.client.as_ref().expect("an open transaction");
        let row = self
            .store
            .block_on(client.query_one("SELECT count(*) FROM pending", &[]))
            .map_err(pg_err)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn changes(&mut self) -> Result<Changes, StoreError> {
        let seen = self.store.seen.load(Ordering::Acquire);
        if self.rev == seen {
            return Ok(Changes::default());
        }
        let client = self.client.as_ref().expect("an open transaction");
        let changes = self.store.block_on(PgStore::read_changes(client, seen))?;
        self.store.seen.store(self.rev, Ordering::Release);
        Ok(changes)
    }

    fn commit(mut self: Box<Self>, batch: &WriteBatch<'_>) -> Result<(), StoreError> {
        let rev = self.rev + 1;
        let store = self.store;
        let client = self.client.as_ref().expect("an open transaction");
        let mut ids = Vec::new();
        let mut tenants = Vec::new();
        let mut ips = Vec::new();
        let mut ports = Vec::new();
        let mut statuses = Vec::new();
        let mut runners = Vec::new();
        let mut records = Vec::new();
        for t in &batch.tagents_put {
            ids.push(t.id as i64);
            tenants.push(t.tenant.as_str());
            ips.push(t.ip.to_string());
            ports.push(i32::from(t.port));
            statuses.push(status_text(t.status));
            runners.push(t.runner.map(|r| r as i32));
            records.push(encode(t)?);
        }
        let deleted: Vec<i64> = batch.tagents_delete.iter().map(|id| *id as i64).collect();

        let mut ends: HashMap<(&str, String), (IpAddr, u16, AccountEnd)> = HashMap::new();
        for op in &batch.accounts {
            match op {
                AccountOp::Delete { tenant, ip, port } => {
                    ends.insert(
                        (*tenant, account_name(*ip, *port)),
                        (*ip, *port, AccountEnd::Delete),
                    );
                }
                AccountOp::Put(a) => {
                    let name = account_name(a.ip, a.port);
                    let end = match a.credential {
                        Some(c) => AccountEnd::Set(Some(
                            store
                                .cipher
                                .seal(&account_aad(a.tenant, &name), c.as_bytes()),
                        )),
                        None => match ends.remove(&(a.tenant, name.clone())) {
                            None => AccountEnd::Ensure,
                            Some((_, _, AccountEnd::Delete)) => AccountEnd::Set(None),
                            Some((_, _, kept)) => kept,
                        },
                    };
                    ends.insert((a.tenant, name), (a.ip, a.port, end));
                }
            }
        }
        let (mut set, mut ensure, mut delete) = (
            AccountRows::default(),
            AccountRows::default(),
            AccountRows::default(),
        );
        for ((tenant, name), (ip, port, end)) in ends {
            let (rows, credential) = match end {
                AccountEnd::Set(c) => (&mut set, c),
                AccountEnd::Ensure => (&mut ensure, None),
                AccountEnd::Delete => (&mut delete, None),
            };
            rows.tenants.push(tenant);
            rows.names.push(name);
            rows.ips.push(ip.to_string());
            rows.ports.push(i32::from(port));
            rows.credentials.push(credential);
        }

        let token_ids: Vec<&str> = batch.tokens_put.iter().map(|t| t.id.as_str()).collect();
        let token_records = batch
            .tokens_put
            .iter()
            .map(|t| encode_record(t, TOKEN))
            .collect::<Result<Vec<_>, _>>()?;
        let pending_keys: Vec<String> = batch.pending_put.iter().map(|p| p.id()).collect();
        let pending_records = batch
            .pending_put
            .iter()
            .map(|p| encode_record(p, PENDING))
            .collect::<Result<Vec<_>, _>>()?;
        let pending_gone: Vec<&str> = batch.pending_delete.to_vec();
        let next_id = batch.next_id.map(|n| n as i64);
        let groups = match &batch.groups {
            Some(g) => {
                let mut buf = Vec::new();
                rmp_serde::encode::write_named(&mut buf, g)
                    .map_err(|e| StoreError::encode("the runner groups", e))?;
                Some(buf)
            }
            None => None,
        };
        let written = store.block_on(async {
            if !deleted.is_empty() {
                client
                    .execute(
                        "UPDATE tagents SET rev = $1, tenant = NULL, ip = NULL, port = NULL,
                         status = NULL, runner = NULL, record = NULL WHERE id = ANY($2)",
                        &[&rev, &deleted],
                    )
                    .await?;
            }
            if !ids.is_empty() {
                client
                    .execute(
                        "INSERT INTO tagents (id, rev, tenant, ip, port, status, runner, record)
                         SELECT u.id, $1, u.tenant, u.ip, u.port, u.status, u.runner, u.record
                         FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::integer[],
                                     $6::text[], $7::integer[], $8::bytea[])
                              AS u(id, tenant, ip, port, status, runner, record)
                         ON CONFLICT (id) DO UPDATE SET rev = EXCLUDED.rev,
                             tenant = EXCLUDED.tenant, ip = EXCLUDED.ip, port = EXCLUDED.port,
                             status = EXCLUDED.status, runner = EXCLUDED.runner,
                             record = EXCLUDED.record",
                        &[
                            &rev, &ids, &tenants, &ips, &ports, &statuses, &runners, &records,
                        ],
                    )
                    .await?;
            }
            if !delete.tenants.is_empty() {
                client
                    .execute(
                        "DELETE FROM accounts WHERE (tenant, name) IN
                         (SELECT * FROM UNNEST($1::text[], $2::text[]))",
                        &[&delete.tenants, &delete.names],
                    )
                    .await?;
            }
            for (rows, conflict) in [
                (
                    &set,
                    "DO UPDATE SET ip = EXCLUDED.ip, port = EXCLUDED.port,
                     credential = EXCLUDED.credential",
                ),
                (&ensure, "DO NOTHING"),
            ] {
                if rows.tenants.is_empty() {
                    continue;
                }
                client
                    .execute(
                        &format!(
                            "INSERT INTO accounts (tenant, name, ip, port, credential)
                             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[],
                                                  $4::integer[], $5::bytea[])
                             ON CONFLICT (tenant, name) {conflict}"
                        ),
                        &[
                            &rows.tenants,
                            &rows.names,
                            &rows.ips,
                            &rows.ports,
                            &rows.credentials,
                        ],
                    )
                    .await?;
            }
            if let Some(groups) = &groups {
                client
                    .execute(
                        "INSERT INTO runner_groups (name, rev, record) VALUES ('all', $1, $2)
                         ON CONFLICT (name) DO UPDATE SET rev = EXCLUDED.rev, record = EXCLUDED.record",
                        &[&rev, groups],
                    )
                    .await?;
            }
            if !token_ids.is_empty() {
                client
                    .execute(
                        "INSERT INTO enroll_tokens (id, record)
                         SELECT * FROM UNNEST($1::text[], $2::bytea[])
                         ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
                        &[&token_ids, &token_records],
                    )
                    .await?;
            }
            if !pending_gone.is_empty() {
                client
                    .execute(
                        "DELETE FROM pending WHERE key = ANY($1)",
                        &[&pending_gone],
                    )
                    .await?;
            }
            if !pending_keys.is_empty() {
                client
                    .execute(
                        "INSERT INTO pending (key, record)
                         SELECT * FROM UNNEST($1::text[], $2::bytea[])
                         ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record",
                        &[&pending_keys, &pending_records],
                    )
                    .await?;
            }
            client
                .execute(
                    "UPDATE registry_meta SET value = $1 WHERE key = 'revision'",
                    &[&rev],
                )
                .await?;
            if let Some(next) = next_id {
                client
                    .execute(
                        "UPDATE registry_meta SET value = GREATEST(value, $1) WHERE key = 'next_id'",
                        &[&next],
                    )
                    .await?;
            }
            client
                .execute(
                    "SELECT pg_notify($1, $2)",
                    &[&store.channel, &rev.to_string()],
                )
                .await?;
            client.batch_execute("COMMIT").await
        });
        match written {
            Ok(()) => {
                // Committed: nothing left to roll back.
                let client = self.client.take();
                drop(client);
                store.seen.store(rev, Ordering::Release);
                Ok(())
            }
            // Dropping `self` rolls back (or discards the connection).
            Err(e) => Err(pg_err(e)),
        }
    }
}

impl PgTxn<'_> {
    /// One record by key, read in this transaction.
    fn record<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        let client = self.client.as_ref().expect("an open transaction");
        let row = self
            .store
            .block_on(client.query_opt(sql, &[&key]))
            .map_err(pg_err)?;
        row.map(|r| decode_record(r.get::<_, &[u8]>(0), what))
            .transpose()
    }
}

#[derive(Default)]
struct AccountRows<'a> {
    tenants: Vec<&'a str>,
    names: Vec<String>,
    ips: Vec<String>,
    ports: Vec<i32>,
    credentials: Vec<Option<Vec<u8>>>,
}

impl RegistryStore for PgStore {
    fn scan(
        &self,
        each: &mut dyn FnMut(ScanItem) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let rev = self.block_on(self.scan_async(each))?;
        self.seen.store(rev, Ordering::Release);
        Ok(())
    }

    fn begin(&self) -> Result<Box<dyn WriteTxn + '_>, StoreError> {
        let (client, rev) = self.block_on(async {
            let client = self.client().await?;
            client.batch_execute("BEGIN").await.map_err(pg_err)?;
            let locked = client
                .query_one(
                    "SELECT value FROM registry_meta WHERE key = 'revision' FOR UPDATE",
                    &[],
                )
                .await;
            match locked {
                Ok(row) => Ok((client, row.get::<_, i64>(0))),
                Err(e) => {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                    Err(pg_err(e))
                }
            }
        })?;
        Ok(Box::new(PgTxn {
            store: self,
            client: Some(client),
            rev,
        }))
    }

    fn changes(&self) -> Result<Changes, StoreError> {
        let seen = self.seen.load(Ordering::Acquire);
        let (changes, rev) = self.block_on(async {
            let mut client = self.client().await?;
            let tx = snapshot(&mut client).await?;
            let rev = meta(&tx, "revision").await?;
            let changes = if rev == seen {
                Changes::default()
            } else {
                PgStore::read_changes(&tx, seen).await?
            };
            tx.commit().await.map_err(pg_err)?;
            Ok::<_, StoreError>((changes, rev))
        })?;
        self.seen.store(rev, Ordering::Release);
        Ok(changes)
    }

    fn account(
        &self,
        tenant: &str,
        ip: IpAddr,
        port: u16,
    ) -> Result<Option<StoredAccount>, StoreError> {
        let name = account_name(ip, port);
        let row = self.block_on(async {
            self.client()
                .await?
                .query_opt(
                    "SELECT credential FROM accounts WHERE tenant = $1 AND name = $2",
                    &[&tenant, &name],
                )
                .await
                .map_err(pg_err)
        })?;
        Ok(row.map(|row| StoredAccount {
            ip,
            port,
            credential: row.get(0),
        }))
    }

    /// All in one query: the reader asks for up to a batch of handshakes at once.
    fn credentials(&self, keys: &[AccountKey<'_>]) -> Vec<Result<Option<String>, StoreError>> {
        let tenants: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let names: Vec<String> = keys.iter().map(|k| account_name(k.1, k.2)).collect();
        let rows = self.block_on(async {
            self.client()
                .await?
                .query(
                    "SELECT k.i, a.credential
                     FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(tenant, name, i)
                     JOIN accounts a ON a.tenant = k.tenant AND a.name = k.name",
                    &[&tenants, &names],
                )
                .await
                .map_err(pg_err)
        });
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => return vec![Err(e); keys.len()],
        };
        let mut sealed: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        for row in rows {
            let i: i64 = row.get(0);
            if let Some(slot) = usize::try_from(i - 1).ok().and_then(|i| sealed.get_mut(i)) {
                *slot = row.get(1);
            }
        }
        keys.iter()
            .zip(sealed)
            .map(|(&(tenant, ip, port), s)| open_credential(&self.cipher, tenant, ip, port, s))
            .collect()
    }

    fn account_names(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.block_on(async {
            self.client()
                .await?
                .query("SELECT tenant, name FROM accounts", &[])
                .await
                .map_err(pg_err)
        })?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn cipher(&self) -> &CredentialCipher {
        &self.cipher
    }

    fn groups(&self) -> Result<Option<Vec<StoredGroup>>, StoreError> {
        let row = self.block_on(async {
            self.client()
                .await?
                .query_opt("SELECT record FROM runner_groups WHERE name = 'all'", &[])
                .await
                .map_err(pg_err)
        })?;
        row.map(|r| decode_groups(&r.get::<_, Vec<u8>>(0)))
            .transpose()
    }

    fn subscribe(&self, notify: Arc<dyn Fn() + Send + Sync>) {
        let pg = self.pg.clone();
        let listen = format!("LISTEN {}", self.channel);
        let rt = self
            .rt
            .as_ref()
            .expect("the runtime lives as long as the store");
        match self.tls.clone() {
            Some(tls) => rt.spawn(listen_loop(pg, listen, notify, tls)),
            None => rt.spawn(listen_loop(pg, listen, notify, NoTls)),
        };
    }

    fn renew_lease(&self, hub: &HubInfo, ttl: Duration) -> Result<bool, StoreError> {
        let ttl_ms = ttl.as_millis() as i64;
        self.block_on(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg_err)?;
            let lapsed = tx
                .query_opt(
                    "SELECT lease_until < now() FROM hubs WHERE heartbeat = $1 FOR UPDATE",
                    &[&hub.heartbeat],
                )
                .await
                .map_err(pg_err)?
                .is_some_and(|r| r.get::<_, bool>(0));
            tx.execute(
                "INSERT INTO hubs (heartbeat, http, lease_until, epoch)
                 VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond', 1)
                 ON CONFLICT (heartbeat) DO UPDATE
                 SET http = EXCLUDED.http, lease_until = EXCLUDED.lease_until,
                     epoch = hubs.epoch + (hubs.lease_until < now())::int",
                &[&hub.heartbeat, &hub.http, &ttl_ms],
            )
            .await
            .map_err(pg_err)?;
            tx.commit().await.map_err(pg_err)?;
            Ok(lapsed)
        })
    }

    fn hubs(&self) -> Result<Vec<HubLease>, StoreError> {
        let rows = self.block_on(async {
            self.client()
                .await?
                .query(
                    "SELECT heartbeat, http, lease_until > now(), epoch FROM hubs ORDER BY heartbeat",
                    &[],
                )
                .await
                .map_err(pg_err)
        })?;
        Ok(rows
            .into_iter()
            .map(|r| HubLease {
                hub: HubInfo {
                    heartbeat: r.get(0),
                    http: r.get(1),
                },
                alive: r.get(2),
                epoch: r.get::<_, i64>(3) as u64,
            })
            .collect())
    }

    fn append_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        self.block_on(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg_err)?;
            let insert = tx
                .prepare(
                    "INSERT INTO audit (at_ms, who, action, tagent, result, detail)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .await
                .map_err(pg_err)?;
            for e in entries {
                tx.execute(
                    &insert,
                    &[
                        &(e.at_ms as i64),
                        &e.who,
                        &e.action,
                        &(e.tagent as i64),
                        &e.result,
                        &e.detail,
                    ],
                )
                .await
                .map_err(pg_err)?;
            }
            tx.commit().await.map_err(pg_err)
        })
    }

    fn audit(&self, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let before = before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64);
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = self.block_on(async {
            self.client()
                .await?
                .query(
                    "SELECT seq, at_ms, who, action, tagent, result, detail FROM audit
                     WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                    &[&before, &limit],
                )
                .await
                .map_err(pg_err)
        })?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                seq: r.get::<_, i64>(0) as u64,
                at_ms: r.get::<_, i64>(1) as u64,
                who: r.get(2),
                action: r.get(3),
                tagent: r.get::<_, i64>(4) as u64,
                result: r.get(5),
                detail: r.get(6),
            })
            .collect())
    }

    fn put_rollout(&self, rollout: &Rollout, targets: &[RolloutTarget]) -> Result<(), StoreError> {
        let header = encode_record(rollout, "a rollout")?;
        let tagents: Vec<i64> = targets.iter().map(|t| t.tagent as i64).collect();
        let records = targets
            .iter()
            .map(|t| encode_record(t, "a rollout target"))
            .collect::<Result<Vec<_>, _>>()?;
        self.block_on(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg_err)?;
            tx.execute(
                "INSERT INTO rollouts (id, created_ms, record) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
                &[&rollout.id, &(rollout.created_ms as i64), &header],
            )
            .await
            .map_err(pg_err)?;
            if !tagents.is_empty() {
                tx.execute(
                    "INSERT INTO rollout_targets (rollout, tagent, record)
                     SELECT $1, u.tagent, u.record
                     FROM UNNEST($2::bigint[], $3::bytea[]) AS u(tagent, record)
                     ON CONFLICT (rollout, tagent) DO UPDATE SET record = EXCLUDED.record",
                    &[&rollout.id, &tagents, &records],
                )
                .await
                .map_err(pg_err)?;
            }
            tx.commit().await.map_err(pg_err)
        })
    }

    fn rollouts(&self, limit: usize) -> Result<Vec<Rollout>, StoreError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = self.block_on(async {
            self.client()
                .await?
                .query(
                    "SELECT record FROM rollouts ORDER BY created_ms DESC, id DESC LIMIT $1",
                    &[&limit],
                )
                .await
                .map_err(pg_err)
        })?;
        rows.iter()
            .map(|r| decode_record(r.get::<_, &[u8]>(0), "a rollout"))
            .collect()
    }

    fn rollout(&self, id: &str) -> Result<Option<(Rollout, Vec<RolloutTarget>)>, StoreError> {
        let (header, targets) = self.block_on(async {
            let client = self.client().await?;
            let header = client
                .query_opt("SELECT record FROM rollouts WHERE id = $1", &[&id])
                .await
                .map_err(pg_err)?;
            let targets = client
                .query(
                    "SELECT record FROM rollout_targets WHERE rollout = $1 ORDER BY tagent",
                    &[&id],
                )
                .await
                .map_err(pg_err)?;
            Ok::<_, StoreError>((header, targets))
        })?;
        let Some(header) = header else {
            return Ok(None);
        };
        let targets = targets
            .iter()
            .map(|r| decode_record(r.get::<_, &[u8]>(0), "a rollout target"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((
            decode_record(header.get::<_, &[u8]>(0), "a rollout")?,
            targets,
        )))
    }

    fn tokens(&self) -> Result<Vec<EnrollToken>, StoreError> {
        self.records("SELECT record FROM enroll_tokens ORDER BY id", TOKEN)
    }

    fn pending_list(&self) -> Result<Vec<Pending>, StoreError> {
        self.records("SELECT record FROM pending ORDER BY key", PENDING)
    }

    fn engine(&self) -> Engine {
        Engine::Postgres
    }
}

/// Hold a connection that `LISTEN`s for other hubs' commits and call
/// `notify` for each, and once per (re)connect for what was missed.
/// Ends with the store's runtime.
async fn listen_loop<T>(
    pg: tokio_postgres::Config,
    listen: String,
    notify: Arc<dyn Fn() + Send + Sync>,
    tls: T,
) where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Clone + Send + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
{
    loop {
        match pg.connect(tls.clone()).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages = futures_util::stream::poll_fn(|cx| conn.poll_message(cx));
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(AsyncMessage::Notification(_)) => {
                                if tx.send(()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                match client.batch_execute(&listen).await {
                    Ok(()) => {
                        notify();
                        while rx.recv().await.is_some() {
                            notify();
                        }
                        tracing::warn!("the postgres notification connection closed; reconnecting");
                    }
                    Err(e) => {
                        tracing::warn!(error = %pg_err(e), "cannot LISTEN for registry changes")
                    }
                }
                driver.abort();
            }
            Err(e) => {
                tracing::warn!(error = %pg_err(e), "cannot connect for registry change notifications")
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
