//! Registration policy in the admin API (SPEC §6): enrollment tokens
//! (`/api/v1/enrollment-tokens`, admin token for every method: a token's
//! text is shown once, when created) and pending registrations
//! (`/api/v1/pending`: listed with a read token, approved or rejected with
//! an admin token). Every change goes into the audit log.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Actor;
use super::{ApiError, HttpState};
use crate::listener::audit::Record;
use crate::model::enrollment::{TOKEN_ID_LEN, is_hex};
use crate::model::{EnrollToken, Pending, Policy, TagentId, now_millis};
use crate::registry::request::validate_tenant;
use crate::registry::{EnrollJob, EnrollOutcome};

/// A token's lifetime unless asked otherwise (7 days), and at most (a year).
const DEFAULT_TTL_SECS: u64 = 7 * 24 * 3600;
const MAX_TTL_SECS: u64 = 366 * 24 * 3600;
/// Most registrations one token may admit.
const MAX_USES: u32 = 1_000_000;

/// An enrollment token as listed: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub tenant: String,
    /// `active`, `expired`, `revoked` or `used-up`.
    pub state: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub max_uses: u32,
    pub uses: u32,
    /// 0: never used.
    pub last_used_ms: u64,
    /// 0: not revoked.
    pub revoked_ms: u64,
    pub created_by: String,
    pub note: String,
    /// It may also admit a known tagent's new credential.
    pub reinstall: bool,
}

impl TokenView {
    pub fn of(t: &EnrollToken, now: u64) -> TokenView {
        TokenView {
            id: t.id.clone(),
            tenant: t.tenant.clone(),
            state: t.state(now).to_owned(),
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
            max_uses: t.max_uses,
            uses: t.uses,
            last_used_ms: t.last_used_ms,
            revoked_ms: t.revoked_ms,
            created_by: t.created_by.clone(),
            note: t.note.clone(),
            reinstall: t.reinstall,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// The tenant whose registrations it admits.
    pub tenant: String,
    /// Seconds it stays valid (default 604800, 7 days; at most 366 days).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Registrations it may admit (default 1; at most 1000000): each tagent
    /// it creates, or reinstalls with a new credential, is one.
    #[serde(default)]
    pub max_uses: Option<u32>,
    #[serde(default)]
    pub note: Option<String>,
    /// It may also bring a known tagent a new credential (a reinstall on
    /// the same host). Default false: only first registrations.
    #[serde(default)]
    pub reinstall: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The token's text, shown this once: put it in the tagents'
    /// `proxy.registeraddress` as `?tenant=<tenant>&token=<token>`.
    pub token: String,
    #[serde(flatten)]
    pub view: TokenView,
}

/// A pending registration as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PendingView {
    /// What approve and reject take: 16 hex digits. Each credential that
    /// asked for the same tenant, ip and port is an entry of its own.
    pub id: String,
    pub tenant: String,
    #[schema(value_type = String)]
    pub ip: IpAddr,
    pub port: u16,
    /// `new`, or `reinstall` (a new credential for `tagent`).
    pub kind: String,
    pub tagent: Option<TagentId>,
    /// Where the request came from.
    #[schema(value_type = String)]
    pub source: IpAddr,
    pub name: String,
    pub version: String,
    pub os_type: String,
    pub first_ms: u64,
    pub last_ms: u64,
    pub attempts: u32,
    /// Approved (by whom), waiting for the tagent's next attempt.
    pub approved_by: Option<String>,
    pub approved_ms: u64,
}

impl PendingView {
    pub fn of(p: &Pending) -> PendingView {
        PendingView {
            id: p.id(),
            tenant: p.tenant.clone(),
            ip: p.ip,
            port: p.port,
            kind: if p.tagent.is_some() {
                "reinstall"
            } else {
                "new"
            }
            .to_owned(),
            tagent: p.tagent,
            source: p.source,
            name: p.name.clone(),
            version: p.version.clone(),
            os_type: p.os_type.clone(),
            first_ms: p.first_ms,
            last_ms: p.last_ms,
            attempts: p.attempts,
            approved_by: p.approved_by.clone(),
            approved_ms: p.approved_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PendingList {
    /// The policy of tenants without one of their own.
    pub default_policy: Policy,
    /// The most registrations that may wait at once.
    pub max_pending: u64,
    /// Oldest first.
    pub pending: Vec<PendingView>,
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Every enrollment token, secrets never shown.
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "enrollment",
    responses((status = 200, body = Vec<TokenView>, description = "every token, by id"),
        (status = 503, body = super::ErrorBody, description = "the store cannot be read")),
    security(("bearer" = [])))]
pub(crate) async fn list_tokens(
    State(s): State<HttpState>,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    let store = s.registry.store().clone();
    let tokens = tokio::task::spawn_blocking(move || store.tokens())
        .await
        .map_err(ApiError::internal)?
        .map_err(unavailable)?;
    let now = now_millis();
    Ok(Json(tokens.iter().map(|t| TokenView::of(t, now)).collect()))
}

/// The checks of a new token's request, and the token.
pub fn new_token(req: &NewToken, who: &str) -> Result<(EnrollToken, String), ApiError> {
    validate_tenant(&req.tenant).map_err(|e| bad(e.to_string()))?;
    let ttl = req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > MAX_TTL_SECS {
        return Err(bad(format!(
            "ttl_secs must be between 1 and {MAX_TTL_SECS}"
        )));
    }
    let uses = req.max_uses.unwrap_or(1);
    if uses == 0 || uses > MAX_USES {
        return Err(bad(format!("max_uses must be between 1 and {MAX_USES}")));
    }
    let note = req.note.as_deref().unwrap_or("");
    if note.len() > 200 || note.chars().any(char::is_control) {
        return Err(bad(
            "note must be at most 200 bytes, without control characters",
        ));
    }
    let now = now_millis();
    Ok(EnrollToken::generate(
        &req.tenant,
        now,
        now + ttl * 1000,
        uses,
        who,
        note,
        req.reinstall,
    ))
}

/// Create a token; its text is in this reply only.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "enrollment",
    request_body = NewToken,
    responses((status = 201, body = CreatedToken, description = "the token, shown once"),
        (status = 400, body = super::ErrorBody, description = "a bad tenant, lifetime or use count"),
        (status = 503, body = super::ErrorBody, description = "the store cannot be written")),
    security(("bearer" = [])))]
pub(crate) async fn create_token(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    Json(req): Json<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let (token, text) = new_token(&req, who.as_str())?;
    let view = create(&s, who.as_str(), token).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken { token: text, view }),
    ))
}

