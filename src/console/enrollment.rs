//! Registration policy (SPEC §6) in the console: the pending registrations
//! with approve and reject, and, for an admin session, the enrollment
//! tokens with create (its text shown once, on the page that answers the
//! form) and revoke. Through the API's own functions, so the checks, the
//! audit log and the messages are the API's.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::page::{Chrome, error, number, render, when};
use super::session::Session;
use super::state::Console;
use crate::http::ApiError;
use crate::http::enrollment::{self as api, NewToken, PendingList, TokenView};
use crate::model::enrollment::is_hex;

/// One pending registration as listed.
struct PendingLine {
    id: String,
    tenant: String,
    addr: String,
    kind: String,
    tagent: Option<u64>,
    name: String,
    version: String,
    os_type: String,
    source: String,
    attempts: u32,
    last: String,
    approved_by: String,
}

/// One token as listed.
struct TokenLine {
    view: TokenView,
    expires: String,
    last_used: String,
}

#[derive(Template)]
#[template(path = "console/enrollment.html")]
struct EnrollmentPage {
    c: Chrome,
    default_policy: String,
    max_pending: u64,
    pending: Vec<PendingLine>,
    /// `None` for a read session: tokens are admin-only, even to list.
    tokens: Option<Vec<TokenLine>>,
    /// The text of a token just created, shown this once.
    created: Option<String>,
    /// Why the last form was refused.
    message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub uses: String,
    #[serde(default)]
    pub hours: String,
    #[serde(default)]
    pub note: String,
    /// A checkbox: present when ticked.
    #[serde(default)]
    pub reinstall: Option<String>,
}

fn lines(list: PendingList) -> Vec<PendingLine> {
    list.pending
        .into_iter()
        .map(|p| PendingLine {
            addr: format!("{}:{}", p.ip, p.port),
            source: p.source.to_string(),
            last: when(p.last_ms),
            approved_by: p.approved_by.unwrap_or_default(),
            id: p.id,
            tenant: p.tenant,
            kind: p.kind,
            tagent: p.tagent,
            name: p.name,
            version: p.version,
            os_type: p.os_type,
            attempts: p.attempts,
        })
        .collect()
}

async fn show(
    c: &Console,
    session: &Session,
    created: Option<String>,
    message: Option<String>,
    status: StatusCode,
) -> Response {
    let list = match api::pending(&c.http).await {
        Ok(l) => l,
        Err(e) => return error(session, &e),
    };
    let tokens = if session.is_admin() {
        match api::list_tokens(State(c.http.clone())).await {
            Ok(axum::Json(t)) => Some(
                t.into_iter()
                    .map(|view| TokenLine {
                        expires: when(view.expires_ms),
                        last_used: when(view.last_used_ms),
                        view,
                    })
                    .collect(),
            ),
            Err(e) => return error(session, &e),
        }
    } else {
        None
    };
    let page = EnrollmentPage {
        c: Chrome::new("Enrollment", session),
        default_policy: list.default_policy.to_string(),
        max_pending: list.max_pending,
        pending: lines(list),
        tokens,
        created,
        message,
    };
    render(status, &page)
}

pub async fn page(State(c): State<Console>, Extension(session): Extension<Session>) -> Response {
    show(&c, &session, None, None, StatusCode::OK).await
}

/// Approve (`approve`) or reject a pending registration, then the page.
pub async fn decide(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path((id, verb)): Path<(String, String)>,
) -> Response {
    let approve = match verb.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return error(
                &session,
                &ApiError(StatusCode::NOT_FOUND, "no such action".into()),
            );
        }
    };
    if !is_hex(&id, 16) {
        return error(
            &session,
            &ApiError(StatusCode::NOT_FOUND, "no such pending registration".into()),
        );
    }
    match api::decide_pending(&c.http, session.actor.as_str(), id, approve).await {
        Ok(_) => Redirect::to("/ui/enrollment").into_response(),
        Err(e) => show(&c, &session, None, Some(e.1), e.0).await,
    }
}

/// Create a token from the form; the page shows its text once.
pub async fn create_token(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Form(form): Form<TokenForm>,
) -> Response {
    let parsed = number::<u64>(&form.uses, "uses").and_then(|uses| {
        let hours = number::<u64>(&form.hours, "hours")?;
        let max_uses = uses
            .map(|u| u32::try_from(u).map_err(|_| "uses is too large".to_owned()))
            .transpose()?;
        Ok((max_uses, hours))
    });
    let (max_uses, hours) = match parsed {
        Ok(p) => p,
        Err(m) => return show(&c, &session, None, Some(m), StatusCode::BAD_REQUEST).await,
    };
    let req = NewToken {
        tenant: form.tenant.trim().to_owned(),
        ttl_secs: hours.map(|h| h.saturating_mul(3600)),
        max_uses,
        note: Some(form.note).filter(|n| !n.is_empty()),
        reinstall: form.reinstall.is_some(),
    };
    let who = session.actor.as_str();
    let created = match api::new_token(&req, who) {
        Ok((token, text)) => api::create(&c.http, who, token).await.map(|_| text),
        Err(e) => Err(e),
    };
    match created {
        Ok(text) => show(&c, &session, Some(text), None, StatusCode::CREATED).await,
        Err(e) => show(&c, &session, None, Some(e.1), e.0).await,
    }
}

pub async fn revoke_token(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match api::revoke(&c.http, session.actor.as_str(), &id).await {
        Ok(_) => Redirect::to("/ui/enrollment").into_response(),
        Err(e) => show(&c, &session, None, Some(e.1), e.0).await,
    }
}
