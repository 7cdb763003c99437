//! The commands an operator sends tagents, and what became of one.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::{CommandOutcome, TagentId};

/// A command an operator sends to tagents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub enum Command {
    #[serde(rename = "reload")]
    Reload,
    #[serde(rename = "resetcred")]
    Resetcred,
    #[serde(rename = "status-check", alias = "statusCheck")]
    StatusCheck,
}

impl Command {
    pub const ALL: [Command; 3] = [Command::Reload, Command::Resetcred, Command::StatusCheck];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Reload => "reload",
            Command::Resetcred => "resetcred",
            Command::StatusCheck => "status-check",
        }
    }

    /// The command named `s` (as [`Command::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Command> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The outcome of a command for one tagent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommandResult {
    pub id: TagentId,
    pub command: String,
    /// `delivered`, `connected`, `not-connected`, `session-closed`,
    /// `timeout`, `failed` or `not-found`.
    #[schema(value_type = String)]
    pub result: CommandOutcome,
    pub message: Option<String>,
}

impl CommandResult {
    pub fn new(
        id: TagentId,
        command: Command,
        result: CommandOutcome,
        message: Option<String>,
    ) -> Self {
        CommandResult {
            id,
            command: command.as_str().to_owned(),
            result,
            message,
        }
    }
}
