//! Why an exchange with a tagent's listener failed (every peer is hostile:
//! each way it can misbehave is a variant, with a metrics label), and why
//! an operation did.

use std::net::SocketAddr;
use std::time::Duration;

use super::CredentialError;
use super::codec::CodecError;
use super::handshake::HandshakeError;
use crate::model::TagentId;
use crate::store::StoreError;

/// One connection's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenerError {
    #[error("cannot connect to the tagent's listener at {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the tagent's listener did not answer within {} s ({stage})", waited.as_secs_f32())]
    Timeout {
        waited: Duration,
        stage: &'static str,
    },
    #[error("the peer is not a tagent: {0}")]
    NotATagent(#[source] HandshakeError),
    #[error("wrong credential: {0}")]
    WrongCredential(#[source] HandshakeError),
    #[error("the tagent refused the hub's answer to its challenge (auth failed)")]
    AuthRefused,
    #[error("the tagent broke the protocol: {0}")]
    Protocol(String),
    #[error("the tagent's chunks: {0}")]
    Chunks(#[source] CodecError),
    #[error("the tagent sent more than the {max} bytes allowed")]
    TooLarge { max: u64 },
    #[error("the tagent closed the connection before the end of its answer")]
    ClosedEarly,
    #[error("the tagent reported: {0}")]
    Failed(String),
    #[error("not found on the tagent: {0}")]
    NotFound(String),
    #[error("i/o with the tagent's listener: {0}")]
    Io(#[source] std::io::Error),
}

impl From<CodecError> for ListenerError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Io(e) => ListenerError::Io(e),
            CodecError::Truncated => ListenerError::ClosedEarly,
            e => ListenerError::Chunks(e),
        }
    }
}

impl ListenerError {
    /// Every label [`ListenerError::label`] gives.
    pub const LABELS: [&'static str; 12] = [
        "connect_failed",
        "timeout",
        "not_a_tagent",
        "wrong_credential",
        "auth_refused",
        "protocol_error",
        "bad_chunk",
        "too_large",
        "closed_early",
        "failed",
        "not_found",
        "io",
    ];

    /// The `result` label of the operations counter.
    pub fn label(&self) -> &'static str {
        match self {
            ListenerError::Connect { .. } => "connect_failed",
            ListenerError::Timeout { .. } => "timeout",
            ListenerError::NotATagent(_) => "not_a_tagent",
            ListenerError::WrongCredential(_) => "wrong_credential",
            ListenerError::AuthRefused => "auth_refused",
            ListenerError::Protocol(_) => "protocol_error",
            ListenerError::Chunks(_) => "bad_chunk",
            ListenerError::TooLarge { .. } => "too_large",
            ListenerError::ClosedEarly => "closed_early",
            ListenerError::Failed(_) => "failed",
            ListenerError::NotFound(_) => "not_found",
            ListenerError::Io(_) => "io",
        }
    }
}

/// A peer's text for an error message: lossy, at most 200 characters.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Why an operation on a tagent (one or more connections) did not happen
/// or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperationError {
    #[error("no tagent with id {0}")]
    NoTagent(TagentId),
    #[error("tagent {0} has no stored credential for its primary ip")]
    NoCredential(TagentId),
    #[error("tagent {id}: its stored credential is unusable: {source}")]
    BadCredential {
        id: TagentId,
        #[source]
        source: CredentialError,
    },
    #[error("cannot read tagent {id}'s credential: {source}")]
    Store {
        id: TagentId,
        #[source]
        source: StoreError,
    },
    #[error("reading tagent {0}'s credential panicked")]
    StorePanicked(TagentId),
    #[error("another operation on tagent {0} is running; try again when it ends")]
    Busy(TagentId),
    #[error("the hub is running its {0} operations at most; try again later")]
    HubBusy(usize),
    #[error("the operation did not finish within {} s", .0.as_secs())]
    Deadline(Duration),
    #[error("'{0}' is not a plain file name")]
    BadName(String),
    #[error("tagent {id} lists no log file '{name}'")]
    NoSuchLog { id: TagentId, name: String },
    #[error("not a valid config: {0}")]
    BadConfig(#[from] super::ConfigError),
    #[error("tagent {id}: {source}")]
    Listener {
        id: TagentId,
        #[source]
        source: ListenerError,
    },
}

impl OperationError {
    /// Every label [`OperationError::label`] gives besides the listener's.
    pub const LABELS: [&'static str; 6] = [
        "no_credential",
        "bad_credential",
        "store_error",
        "busy",
        "hub_busy",
        "deadline",
    ];

    /// The `result` label of the operations counter; `None` for a request
    /// refused before any tagent was chosen (unknown id, bad name).
    pub fn label(&self) -> Option<&'static str> {
        Some(match self {
            OperationError::NoTagent(_)
            | OperationError::BadName(_)
            | OperationError::NoSuchLog { .. }
            | OperationError::BadConfig(_) => return None,
            OperationError::NoCredential(_) => "no_credential",
            OperationError::BadCredential { .. } => "bad_credential",
            OperationError::Store { .. } | OperationError::StorePanicked(_) => "store_error",
            OperationError::Busy(_) => "busy",
            OperationError::HubBusy(_) => "hub_busy",
            OperationError::Deadline(_) => "deadline",
            OperationError::Listener { source, .. } => source.label(),
        })
    }
}
