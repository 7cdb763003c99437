//! `POST /internal/v1/tagents/{id}/{command}`: the route another hub of the
//! runner group forwards a command to (see [`crate::dispatch::forward`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use crate::dispatch::{Command, PEER_HEADER, forward};
use crate::model::TagentId;

/// A command another hub of the group forwarded, run on this hub's
/// session. Only hubs that share the credential key get in.
pub(super) async fn run_forwarded(
    State(s): State<HttpState>,
    Path((id, command)): Path<(TagentId, String)>,
    headers: HeaderMap,
) -> Response {
    let peer = headers
        .get(PEER_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| forward::is_peer(&s.registry, t));
    if !peer {
        return super::api_error(StatusCode::UNAUTHORIZED, "not a hub of this runner group");
    }
    let Some(command) = Command::parse(&command) else {
        return super::api_error(StatusCode::NOT_FOUND, "no such command");
    };
    Json(s.dispatch().run_local(id, command).await).into_response()
}
