//! The routes: registration and health (open), the admin API with its
//! OpenAPI document (bearer tokens), metrics, and the route other hubs of a
//! runner group forward commands to.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    ErrorBody, HttpState, audit, auth, commands, config_set, enrollment, events, groups,
    operations, peer, register, tagents, upgrades,
};

/// The path a real tagent is configured with (`proxy.registeraddress`).
pub const REGISTER_PATH: &str = "/autoexecrunner/public/api/rest/tagent/register";

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

/// The admin routes, those that need an admin token for every method (the
/// operations over tagents' listeners), and the OpenAPI document of both.
fn admin_api() -> (
    Router<HttpState>,
    Router<HttpState>,
    utoipa::openapi::OpenApi,
) {
    let (operations, operations_doc) = OpenApiRouter::new()
        .routes(routes!(operations::reachability))
        .routes(routes!(operations::config, operations::put_config))
        .routes(routes!(config_set::set_config))
        .routes(routes!(operations::logs))
        .routes(routes!(operations::log))
        .routes(routes!(enrollment::list_tokens, enrollment::create_token))
        .routes(routes!(enrollment::revoke_token))
        .split_for_parts();
    let (admin, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tagents::list))
        .routes(routes!(tagents::counts))
        .routes(routes!(tagents::get, tagents::delete))
        .routes(routes!(tagents::status_check))
        .routes(routes!(tagents::reload))
        .routes(routes!(tagents::resetcred))
        .routes(routes!(tagents::allow_reinstall))
        .routes(routes!(tagents::unregistered))
        .routes(routes!(groups::list, groups::create))
        .routes(routes!(groups::get, groups::update, groups::delete))
        .routes(routes!(commands::batch))
        .routes(routes!(events::stream))
        .routes(routes!(audit::list))
        .routes(routes!(enrollment::list_pending))
        .routes(routes!(enrollment::approve))
        .routes(routes!(enrollment::reject))
        .routes(routes!(upgrades::list_packages, upgrades::upload_package))
        .routes(routes!(upgrades::delete_package))
        .routes(routes!(upgrades::list, upgrades::start))
        .routes(routes!(upgrades::get))
        .routes(routes!(upgrades::abort))
        .routes(routes!(upgrades::events))
        .split_for_parts();
    doc.merge(operations_doc);
    (admin, operations, doc)
}

/// The OpenAPI document of the admin API, as served.
pub fn openapi_json() -> String {
    admin_api().2.to_pretty_json().unwrap_or_default()
}

/// The HTTP side's routes. `tls`: the port serves TLS, so the console's
/// cookie is marked `Secure`.
pub fn router(
    state: HttpState,
    max_body_bytes: usize,
    tokens: auth::AdminTokens,
    tls: bool,
) -> Router {
    let (admin, operations, _) = admin_api();
    let console = crate::console::router(state.clone(), tokens.clone(), tls);
    let doc: Arc<str> = openapi_json().into();
    let admin = admin
        .layer(axum::middleware::from_fn_with_state(
            tokens.clone(),
            auth::require,
        ))
        .merge(operations.layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::require_admin,
        )));
    // Other hubs forward commands here; a hub alone has no peers to hear.
    let peers = if state.registry.store().shared() {
        Router::new().route(
            "/internal/v1/tagents/{id}/{command}",
            post(peer::run_forwarded),
        )
    } else {
        Router::new()
    };
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
        .merge(peers)
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .nest_service("/ui", console)
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
