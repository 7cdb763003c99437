//! Why a registration was refused. Every message is written for the operator
//! who reads it in the tagent's log.

use std::net::IpAddr;

use crate::model::{TagentId, TokenRefusal};
use crate::store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RegisterError {
    /// Rule 1: the request itself is unusable.
    #[error("invalid registration: {0}")]
    Invalid(String),
    /// Rule 2: the ip is listed by more than one tagent on that port.
    #[error(
        "the current primary IP is included in multiple tagents: ip {ip} port {port} is held by {tagents}"
    )]
    MultipleTagents {
        ip: IpAddr,
        port: u16,
        tagents: String,
    },
    /// Rule 3: the tagent this registration resolves to is connected right now.
    #[error(
        "IP conflict: an active tagent already exists: tagent {id} ({ip}:{port}) holds a live heartbeat session"
    )]
    IpConflict { id: TagentId, ip: IpAddr, port: u16 },
    /// Rule 4: no runner group network (with a runner) contains the primary ip.
    #[error("no runner group with a runner has a network that contains ip {0}")]
    NoRunnerGroup(IpAddr),
    /// Rule 5: `ipString` lists another tagent's primary ip on the same port.
    #[error(
        "ipString contains the primary IP of other tagents on port {port}: {tagents}; remove those ips from ipString and register again"
    )]
    ContainsOtherPrimary { port: u16, tagents: String },
    /// Rule 6: the new primary ip is already another tagent's primary ip.
    #[error("primary ip {ip} port {port} already belongs to another tagent: {tagents}")]
    PrimaryTaken {
        ip: IpAddr,
        port: u16,
        tagents: String,
    },
    /// SPEC §6: the tagent found holds another credential (or the request
    /// brings none and would move its primary ip), and no change is open.
    #[error(
        "tagent {id} ({ip}:{port}) is registered with another credential; a reinstall needs an \
         operator's approval (tagent-hub ctl allow-reinstall {id}), a restart must bring the \
         credential it registered with"
    )]
    CredentialChange { id: TagentId, ip: IpAddr, port: u16 },
    /// The tenant's policy is `token`, and the request brought none that
    /// admits it.
    #[error("{}", token_required(tenant, *refusal))]
    TokenRequired {
        tenant: String,
        refusal: Option<TokenRefusal>,
    },
    /// Waiting for an operator's approval (SPEC §6); retried, it is
    /// accepted once approved.
    #[error(
        "registration of {ip}:{port}{} is pending approval by an operator \
         (tagent-hub ctl pending approve {id}); it is accepted at a retry once approved",
        if *reinstall { " (a new credential for a known tagent)" } else { "" }
    )]
    Pending {
        /// The pending entry's id.
        id: String,
        ip: IpAddr,
        port: u16,
        /// A known tagent's new credential (which one is the operator's to
        /// see, never the caller's).
        reinstall: bool,
    },
    /// The pending list is full.
    #[error(
        "{0} registrations are pending approval already; an operator must approve or reject some first"
    )]
    PendingFull(u64),
    #[error("tagent ids are exhausted")]
    IdsExhausted,
    /// The store could not make the registration durable; nothing was stored.
    #[error("registration not stored: {0}")]
    Store(#[source] StoreError),
    #[error("the hub is shutting down")]
    ShuttingDown,
}

impl RegisterError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::MultipleTagents { .. } => "multiple_tagents",
            Self::IpConflict { .. } => "ip_conflict",
            Self::NoRunnerGroup(_) => "no_runner_group",
            Self::ContainsOtherPrimary { .. } => "contains_other_primary",
            Self::PrimaryTaken { .. } => "primary_taken",
            Self::CredentialChange { .. } => "credential_change",
            Self::TokenRequired { .. } => "token_required",
            Self::Pending { .. } => "pending",
            Self::PendingFull(_) => "pending_full",
            Self::IdsExhausted => "ids_exhausted",
            Self::Store(_) => "store_error",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

fn token_required(tenant: &str, refusal: Option<TokenRefusal>) -> String {
    let why = match refusal {
        None => "none was given".to_owned(),
        Some(TokenRefusal::Invalid) => "the one given is not valid for this tenant".to_owned(),
        Some(TokenRefusal::NotForReinstall) => {
            "the one given admits first registrations only".to_owned()
        }
        Some(r) => format!("the one given is {}", r.as_str().replace('_', " ")),
    };
    format!(
        "tenant {tenant} registers new tagents with an enrollment token only, and {why}: \
         add ?token=<token> to the tagent's proxy.registeraddress"
    )
}

/// Why an operator's change (delete, runner groups) was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChangeError {
    #[error("no tagent with id {0}")]
    NotFound(TagentId),
    #[error("tagent {0} is connected; it can be deleted once its session has ended")]
    Connected(TagentId),
    #[error("no runner group with id {0}")]
    NoGroup(u32),
    #[error(
        "runner group {group} still holds {tagents} registered tagents; delete them or move their networks first"
    )]
    GroupInUse { group: u32, tagents: usize },
    #[error("{0}")]
    Unknown(String),
    #[error("invalid runner groups: {0}")]
    Invalid(String),
    #[error("not stored: {0}")]
    Store(#[source] StoreError),
    #[error("the hub is shutting down")]
    ShuttingDown,
}
