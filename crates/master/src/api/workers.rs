//! Workers in Buildbot's shape, and the builder ↔ worker routes.
//!
//! Buildbot's UI reads `workerinfo.admin`, `host`, `access_uri` and
//! `version`; those four are always there (`null` when the worker never
//! said). What else a worker tells Cascade (CPUs, system, commands, its
//! `os_*` facts) is under `cascade_info`, and its base folder, a path on a
//! volunteer's machine, is never in an answer.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use cascade_store::ListQuery;
use cascade_store::records::WorkerRecord;
use serde_json::{Map, Value, json};

use super::{ApiResult, ListResult, Reads, builder_id, id, listing, named, query, values};
use crate::error::HttpError;

/// Keys of `workerinfo` as Buildbot fills it from the worker's info files.
const BUILDBOT_KEYS: [&str; 4] = ["admin", "host", "access_uri", "version"];

/// What never leaves the master: where the worker keeps its builds.
const PRIVATE_KEYS: [&str; 2] = ["basedir", "environ"];

/// A worker's JSON as the API answers it.
pub(super) fn shaped(mut worker: Value) -> Value {
    let Some(obj) = worker.as_object_mut() else { return worker };
    let said = match obj.remove("workerinfo") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut info = Map::new();
    for key in BUILDBOT_KEYS {
        info.insert(key.into(), said.get(key).cloned().unwrap_or(Value::Null));
    }
    let extra: Map<String, Value> = said
        .into_iter()
        .filter(|(k, _)| !BUILDBOT_KEYS.contains(&k.as_str()) && !PRIVATE_KEYS.contains(&k.as_str()))
        .collect();
    let mut extra = extra;
    // When its last connection ended (if one did): Cascade's, so under its own key.
    if let Some(t) = obj.remove("disconnected_at").filter(|t| !t.is_null()) {
        extra.insert("disconnected_at".into(), t);
    }
    obj.insert("workerinfo".into(), Value::Object(info));
    obj.insert("cascade_info".into(), Value::Object(extra));
    worker
}

fn shaped_page(page: cascade_store::Page<WorkerRecord>) -> cascade_store::Page<Value> {
    let page = values(page);
    cascade_store::Page { items: page.items.into_iter().map(shaped).collect(), total: page.total }
}

const WORKERS: listing::Named = named("workers", "workerid");

pub(super) async fn answer(m: &Reads, query: ListQuery, fields: Vec<String>) -> ListResult {
    let store = m.store.clone();
    let fetch = move |q: ListQuery| {
        let store = store.clone();
        async move { Ok(shaped_page(store.list_workers(&q).await?)) }
    };
    listing::answer(WORKERS, query, fields, fetch).await
}

pub(super) async fn list(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ListResult {
    let p = query::parse(q.as_deref())?;
    answer(&m, p.query, p.fields).await
}

/// `/workers/{id_or_name}`.
pub(super) async fn one(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let q = match raw.parse::<i64>() {
        Ok(i) => ListQuery::default().eq("workerid", i),
        Err(_) if raw.chars().any(char::is_control) => return Err(HttpError::not_found("no such worker")),
        Err(_) => ListQuery::default().eq("name", &raw),
    };
    let page = shaped_page(m.store.list_workers(&q).await?);
    let w = page.items.into_iter().next().ok_or_else(|| HttpError::not_found("no such worker"))?;
    Ok(axum::Json(json!({ "workers": [w], "meta": { "total": 1 } })))
}

/// `/builders/{id_or_name}/workers`: the workers configured for it.
pub(super) async fn of_builder(
    State(m): State<Arc<Reads>>,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> ListResult {
    let p = query::parse(q.as_deref())?;
    let ids = m.store.builder_worker_ids(builder_id(&m, &raw).await?).await?;
    answer(&m, among(p.query, "workerid", &ids), p.fields).await
}

/// `/workers/{id}/builders`: the builders it is configured for.
pub(super) async fn builders_of(
    State(m): State<Arc<Reads>>,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> ListResult {
    let p = query::parse(q.as_deref())?;
    let worker =
        m.store.get_worker(id(&raw, "worker")?).await?.ok_or_else(|| HttpError::not_found("no such worker"))?;
    let mut ids: Vec<i64> = worker.configured_on.iter().map(|c| c.builderid).collect();
    ids.dedup();
    let store = m.store.clone();
    let fetch = move |q: ListQuery| {
        let store = store.clone();
        async move { Ok(values(store.list_builders(&q).await?)) }
    };
    listing::answer(named("builders", "builderid"), among(p.query, "builderid", &ids), p.fields, fetch).await
}

/// `q` narrowed to rows whose `field` is one of `ids` (none: no rows).
pub(super) fn among(q: ListQuery, field: &str, ids: &[i64]) -> ListQuery {
    let values: Vec<String> = if ids.is_empty() { vec!["-1".into()] } else { ids.iter().map(i64::to_string).collect() };
    let mut q = q;
    q.filters.push(cascade_store::Filter { field: field.into(), op: cascade_store::Op::In, values });
    q
}
