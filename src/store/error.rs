//! Why the store failed. The variant says what kind of failure it is, so a
//! caller matches on it (the redb store reopens its file only after
//! [`StoreError::Io`]); the engine's error is kept as the source.
//!
//! A tagent sees only the message (`Display`), so every message is whole:
//! it names the cause and, where there is one, what to do.
//!
//! Sources sit behind an `Arc`: the error is `Clone` (one failed read
//! answers a whole batch of credential requests), and neither redb's nor
//! tokio-postgres's errors are.

use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage under redb failed: the disk is full or read-only, or a
    /// device error. redb then refuses everything until its file is
    /// reopened, which the store does before its next write.
    #[error("store I/O error (is the disk full or read-only?): {0}")]
    Io(#[source] Arc<redb::Error>),
    /// redb's file is closed after an I/O error and not reopened yet.
    #[error(
        "the store is unavailable after an I/O error (disk full or read-only?); it is retried at the next write"
    )]
    Unavailable,
    /// A file or directory beside the store: the data directory, the key file.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// redb's file cannot be opened: another process has it open, it needs
    /// an upgrade, or its repair was aborted.
    #[error("cannot open the store: {0}")]
    Open(#[source] Arc<redb::Error>),
    /// redb found its file corrupt: restore it from a backup.
    #[error("the store's file is corrupt (restore it from a backup): {0}")]
    CorruptFile(#[source] Arc<redb::Error>),
    /// The store was used against its schema or limits (a table of another
    /// type, a value too large): a bug or a file of another program, not the disk.
    #[error("the store refused an operation (a bug, or a file this hub did not write): {0}")]
    Misuse(#[source] Arc<redb::Error>),
    /// A stored record does not decode: damaged, or written by another version.
    #[error("corrupt record: {what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: Arc<rmp_serde::decode::Error>,
    },
    /// A record cannot be encoded (a bug).
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: Arc<rmp_serde::encode::Error>,
    },
    /// A record decodes but its content is wrong.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The store's schema is newer (or other) than this hub knows.
    #[error("the store's schema is at version {found}; this hub knows version {known}: {hint}")]
    Version {
        found: i64,
        known: i64,
        hint: &'static str,
    },
    /// The credential key is malformed, or not the one the store was written with.
    #[error("credential key: {0}")]
    Key(String),
    /// The store's configuration is unusable (schema name, url).
    #[error("store configuration: {0}")]
    Config(String),
    /// The store's own threads could not start.
    #[error("cannot start the store's runtime: {0}")]
    Runtime(#[source] Arc<std::io::Error>),
    /// PostgreSQL cannot be reached, or the connection broke.
    #[error("postgres connection: {}", pg_detail(.0))]
    Connection(#[source] Arc<tokio_postgres::Error>),
    /// No connection from the pool in time (PostgreSQL unreachable or slow).
    #[error("postgres connection pool: {0}")]
    Pool(#[source] Arc<deadpool_postgres::PoolError>),
    /// PostgreSQL refused a statement (a lock timeout, a constraint).
    #[error("postgres: {}", pg_detail(.0))]
    Database(#[source] Arc<tokio_postgres::Error>),
}

impl StoreError {
    /// Whether the storage itself failed (the redb store reopens after it).
    pub fn is_io(&self) -> bool {
        matches!(self, StoreError::Io(_) | StoreError::Unavailable)
    }

    pub(crate) fn file(action: &'static str, path: PathBuf, source: std::io::Error) -> Self {
        StoreError::File {
            action,
            path,
            source: Arc::new(source),
        }
    }

    pub(crate) fn decode(what: impl Into<String>, source: rmp_serde::decode::Error) -> Self {
        StoreError::Decode {
            what: what.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn encode(what: impl Into<String>, source: rmp_serde::encode::Error) -> Self {
        StoreError::Encode {
            what: what.into(),
            source: Arc::new(source),
        }
    }
}

/// Any redb error, by kind: the storage failed, the file cannot be opened,
/// the file is corrupt, or redb was misused.
impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        use redb::Error as R;
        let e = e.into();
        match e {
            R::Io(_) | R::PreviousIo | R::Backend(_) | R::DatabaseClosed => {
                StoreError::Io(Arc::new(e))
            }
            R::Corrupted(_) => StoreError::CorruptFile(Arc::new(e)),
            R::DatabaseAlreadyOpen
            | R::LockProtocolMismatch
            | R::RepairAborted
            | R::UpgradeRequired(_) => StoreError::Open(Arc::new(e)),
            _ => StoreError::Misuse(Arc::new(e)),
        }
    }
}

/// A tokio-postgres error: the server's message for a refused statement,
/// else the error and its cause (tokio-postgres's own message omits it).
fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

/// A tokio-postgres error, by kind: a refused statement, or the connection.
pub(crate) fn pg_err(e: tokio_postgres::Error) -> StoreError {
    let connection =
        e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.as_db_error().is_none() && connection {
        StoreError::Connection(Arc::new(e))
    } else {
        StoreError::Database(Arc::new(e))
    }
}

pub(crate) fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(e),
        e => StoreError::Pool(Arc::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redb_errors_are_told_apart_by_kind() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let io = StoreError::from(redb::StorageError::Io(full));
        assert!(matches!(io, StoreError::Io(_)), "{io:?}");
        assert!(io.is_io());
        assert!(io.to_string().contains("No space left on device"), "{io}");
        assert!(std::error::Error::source(&io).is_some());

        assert!(StoreError::from(redb::StorageError::PreviousIo).is_io());
        let corrupt = StoreError::from(redb::StorageError::Corrupted("bad page".into()));
        assert!(matches!(corrupt, StoreError::CorruptFile(_)), "{corrupt:?}");
        assert!(!corrupt.is_io());
        let misuse = StoreError::from(redb::TableError::TableDoesNotExist("t".into()));
        assert!(matches!(misuse, StoreError::Misuse(_)), "{misuse:?}");
        assert!(!misuse.is_io());
        let open = StoreError::from(redb::DatabaseError::DatabaseAlreadyOpen);
        assert!(matches!(open, StoreError::Open(_)), "{open:?}");
        assert!(!open.is_io());
    }
}