/// Store `token` and audit it.
pub async fn create(s: &HttpState, who: &str, token: EnrollToken) -> Result<TokenView, ApiError> {
    let detail = format!(
        "token {} for tenant {}, {} uses, until {}{}",
        token.id,
        token.tenant,
        token.max_uses,
        token.expires_ms,
        if token.reinstall {
            ", reinstalls too"
        } else {
            ""
        }
    );
    let result = s
        .registry
        .enroll(EnrollJob::CreateToken(Box::new(token)))
        .await;
    audit(s, who, "token-create", 0, &result, detail).await;
    match result? {
        EnrollOutcome::Token(t) => Ok(TokenView::of(&t, now_millis())),
        EnrollOutcome::Pending(_) => {
            Err(ApiError::internal("a token job answered a pending entry"))
        }
    }
}

/// Revoke a token: it admits nothing from now on, and stays listed.
#[utoipa::path(delete, path = "/api/v1/enrollment-tokens/{id}", tag = "enrollment",
    params(("id" = String, Path, description = "the token's id (16 hex digits)")),
    responses((status = 200, body = TokenView, description = "the token, revoked"),
        (status = 404, body = super::ErrorBody, description = "no such token"),
        (status = 503, body = super::ErrorBody, description = "the store cannot be written")),
    security(("bearer" = [])))]
pub(crate) async fn revoke_token(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    Ok(Json(revoke(&s, who.as_str(), &id).await?))
}

pub async fn revoke(s: &HttpState, who: &str, id: &str) -> Result<TokenView, ApiError> {
    if !is_hex(id, TOKEN_ID_LEN) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no enrollment token {id:.32}"),
        ));
    }
    let result = s
        .registry
        .enroll(EnrollJob::RevokeToken(id.to_owned()))
        .await;
    audit(s, who, "token-revoke", 0, &result, format!("token {id}")).await;
    match result? {
        EnrollOutcome::Token(t) => Ok(TokenView::of(&t, now_millis())),
        EnrollOutcome::Pending(_) => {
            Err(ApiError::internal("a token job answered a pending entry"))
        }
    }
}

