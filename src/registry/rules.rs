//! The registration rules of SPEC §2.3, as one pure function over an
//! [`IndexView`]: no sockets, no disk. The writer applies what it returns.

use std::net::IpAddr;

use smallvec::SmallVec;

use super::Liveness;
use super::error::RegisterError;
use super::index::IndexView;
use super::intern::{Interner, Sym};
use super::model::{DisconnectReason, MAX_TAGENT_ID, RunnerGroups, Status, Tagent, TagentId};
use super::request::RegisterRequest;

/// What a registration does, once decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The tagent's record after the registration.
    pub tagent: Tagent,
    pub created: bool,
    /// Ips whose account (tenant, ip, port) gets this registration's credential.
    pub accounts_put: Vec<IpAddr>,
    /// Ips whose account goes away: dropped by this tagent, listed by no other.
    pub accounts_delete: Vec<IpAddr>,
}

/// `ip:port(name)` for each tagent, as the original names them in errors.
fn describe(view: &impl IndexView, ids: &[TagentId]) -> String {
    ids.iter()
        .filter_map(|id| view.get(*id))
        .map(|t| format!("{}:{}({}, id {})", t.ip, t.port, t.name, t.id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tagents other than `me` whose *primary* ip is `ip` on `port`.
fn primary_owners(
    view: &impl IndexView,
    tenant: Sym,
    port: u16,
    ip: IpAddr,
    me: Option<TagentId>,
) -> SmallVec<[TagentId; 2]> {
    view.lookup(tenant, port, ip)
        .into_iter()
        .filter(|id| Some(*id) != me && view.get(*id).is_some_and(|t| t.ip == ip))
        .collect()
}

/// Rule 2: which existing tagent, if any, this registration is.
pub fn choose_tagent(
    view: &impl IndexView,
    tenant: Sym,
    req: &RegisterRequest,
) -> Result<Option<TagentId>, RegisterError> {
    let by_id = req
        .tagent_id
        .and_then(|id| view.get(id))
        .filter(|t| t.tenant == tenant);
    if let Some(t) = by_id
        && t.port == req.port
        && t.answers_for(req.ip)
    {
        return Ok(Some(t.id));
    }
    let found = view.lookup(tenant, req.port, req.ip);
    match found.as_slice() {
        [] => Ok(None),
        [id] => Ok(Some(*id)),
        ids => Err(RegisterError::MultipleTagents {
            ip: req.ip,
            port: req.port,
            tagents: describe(view, ids),
        }),
    }
}

/// Decide a registration against `view`: rules 2 to 8 (rule 1 is
/// [`RegisterRequest::parse`]). Interns the request's strings.
pub fn decide(
    view: &impl IndexView,
    interner: &Interner,
    groups: &RunnerGroups,
    live: &dyn Liveness,
    req: &RegisterRequest,
    now: u64,
) -> Result<Decision, RegisterError> {
    let tenant = interner.intern(&req.tenant);
    let chosen = choose_tagent(view, tenant, req)?;
    let old = chosen.and_then(|id| view.get(id));

    // Rule 3: a tagent with a live session cannot be registered over.
    if let Some(t) = old
        && live.is_live(t.id)
    {
        return Err(RegisterError::IpConflict {
            id: t.id,
            ip: t.ip,
            port: t.port,
        });
    }

    // Rule 4: the first network, in configured order, that contains the primary ip.
    let group = groups
        .match_ip(req.ip)
        .ok_or(RegisterError::NoRunnerGroup(req.ip))?;

    // Rule 5: contained ips must not be another tagent's primary ip on this port.
    let mut others: SmallVec<[TagentId; 2]> = SmallVec::new();
    for ip in &req.ips {
        for id in primary_owners(view, tenant, req.port, *ip, chosen) {
            if !others.contains(&id) {
                others.push(id);
            }
        }
    }
    if !others.is_empty() {
        return Err(RegisterError::ContainsOtherPrimary {
            port: req.port,
            tagents: describe(view, &others),
        });
    }

    // Rule 6: a primary (ip, port) belongs to at most one tagent.
    let owners = primary_owners(view, tenant, req.port, req.ip, chosen);
    if !owners.is_empty() {
        return Err(RegisterError::PrimaryTaken {
            ip: req.ip,
            port: req.port,
            tagents: describe(view, &owners),
        });
    }

    let id = match chosen {
        Some(id) => id,
        None if view.next_id() <= MAX_TAGENT_ID => view.next_id(),
        None => return Err(RegisterError::IdsExhausted),
    };
    // Rule 8: the record (and with it the primary ip) may move.
    let tagent = Tagent {
        id,
        tenant,
        port: req.port,
        ip: req.ip,
        ips: req.ips.clone().into_boxed_slice(),
        name: req.name.as_str().into(),
        user: interner.intern(&req.user),
        version: interner.intern(&req.version),
        os_type: interner.intern(&req.os_type),
        os_version: interner.intern(&req.os_version),
        osbit: interner.intern(&req.osbit),
        pcpu: req.pcpu,
        mem: req.mem,
        status: old.map_or(
            Status::Disconnected(DisconnectReason::NeverConnected),
            |t| t.status,
        ),
        runner_group: group.id,
        runner: old.and_then(|t| t.runner),
        first_registered: old.map_or(now, |t| t.first_registered),
        last_registered: now,
        last_status_change: old.map_or(now, |t| t.last_status_change),
    };

    // Rule 7: one account per (ip, port); dropped ips lose theirs unless
    // another tagent still lists them.
    let accounts_put: Vec<IpAddr> = tagent.all_ips().map(|(_, ip)| ip).collect();
    let accounts_delete = old
        .map(|old| {
            old.all_ips()
                .map(|(_, ip)| ip)
                .filter(|ip| !accounts_put.contains(ip))
                .filter(|ip| {
                    view.lookup(tenant, req.port, *ip)
                        .iter()
                        .all(|other| *other == id)
                })
                .collect()
        })
        .unwrap_or_default();

    Ok(Decision {
        tagent,
        created: old.is_none(),
        accounts_put,
        accounts_delete,
    })
}
