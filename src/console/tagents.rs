//! The tagent list: the API's filters (plus "changed within N minutes"),
//! a sort within the page, cursor paging, rows that change live, and the
//! batch form with the exact count of the tagents that match.

use askama::Template;
use axum::Extension;
use axum::extract::{Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::page::{Chrome, error, percent, render, when};
use super::session::Session;
use super::state::Console;
use crate::dispatch::Command;
use crate::http::ApiError;
use crate::http::tagents::{Connection, TagentView, counts, list};
use crate::model::{FilterParams, now_millis};

/// The list's query string parsed: the filter as the API takes it, the
/// page and the sort.
pub struct ListQuery {
    /// `key=value` pairs the API's list takes (no empty values).
    pub api: Vec<(String, String)>,
    pub filter: FilterParams,
    pub sort: String,
    /// "Changed within N minutes", as typed.
    pub changed_within: String,
}

/// The query parameters that are the console's, not the API's filter.
const PAGE_KEYS: [&str; 2] = ["cursor", "limit"];

impl ListQuery {
    /// Parse the browser's query string; an empty field means unset.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let bad = |e: &dyn std::fmt::Display| {
            ApiError(StatusCode::BAD_REQUEST, format!("invalid query: {e}"))
        };
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).map_err(|e| bad(&e))?;
        let mut api = Vec::new();
        let mut sort = String::new();
        let mut changed_within = String::new();
        for (k, v) in pairs {
            let v = v.trim().to_owned();
            if v.is_empty() {
                continue;
            }
            match k.as_str() {
                "sort" => sort = v,
                "changed_within" => {
                    let minutes: u64 = v
                        .parse()
                        .map_err(|_| bad(&"changed_within is a number of minutes"))?;
                    let since = now_millis().saturating_sub(minutes.saturating_mul(60_000));
                    api.push(("changed_since".into(), since.to_string()));
                    changed_within = v;
                }
                _ => api.push((k, v)),
            }
        }
        let only_filter: Vec<_> = api
            .iter()
            .filter(|(k, _)| !PAGE_KEYS.contains(&k.as_str()))
            .collect();
        let encoded = serde_urlencoded::to_string(&only_filter).map_err(|e| bad(&e))?;
        let filter = serde_urlencoded::from_str(&encoded).map_err(|e| bad(&e))?;
        Ok(ListQuery {
            api,
            filter,
            sort,
            changed_within,
        })
    }

    /// The filter alone as a query string (for links and the batch form).
    pub fn filter_query(&self) -> String {
        serde_urlencoded::to_string(&self.filter).unwrap_or_default()
    }
}

/// One row of the list.
pub struct Row {
    pub t: TagentView,
    pub connected: bool,
    pub reason: String,
    pub since: String,
    pub heartbeat: String,
    pub cpu: String,
    pub mem: String,
    pub runner: String,
}

#[derive(Template)]
#[template(path = "console/tagents.html")]
struct ListPage {
    c: Chrome,
    rows: Vec<Row>,
    matched: u64,
    /// The current filter's fields, for the form.
    f: FilterParams,
    changed_within: String,
    /// The sort choices, each with whether it is the current one.
    sorts: Vec<(&'static str, bool)>,
    filter_query: String,
    next: Option<String>,
    commands: Vec<&'static str>,
}

/// The columns a page can be sorted by (else by id).
const SORTS: [&str; 6] = ["name", "ip", "status", "since", "version", "group"];

fn sort(rows: &mut [Row], by: &str) {
    match by {
        "name" => rows.sort_by(|a, b| a.t.name.cmp(&b.t.name)),
        "ip" => rows.sort_by(|a, b| a.t.ip.cmp(&b.t.ip)),
        "status" => rows.sort_by_key(|r| r.connected),
        "since" => rows.sort_by_key(|r| std::cmp::Reverse(r.t.last_status_change_ms)),
        "version" => rows.sort_by(|a, b| a.t.host.version.cmp(&b.t.host.version)),
        "group" => rows.sort_by_key(|r| r.t.runner_group),
        _ => {}
    }
}

/// A row; a live session's heartbeat time, cpu and memory win over the
/// record's.
pub fn row(c: &Console, t: TagentView) -> Row {
    let live = c.http.hub.session_of(t.id).map(|s| c.http.hub.view(&s));
    let (heartbeat, pcpu, mem) = match &live {
        Some(v) => (
            when(v.last_heartbeat),
            v.pcpu.or(t.host.pcpu),
            v.mem.or(t.host.mem),
        ),
        None => (String::new(), t.host.pcpu, t.host.mem),
    };
    Row {
        connected: t.status == Connection::Connected,
        reason: t
            .disconnect_reason
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
        since: when(t.last_status_change_ms),
        heartbeat,
        cpu: percent(pcpu),
        mem: percent(mem),
        runner: t.runner.map(|r| r.to_string()).unwrap_or_default(),
        t,
    }
}

pub async fn page(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = match ListQuery::parse(raw.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return error(&session, &e),
    };
    let api_query = serde_urlencoded::to_string(&q.api).unwrap_or_default();
    let listed = list(State(c.http.clone()), RawQuery(Some(api_query))).await;
    let page = match listed {
        Ok(axum::Json(p)) => p,
        Err(e) => return error(&session, &e),
    };
    let matched = match counts(State(c.http.clone()), Ok(Query(q.filter.clone()))).await {
        Ok(axum::Json(n)) => n.all.total,
        Err(e) => return error(&session, &e),
    };
    let mut rows: Vec<Row> = page.items.into_iter().map(|t| row(&c, t)).collect();
    sort(&mut rows, &q.sort);
    let filter_query = q.filter_query();
    let next = page.next_cursor.map(|cursor| {
        let mut pairs: Vec<(String, String)> = q
            .api
            .iter()
            .filter(|(k, _)| k != "cursor")
            .cloned()
            .collect();
        pairs.push(("cursor".into(), cursor));
        if !q.sort.is_empty() {
            pairs.push(("sort".into(), q.sort.clone()));
        }
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    });
    let page = ListPage {
        c: Chrome::new("Tagents", &session).live(),
        rows,
        matched,
        changed_within: q.changed_within.clone(),
        sorts: SORTS.iter().map(|s| (*s, q.sort == *s)).collect(),
        f: q.filter,
        filter_query,
        next,
        commands: Command::ALL.iter().map(|c| c.as_str()).collect(),
    };
    render(StatusCode::OK, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_are_unset_and_the_sort_is_the_consoles() {
        let q = ListQuery::parse("status=connected&reason=&sort=name&ip=10.0.0.0%2F8&cursor=5")
            .unwrap();
        assert_eq!(q.sort, "name");
        assert_eq!(q.filter.status.as_deref(), Some("connected"));
        assert_eq!(q.filter.reason, None);
        assert_eq!(q.filter.ip.as_deref(), Some("10.0.0.0/8"));
        assert!(q.api.contains(&("cursor".into(), "5".into())));
        assert_eq!(q.filter_query(), "status=connected&ip=10.0.0.0%2F8");
        let within = ListQuery::parse("changed_within=60").unwrap();
        assert!(within.filter.changed_since.is_some());
        assert!(ListQuery::parse("group=x").is_err());
        assert!(ListQuery::parse("changed_within=soon").is_err());
    }
}
