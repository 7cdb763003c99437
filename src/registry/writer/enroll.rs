//! Stage 1, for the registrations that need authority (SPEC §6): a first
//! registration under the `token` or `approve` policy, and a known tagent's
//! registration bringing a new credential (or moving its primary ip)
//! without an open change window. Also the operators' enrollment jobs:
//! tokens created and revoked, pending registrations approved and rejected.
//!
//! Tokens and pending registrations are read from the batch's transaction
//! (with PostgreSQL it holds the registry's lock, so two hubs never spend
//! the last use of a token twice), once per batch, and what the batch does
//! to them is written in its commit: a token's use lands with the tagent it
//! admitted, or neither does.

use std::collections::{BTreeSet, HashMap};

use crate::model::enrollment::split_token;
use crate::model::{
    CredentialPrint, EnrollToken, Pending, Policies, Policy, TagentId, TokenRefusal, pending_id,
};
use crate::registry::error::{ChangeError, RegisterError};
use crate::registry::{EnrollJob, EnrollOutcome, RegisterRequest};
use crate::store::{StoreError, WriteTxn};

/// What registrations may do, and how many may wait.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub policies: Policies,
    /// The most registrations pending at once (across the group): beyond,
    /// a registration that would wait is refused.
    pub max_pending: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            policies: Policies::default(),
            max_pending: 10_000,
        }
    }
}

/// How long an operator's approval waits for the tagent's next attempt.
const APPROVAL_TTL_MS: u64 = 24 * 3600 * 1000;
/// A pending entry's attempts are written at most this often.
const RETRY_WRITE_MS: u64 = 60 * 1000;
/// An unapproved entry no attempt renewed for this long may be dropped
/// to make room.
const STALE_MS: u64 = 24 * 3600 * 1000;

/// What let a registration in.
pub(super) enum Grant {
    /// A use of this token.
    Token(String),
    /// An operator's approval of this pending registration.
    Approval(String),
}

/// What a batch wrote to tokens and pending registrations.
#[derive(Default)]
pub(super) struct EnrollWrites {
    pub tokens_put: Vec<EnrollToken>,
    pub pending_put: Vec<Pending>,
    pub pending_delete: Vec<String>,
}

/// The batch's view of tokens and pending registrations: read through the
/// transaction on first use, then changed in memory.
pub(super) struct Enrollment<'t> {
    txn: &'t mut dyn WriteTxn,
    config: &'t PolicyConfig,
    now: u64,
    tokens: HashMap<String, Option<EnrollToken>>,
    tokens_changed: BTreeSet<String>,
    pending: HashMap<String, Option<Pending>>,
    pending_changed: BTreeSet<String>,
    pending_len: Option<u64>,
}

impl<'t> Enrollment<'t> {
    pub fn new(txn: &'t mut dyn WriteTxn, config: &'t PolicyConfig, now: u64) -> Self {
        Enrollment {
            txn,
            config,
            now,
            tokens: HashMap::new(),
            tokens_changed: BTreeSet::new(),
            pending: HashMap::new(),
            pending_changed: BTreeSet::new(),
            pending_len: None,
        }
    }

    pub fn policy(&self, tenant: &str) -> Policy {
        self.config.policies.of(tenant)
    }

    fn token(&mut self, id: &str) -> Result<Option<&mut EnrollToken>, StoreError> {
        if !self.tokens.contains_key(id) {
            let t = self.txn.token(id)?;
            self.tokens.insert(id.to_owned(), t);
        }
        Ok(self.tokens.get_mut(id).and_then(Option::as_mut))
    }

    fn pending(&mut self, key: &str) -> Result<Option<&mut Pending>, StoreError> {
        if !self.pending.contains_key(key) {
            let p = self.txn.pending(key)?;
            self.pending.insert(key.to_owned(), p);
        }
        Ok(self.pending.get_mut(key).and_then(Option::as_mut))
    }

    fn set_pending(&mut self, key: String, p: Option<Pending>) -> Result<(), StoreError> {
        let was = self.pending(&key)?.is_some();
        let len = self.len()?;
        self.pending_len = Some(match (was, p.is_some()) {
            (false, true) => len + 1,
            (true, false) => len.saturating_sub(1),
            _ => len,
        });
        self.pending_changed.insert(key.clone());
        self.pending.insert(key, p);
        Ok(())
    }

