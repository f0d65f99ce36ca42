//! What the store hands back, shaped as Buildbot's Data API v2 objects
//! (same field names and types), so the REST layer serializes them as is.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, StoreError};

/// A source stamp: what to build (repository, branch, revision), shared by changes and buildsets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStampRecord {
    /// The source stamp's id.
    pub ssid: i64,
    /// The git branch name, if any.
    pub branch: Option<String>,
    /// The commit sha; `None` means the branch's tip when the build starts.
    pub revision: Option<String>,
    /// The repository's `owner/name`.
    pub project: String,
    /// The repository's URL.
    pub repository: String,
    /// Buildbot's codebase; empty, as there is one repository.
    pub codebase: String,
    /// When the stamp was first stored, Unix seconds.
    pub created_at: i64,
    /// The diff a `try` job applies on top of the revision (Buildbot's patch).
    pub patch: Option<PatchRecord>,
}

/// A diff to apply after the checkout, as `buildbot try` sent it; shaped as
/// Buildbot's `sourcestamp.patch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatchRecord {
    /// Buildbot's patch id: here the source stamp's.
    pub patchid: i64,
    /// `-p` for `git apply`.
    pub level: i64,
    /// The diff.
    pub body: String,
    /// Always `None`: `buildbot try` cannot ask for a subfolder.
    pub subdir: Option<String>,
    /// Who sent it.
    pub author: String,
    /// What they said of it.
    pub comment: String,
}

/// A change (Buildbot's `/changes`): one commit as a change source reported it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeRecord {
    /// The change's id.
    pub changeid: i64,
    /// `Name <email>` of the commit's author.
    pub author: String,
    /// `Name <email>` of the committer, when known.
    pub committer: Option<String>,
    /// The commit message.
    pub comments: String,
    /// The git branch name, if any.
    pub branch: Option<String>,
    /// The commit sha, if any.
    pub revision: Option<String>,
    /// A link to the commit.
    pub revlink: Option<String>,
    /// When the commit was made, Unix seconds.
    pub when_timestamp: i64,
    /// `tag` for a pushed tag; `None` for a branch.
    pub category: Option<String>,
    /// The repository's URL.
    pub repository: String,
    /// Buildbot's codebase; empty, as there is one repository.
    pub codebase: String,
    /// The repository's `owner/name`.
    pub project: String,
    /// Paths the commit touched, sorted.
    pub files: Vec<String>,
    /// `name -> [value, source]`, as Buildbot.
    pub properties: BTreeMap<String, (Value, String)>,
    /// The previous change of the same push and branch, if any (at most one).
    pub parent_changeids: Vec<i64>,
    /// The change's source stamp.
    pub sourcestamp: SourceStampRecord,
}

/// A buildset (Buildbot's `/buildsets`): one request to build a source stamp on some builders.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildsetRecord {
    /// The buildset's id.
    pub bsid: i64,
    /// Buildbot's free-form external id, if the submitter gave one.
    pub external_idstring: Option<String>,
    /// Why it was made (which scheduler fired, who forced it).
    pub reason: String,
    /// When it was made, Unix seconds.
    pub submitted_at: i64,
    /// Whether every one of its requests is complete.
    pub complete: bool,
    /// When it completed, Unix seconds.
    pub complete_at: Option<i64>,
    /// Buildbot's result code; `None` until complete.
    pub results: Option<i64>,
    /// What it builds (one stamp here).
    pub sourcestamps: Vec<SourceStampRecord>,
    /// The build this buildset repeats, for a rebuild.
    pub rebuilt_buildid: Option<i64>,
    /// Buildbot's triggering build, if any.
    pub parent_buildid: Option<i64>,
    /// Buildbot's relationship to the triggering build, if any.
    pub parent_relationship: Option<String>,
}

/// A build request (Buildbot's `/buildrequests`): one builder's share of a buildset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildRequestRecord {
    /// The request's id.
    pub buildrequestid: i64,
    /// The buildset it belongs to.
    pub buildsetid: i64,
    /// The builder it waits for.
    pub builderid: i64,
    /// Higher runs first.
    pub priority: i64,
    /// Whether a master has taken it.
    pub claimed: bool,
    /// When it was claimed, Unix seconds.
    pub claimed_at: Option<i64>,
    /// The master that claimed it.
    pub claimed_by_masterid: Option<i64>,
    /// Whether it is done: built (or merged into a build) or cancelled.
    pub complete: bool,
    /// -1 until complete, as Buildbot.
    pub results: i64,
    /// When it was submitted, Unix seconds.
    pub submitted_at: i64,
    /// When it completed, Unix seconds.
    pub complete_at: Option<i64>,
    /// Buildbot's flag for a submitter waiting on the result; nothing waits here.
    pub waited_for: bool,
    /// Buildbot's request properties; always `None` here.
    pub properties: Option<Value>,
}

