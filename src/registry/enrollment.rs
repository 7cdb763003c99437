//! The registry's side of registration policy (SPEC §6): operators' jobs
//! on enrollment tokens and pending registrations, done by the writer so
//! they are decided and written with the registrations that use them.
//! The checks themselves are the writer's (`writer/enroll.rs`).

use crate::model::{EnrollToken, Pending};

pub use super::writer::PolicyConfig;

/// An operator's change to tokens or pending registrations.
#[derive(Debug, Clone)]
pub enum EnrollJob {
    CreateToken(Box<EnrollToken>),
    /// Revoke the token of this id (it stays listed, revoked).
    RevokeToken(String),
    /// Approve the pending registration of this id; `by`: who approved it.
    Approve {
        id: String,
        by: String,
    },
    /// Drop the pending registration of this id (it comes back at the
    /// tagent's next attempt).
    Reject {
        id: String,
    },
}

/// What an enrollment job left, once durable.
#[derive(Debug, Clone)]
pub enum EnrollOutcome {
    Token(EnrollToken),
    Pending(Pending),
}
