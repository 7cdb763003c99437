//! `/api/v1/runner-groups`: the runner groups and their runners, stored in
//! the registry's store (the config file only seeds them on first start).

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, HttpState};
use crate::model::{Runner, RunnerGroup, RunnerGroups, parse_host_port};
use crate::registry::{ChangeError, Registry};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerBody {
    pub id: u32,
    pub name: String,
    /// The heartbeat address tagents connect to, `host:port` or `[v6]:port`.
    /// Leave out and set `this_hub` for "this hub, at the address it advertises".
    pub heartbeat: Option<String>,
    #[serde(default)]
    pub this_hub: bool,
}

/// A runner group as written: networks in order (the first match over all
/// groups wins) and runners.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    /// On create: the id to use (default: one above the highest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    pub name: String,
    /// CIDR networks, IPv4 or IPv6, e.g. `10.1.0.0/16`.
    #[serde(default)]
    pub networks: Vec<String>,
    #[serde(default)]
    pub runners: Vec<RunnerBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    pub id: u32,
    pub name: String,
    pub networks: Vec<String>,
    pub runners: Vec<RunnerBody>,
    /// Its position in the scan order (0 first).
    pub position: usize,
    /// Registered tagents in the group.
    pub tagents: usize,
}

/// One group with its tagent count; the count scans the index, so off the
/// async threads.
async fn view(
    registry: &Registry,
    groups: Arc<RunnerGroups>,
    id: u32,
) -> Result<GroupView, ApiError> {
    let registry = registry.clone();
    tokio::task::spawn_blocking(move || view_now(&registry, &groups, id))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ChangeError::NoGroup(id).into())
}

fn view_now(registry: &Registry, groups: &RunnerGroups, id: u32) -> Option<GroupView> {
    let (position, g) = groups.groups.iter().enumerate().find(|(_, g)| g.id == id)?;
    let mut tagents = 0;
    registry.for_each_chunked(|t| tagents += usize::from(t.runner_group == id));
    Some(GroupView {
        position,
        tagents,
        ..view_of(g)
    })
}

fn views(registry: &Registry, groups: &RunnerGroups) -> Vec<GroupView> {
    let mut counts = std::collections::HashMap::<u32, usize>::new();
    registry.for_each_chunked(|t| *counts.entry(t.runner_group).or_default() += 1);
    groups
        .groups
        .iter()
        .enumerate()
        .map(|(position, g)| GroupView {
            tagents: counts.get(&g.id).copied().unwrap_or(0),
            position,
            ..view_of(g)
        })
        .collect()
}

fn view_of(g: &RunnerGroup) -> GroupView {
    GroupView {
        id: g.id,
        name: g.name.clone(),
        networks: g.networks.iter().map(|n| n.to_string()).collect(),
        runners: g
            .runners
            .iter()
            .map(|r| RunnerBody {
                id: r.id,
                name: r.name.clone(),
                heartbeat: Some(r.heartbeat()),
                this_hub: r.this_hub,
            })
            .collect(),
        position: 0,
        tagents: 0,
    }
}

