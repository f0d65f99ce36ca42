//! Single objects exactly as `/api/v2` answers them, for those who push
//! them rather than answer for them: the messages of Buildbot's `/ws`
//! carry the same objects the UI reads from the Data API.

use cascade_store::{ListQuery, Page, Store};
use serde::Serialize;
use serde_json::Value;

use crate::error::HttpError;

fn value<T: Serialize>(item: Option<T>) -> Vec<Value> {
    item.and_then(|i| serde_json::to_value(i).ok()).into_iter().collect()
}

/// `/builds/{id}` (with `properties: {}`, as the API sends without `property=`).
pub async fn build(store: &Store, id: i64) -> Result<Vec<Value>, HttpError> {
    let Some(b) = store.get_build(id).await? else { return Ok(Vec::new()) };
    Ok(super::build_values(store, Page { items: vec![b], total: 1 }, &[]).await?.items)
}

/// `/steps/{id}`.
pub async fn step(store: &Store, id: i64) -> Result<Vec<Value>, HttpError> {
    Ok(value(store.get_step(id).await?))
}

/// `/logs/{id}`.
pub async fn log(store: &Store, id: i64) -> Result<Vec<Value>, HttpError> {
    Ok(value(store.get_log(id).await?))
}

/// `/steps/{id}/logs`.
pub async fn logs_of_step(store: &Store, step_id: i64) -> Result<Vec<Value>, HttpError> {
    Ok(store.list_logs(step_id).await?.into_iter().filter_map(|l| serde_json::to_value(l).ok()).collect())
}

/// `/buildrequests/{id}`.
pub async fn buildrequest(store: &Store, id: i64) -> Result<Vec<Value>, HttpError> {
    Ok(value(store.get_buildrequest(id).await?))
}

/// `/buildsets/{id}`.
pub async fn buildset(store: &Store, id: i64) -> Result<Vec<Value>, HttpError> {
    Ok(value(store.get_buildset(id).await?))
}

/// The changes a buildset builds, each as `/changes/{id}`.
pub async fn changes_of_buildset(store: &Store, buildset_id: i64) -> Result<Vec<Value>, HttpError> {
    Ok(store.buildset_changes(buildset_id).await?.into_iter().filter_map(|c| serde_json::to_value(c).ok()).collect())
}

/// `/workers/{id}`, in the API's shape (`workerinfo` and `cascade_info`).
pub async fn worker(store: &Store, id: i64) -> Result<Vec<Value>, HttpError> {
    let page = super::values(store.list_workers(&ListQuery::default().eq("workerid", id)).await?);
    Ok(page.items.into_iter().map(super::workers::shaped).collect())
}

/// `/masters/{id}`.
pub async fn master(store: &Store, id: i64) -> Result<Vec<Value>, HttpError> {
    Ok(value(store.list_masters().await?.into_iter().find(|m| m.masterid == id)))
}
