//! What every page shares: the navigation's facts (scope, CSRF token), the
//! rendering of a template into a response, how times and numbers are
//! shown, and the error page.

use std::time::{Duration, SystemTime};

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::session::Session;
use crate::http::ApiError;

/// The navigation bar's facts.
pub struct Chrome {
    pub title: String,
    pub admin: bool,
    pub csrf: String,
    /// Whether the page follows the event stream.
    pub live: bool,
}

impl Chrome {
    pub fn new(title: impl Into<String>, session: &Session) -> Self {
        Chrome {
            title: title.into(),
            admin: session.is_admin(),
            csrf: session.csrf.clone(),
            live: false,
        }
    }

    pub fn live(mut self) -> Self {
        self.live = true;
        self
    }
}

/// A template as a page.
pub fn render(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered\n",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    c: Chrome,
    status: u16,
    message: &'a str,
}

/// An error from the API's functions as a page.
pub fn error(session: &Session, e: &ApiError) -> Response {
    let page = ErrorPage {
        c: Chrome::new("Error", session),
        status: e.0.as_u16(),
        message: &e.1,
    };
    render(e.0, &page)
}

/// Unix milliseconds as `2026-12-03T12:43:40Z`; empty for 0.
pub fn when(ms: u64) -> String {
    if ms == 0 {
        return String::new();
    }
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A percentage as reported, or empty.
pub fn percent(v: Option<f32>) -> String {
    v.map(|v| format!("{v:.1}%")).unwrap_or_default()
}

/// A form's number field: blank is `None`, anything else must parse.
pub fn number<T: std::str::FromStr>(s: &str, what: &str) -> Result<Option<T>, String> {
    match s.trim() {
        "" => Ok(None),
        t => t
            .parse()
            .map(Some)
            .map_err(|_| format!("{what} must be a whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_percentages_read_plainly() {
        assert_eq!(when(0), "");
        assert_eq!(when(1_796_301_820_000), "2026-12-03T12:43:40Z");
        assert_eq!(percent(Some(12.345)), "12.3%");
        assert_eq!(percent(None), "");
    }
}
