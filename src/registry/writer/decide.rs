//! Stage 1: decide every job of a batch against the index overlaid with the
//! batch's earlier decisions. Nothing is written or answered yet, except a
//! job refused by the rules (it needs no commit to be told).

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::Job;
use super::enroll::{EnrollWrites, Enrollment};
use crate::model::Policy;
use crate::model::{Interner, RunnerGroups, Status, Tagent, TagentId};
use crate::registry::error::ChangeError;
use crate::registry::index::{Index, IndexView, Overlay};
use crate::registry::liveness::{InView, Liveness, Mine};
use crate::registry::rules::{self, Decision};
use crate::registry::{EnrollOutcome, RegisterError, RegisterRequest, Registered, StatusChange};
use crate::store::CredentialCipher;

/// What a batch is decided with.
pub(super) struct Context<'a> {
    pub interner: &'a Interner,
    pub groups: &'a RunnerGroups,
    /// Whether this hub holds a tagent's session.
    pub local: &'a dyn Liveness,
    pub mine: &'a Mine,
    /// Fingerprints the registrations' credentials.
    pub cipher: &'a CredentialCipher,
    /// Unix milliseconds.
    pub now: u64,
}

/// A registration decided in this batch, waiting for the commit.
pub(super) struct Accepted {
    pub decision: Decision,
    pub req: Box<RegisterRequest>,
    pub reply: oneshot::Sender<Result<Registered, RegisterError>>,
}

/// A deletion decided in this batch, waiting for the commit.
pub(super) struct Deleted {
    pub tagent: Tagent,
    pub tenant: Arc<str>,
    /// Accounts no other tagent answers for.
    pub accounts: Vec<IpAddr>,
    pub reply: oneshot::Sender<Result<(), ChangeError>>,
}

/// A registration's reply channel.
pub(super) type RegisterReply = oneshot::Sender<Result<Registered, RegisterError>>;
/// An enrollment job's reply channel.
pub(super) type EnrollReply = oneshot::Sender<Result<EnrollOutcome, ChangeError>>;

/// A status change that changed a record: (tagent, new status, at).
pub(super) type Transition = (TagentId, Status, u64);

/// Everything a batch decided.
#[derive(Default)]
pub(super) struct Decided {
    pub accepted: Vec<Accepted>,
    pub deleted: Vec<Deleted>,
    /// Credential-change windows opened, waiting for the commit.
    pub opened: Vec<oneshot::Sender<Result<(), ChangeError>>>,
    /// Registrations refused once what they changed is durable: those now
    /// pending approval.
    pub refused: Vec<(RegisterReply, RegisterError)>,
    /// Enrollment jobs done, waiting for the commit.
    pub enrolled: Vec<(EnrollReply, EnrollOutcome)>,
    /// What the batch writes to tokens and pending registrations.
    pub enroll: EnrollWrites,
    pub transitions: Vec<Transition>,
    /// Every status change the batch was given, applied or not: what goes
    /// again with the next batch when this one's commit fails.
    pub status_seen: Vec<StatusChange>,
    /// The records the batch changes (`None`: deleted), in id order.
    pub changes: Vec<(TagentId, Option<Tagent>)>,
    /// The next id to hand out after the batch.
    pub next_id: TagentId,
    /// Whether `next_id` moved (and so is written).
    pub next_id_changed: bool,
}

