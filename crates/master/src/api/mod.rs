//! `/api/v2`: a read API in the shape of Buildbot's Data API v2.
//! Lists answer `{"<resource>": [...], "meta": {"total": N}}`; a single
//! object answers the same envelope with one element; errors are JSON.

pub mod control;
mod listing;
mod nested;
pub mod objects;
pub mod openapi;
pub mod query;

/// Buildbot 4.3's read paths that answer 404 here, and why (in
/// `docs/coming-from-buildbot.md` too).
pub const NOT_SERVED: &[(&str, &str)] = &[
    ("/application.spec", "Buildbot's description of its own endpoints; Cascade's is `/api/v2/openapi.json`"),
    ("/logchunks", "a log's chunks are read below the log: `/logs/{id}/contents`"),
    ("/branches/n:branchid", CODEBASES),
    ("/commits/n:commitid", CODEBASES),
    ("/codebases/n:codebaseid", CODEBASES),
    ("/codebases/n:codebaseid/branches", CODEBASES),
    ("/codebases/n:codebaseid/commits", CODEBASES),
    ("/codebases/n:codebaseid/commits_by_revision/s:revision", CODEBASES),
    ("/codebases/n:codebaseid/commit_range/n:commitid1/n:commitid2/commits_common_parent", CODEBASES),
    ("/codebases/n:codebaseid/commit_range/n:commitid1/n:commitid2/test_result_sets", CODEBASES),
    ("/projects/n:projectid", PROJECTS),
    ("/projects/i:projectname", PROJECTS),
    ("/projects/n:projectid/builders", PROJECTS),
    ("/projects/n:projectid/codebases/i:codebasename", PROJECTS),
    ("/changesources/n:changesourceid", CHANGE_SOURCES),
    ("/masters/n:masterid/changesources/n:changesourceid", CHANGE_SOURCES),
    ("/builds/n:buildid/data/i:name", BUILD_DATA),
    ("/builds/n:buildid/data/i:name/value", BUILD_DATA),
    ("/builders/n:builderid/builds/n:build_number/data/i:name", BUILD_DATA),
    ("/builders/n:builderid/builds/n:build_number/data/i:name/value", BUILD_DATA),
    ("/builders/s:buildername/builds/n:build_number/data/i:name", BUILD_DATA),
    ("/builders/s:buildername/builds/n:build_number/data/i:name/value", BUILD_DATA),
];
const CODEBASES: &str = "Buildbot 4.3's codebase graph is not kept: one repository, its commits are changes";
const PROJECTS: &str = "no projects are configured (`/projects` is empty)";
const CHANGE_SOURCES: &str = "the webhook and the poller are not change-source objects (`/changesources` is empty)";
const BUILD_DATA: &str = "Cascade's steps attach no build data (`.../data` is empty)";
mod workers;

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
type ListResult = Result<Response, HttpError>;

/// A page of records as JSON objects.
fn values<T: Serialize>(page: Page<T>) -> Page<Value> {
    let items = page.items.iter().map(|i| serde_json::to_value(i).unwrap_or(Value::Null)).collect();
    Page { items, total: page.total }
}

/// A [`listing::Fetch`] over one of the store's list methods.
macro_rules! lister {
    ($store:expr, $method:ident) => {{
        let store = $store.clone();
        move |q: ListQuery| {
            let store = store.clone();
            async move { Ok(values(store.$method(&q).await?)) }
        }
    }};
}

// After `lister!`, which it uses.
mod paths;

const fn named(name: &'static str, id_field: &'static str) -> listing::Named {
    listing::Named { name, id_field }
}

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

