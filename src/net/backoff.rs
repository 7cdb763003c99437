//! What both accept loops (heartbeat, HTTP) do when `accept(2)` fails.
//!
//! Out of file descriptors (`EMFILE`/`ENFILE`) or memory, accepting again at
//! once would spin: the loop backs off (5 ms doubling to a second), counts
//! it in `tagent_hub_accept_errors_total{listener, kind}`, warns at most
//! every 10 s, and keeps serving the connections it has. Other errors (an
//! aborted handshake) are counted and the next accept goes ahead.

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::shutdown::Shutdown;

// Linux errno values of resource exhaustion in accept(2).
const ENOMEM: i32 = 12;
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;
const ENOBUFS: i32 = 105;

const FIRST: Duration = Duration::from_millis(5);
const MOST: Duration = Duration::from_secs(1);

pub struct AcceptBackoff {
    listener: &'static str,
    next: Duration,
    last_warning: Option<Instant>,
}

impl AcceptBackoff {
    /// `listener` labels the counter: `heartbeat` or `http`.
    pub fn new(listener: &'static str) -> AcceptBackoff {
        AcceptBackoff {
            listener,
            next: FIRST,
            last_warning: None,
        }
    }

    /// The next connection, or `None` once shutdown fires. `open` says how
    /// many connections the caller holds (for the warning).
    pub async fn accept(
        &mut self,
        listener: &TcpListener,
        shutdown: &Shutdown,
        open: impl Fn() -> usize,
    ) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.wait() => return None,
                r = listener.accept() => r,
            };
            match accepted {
                Ok(x) => {
                    self.next = FIRST;
                    return Some(x);
                }
                Err(e) => {
                    if self.pause(&e, open(), shutdown).await.is_break() {
                        return None;
                    }
                }
            }
        }
    }

    /// Count `e` and, when it is resource exhaustion, wait before the next
    /// accept. `Break` when shutdown came meanwhile.
    async fn pause(&mut self, e: &io::Error, open: usize, shutdown: &Shutdown) -> ControlFlow<()> {
        let kind = match e.raw_os_error() {
            Some(EMFILE) => "emfile",
            Some(ENFILE) => "enfile",
            Some(ENOMEM) | Some(ENOBUFS) => "enomem",
            _ => "other",
        };
        metrics::counter!("tagent_hub_accept_errors_total", "listener" => self.listener, "kind" => kind)
            .increment(1);
        if kind == "other" {
            return ControlFlow::Continue(());
        }
        if self
            .last_warning
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            tracing::warn!(listener = self.listener, error = %e, open, "out of file descriptors: accept paused, open connections keep going");
            self.last_warning = Some(Instant::now());
        }
        let wait = self.next;
        self.next = (self.next * 2).min(MOST);
        tokio::select! {
            _ = shutdown.wait() => ControlFlow::Break(()),
            _ = tokio::time::sleep(wait) => ControlFlow::Continue(()),
        }
    }
}
