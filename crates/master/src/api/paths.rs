//! The rest of Buildbot 4.3's read paths: objects reached from another
//! (a build's changes by builder and number, a change's builds, a master's
//! builders, workers and schedulers), property lists, source stamps,
//! `raw_inline` logs, and the collections that are empty here (build data,
//! triggered builds, change sources, codebases). What makes no sense here
//! is in [`NOT_SERVED`](super::NOT_SERVED).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRef, Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use cascade_store::{ListQuery, Page};
use serde_json::{Value, json};

use super::nested::{self, Params, param};
use super::{ApiResult, ListResult, Reads, builder_id, envelope, id, named, query, values, workers};
use crate::error::HttpError;

/// The build a path names: `{buildid}`, or `{builder}` and `{number}`.
async fn build_of(m: &Reads, p: &HashMap<String, String>) -> Result<cascade_store::records::BuildRecord, HttpError> {
    let build_id = nested::build_id(m, p).await?;
    m.store.get_build(build_id).await?.ok_or_else(|| HttpError::not_found("no such build"))
}

/// An empty collection, as Buildbot answers one with nothing in it.
fn empty(name: &str) -> Json<Value> {
    Json(json!({ name: [], "meta": { "total": 0 } }))
}

async fn build_changes(State(m): State<Arc<Reads>>, Path(p): Params, RawQuery(q): RawQuery) -> ApiResult {
    super::changes_of(&m, nested::build_id(&m, &p).await?, q.as_deref()).await
}

async fn build_properties(State(m): State<Arc<Reads>>, Path(p): Params) -> ApiResult {
    super::properties_of(&m, nested::build_id(&m, &p).await?).await
}

/// Buildbot's `_properties`: `{name, source, value}` with the value as JSON text.
fn property_list(props: impl Iterator<Item = (String, Value, String)>) -> Json<Value> {
    let items: Vec<Value> = props
        .map(|(name, value, source)| json!({ "name": name, "source": source, "value": value.to_string() }))
        .collect();
    let total = items.len();
    Json(json!({ "_properties": items, "meta": { "total": total } }))
}

async fn build_property_list(State(m): State<Arc<Reads>>, Path(p): Params) -> ApiResult {
    let build = build_of(&m, &p).await?;
    Ok(property_list(m.store.build_properties(build.buildid).await?.into_iter()))
}

/// A `[value, source]` pair as stored for buildsets and changes.
fn split(pair: &Value) -> (Value, String) {
    let value = pair.get(0).cloned().unwrap_or(Value::Null);
    (value, pair.get(1).and_then(Value::as_str).unwrap_or("").to_string())
}

async fn buildset_of(m: &Reads, raw: &str) -> Result<cascade_store::records::BuildsetRecord, HttpError> {
    m.store.get_buildset(id(raw, "buildset")?).await?.ok_or_else(|| HttpError::not_found("no such buildset"))
}

async fn buildset_properties(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let bs = buildset_of(&m, &raw).await?;
    let props: serde_json::Map<String, Value> = m.store.buildset_properties(bs.bsid).await?.into_iter().collect();
    Ok(Json(json!({ "properties": [props], "meta": { "total": 1 } })))
}

async fn buildset_property_list(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let bs = buildset_of(&m, &raw).await?;
    let props = m.store.buildset_properties(bs.bsid).await?;
    Ok(property_list(props.into_iter().map(|(n, pair)| {
        let (v, s) = split(&pair);
        (n, v, s)
    })))
}

async fn buildset_sourcestamps(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let items = buildset_of(&m, &raw).await?.sourcestamps;
    let total = items.len() as i64;
    envelope("sourcestamps", Page { items, total }, &[])
}

async fn change_of(m: &Reads, raw: &str) -> Result<cascade_store::records::ChangeRecord, HttpError> {
    m.store.get_change(id(raw, "change")?).await?.ok_or_else(|| HttpError::not_found("no such change"))
}

async fn change_property_list(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let change = change_of(&m, &raw).await?;
    Ok(property_list(change.properties.into_iter().map(|(n, (v, s))| (n, v, s))))
}

async fn change_builds(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let change = change_of(&m, &raw).await?;
    let items = m.store.change_builds(change.changeid).await?;
    let total = items.len() as i64;
    super::builds_envelope(&m, Page { items, total }, &query::parse(q.as_deref())?).await
}

/// Builds of one request, or of one worker: the builds list, narrowed.
async fn builds_where(m: &Reads, q: Option<&str>, field: &str, value: i64) -> ListResult {
    let p = query::parse(q)?;
    let narrowed = p.query.clone().eq(field, value);
    super::builds_answer(m, narrowed, p).await
}

