//! Commands for a tagent whose session another hub of the runner group
//! holds: forwarded to that hub's HTTP address (from its lease in the
//! shared store), authenticated with the token the hubs derive from the
//! credential key they share. A forwarded command is run where it lands,
//! never forwarded again.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::HttpState;
use super::tagents::{Command, CommandResult, run_local};
use crate::model::{CommandOutcome, TagentId};

/// The header a hub proves itself to another hub with.
pub const PEER_HEADER: &str = "x-tagent-hub-peer";
/// Largest reply read from another hub.
const MAX_REPLY: usize = 64 * 1024;

#[derive(Deserialize)]
struct Reply {
    result: String,
    message: Option<String>,
}

/// Where the hub holding tagent `id`'s session answers HTTP, if it is alive.
async fn holder(s: &HttpState, id: TagentId) -> Result<(String, String), String> {
    let runner = s
        .registry
        .tagent(id)
        .and_then(|t| t.runner)
        .ok_or("the store names no runner for its session")?;
    let heartbeat = s
        .registry
        .groups()
        .groups
        .iter()
        .flat_map(|g| &g.runners)
        .find(|r| r.id == runner)
        .map(|r| r.heartbeat())
        .ok_or_else(|| format!("runner {runner} is in no runner group"))?;
    let store = s.registry.store().clone();
    let hubs = tokio::task::spawn_blocking(move || store.hubs())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    hubs.into_iter()
        .find(|h| h.alive && h.hub.heartbeat == heartbeat)
        .map(|h| (heartbeat.clone(), h.hub.http))
        .ok_or_else(|| format!("the hub at {heartbeat} holds no lease"))
}

/// Run `command` on the hub that holds tagent `id`'s session.
pub async fn command(s: &HttpState, id: TagentId, command: Command) -> CommandResult {
    let result = |result, message| CommandResult {
        id,
        command: command.as_str().to_owned(),
        result,
        message: Some(message),
    };
    let (hub, http) = match holder(s, id).await {
        Ok(h) => h,
        Err(e) => {
            return result(
                CommandOutcome::NotConnected,
                format!("connected on another hub: {e}"),
            );
        }
    };
    let within = s.hub.settings().command_timeout + Duration::from_secs(5);
    match tokio::time::timeout(within, post(s, &http, id, command)).await {
        Ok(Ok(reply)) => {
            let outcome = CommandOutcome::parse(&reply.result).unwrap_or(CommandOutcome::Failed);
            let message = reply.message.map_or_else(
                || format!("via the hub at {hub}"),
                |m| format!("via the hub at {hub}: {m}"),
            );
            result(outcome, message)
        }
        Ok(Err(e)) => result(
            CommandOutcome::Failed,
            format!("cannot reach the hub at {hub}: {e}"),
        ),
        Err(_) => result(
            CommandOutcome::Timeout,
            format!("the hub at {hub} did not answer within {within:?}"),
        ),
    }
}

async fn post(s: &HttpState, http: &str, id: TagentId, command: Command) -> Result<Reply, String> {
    let stream = tokio::net::TcpStream::connect(http)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::post(format!("/internal/v1/tagents/{id}/{}", command.as_str()))
        .header(header::HOST, http)
        .header(PEER_HEADER, s.registry.store().cipher().peer_token())
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string());
    let body = match resp {
        Ok(resp) => Limited::new(resp.into_body(), MAX_REPLY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    driver.abort();
    serde_json::from_slice(&body?).map_err(|e| format!("an unreadable reply: {e}"))
}

/// `POST /internal/v1/tagents/{id}/{command}`: a command another hub of
/// the group forwarded. Only hubs that share the credential key get in.
pub(super) async fn run_forwarded(
    State(s): State<HttpState>,
    Path((id, command)): Path<(TagentId, String)>,
    headers: HeaderMap,
) -> Response {
    let peer = headers
        .get(PEER_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| s.registry.store().cipher().is_peer(t));
    if !peer {
        return super::api_error(StatusCode::UNAUTHORIZED, "not a hub of this runner group");
    }
    let command = match command.as_str() {
        "reload" => Command::Reload,
        "resetcred" => Command::Resetcred,
        "status-check" => Command::StatusCheck,
        _ => return super::api_error(StatusCode::NOT_FOUND, "no such command"),
    };
    Json(run_local(&s, id, command).await).into_response()
}
