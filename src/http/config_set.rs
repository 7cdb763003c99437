//! `POST /api/v1/config`: set keys in the config files of many tagents,
//! named by id or by filter as in `/api/v1/commands`; every other line of
//! each file kept as it was, a result per tagent.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Actor;
use super::commands::targets;
use super::{ApiError, HttpState};
use crate::listener::{ConfigChange, KeyChanges, OperationError};
use crate::model::{FilterParams, TagentId};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigSetRequest {
    /// The keys and their new values (one line each; not `credential`).
    pub set: BTreeMap<String, String>,
    /// These tagents; or use `filter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<TagentId>>,
    /// Every tagent matching; at least one field must be set (use `all`
    /// to mean every tagent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterParams>,
    /// With no `ids` and an empty filter: every tagent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConfigSetReply {
    pub matched: usize,
    /// Tagents per result (`changed`, `unchanged`, `failed`).
    pub summary: BTreeMap<String, usize>,
    pub results: Vec<ConfigChange>,
}

/// Set config keys on many tagents over their listeners: per tagent, read
/// the file, change only those keys' lines (a key it lacks is appended),
/// upload, reload. At most the hub's `[listener] max_operations` at once.
/// Needs an admin token.
#[utoipa::path(post, path = "/api/v1/config", tag = "operations",
    request_body = ConfigSetRequest,
    responses((status = 200, body = ConfigSetReply, description = "a result per tagent"),
        (status = 400, body = super::ErrorBody, description = "not a valid request (a key or value refused, no targets)"),
        (status = 413, body = super::ErrorBody, description = "the batch names too many tagents")),
    security(("bearer" = [])))]
pub(crate) async fn set_config(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    body: Result<Json<ConfigSetRequest>, JsonRejection>,
) -> Result<Json<ConfigSetReply>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let changes = KeyChanges::new(req.set).map_err(OperationError::from)?;
    let ids = targets(&s, req.ids.as_deref(), req.filter.as_ref(), req.all).await?;
    let matched = ids.len();
    let at_once = s.operations.limits().max_operations.max(1);
    let changes = &changes;
    let mut results: Vec<ConfigChange> = futures_util::stream::iter(ids)
        .map(|id| {
            let (s, who) = (&s, &who);
            async move { s.operations.set_config(who.as_str(), id, changes).await }
        })
        .buffer_unordered(at_once)
        .collect()
        .await;
    results.sort_unstable_by_key(|r| r.id);
    let mut summary = BTreeMap::<String, usize>::new();
    for r in &results {
        *summary.entry(r.result.clone()).or_default() += 1;
    }
    Ok(Json(ConfigSetReply {
        matched,
        summary,
        results,
    }))
}
