//! `/api/v1/tagents/{id}/...` operations over the tagent's own listener
//! (SPEC §5): reachability, the config file, the log files. Every one
//! needs an admin token, even a `GET`: it logs in to the tagent.

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Actor;
use super::{ApiError, HttpState};
use crate::listener::{ConfigChange, ListenerError, LogStream, OperationError, Reachability};
use crate::model::TagentId;

impl From<OperationError> for ApiError {
    fn from(e: OperationError) -> Self {
        let status = match &e {
            OperationError::NoTagent(_) | OperationError::NoSuchLog { .. } => StatusCode::NOT_FOUND,
            OperationError::BadName(_) | OperationError::BadConfig(_) => StatusCode::BAD_REQUEST,
            OperationError::Busy(_)
            | OperationError::NoCredential(_)
            | OperationError::BadCredential { .. } => StatusCode::CONFLICT,
            OperationError::HubBusy(_)
            | OperationError::Store { .. }
            | OperationError::StorePanicked(_) => StatusCode::SERVICE_UNAVAILABLE,
            OperationError::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
            OperationError::Listener { source, .. } => match source {
                ListenerError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                ListenerError::NotFound(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_GATEWAY,
            },
        };
        ApiError(status, e.to_string())
    }
}

/// A tagent's config file.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConfigView {
    pub id: TagentId,
    /// Every line as in the file, comments and order kept; the
    /// `credential` value masked as `******`.
    pub lines: Vec<String>,
    /// Required keys (`credential`, `listen.port`, `proxy.registeraddress`,
    /// `tenant`) the file lacks.
    pub missing_keys: Vec<String>,
}

/// A tagent's log files.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogList {
    pub id: TagentId,
    /// Plain file names, as the tagent lists them.
    pub logs: Vec<String>,
}

/// Connect to the tagent's listener and log in (`echo`). The result is
/// also the tagent's last check in `GET /api/v1/tagents/{id}`. Needs an
/// admin token.
#[utoipa::path(post, path = "/api/v1/tagents/{id}/reachability", tag = "operations",
    params(("id" = u64, Path, description = "tagent id")),
    responses((status = 200, body = Reachability, description = "the check's result, reachable or not"),
        (status = 404, body = super::ErrorBody, description = "no tagent with this id"),
        (status = 409, body = super::ErrorBody, description = "another operation on this tagent is running"),
        (status = 503, body = super::ErrorBody, description = "the hub runs its most operations")),
    security(("bearer" = [])))]
pub(super) async fn reachability(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    Path(id): Path<TagentId>,
) -> Result<Json<Reachability>, ApiError> {
    Ok(Json(
        s.operations.check_reachability(who.as_str(), id).await?,
    ))
}

/// The tagent's config file (`$TAGENT_HOME/conf/tagent.conf`), read over
/// its listener, the credential masked. Needs an admin token.
#[utoipa::path(get, path = "/api/v1/tagents/{id}/config", tag = "operations", operation_id = "get_tagent_config",
    params(("id" = u64, Path, description = "tagent id")),
    responses((status = 200, body = ConfigView, description = "the file's lines"),
        (status = 404, body = super::ErrorBody, description = "no tagent with this id"),
        (status = 409, body = super::ErrorBody, description = "busy, or no usable credential"),
        (status = 502, body = super::ErrorBody, description = "the tagent failed or is not reachable"),
        (status = 504, body = super::ErrorBody, description = "the tagent did not answer in time")),
    security(("bearer" = [])))]
pub(super) async fn config(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    Path(id): Path<TagentId>,
) -> Result<Json<ConfigView>, ApiError> {
    let file = s.operations.read_config(who.as_str(), id).await?;
    Ok(Json(ConfigView {
        id,
        lines: file.lines,
        missing_keys: file.missing_keys.into_iter().map(str::to_owned).collect(),
    }))
}

/// A whole config file, as `PUT /api/v1/tagents/{id}/config` takes it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigPut {
    /// Every line of the new file. It must set `credential`,
    /// `listen.port`, `proxy.registeraddress` and `tenant`; a `credential`
    /// of `******` (as `GET` shows it) keeps the tagent's real one, and
    /// another value than the real one is refused.
    pub lines: Vec<String>,
}

