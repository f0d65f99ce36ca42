//! `/api/v2`: a read API in the shape of Buildbot's Data API v2.
//! Lists answer `{"<resource>": [...], "meta": {"total": N}}`; a single
//! object answers the same envelope with one element; errors are JSON.

pub mod control;
pub mod openapi;
pub mod query;

use std::sync::Arc;

use axum::extract::{FromRef, Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use cascade_store::{ListQuery, Page, Store};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::catalog::Catalog;
use crate::error::HttpError;

/// What the read API needs.
pub struct Reads {
    /// Where everything is read from.
    pub store: Store,
    /// Schedulers and builders as configured.
    pub catalog: Arc<Catalog>,
}

type ApiResult = Result<Json<Value>, HttpError>;

/// Keeps only the requested fields of each object (Buildbot's `field=`).
fn project(items: Vec<Value>, fields: &[String]) -> Vec<Value> {
    if fields.is_empty() {
        return items;
    }
    items
        .into_iter()
        .map(|item| match item {
            Value::Object(map) => {
                Value::Object(map.into_iter().filter(|(k, _)| fields.iter().any(|f| f == k)).collect::<Map<_, _>>())
            }
            other => other,
        })
        .collect()
}

/// `meta`: the total, flagged when it is only a lower bound (see `COUNT_CAP`).
fn meta(total: i64) -> Value {
    if total > cascade_store::COUNT_CAP {
        json!({ "total": total, "total_capped": true })
    } else {
        json!({ "total": total })
    }
}

fn envelope<T: Serialize>(name: &str, page: Page<T>, fields: &[String]) -> ApiResult {
    let items: Vec<Value> = page.items.iter().map(|i| serde_json::to_value(i).unwrap_or(Value::Null)).collect();
    Ok(Json(json!({ name: project(items, fields), "meta": meta(page.total) })))
}

fn one<T: Serialize>(name: &str, item: Option<T>, what: &str) -> ApiResult {
    match item {
        Some(i) => envelope(name, Page { items: vec![i], total: 1 }, &[]),
        None => Err(HttpError::not_found(format!("no such {what}"))),
    }
}

pub(crate) fn id(raw: &str, what: &str) -> Result<i64, HttpError> {
    raw.parse::<i64>().map_err(|_| HttpError::not_found(format!("no such {what}: {raw:?}")))
}

async fn changes(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    envelope("changes", m.store.list_changes(&p.query).await?, &p.fields)
}

async fn change(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    one("changes", m.store.get_change(id(&raw, "change")?).await?, "change")
}

async fn buildsets(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    envelope("buildsets", m.store.list_buildsets(&p.query).await?, &p.fields)
}

async fn buildset(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    one("buildsets", m.store.get_buildset(id(&raw, "buildset")?).await?, "buildset")
}

async fn buildrequests(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    envelope("buildrequests", m.store.list_buildrequests(&p.query).await?, &p.fields)
}

async fn buildrequest(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    one("buildrequests", m.store.get_buildrequest(id(&raw, "build request")?).await?, "build request")
}

async fn builders(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    envelope("builders", m.store.list_builders(&p.query).await?, &p.fields)
}

/// `/builders/{id_or_name}`, as Buildbot accepts both.
async fn builder(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let found = match raw.parse::<i64>() {
        Ok(i) => m.store.get_builder(i).await?,
        // A name no builder can have (a NUL, say) is no builder, on both stores.
        Err(_) if raw.chars().any(char::is_control) => None,
        Err(_) => m.store.get_builder_by_name(&raw).await?,
    };
    one("builders", found, "builder")
}

async fn builder_buildrequests(
    State(m): State<Arc<Reads>>,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    let query: ListQuery = p.query.eq("builderid", id(&raw, "builder")?);
    envelope("buildrequests", m.store.list_buildrequests(&query).await?, &p.fields)
}

/// Builds, with the properties asked for by `property=` inlined as
/// Buildbot does (`"properties": {name: [value, source]}`).
async fn builds_envelope(m: &Reads, page: Page<cascade_store::records::BuildRecord>, p: &query::Parsed) -> ApiResult {
    // Every build carries `properties` as Buildbot's do: `{}` unless asked for.
    let ids: Vec<i64> = page.items.iter().map(|b| b.buildid).collect();
    let mut props =
        if p.properties.is_empty() { Default::default() } else { m.store.build_properties_many(&ids).await? };
    let all = p.properties.iter().any(|n| n == "*");
    let mut items = Vec::with_capacity(page.items.len());
    for b in &page.items {
        let mut v = serde_json::to_value(b).unwrap_or(Value::Null);
        let mine: Map<String, Value> = props
            .remove(&b.buildid)
            .unwrap_or_default()
            .into_iter()
            .filter(|(n, _, _)| all || p.properties.contains(n))
            .map(|(n, value, source)| (n, json!([value, source])))
            .collect();
        if let Value::Object(o) = &mut v {
            o.insert("properties".into(), Value::Object(mine));
        }
        items.push(v);
    }
    let mut fields = p.fields.clone();
    if !fields.is_empty() && !p.properties.is_empty() {
        fields.push("properties".into());
    }
    Ok(Json(json!({ "builds": project(items, &fields), "meta": meta(page.total) })))
}

async fn builds(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    let page = m.store.list_builds(&p.query).await?;
    builds_envelope(&m, page, &p).await
}

async fn build(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    let b = m.store.get_build(id(&raw, "build")?).await?.ok_or_else(|| HttpError::not_found("no such build"))?;
    builds_envelope(&m, Page { items: vec![b], total: 1 }, &p).await
}

async fn builder_builds(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    let query: ListQuery = p.query.clone().eq("builderid", id(&raw, "builder")?);
    let page = m.store.list_builds(&query).await?;
    builds_envelope(&m, page, &p).await
}

async fn builder_build(
    State(m): State<Arc<Reads>>,
    Path((builder, number)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    let query = ListQuery::default().eq("builderid", id(&builder, "builder")?).eq("number", id(&number, "build")?);
    let b = m
        .store
        .list_builds(&query)
        .await?
        .items
        .into_iter()
        .next()
        .ok_or_else(|| HttpError::not_found("no such build"))?;
    builds_envelope(&m, Page { items: vec![b], total: 1 }, &p).await
}

/// `/builds/{id}/properties`: one object, `{name: [value, source]}`.
async fn build_properties(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let build_id = id(&raw, "build")?;
    m.store.get_build(build_id).await?.ok_or_else(|| HttpError::not_found("no such build"))?;
    let props: Map<String, Value> =
        m.store.build_properties(build_id).await?.into_iter().map(|(n, v, s)| (n, json!([v, s]))).collect();
    Ok(Json(json!({ "properties": [props], "meta": { "total": 1 } })))
}

/// `/schedulers`: every configured scheduler and whether it is enabled.
async fn schedulers(State(m): State<Arc<Reads>>) -> ApiResult {
    let items: Vec<Value> = m
        .store
        .list_schedulers()
        .await?
        .into_iter()
        .filter(|s| m.catalog.has_scheduler(&s.name))
        .map(|s| json!({ "schedulerid": s.id, "name": s.name, "enabled": s.enabled, "master": null }))
        .collect();
    let total = items.len();
    Ok(Json(json!({ "schedulers": items, "meta": { "total": total } })))
}

async fn scheduler(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let wanted = id(&raw, "scheduler")?;
    let s = m
        .store
        .list_schedulers()
        .await?
        .into_iter()
        .find(|s| s.id == wanted)
        .ok_or_else(|| HttpError::not_found("no such scheduler"))?;
    Ok(Json(json!({
        "schedulers": [{ "schedulerid": s.id, "name": s.name, "enabled": s.enabled, "master": null }],
        "meta": { "total": 1 }
    })))
}

fn force_scheduler_json(m: &Reads, s: &cascade_config::SchedulerConfig) -> Value {
    let builders: Vec<&str> = m.catalog.forceable(s).map(|b| b.name.as_str()).collect();
    let field = |name: &str, label: &str, default: &str| {
        json!({ "name": name, "fullName": name, "label": label, "type": "text", "default": default,
                "required": false, "hide": false, "multiple": false, "regex": null, "tablabel": label })
    };
    json!({
        "name": s.name,
        "label": s.name,
        "button_name": "Force",
        "builder_names": builders,
        "enabled": true,
        "all_fields": [
            field("reason", "Reason", "force build"),
            field("branch", "Branch", ""),
            field("revision", "Revision", ""),
        ],
    })
}

/// `/forceschedulers`: what can be forced, and for which builders.
async fn forceschedulers(State(m): State<Arc<Reads>>) -> ApiResult {
    let items: Vec<Value> = m.catalog.force_schedulers().map(|s| force_scheduler_json(&m, s)).collect();
    let total = items.len();
    Ok(Json(json!({ "forceschedulers": items, "meta": { "total": total } })))
}

async fn forcescheduler(State(m): State<Arc<Reads>>, Path(name): Path<String>) -> ApiResult {
    let s = m
        .catalog
        .force_schedulers()
        .find(|s| s.name == name)
        .ok_or_else(|| HttpError::not_found("no such force scheduler"))?;
    Ok(Json(json!({ "forceschedulers": [force_scheduler_json(&m, s)], "meta": { "total": 1 } })))
}

async fn build_steps(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let items = m.store.list_steps(id(&raw, "build")?).await?;
    let total = items.len() as i64;
    envelope("steps", Page { items, total }, &[])
}

/// `/builds/{id}/changes`: the blamelist, a page at a time (`offset`,
/// `limit` up to 1,000).
async fn build_changes(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    let (offset, limit) = (p.query.offset.unwrap_or(0), p.query.limit.unwrap_or(cascade_store::MAX_LIMIT));
    let page = m.store.build_changes_page(id(&raw, "build")?, offset, limit).await?;
    envelope("changes", page, &p.fields)
}

/// Test result sets (Buildbot's `/test_result_sets`), restricted to one
/// build, builder or step when the path names one.
async fn sets_where(m: &Reads, q: Option<&str>, by: Option<(&str, i64)>) -> ApiResult {
    let p = query::parse(q)?;
    let query = match by {
        Some((field, value)) => p.query.clone().eq(field, value),
        None => p.query.clone(),
    };
    envelope("test_result_sets", m.store.list_test_sets(&query).await?, &p.fields)
}

async fn test_sets(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ApiResult {
    sets_where(&m, q.as_deref(), None).await
}

async fn build_test_sets(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    sets_where(&m, q.as_deref(), Some(("buildid", id(&raw, "build")?))).await
}

async fn builder_test_sets(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    sets_where(&m, q.as_deref(), Some(("builderid", id(&raw, "builder")?))).await
}

async fn step_test_sets(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    sets_where(&m, q.as_deref(), Some(("stepid", id(&raw, "step")?))).await
}

async fn test_set(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let query = ListQuery::default().eq("test_result_setid", id(&raw, "test result set")?);
    one("test_result_sets", m.store.list_test_sets(&query).await?.items.into_iter().next(), "test result set")
}

/// `/test_result_sets/{id}/results` (Buildbot's `test_results`).
async fn test_results(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    let query = p.query.clone().eq("test_result_setid", id(&raw, "test result set")?);
    envelope("test_results", m.store.list_test_results(&query).await?, &p.fields)
}

/// One test run and Cascade's additions: the tests that did not simply pass
/// and the command that reproduces the failures.
#[derive(Serialize)]
struct TestRunView {
    #[serde(flatten)]
    run: cascade_store::TestRunRecord,
    problems: Vec<cascade_store::TestProblemRecord>,
    failed: Vec<String>,
    flaky: Vec<String>,
    reproduce: Option<String>,
}

/// `/builds/{id}/test_runs`: Cascade's additions beside Buildbot's sets.
async fn build_test_runs(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let build_id = id(&raw, "build")?;
    let runs = m.store.test_runs_of(&[build_id]).await?;
    let problems = m.store.test_problems_of(&[build_id]).await?;
    let items: Vec<TestRunView> = runs
        .into_iter()
        .map(|run| {
            let mine: Vec<_> =
                problems.iter().filter(|p| p.test_result_setid == run.test_result_setid).cloned().collect();
            let files = |flaky: bool| -> Vec<String> {
                mine.iter().filter(|p| p.method.is_none() && p.flaky == flaky).map(|p| p.file.clone()).collect()
            };
            let (failed, flaky) = (files(false), files(true));
            let names: Vec<&str> = failed.iter().map(String::as_str).collect();
            let reproduce = run
                .command
                .as_deref()
                .filter(|_| !names.is_empty())
                .and_then(|c| cascade_diagnosis::reproduce::command(c, run.seed.as_deref(), &names));
            TestRunView { run, problems: mine, failed, flaky, reproduce }
        })
        .collect();
    let total = items.len() as i64;
    envelope("test_runs", Page { items, total }, &[])
}

async fn step(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    one("steps", m.store.get_step(id(&raw, "step")?).await?, "step")
}

async fn step_logs(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let items = m.store.list_logs(id(&raw, "step")?).await?;
    let total = items.len() as i64;
    envelope("logs", Page { items, total }, &[])
}

async fn log(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    one("logs", m.store.get_log(id(&raw, "log")?).await?, "log")
}

/// Most lines one `/contents` call returns.
const MAX_LOG_LINES: i64 = 10_000;

/// `/logs/{id}/contents?offset=N&limit=M`: lines as Buildbot's log chunks.
/// For a stdio log each line starts with its stream: `o`, `e` or `h`.
async fn log_contents(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    let log = m.store.get_log(id(&raw, "log")?).await?.ok_or_else(|| HttpError::not_found("no such log"))?;
    let first = p.query.offset.unwrap_or(0).max(0);
    let count = p.query.limit.unwrap_or(MAX_LOG_LINES).clamp(0, MAX_LOG_LINES);
    let last = first.saturating_add(count - 1);
    let lines = if count == 0 { Vec::new() } else { m.store.log_lines(log.logid, first, last).await? };
    let chunks = if lines.is_empty() {
        vec![]
    } else {
        let mut content = lines.join("\n");
        content.push('\n');
        vec![json!({ "logid": log.logid, "firstline": first, "content": content })]
    };
    Ok(Json(json!({ "logchunks": chunks, "meta": { "total": log.num_lines } })))
}

/// `/logs/{id}/raw`: the whole log as text, streamed piece by piece, so
/// memory does not grow with the log. A stdio log's stream markers go.
async fn log_raw(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> Result<Response, HttpError> {
    let log = m.store.get_log(id(&raw, "log")?).await?.ok_or_else(|| HttpError::not_found("no such log"))?;
    Ok(crate::rawlog::response(&m.store, &log))
}

async fn workers(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    envelope("workers", m.store.list_workers(&p.query).await?, &p.fields)
}

async fn worker(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    one("workers", m.store.get_worker(id(&raw, "worker")?).await?, "worker")
}

async fn masters(State(m): State<Arc<Reads>>) -> ApiResult {
    let items = m.store.list_masters().await?;
    let total = items.len() as i64;
    envelope("masters", Page { items, total }, &[])
}

async fn not_found() -> HttpError {
    HttpError::not_found("no such resource")
}

/// Every `/api/v2` route (nested there by the app).
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Reads>: FromRef<S>,
    Arc<control::Control>: FromRef<S>,
{
    Router::new()
        .route("/changes", get(changes))
        .route("/changes/{id}", get(change))
        .route("/buildsets", get(buildsets))
        .route("/buildsets/{id}", get(buildset))
        .route("/buildrequests", get(buildrequests))
        .route("/buildrequests/{id}", get(buildrequest).post(control::buildrequest))
        .route("/builders", get(builders))
        .route("/builders/{id_or_name}", get(builder))
        .route("/builders/{id}/buildrequests", get(builder_buildrequests))
        .route("/builders/{id}/builds", get(builder_builds))
        .route("/builders/{id}/builds/{number}", get(builder_build))
        .route("/builds", get(builds))
        .route("/builds/{id}", get(build).post(control::build))
        .route("/builds/{id}/properties", get(build_properties))
        .route("/builds/{id}/steps", get(build_steps))
        .route("/builds/{id}/changes", get(build_changes))
        .route("/builds/{id}/test_result_sets", get(build_test_sets))
        .route("/builds/{id}/test_runs", get(build_test_runs))
        .route("/builders/{id}/test_result_sets", get(builder_test_sets))
        .route("/steps/{id}/test_result_sets", get(step_test_sets))
        .route("/test_result_sets", get(test_sets))
        .route("/test_result_sets/{id}", get(test_set))
        .route("/test_result_sets/{id}/results", get(test_results))
        .route("/steps/{id}", get(step))
        .route("/steps/{id}/logs", get(step_logs))
        .route("/logs/{id}", get(log))
        .route("/logs/{id}/contents", get(log_contents))
        .route("/logs/{id}/raw", get(log_raw))
        .route("/workers", get(workers))
        .route("/workers/{id}", get(worker).post(control::worker))
        .route("/masters", get(masters))
        .route("/masters/{id}", axum::routing::post(control::master))
        .route("/schedulers", get(schedulers))
        .route("/schedulers/{id}", get(scheduler).post(control::scheduler))
        .route("/forceschedulers", get(forceschedulers))
        .route("/forceschedulers/{name}", get(forcescheduler).post(control::force))
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
}
