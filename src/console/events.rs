//! `GET /ui/events`: the admin API's event stream for a signed-in browser
//! (an EventSource cannot send a bearer token; the session cookie is its
//! credential here).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;

use super::state::Console;
use crate::http::events::{EventParams, stream};

pub async fn follow(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(p): Query<EventParams>,
) -> impl IntoResponse {
    stream(State(c.http), headers, Query(p)).await
}
