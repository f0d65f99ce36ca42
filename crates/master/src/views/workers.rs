//! `/workers` (connected or not, since when, running builds, what they
//! report about themselves) and `/workers/{id}`.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use cascade_store::ListQuery;

use super::{Chrome, Pages, not_found, render};
use crate::error::HttpError;

pub struct WorkerLine {
    pub id: i64,
    pub name: String,
    pub connected: bool,
    /// Connected since, or "offline".
    pub since: String,
    pub paused: bool,
    pub graceful: bool,
    pub running: Vec<(String, String)>,
    pub admin: String,
    pub host: String,
    pub version: String,
    pub info: Vec<(String, String)>,
    /// The masters it is connected to, by name.
    pub masters: Vec<String>,
}

/// One master sharing the store, as `/workers` shows it.
pub struct MasterLine {
    pub name: String,
    pub active: bool,
    /// Its last heartbeat, for people.
    pub heartbeat: String,
    /// How many workers are connected to it.
    pub workers: i64,
    /// This master (the one answering).
    pub this: bool,
}

#[derive(Template)]
#[template(path = "workers.html")]
pub struct WorkersPage {
    pub chrome: Chrome,
    pub workers: Vec<WorkerLine>,
    pub one: bool,
    /// Every master sharing the store (only on `/workers`).
    pub masters: Vec<MasterLine>,
}

async fn lines(
    m: &Pages,
    only: Option<i64>,
    masters: &[cascade_store::records::MasterRecord],
) -> Result<Vec<WorkerLine>, cascade_store::StoreError> {
    let mut q = ListQuery::default().limit(1000);
    if let Some(id) = only {
        q = q.eq("workerid", id);
    }
    let workers = m.store.list_workers(&q).await?.items;
    let running = m.store.running_builds().await?;
    let since = m.store.worker_connected_since().await?;
    let now = m.clock.now();
    let names: std::collections::HashMap<i64, String> =
        m.catalog.builders().map(|(b, id)| (id, b.name.clone())).collect();
    let master_names: std::collections::HashMap<i64, &str> =
        masters.iter().map(|x| (x.masterid, x.name.as_str())).collect();
    Ok(workers
        .into_iter()
        .map(|w| {
            let text = |k: &str| w.workerinfo.get(k).and_then(|v| v.as_str()).unwrap_or("").trim().to_string();
            let info = w
                .workerinfo
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter(|(k, _)| !matches!(k.as_str(), "admin" | "host" | "version" | "worker_commands"))
                        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            WorkerLine {
                id: w.workerid,
                connected: !w.connected_to.is_empty(),
                since: since
                    .get(&w.workerid)
                    .map(|t| format!("since {} ({})", super::when(*t), super::ago(now, *t)))
                    .unwrap_or_default(),
                paused: w.paused,
                graceful: w.graceful,
                running: running
                    .iter()
                    .filter(|b| b.workerid == Some(w.workerid))
                    .map(|b| {
                        let name = names.get(&b.builderid).cloned().unwrap_or_default();
                        (format!("{name} #{}", b.number), super::build_href(b.builderid, b.number))
                    })
                    .collect(),
                admin: text("admin"),
                host: text("host"),
                version: text("version"),
                info,
                masters: w
                    .connected_to
                    .iter()
                    .filter_map(|c| master_names.get(&c.masterid).map(|n| (*n).to_owned()))
                    .collect(),
                name: w.name,
            }
        })
        .collect())
}

/// `GET /workers`.
pub async fn list(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let all = m.store.list_masters().await?;
    let workers = lines(&m, None, &all).await?;
    let masters = masters(&m, all).await?;
    let chrome = Chrome::plain(&m, &headers, "workers").await.told(crate::notice::Said::of_query(q.as_deref()));
    render(&headers, &WorkersPage { chrome, workers, one: false, masters }, None)
}

/// Every master sharing the store: alive or not, its heartbeat, its workers.
async fn masters(
    m: &Pages,
    all: Vec<cascade_store::records::MasterRecord>,
) -> Result<Vec<MasterLine>, cascade_store::StoreError> {
    let connected = m.store.connections_by_master().await?;
    let now = m.clock.now();
    Ok(all
        .into_iter()
        .map(|x| MasterLine {
            workers: connected.get(&x.masterid).copied().unwrap_or(0),
            heartbeat: super::ago(now, x.last_active),
            this: x.masterid == m.catalog.master_id,
            active: x.active,
            name: x.name,
        })
        .collect())
}

/// `GET /workers/{id}`.
pub async fn one(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let id = raw.parse::<i64>().map_err(|_| not_found("worker"))?;
    let workers = lines(&m, Some(id), &m.store.list_masters().await?).await?;
    if workers.is_empty() {
        return Err(not_found("worker"));
    }
    let chrome = Chrome::plain(&m, &headers, "workers").await.told(crate::notice::Said::of_query(q.as_deref()));
    render(&headers, &WorkersPage { chrome, workers, one: true, masters: Vec::new() }, None)
}
