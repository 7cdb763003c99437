//! `POST /register` and its long alias: SPEC §2.1–2.2.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::rate::Limited;
use super::{HttpState, client_ip, error_reply};
use crate::registry::{Origin, RegisterError, RegisterRequest, Registered};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    tagent_id: u64,
    proxy_group_id: u32,
    proxy_list: Vec<Proxy>,
}

#[derive(Serialize)]
struct Proxy {
    id: u32,
    ip: String,
    /// A string, as the original sends it.
    port: String,
}

#[derive(Serialize)]
struct Reply {
    #[serde(rename = "Status")]
    status: &'static str,
    #[serde(rename = "Data")]
    data: Data,
}

fn ok_reply(r: &Registered) -> Response {
    let reply = Reply {
        status: "OK",
        data: Data {
            tagent_id: r.id,
            proxy_group_id: r.group.id,
            proxy_list: r
                .group
                .runners
                .iter()
                .map(|x| Proxy {
                    id: x.id,
                    ip: x.host.clone(),
                    port: x.port.to_string(),
                })
                .collect(),
        },
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&reply).expect("a reply always serializes"),
    )
        .into_response()
}

fn status_of(e: &RegisterError) -> StatusCode {
    match e {
        RegisterError::Invalid(_) => StatusCode::BAD_REQUEST,
        RegisterError::Store(_) | RegisterError::ShuttingDown | RegisterError::PendingFull(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        RegisterError::CredentialChange { .. }
        | RegisterError::TokenRequired { .. }
        | RegisterError::Pending { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::CONFLICT,
    }
}

fn rejected(reason: &'static str, status: StatusCode, message: &str) -> Response {
    metrics::counter!("tagent_hub_registrations_total", "outcome" => reason).increment(1);
    error_reply(status, message)
}

pub(super) async fn register(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let client = client_ip(peer.ip(), &headers, &s.trusted_proxies);
    if let Err(limited) = s.register_rate.check(client) {
        metrics::counter!("tagent_hub_registrations_total", "outcome" => limited.outcome())
            .increment(1);
        let message = match limited {
            Limited::Source => format!("too many registrations from {client}; retry later"),
            Limited::Overall => "too many registrations; retry later".to_owned(),
        };
        let mut reply = error_reply(StatusCode::TOO_MANY_REQUESTS, &message);
        reply
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return reply;
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return rejected(
                "too_large",
                e.status(),
                "the registration body is too large",
            );
        }
        Err(e) => {
            return rejected(
                "bad_body",
                e.status(),
                &format!("cannot read the body: {e}"),
            );
        }
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return rejected(
            "bad_content_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON sent with Content-Type: application/json",
        );
    }
    let query: HashMap<String, String> = query
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let origin = Origin {
        tenant_header: headers.get("tenant").and_then(|v| v.to_str().ok()),
        tenant_query: query.get("tenant").map(String::as_str),
        client_ip: client,
        token: query.get("token").map(String::as_str),
    };
    let result = match RegisterRequest::parse(&body, origin) {
        Ok(req) => s.registry.register(req).await,
        Err(e) => Err(e),
    };
    let outcome = match &result {
        Ok(r) if r.created => "created",
        Ok(_) => "updated",
        Err(e) => e.kind(),
    };
    metrics::counter!("tagent_hub_registrations_total", "outcome" => outcome).increment(1);
    metrics::histogram!("tagent_hub_registration_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(r) => {
            tracing::debug!(id = r.id, created = r.created, "registered");
            ok_reply(&r)
        }
        Err(e) => {
            // Counted every time; logged at INFO only a few times a second,
            // so a flood of refusals cannot flood the log.
            if s.register_rate.may_log_refusal() {
                tracing::info!(client = %origin.client_ip, error = %e, "registration refused");
            } else {
                tracing::debug!(client = %origin.client_ip, error = %e, "registration refused");
            }
            error_reply(status_of(&e), &e.to_string())
        }
    }
}
