//! The audit log: every operation over a tagents' listener (who, what,
//! which tagent, result, when), newest first, a page at a time, as the
//! API's `GET /api/v1/audit` gives it.

use askama::Template;
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::page::{Chrome, error, render, when};
use super::session::Session;
use super::state::Console;
use crate::http::audit::{AuditQuery, list};

/// One line of the page.
struct Line {
    at: String,
    who: String,
    action: String,
    tagent: u64,
    result: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    c: Chrome,
    lines: Vec<Line>,
    next: Option<u64>,
}

pub async fn page(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Query(q): Query<AuditQuery>,
) -> Response {
    let page = match list(State(c.http.clone()), Query(q)).await {
        Ok(axum::Json(p)) => p,
        Err(e) => return error(&session, &e),
    };
    let lines = page
        .entries
        .into_iter()
        .map(|e| Line {
            at: when(e.at_ms),
            who: e.who,
            action: e.action,
            tagent: e.tagent,
            result: e.result,
            detail: e.detail.unwrap_or_default(),
        })
        .collect();
    let page = AuditPage {
        c: Chrome::new("Audit log", &session),
        lines,
        next: page.next,
    };
    render(StatusCode::OK, &page)
}
