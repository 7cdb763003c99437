//! One operation over a tagent's listener as the audit log keeps it: who
//! (an admin token's fingerprint, never the token), what, on which tagent,
//! with what result, when.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::TagentId;

/// An entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Its place in the log, from 1 (given by the store; 0 before).
    pub seq: u64,
    /// When the operation ended, Unix milliseconds.
    pub at_ms: u64,
    /// Who: `token:` and the first 8 hex digits of the admin token's
    /// SHA-256, never the token.
    pub who: String,
    /// What: `reachability`, `read-config`, `write-config`, `set-config`,
    /// `list-logs`, `download-log`, `reload`.
    pub action: String,
    /// On which tagent.
    pub tagent: TagentId,
    /// `ok`, `unchanged`, or why it failed (a metrics label: `connect_failed`,
    /// `wrong_credential`, ...).
    pub result: String,
    /// The keys set, the log's name, the error's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
