//! One tagent: its record, accounts (never a credential), live session and
//! recent events; the actions (reload, resetcred, status check, delete, a
//! reachability check, allowing a reinstall) with their results; its config
//! file read, edited and written back, and its logs, over its listener
//! (admin only, as in the API).

use askama::Template;
use axum::Extension;
use axum::extract::{Form, Path, Query, State};
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
use crate::http::tagents::{
    AccountView, AllowReinstall, TagentDetail, allow_reinstall, delete, get,
};
use crate::listener::{Reachability, Step};
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

/// What an action's form may carry besides its CSRF token.
#[derive(serde::Deserialize)]
pub struct ActionForm {
    /// `allow-reinstall`: how many minutes the approval lasts.
    minutes: Option<String>,
}

/// `POST /ui/tagents/{id}/action/{action}`: the guard has checked the CSRF
/// token and the admin scope.
pub async fn action(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path((id, action)): Path<(TagentId, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let result = match action.as_str() {
        "allow-reinstall" => {
            let minutes = match form.minutes.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(m) => match m.parse() {
                    Ok(m) => Some(m),
                    Err(_) => {
                        let why = format!("allow-reinstall: '{m}' is not a number of minutes");
                        return show(&c, &session, id, Some((false, why))).await;
                    }
                },
            };
            let query = Ok(Query(AllowReinstall { minutes }));
            match allow_reinstall(State(c.http.clone()), Path(id), query).await {
                Ok(_) => (
                    true,
                    format!(
                        "allow-reinstall: the next registration may bring a new credential for {} minutes",
                        minutes.unwrap_or(60)
                    ),
                ),
                Err(e) => (false, format!("allow-reinstall: {}", e.1)),
            }
        }
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
    logs: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/config.html")]
struct ConfigPage {
    c: Chrome,
    id: TagentId,
    /// The file as the form shows it: the credential masked.
    text: String,
    missing: Vec<String>,
    /// After a save: whether it went through, and each step's result.
    outcome: Option<(bool, String)>,
    steps: Vec<Step>,
}

fn config_page(session: &Session, id: TagentId, text: String) -> ConfigPage {
    ConfigPage {
        c: Chrome::new(format!("Config of tagent {id}"), session),
        id,
        text,
        missing: Vec::new(),
        outcome: None,
        steps: Vec::new(),
    }
}

/// The tagent's config file, the credential masked by the listener client,
/// in a form that writes it back.
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
            let mut page = config_page(&session, id, file.lines.join("\n"));
            page.missing = file.missing_keys.iter().map(|k| (*k).to_owned()).collect();
            render(StatusCode::OK, &page)
        }
        Err(e) => error(&session, &e),
    }
}

#[derive(serde::Deserialize)]
pub struct ConfigForm {
    file: String,
}

/// `POST /ui/tagents/{id}/config`: the whole file back, as `PUT
/// /api/v1/tagents/{id}/config` takes it (a masked credential keeps the
/// real one), then uploaded and reloaded; each step's result shown with
/// the file as sent, so a refused one can be mended.
pub async fn save_config(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<TagentId>,
    Form(form): Form<ConfigForm>,
) -> Response {
    let lines: Vec<String> = form.file.lines().map(str::to_owned).collect();
    let mut page = config_page(&session, id, lines.join("\n"));
    let status = match c
        .http
        .operations
        .write_config(session.actor.as_str(), id, lines)
        .await
    {
        Ok(change) => {
            let status = crate::http::operations::change_status(&change);
            let text = match &change.message {
                Some(m) => format!("{}: {m}", change.result),
                None => format!("{}: uploaded and reloaded", change.result),
            };
            page.outcome = Some((change.ok(), text));
            page.steps = change.steps;
            status
        }
        Err(e) => {
            let e = ApiError::from(e);
            page.outcome = Some((false, e.1.clone()));
            e.0
        }
    };
    render(status, &page)
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