/// A network as written: CIDR with no host bits set.
fn parse_network(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let net: IpNet = match s.parse() {
        Ok(n) => n,
        Err(_) if s.parse::<IpAddr>().is_ok() => {
            return Err(format!(
                "'{s}' is an address, not a network: write it as {s}/{}",
                if s.contains(':') { 128 } else { 32 }
            ));
        }
        Err(_) => return Err(format!("'{s}' is not a CIDR network")),
    };
    if net.trunc() != net {
        return Err(format!(
            "'{s}' has host bits set: did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// The group a body describes, with `id`.
fn build(
    body: &GroupBody,
    id: u32,
    advertised: &(String, u16),
) -> Result<RunnerGroup, ChangeError> {
    let networks = body
        .networks
        .iter()
        .map(|n| parse_network(n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ChangeError::Invalid)?;
    let mut runners = Vec::with_capacity(body.runners.len());
    for r in &body.runners {
        let (host, port) = match (&r.heartbeat, r.this_hub) {
            (None, true) => advertised.clone(),
            (Some(hb), false) => parse_host_port(hb)
                .map_err(|e| ChangeError::Invalid(format!("runner {}: {e}", r.id)))?,
            _ => {
                return Err(ChangeError::Invalid(format!(
                    "runner {}: give either heartbeat or this_hub",
                    r.id
                )));
            }
        };
        runners.push(Runner {
            id: r.id,
            name: r.name.clone(),
            host,
            port,
            this_hub: r.this_hub,
        });
    }
    Ok(RunnerGroup {
        id,
        name: body.name.trim().to_owned(),
        networks,
        runners,
    })
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
}

/// Every runner group, in scan order.
#[utoipa::path(get, path = "/api/v1/runner-groups", tag = "runner-groups", operation_id = "list_runner_groups",
    responses((status = 200, body = Vec<GroupView>, description = "every runner group")),
    security(("bearer" = [])))]
pub(crate) async fn list(State(s): State<HttpState>) -> Result<Json<Vec<GroupView>>, ApiError> {
    let registry = s.registry.clone();
    tokio::task::spawn_blocking(move || Json(views(&registry, &registry.groups())))
        .await
        .map_err(ApiError::internal)
}

/// One runner group.
#[utoipa::path(get, path = "/api/v1/runner-groups/{id}", tag = "runner-groups", operation_id = "get_runner_group",
    params(("id" = u32, Path, description = "runner group id")),
    responses((status = 200, body = GroupView, description = "the runner group"),
        (status = 404, body = super::ErrorBody, description = "no runner group with this id")),
    security(("bearer" = [])))]
pub(crate) async fn get(
    State(s): State<HttpState>,
    Path(id): Path<u32>,
) -> Result<Json<GroupView>, ApiError> {
    view(&s.registry, s.registry.groups(), id).await.map(Json)
}

/// Create a runner group; it is scanned after the existing ones.
#[utoipa::path(post, path = "/api/v1/runner-groups", tag = "runner-groups", operation_id = "create_runner_group",
    request_body = GroupBody,
    responses((status = 201, body = GroupView, description = "created"),
        (status = 400, body = super::ErrorBody, description = "not a valid runner group")),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(s): State<HttpState>,
    body: Result<Json<GroupBody>, JsonRejection>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let body = json_body(body)?;
    let advertised = s.hub.advertised().clone();
    let groups = s
        .registry
        .edit_groups(move |current| {
            let id = match body.id {
                Some(id) if current.get(id).is_some() => {
                    return Err(ChangeError::Invalid(format!(
                        "runner group id {id} exists; change it with PUT"
                    )));
                }
                Some(id) => id,
                None => current.groups.iter().map(|g| g.id).max().unwrap_or(0) + 1,
            };
            let mut next = current.clone();
            next.groups.push(build(&body, id, &advertised)?);
            Ok(next)
        })
        .await?;
    // The edit appended the new group.
    let id = groups.groups.last().map_or(0, |g| g.id);
    let view = view(&s.registry, groups, id).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Replace a runner group's name, networks and runners; its place in the
/// scan order stays. A changed runner list reaches its live tagents with
/// their next heartbeat (`updategroup`).
#[utoipa::path(put, path = "/api/v1/runner-groups/{id}", tag = "runner-groups", operation_id = "update_runner_group",
    params(("id" = u32, Path, description = "runner group id")),
    request_body = GroupBody,
    responses((status = 200, body = GroupView, description = "updated"),
        (status = 400, body = super::ErrorBody, description = "not a valid runner group"),
        (status = 404, body = super::ErrorBody, description = "no runner group with this id")),
    security(("bearer" = [])))]
pub(crate) async fn update(
    State(s): State<HttpState>,
    Path(id): Path<u32>,
    body: Result<Json<GroupBody>, JsonRejection>,
) -> Result<Json<GroupView>, ApiError> {
    let body = json_body(body)?;
    if body.id.is_some_and(|b| b != id) {
        return Err(ChangeError::Invalid("a group's id cannot change".into()).into());
    }
    let advertised = s.hub.advertised().clone();
    let groups = s
        .registry
        .edit_groups(move |current| {
            let mut next = current.clone();
            let slot = next
                .groups
                .iter_mut()
                .find(|g| g.id == id)
                .ok_or(ChangeError::NoGroup(id))?;
            *slot = build(&body, id, &advertised)?;
            Ok(next)
        })
        .await?;
    let view = view(&s.registry, groups, id).await?;
    Ok(Json(view))
}

/// Delete a runner group. Refused while registered tagents belong to it.
#[utoipa::path(delete, path = "/api/v1/runner-groups/{id}", tag = "runner-groups", operation_id = "delete_runner_group",
    params(("id" = u32, Path, description = "runner group id")),
    responses((status = 204, description = "deleted"),
        (status = 404, body = super::ErrorBody, description = "no runner group with this id"),
        (status = 409, body = super::ErrorBody, description = "tagents belong to the group")),
    security(("bearer" = [])))]
pub(crate) async fn delete(
    State(s): State<HttpState>,
    Path(id): Path<u32>,
) -> Result<StatusCode, ApiError> {
    s.registry
        .edit_groups(move |current| {
            let mut next = current.clone();
            let before = next.groups.len();
            next.groups.retain(|g| g.id != id);
            if next.groups.len() == before {
                return Err(ChangeError::NoGroup(id));
            }
            Ok(next)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