/// A builder (Buildbot's `/builders`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuilderRecord {
    /// The builder's id.
    pub builderid: i64,
    /// The builder's name, unique.
    pub name: String,
    /// Active masters running it; empty once it is no longer configured.
    pub masterids: Vec<i64>,
    /// Its configured description.
    pub description: Option<String>,
    /// Buildbot's description markup format; always `None` here.
    pub description_format: Option<String>,
    /// Buildbot's description rendered as HTML; always `None` here.
    pub description_html: Option<String>,
    /// Buildbot's project id; always `None` here.
    pub projectid: Option<i64>,
    /// Its configured tags.
    pub tags: Vec<String>,
}

/// A builder a worker serves, on one master.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuilderMaster {
    /// The builder's id.
    pub builderid: i64,
    /// The master's id.
    pub masterid: i64,
}

/// A master a worker is connected to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectedMaster {
    /// The master's id.
    pub masterid: i64,
}

/// A worker (Buildbot's `/workers`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRecord {
    /// The worker's id.
    pub workerid: i64,
    /// The worker's name, unique.
    pub name: String,
    /// What the worker said about itself at its last connection (no `environ`); `{}` before.
    pub workerinfo: Value,
    /// Paused: it gets no new builds.
    pub paused: bool,
    /// Why it was paused, if given.
    pub pause_reason: Option<String>,
    /// Shutting down once idle.
    pub graceful: bool,
    /// Every (builder, active master) it is configured for.
    pub configured_on: Vec<BuilderMaster>,
    /// The masters it is connected to now.
    pub connected_to: Vec<ConnectedMaster>,
    /// When its last connection ended, Unix seconds (Cascade's; the API
    /// answers it under `cascade_info`).
    pub disconnected_at: Option<i64>,
}

/// A master (Buildbot's `/masters`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MasterRecord {
    /// The master's id.
    pub masterid: i64,
    /// The master's name, unique.
    pub name: String,
    /// Running, as far as its heartbeat says.
    pub active: bool,
    /// Its last heartbeat, Unix seconds.
    pub last_active: i64,
}

/// A build as far as this store knows it (steps come with builds running).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildRecord {
    /// The build's id.
    pub buildid: i64,
    /// The build's number on its builder, from 1.
    pub number: i64,
    /// The builder it ran on.
    pub builderid: i64,
    /// The request it was claimed for (others may be merged into it).
    pub buildrequestid: i64,
    /// The worker it runs on, if the claim named one.
    pub workerid: Option<i64>,
    /// The master that runs it.
    pub masterid: i64,
    /// When it started, Unix seconds.
    pub started_at: i64,
    /// When it finished, Unix seconds.
    pub complete_at: Option<i64>,
    /// Whether it has finished.
    pub complete: bool,
    /// Time spent waiting for locks; Cascade has none.
    pub locks_duration_s: i64,
    /// A short status line (`created`, `building`, ...), as Buildbot shows it.
    pub state_string: String,
    /// Buildbot's result code; `None` while running.
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
        patch: patch_from(row)?,
    })
}

fn patch_from(row: &AnyRow) -> Result<Option<PatchRecord>> {
    let Some(level) = get::<Option<i64>>(row, "ss_patch_level")? else { return Ok(None) };
    Ok(Some(PatchRecord {
        patchid: get(row, "ss_id")?,
        level,
        body: get::<Option<String>>(row, "ss_patch_body")?.unwrap_or_default(),
        subdir: None,
        author: get::<Option<String>>(row, "ss_patch_author")?.unwrap_or_default(),
        comment: get::<Option<String>>(row, "ss_patch_comment")?.unwrap_or_default(),
    }))
}

/// Columns that [`sourcestamp_from`] reads, for a table aliased `ss`.
pub(crate) const SOURCESTAMP_COLUMNS: &str = "ss.id AS ss_id, ss.branch AS ss_branch, ss.revision AS ss_revision, \
     ss.project AS ss_project, ss.repository AS ss_repository, ss.codebase AS ss_codebase, \
     ss.created_at AS ss_created_at, ss.patch_level AS ss_patch_level, ss.patch_body AS ss_patch_body, \
     ss.patch_author AS ss_patch_author, ss.patch_comment AS ss_patch_comment";

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