async fn changes(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ListResult {
    let p = query::parse(q.as_deref())?;
    listing::answer(named("changes", "changeid"), p.query, p.fields, lister!(m.store, list_changes)).await
}

async fn change(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    one("changes", m.store.get_change(id(&raw, "change")?).await?, "change")
}

async fn buildsets(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ListResult {
    let p = query::parse(q.as_deref())?;
    listing::answer(named("buildsets", "bsid"), p.query, p.fields, lister!(m.store, list_buildsets)).await
}

async fn buildset(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    one("buildsets", m.store.get_buildset(id(&raw, "buildset")?).await?, "buildset")
}

const BUILDREQUESTS: listing::Named = named("buildrequests", "buildrequestid");

async fn buildrequests(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ListResult {
    let p = query::parse(q.as_deref())?;
    listing::answer(BUILDREQUESTS, p.query, p.fields, lister!(m.store, list_buildrequests)).await
}

async fn buildrequest(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    one("buildrequests", m.store.get_buildrequest(id(&raw, "build request")?).await?, "build request")
}

async fn builders(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ListResult {
    let mut p = query::parse(q.as_deref())?;
    branch_labels(&mut p.query, &m.catalog)?;
    listing::answer(named("builders", "builderid"), p.query, p.fields, lister!(m.store, list_builders)).await
}

/// `branch=` (Cascade's) takes a branch label or its git name (`main` is
/// `3.x`); a branch that is neither is a 400 naming those there are.
fn branch_labels(q: &mut ListQuery, catalog: &Catalog) -> Result<(), HttpError> {
    for f in q
        .filters
        .iter_mut()
        .filter(|f| f.field == "branch" && matches!(f.op, cascade_store::Op::Eq | cascade_store::Op::In))
    {
        let mut labels = Vec::new();
        for asked in &f.values {
            labels
                .extend(catalog.branch_labels(asked).map_err(|why| HttpError::bad_request(format!("branch: {why}")))?);
        }
        f.values = labels;
    }
    Ok(())
}

/// The builder a path names by id or by name, as Buildbot accepts both.
async fn find_builder(m: &Reads, raw: &str) -> Result<Option<cascade_store::records::BuilderRecord>, HttpError> {
    Ok(match raw.parse::<i64>() {
        Ok(i) => m.store.get_builder(i).await?,
        // A name no builder can have (a NUL, say) is no builder, on both stores.
        Err(_) if raw.chars().any(char::is_control) => None,
        Err(_) => m.store.get_builder_by_name(raw).await?,
    })
}

/// The id of the builder a path names; a name that is no builder's is a 404.
async fn builder_id(m: &Reads, raw: &str) -> Result<i64, HttpError> {
    match raw.parse::<i64>() {
        Ok(i) => Ok(i),
        Err(_) => find_builder(m, raw)
            .await?
            .map(|b| b.builderid)
            .ok_or_else(|| HttpError::not_found(format!("no such builder: {raw:?}"))),
    }
}

/// `/builders/{id_or_name}`.
async fn builder(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    one("builders", find_builder(&m, &raw).await?, "builder")
}

async fn builder_buildrequests(
    State(m): State<Arc<Reads>>,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> ListResult {
    let p = query::parse(q.as_deref())?;
    let query: ListQuery = p.query.eq("builderid", builder_id(&m, &raw).await?);
    listing::answer(BUILDREQUESTS, query, p.fields, lister!(m.store, list_buildrequests)).await
}

/// Builds, with the properties asked for by `property=` inlined as
/// Buildbot does (`"properties": {name: [value, source]}`); every build
/// carries `properties`, `{}` unless asked for.
async fn build_values(
    store: &Store,
    page: Page<cascade_store::records::BuildRecord>,
    wanted: &[String],
) -> Result<Page<Value>, HttpError> {
    let ids: Vec<i64> = page.items.iter().map(|b| b.buildid).collect();
    let mut props = if wanted.is_empty() { Default::default() } else { store.build_properties_many(&ids).await? };
    let all = wanted.iter().any(|n| n == "*");
    let mut items = Vec::with_capacity(page.items.len());
    for b in &page.items {
        let mut v = serde_json::to_value(b).unwrap_or(Value::Null);
        let mine: Map<String, Value> = props
            .remove(&b.buildid)
            .unwrap_or_default()
            .into_iter()
            .filter(|(n, _, _)| all || wanted.contains(n))
            .map(|(n, value, source)| (n, json!([value, source])))
            .collect();
        if let Value::Object(o) = &mut v {
            o.insert("properties".into(), Value::Object(mine));
        }
        items.push(v);
    }
    Ok(Page { items, total: page.total })
}

/// The fields kept of each build: `properties` too when `property=` asks.
fn build_fields(p: &query::Parsed) -> Vec<String> {
    let mut fields = p.fields.clone();
    if !fields.is_empty() && !p.properties.is_empty() {
        fields.push("properties".into());
    }
    fields
}

async fn builds_envelope(m: &Reads, page: Page<cascade_store::records::BuildRecord>, p: &query::Parsed) -> ApiResult {
    let page = build_values(&m.store, page, &p.properties).await?;
    Ok(Json(json!({ "builds": project(page.items, &build_fields(p)), "meta": meta(page.total) })))
}

/// Every build `query` selects, a page at a time.
async fn builds_answer(m: &Reads, query: ListQuery, p: query::Parsed) -> ListResult {
    let (store, wanted) = (m.store.clone(), Arc::new(p.properties.clone()));
    let fetch = move |q: ListQuery| {
        let (store, wanted) = (store.clone(), wanted.clone());
        async move { build_values(&store, store.list_builds(&q).await?, &wanted).await }
    };
    listing::answer(named("builds", "buildid"), query, build_fields(&p), fetch).await
}

async fn builds(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ListResult {
    let p = query::parse(q.as_deref())?;
    builds_answer(&m, p.query.clone(), p).await
}

async fn build(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    let b = m.store.get_build(id(&raw, "build")?).await?.ok_or_else(|| HttpError::not_found("no such build"))?;
    builds_envelope(&m, Page { items: vec![b], total: 1 }, &p).await
}

async fn builder_builds(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ListResult {
    let p = query::parse(q.as_deref())?;
    let query: ListQuery = p.query.clone().eq("builderid", builder_id(&m, &raw).await?);
    builds_answer(&m, query, p).await
}

/// The build a path names by builder (id or name) and number.
async fn find_builder_build(
    m: &Reads,
    builder: &str,
    number: &str,
) -> Result<cascade_store::records::BuildRecord, HttpError> {
    let query = ListQuery::default().eq("builderid", builder_id(m, builder).await?).eq("number", id(number, "build")?);
    m.store.list_builds(&query).await?.items.into_iter().next().ok_or_else(|| HttpError::not_found("no such build"))
}

async fn builder_build(
    State(m): State<Arc<Reads>>,
    Path((builder, number)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    let b = find_builder_build(&m, &builder, &number).await?;
    builds_envelope(&m, Page { items: vec![b], total: 1 }, &p).await
}

/// `/builds/{id}/properties`: one object, `{name: [value, source]}`.
async fn build_properties(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    properties_of(&m, id(&raw, "build")?).await
}

/// A build's properties as one object, `{name: [value, source]}`.
async fn properties_of(m: &Reads, build_id: i64) -> ApiResult {
    m.store.get_build(build_id).await?.ok_or_else(|| HttpError::not_found("no such build"))?;
    let props: Map<String, Value> =
        m.store.build_properties(build_id).await?.into_iter().map(|(n, v, s)| (n, json!([v, s]))).collect();
    Ok(Json(json!({ "properties": [props], "meta": { "total": 1 } })))
}

/// Every configured scheduler, with the master running it as Buildbot's
/// `master` (this one: each master runs the schedulers it configures; a
/// disabled scheduler runs nowhere, `null`).
async fn scheduler_values(m: &Reads) -> Result<Vec<Value>, HttpError> {
    let this = m.store.list_masters().await?.into_iter().find(|x| x.masterid == m.catalog.master_id);
    let rows = m.store.list_schedulers().await?;
    Ok(rows
        .into_iter()
        .filter(|s| m.catalog.has_scheduler(&s.name))
        .map(|s| {
            let master = if s.enabled { this.as_ref().map(|x| json!(x)) } else { None };
            json!({ "schedulerid": s.id, "name": s.name, "enabled": s.enabled, "master": master })
        })
        .collect())
}

/// `/schedulers`.
async fn schedulers(State(m): State<Arc<Reads>>) -> ApiResult {
    let items = scheduler_values(&m).await?;
    let total = items.len();
    Ok(Json(json!({ "schedulers": items, "meta": { "total": total } })))
}

async fn scheduler(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let wanted = id(&raw, "scheduler")?;
    let found = scheduler_values(&m).await?.into_iter().find(|s| s["schedulerid"] == wanted);
    let s = found.ok_or_else(|| HttpError::not_found("no such scheduler"))?;
    Ok(Json(json!({ "schedulers": [s], "meta": { "total": 1 } })))
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

/// `/builders/{id_or_name}/forceschedulers`: those that may force it.
async fn builder_forceschedulers(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let builder = find_builder(&m, &raw).await?.ok_or_else(|| HttpError::not_found("no such builder"))?;
    let items: Vec<Value> = m
        .catalog
        .force_schedulers()
        .filter(|s| m.catalog.forceable(s).any(|b| b.name == builder.name))
        .map(|s| force_scheduler_json(&m, s))
        .collect();
    let total = items.len();
    Ok(Json(json!({ "forceschedulers": items, "meta": { "total": total } })))
}

/// `/projects`: Buildbot 4's projects group builders; Cascade has none, so
/// the list is empty and every project is a 404.
async fn projects() -> Json<Value> {
    Json(json!({ "projects": [], "meta": { "total": 0 } }))
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
    changes_of(&m, id(&raw, "build")?, q.as_deref()).await
}

/// A page of a build's blamelist (`offset`, `limit` up to 1,000).
async fn changes_of(m: &Reads, build_id: i64, q: Option<&str>) -> ApiResult {
    let p = query::parse(q)?;
    let (offset, limit) = (p.query.offset.unwrap_or(0), p.query.limit.unwrap_or(cascade_store::MAX_LIMIT));
    let page = m.store.build_changes_page(build_id, offset, limit).await?;
    envelope("changes", page, &p.fields)
}

/// Test result sets (Buildbot's `/test_result_sets`), restricted to one
/// build, builder or step when the path names one.
async fn sets_where(m: &Reads, q: Option<&str>, by: Option<(&str, i64)>) -> ListResult {
    let p = query::parse(q)?;
    let query = match by {
        Some((field, value)) => p.query.clone().eq(field, value),
        None => p.query.clone(),
    };
    let what = named("test_result_sets", "test_result_setid");
    listing::answer(what, query, p.fields, lister!(m.store, list_test_sets)).await
}

async fn test_sets(State(m): State<Arc<Reads>>, RawQuery(q): RawQuery) -> ListResult {
    sets_where(&m, q.as_deref(), None).await
}

async fn build_test_sets(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ListResult {
    sets_where(&m, q.as_deref(), Some(("buildid", id(&raw, "build")?))).await
}

async fn builder_test_sets(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ListResult {
    sets_where(&m, q.as_deref(), Some(("builderid", builder_id(&m, &raw).await?))).await
}

async fn step_test_sets(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ListResult {
    sets_where(&m, q.as_deref(), Some(("stepid", id(&raw, "step")?))).await
}

async fn test_set(State(m): State<Arc<Reads>>, Path(raw): Path<String>) -> ApiResult {
    let query = ListQuery::default().eq("test_result_setid", id(&raw, "test result set")?);
    one("test_result_sets", m.store.list_test_sets(&query).await?.items.into_iter().next(), "test result set")
}

/// `/test_result_sets/{id}/results` (Buildbot's `test_results`).
async fn test_results(State(m): State<Arc<Reads>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ListResult {
    let p = query::parse(q.as_deref())?;
    let query = p.query.clone().eq("test_result_setid", id(&raw, "test result set")?);
    let what = named("test_results", "test_resultid");
    listing::answer(what, query, p.fields, lister!(m.store, list_test_results)).await
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
    let log = m.store.get_log(id(&raw, "log")?).await?.ok_or_else(|| HttpError::not_found("no such log"))?;
    contents(&m, &log, q.as_deref()).await
}

/// A log's lines as `logchunks`, the page `q` asks for.
async fn contents(m: &Reads, log: &cascade_store::LogRecord, q: Option<&str>) -> ApiResult {
    let p = query::parse(q)?;
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

async fn masters(State(m): State<Arc<Reads>>) -> ApiResult {
    let items = m.store.list_masters().await?;
    let total = items.len() as i64;
    envelope("masters", Page { items, total }, &[])
}

async fn not_found() -> HttpError {
    HttpError::not_found("no such resource")
}

/// Steps and logs below a build named by id or by builder and number, and
/// logs below a step by slug.
fn nested_routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Reads>: FromRef<S>,
{
    let mut r = Router::new();
    for build in ["/builds/{buildid}", "/builders/{builder}/builds/{number}"] {
        r = r
            .route(&format!("{build}/steps/{{step}}"), get(nested::one_step))
            .route(&format!("{build}/steps/{{step}}/logs"), get(nested::logs))
            .route(&format!("{build}/steps/{{step}}/logs/{{slug}}"), get(nested::one_log))
            .route(&format!("{build}/steps/{{step}}/logs/{{slug}}/contents"), get(nested::contents))
            .route(&format!("{build}/steps/{{step}}/logs/{{slug}}/raw"), get(nested::raw));
    }
    r.route("/builders/{builder}/builds/{number}/steps", get(nested::steps))
        .route("/steps/{stepid}/logs/{slug}", get(nested::one_log))
        .route("/steps/{stepid}/logs/{slug}/contents", get(nested::contents))
        .route("/steps/{stepid}/logs/{slug}/raw", get(nested::raw))
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
        .route("/builders/{id}/forceschedulers", get(builder_forceschedulers))
        .route("/builders/{id}/workers", get(workers::of_builder))
        .route("/workers/{id}/builders", get(workers::builders_of))
        .route("/projects", get(projects))
        .route("/projects/{id}", get(not_found))
        .merge(nested_routes())
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
        .route("/workers", get(workers::list))
        .route("/workers/{id}", get(workers::one).post(control::worker))
        .route("/masters", get(masters))
        .route("/masters/{masterid}", get(paths::master).post(control::master))
        .merge(paths::routes())
        .route("/schedulers", get(schedulers))
        .route("/schedulers/{id}", get(scheduler).post(control::scheduler))
        .route("/forceschedulers", get(forceschedulers))
        .route("/forceschedulers/{name}", get(forcescheduler).post(control::force))
        .route("/openapi.json", get(openapi::document))
        .fallback(not_found)
}
