//! The errors handlers answer: the admin API's `{"error": …}` and the
//! registration's `{"Status":"ERROR","Message":…}`.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every admin API error.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// An admin API error: a status and a message for the operator.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub(super) fn query(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.body_text())
    }

    pub(super) fn internal(e: impl std::fmt::Display) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        api_error(self.0, &self.1)
    }
}

/// `{"error": message}` with a status.
pub fn api_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

/// `{"Status":"ERROR","Message":…}` with an HTTP status.
pub fn error_reply(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"Status": "ERROR", "Message": message}).to_string(),
    )
        .into_response()
}