    fn len(&mut self) -> Result<u64, StoreError> {
        match self.pending_len {
            Some(n) => Ok(n),
            None => {
                let n = self.txn.pending_len()?;
                self.pending_len = Some(n);
                Ok(n)
            }
        }
    }

    /// Whether `req` has the authority it needs: an operator's approval of
    /// its pending registration (for the credential it brings), else a
    /// valid enrollment token. Without either, a first registration under
    /// `token` is refused, and any other waits as pending (recorded here,
    /// written with the batch). `reinstall_of`: the known tagent whose
    /// credential it would change; `None`: it would create one.
    pub fn authorize(
        &mut self,
        req: &RegisterRequest,
        print: Option<CredentialPrint>,
        reinstall_of: Option<TagentId>,
    ) -> Result<Grant, RegisterError> {
        let store = RegisterError::Store;
        let key = pending_id(&req.tenant, req.ip, req.port, print);
        let now = self.now;
        // An approval admits what the operator was shown: this credential,
        // for this tagent (or a new one), for a day.
        if self.pending(&key).map_err(store)?.is_some_and(|p| {
            p.approved() && p.tagent == reinstall_of && now <= p.approved_ms + APPROVAL_TTL_MS
        }) {
            return Ok(Grant::Approval(key));
        }
        let mut refusal = None;
        if let Some(text) = &req.token {
            let reinstall = reinstall_of.is_some();
            match self
                .check_token(&req.tenant, &text.0, reinstall)
                .map_err(store)?
            {
                Ok(id) => return Ok(Grant::Token(id)),
                Err(r) => refusal = Some(r),
            }
        }
        if let Some(r) = refusal {
            metrics::counter!("tagent_hub_enrollment_tokens_refused_total", "reason" => r.as_str())
                .increment(1);
        }
        if reinstall_of.is_none() && self.policy(&req.tenant) == Policy::Token {
            return Err(RegisterError::TokenRequired {
                tenant: req.tenant.clone(),
                refusal,
            });
        }
        self.wait(req, key, print, reinstall_of)
    }

    /// The id of the token `text` names, if it admits `tenant` now.
    fn check_token(
        &mut self,
        tenant: &str,
        text: &str,
        reinstall: bool,
    ) -> Result<Result<String, TokenRefusal>, StoreError> {
        let Some((id, secret)) = split_token(text) else {
            return Ok(Err(TokenRefusal::Invalid));
        };
        let now = self.now;
        Ok(match self.token(id)? {
            None => Err(TokenRefusal::Invalid),
            Some(t) => t
                .admits(tenant, secret, reinstall, now)
                .map(|()| id.to_owned()),
        })
    }

    /// Record `req` as pending (or its new attempt), and the refusal that
    /// tells the tagent so.
    fn wait(
        &mut self,
        req: &RegisterRequest,
        key: String,
        print: Option<CredentialPrint>,
        reinstall_of: Option<TagentId>,
    ) -> Result<Grant, RegisterError> {
        let store = RegisterError::Store;
        let now = self.now;
        let entry = match self.pending(&key).map_err(store)?.cloned() {
            // Approved for another tagent than this attempt resolves to
            // (an ip several tagents list): it waits, the approval kept as
            // it was given.
            Some(p) if p.approved() && p.tagent != reinstall_of => {
                return Err(RegisterError::Pending {
                    id: key,
                    ip: req.ip,
                    port: req.port,
                    reinstall: reinstall_of.is_some(),
                });
            }
            // A retry within a minute of the last one written: nothing to
            // write (a tagent retries every few seconds; a flood of retries
            // costs no commit each).
            Some(p) if p.tagent == reinstall_of && now < p.last_ms + RETRY_WRITE_MS => {
                return Err(RegisterError::Pending {
                    id: key,
                    ip: req.ip,
                    port: req.port,
                    reinstall: reinstall_of.is_some(),
                });
            }
            Some(mut p) => {
                p.tagent = reinstall_of;
                p.source = req.source;
                p.name.clone_from(&req.name);
                p.version.clone_from(&req.host.version);
                p.os_type.clone_from(&req.host.os_type);
                p.last_ms = now;
                p.attempts = p.attempts.saturating_add(1);
                p
            }
            None => {
                if self.len().map_err(store)? >= self.config.max_pending {
                    self.purge_stale().map_err(store)?;
                }
                if self.len().map_err(store)? >= self.config.max_pending {
                    metrics::counter!("tagent_hub_pending_full_total").increment(1);
                    return Err(RegisterError::PendingFull(self.config.max_pending));
                }
                metrics::counter!("tagent_hub_pending_created_total").increment(1);
                Pending {
                    tenant: req.tenant.clone(),
                    ip: req.ip,
                    port: req.port,
                    tagent: reinstall_of,
                    source: req.source,
                    name: req.name.clone(),
                    version: req.host.version.clone(),
                    os_type: req.host.os_type.clone(),
                    print,
                    first_ms: now,
                    last_ms: now,
                    attempts: 1,
                    approved_by: None,
                    approved_ms: 0,
                }
            }
        };
        self.set_pending(key.clone(), Some(entry)).map_err(store)?;
        Err(RegisterError::Pending {
            id: key,
            ip: req.ip,
            port: req.port,
            reinstall: reinstall_of.is_some(),
        })
    }

