//! `/api/v1/tagents`: list, counts, one tagent, delete, and the commands
//! that go down one tagent's session (SPEC §3.2).

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Actor;
use super::{ApiError, HttpState};
use crate::dispatch::{Command, CommandResult};
use crate::heartbeat::SessionView;
use crate::listener::Reachability;
use crate::model::account_name;
use crate::model::{DisconnectReason, FilterParams, HostFacts, Tagent, TagentId};
use crate::registry::query::{self, Counts, Filter, FilterError};
use crate::registry::{ChangeError, Registry};

impl From<FilterError> for ApiError {
    fn from(e: FilterError) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
    }
}

/// A page cursor and size.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 1000 (default 100).
    pub limit: Option<usize>,
}

impl PageParams {
    /// Split a query string into the page's parameters and the filter's
    /// (`serde(flatten)` would lose the filter's number types).
    fn split(raw: Option<&str>) -> Result<(PageParams, FilterParams), ApiError> {
        let bad = |e: &dyn std::fmt::Display| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("invalid query string: {e}"),
            )
        };
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| bad(&e))?;
        let (page, filter): (Vec<_>, Vec<_>) = pairs
            .into_iter()
            .partition(|(k, _)| k == "cursor" || k == "limit");
        let encode = |p: &[(String, String)]| serde_urlencoded::to_string(p).map_err(|e| bad(&e));
        let page = serde_urlencoded::from_str(&encode(&page)?).map_err(|e| bad(&e))?;
        let filter = serde_urlencoded::from_str(&encode(&filter)?).map_err(|e| bad(&e))?;
        Ok((page, filter))
    }
}

/// Whether a tagent holds a live session, as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Connection {
    Connected,
    Disconnected,
}

/// One tagent as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TagentView {
    pub id: TagentId,
    pub tenant: String,
    /// `connected` only while it holds a live session on this hub.
    pub status: Connection,
    /// Why its last session ended (while disconnected).
    pub disconnect_reason: Option<DisconnectReason>,
    /// The primary ip.
    pub ip: String,
    /// The contained ips (the host's addresses).
    pub ips: Vec<String>,
    pub port: u16,
    pub name: String,
    #[serde(flatten)]
    pub host: HostFacts<String>,
    pub runner_group: u32,
    /// The runner that last held its session.
    pub runner: Option<u32>,
    pub first_registered_ms: u64,
    pub last_registered_ms: u64,
    pub last_status_change_ms: u64,
}

impl TagentView {
    pub fn new(t: &Tagent, registry: &Registry) -> Self {
        let s = |sym| registry.interner().resolve(sym).to_string();
        let seen = query::seen(t, registry.liveness());
        TagentView {
            id: t.id,
            tenant: s(t.tenant),
            status: if seen.connected {
                Connection::Connected
            } else {
                Connection::Disconnected
            },
            disconnect_reason: seen.reason,
            ip: t.ip.to_string(),
            ips: t.ips.iter().map(|ip| ip.to_string()).collect(),
            port: t.port,
            name: t.name.to_string(),
            host: t.host.map(|&v| s(v)),
            runner_group: t.runner_group,
            runner: t.runner,
            first_registered_ms: t.first_registered,
            last_registered_ms: t.last_registered,
            last_status_change_ms: t.last_status_change,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TagentPage {
    pub items: Vec<TagentView>,
    /// Pass as `cursor` for the next page; absent on the last one. A page
    /// may hold fewer than `limit` items and still have a next one.
    pub next_cursor: Option<String>,
}

/// An account of the tagent: one per ip. The credential is never shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    pub name: String,
    pub ip: String,
    pub has_credential: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TagentDetail {
    #[serde(flatten)]
    pub tagent: TagentView,
    pub accounts: Vec<AccountView>,
    /// The live session, when connected.
    pub session: Option<SessionView>,
    /// The last reachability check of its listener since the hub started
    /// (`POST /api/v1/tagents/{id}/reachability`).
    #[serde(default)]
    pub reachability: Option<Reachability>,
}

fn not_found(id: TagentId) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no tagent with id {id}"))
}

/// A page's size: 1 to 1000, 100 by default.
fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "limit must be between 1 and 1000".into(),
        ));
    }
    Ok(limit)
}

/// A page's cursor: `None` for the first page.
fn parse_cursor<T: std::str::FromStr>(cursor: Option<&str>) -> Result<Option<T>, ApiError> {
    match cursor {
        None | Some("") => Ok(None),
        Some(c) => c.parse().map(Some).map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("cursor '{c}' was not given by this API"),
            )
        }),
    }
}

