//! `/api/v2`: a read API in the shape of Buildbot's Data API v2.
//! Lists answer `{"<resource>": [...], "meta": {"total": N}}`; a single
//! object answers the same envelope with one element; errors are JSON.

pub mod query;

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cascade_store::{ListQuery, Page, StoreError};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::app::Master;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, message: message.into() }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::BadQuery(m) => ApiError::bad_request(m),
            other => {
                tracing::error!(error = %other, "API query failed");
                ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message: "the store is unavailable".into() }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

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

fn envelope<T: Serialize>(name: &str, page: Page<T>, fields: &[String]) -> ApiResult {
    let items: Vec<Value> = page.items.iter().map(|i| serde_json::to_value(i).unwrap_or(Value::Null)).collect();
    Ok(Json(json!({ name: project(items, fields), "meta": { "total": page.total } })))
}

fn one<T: Serialize>(name: &str, item: Option<T>, what: &str) -> ApiResult {
    match item {
        Some(i) => envelope(name, Page { items: vec![i], total: 1 }, &[]),
        None => Err(ApiError::not_found(format!("no such {what}"))),
    }
}

fn id(raw: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().map_err(|_| ApiError::not_found(format!("no such {what}: {raw:?}")))
}

async fn changes(State(m): State<Arc<Master>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    envelope("changes", m.store.list_changes(&p.query).await?, &p.fields)
}

async fn change(State(m): State<Arc<Master>>, Path(raw): Path<String>) -> ApiResult {
    one("changes", m.store.get_change(id(&raw, "change")?).await?, "change")
}

async fn buildsets(State(m): State<Arc<Master>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    envelope("buildsets", m.store.list_buildsets(&p.query).await?, &p.fields)
}

async fn buildset(State(m): State<Arc<Master>>, Path(raw): Path<String>) -> ApiResult {
    one("buildsets", m.store.get_buildset(id(&raw, "buildset")?).await?, "buildset")
}

async fn buildrequests(State(m): State<Arc<Master>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    envelope("buildrequests", m.store.list_buildrequests(&p.query).await?, &p.fields)
}

async fn buildrequest(State(m): State<Arc<Master>>, Path(raw): Path<String>) -> ApiResult {
    one("buildrequests", m.store.get_buildrequest(id(&raw, "build request")?).await?, "build request")
}

async fn builders(State(m): State<Arc<Master>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    envelope("builders", m.store.list_builders(&p.query).await?, &p.fields)
}

/// `/builders/{id_or_name}`, as Buildbot accepts both.
async fn builder(State(m): State<Arc<Master>>, Path(raw): Path<String>) -> ApiResult {
    let found = match raw.parse::<i64>() {
        Ok(i) => m.store.get_builder(i).await?,
        Err(_) => m.store.get_builder_by_name(&raw).await?,
    };
    one("builders", found, "builder")
}

async fn builder_buildrequests(
    State(m): State<Arc<Master>>,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    let query: ListQuery = p.query.eq("builderid", id(&raw, "builder")?);
    envelope("buildrequests", m.store.list_buildrequests(&query).await?, &p.fields)
}

/// A JSON-RPC call, as Buildbot's control API takes them.
#[derive(Debug, serde::Deserialize)]
struct RpcCall {
    method: String,
    #[serde(default)]
    id: Value,
    #[serde(default)]
    params: Value,
}

/// `POST /api/v2/builds/{id}` with `{"method": "stop", "params": {"reason": ...}}`.
async fn build_control(
    State(m): State<Arc<Master>>,
    Path(raw): Path<String>,
    headers: axum::http::HeaderMap,
    extensions: axum::http::Extensions,
    body: axum::body::Bytes,
) -> ApiResult {
    let from = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
    let call: RpcCall =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("not a JSON-RPC call: {e}")))?;
    let action = match call.method.as_str() {
        "stop" => "stop",
        other => return Err(ApiError::bad_request(format!("unknown method {other:?} for a build"))),
    };
    let user = crate::auth::authenticate(&m, &headers, from, action).await?;
    crate::auth::authorize(&m, &user, from, action)?;
    let build_id = id(&raw, "build")?;
    let build = m.store.get_build(build_id).await?.ok_or_else(|| ApiError::not_found("no such build"))?;
    if build.complete {
        return Err(ApiError::new(StatusCode::CONFLICT, "the build has already finished"));
    }
    if build.masterid != m.master_id || !m.stop_build(build_id) {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("the build runs on master {}", build.masterid)));
    }
    let reason = call.params.get("reason").and_then(|r| r.as_str()).unwrap_or("");
    tracing::info!(user = %user.name, build = build_id, %reason, "build stopped");
    Ok(Json(json!({ "jsonrpc": "2.0", "id": call.id, "result": null })))
}

async fn builds(State(m): State<Arc<Master>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    envelope("builds", m.store.list_builds(&p.query).await?, &p.fields)
}

