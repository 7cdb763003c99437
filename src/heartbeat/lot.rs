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
//! owns one strong reference to the session (from [`Arc::into_raw`]).
//! [`Lot::watch`] hands the socket back as a [`Watched`], which cannot be
//! copied or cloned and which only [`Lot::forget`] takes apart: every
//! registration is removed exactly once, with the reference it made. An
//! event the thread has already taken from the kernel may still name a
//! session whose registration is being removed by another thread, so
//! references are never dropped where a registration is removed: they are
//! queued, and the lot's thread drops them after it has handled every event
//! of its current batch. A late event for a session that is no longer
//! parked is a spurious wake, which sessions tolerate.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
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

/// A socket the lot watches for a session. Made only by [`Lot::watch`] and
/// consumed only by [`Lot::forget`]; it owns the socket, so it is neither
/// `Copy` nor `Clone`. It keeps no copy of its token (the session's
/// address): it waits in that session's own parking slot, which keeps
/// `Session` within its size class, and goes back with that session.
#[must_use = "a watched socket goes back through Lot::forget, or its session leaks"]
pub(crate) struct Watched {
    stream: TcpStream,
}

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

    /// Watch `stream` for `session`: its next byte or close wakes the
    /// session. A socket that is readable already wakes it at once. On
    /// failure the socket is handed back, unwatched.
    #[allow(unsafe_code)]
    pub(crate) fn watch(
        &self,
        stream: TcpStream,
        session: &Arc<Session>,
    ) -> Result<Watched, (io::Error, TcpStream)> {
        let token = Arc::into_raw(session.clone()) as usize;
        let fd = stream.as_raw_fd();
        match self
            .registry
            .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
        {
            Ok(()) => Ok(Watched { stream }),
            Err(e) => {
                // Safety: `token` came from `Arc::into_raw` just above and was
                // never registered, so no event can name it.
                drop(unsafe { Arc::from_raw(token as *const Session) });
                Err((e, stream))
            }
        }
    }

    /// Stop watching a socket, and hand it back. `session` is the one it
    /// was watched for (the one whose parking slot held it).
    pub(crate) fn forget(&self, watched: Watched, session: &Arc<Session>) -> TcpStream {
        let Watched { stream } = watched;
        // ENOENT cannot happen (a `Watched` is forgotten once); any other
        // error leaves an fd that is about to be closed or re-registered.
        let _ = self.registry.deregister(&mut SourceFd(&stream.as_raw_fd()));
        self.released.lock().push(Arc::as_ptr(session) as usize);
        stream
    }

    /// Ask the thread to end (after its current batch).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }

    #[allow(unsafe_code)]
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
                // Safety: the registration this event came from holds a
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

    #[allow(unsafe_code)]
    fn drop_released(&self) {
        let released = std::mem::take(&mut *self.released.lock());
        for ptr in released {
            // Safety: queued by `forget` for the registration it removed, whose
            // `Watched` it consumed (so once per registration), and no event
            // can name it after this batch.
            drop(unsafe { Arc::from_raw(ptr as *const Session) });
        }
    }
}
