//! Sign-in with an admin or read token, and sign-out. The session lives
//! in an HttpOnly, SameSite=Strict cookie holding only a random id; it
//! ends with the browser or after `session::LIFETIME`, whichever comes first.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use serde::Deserialize;

use super::COOKIE;
use super::page::render;
use super::state::Console;

#[derive(Template)]
#[template(path = "console/signin.html")]
struct SigninPage<'a> {
    error: Option<&'a str>,
}

pub async fn form() -> Response {
    render(StatusCode::OK, &SigninPage { error: None })
}

#[derive(Deserialize)]
pub struct SigninForm {
    token: String,
}

pub async fn submit(
    State(c): State<Console>,
    jar: CookieJar,
    Form(f): Form<SigninForm>,
) -> Response {
    let Some(scope) = c.tokens.scope_of(f.token.trim()) else {
        metrics::counter!("tagent_hub_console_signins_total", "result" => "invalid").increment(1);
        let page = SigninPage {
            error: Some("unknown token"),
        };
        return render(StatusCode::UNAUTHORIZED, &page);
    };
    let actor = crate::http::auth::Actor::of_token(f.token.trim());
    let Some(id) = c.sessions.create(scope, actor) else {
        let page = SigninPage {
            error: Some("too many sign-ins at once; try again later"),
        };
        return render(StatusCode::SERVICE_UNAVAILABLE, &page);
    };
    let cookie = Cookie::build((COOKIE, id))
        .path("/ui")
        .http_only(true)
        .secure(c.secure_cookie)
        .same_site(SameSite::Strict);
    (jar.add(cookie), Redirect::to("/ui/")).into_response()
}

pub async fn signout(State(c): State<Console>, jar: CookieJar) -> Response {
    if let Some(k) = jar.get(COOKIE) {
        c.sessions.remove(k.value());
    }
    let gone = Cookie::build((COOKIE, "")).path("/ui");
    (jar.remove(gone), Redirect::to("/ui/signin")).into_response()
}
