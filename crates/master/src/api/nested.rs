//! Steps and logs addressed the ways Buildbot allows: by a build's id or
//! by its builder (id or name) and number, a step by number or name, a
//! log by its slug (`/builders/3/builds/7/steps/test/logs/stdio/raw`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use cascade_store::{LogRecord, Page, StepRecord};

use super::{ApiResult, Reads, envelope, id};
use crate::error::HttpError;

pub(super) type Params = Path<HashMap<String, String>>;

pub(super) fn param<'p>(p: &'p HashMap<String, String>, name: &str) -> Result<&'p str, HttpError> {
    p.get(name).map(String::as_str).ok_or_else(|| HttpError::not_found("no such resource"))
}

/// The build a path names: `{buildid}`, or `{builder}` and `{number}`.
pub(super) async fn build_id(m: &Reads, p: &HashMap<String, String>) -> Result<i64, HttpError> {
    if let Some(raw) = p.get("buildid") {
        return id(raw, "build");
    }
    let build = super::find_builder_build(m, param(p, "builder")?, param(p, "number")?).await?;
    Ok(build.buildid)
}

/// The step a path names: `{stepid}`, or a build and `{step}` (its number or name).
async fn step(m: &Reads, p: &HashMap<String, String>) -> Result<StepRecord, HttpError> {
    let missing = || HttpError::not_found("no such step");
    if let Some(raw) = p.get("stepid") {
        return m.store.get_step(id(raw, "step")?).await?.ok_or_else(missing);
    }
    let wanted = param(p, "step")?;
    let steps = m.store.list_steps(build_id(m, p).await?).await?;
    let by_number = wanted.parse::<i64>().ok();
    steps.into_iter().find(|s| Some(s.number) == by_number || s.name == wanted).ok_or_else(missing)
}

/// The log a path names: a step and the log's `{slug}`.
pub(super) async fn log_named(m: &Reads, p: &HashMap<String, String>) -> Result<LogRecord, HttpError> {
    log(m, p).await
}

async fn log(m: &Reads, p: &HashMap<String, String>) -> Result<LogRecord, HttpError> {
    let step = step(m, p).await?;
    let slug = param(p, "slug")?;
    let logs = m.store.list_logs(step.stepid).await?;
    logs.into_iter().find(|l| l.slug == slug).ok_or_else(|| HttpError::not_found("no such log"))
}

pub(super) async fn steps(State(m): State<Arc<Reads>>, Path(p): Params) -> ApiResult {
    let items = m.store.list_steps(build_id(&m, &p).await?).await?;
    let total = items.len() as i64;
    envelope("steps", Page { items, total }, &[])
}

pub(super) async fn one_step(State(m): State<Arc<Reads>>, Path(p): Params) -> ApiResult {
    let step = step(&m, &p).await?;
    envelope("steps", Page { items: vec![step], total: 1 }, &[])
}

pub(super) async fn logs(State(m): State<Arc<Reads>>, Path(p): Params) -> ApiResult {
    let items = m.store.list_logs(step(&m, &p).await?.stepid).await?;
    let total = items.len() as i64;
    envelope("logs", Page { items, total }, &[])
}

pub(super) async fn one_log(State(m): State<Arc<Reads>>, Path(p): Params) -> ApiResult {
    let log = log(&m, &p).await?;
    envelope("logs", Page { items: vec![log], total: 1 }, &[])
}

pub(super) async fn contents(State(m): State<Arc<Reads>>, Path(p): Params, RawQuery(q): RawQuery) -> ApiResult {
    let log = log(&m, &p).await?;
    super::contents(&m, &log, q.as_deref()).await
}

pub(super) async fn raw(State(m): State<Arc<Reads>>, Path(p): Params) -> Result<Response, HttpError> {
    let log = log(&m, &p).await?;
    Ok(crate::rawlog::response(&m.store, &log))
}