async fn request_builds(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ListResult {
    let request = id(&raw, "build request")?;
    m.store.get_buildrequest(request).await?.ok_or_else(|| HttpError::not_found("no such build request"))?;
    builds_where(&m, q.as_deref(), "buildrequestid", request).await
}

async fn worker_builds(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ListResult {
    let worker = id(&raw, "worker")?;
    m.store.get_worker(worker).await?.ok_or_else(|| HttpError::not_found("no such worker"))?;
    builds_where(&m, q.as_deref(), "workerid", worker).await
}

/// A build's triggered builds and build data: Cascade's steps trigger
/// nothing and attach no data, so these are empty for a build that exists.
async fn no_triggered_builds(State(m): State<Arc<Reads>>, Path(p): Params) -> Result<Json<Value>, HttpError> {
    build_of(&m, &p).await?;
    Ok(empty("builds"))
}

async fn no_build_data(State(m): State<Arc<Reads>>, Path(p): Params) -> Result<Json<Value>, HttpError> {
    build_of(&m, &p).await?;
    Ok(empty("build_data"))
}

async fn no_build_datum(State(m): State<Arc<Reads>>, Path(p): Params) -> HttpError {
    match build_of(&m, &p).await {
        Ok(_) => HttpError::not_found("no build data here: Cascade's steps attach none"),
        Err(e) => e,
    }
}

/// The `raw_inline` form of a log: the raw text, shown in the browser.
async fn raw_inline(State(m): State<Arc<Reads>>, Path(p): Params) -> Result<Response, HttpError> {
    let log = match p.get("logid") {
        Some(raw) => m.store.get_log(id(raw, "log")?).await?.ok_or_else(|| HttpError::not_found("no such log"))?,
        None => super::nested::log_named(&m, &p).await?,
    };
    Ok(crate::rawlog::inline(&m.store, &log))
}

async fn sourcestamps(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ListResult {
    let p = query::parse(q.as_deref())?;
    super::listing::answer(named("sourcestamps", "ssid"), p.query, p.fields, lister!(m.store, list_sourcestamps)).await
}

async fn sourcestamp(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    super::one("sourcestamps", m.store.get_sourcestamp(id(&raw, "source stamp")?).await?, "source stamp")
}

async fn sourcestamp_changes(
    State(m): State<Arc<Reads>>,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> ListResult {
    let ssid = id(&raw, "source stamp")?;
    m.store.get_sourcestamp(ssid).await?.ok_or_else(|| HttpError::not_found("no such source stamp"))?;
    let p = query::parse(q.as_deref())?;
    let fetch = lister!(m.store, list_changes);
    super::listing::answer(named("changes", "changeid"), p.query.eq("sourcestampid", ssid), p.fields, fetch).await
}

/// The master a path names, which must exist.
async fn master_of(m: &Reads, p: &HashMap<String, String>) -> Result<cascade_store::records::MasterRecord, HttpError> {
    let wanted = id(param(p, "masterid")?, "master")?;
    let masters = m.store.list_masters().await?;
    masters.into_iter().find(|x| x.masterid == wanted).ok_or_else(|| HttpError::not_found("no such master"))
}

pub(super) async fn master(State(m): State<Arc<Reads>>, Path(p): Params) -> ApiResult {
    let master = master_of(&m, &p).await?;
    envelope("masters", Page { items: vec![master], total: 1 }, &[])
}

/// `/builders/{id}/masters`: the active masters that serve the builder.
async fn builder_masters(State(m): State<Arc<Reads>>, Path(p): Params) -> ApiResult {
    let builder =
        super::find_builder(&m, param(&p, "builder")?).await?.ok_or_else(|| HttpError::not_found("no such builder"))?;
    let mut items = m.store.list_masters().await?;
    items.retain(|x| builder.masterids.contains(&x.masterid));
    if let Some(raw) = p.get("masterid") {
        let wanted = id(raw, "master")?;
        items.retain(|x| x.masterid == wanted);
        if items.is_empty() {
            return Err(HttpError::not_found("no such master for this builder"));
        }
    }
    let total = items.len() as i64;
    envelope("masters", Page { items, total }, &[])
}

/// `/masters/{id}/builders[/{builderid}]`: the builders that master serves.
async fn master_builders(State(m): State<Arc<Reads>>, Path(p): Params) -> ApiResult {
    let master = master_of(&m, &p).await?;
    let mut items = m.store.list_builders(&ListQuery::default()).await?.items;
    items.retain(|b| b.masterids.contains(&master.masterid));
    if let Some(raw) = p.get("builder") {
        let wanted = builder_id(&m, raw).await?;
        items.retain(|b| b.builderid == wanted);
        if items.is_empty() {
            return Err(HttpError::not_found("no such builder on this master"));
        }
    }
    let total = items.len() as i64;
    envelope("builders", Page { items, total }, &[])
}

/// Workers configured on a master and/or for a builder, optionally one of
/// them by id or name: every `.../workers[/{worker}]` below masters and builders.
async fn workers_below(State(m): State<Arc<Reads>>, Path(p): Params, RawQuery(q): RawQuery) -> ListResult {
    let master = match p.get("masterid") {
        Some(_) => Some(master_of(&m, &p).await?.masterid),
        None => None,
    };
    let builder = match p.get("builder") {
        Some(raw) => Some(builder_id(&m, raw).await?),
        None => None,
    };
    let all = m.store.list_workers(&ListQuery::default()).await?.items;
    let ids: Vec<i64> = all
        .iter()
        .filter(|w| {
            w.configured_on
                .iter()
                .any(|c| master.is_none_or(|x| c.masterid == x) && builder.is_none_or(|b| c.builderid == b))
        })
        .filter(|w| p.get("worker").is_none_or(|raw| w.name == *raw || raw.parse() == Ok(w.workerid)))
        .map(|w| w.workerid)
        .collect();
    if p.contains_key("worker") && ids.is_empty() {
        return Err(HttpError::not_found("no such worker here"));
    }
    let parsed = query::parse(q.as_deref())?;
    workers::answer(&m, workers::among(parsed.query, "workerid", &ids), parsed.fields).await
}

/// `/masters/{id}/schedulers[/{schedulerid}]`: a master runs the
/// schedulers it configures; another master's are not known here.
async fn master_schedulers(State(m): State<Arc<Reads>>, Path(p): Params) -> ApiResult {
    let master = master_of(&m, &p).await?;
    let mut items =
        if master.masterid == m.catalog.master_id { super::scheduler_values(&m).await? } else { Vec::new() };
    if let Some(raw) = p.get("schedulerid") {
        let wanted = id(raw, "scheduler")?;
        items.retain(|s| s["schedulerid"] == wanted);
        if items.is_empty() {
            return Err(HttpError::not_found("no such scheduler on this master"));
        }
    }
    let total = items.len() as i64;
    envelope("schedulers", Page { items, total }, &[])
}

async fn empty_changesources() -> Json<Value> {
    empty("changesources")
}

async fn empty_codebases() -> Json<Value> {
    empty("codebases")
}

async fn master_changesources(State(m): State<Arc<Reads>>, Path(p): Params) -> Result<Json<Value>, HttpError> {
    master_of(&m, &p).await?;
    Ok(empty("changesources"))
}

/// The routes of this module.
pub(super) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Reads>: FromRef<S>,
{
    let mut r = Router::new();
    for build in ["/builds/{buildid}", "/builders/{builder}/builds/{number}"] {
        r = r
            .route(&format!("{build}/data"), get(no_build_data))
            .route(&format!("{build}/data/{{name}}"), get(no_build_datum))
            .route(&format!("{build}/data/{{name}}/value"), get(no_build_datum))
            .route(&format!("{build}/steps/{{step}}/logs/{{slug}}/raw_inline"), get(raw_inline));
    }
    r.route("/builders/{builder}/builds/{number}/changes", get(build_changes))
        .route("/builders/{builder}/builds/{number}/properties", get(build_properties))
        .route("/builds/{buildid}/property_list", get(build_property_list))
        .route("/builds/{buildid}/triggered_builds", get(no_triggered_builds))
        .route("/steps/{stepid}/logs/{slug}/raw_inline", get(raw_inline))
        .route("/logs/{logid}/raw_inline", get(raw_inline))
        .route("/builders/{builder}/masters", get(builder_masters))
        .route("/builders/{builder}/masters/{masterid}", get(builder_masters))
        .route("/builders/{builder}/workers/{worker}", get(workers_below))
        .route("/buildrequests/{id}/builds", get(request_builds))
        .route("/buildsets/{id}/sourcestamps", get(buildset_sourcestamps))
        .route("/buildsets/{id}/properties", get(buildset_properties))
        .route("/buildsets/{id}/properties_list", get(buildset_property_list))
        .route("/changes/{id}/builds", get(change_builds))
        .route("/changes/{id}/properties_list", get(change_property_list))
        .route("/changesources", get(empty_changesources))
        .route("/codebases", get(empty_codebases))
        .route("/masters/{masterid}/builders", get(master_builders))
        .route("/masters/{masterid}/builders/{builder}", get(master_builders))
        .route("/masters/{masterid}/builders/{builder}/workers", get(workers_below))
        .route("/masters/{masterid}/builders/{builder}/workers/{worker}", get(workers_below))
        .route("/masters/{masterid}/workers", get(workers_below))
        .route("/masters/{masterid}/workers/{worker}", get(workers_below))
        .route("/masters/{masterid}/schedulers", get(master_schedulers))
        .route("/masters/{masterid}/schedulers/{schedulerid}", get(master_schedulers))
        .route("/masters/{masterid}/changesources", get(master_changesources))
        .route("/sourcestamps", get(sourcestamps))
        .route("/sourcestamps/{id}", get(sourcestamp))
        .route("/sourcestamps/{id}/changes", get(sourcestamp_changes))
        .route("/workers/{id}/builds", get(worker_builds))
}
