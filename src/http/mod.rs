//! The HTTP shim: tagent registration, Prometheus metrics, health.

mod register;
mod server;
mod tagents;

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

pub fn router(state: HttpState, max_body_bytes: usize) -> Router {
    Router::new()
        .route(REGISTER_PATH, post(register::register))
        .route("/register", post(register::register))
        .route("/api/v1/tagents/{id}", get(tagents::get))
        .route(
            "/api/v1/tagents/{id}/status-check",
            post(tagents::status_check),
        )
        .route("/api/v1/tagents/{id}/reload", post(tagents::reload))
        .route("/api/v1/tagents/{id}/resetcred", post(tagents::resetcred))
        .route("/api/v1/sessions/unregistered", get(tagents::unregistered))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
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
        .filter_map(crate::registry::request::parse_ip)
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
        .and_then(crate::registry::request::parse_ip)
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