/// List tagents, filtered, in id order.
#[utoipa::path(get, path = "/api/v1/tagents", tag = "tagents", operation_id = "list_tagents",
    params(FilterParams, PageParams),
    responses((status = 200, body = TagentPage, description = "one page of tagents, in id order"),
        (status = 400, body = super::ErrorBody, description = "a bad filter or cursor")),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(s): State<HttpState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<TagentPage>, ApiError> {
    let (page, filter) = PageParams::split(raw.as_deref())?;
    let filter = Filter::try_from(&filter)?;
    let after = parse_cursor(page.cursor.as_deref())?.unwrap_or(0);
    let limit = page_limit(page.limit)?;
    let registry = s.registry.clone();
    let page = tokio::task::spawn_blocking(move || {
        let page = {
            let index = registry.index();
            query::list(
                &index,
                registry.interner(),
                registry.liveness(),
                &filter,
                after,
                limit,
            )
        };
        TagentPage {
            items: page
                .items
                .iter()
                .map(|t| TagentView::new(t, &registry))
                .collect(),
            next_cursor: page.next.map(|id| id.to_string()),
        }
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(page))
}

/// Counts by status, by disconnect reason and by runner group, over the
/// tagents matching the filter.
#[utoipa::path(get, path = "/api/v1/tagents/counts", tag = "tagents",
    params(FilterParams),
    responses((status = 200, body = Counts, description = "totals of the matching tagents"),
        (status = 400, body = super::ErrorBody, description = "a bad filter")),
    security(("bearer" = [])))]
pub(crate) async fn counts(
    State(s): State<HttpState>,
    params: Result<Query<FilterParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Counts>, ApiError> {
    let Query(p) = params.map_err(ApiError::query)?;
    let filter = Filter::try_from(&p)?;
    let registry = s.registry.clone();
    let counts = tokio::task::spawn_blocking(move || {
        let mut counts = Counts::default();
        registry.for_each_matching(&filter, |t, live| counts.add(t, live));
        counts
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(counts))
}

/// One tagent with its accounts and live session.
#[utoipa::path(get, path = "/api/v1/tagents/{id}", tag = "tagents", operation_id = "get_tagent",
    params(("id" = u64, Path, description = "tagent id")),
    responses((status = 200, body = TagentDetail, description = "the tagent"),
        (status = 404, body = super::ErrorBody, description = "no tagent with this id")),
    security(("bearer" = [])))]
pub(crate) async fn get(
    State(s): State<HttpState>,
    Path(id): Path<TagentId>,
) -> Result<Json<TagentDetail>, ApiError> {
    let t = s.registry.tagent(id).ok_or_else(|| not_found(id))?;
    let (registry, port) = (s.registry.clone(), t.port);
    let record = t.clone();
    let accounts = tokio::task::spawn_blocking(move || registry.accounts(&record))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .into_iter()
        .map(|(ip, has_credential)| AccountView {
            name: account_name(ip, port),
            ip: ip.to_string(),
            has_credential,
        })
        .collect();
    let session = s.hub.session_of(id).map(|sess| s.hub.view(&sess));
    Ok(Json(TagentDetail {
        tagent: TagentView::new(&t, &s.registry),
        accounts,
        session,
        reachability: s.operations.last_check(id),
    }))
}

/// Delete a tagent and its accounts. Refused while it is connected.
#[utoipa::path(delete, path = "/api/v1/tagents/{id}", tag = "tagents", operation_id = "delete_tagent",
    params(("id" = u64, Path, description = "tagent id")),
    responses((status = 204, description = "deleted"),
        (status = 404, body = super::ErrorBody, description = "no tagent with this id"),
        (status = 409, body = super::ErrorBody, description = "the tagent is connected")),
    security(("bearer" = [])))]
