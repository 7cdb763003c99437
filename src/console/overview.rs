//! The overview: counts by status, runner group, disconnect reason and
//! version (each a link to the filtered list), the recent status changes
//! (live), the sessions of unregistered tagents, and how many
//! registrations wait for an operator.

use std::collections::BTreeMap;

use askama::Template;
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::page::{Chrome, error, render, when};
use super::session::Session;
use super::state::Console;
use crate::heartbeat::SessionView;
use crate::http::ApiError;
use crate::http::tagents::{PageParams, unregistered};
use crate::registry::events::EventKind;
use crate::registry::query::{Counts, StatusCounts};

/// Recent events shown.
const RECENT: usize = 20;

/// One recent change as listed.
pub struct Change {
    pub at: String,
    pub kind: &'static str,
    pub id: u64,
    pub addr: String,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    c: Chrome,
    counts: Counts,
    groups: Vec<(u32, String, StatusCounts)>,
    by_version: BTreeMap<String, u64>,
    recent: Vec<Change>,
    unregistered: usize,
    /// Registrations waiting for an operator.
    pending: usize,
    /// Each with when it connected, as shown.
    sessions: Vec<(SessionView, String)>,
}

/// The last `n` events, newest first.
pub fn recent(c: &Console, n: usize, of: Option<u64>) -> Vec<Change> {
    let registry = &c.http.registry;
    let (events, _) = registry.events().since(0);
    events
        .iter()
        .rev()
        .filter(|e| of.is_none_or(|id| u64::from(e.event.tagent_id) == id))
        .take(n)
        .map(|e| {
            let j = e.event.json(registry.interner());
            Change {
                at: when(j.at),
                kind: j.kind.as_str(),
                id: j.tagent_id,
                addr: format!("{}:{}", j.ip, j.port),
                reason: match j.kind {
                    EventKind::Disconnected => j.reason.map(|r| r.as_str()).unwrap_or("").into(),
                    _ => String::new(),
                },
            }
        })
        .collect()
}

pub async fn page(State(c): State<Console>, Extension(session): Extension<Session>) -> Response {
    let registry = c.http.registry.clone();
    let counted = tokio::task::spawn_blocking(move || {
        let mut counts = Counts::default();
        let mut by_version = BTreeMap::<String, u64>::new();
        registry.for_each_chunked(|t| {
            counts.add(t, registry.liveness());
            let v = registry.interner().resolve(t.host.version);
            *by_version.entry(v.to_string()).or_default() += 1;
        });
        (counts, by_version)
    })
    .await;
    let Ok((counts, by_version)) = counted else {
        return error(
            &session,
            &ApiError(StatusCode::INTERNAL_SERVER_ERROR, "counting failed".into()),
        );
    };
    let names = c.http.registry.groups();
    let groups = counts
        .by_group
        .iter()
        .map(|(id, n)| {
            let name = names.get(*id).map(|g| g.name.clone()).unwrap_or_default();
            (*id, name, *n)
        })
        .collect();
    let params = PageParams {
        cursor: None,
        limit: Some(50),
    };
    let unreg = match unregistered(State(c.http.clone()), Query(params)).await {
        Ok(axum::Json(u)) => u,
        Err(e) => return error(&session, &e),
    };
    let pending = match crate::http::enrollment::pending(&c.http).await {
        Ok(p) => p.pending.len(),
        Err(e) => return error(&session, &e),
    };
    let page = OverviewPage {
        pending,
        c: Chrome::new("Overview", &session).live(),
        counts,
        groups,
        by_version,
        recent: recent(&c, RECENT, None),
        unregistered: unreg.count,
        sessions: unreg
            .sessions
            .into_iter()
            .map(|s| {
                let at = when(s.connected_at);
                (s, at)
            })
            .collect(),
    };
    render(StatusCode::OK, &page)
}
