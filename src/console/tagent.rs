//! One tagent: its record, accounts (never a credential), live session and
//! recent events; the actions (reload, resetcred, status check, delete, a
//! reachability check) with their results; its config file and logs read
//! over its listener (admin only, as in the API).

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::overview::{Change, recent};
use super::page::{Chrome, error, render, when};
use super::session::Session;
use super::state::Console;
use super::tagents::{Row, row};
use crate::dispatch::Command;
use crate::heartbeat::SessionView;
use crate::http::ApiError;
use crate::http::tagents::{AccountView, TagentDetail, delete, get};
use crate::listener::Reachability;
use crate::model::TagentId;

/// Events of this tagent shown.
const RECENT: usize = 20;

#[derive(Template)]
#[template(path = "console/tagent.html")]
struct TagentPage {
    c: Chrome,
    r: Row,
    accounts: Vec<AccountView>,
    session: Option<SessionView>,
    connected_at: String,
    reachability: Option<Reachability>,
    recent: Vec<Change>,
    /// The result of the action just taken.
    result: Option<(bool, String)>,
}

async fn show(
    c: &Console,
    session: &Session,
    id: TagentId,
    result: Option<(bool, String)>,
) -> Response {
    let detail: TagentDetail = match get(State(c.http.clone()), Path(id)).await {
        Ok(axum::Json(d)) => d,
        Err(e) => return error(session, &e),
    };
    let page = TagentPage {
        c: Chrome::new(format!("Tagent {}", detail.tagent.name), session).live(),
        connected_at: detail
            .session
            .as_ref()
            .map(|s| when(s.connected_at))
            .unwrap_or_default(),
        r: row(c, detail.tagent),
        accounts: detail.accounts,
        session: detail.session,
        reachability: detail.reachability,
        recent: recent(c, RECENT, Some(id)),
        result,
    };
    render(StatusCode::OK, &page)
}

pub async fn page(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<TagentId>,
) -> Response {
    show(&c, &session, id, None).await
}

/// `POST /ui/tagents/{id}/action/{action}`: the guard has checked the CSRF
/// token and the admin scope.
pub async fn action(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path((id, action)): Path<(TagentId, String)>,
) -> Response {
    let result = match action.as_str() {
        "delete" => match delete(State(c.http.clone()), Path(id)).await {
            Ok(_) => return Redirect::to("/ui/tagents").into_response(),
            Err(e) => (false, e.1),
        },
        "reachability" => match c
            .http
            .operations
            .check_reachability(session.actor.as_str(), id)
            .await
        {
            Ok(r) => (
                r.reachable,
                format!(
                    "reachability: {}{}",
                    r.result,
                    r.message.map(|m| format!(" ({m})")).unwrap_or_default()
                ),
            ),
            Err(e) => (false, ApiError::from(e).1),
        },
        other => {
            let Some(command) = Command::parse(other) else {
                return error(
                    &session,
                    &ApiError(StatusCode::NOT_FOUND, format!("no action '{other}'")),
                );
            };
            let r = c
                .http
                .dispatch(session.actor.as_str())
                .run(id, command)
                .await;
            let ok = r.result.http_status() == 200;
            let text = format!(
                "{}: {}{}",
                command.as_str(),
                r.result.as_str(),
                r.message.map(|m| format!(" ({m})")).unwrap_or_default()
            );
            (ok, text)
        }
    };
    show(&c, &session, id, Some(result)).await
}

fn admin_only(session: &Session) -> Result<(), ApiError> {
    if session.is_admin() {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            "reading a tagent's files needs an admin token".into(),
        ))
    }
}

#[derive(Template)]
#[template(path = "console/files.html")]
struct FilesPage {
    c: Chrome,
    id: TagentId,
    heading: String,
    lines: Vec<String>,
    logs: Vec<String>,
}

/// The tagent's config file, the credential masked by the listener client.
pub async fn config(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<TagentId>,
) -> Response {
    let file = match admin_only(&session) {
        Ok(()) => c
            .http
            .operations
            .read_config(session.actor.as_str(), id)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match file {
        Ok(file) => {
            let mut lines = file.lines;
            if !file.missing_keys.is_empty() {
                lines.push(format!("# missing keys: {}", file.missing_keys.join(", ")));
            }
            let page = FilesPage {
                c: Chrome::new("Config", &session),
                id,
                heading: "tagent.conf".into(),
                lines,
                logs: Vec::new(),
            };
            render(StatusCode::OK, &page)
        }
        Err(e) => error(&session, &e),
    }
}

/// The tagent's log files, each a download link.
pub async fn logs(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<TagentId>,
) -> Response {
    let listed = match admin_only(&session) {
        Ok(()) => c
            .http
            .operations
            .list_logs(session.actor.as_str(), id)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match listed {
        Ok(logs) => {
            let page = FilesPage {
                c: Chrome::new("Logs", &session),
                id,
                heading: "Log files".into(),
                lines: Vec::new(),
                logs,
            };
            render(StatusCode::OK, &page)
        }
        Err(e) => error(&session, &e),
    }
}

/// One log file, streamed as the tagent sends it.
pub async fn log(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path((id, name)): Path<(TagentId, String)>,
) -> Response {
    let stream = match admin_only(&session) {
        Ok(()) => c
            .http
            .operations
            .download_log(session.actor.as_str(), id, &name)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let stream = match stream {
        Ok(s) => s,
        Err(e) => return error(&session, &e),
    };
    crate::http::operations::download(stream, &name)
}