pub(crate) async fn delete(
    State(s): State<HttpState>,
    Path(id): Path<TagentId>,
) -> Result<StatusCode, ApiError> {
    s.registry.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        let status = match &e {
            ChangeError::NotFound(_) | ChangeError::NoGroup(_) | ChangeError::Unknown(_) => {
                StatusCode::NOT_FOUND
            }
            ChangeError::Connected(_) | ChangeError::GroupInUse { .. } => StatusCode::CONFLICT,
            ChangeError::Invalid(_) => StatusCode::BAD_REQUEST,
            ChangeError::Store(_) | ChangeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

fn command_reply(r: CommandResult) -> Response {
    let status = StatusCode::from_u16(r.result.http_status())
        .expect("a command outcome's status is a valid HTTP status");
    (status, Json(r)).into_response()
}

/// The answers to a command sent down a session (reload, resetcred), for
/// the OpenAPI document: the handlers answer through [`command_reply`].
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it only describes the responses
enum Delivery {
    /// delivered
    #[response(status = 200)]
    Delivered(CommandResult),
    /// no tagent with this id
    #[response(status = 404)]
    NoSuchTagent(CommandResult),
    /// not connected, or its session closed
    #[response(status = 409)]
    NotConnected(CommandResult),
    /// the tagent answered with a failure
    #[response(status = 502)]
    Failed(CommandResult),
    /// no answer in time
    #[response(status = 504)]
    Timeout(CommandResult),
}

/// Whether the tagent holds a live session here (the original's statusCheck).
#[utoipa::path(post, path = "/api/v1/tagents/{id}/status-check", tag = "commands",
    params(("id" = u64, Path, description = "tagent id")),
    responses((status = 200, body = CommandResult, description = "connected"),
        (status = 404, body = CommandResult, description = "no tagent with this id"),
        (status = 409, body = CommandResult, description = "not connected")),
    security(("bearer" = [])))]
pub(super) async fn status_check(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    Path(id): Path<TagentId>,
) -> Response {
    command_reply(s.dispatch(who.as_str()).run(id, Command::StatusCheck).await)
}

/// Tell the tagent to restart and register again.
#[utoipa::path(post, path = "/api/v1/tagents/{id}/reload", tag = "commands",
    params(("id" = u64, Path, description = "tagent id")),
    responses(Delivery),
    security(("bearer" = [])))]
pub(super) async fn reload(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    Path(id): Path<TagentId>,
) -> Response {
    command_reply(s.dispatch(who.as_str()).run(id, Command::Reload).await)
}

/// Tell the tagent to pick a new credential, restart and register again.
#[utoipa::path(post, path = "/api/v1/tagents/{id}/resetcred", tag = "commands",
    params(("id" = u64, Path, description = "tagent id")),
    responses(Delivery),
    security(("bearer" = [])))]
pub(super) async fn resetcred(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    Path(id): Path<TagentId>,
) -> Response {
    command_reply(s.dispatch(who.as_str()).run(id, Command::Resetcred).await)
}

/// How long an operator's approval of a reinstall lasts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AllowReinstall {
    /// Minutes the approval lasts (default 60, at most 10080: a week).
    pub minutes: Option<u64>,
}

/// Allow the tagent's next registration to bring a new credential (a
/// reinstall on the same host, SPEC §6): without this, a registration
/// whose credential differs from the one the tagent registered with is
/// refused (403), so no one can take over a known tagent by registering.
#[utoipa::path(post, path = "/api/v1/tagents/{id}/allow-reinstall", tag = "tagents",
    params(("id" = u64, Path, description = "tagent id"), AllowReinstall),
    responses((status = 204, description = "allowed until the time given, or the first new credential"),
        (status = 400, body = super::ErrorBody, description = "minutes out of range"),
        (status = 404, body = super::ErrorBody, description = "no tagent with this id")),
    security(("bearer" = [])))]
pub(crate) async fn allow_reinstall(
    State(s): State<HttpState>,
    Path(id): Path<TagentId>,
    params: Result<Query<AllowReinstall>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(p) = params.map_err(ApiError::query)?;
    let minutes = p.minutes.unwrap_or(60);
    if !(1..=7 * 24 * 60).contains(&minutes) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "minutes must be between 1 and 10080".into(),
        ));
    }
    s.registry
        .open_credential_change(id, std::time::Duration::from_secs(minutes * 60))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UnregisteredSessions {
    /// Unregistered sessions in all (not only on this page).
    pub count: usize,
    /// This page, in order of the peer address.
    pub sessions: Vec<SessionView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// Sessions whose heartbeats match no registered tagent (SPEC §3.1): each
/// has been answered OK and sent a reload, so it should register soon.
/// Paged as the tagent list is.
#[utoipa::path(get, path = "/api/v1/sessions/unregistered", tag = "sessions",
    params(PageParams),
    responses((status = 200, body = UnregisteredSessions, description = "one page of the unregistered sessions"),
        (status = 400, body = super::ErrorBody, description = "a bad cursor or limit")),
    security(("bearer" = [])))]
pub(crate) async fn unregistered(
    State(s): State<HttpState>,
    Query(page): Query<PageParams>,
) -> Result<Json<UnregisteredSessions>, ApiError> {
    let after = parse_cursor(page.cursor.as_deref())?;
    let limit = page_limit(page.limit)?;
    let page = s.hub.unregistered(after, limit);
    Ok(Json(UnregisteredSessions {
        count: page.total,
        sessions: page.sessions,
        next_cursor: page.next.map(|p| p.to_string()),
    }))
}
