//! Where a command for one tagent runs, and running it on this hub.

use std::time::Duration;

use super::command::{Command, CommandResult};
use super::forward;
use crate::heartbeat::{CommandKind, Hub};
use crate::listener::{ListenerError, OperationError, Operations};
use crate::model::{CommandOutcome, TagentId};
use crate::registry::Registry;

/// How long after `resetcred` the tagent may register a new credential
/// (it restarts and registers within seconds).
pub const RESETCRED_WINDOW: Duration = Duration::from_secs(600);

/// Runs commands for tagents: borrowed, the registry, the heartbeat
/// server, and the listener operations (a reload without a session), on
/// behalf of `who` (the audit log's name of an admin token).
#[derive(Clone, Copy)]
pub struct Dispatch<'a> {
    pub registry: &'a Registry,
    pub hub: &'a Hub,
    pub operations: &'a Operations,
    pub who: &'a str,
}

impl Dispatch<'_> {
    /// Run one command for one tagent. `status-check` only asks whether a
    /// live session exists; the others go down the session (SPEC §3.2),
    /// forwarded to the hub that holds it when that is another hub of the
    /// runner group. A `reload` for a tagent with no session anywhere goes
    /// to its listener (SPEC §5.5); `resetcred` needs the session.
    pub async fn run(self, id: TagentId, command: Command) -> CommandResult {
        let here = self.hub.session_of(id).is_some();
        let elsewhere = !here && self.registry.liveness().is_live(id);
        match command {
            Command::StatusCheck if elsewhere => CommandResult::new(
                id,
                command,
                CommandOutcome::Connected,
                Some("on another hub of the runner group".into()),
            ),
            Command::Reload | Command::Resetcred if elsewhere => self.forward(id, command).await,
            Command::Reload if !here && self.registry.contains(id) => {
                self.reload_via_listener(id).await
            }
            _ => self.run_local(id, command).await,
        }
    }

    /// Run one command on this hub's session of the tagent, if it has one
    /// (also what a command forwarded from another hub runs).
    pub async fn run_local(self, id: TagentId, command: Command) -> CommandResult {
        let result = |outcome, message| CommandResult::new(id, command, outcome, message);
        if !self.registry.contains(id) {
            return result(
                CommandOutcome::NotFound,
                Some(format!("no tagent with id {id}")),
            );
        }
        let kind = match command {
            Command::StatusCheck => {
                return match self.hub.session_of(id) {
                    Some(_) => result(CommandOutcome::Connected, None),
                    None => result(CommandOutcome::NotConnected, None),
                };
            }
            Command::Reload => CommandKind::Reload,
            Command::Resetcred => {
                // The tagent's next registration brings a new credential:
                // let it in (SPEC §6), before it can arrive.
                if self.hub.session_of(id).is_some()
                    && let Err(e) = self
                        .registry
                        .open_credential_change(id, RESETCRED_WINDOW)
                        .await
                {
                    return result(
                        CommandOutcome::Failed,
                        Some(format!("cannot allow the new credential: {e}")),
                    );
                }
                CommandKind::Resetcred
            }
        };
        match self.hub.command(id, kind).await {
            Ok(()) => result(CommandOutcome::Delivered, None),
            Err(e) => result(e.outcome(), Some(e.to_string())),
        }
    }

    /// `reload` on the tagent's own listener. Bounded for a batch over many
    /// unreachable tagents: the listener's connect timeout (3 s) each, the
    /// hub's operations semaphore for how many at once, and the operation
    /// timeout for how long one waits for room (then `hub busy`).
    async fn reload_via_listener(self, id: TagentId) -> CommandResult {
        let (outcome, message) = match self.operations.reload(self.who, id).await {
            Ok(()) => (
                CommandOutcome::Delivered,
                "no heartbeat session: via the tagent's listener".to_owned(),
            ),
            Err(e) => (
                listener_outcome(&e),
                format!("no heartbeat session, and over the tagent's listener: {e}"),
            ),
        };
        CommandResult::new(id, Command::Reload, outcome, Some(message))
    }

    /// Run `command` on the hub that holds tagent `id`'s session.
    async fn forward(self, id: TagentId, command: Command) -> CommandResult {
        let result = |outcome, message| CommandResult::new(id, command, outcome, Some(message));
        let holder = match forward::holder(self.registry, id).await {
            Ok(h) => h,
            Err(e) => {
                return result(
                    CommandOutcome::NotConnected,
                    format!("connected on another hub: {e}"),
                );
            }
        };
        let hub = &holder.heartbeat;
        let within = self.hub.settings().command_timeout + Duration::from_secs(5);
        let post = forward::post(self.registry, &holder.http, id, command);
        match tokio::time::timeout(within, post).await {
            Ok(Ok(reply)) => {
                let outcome =
                    CommandOutcome::parse(&reply.result).unwrap_or(CommandOutcome::Failed);
                let message = reply.message.map_or_else(
                    || format!("via the hub at {hub}"),
                    |m| format!("via the hub at {hub}: {m}"),
                );
                result(outcome, message)
            }
            Ok(Err(e)) => result(
                CommandOutcome::Failed,
                format!("cannot reach the hub at {hub}: {e}"),
            ),
            Err(_) => result(
                CommandOutcome::Timeout,
                format!("the hub at {hub} did not answer within {within:?}"),
            ),
        }
    }
}

/// A listener reload's failure as a command's outcome: nothing listening
/// (or no connection within 3 s) is `not-connected`, no answer in time (or
/// no room on the hub in time) `timeout`, the rest `failed`.
fn listener_outcome(e: &OperationError) -> CommandOutcome {
    match e {
        OperationError::NoTagent(_) => CommandOutcome::NotFound,
        OperationError::Listener {
            source:
                ListenerError::Connect { .. }
                | ListenerError::Timeout {
                    stage: "connect", ..
                },
            ..
        } => CommandOutcome::NotConnected,
        OperationError::Listener {
            source: ListenerError::Timeout { .. },
            ..
        }
        | OperationError::Deadline(_)
        | OperationError::HubBusy(_) => CommandOutcome::Timeout,
        _ => CommandOutcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_listener_reload_failure_reads_as_a_command_outcome() {
        let listener = |source| OperationError::Listener { id: 7, source };
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let addr = "127.0.0.1:3939".parse().unwrap();
        let cases = [
            (OperationError::NoTagent(7), CommandOutcome::NotFound),
            (
                listener(ListenerError::Connect {
                    addr,
                    source: refused,
                }),
                CommandOutcome::NotConnected,
            ),
            (
                listener(ListenerError::Timeout {
                    waited: Duration::from_secs(3),
                    stage: "connect",
                }),
                CommandOutcome::NotConnected,
            ),
            (
                listener(ListenerError::Timeout {
                    waited: Duration::from_secs(30),
                    stage: "reload status",
                }),
                CommandOutcome::Timeout,
            ),
            (OperationError::HubBusy(64), CommandOutcome::Timeout),
            (
                OperationError::Deadline(Duration::from_secs(60)),
                CommandOutcome::Timeout,
            ),
            (listener(ListenerError::AuthRefused), CommandOutcome::Failed),
            (OperationError::NoCredential(7), CommandOutcome::Failed),
            (OperationError::Busy(7), CommandOutcome::Failed),
        ];
        for (e, outcome) in cases {
            assert_eq!(listener_outcome(&e), outcome, "{e}");
        }
    }
}
