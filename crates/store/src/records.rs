//! What the store hands back, shaped as Buildbot's Data API v2 objects
//! (same field names and types), so the REST layer serializes them as is.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStampRecord {
    pub ssid: i64,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub project: String,
    pub repository: String,
    pub codebase: String,
    pub created_at: i64,
    pub patch: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeRecord {
    pub changeid: i64,
    pub author: String,
    pub committer: Option<String>,
    pub comments: String,
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub revlink: Option<String>,
    pub when_timestamp: i64,
    pub category: Option<String>,
    pub repository: String,
    pub codebase: String,
    pub project: String,
    pub files: Vec<String>,
    /// `name -> [value, source]`, as Buildbot.
    pub properties: BTreeMap<String, (Value, String)>,
    pub parent_changeids: Vec<i64>,
    pub sourcestamp: SourceStampRecord,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildsetRecord {
    pub bsid: i64,
    pub external_idstring: Option<String>,
    pub reason: String,
    pub submitted_at: i64,
    pub complete: bool,
    pub complete_at: Option<i64>,
    pub results: Option<i64>,
    pub sourcestamps: Vec<SourceStampRecord>,
    pub rebuilt_buildid: Option<i64>,
    pub parent_buildid: Option<i64>,
    pub parent_relationship: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildRequestRecord {
    pub buildrequestid: i64,
    pub buildsetid: i64,
    pub builderid: i64,
    pub priority: i64,
    pub claimed: bool,
    pub claimed_at: Option<i64>,
    pub claimed_by_masterid: Option<i64>,
    pub complete: bool,
    /// -1 until complete, as Buildbot.
    pub results: i64,
    pub submitted_at: i64,
    pub complete_at: Option<i64>,
    pub waited_for: bool,
    pub properties: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuilderRecord {
    pub builderid: i64,
    pub name: String,
    pub masterids: Vec<i64>,
    pub description: Option<String>,
    pub description_format: Option<String>,
    pub description_html: Option<String>,
    pub projectid: Option<i64>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuilderMaster {
    pub builderid: i64,
    pub masterid: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectedMaster {
    pub masterid: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRecord {
    pub workerid: i64,
    pub name: String,
    pub workerinfo: Value,
    pub paused: bool,
    pub pause_reason: Option<String>,
    pub graceful: bool,
    pub configured_on: Vec<BuilderMaster>,
    pub connected_to: Vec<ConnectedMaster>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MasterRecord {
    pub masterid: i64,
    pub name: String,
    pub active: bool,
    pub last_active: i64,
}

/// A build as far as this store knows it (steps come with builds running).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildRecord {
    pub buildid: i64,
    pub number: i64,
    pub builderid: i64,
    pub buildrequestid: i64,
    pub workerid: Option<i64>,
    pub masterid: i64,
    pub started_at: i64,
    pub complete_at: Option<i64>,
    pub complete: bool,
    /// Time spent waiting for locks; Cascade has none.
    pub locks_duration_s: i64,
    pub state_string: String,
    pub results: Option<i64>,
}

pub(crate) fn get<'r, T>(row: &'r AnyRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(col).map_err(StoreError::from)
}

pub(crate) fn json_or_null(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

pub(crate) fn sourcestamp_from(row: &AnyRow) -> Result<SourceStampRecord> {
    Ok(SourceStampRecord {
        ssid: get(row, "ss_id")?,
        branch: get(row, "ss_branch")?,
        revision: get(row, "ss_revision")?,
        project: get(row, "ss_project")?,
        repository: get(row, "ss_repository")?,
        codebase: get(row, "ss_codebase")?,
        created_at: get(row, "ss_created_at")?,
        patch: None,
    })
}

/// Columns that [`sourcestamp_from`] reads, for a table aliased `ss`.
pub(crate) const SOURCESTAMP_COLUMNS: &str = "ss.id AS ss_id, ss.branch AS ss_branch, ss.revision AS ss_revision, \
     ss.project AS ss_project, ss.repository AS ss_repository, ss.codebase AS ss_codebase, \
     ss.created_at AS ss_created_at";

/// Columns that [`build_from`] reads, for a table aliased `b`.
pub(crate) const BUILD_COLUMNS: &str = "b.id, b.number, b.builder_id, b.build_request_id, b.worker_id, b.master_id, \
     b.started_at, b.complete_at, b.state_string, b.results";

pub(crate) fn build_from(r: &AnyRow) -> Result<BuildRecord> {
    let complete_at: Option<i64> = get(r, "complete_at")?;
    Ok(BuildRecord {
        buildid: get(r, "id")?,
        number: get(r, "number")?,
        builderid: get(r, "builder_id")?,
        buildrequestid: get(r, "build_request_id")?,
        workerid: get(r, "worker_id")?,
        masterid: get(r, "master_id")?,
        started_at: get(r, "started_at")?,
        complete_at,
        complete: complete_at.is_some(),
        locks_duration_s: 0,
        state_string: get(r, "state_string")?,
        results: get(r, "results")?,
    })
}
