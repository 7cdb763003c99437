//! Upgrades in the admin API (SPEC §5.5): installation packages
//! (`/api/v1/packages`: the tar as the request body, streamed to disk) and
//! rollouts (`/api/v1/upgrades`: a version to tagents named by id or
//! filter, progress per tagent, abort, history). Changes need an admin
//! token, reads a read token.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use super::auth::Actor;
use super::commands::targets;
use super::{ApiError, HttpState};
use crate::model::{FilterParams, Package, Rollout, RolloutTarget, TagentId};
use crate::upgrade::{PackageError, Plan, Progress, RolloutError};

impl From<PackageError> for ApiError {
    fn from(e: PackageError) -> Self {
        let status = match &e {
            PackageError::Invalid(_) | PackageError::Body(_) => StatusCode::BAD_REQUEST,
            PackageError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            PackageError::Exists { .. } => StatusCode::CONFLICT,
            PackageError::NotFound(_) => StatusCode::NOT_FOUND,
            PackageError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            PackageError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> Self {
        let status = match &e {
            RolloutError::Invalid(_) => StatusCode::BAD_REQUEST,
            RolloutError::NotFound(_) => StatusCode::NOT_FOUND,
            RolloutError::Ended(_) => StatusCode::CONFLICT,
            RolloutError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PackageParams {
    /// The version tagents report once upgraded (`1.6.0`).
    pub version: String,
    /// `Linux`, `Windows`, ... as tagents report `osType`.
    pub os_type: String,
    /// As tagents report `osbit` (`x86_64`, `aarch64`), or `default`.
    pub arch: String,
}

/// Every package, newest first.
#[utoipa::path(get, path = "/api/v1/packages", tag = "upgrades",
    responses((status = 200, body = Vec<Package>, description = "the packages")),
    security(("bearer" = [])))]
pub(crate) async fn list_packages(
    State(s): State<HttpState>,
) -> Result<Json<Vec<Package>>, ApiError> {
    let packages = s.upgrades.packages().clone();
    let list = tokio::task::spawn_blocking(move || packages.list())
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(list))
}

/// Upload a package: the tar (of the tagent's `bin lib tools mod`) is the
/// body, kept by its SHA-256. At most `[upgrade] max_package_bytes`; the
/// whole body within `[http] body_timeout_secs`.
#[utoipa::path(post, path = "/api/v1/packages", tag = "upgrades",
    params(PackageParams),
    request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 201, body = Package, description = "kept"),
        (status = 400, body = super::ErrorBody, description = "not a tar, or a bad version, os type or arch"),
        (status = 409, body = super::ErrorBody, description = "that version, os type and arch has a package"),
        (status = 413, body = super::ErrorBody, description = "too large")),
    security(("bearer" = [])))]
pub(crate) async fn upload_package(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    Query(p): Query<PackageParams>,
    body: Body,
) -> Result<(StatusCode, Json<Package>), ApiError> {
    let package = s
        .upgrades
        .packages()
        .add(
            &p.version,
            &p.os_type,
            &p.arch,
            who.as_str(),
            body.into_data_stream(),
        )
        .await?;
    tracing::info!(sha256 = %package.sha256, version = %package.version, os = %package.os_type, arch = %package.arch, size = package.size, by = who.as_str(), "package added");
    Ok((StatusCode::CREATED, Json(package)))
}

/// Delete a package.
#[utoipa::path(delete, path = "/api/v1/packages/{sha256}", tag = "upgrades",
    params(("sha256" = String, Path)),
    responses((status = 200, body = Package, description = "deleted"),
        (status = 404, body = super::ErrorBody, description = "no such package")),
    security(("bearer" = [])))]
pub(crate) async fn delete_package(
    State(s): State<HttpState>,
    Path(sha): Path<String>,
) -> Result<Json<Package>, ApiError> {
    Ok(Json(s.upgrades.packages().delete(&sha).await?))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {
    /// The version to roll out: a package of it must exist.
    pub version: String,
    /// These tagents; or use `filter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<TagentId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterParams>,
    /// With no `ids` and an empty filter: every tagent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// Tagents upgraded at once (default 10, at most 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Stop starting tagents once this many failed (default 0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<u32>,
    /// How long a reloaded tagent has to register with the new version
    /// (default 300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub register_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RolloutDetail {
    #[serde(flatten)]
    pub rollout: Rollout,
    /// By tagent id.
    pub tagents: Vec<RolloutTarget>,
}

/// Start a rollout; it runs on its own: follow it with
/// `GET /api/v1/upgrades/{id}`.
#[utoipa::path(post, path = "/api/v1/upgrades", tag = "upgrades", operation_id = "start_rollout",
    request_body = UpgradeRequest,
    responses((status = 202, body = Rollout, description = "started"),
        (status = 400, body = super::ErrorBody, description = "no package of the version, no targets, bad limits")),
    security(("bearer" = [])))]
