//! `POST /internal/v1/tagents/{id}/{command}`: the route another hub of the
//! runner group forwards a command to (see [`crate::dispatch::forward`]).
//! Routed only when the store is shared; each request must carry a fresh
//! signature ([`crate::dispatch::signature`]); refusals are counted in
//! `tagent_hub_peer_refused_total{reason}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use crate::dispatch::Command;
use crate::model::{TagentId, now_millis};

/// Who a forwarded command runs for (it never reaches a listener).
const PEER: &str = "peer";

/// A command another hub of the group forwarded, run on this hub's
/// session. Only hubs that share the credential key get in.
pub(super) async fn run_forwarded(
    State(s): State<HttpState>,
    Path((id, command)): Path<(TagentId, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let checked = s.peers.verify(
        s.registry.store().cipher(),
        &headers,
        "POST",
        uri.path(),
        b"",
        now_millis(),
    );
    if let Err(refused) = checked {
        metrics::counter!("tagent_hub_peer_refused_total", "reason" => refused.label())
            .increment(1);
        return super::api_error(
            StatusCode::UNAUTHORIZED,
            &format!("not a hub of this runner group: {refused}"),
        );
    }
    let Some(command) = Command::parse(&command) else {
        return super::api_error(StatusCode::NOT_FOUND, "no such command");
    };
    Json(s.dispatch(PEER).run_local(id, command).await).into_response()
}
