//! Runner groups: the list, create, edit (ordered networks, runners) and
//! delete, through the API's own handlers, so their validation messages
//! are the API's; each is shown beside the field it is about.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form, Json};
use serde::Deserialize;

use super::page::{Chrome, error, render};
use super::session::Session;
use super::state::Console;
use crate::http::ApiError;
use crate::http::groups::{self as api, GroupBody, GroupView, RunnerBody};

/// The group form as typed: one network a line; one runner a line, as
/// `id name host:port` or `id name this-hub`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct GroupForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub networks: String,
    #[serde(default)]
    pub runners: String,
}

/// Which field a message is about.
#[derive(Default)]
pub struct FieldErrors {
    pub name: Option<String>,
    pub networks: Option<String>,
    pub runners: Option<String>,
    pub other: Option<String>,
}

impl FieldErrors {
    fn of(message: String) -> Self {
        let m = message.to_lowercase();
        if m.starts_with("runner ") || m.contains("runners") {
            FieldErrors {
                runners: Some(message),
                ..Default::default()
            }
        } else if m.contains("network") || m.contains("cidr") || m.contains("host bits") {
            FieldErrors {
                networks: Some(message),
                ..Default::default()
            }
        } else if m.contains("name") {
            FieldErrors {
                name: Some(message),
                ..Default::default()
            }
        } else {
            FieldErrors {
                other: Some(message),
                ..Default::default()
            }
        }
    }
}

impl GroupForm {
    fn of(g: &GroupView) -> Self {
        GroupForm {
            name: g.name.clone(),
            networks: g.networks.join("\n"),
            runners: g
                .runners
                .iter()
                .map(|r| {
                    let at = if r.this_hub {
                        "this-hub".to_owned()
                    } else {
                        r.heartbeat.clone().unwrap_or_default()
                    };
                    format!("{} {} {}", r.id, r.name, at)
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// The API's body; a runner line that cannot be read is the runners' error.
    fn body(&self, id: Option<u32>) -> Result<GroupBody, FieldErrors> {
        let mut runners = Vec::new();
        for (n, line) in self
            .runners
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [rid, name, at] = parts[..] else {
                return Err(FieldErrors::of(format!(
                    "runner line {}: write 'id name host:port' or 'id name this-hub'",
                    n + 1
                )));
            };
            let Ok(rid) = rid.parse() else {
                return Err(FieldErrors::of(format!(
                    "runner line {}: '{rid}' is not a runner id",
                    n + 1
                )));
            };
            let this_hub = at == "this-hub";
            runners.push(RunnerBody {
                id: rid,
                name: name.to_owned(),
                heartbeat: (!this_hub).then(|| at.to_owned()),
                this_hub,
            });
        }
        Ok(GroupBody {
            id,
            name: self.name.clone(),
            networks: self
                .networks
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            runners,
        })
    }
}

#[derive(Template)]
#[template(path = "console/groups.html")]
struct GroupsPage {
    c: Chrome,
    groups: Vec<GroupView>,
    /// The create form (empty, or as typed when refused).
    form: GroupForm,
    errors: FieldErrors,
}

#[derive(Template)]
#[template(path = "console/group.html")]
struct GroupPage {
    c: Chrome,
    id: u32,
    tagents: usize,
    form: GroupForm,
    errors: FieldErrors,
}

async fn list_page(
    c: &Console,
    session: &Session,
    form: GroupForm,
    errors: FieldErrors,
    status: StatusCode,
) -> Response {
    match api::list(State(c.http.clone())).await {
        Ok(Json(groups)) => {
            let page = GroupsPage {
                c: Chrome::new("Runner groups", session),
                groups,
                form,
                errors,
            };
            render(status, &page)
        }
        Err(e) => error(session, &e),
    }
}

pub async fn list(State(c): State<Console>, Extension(session): Extension<Session>) -> Response {
    list_page(
        &c,
        &session,
        GroupForm::default(),
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

fn refused(e: &ApiError) -> StatusCode {
    e.0
}

pub async fn create(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Form(form): Form<GroupForm>,
) -> Response {
    let body = match form.body(None) {
        Ok(b) => b,
        Err(errors) => return list_page(&c, &session, form, errors, StatusCode::BAD_REQUEST).await,
    };
    match api::create(State(c.http.clone()), Ok(Json(body))).await {
        Ok((_, Json(g))) => Redirect::to(&format!("/ui/groups/{}", g.id)).into_response(),
        Err(e) => {
            let status = refused(&e);
            list_page(&c, &session, form, FieldErrors::of(e.1), status).await
        }
    }
}

fn group_page(
    session: &Session,
    id: u32,
    tagents: usize,
    form: GroupForm,
    errors: FieldErrors,
    status: StatusCode,
) -> Response {
    let page = GroupPage {
        c: Chrome::new(format!("Runner group {id}"), session),
        id,
        tagents,
        form,
        errors,
    };
    render(status, &page)
}

/// A group as the store holds it, in its form.
fn stored_page(session: &Session, id: u32, g: crate::http::groups::GroupView) -> Response {
    let form = GroupForm::of(&g);
    group_page(
        session,
        id,
        g.tagents,
        form,
        FieldErrors::default(),
        StatusCode::OK,
    )
}

pub async fn edit(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<u32>,
) -> Response {
    match api::get(State(c.http.clone()), Path(id)).await {
        Ok(Json(g)) => stored_page(&session, id, g),
        Err(e) => error(&session, &e),
    }
}

pub async fn update(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<u32>,
    Form(form): Form<GroupForm>,
) -> Response {
    let tagents = match api::get(State(c.http.clone()), Path(id)).await {
        Ok(Json(g)) => g.tagents,
        Err(e) => return error(&session, &e),
    };
    let body = match form.body(Some(id)) {
        Ok(b) => b,
        Err(errors) => {
            return group_page(&session, id, tagents, form, errors, StatusCode::BAD_REQUEST);
        }
    };
    match api::update(State(c.http.clone()), Path(id), Ok(Json(body))).await {
        Ok(Json(g)) => stored_page(&session, id, g),
        Err(e) => {
            let status = refused(&e);
            group_page(&session, id, tagents, form, FieldErrors::of(e.1), status)
        }
    }
}

pub async fn delete(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<u32>,
) -> Response {
    match api::delete(State(c.http.clone()), Path(id)).await {
        Ok(_) => Redirect::to("/ui/groups").into_response(),
        Err(e) => match api::get(State(c.http.clone()), Path(id)).await {
            Ok(Json(g)) => {
                let status = refused(&e);
                group_page(
                    &session,
                    id,
                    g.tagents,
                    GroupForm::of(&g),
                    FieldErrors::of(e.1),
                    status,
                )
            }
            Err(_) => error(&session, &e),
        },
    }
}