pub(crate) async fn start(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    body: Result<Json<UpgradeRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Rollout>), ApiError> {
    let Json(req) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let rollout = begin(&s, who.as_str(), req).await?;
    Ok((StatusCode::ACCEPTED, Json(rollout)))
}

/// Start the rollout `req` asks for, on behalf of `who`.
pub async fn begin(s: &HttpState, who: &str, req: UpgradeRequest) -> Result<Rollout, ApiError> {
    let ids = targets(s, req.ids.as_deref(), req.filter.as_ref(), req.all).await?;
    let plan = Plan {
        version: req.version,
        ids,
        concurrency: req.concurrency.unwrap_or(10),
        max_failures: req.max_failures.unwrap_or(0),
        register_timeout: std::time::Duration::from_secs(req.register_timeout_secs.unwrap_or(300)),
    };
    Ok(s.upgrades.begin(who, plan).await?)
}

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// How many, newest first (default 50, at most 1000).
    pub limit: Option<usize>,
}

/// The rollouts, newest first.
#[utoipa::path(get, path = "/api/v1/upgrades", tag = "upgrades", operation_id = "list_rollouts",
    params(ListParams),
    responses((status = 200, body = Vec<Rollout>, description = "the rollouts")),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(s): State<HttpState>,
    Query(q): Query<ListParams>,
) -> Result<Json<Vec<Rollout>>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    Ok(Json(s.upgrades.list(limit).await?))
}

/// One rollout with each tagent's state and steps.
#[utoipa::path(get, path = "/api/v1/upgrades/{id}", tag = "upgrades", operation_id = "get_rollout",
    params(("id" = String, Path)),
    responses((status = 200, body = RolloutDetail, description = "the rollout"),
        (status = 404, body = super::ErrorBody, description = "no such rollout")),
    security(("bearer" = [])))]
pub(crate) async fn get(
    State(s): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<RolloutDetail>, ApiError> {
    let (rollout, tagents) = s.upgrades.get(&id).await?;
    Ok(Json(RolloutDetail { rollout, tagents }))
}

/// Follow a rollout as Server-Sent Events: `rollout` (the header and
/// every tagent, now), then `tagent` for each change of one (with the
/// header after it), and `end` with the final header. A rollout that ended
/// (or runs on another hub) gets `rollout` from the history and `end`.
#[utoipa::path(get, path = "/api/v1/upgrades/{id}/events", tag = "upgrades", operation_id = "rollout_events",
    params(("id" = String, Path)),
    responses((status = 200, description = "text/event-stream"),
        (status = 404, body = super::ErrorBody, description = "no such rollout")),
    security(("bearer" = [])))]
pub(crate) async fn events(
    State(s): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let (now, rx) = s.upgrades.watch(&id);
    let (first, ended) = match now {
        Some((rollout, tagents)) => (RolloutDetail { rollout, tagents }, false),
        None => {
            let (rollout, tagents) = s.upgrades.get(&id).await?;
            (RolloutDetail { rollout, tagents }, true)
        }
    };
    let mut pending: std::collections::VecDeque<SseEvent> = [json("rollout", &first)].into();
    if ended {
        pending.push_back(json("end", &first.rollout));
    }
    let state = (pending, rx, id, ended);
    let stream = futures_util::stream::unfold(
        state,
        move |(mut pending, mut rx, id, mut done)| async move {
            loop {
                if let Some(e) = pending.pop_front() {
                    return Some((Ok(e), (pending, rx, id, done)));
                }
                if done {
                    return None;
                }
                match rx.recv().await {
                    Ok(Progress::Target(h, t)) if h.id == id => {
                        pending.push_back(json(
                            "tagent",
                            &TagentProgress {
                                rollout: h,
                                tagent: t,
                            },
                        ));
                    }
                    Ok(Progress::Ended(h)) if h.id == id => {
                        pending.push_back(json("end", &h));
                        done = true;
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        pending.push_back(SseEvent::default().event("reset").data(
                            r#"{"reason":"the watcher fell behind: read the rollout again"}"#,
                        ));
                        done = true;
                    }
                    Err(RecvError::Closed) => done = true,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A `tagent` event: one tagent's change and the header after it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TagentProgress {
    pub rollout: Rollout,
    pub tagent: RolloutTarget,
}

/// An event named `name` carrying `v` as JSON.
fn json<T: Serialize>(name: &str, v: &T) -> SseEvent {
    SseEvent::default()
        .event(name)
        .json_data(v)
        .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"))
}

/// Abort a running rollout: no tagent is started after; those under way
/// end as they end.
#[utoipa::path(post, path = "/api/v1/upgrades/{id}/abort", tag = "upgrades", operation_id = "abort_rollout",
    params(("id" = String, Path)),
    responses((status = 200, body = Rollout, description = "aborting"),
        (status = 409, body = super::ErrorBody, description = "not running on this hub")),
    security(("bearer" = [])))]
pub(crate) async fn abort(
    State(s): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<Rollout>, ApiError> {
    Ok(Json(s.upgrades.abort(&id)?))
}
