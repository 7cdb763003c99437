//! Batch actions on a filter or a selection: a command down the sessions,
//! or setting one config key over the tagents' listeners. The exact count
//! is checked again before anything is sent (a changed count asks again),
//! then a result per tagent, and a CSV of them.

use std::collections::VecDeque;
use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use parking_lot::Mutex;

use super::page::{Chrome, error, render};
use super::session::Session;
use super::state::Console;
use crate::dispatch::{Command, CommandResult};
use crate::http::ApiError;
use crate::http::commands::{BatchRequest, batch};
use crate::http::config_set::{ConfigSetRequest, set_config};
use crate::http::tagents::counts;
use crate::listener::ConfigChange;
use crate::model::{FilterParams, TagentId};

/// Batch results kept for their CSV, newest last.
const KEPT: usize = 64;

/// One tagent's result in a batch.
pub struct Outcome {
    id: TagentId,
    result: String,
    message: String,
}

impl From<CommandResult> for Outcome {
    fn from(r: CommandResult) -> Outcome {
        Outcome {
            id: r.id,
            result: r.result.as_str().to_owned(),
            message: r.message.unwrap_or_default(),
        }
    }
}

impl From<ConfigChange> for Outcome {
    fn from(r: ConfigChange) -> Outcome {
        Outcome {
            id: r.id,
            result: r.result,
            message: r.message.unwrap_or_default(),
        }
    }
}

/// What a batch did: the action (a command, or `set-config key=value`),
/// how many tagents it matched, the count per result, each result.
pub struct Done {
    action: String,
    matched: usize,
    summary: std::collections::BTreeMap<String, usize>,
    results: Vec<Outcome>,
}

/// One batch's results and the random key that names them.
type Kept = (String, Arc<Done>);

/// The last [`KEPT`] batches' results, by a random key.
#[derive(Clone, Default)]
pub struct Batches {
    kept: Arc<Mutex<VecDeque<Kept>>>,
}

impl Batches {
    fn keep(&self, reply: Arc<Done>) -> String {
        let key = hex::encode(rand::random::<[u8; 16]>());
        let mut kept = self.kept.lock();
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back((key.clone(), reply));
        key
    }

    fn get(&self, key: &str) -> Option<Arc<Done>> {
        self.kept
            .lock()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, r)| r.clone())
    }
}

/// What a batch does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Command(Command),
    /// Set one key of the tagents' config files (over their listeners).
    SetConfig {
        key: String,
        value: String,
    },
}

impl Action {
    /// As the form's `command` field names it.
    fn name(&self) -> &'static str {
        match self {
            Action::Command(c) => c.as_str(),
            Action::SetConfig { .. } => "set-config",
        }
    }
}

/// The batch form, read by hand: `id` repeats.
struct BatchForm {
    command: Option<Action>,
    /// `selected` (the `id`s) or `filter`.
    target: String,
    ids: Vec<TagentId>,
    filter: String,
    expect: Option<u64>,
}

impl BatchForm {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|e| bad(e.to_string()))?;
        let mut command = None;
        let (mut key, mut value) = (String::new(), String::new());
        let mut f = BatchForm {
            command: None,
            target: String::new(),
            ids: Vec::new(),
            filter: String::new(),
            expect: None,
        };
        for (k, v) in pairs {
            match k.as_str() {
                "command" => command = Some(v),
                "set_key" => key = v.trim().to_owned(),
                "set_value" => value = v,
                "target" => f.target = v,
                "id" => f.ids.push(
                    v.parse()
                        .map_err(|_| bad(format!("'{v}' is not a tagent id")))?,
                ),
                "filter" => f.filter = v,
                "expect" => f.expect = v.parse().ok(),
                _ => {}
            }
        }
        f.command = match command.as_deref() {
            None => None,
            Some("set-config") if key.is_empty() => {
                return Err(bad("set-config: name the key to set".into()));
            }
            Some("set-config") => Some(Action::SetConfig { key, value }),
            Some(v) => Some(Action::Command(
                Command::parse(v).ok_or_else(|| bad(format!("no command '{v}'")))?,
            )),
        };
        Ok(f)
    }
}

#[derive(Template)]
#[template(path = "console/batch.html")]
struct BatchPage {
    c: Chrome,
    command: &'static str,
    /// `set-config`'s key and value, carried into a confirmation.
    set_key: String,
    set_value: String,
    /// Set when the count changed and the operator must confirm again.
    recount: Option<(u64, u64)>,
    filter: String,
    reply: Option<Arc<Done>>,
    key: String,
}

