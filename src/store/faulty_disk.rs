//! A disk that fills up on demand, for tests: redb over the real file,
//! whose writes fail with `ENOSPC` while the disk is [`Faults::fill`]ed, as
//! redb's own tests simulate crashes with a `CrashBackend`. The store's
//! failed-commit and reopen paths then run in every `cargo test`, without
//! the root a real full disk needs (tests/disk_full.rs).

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use super::StoreError;

/// The switch every backend opened on one file shares, across reopens.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    full: AtomicBool,
    refused: AtomicU64,
}

impl Faults {
    /// From now on every write fails, as on a full disk.
    pub(crate) fn fill(&self) {
        self.full.store(true, Ordering::SeqCst);
    }

    /// Space is back.
    pub(crate) fn free(&self) {
        self.full.store(false, Ordering::SeqCst);
    }

    /// Writes refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn check(&self) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct FaultyDisk {
    inner: FileBackend,
    faults: Arc<Faults>,
}

impl FaultyDisk {
    /// The file at `path` (created if missing) behind `faults`.
    pub(crate) fn open(path: &Path, faults: Arc<Faults>) -> Result<FaultyDisk, StoreError> {
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::file("open", path.into(), e))?;
        Ok(FaultyDisk {
            inner: FileBackend::new(file)?,
            faults,
        })
    }
}

impl StorageBackend for FaultyDisk {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.faults.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.faults.check()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.faults.check()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
