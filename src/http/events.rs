//! `GET /api/v1/events`: registrations, status changes and deletions as
//! Server-Sent Events, resumable with `Last-Event-ID`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::HttpState;
use crate::registry::Registry;
use crate::registry::events::{EventJson, Numbered};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Resume after this event id (the `Last-Event-ID` header wins).
    pub after: Option<String>,
}

struct Watch {
    registry: Registry,
    pending: VecDeque<SseEvent>,
    live: tokio::sync::broadcast::Receiver<Numbered>,
    last_seq: Option<u64>,
}

fn sse(registry: &Registry, n: &Numbered) -> SseEvent {
    SseEvent::default()
        .id(registry.events().event_id(n.seq))
        .event(n.event.change.kind().as_str())
        .json_data(n.event.json(registry.interner()))
        .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"))
}

/// The data of a `reset` event: why the watcher should reload its view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetJson {
    pub reason: String,
}

fn reset(why: &str) -> SseEvent {
    metrics::counter!("tagent_hub_event_stream_gaps_total").increment(1);
    let data = ResetJson { reason: why.into() };
    SseEvent::default()
        .event("reset")
        .json_data(data)
        .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"))
}

/// Stream status changes. Event names: `registered`, `connected`,
/// `disconnected`, `deleted`; and `reset` when events were missed (an id
/// from before a restart, or too old to replay): reload your view then.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(EventParams,
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event")),
    responses((status = 200, content_type = "text/event-stream", body = EventJson,
        description = "a stream of events; `data` is one Event as JSON")),
    security(("bearer" = [])))]
pub(crate) async fn stream(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Query(p): Query<EventParams>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(p.after);
    let registry = s.registry.clone();
    let backlog = registry.events().subscribe(after.as_deref());
    let mut pending = VecDeque::new();
    if backlog.gap {
        pending.push_back(reset("the given event id cannot be resumed"));
    }
    let mut last_seq = None;
    for n in &backlog.events {
        pending.push_back(sse(&registry, n));
        last_seq = Some(n.seq);
    }
    let watch = Watch {
        registry: registry.clone(),
        pending,
        live: backlog.live,
        last_seq,
    };
    let events = futures_util::stream::unfold(watch, |mut w| async move {
        loop {
            if let Some(e) = w.pending.pop_front() {
                return Some((Ok(e), w));
            }
            match w.live.recv().await {
                Ok(n) => {
                    // The backlog may already have sent it.
                    if w.last_seq.is_some_and(|s| n.seq <= s) {
                        continue;
                    }
                    w.last_seq = Some(n.seq);
                    let ev = sse(&w.registry, &n);
                    return Some((Ok(ev), w));
                }
                Err(RecvError::Lagged(_)) => {
                    // Fell behind the live channel: replay from the ring.
                    let (missed, gap) = match w.last_seq {
                        Some(seq) => w.registry.events().since(seq),
                        None => (Vec::new(), true),
                    };
                    if gap {
                        w.pending
                            .push_back(reset("the watcher fell too far behind"));
                    }
                    for n in &missed {
                        w.last_seq = Some(n.seq);
                        w.pending.push_back(sse(&w.registry, n));
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
