//! The last reachability check of each tagent: can the hub connect and log
//! in (`echo`). Kept in memory only: a restarted hub has none until the
//! next check.

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Greeting, OperationError};
use crate::model::TagentId;

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reachability {
    /// Whether the hub connected, logged in and got its echo back.
    pub reachable: bool,
    /// `ok`, or why not (the `result` label of
    /// `tagent_hub_listener_operations_total`).
    pub result: String,
    /// What went wrong, for an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the tagent said of itself: `Linux`, `windows`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ostype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
    /// `Tagent1.1`, or `Tagent1.1s` (encrypted chunks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// When it was checked, Unix milliseconds.
    pub checked_ms: u64,
}

impl Reachability {
    pub fn new(result: &Result<Greeting, OperationError>, checked_ms: u64) -> Reachability {
        match result {
            Ok(g) => Reachability {
                reachable: true,
                result: "ok".into(),
                message: None,
                ostype: Some(g.ostype.clone()),
                charset: Some(g.charset.clone()),
                protocol: Some(g.mode.as_str().into()),
                checked_ms,
            },
            Err(e) => Reachability {
                reachable: false,
                result: e.label().unwrap_or("failed").into(),
                message: Some(e.to_string()),
                ostype: None,
                charset: None,
                protocol: None,
                checked_ms,
            },
        }
    }
}

/// The last check of every tagent checked since the hub started.
#[derive(Debug, Default)]
pub struct LastChecks(DashMap<TagentId, Reachability>);

impl LastChecks {
    pub fn set(&self, id: TagentId, r: Reachability) {
        self.0.insert(id, r);
    }

    pub fn get(&self, id: TagentId) -> Option<Reachability> {
        self.0.get(&id).map(|r| r.clone())
    }

    /// Forget a tagent (deleted).
    pub fn forget(&self, id: TagentId) {
        self.0.remove(&id);
    }
}
