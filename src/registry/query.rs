//! Operator queries over the index: filtered, cursor-paginated listing and
//! counts. Pure over an [`Index`] and a [`Liveness`], so the admin API and the
//! tests share one definition of "matches".

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::Liveness;
use super::index::Index;
use crate::model::intern::{Interner, Sym};
use crate::model::{DisconnectReason, Tagent, TagentId};

/// Slots one listing call looks at before it returns what it has. A page
/// that comes back short with a cursor means "keep going": this bounds how
/// long a sparse filter holds the index's read lock.
pub const SCAN_BUDGET: usize = 100_000;

/// A tagent's status as operators see it: connected only with a live
/// session; otherwise the reason its last session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub connected: bool,
    /// `None` while connected. A session that just closed shows its
    /// reason at once, before the disconnect is committed.
    pub reason: Option<DisconnectReason>,
}

pub fn seen(t: &Tagent, live: &dyn Liveness) -> Seen {
    if live.is_live(t.id) {
        Seen {
            connected: true,
            reason: None,
        }
    } else {
        Seen {
            connected: false,
            reason: live.closed(t.id).or(t.status.reason()),
        }
    }
}

/// What an operator filters on. Every field narrows; none set matches all.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tenant: Option<String>,
    /// `true`: connected, `false`: disconnected.
    pub connected: Option<bool>,
    pub reason: Option<DisconnectReason>,
    /// Primary or contained ip inside this network (a single ip is a /32 or /128).
    pub ip: Option<IpNet>,
    pub port: Option<u16>,
    pub runner_group: Option<u32>,
    pub name_prefix: Option<String>,
    pub version: Option<String>,
    /// Last status change at or after this (Unix ms).
    pub changed_since: Option<u64>,
}

/// A filter with its strings resolved to symbols.
pub struct Compiled<'f> {
    f: &'f Filter,
    tenant: Option<Sym>,
    version: Option<Sym>,
}

impl<'f> Compiled<'f> {
    /// `None` when the filter names a tenant or version nobody has: nothing
    /// can match.
    pub fn new(f: &'f Filter, interner: &Interner) -> Option<Self> {
        let sym = |s: &Option<String>| match s {
            None => Some(None),
            Some(s) => interner.get(s).map(Some),
        };
        Some(Compiled {
            f,
            tenant: sym(&f.tenant)?,
            version: sym(&f.version)?,
        })
    }

    pub fn matches(&self, t: &Tagent, live: &dyn Liveness) -> bool {
        let f = self.f;
        if self.tenant.is_some_and(|s| s != t.tenant)
            || self.version.is_some_and(|s| s != t.version)
            || f.port.is_some_and(|p| p != t.port)
            || f.runner_group.is_some_and(|g| g != t.runner_group)
            || f.changed_since.is_some_and(|c| t.last_status_change < c)
        {
            return false;
        }
        if let Some(prefix) = &f.name_prefix
            && !t.name.starts_with(prefix.as_str())
        {
            return false;
        }
        if let Some(net) = &f.ip
            && !t.all_ips().any(|(_, ip)| net.contains(&ip))
        {
            return false;
        }
        if f.connected.is_some() || f.reason.is_some() {
            let s = seen(t, live);
            if f.connected.is_some_and(|c| c != s.connected)
                || f.reason.is_some_and(|r| s.reason != Some(r))
            {
                return false;
            }
        }
        true
    }
}

/// `10.0.0.7` or `10.0.0.0/24` (v4 or v6) as a network.
pub fn parse_ip_or_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .map(|n| n.trunc())
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// One page of a listing.
pub struct Page {
    pub items: Vec<Tagent>,
    /// Pass back as `after` for the next page; `None` at the end.
    pub next: Option<TagentId>,
}

/// Tagents matching `filter` with ids above `after`, in id order, at most
/// `limit`, looking at no more than [`SCAN_BUDGET`] slots.
pub fn list(
    index: &Index,
    interner: &Interner,
    live: &dyn Liveness,
    filter: &Filter,
    after: TagentId,
    limit: usize,
) -> Page {
    let Some(c) = Compiled::new(filter, interner) else {
        return Page {
            items: Vec::new(),
            next: None,
        };
    };
    let mut items = Vec::with_capacity(limit.min(1024));
    let mut last = after;
    for (scanned, t) in index.iter_after(after).enumerate() {
        if items.len() == limit || scanned == SCAN_BUDGET {
            return Page {
                items,
                next: Some(last),
            };
        }
        last = t.id;
        if c.matches(t, live) {
            items.push(t.clone());
        }
    }
    Page { items, next: None }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct StatusCounts {
    pub total: u64,
    pub connected: u64,
    pub disconnected: u64,
}

impl StatusCounts {
    pub fn add(&mut self, connected: bool) {
        self.total += 1;
        if connected {
            self.connected += 1;
        } else {
            self.disconnected += 1;
        }
    }
}

/// Counts over the tagents matching a filter.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Counts {
    #[serde(flatten)]
    pub all: StatusCounts,
    /// Disconnected tagents by the reason their last session ended
    /// (`unknown` while a disconnect is not yet persisted).
    pub by_reason: BTreeMap<String, u64>,
    /// By runner group id.
    pub by_group: BTreeMap<u32, StatusCounts>,
}

impl Counts {
    /// Count one tagent.
    pub fn add(&mut self, t: &Tagent, live: &dyn Liveness) {
        let s = seen(t, live);
        self.all.add(s.connected);
        self.by_group
            .entry(t.runner_group)
            .or_default()
            .add(s.connected);
        if !s.connected {
            let reason = s.reason.map_or("unknown", DisconnectReason::as_str);
            match self.by_reason.get_mut(reason) {
                Some(n) => *n += 1,
                None => {
                    self.by_reason.insert(reason.to_owned(), 1);
                }
            }
        }
    }
}

pub fn counts(index: &Index, interner: &Interner, live: &dyn Liveness, filter: &Filter) -> Counts {
    let mut out = Counts::default();
    let Some(c) = Compiled::new(filter, interner) else {
        return out;
    };
    for t in index.iter().filter(|t| c.matches(t, live)) {
        out.add(t, live);
    }
    out
}