/// Every pending registration, and the policy in force.
#[utoipa::path(get, path = "/api/v1/pending", tag = "enrollment",
    responses((status = 200, body = PendingList, description = "registrations waiting for an operator"),
        (status = 503, body = super::ErrorBody, description = "the store cannot be read")),
    security(("bearer" = [])))]
pub(crate) async fn list_pending(
    State(s): State<HttpState>,
) -> Result<Json<PendingList>, ApiError> {
    Ok(Json(pending(&s).await?))
}

pub async fn pending(s: &HttpState) -> Result<PendingList, ApiError> {
    let store = s.registry.store().clone();
    let list = tokio::task::spawn_blocking(move || store.pending_list())
        .await
        .map_err(ApiError::internal)?
        .map_err(unavailable)?;
    let policy = s.registry.policy();
    Ok(PendingList {
        default_policy: policy.policies.default,
        max_pending: policy.max_pending,
        pending: {
            let mut v: Vec<PendingView> = list.iter().map(PendingView::of).collect();
            v.sort_by_key(|p| (p.first_ms, p.id.clone()));
            v
        },
    })
}

/// `id` if it has a pending id's form.
fn checked(id: &str) -> Result<String, ApiError> {
    if is_hex(id, 16) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no pending registration {id:.32}"),
        ))
    }
}

/// Approve a pending registration: the tagent's next attempt bringing the
/// same credential is accepted (within seconds: it retries).
#[utoipa::path(post, path = "/api/v1/pending/{id}/approve", tag = "enrollment",
    params(("id" = String, Path, description = "the pending registration's id")),
    responses((status = 200, body = PendingView, description = "approved"),
        (status = 404, body = super::ErrorBody, description = "no such pending registration"),
        (status = 503, body = super::ErrorBody, description = "the store cannot be written")),
    security(("bearer" = [])))]
pub(crate) async fn approve(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<PendingView>, ApiError> {
    Ok(Json(
        decide_pending(&s, who.as_str(), checked(&id)?, true).await?,
    ))
}

/// Reject a pending registration: it is dropped (and comes back as new if
/// the tagent tries again).
#[utoipa::path(delete, path = "/api/v1/pending/{id}", tag = "enrollment",
    params(("id" = String, Path, description = "the pending registration's id")),
    responses((status = 200, body = PendingView, description = "rejected"),
        (status = 404, body = super::ErrorBody, description = "no such pending registration"),
        (status = 503, body = super::ErrorBody, description = "the store cannot be written")),
    security(("bearer" = [])))]
pub(crate) async fn reject(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<PendingView>, ApiError> {
    Ok(Json(
        decide_pending(&s, who.as_str(), checked(&id)?, false).await?,
    ))
}

/// Approve (or reject) the pending registration `id`, audited.
pub async fn decide_pending(
    s: &HttpState,
    who: &str,
    id: String,
    approve: bool,
) -> Result<PendingView, ApiError> {
    let (job, action) = if approve {
        (
            EnrollJob::Approve {
                id: id.clone(),
                by: who.to_owned(),
            },
            "pending-approve",
        )
    } else {
        (EnrollJob::Reject { id: id.clone() }, "pending-reject")
    };
    let result = s.registry.enroll(job).await;
    let tagent = match &result {
        Ok(EnrollOutcome::Pending(p)) => p.tagent.unwrap_or(0),
        _ => 0,
    };
    let detail = match &result {
        Ok(EnrollOutcome::Pending(p)) => format!(
            "pending {id}: {}:{} of tenant {} from {}",
            p.ip, p.port, p.tenant, p.source
        ),
        _ => format!("pending {id}"),
    };
    audit(s, who, action, tagent, &result, detail).await;
    match result? {
        EnrollOutcome::Pending(p) => Ok(PendingView::of(&p)),
        EnrollOutcome::Token(_) => Err(ApiError::internal("a pending job answered a token")),
    }
}

async fn audit<T>(
    s: &HttpState,
    who: &str,
    action: &'static str,
    tagent: TagentId,
    result: &Result<T, crate::registry::ChangeError>,
    detail: String,
) {
    let label = match result {
        Ok(_) => "ok",
        Err(crate::registry::ChangeError::Unknown(_)) => "not_found",
        Err(_) => "store_error",
    };
    s.operations
        .audit(Record {
            who,
            action,
            tagent,
            result: label,
            detail: Some(detail),
        })
        .await;
}
