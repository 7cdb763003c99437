//! The console's routes under `/ui`: sign-in and the assets open, every
//! other page behind the session guard.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};

use super::state::Console;
use super::{
    Sessions, assets, audit, batch, enrollment, events, groups, guard, overview, signin, tagent,
    tagents, upgrades,
};
use crate::http::HttpState;
use crate::http::auth::AdminTokens;

/// The console, to nest at `/ui` in the HTTP router; `tls`: served over
/// TLS only, so its cookie is `Secure`.
pub fn router(http: HttpState, tokens: AdminTokens, tls: bool) -> Router {
    let c = Console {
        http,
        sessions: Sessions::default(),
        tokens,
        batches: Default::default(),
        secure_cookie: tls,
    };
    let pages = Router::new()
        .route("/", get(overview::page))
        .route("/tagents", get(tagents::page))
        .route("/tagents/{id}", get(tagent::page))
        .route("/tagents/{id}/action/{action}", post(tagent::action))
        .route(
            "/tagents/{id}/config",
            get(tagent::config).post(tagent::save_config),
        )
        .route("/tagents/{id}/logs", get(tagent::logs))
        .route("/tagents/{id}/logs/{name}", get(tagent::log))
        .route("/groups", get(groups::list).post(groups::create))
        .route("/groups/{id}", get(groups::edit).post(groups::update))
        .route("/groups/{id}/delete", post(groups::delete))
        .route("/audit", get(audit::page))
        .route("/enrollment", get(enrollment::page))
        .route("/upgrades", get(upgrades::page).post(upgrades::start))
        .route("/upgrades/{id}", get(upgrades::rollout))
        .route("/upgrades/{id}/abort", post(upgrades::abort))
        .route("/packages/{sha}/delete", post(upgrades::delete_package))
        // The package itself bounds the upload (`[upgrade] max_package_bytes`).
        .route(
            "/packages",
            post(upgrades::upload_package).layer(DefaultBodyLimit::disable()),
        )
        .route("/pending/{id}/{verb}", post(enrollment::decide))
        .route("/tokens", post(enrollment::create_token))
        .route("/tokens/{id}/revoke", post(enrollment::revoke_token))
        .route("/batch", post(batch::run))
        .route("/batch/{key}", get(batch::csv))
        .route("/events", get(events::follow))
        .route("/signout", post(signin::signout))
        .route_layer(from_fn_with_state(c.clone(), guard::require));
    Router::new()
        .merge(pages)
        .route("/signin", get(signin::form).post(signin::submit))
        .route("/assets/{name}", get(assets::serve))
        .layer(from_fn(guard::headers))
        .with_state(c)
}
