//! Upgrades in the console: the packages (listed, uploaded from a file
//! form streamed to disk, deleted), the rollouts (newest first), a
//! form to start one on a filter, and one rollout with each tagent's
//! steps, refreshing itself while it runs, with abort. Through the API's
//! own functions, so its checks and messages are the API's.

use askama::Template;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::page::{Chrome, error, number, render, when};
use super::session::Session;
use super::state::Console;
use crate::http::ApiError;
use crate::http::upgrades::{UpgradeRequest, begin};
use crate::model::enrollment::is_hex;
use crate::model::{FilterParams, Package, Rollout, RolloutState, RolloutTarget};

struct RolloutLine {
    r: Rollout,
    started: String,
    state: String,
}

#[derive(Template)]
#[template(path = "console/upgrades.html")]
struct UpgradesPage {
    c: Chrome,
    packages: Vec<(Package, String)>,
    versions: Vec<String>,
    rollouts: Vec<RolloutLine>,
    message: Option<String>,
}

struct TargetLine {
    t: RolloutTarget,
    state: String,
    steps: String,
}

#[derive(Template)]
#[template(path = "console/rollout.html")]
struct RolloutPage {
    c: Chrome,
    r: Rollout,
    state: String,
    running: bool,
    started: String,
    ended: String,
    targets: Vec<TargetLine>,
}

/// The start form as typed: the filter's fields, blank for unset.
#[derive(Debug, Default, Deserialize)]
pub struct StartForm {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub ip: String,
    #[serde(default)]
    pub from_version: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub name_prefix: String,
    #[serde(default)]
    pub concurrency: String,
    #[serde(default)]
    pub max_failures: String,
}

fn label(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn show(
    c: &Console,
    session: &Session,
    message: Option<String>,
    status: StatusCode,
) -> Response {
    let packages = c.http.upgrades.packages().clone();
    let listed = tokio::task::spawn_blocking(move || packages.list()).await;
    let packages = match listed {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error(session, &e.into()),
        Err(e) => {
            return error(
                session,
                &ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            );
        }
    };
    let rollouts = match c.http.upgrades.list(100).await {
        Ok(r) => r,
        Err(e) => return error(session, &e.into()),
    };
    let mut versions: Vec<String> = packages.iter().map(|p| p.version.clone()).collect();
    versions.sort();
    versions.dedup();
    let page = UpgradesPage {
        c: Chrome::new("Upgrades", session),
        packages: packages
            .into_iter()
            .map(|p| {
                let at = when(p.uploaded_ms);
                (p, at)
            })
            .collect(),
        versions,
        rollouts: rollouts
            .into_iter()
            .map(|r| RolloutLine {
                started: when(r.created_ms),
                state: label(&r.state),
                r,
            })
            .collect(),
        message,
    };
    render(status, &page)
}

pub async fn page(State(c): State<Console>, Extension(session): Extension<Session>) -> Response {
    show(&c, &session, None, StatusCode::OK).await
}

/// Start a rollout on the form's filter, then its page.
pub async fn start(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Form(form): Form<StartForm>,
) -> Response {
    let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let parsed = (|| {
        Ok::<_, String>(UpgradeRequest {
            version: form.version.trim().to_owned(),
            ids: None,
            filter: Some(FilterParams {
                ip: text(&form.ip),
                version: text(&form.from_version),
                group: number(&form.group, "group")?,
                name_prefix: text(&form.name_prefix),
                ..Default::default()
            }),
            all: false,
            concurrency: number(&form.concurrency, "concurrency")?,
            max_failures: number(&form.max_failures, "max failures")?,
            register_timeout_secs: None,
        })
    })();
    let req = match parsed {
        Ok(r) => r,
        Err(m) => return show(&c, &session, Some(m), StatusCode::BAD_REQUEST).await,
    };
    match begin(&c.http, session.actor.as_str(), req).await {
        Ok(r) => Redirect::to(&format!("/ui/upgrades/{}", r.id)).into_response(),
        Err(e) => show(&c, &session, Some(e.1), e.0).await,
    }
}

fn checked(id: &str) -> Result<(), ApiError> {
    if is_hex(id, 16) {
        Ok(())
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, "no such rollout".into()))
    }
}

pub async fn rollout(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = checked(&id) {
        return error(&session, &e);
    }
    let (r, targets) = match c.http.upgrades.get(&id).await {
        Ok(x) => x,
        Err(e) => return error(&session, &e.into()),
    };
    let page = RolloutPage {
        c: Chrome::new(format!("Rollout {}", r.id), &session),
        state: label(&r.state),
        running: r.state == RolloutState::Running,
        started: when(r.created_ms),
        ended: when(r.ended_ms),
        targets: targets
            .into_iter()
            .map(|t| TargetLine {
                state: label(&t.state),
                steps: t
                    .steps
                    .iter()
                    .map(|s| format!("{} {}", s.step.as_str(), s.result))
                    .collect::<Vec<_>>()
                    .join(", "),
                t,
            })
            .collect(),
        r,
    };
    render(StatusCode::OK, &page)
}

pub async fn abort(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = checked(&id) {
        return error(&session, &e);
    }
    match c.http.upgrades.abort(&id) {
        Ok(_) => Redirect::to(&format!("/ui/upgrades/{id}")).into_response(),
        Err(e) => error(&session, &e.into()),
    }
}

pub async fn delete_package(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path(sha): Path<String>,
) -> Response {
    match c.http.upgrades.packages().delete(&sha).await {
        Ok(_) => Redirect::to("/ui/upgrades").into_response(),
        Err(e) => show(&c, &session, Some(e.to_string()), ApiError::from(e).0).await,
    }
}

/// Upload a package from the page's file form: its version, os type and
/// arch fields first, then the tar, streamed to disk as the API does.
pub async fn upload_package(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    mut form: Multipart,
) -> Response {
    let mut fields = std::collections::HashMap::new();
    let result = loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break Err("the form has no package file".to_owned()),
            Err(e) => break Err(format!("the upload broke off: {e}")),
        };
        let name = field.name().unwrap_or("").to_owned();
        if name == "package" {
            let get = |k: &str| {
                fields
                    .get(k)
                    .map(String::as_str)
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            };
            let (version, os_type) = (get("version"), get("os_type"));
            let arch = Some(get("arch"))
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| "default".into());
            break c
                .http
                .upgrades
                .packages()
                .add(&version, &os_type, &arch, session.actor.as_str(), field)
                .await
                .map_err(|e| e.to_string());
        }
        if !matches!(name.as_str(), "version" | "os_type" | "arch") || fields.len() >= 3 {
            break Err(format!("unexpected form field {name:.32}"));
        }
        match field.text().await {
            Ok(t) if t.len() <= 64 => {
                fields.insert(name, t);
            }
            _ => break Err(format!("the field {name} is not a short text")),
        }
    };
    match result {
        Ok(p) => {
            tracing::info!(sha256 = %p.sha256, version = %p.version, by = session.actor.as_str(), "package added from the console");
            Redirect::to("/ui/upgrades").into_response()
        }
        Err(m) => show(&c, &session, Some(m), StatusCode::BAD_REQUEST).await,
    }
}
