//! `/api/v1/tagents/{id}`: one tagent with its live status, and the commands
//! that go down its session (SPEC §3.2). The full admin API builds on these.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::HttpState;
use crate::heartbeat::{CommandError, CommandKind, Hub};
use crate::registry::{Status, TagentId};
use crate::store::StoredTagent;

fn not_found(id: TagentId) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no tagent with id {id}")})),
    )
        .into_response()
}

/// The status an operator sees: `connected` only with a live session here,
/// or, in a runner group, one the store shows on another hub's runner (its
/// session facts are that hub's to show).
fn status_json(hub: &Hub, t: &StoredTagent) -> (Value, Value, Value) {
    let stored = t.status;
    match hub.session_of(t.id) {
        Some(s) => (json!("connected"), Value::Null, json!(hub.view(&s))),
        None if stored == Status::Connected && !hub.registry().mine().holds(t.runner) => {
            (json!("connected"), Value::Null, Value::Null)
        }
        None => {
            let reason = stored.reason().map(|r| r.as_str());
            (json!("disconnected"), json!(reason), Value::Null)
        }
    }
}

pub(super) async fn get(State(s): State<HttpState>, Path(id): Path<TagentId>) -> Response {
    let Some(t) = s.registry.get(id) else {
        return not_found(id);
    };
    let (status, reason, session) = status_json(&s.hub, &t);
    Json(json!({
        "id": t.id,
        "status": status,
        "disconnect_reason": reason,
        "session": session,
        "tenant": t.tenant,
        "ip": t.ip,
        "ips": t.ips,
        "port": t.port,
        "name": t.name,
        "user": t.user,
        "version": t.version,
        "os_type": t.os_type,
        "os_version": t.os_version,
        "osbit": t.osbit,
        "pcpu": t.pcpu,
        "mem": t.mem,
        "runner_group": t.runner_group,
        "runner": t.runner,
        "first_registered_ms": t.first_registered,
        "last_registered_ms": t.last_registered,
        "last_status_change_ms": t.last_status_change,
    }))
    .into_response()
}

pub(super) async fn status_check(State(s): State<HttpState>, Path(id): Path<TagentId>) -> Response {
    let Some(t) = s.registry.get(id) else {
        return not_found(id);
    };
    let (status, reason, session) = status_json(&s.hub, &t);
    Json(json!({"id": id, "status": status, "disconnect_reason": reason, "session": session}))
        .into_response()
}

pub(super) async fn reload(state: State<HttpState>, id: Path<TagentId>) -> Response {
    command(state, id, CommandKind::Reload).await
}

pub(super) async fn resetcred(state: State<HttpState>, id: Path<TagentId>) -> Response {
    command(state, id, CommandKind::Resetcred).await
}

async fn command(
    State(s): State<HttpState>,
    Path(id): Path<TagentId>,
    kind: CommandKind,
) -> Response {
    if s.registry.get(id).is_none() {
        return not_found(id);
    }
    let (code, result, message) = match s.hub.command(id, kind).await {
        Ok(()) => (StatusCode::OK, "delivered", None),
        Err(e) => {
            let (code, result) = match &e {
                CommandError::NotConnected(_) => (StatusCode::CONFLICT, "not-connected"),
                CommandError::SessionClosed => (StatusCode::CONFLICT, "session-closed"),
                CommandError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                CommandError::Failed(_) => (StatusCode::BAD_GATEWAY, "failed"),
            };
            (code, result, Some(e.to_string()))
        }
    };
    (
        code,
        Json(json!({"id": id, "command": kind.as_str(), "result": result, "message": message})),
    )
        .into_response()
}

/// Sessions whose heartbeats match no registered tagent (SPEC §3.1): each
/// has been answered OK and sent a reload, so it should register soon.
pub(super) async fn unregistered(State(s): State<HttpState>) -> Response {
    let sessions = s.hub.unregistered();
    Json(json!({"count": sessions.len(), "sessions": sessions})).into_response()
}
