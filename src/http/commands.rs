//! `POST /api/v1/commands`: one command for many tagents, named by id or by
//! filter, with a result per tagent.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Actor;
use super::{ApiError, HttpState};
use crate::dispatch::{Command, CommandResult};
use crate::model::{FilterParams, TagentId};
use crate::registry::query::Filter;

/// Most tagents one batch may name.
pub const MAX_TARGETS: usize = 100_000;
/// Commands waiting for a quiet moment in their sessions at once.
const CONCURRENCY: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub command: Command,
    /// These tagents; or use `filter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<TagentId>>,
    /// Every tagent matching; at least one field must be set (use `all`
    /// to mean every tagent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterParams>,
    /// With no `ids` and an empty filter: every tagent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchReply {
    pub command: Command,
    pub matched: usize,
    /// Tagents per result (`delivered`, `not-connected`, ...).
    pub summary: BTreeMap<String, usize>,
    pub results: Vec<CommandResult>,
}

/// Send a command to many tagents at once.
#[utoipa::path(post, path = "/api/v1/commands", tag = "commands",
    request_body = BatchRequest,
    responses((status = 200, body = BatchReply, description = "a result per tagent"),
        (status = 400, body = super::ErrorBody, description = "not a valid batch request"),
        (status = 413, body = super::ErrorBody, description = "the batch names too many tagents")),
    security(("bearer" = [])))]
pub(crate) async fn batch(
    State(s): State<HttpState>,
    Extension(who): Extension<Actor>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Json<BatchReply>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let ids = targets(&s, req.ids.as_deref(), req.filter.as_ref(), req.all).await?;
    let matched = ids.len();
    let command = req.command;
    let mut results: Vec<CommandResult> = futures_util::stream::iter(ids)
        .map(|id| {
            let (s, who) = (s.clone(), who.clone());
            async move { s.dispatch(who.as_str()).run(id, command).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.sort_unstable_by_key(|r| r.id);
    let mut counted = BTreeMap::<&str, usize>::new();
    for r in &results {
        *counted.entry(r.result.as_str()).or_default() += 1;
    }
    let summary = counted
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
    Ok(Json(BatchReply {
        command,
        matched,
        summary,
        results,
    }))
}

/// The tagents a batch names: its `ids` (deduplicated), or those matching
/// its `filter` (an empty one only with `all`); at most [`MAX_TARGETS`].
pub(super) async fn targets(
    s: &HttpState,
    ids: Option<&[TagentId]>,
    filter: Option<&FilterParams>,
    all: bool,
) -> Result<Vec<TagentId>, ApiError> {
    let bad = |m: &str| ApiError(StatusCode::BAD_REQUEST, m.into());
    let ids = match (ids, filter) {
        (Some(_), Some(_)) => return Err(bad("give ids or a filter, not both")),
        (Some(ids), None) => {
            if ids.len() > MAX_TARGETS {
                return Err(too_many(ids.len()));
            }
            let mut ids = ids.to_vec();
            ids.sort_unstable();
            ids.dedup();
            ids
        }
        (None, filter) => {
            let params = filter.cloned().unwrap_or_default();
            if params.is_empty() && !all {
                return Err(bad(
                    "an empty filter names every tagent: set \"all\": true if that is meant",
                ));
            }
            let filter = Filter::try_from(&params)?;
            let registry = s.registry.clone();
            let ids = tokio::task::spawn_blocking(move || {
                let mut ids = Vec::new();
                registry.for_each_matching(&filter, |t, _| ids.push(t.id));
                ids
            })
            .await
            .map_err(ApiError::internal)?;
            if ids.len() > MAX_TARGETS {
                return Err(too_many(ids.len()));
            }
            ids
        }
    };
    Ok(ids)
}

fn too_many(n: usize) -> ApiError {
    ApiError(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the batch names {n} tagents, more than {MAX_TARGETS}; narrow the filter"),
    )
}
