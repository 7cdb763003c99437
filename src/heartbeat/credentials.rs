//! The credential reader: native handshakes' credentials, read in batches.
//!
//! A connect storm brings thousands of handshakes at once, each needing its
//! account's credential from the store. Read one at a time (a blocking task
//! each), every handshake cost two thread hand-offs and a read transaction
//! of its own, and on a busy machine the hand-offs (each a thread waiting
//! for a core) were what the storm waited on. Here one thread per hub takes
//! every request queued (up to [`BATCH`]), reads them all from one snapshot
//! ([`RegistryStore::credentials`]) and answers each over its oneshot. The
//! queue is bounded: when it is full, handshakes wait their turn (within
//! their first-message deadline) instead of piling up work.

use std::io;
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot};

use crate::store::{AccountKey, RegistryStore, StoreError};

/// Requests answered from one read.
const BATCH: usize = 512;
/// Requests queued at most; past that, handshakes wait to be queued.
const QUEUE: usize = 2 * BATCH;

/// What the store answered for one account.
pub type Answer = Result<Option<String>, StoreError>;

struct Request {
    tenant: Box<str>,
    ip: IpAddr,
    port: u16,
    reply: oneshot::Sender<Answer>,
}

/// The hub's handle to its reader thread, which ends when this is dropped.
pub(crate) struct CredentialReader {
    tx: mpsc::Sender<Request>,
}

impl CredentialReader {
    /// Start the reader thread. It holds the store weakly: it never keeps
    /// the store (and its file) open after the registry let it go.
    pub(crate) fn start(store: &Arc<dyn RegistryStore>) -> io::Result<CredentialReader> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let store = Arc::downgrade(store);
        std::thread::Builder::new()
            .name("credential-reader".into())
            .spawn(move || run(store, rx))?;
        Ok(CredentialReader { tx })
    }

    /// The credential of (tenant, ip, port). Waits for room in the queue
    /// when it is full. `None` when the reader is gone (shutdown).
    pub(crate) async fn read(&self, tenant: &str, ip: IpAddr, port: u16) -> Option<Answer> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            tenant: tenant.into(),
            ip,
            port,
            reply,
        };
        self.tx.send(request).await.ok()?;
        answer.await.ok()
    }
}

fn run(store: Weak<dyn RegistryStore>, mut rx: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        // Handshakes that gave up (deadline, closed connection) need no read.
        batch.retain(|r| !r.reply.is_closed());
        answer(&store, &mut batch);
    }
}

/// Read and answer every request of `batch`, leaving it empty. A request
/// dropped unanswered fails its handshake.
fn answer(store: &Weak<dyn RegistryStore>, batch: &mut Vec<Request>) {
    if batch.is_empty() {
        return;
    }
    let Some(store) = store.upgrade() else {
        batch.clear();
        return;
    };
    let keys: Vec<AccountKey<'_>> = batch.iter().map(|r| (&*r.tenant, r.ip, r.port)).collect();
    // A panic fails this batch's handshakes, not every later one.
    let answers = catch_unwind(AssertUnwindSafe(|| store.credentials(&keys)));
    drop(keys);
    match answers {
        Ok(answers) => {
            for (request, answer) in batch.drain(..).zip(answers) {
                let _ = request.reply.send(answer);
            }
        }
        Err(_) => tracing::error!(
            requests = batch.len(),
            "reading a batch of credentials panicked; its handshakes fail"
        ),
    }
    batch.clear();
}
