//! `/events`: server-sent events for live pages, from the event bus. Every
//! client gets what happens to builds (`event: build`: started, step
//! started and finished, finished), to requests (`event: request`) and to
//! workers (`event: worker`), from every master sharing the store;
//! `?log=ID` adds that log's new lines (`event: lines`). A client that
//! falls behind gets `event: resync` and re-reads the page. The stream ends
//! when the master stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use cascade_model::{Envelope, Event};
use futures_util::Stream;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use super::Pages;

/// `?log=ID`: also tail that log.
#[derive(Debug, serde::Deserialize)]
pub struct Params {
    log: Option<i64>,
}

/// The SSE name of a durable event, by what it concerns.
fn sse_name(event: &Event) -> Option<&'static str> {
    match event {
        Event::BuildStarted { .. }
        | Event::StepStarted { .. }
        | Event::StepFinished { .. }
        | Event::BuildFinished { .. } => Some("build"),
        Event::BuildRequested { .. } | Event::BuildRequestsCancelled { .. } => Some("request"),
        Event::WorkerConnected { .. } | Event::WorkerLost { .. } => Some("worker"),
        Event::MasterStarted { .. } | Event::MasterStopped { .. } | Event::LogLines { .. } => None,
    }
}

/// What one client's stream holds between events.
struct Client {
    events: Receiver<Arc<Envelope>>,
    lines: Option<Receiver<Arc<Envelope>>>,
    wanted: Option<i64>,
    closed: watch::Receiver<bool>,
}

/// The next thing to send: `Some(None)` means nothing for this client.
type Next = Option<Option<SseEvent>>;

fn resync() -> Next {
    Some(Some(SseEvent::default().event("resync").data("lagged")))
}

impl Client {
    async fn next_line(lines: &mut Option<Receiver<Arc<Envelope>>>) -> Result<Arc<Envelope>, RecvError> {
        match lines.as_mut() {
            Some(r) => r.recv().await,
            None => std::future::pending().await,
        }
    }

    fn build_event(received: Result<Arc<Envelope>, RecvError>) -> Next {
        match received {
            Ok(e) => Some(sse_name(&e.event).and_then(|name| SseEvent::default().event(name).json_data(&e.event).ok())),
            Err(RecvError::Lagged(_)) => resync(),
            Err(RecvError::Closed) => None,
        }
    }

    fn line_event(&self, received: Result<Arc<Envelope>, RecvError>) -> Next {
        match received {
            Ok(e) => match &e.event {
                Event::LogLines { log_id, .. } if Some(*log_id) == self.wanted => {
                    Some(SseEvent::default().event("lines").json_data(&e.event).ok())
                }
                _ => Some(None),
            },
            Err(RecvError::Lagged(_)) => resync(),
            Err(RecvError::Closed) => None,
        }
    }

    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Client)> {
        loop {
            if *self.closed.borrow() {
                return None;
            }
            let next = tokio::select! {
                e = self.events.recv() => Client::build_event(e),
                l = Client::next_line(&mut self.lines) => self.line_event(l),
                _ = self.closed.changed() => None,
            };
            match next {
                None => return None,
                Some(Some(event)) => return Some((Ok(event), self)),
                Some(None) => {}
            }
        }
    }
}

/// `GET /events`.
pub async fn stream(
    State(p): State<Arc<Pages>>,
    Query(params): Query<Params>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let client = Client {
        events: p.bus.subscribe(),
        lines: params.log.map(|_| p.bus.subscribe_lines()),
        wanted: params.log,
        closed: p.bus.closed(),
    };
    let events = futures_util::stream::unfold(client, Client::next);
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use cascade_model::Results;

    use super::*;

    #[test]
    fn each_durable_event_goes_by_what_it_concerns() {
        let finished = Event::BuildFinished { build_id: 1, builder_id: 2, number: 3, results: Results::Success };
        assert_eq!(sse_name(&finished), Some("build"));
        let requested = Event::BuildRequested { buildset_id: 1, builder_ids: vec![2], request_ids: vec![3] };
        assert_eq!(sse_name(&requested), Some("request"));
        let lost = Event::WorkerLost { worker_id: 1, worker: "w".into(), master_id: 1 };
        assert_eq!(sse_name(&lost), Some("worker"));
        assert_eq!(sse_name(&Event::MasterStopped { master_id: 1 }), None);
    }
}