    /// Drop the unapproved entries no attempt has renewed for
    /// [`STALE_MS`] (a tagent that waits retries every few seconds, so
    /// these are gone or were an attacker's): room for new ones.
    fn purge_stale(&mut self) -> Result<(), StoreError> {
        let before = self.now.saturating_sub(STALE_MS);
        let stale = self.txn.pending_stale(before)?;
        let n = stale.len();
        for id in stale {
            if self.pending.get(&id).is_some_and(Option::is_some) {
                continue; // renewed in this batch
            }
            self.set_pending(id, None)?;
        }
        if n > 0 {
            metrics::counter!("tagent_hub_pending_expired_total").increment(n as u64);
        }
        Ok(())
    }

    /// Spend what let a registration in: a token's use, or the approval
    /// (its pending entry goes).
    pub fn spend(&mut self, grant: Grant) -> Result<(), StoreError> {
        match grant {
            Grant::Token(id) => {
                let now = self.now;
                if let Some(t) = self.token(&id)? {
                    t.uses = t.uses.saturating_add(1);
                    t.last_used_ms = now;
                    self.tokens_changed.insert(id);
                }
                metrics::counter!("tagent_hub_enrollment_token_uses_total").increment(1);
                Ok(())
            }
            Grant::Approval(key) => self.set_pending(key, None),
        }
    }

    /// An operator's enrollment job, against the batch's view.
    pub fn job(&mut self, job: EnrollJob) -> Result<EnrollOutcome, ChangeError> {
        let store = ChangeError::Store;
        let now = self.now;
        match job {
            EnrollJob::CreateToken(t) => {
                let id = t.id.clone();
                self.tokens.insert(id.clone(), Some(*t.clone()));
                self.tokens_changed.insert(id);
                Ok(EnrollOutcome::Token(*t))
            }
            EnrollJob::RevokeToken(id) => {
                let t = self
                    .token(&id)
                    .map_err(store)?
                    .ok_or_else(|| ChangeError::Unknown(format!("no enrollment token {id}")))?;
                if t.revoked_ms == 0 {
                    t.revoked_ms = now;
                }
                let t = t.clone();
                self.tokens_changed.insert(id);
                Ok(EnrollOutcome::Token(t))
            }
            EnrollJob::Approve { id: key, by } => {
                let p = self.pending(&key).map_err(store)?.ok_or_else(|| {
                    ChangeError::Unknown(format!("no pending registration {key}"))
                })?;
                p.approved_by = Some(by);
                p.approved_ms = now;
                let p = p.clone();
                self.set_pending(key, Some(p.clone())).map_err(store)?;
                Ok(EnrollOutcome::Pending(p))
            }
            EnrollJob::Reject { id: key } => {
                let p = self.pending(&key).map_err(store)?.cloned().ok_or_else(|| {
                    ChangeError::Unknown(format!("no pending registration {key}"))
                })?;
                self.set_pending(key, None).map_err(store)?;
                Ok(EnrollOutcome::Pending(p))
            }
        }
    }

    /// What the batch writes.
    pub fn finish(mut self) -> EnrollWrites {
        let mut w = EnrollWrites::default();
        for id in std::mem::take(&mut self.tokens_changed) {
            if let Some(Some(t)) = self.tokens.remove(&id) {
                w.tokens_put.push(t);
            }
        }
        for key in std::mem::take(&mut self.pending_changed) {
            match self.pending.remove(&key) {
                Some(Some(p)) => w.pending_put.push(p),
                _ => w.pending_delete.push(key),
            }
        }
        w
    }
}
