//! `GET /api/v1/audit`: the audit log of operations over tagents'
//! listeners, newest first, a page at a time.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, HttpState};
use crate::model::AuditEntry;

/// Entries in a page unless asked otherwise, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries older than this seq: the `next` of the previous page.
    pub before: Option<u64>,
    /// Entries in the page (default 100, at most 1000).
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
    /// `before` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// The audit log: every operation over a tagent's listener (who, what,
/// which tagent, result, when), newest first. A `read` token suffices.
#[utoipa::path(get, path = "/api/v1/audit", tag = "operations",
    params(AuditQuery),
    responses((status = 200, body = AuditPage, description = "a page of the log"),
        (status = 503, body = super::ErrorBody, description = "the store cannot be read")),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(s): State<HttpState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let store = s.registry.store().clone();
    let entries = tokio::task::spawn_blocking(move || store.audit(q.before, limit))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten()
        .filter(|&seq| seq > 1);
    Ok(Json(AuditPage { entries, next }))
}
