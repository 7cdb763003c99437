//! The HTTP shim: tagent registration (open, as real tagents expect), the
//! admin API under `/api/v1` (bearer tokens, OpenAPI at
//! `/api/v1/openapi.json`), Prometheus metrics and health (open).

pub mod auth;
mod commands;
mod events;
mod forward;
mod groups;
mod register;
mod server;
pub mod tagents;

pub use server::{Limits, serve};

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ipnet::IpNet;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::heartbeat::Hub;
use crate::registry::Registry;

/// The path a real tagent is configured with (`proxy.registeraddress`).
pub const REGISTER_PATH: &str = "/autoexecrunner/public/api/rest/tagent/register";

#[derive(Clone)]
pub struct HttpState {
    pub registry: Registry,
    pub hub: Hub,
    pub metrics: PrometheusHandle,
    pub trusted_proxies: Arc<[IpNet]>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tagent-hub admin API",
        description = "Tagents, runner groups, commands and a stream of status changes. \
            Every route needs `Authorization: Bearer <token>`: a `read` token for GET, \
            an `admin` token for everything else."
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The admin routes and the OpenAPI document generated from them.
fn admin_api() -> (Router<HttpState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tagents::list))
        .routes(routes!(tagents::counts))
        .routes(routes!(tagents::get, tagents::delete))
        .routes(routes!(tagents::status_check))
        .routes(routes!(tagents::reload))
        .routes(routes!(tagents::resetcred))
        .routes(routes!(tagents::unregistered))
        .routes(routes!(groups::list, groups::create))
        .routes(routes!(groups::get, groups::update, groups::delete))
        .routes(routes!(commands::batch))
        .routes(routes!(events::stream))
        .split_for_parts()
}

/// The OpenAPI document of the admin API, as served.
pub fn openapi_json() -> String {
    admin_api().1.to_pretty_json().unwrap_or_default()
}

pub fn router(state: HttpState, max_body_bytes: usize, tokens: auth::AdminTokens) -> Router {
    let (admin, _) = admin_api();
    let doc: Arc<str> = openapi_json().into();
    let admin = admin.layer(axum::middleware::from_fn_with_state(tokens, auth::require));
    Router::new()
        .route(REGISTER_PATH, post(register::register))
        .route("/register", post(register::register))
        .route(
            "/api/v1/openapi.json",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    doc.to_string(),
                )
            }),
        )
        .merge(admin)
        .route(
            "/internal/v1/tagents/{id}/{command}",
            post(forward::run_forwarded),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// The body of every admin API error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// An admin API error: a status and a message for the operator.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    fn query(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.body_text())
    }

    fn internal(e: impl std::fmt::Display) -> Self {
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

async fn metrics(axum::extract::State(s): axum::extract::State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// The client's address: the TCP peer, or — only when the peer is a trusted
/// proxy — the nearest untrusted hop of `X-Forwarded-For`, else `X-Real-IP`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(crate::model::parse_ip)
        .collect();
    if let Some(ip) = hops.iter().rev().find(|ip| !is_trusted(ip)) {
        return *ip;
    }
    if let Some(first) = hops.first() {
        return *first;
    }
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::model::parse_ip)
        .unwrap_or(peer)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let h = headers(&[("x-forwarded-for", "10.9.9.9")]);
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &[]), peer);
    }

    #[test]
    fn forwarded_for_from_a_trusted_proxy_gives_the_nearest_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["192.0.2.0/24".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 10.0.0.25, 192.0.2.7")]);
        let ip = client_ip("192.0.2.1".parse().unwrap(), &h, &trusted);
        assert_eq!(ip, "10.0.0.25".parse::<IpAddr>().unwrap());
        let h = headers(&[("x-real-ip", "10.0.0.26")]);
        let ip = client_ip("192.0.2.1".parse().unwrap(), &h, &trusted);
        assert_eq!(ip, "10.0.0.26".parse::<IpAddr>().unwrap());
    }
}