/// Decide `jobs` in order against `index`.
pub(super) fn decide(
    index: &Index,
    cx: &Context<'_>,
    mut enroll: Enrollment<'_>,
    jobs: Vec<Job>,
) -> Decided {
    let mut overlay = Overlay::new(index);
    let mut d = Decided::default();
    for job in jobs {
        match job {
            Job::Register { req, reply } => {
                register(&mut overlay, cx, &mut enroll, &mut d, req, reply)
            }
            Job::Enroll { job, reply } => match enroll.job(job) {
                Ok(outcome) => d.enrolled.push((reply, outcome)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Job::Status(changes) => status(&mut overlay, cx.mine, &mut d, changes),
            Job::Delete { id, reply } => delete(&mut overlay, cx, &mut d, id, reply),
            Job::OpenCredentialChange { id, until, reply } => match overlay.get(id) {
                Some(t) => {
                    let mut t = t.clone();
                    t.credential_change_until = until;
                    overlay.set(id, Some(t));
                    d.opened.push(reply);
                }
                None => {
                    let _ = reply.send(Err(ChangeError::NotFound(id)));
                }
            },
            Job::Groups { reply, .. } => {
                // `run` splits batches at group changes; never reached.
                let _ = reply.send(Err(ChangeError::ShuttingDown));
            }
            // Fenced into `Status` before the batch is decided (thread.rs).
            Job::RunnerLost { .. } | Job::Sync(_) | Job::Stop => {}
        }
    }
    d.enroll = enroll.finish();
    d.next_id = overlay.next_id();
    d.next_id_changed = d.next_id > index.next_id();
    d.changes = overlay.into_changes();
    d
}

/// Rules 2–8 (see [`rules::decide`]), rule 3 across hubs, and the
/// registration policy (SPEC §6): a first registration under `token` or
/// `approve`, or a new credential for a known tagent outside an open
/// window, needs a token or an operator's approval, else it is refused or
/// waits as pending.
fn register(
    overlay: &mut Overlay<'_>,
    cx: &Context<'_>,
    enroll: &mut Enrollment<'_>,
    d: &mut Decided,
    req: Box<RegisterRequest>,
    reply: RegisterReply,
) {
    let print = req.credential.as_ref().map(|c| cx.cipher.print(&c.0));
    let decide = |overlay: &Overlay<'_>, authorized: bool| {
        let live = InView {
            local: cx.local,
            view: overlay,
            mine: cx.mine,
        };
        rules::decide(
            overlay,
            cx.interner,
            cx.groups,
            &live,
            &req,
            rules::Proof { print, authorized },
            cx.now,
        )
    };
    let (decision, grant) = match decide(overlay, false) {
        Ok(decision) if !decision.created || enroll.policy(&req.tenant) == Policy::Open => {
            (Ok(decision), None)
        }
        // A first registration that must be authorized brings the
        // credential the authority is bound to (a real tagent always does).
        Ok(_) if req.credential.is_none() => (
            Err(RegisterError::Invalid(format!(
                "tenant {} registers new tagents with a token or an approval: the registration \
                 must bring its credential",
                req.tenant
            ))),
            None,
        ),
        Ok(decision) => match enroll.authorize(&req, print, None) {
            Ok(grant) => (Ok(decision), Some(grant)),
            Err(e) => (Err(e), None),
        },
        Err(RegisterError::CredentialChange { id, .. }) => {
            match enroll.authorize(&req, print, Some(id)) {
                Ok(grant) => (decide(overlay, true), Some(grant)),
                Err(e) => (Err(e), None),
            }
        }
        Err(e) => (Err(e), None),
    };
    let decision = match (decision, grant) {
        (Ok(decision), Some(grant)) => match enroll.spend(grant) {
            Ok(()) => Ok(decision),
            Err(e) => Err(RegisterError::Store(e)),
        },
        (result, _) => result,
    };
    match decision {
        Ok(decision) => {
            overlay.set(decision.tagent.id, Some(decision.tagent.clone()));
            d.accepted.push(Accepted {
                decision,
                req,
                reply,
            });
        }
        // Its pending entry is written with the batch: told after the commit.
        Err(e @ RegisterError::Pending { .. }) => d.refused.push((reply, e)),
        Err(e) => {
            let _ = reply.send(Err(e));
        }
    }
}

/// Status transitions reported by the heartbeat server (or, for a lapsed
/// hub, by the group watcher).
fn status(overlay: &mut Overlay<'_>, mine: &Mine, d: &mut Decided, changes: Vec<StatusChange>) {
    for c in changes {
        d.status_seen.push(c);
        let Some(t) = overlay.get(c.id) else { continue };
        if t.status == c.status && (c.runner.is_none() || t.runner == c.runner) {
            continue;
        }
        // A disconnect applies only to the session that held the tagent:
        // the runner it names, else one of this hub's. The tagent may be
        // connected through another hub since.
        if t.status == Status::Connected
            && c.status != Status::Connected
            && !match c.runner {
                Some(r) => t.runner == Some(r),
                None => mine.holds(t.runner),
            }
        {
            continue;
        }
        let mut t = t.clone();
        t.status = c.status;
        t.last_status_change = c.at;
        if c.status == Status::Connected && c.runner.is_some() {
            t.runner = c.runner;
        }
        d.transitions.push((c.id, c.status, c.at));
        overlay.set(c.id, Some(t));
    }
}

/// An operator's deletion: refused while the tagent is live (rule 3).
fn delete(
    overlay: &mut Overlay<'_>,
    cx: &Context<'_>,
    d: &mut Decided,
    id: TagentId,
    reply: oneshot::Sender<Result<(), ChangeError>>,
) {
    let Some(t) = overlay.get(id).cloned() else {
        let _ = reply.send(Err(ChangeError::NotFound(id)));
        return;
    };
    let live = InView {
        local: cx.local,
        view: &*overlay,
        mine: cx.mine,
    };
    if live.is_live(id) {
        let _ = reply.send(Err(ChangeError::Connected(id)));
        return;
    }
    let accounts = t
        .all_ips()
        .map(|(_, ip)| ip)
        .filter(|ip| {
            overlay
                .lookup(t.tenant, t.port, *ip)
                .iter()
                .all(|other| *other == id)
        })
        .collect();
    overlay.set(id, None);
    d.deleted.push(Deleted {
        tenant: cx.interner.resolve(t.tenant),
        tagent: t,
        accounts,
        reply,
    });
}
