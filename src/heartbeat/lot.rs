//! Where idle sessions' sockets wait, off tokio's reactor.
//!
//! A socket registered with tokio costs a 256-byte readiness record (cache-line
//! aligned) for as long as it is registered: a quarter of an idle session. A
//! parked session's socket is handed back to the kernel's care instead: it is
//! deregistered from tokio and watched by this lot's own `epoll` (through
//! mio), where it costs no memory of ours. Its first readable byte (or its
//! peer's close) brings the session back: the lot's thread wakes the session,
//! whose task registers the socket with tokio again.
//!
//! Each registration's token is the session's address, and the registration
//! owns one strong reference to the session (from [`Arc::into_raw`]). An
//! event the thread has already taken from the kernel may still name a
//! session whose registration is being removed by another thread, so
//! references are never dropped where a registration is removed: they are
//! queued, and the lot's thread drops them after it has handled every event
//! of its current batch. A late event for a session that is no longer
//! parked is a spurious wake, which sessions tolerate.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Wake;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use parking_lot::Mutex;

use super::session::Session;

/// The token of the thread's own waker (never a session's address).
const WAKER: Token = Token(usize::MAX);
/// Events taken from the kernel per wait.
const BATCH: usize = 1024;
/// The longest a queued reference waits to be dropped when nothing happens.
const IDLE_WAIT: Duration = Duration::from_secs(1);

pub(crate) struct Lot {
    registry: Registry,
    waker: mio::Waker,
    /// References of removed registrations, dropped by the lot's thread.
    released: Mutex<Vec<usize>>,
    stop: AtomicBool,
}

impl Lot {
    /// Start the lot and its thread.
    pub(crate) fn start() -> io::Result<Arc<Lot>> {
        let poll = Poll::new()?;
        let lot = Arc::new(Lot {
            registry: poll.registry().try_clone()?,
            waker: mio::Waker::new(poll.registry(), WAKER)?,
            released: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let thread_lot = lot.clone();
        std::thread::Builder::new()
            .name("tagent-hub-lot".into())
            .spawn(move || thread_lot.run(poll))?;
        Ok(lot)
    }

    /// Watch `fd` for `session`: its next byte or close wakes the session.
    /// An fd that is readable already wakes it at once.
    pub(crate) fn watch(&self, fd: RawFd, session: &Arc<Session>) -> io::Result<()> {
        let token = Arc::into_raw(session.clone()) as usize;
        let registered =
            self.registry
                .register(&mut SourceFd(&fd), Token(token), Interest::READABLE);
        if registered.is_err() {
            // SAFETY: `token` came from `Arc::into_raw` just above and was
            // never registered, so no event can name it.
            drop(unsafe { Arc::from_raw(token as *const Session) });
        }
        registered
    }

    /// Stop watching `fd` for `session` (its registration from [`Lot::watch`]).
    pub(crate) fn forget(&self, fd: RawFd, session: &Arc<Session>) {
        // ENOENT cannot happen (each registration is removed once); any other
        // error leaves an fd that is about to be closed or re-registered.
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        self.released.lock().push(Arc::as_ptr(session) as usize);
    }

    /// Ask the thread to end (after its current batch).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }

    fn run(&self, mut poll: Poll) {
        let mut events = Events::with_capacity(BATCH);
        while !self.stop.load(Ordering::Acquire) {
            if let Err(e) = poll.poll(&mut events, Some(IDLE_WAIT))
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(error = %e, "the idle-session watcher cannot wait");
                std::thread::sleep(IDLE_WAIT);
                continue;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                let ptr = event.token().0 as *const Session;
                // SAFETY: the registration this event came from holds a
                // strong reference, dropped only by this thread in
                // `drop_released`, after this loop.
                let session = unsafe {
                    Arc::increment_strong_count(ptr);
                    Arc::from_raw(ptr)
                };
                session.wake();
            }
            self.drop_released();
        }
        self.drop_released();
    }

    fn drop_released(&self) {
        let released = std::mem::take(&mut *self.released.lock());
        for ptr in released {
            // SAFETY: queued by `forget` for a registration it removed; each
            // registration is removed once, and no event can name it after
            // this batch.
            drop(unsafe { Arc::from_raw(ptr as *const Session) });
        }
    }
}
