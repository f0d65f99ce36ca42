//! `/events`: server-sent events for live pages. Every client gets build
//! starts, step ends and build ends (`event: build`); `?log=ID` adds that
//! log's new lines (`event: lines`). A client that falls behind gets
//! `event: resync` and re-reads the page.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use crate::app::Master;
use crate::runner::log::LiveLines;

/// Something that happened to a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildEvent {
    /// `started`, `step`, `finished`.
    pub kind: &'static str,
    pub build_id: i64,
    pub builder_id: i64,
    pub number: i64,
    pub results: Option<i64>,
    pub step: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
pub struct Params {
    log: Option<i64>,
}

#[derive(Serialize)]
struct Lines<'a> {
    log_id: i64,
    first_line: i64,
    lines: &'a [String],
}

pub async fn stream(
    State(m): State<Arc<Master>>,
    Query(p): Query<Params>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let builds = m.events.subscribe();
    let logs = p.log.map(|_| m.live_logs.subscribe());
    let state = (builds, logs, p.log);
    let events = futures_util::stream::unfold(state, |(mut builds, mut logs, wanted)| async move {
        loop {
            let next = tokio::select! {
                b = builds.recv() => match b {
                    Ok(e) => Some(SseEvent::default().event("build").json_data(&e).ok()),
                    Err(RecvError::Lagged(_)) => Some(Some(SseEvent::default().event("resync").data("lagged"))),
                    Err(RecvError::Closed) => None,
                },
                l = async {
                    match logs.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending::<Result<LiveLines, RecvError>>().await,
                    }
                } => match l {
                    Ok(batch) if Some(batch.log_id) == wanted => {
                        let body = Lines { log_id: batch.log_id, first_line: batch.first_line, lines: &batch.lines };
                        Some(SseEvent::default().event("lines").json_data(&body).ok())
                    }
                    Ok(_) => Some(None),
                    Err(RecvError::Lagged(_)) => Some(Some(SseEvent::default().event("resync").data("lagged"))),
                    Err(RecvError::Closed) => None,
                },
            };
            match next {
                None => return None,
                Some(Some(event)) => return Some((Ok(event), (builds, logs, wanted))),
                Some(None) => continue,
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