/// Write the tagent's whole config file over its listener: uploaded to
/// `$TAGENT_HOME/conf/`, then a reload. The reply has each step's result
/// (`read`, `upload`, `reload`). Needs an
/// admin token.
#[utoipa::path(put, path = "/api/v1/tagents/{id}/config", tag = "operations", operation_id = "put_tagent_config",
    params(("id" = u64, Path, description = "tagent id")),
    request_body = ConfigPut,
    responses((status = 200, body = ConfigChange, description = "uploaded and reloaded"),
        (status = 400, body = super::ErrorBody, description = "not a valid file (a required key missing, a line with a newline, a changed credential: then a ConfigChange whose read step says so)"),
        (status = 404, body = super::ErrorBody, description = "no tagent with this id"),
        (status = 409, body = super::ErrorBody, description = "busy, or no usable credential"),
        (status = 502, body = ConfigChange, description = "a step failed: the steps say which and why")),
    security(("bearer" = [])))]
pub(super) async fn put_config(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    Path(id): Path<TagentId>,
    body: Result<Json<ConfigPut>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(put) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let change = s
        .operations
        .write_config(who.as_str(), id, put.lines)
        .await?;
    Ok((change_status(&change), Json(change)).into_response())
}

/// A config change's answer: 200 done, 400 the file was refused, 502 a
/// step on the tagent failed.
pub(crate) fn change_status(change: &ConfigChange) -> StatusCode {
    if change.ok() {
        StatusCode::OK
    } else if change.refused() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::BAD_GATEWAY
    }
}

/// The tagent's log files (`$TAGENT_HOME/logs/*.log*`). Needs an admin token.
#[utoipa::path(get, path = "/api/v1/tagents/{id}/logs", tag = "operations", operation_id = "list_tagent_logs",
    params(("id" = u64, Path, description = "tagent id")),
    responses((status = 200, body = LogList, description = "the log files"),
        (status = 404, body = super::ErrorBody, description = "no tagent with this id"),
        (status = 409, body = super::ErrorBody, description = "busy, or no usable credential"),
        (status = 502, body = super::ErrorBody, description = "the tagent failed or is not reachable"),
        (status = 504, body = super::ErrorBody, description = "the tagent did not answer in time")),
    security(("bearer" = [])))]
pub(super) async fn logs(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    Path(id): Path<TagentId>,
) -> Result<Json<LogList>, ApiError> {
    let logs = s.operations.list_logs(who.as_str(), id).await?;
    Ok(Json(LogList { id, logs }))
}

/// One log file, streamed as the tagent sends it; `name` must be a plain
/// file name the tagent lists. A failure after the first byte cuts the
/// body short. Needs an admin token.
#[utoipa::path(get, path = "/api/v1/tagents/{id}/logs/{name}", tag = "operations", operation_id = "get_tagent_log",
    params(("id" = u64, Path, description = "tagent id"),
        ("name" = String, Path, description = "a log file name from the list")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>, description = "the file"),
        (status = 400, body = super::ErrorBody, description = "not a plain file name"),
        (status = 404, body = super::ErrorBody, description = "no such tagent or log file"),
        (status = 409, body = super::ErrorBody, description = "busy, or no usable credential"),
        (status = 502, body = super::ErrorBody, description = "the tagent failed or is not reachable"),
        (status = 504, body = super::ErrorBody, description = "the tagent did not answer in time")),
    security(("bearer" = [])))]
pub(super) async fn log(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    Path((id, name)): Path<(TagentId, String)>,
) -> Result<Response, ApiError> {
    let stream = s.operations.download_log(who.as_str(), id, &name).await?;
    Ok(download(stream, &name))
}

/// A log file streamed as an attachment named `name` (the API's and the
/// console's download).
pub(crate) fn download(stream: LogStream, name: &str) -> Response {
    let mut response = Body::from_stream(stream.into_stream()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}
