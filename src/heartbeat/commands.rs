//! Commands pushed down a session (SPEC §3.2): the queue each session
//! keeps, and what the caller learns.
//!
//! The protocols decide when a queued command may go out (compat: only into
//! a quiet session, see `compat.rs`; native: at once, with a request id).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::oneshot;

use super::hub::Hub;
use super::proto::CommandKind;
use super::session::Session;
use crate::model::{CommandOutcome, TagentId};

/// What a session tells the caller of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Written to the session (compat), or acknowledged by the agent (native).
    Delivered,
    /// The agent answered the command with a failure (native only).
    Failed(String),
    /// The session closed before the command could go out.
    SessionClosed,
}

pub struct PendingCommand {
    pub kind: CommandKind,
    /// `None` for the hub's own reloads of unregistered sessions.
    pub reply: Option<oneshot::Sender<Delivery>>,
}

/// Commands waiting to go out: one pointer while there are none.
#[derive(Default)]
#[allow(
    clippy::box_collection,
    reason = "the box is the point: 8 bytes in every idle session, not a VecDeque's 32"
)]
pub struct Commands(Option<Box<VecDeque<PendingCommand>>>);

impl Commands {
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    pub fn push_back(&mut self, c: PendingCommand) {
        self.0.get_or_insert_default().push_back(c);
    }

    pub fn pop_front(&mut self) -> Option<PendingCommand> {
        let q = self.0.as_mut()?;
        let c = q.pop_front();
        if q.is_empty() {
            self.0 = None;
        }
        c
    }

    pub fn retain(&mut self, keep: impl FnMut(&PendingCommand) -> bool) {
        if let Some(q) = self.0.as_mut() {
            q.retain(keep);
            if q.is_empty() {
                self.0 = None;
            }
        }
    }

    pub fn take(&mut self) -> VecDeque<PendingCommand> {
        self.0.take().map(|q| *q).unwrap_or_default()
    }
}

/// Why a command could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("tagent {0} has no live heartbeat session on this hub")]
    NotConnected(TagentId),
    #[error("the session closed before the command was delivered")]
    SessionClosed,
    #[error("no quiet moment in the session within {0:?}; the command was withdrawn")]
    Timeout(Duration),
    #[error("the agent refused the command: {0}")]
    Failed(String),
}

impl CommandError {
    pub fn outcome(&self) -> CommandOutcome {
        match self {
            CommandError::NotConnected(_) => CommandOutcome::NotConnected,
            CommandError::SessionClosed => CommandOutcome::SessionClosed,
            CommandError::Timeout(_) => CommandOutcome::Timeout,
            CommandError::Failed(_) => CommandOutcome::Failed,
        }
    }
}

impl Session {
    /// Queue a command; the task sends it when the session allows.
    pub fn push_command(&self, kind: CommandKind, reply: Option<oneshot::Sender<Delivery>>) {
        self.state
            .lock()
            .commands
            .push_back(PendingCommand { kind, reply });
        self.post();
    }

    /// Drop commands whose caller stopped waiting.
    pub fn withdraw_command(&self, kind: CommandKind) {
        self.state
            .lock()
            .commands
            .retain(|c| c.kind != kind || c.reply.as_ref().is_none_or(|r| !r.is_closed()));
    }

    /// Fail every queued command: the session is gone.
    pub fn drain_commands(&self) {
        let commands = self.state.lock().commands.take();
        for c in commands {
            if let Some(reply) = c.reply {
                let _ = reply.send(Delivery::SessionClosed);
            }
        }
    }
}

impl Hub {
    /// Send `kind` down the tagent's session and wait for the outcome.
    pub async fn command(&self, id: TagentId, kind: CommandKind) -> Result<(), CommandError> {
        let session = self.session_of(id).ok_or(CommandError::NotConnected(id))?;
        let (tx, rx) = oneshot::channel();
        session.push_command(kind, Some(tx));
        let timeout = self.settings().command_timeout;
        let delivery = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(delivery)) => delivery,
            Ok(Err(_)) => Delivery::SessionClosed,
            Err(_) => {
                session.withdraw_command(kind);
                self.metrics().command(kind, "timeout");
                return Err(CommandError::Timeout(timeout));
            }
        };
        let (label, result) = match delivery {
            Delivery::Delivered => ("delivered", Ok(())),
            Delivery::Failed(m) => ("failed", Err(CommandError::Failed(m))),
            Delivery::SessionClosed => ("session_closed", Err(CommandError::SessionClosed)),
        };
        self.metrics().command(kind, label);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_queue_frees_itself_when_empty() {
        let mut q = Commands::default();
        assert!(q.is_empty());
        for kind in [CommandKind::Reload, CommandKind::Resetcred] {
            q.push_back(PendingCommand { kind, reply: None });
        }
        q.retain(|c| c.kind != CommandKind::Reload);
        assert_eq!(q.pop_front().map(|c| c.kind), Some(CommandKind::Resetcred));
        assert!(q.0.is_none());
        assert!(q.pop_front().is_none());
    }
}
