//! Commands for a tagent whose session another hub of the runner group
//! holds: forwarded to that hub's HTTP address (from its lease in the
//! shared store), signed as [`super::signature`] says. A forwarded command
//! is run where it lands, never forwarded again.

use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::command::Command;
use crate::model::TagentId;
use crate::registry::Registry;
use crate::store::StoreError;

/// Largest reply read from another hub.
const MAX_REPLY: usize = 64 * 1024;

/// Why a command could not be forwarded to the hub holding the session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    #[error("the store names no runner for its session")]
    NoRunner,
    #[error("runner {0} is in no runner group")]
    UnknownRunner(u32),
    #[error("{0}")]
    Store(#[source] StoreError),
    #[error("{0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("the hub at {0} holds no lease")]
    NoLease(String),
    #[error("{0}")]
    Connect(#[source] std::io::Error),
    #[error("{0}")]
    Http(#[source] hyper::Error),
    #[error("{0}")]
    Request(#[source] axum::http::Error),
    #[error("{0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("an unreadable reply: {0}")]
    Reply(#[source] serde_json::Error),
}

/// The hub holding a session: its heartbeat address (the runner's) and
/// where it answers HTTP.
pub(super) struct Holder {
    pub heartbeat: String,
    pub http: String,
}

/// A forwarded command's result as the holding hub replies it; the result
/// is read loosely (an unknown one counts as failed).
#[derive(Deserialize)]
pub(super) struct Reply {
    pub result: String,
    pub message: Option<String>,
}

/// Where the hub holding tagent `id`'s session answers HTTP, if it is alive.
pub(super) async fn holder(registry: &Registry, id: TagentId) -> Result<Holder, ForwardError> {
    let runner = registry
        .tagent(id)
        .and_then(|t| t.runner)
        .ok_or(ForwardError::NoRunner)?;
    let heartbeat = registry
        .groups()
        .groups
        .iter()
        .flat_map(|g| &g.runners)
        .find(|r| r.id == runner)
        .map(|r| r.heartbeat())
        .ok_or(ForwardError::UnknownRunner(runner))?;
    let store = registry.store().clone();
    let hubs = tokio::task::spawn_blocking(move || store.hubs())
        .await
        .map_err(ForwardError::Task)?
        .map_err(ForwardError::Store)?;
    hubs.into_iter()
        .find(|h| h.alive && h.hub.heartbeat == heartbeat)
        .map(|h| Holder {
            heartbeat: heartbeat.clone(),
            http: h.hub.http,
        })
        .ok_or(ForwardError::NoLease(heartbeat))
}

/// Post `command` to the hub answering HTTP at `http`.
pub(super) async fn post(
    registry: &Registry,
    http: &str,
    id: TagentId,
    command: Command,
) -> Result<Reply, ForwardError> {
    let stream = tokio::net::TcpStream::connect(http)
        .await
        .map_err(ForwardError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ForwardError::Http)?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let body = async {
        let path = format!("/internal/v1/tagents/{id}/{}", command.as_str());
        let signed = super::signature::sign(
            registry.store().cipher(),
            "POST",
            &path,
            b"",
            crate::model::now_millis(),
        );
        let mut req = Request::post(&path).header(header::HOST, http);
        for (name, value) in signed {
            req = req.header(name, value);
        }
        let req = req.body(Body::empty()).map_err(ForwardError::Request)?;
        let resp = sender.send_request(req).await.map_err(ForwardError::Http)?;
        Limited::new(resp.into_body(), MAX_REPLY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(ForwardError::Body)
    }
    .await;
    driver.abort();
    serde_json::from_slice(&body?).map_err(ForwardError::Reply)
}