pub async fn run(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Response {
    match run_batch(&c, &session, &body).await {
        Ok(r) => r,
        Err(e) => error(&session, &e),
    }
}

async fn run_batch(c: &Console, session: &Session, body: &[u8]) -> Result<Response, ApiError> {
    let form = BatchForm::parse(body)?;
    let command = form
        .command
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "choose a command".into()))?;
    let (set_key, set_value) = match &command {
        Action::SetConfig { key, value } => (key.clone(), value.clone()),
        Action::Command(_) => Default::default(),
    };
    let (ids, filter, all) = match form.target.as_str() {
        "selected" if form.ids.is_empty() => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "select at least one tagent".into(),
            ));
        }
        "selected" => (Some(form.ids), None, false),
        "filter" => {
            let filter: FilterParams = serde_urlencoded::from_str(&form.filter)
                .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid filter: {e}")))?;
            let Json(now) = counts(State(c.http.clone()), Ok(Query(filter.clone()))).await?;
            let now = now.all.total;
            if form.expect != Some(now) {
                let page = BatchPage {
                    c: Chrome::new("Confirm batch", session),
                    command: command.name(),
                    set_key,
                    set_value,
                    recount: Some((form.expect.unwrap_or(0), now)),
                    filter: form.filter,
                    reply: None,
                    key: String::new(),
                };
                return Ok(render(StatusCode::CONFLICT, &page));
            }
            // The operator saw and confirmed this count, an empty filter
            // (every tagent) included.
            let all = filter.is_empty();
            (None, (!all).then_some(filter), all)
        }
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("no batch target '{other}'"),
            ));
        }
    };
    let who = axum::Extension(session.actor.clone());
    let done = match command.clone() {
        Action::Command(command) => {
            let request = BatchRequest {
                command,
                ids,
                filter,
                all,
            };
            let Json(r) = batch(State(c.http.clone()), who, Ok(Json(request))).await?;
            Done {
                action: command.as_str().to_owned(),
                matched: r.matched,
                summary: r.summary,
                results: r.results.into_iter().map(Outcome::from).collect(),
            }
        }
        Action::SetConfig { key, value } => {
            let action = format!("set-config {key}={value}");
            let request = ConfigSetRequest {
                set: [(key, value)].into(),
                ids,
                filter,
                all,
            };
            let Json(r) = set_config(State(c.http.clone()), who, Ok(Json(request))).await?;
            Done {
                action,
                matched: r.matched,
                summary: r.summary,
                results: r.results.into_iter().map(Outcome::from).collect(),
            }
        }
    };
    let reply = Arc::new(done);
    let key = c.batches.keep(reply.clone());
    let page = BatchPage {
        c: Chrome::new("Batch results", session),
        command: command.name(),
        set_key,
        set_value,
        recount: None,
        filter: form.filter,
        reply: Some(reply),
        key,
    };
    Ok(render(StatusCode::OK, &page))
}

/// The results of a batch as CSV: id, action, result, message.
pub async fn csv(
    State(c): State<Console>,
    Extension(session): Extension<Session>,
    Path(key): Path<String>,
) -> Response {
    let Some(reply) = c.batches.get(key.trim_end_matches(".csv")) else {
        return error(
            &session,
            &ApiError(
                StatusCode::NOT_FOUND,
                "no such batch (only the last 64 are kept)".into(),
            ),
        );
    };
    match to_csv(&reply) {
        Ok(text) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"batch.csv\"",
                ),
            ],
            text,
        )
            .into_response(),
        Err(e) => error(
            &session,
            &ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        ),
    }
}

fn to_csv(done: &Done) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["id", "command", "result", "message"])?;
    for r in &done.results {
        w.write_record([
            r.id.to_string().as_str(),
            done.action.as_str(),
            r.result.as_str(),
            r.message.as_str(),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_names_ids_or_a_filter() {
        let f = BatchForm::parse(b"command=reload&target=selected&id=3&id=7&csrf=x").unwrap();
        assert_eq!(f.command, Some(Action::Command(Command::Reload)));
        assert_eq!(f.ids, vec![3, 7]);
        let f = BatchForm::parse(
            b"command=status-check&target=filter&filter=status%3Dconnected&expect=12",
        )
        .unwrap();
        assert_eq!(f.filter, "status=connected");
        assert_eq!(f.expect, Some(12));
        assert!(BatchForm::parse(b"command=explode").is_err());
        let f =
            BatchForm::parse(b"command=set-config&set_key=+log.level+&set_value=DEBUG").unwrap();
        assert_eq!(
            f.command,
            Some(Action::SetConfig {
                key: "log.level".into(),
                value: "DEBUG".into()
            })
        );
        assert!(BatchForm::parse(b"command=set-config&set_key=&set_value=x").is_err());
        assert!(BatchForm::parse(b"id=x").is_err());
    }
}
