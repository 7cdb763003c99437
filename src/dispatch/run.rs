//! Where a command for one tagent runs, and running it on this hub.

use std::time::Duration;

use super::command::{Command, CommandResult};
use super::forward;
use crate::heartbeat::{CommandKind, Hub};
use crate::model::{CommandOutcome, TagentId};
use crate::registry::Registry;

/// How long after `resetcred` the tagent may register a new credential
/// (it restarts and registers within seconds).
pub const RESETCRED_WINDOW: Duration = Duration::from_secs(600);

/// Runs commands for tagents: a borrowed pair of the registry and the
/// heartbeat server.
#[derive(Clone, Copy)]
pub struct Dispatch<'a> {
    pub registry: &'a Registry,
    pub hub: &'a Hub,
}

impl Dispatch<'_> {
    /// Run one command for one tagent. `status-check` only asks whether a
    /// live session exists; the others go down the session (SPEC §3.2),
    /// forwarded to the hub that holds it when that is another hub of the
    /// runner group.
    pub async fn run(self, id: TagentId, command: Command) -> CommandResult {
        let elsewhere = self.hub.session_of(id).is_none() && self.registry.liveness().is_live(id);
        match command {
            Command::StatusCheck if elsewhere => CommandResult::new(
                id,
                command,
                CommandOutcome::Connected,
                Some("on another hub of the runner group".into()),
            ),
            Command::Reload | Command::Resetcred if elsewhere => self.forward(id, command).await,
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
