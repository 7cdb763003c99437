//! In front of every console page but sign-in and the assets: a live
//! session, and on every POST its CSRF token in the form's `csrf` field
//! and, but for sign-out, an admin scope. Also the headers every console
//! response carries (a strict Content-Security-Policy).

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use subtle::ConstantTimeEq;

use super::COOKIE;
use super::state::Console;

/// The largest form the console accepts.
pub const MAX_FORM_BYTES: usize = 256 * 1024;

/// The policy: everything from this origin, nothing inline, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'; object-src 'none'";

fn refuse(status: StatusCode, reason: &'static str, message: &'static str) -> Response {
    metrics::counter!("tagent_hub_console_refusals_total", "reason" => reason).increment(1);
    (status, message).into_response()
}

/// The session behind the request's cookie, or the sign-in page.
pub async fn require(State(c): State<Console>, req: Request, next: Next) -> Response {
    let jar = CookieJar::from_headers(req.headers());
    let Some(session) = jar.get(COOKIE).and_then(|k| c.sessions.get(k.value())) else {
        if req.method() == Method::GET {
            return Redirect::to("/ui/signin").into_response();
        }
        return refuse(StatusCode::UNAUTHORIZED, "no-session", "sign in first\n");
    };
    let mut req = req;
    if req.method() == Method::POST {
        let signout = req.uri().path().ends_with("/signout");
        if !signout && !session.is_admin() {
            return refuse(
                StatusCode::FORBIDDEN,
                "scope",
                "this sign-in is read-only: changes need an admin token\n",
            );
        }
        // A file upload (a package) streams on to its handler: its CSRF
        // token comes in the form's action URL, not from a body read here.
        let multipart = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
        if multipart {
            let sent = req
                .uri()
                .query()
                .and_then(|q| form_field(q.as_bytes(), "csrf"));
            let ok = sent.is_some_and(|t| bool::from(t.as_bytes().ct_eq(session.csrf.as_bytes())));
            if !ok {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "the form's CSRF token is missing or wrong: reload the page and try again\n",
                );
            }
            req.extensions_mut().insert(session);
            return next.run(req).await;
        }
        let (parts, body) = req.into_parts();
        let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "form",
                "the form is too large\n",
            );
        };
        let sent = form_field(&bytes, "csrf");
        let ok = sent.is_some_and(|t| bool::from(t.as_bytes().ct_eq(session.csrf.as_bytes())));
        if !ok {
            return refuse(
                StatusCode::FORBIDDEN,
                "csrf",
                "the form's CSRF token is missing or wrong: reload the page and try again\n",
            );
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(session);
    next.run(req).await
}

/// The first value of `name` in a urlencoded form.
fn form_field(form: &[u8], name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(form).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// The headers of every console response.
pub async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_field_is_read_from_a_form() {
        assert_eq!(
            form_field(b"a=1&csrf=abc&csrf=x", "csrf").as_deref(),
            Some("abc")
        );
        assert_eq!(form_field(b"a=1", "csrf"), None);
        assert_eq!(form_field(b"%zz=%", "csrf"), None);
    }
}