async fn build(State(m): State<Arc<Master>>, Path(raw): Path<String>) -> ApiResult {
    one("builds", m.store.get_build(id(&raw, "build")?).await?, "build")
}

async fn builder_builds(State(m): State<Arc<Master>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    let query: ListQuery = p.query.eq("builderid", id(&raw, "builder")?);
    envelope("builds", m.store.list_builds(&query).await?, &p.fields)
}

async fn builder_build(State(m): State<Arc<Master>>, Path((builder, number)): Path<(String, String)>) -> ApiResult {
    let query = ListQuery::default().eq("builderid", id(&builder, "builder")?).eq("number", id(&number, "build")?);
    one("builds", m.store.list_builds(&query).await?.items.into_iter().next(), "build")
}

async fn build_steps(State(m): State<Arc<Master>>, Path(raw): Path<String>) -> ApiResult {
    let items = m.store.list_steps(id(&raw, "build")?).await?;
    let total = items.len() as i64;
    envelope("steps", Page { items, total }, &[])
}

async fn build_changes(State(m): State<Arc<Master>>, Path(raw): Path<String>) -> ApiResult {
    let items = m.store.build_changes(id(&raw, "build")?).await?;
    let total = items.len() as i64;
    envelope("changes", Page { items, total }, &[])
}

async fn step(State(m): State<Arc<Master>>, Path(raw): Path<String>) -> ApiResult {
    one("steps", m.store.get_step(id(&raw, "step")?).await?, "step")
}

async fn step_logs(State(m): State<Arc<Master>>, Path(raw): Path<String>) -> ApiResult {
    let items = m.store.list_logs(id(&raw, "step")?).await?;
    let total = items.len() as i64;
    envelope("logs", Page { items, total }, &[])
}

async fn log(State(m): State<Arc<Master>>, Path(raw): Path<String>) -> ApiResult {
    one("logs", m.store.get_log(id(&raw, "log")?).await?, "log")
}

/// Most lines one `/contents` call returns.
const MAX_LOG_LINES: i64 = 10_000;

/// `/logs/{id}/contents?offset=N&limit=M`: lines as Buildbot's log chunks.
/// For a stdio log each line starts with its stream: `o`, `e` or `h`.
async fn log_contents(State(m): State<Arc<Master>>, Path(raw): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    let log = m.store.get_log(id(&raw, "log")?).await?.ok_or_else(|| ApiError::not_found("no such log"))?;
    let first = p.query.offset.unwrap_or(0).max(0);
    let count = p.query.limit.unwrap_or(MAX_LOG_LINES).clamp(0, MAX_LOG_LINES);
    let lines = if count == 0 { Vec::new() } else { m.store.log_lines(log.logid, first, first + count - 1).await? };
    let chunks = if lines.is_empty() {
        vec![]
    } else {
        let mut content = lines.join("\n");
        content.push('\n');
        vec![json!({ "logid": log.logid, "firstline": first, "content": content })]
    };
    Ok(Json(json!({ "logchunks": chunks, "meta": { "total": log.num_lines } })))
}

async fn workers(State(m): State<Arc<Master>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = query::parse(q.as_deref())?;
    envelope("workers", m.store.list_workers(&p.query).await?, &p.fields)
}

async fn worker(State(m): State<Arc<Master>>, Path(raw): Path<String>) -> ApiResult {
    one("workers", m.store.get_worker(id(&raw, "worker")?).await?, "worker")
}

async fn masters(State(m): State<Arc<Master>>) -> ApiResult {
    let items = m.store.list_masters().await?;
    let total = items.len() as i64;
    envelope("masters", Page { items, total }, &[])
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}

pub fn router() -> Router<Arc<Master>> {
    Router::new()
        .route("/changes", get(changes))
        .route("/changes/{id}", get(change))
        .route("/buildsets", get(buildsets))
        .route("/buildsets/{id}", get(buildset))
        .route("/buildrequests", get(buildrequests))
        .route("/buildrequests/{id}", get(buildrequest))
        .route("/builders", get(builders))
        .route("/builders/{id_or_name}", get(builder))
        .route("/builders/{id}/buildrequests", get(builder_buildrequests))
        .route("/builders/{id}/builds", get(builder_builds))
        .route("/builders/{id}/builds/{number}", get(builder_build))
        .route("/builds", get(builds))
        .route("/builds/{id}", get(build).post(build_control))
        .route("/builds/{id}/steps", get(build_steps))
        .route("/builds/{id}/changes", get(build_changes))
        .route("/steps/{id}", get(step))
        .route("/steps/{id}/logs", get(step_logs))
        .route("/logs/{id}", get(log))
        .route("/logs/{id}/contents", get(log_contents))
        .route("/workers", get(workers))
        .route("/workers/{id}", get(worker))
        .route("/masters", get(masters))
        .fallback(not_found)
}
