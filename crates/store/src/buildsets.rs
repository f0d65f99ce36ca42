//! Buildsets: one per scheduler firing, with one build request per builder.

use std::collections::BTreeMap;

use cascade_model::Event;
use serde_json::Value;
use sqlx::{Any, AssertSqlSafe, Transaction};

use crate::changes::{StampKey, placeholders, sourcestamp_id};
use crate::events::record;
use crate::query::{Bind, FieldType, ListQuery, Page, bind_all, field};
use crate::records::{BuildsetRecord, SOURCESTAMP_COLUMNS, SourceStampRecord, get, sourcestamp_from};
use crate::{Result, Store};

/// What a buildset builds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewSourceStamp {
    /// The repository's URL.
    pub repository: String,
    /// The git branch name, if any.
    pub branch: Option<String>,
    /// `None`: the branch's tip when the build starts.
    pub revision: Option<String>,
    /// The repository's `owner/name`.
    pub project: String,
    /// Buildbot's codebase; empty, as there is one repository.
    pub codebase: String,
}

/// A buildset to create, with one request per builder.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewBuildset {
    /// Why it is made (which scheduler fired, who forced it).
    pub reason: String,
    /// The scheduler that made it; `None` for forced builds and rebuilds.
    pub scheduler_id: Option<i64>,
    /// Buildbot's free-form external id, if any.
    pub external_idstring: Option<String>,
    /// What to build.
    pub sourcestamp: NewSourceStamp,
    /// The changes it is built for: the blamelist.
    pub change_ids: Vec<i64>,
    /// Property name -> (value, source), as Buildbot.
    pub properties: BTreeMap<String, (Value, String)>,
    /// The builders to request a build on, one request each.
    pub builder_ids: Vec<i64>,
    /// The requests' priority; higher runs first.
    pub priority: i64,
    /// Build exactly `sourcestamp.revision` even with changes behind it (a
    /// rebuild): the request then merges only with its like.
    pub pin_revision: bool,
    /// The build this buildset repeats (a rebuild), as Buildbot's `rebuilt_buildid`.
    pub rebuilt_build_id: Option<i64>,
    /// A `try` job's diff, applied after the checkout; its requests never merge.
    pub patch: Option<Patch>,
}

/// A diff a `try` job builds on top of its revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Patch {
    /// `-p` for `git apply`.
    pub level: i64,
    /// The diff.
    pub body: String,
    /// Who sent it.
    pub author: String,
    /// What they said of it.
    pub comment: String,
}

impl Patch {
    /// Names the diff in its source stamp's key.
    fn digest(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.level.to_le_bytes());
        h.update(self.body.as_bytes());
        hex::encode(h.finalize())
    }
}

/// What `/buildsets` reads.
pub(crate) fn buildset_listing() -> crate::query::Listing {
    crate::query::Listing {
        fields: BUILDSET_FIELDS,
        select: "b.id, b.external_idstring, b.reason, b.submitted_at, b.complete, b.complete_at, b.results, \
                 b.parent_build_id, b.parent_relationship, b.rebuilt_build_id"
            .to_string(),
        from: "buildsets b",
        id: "b.id",
        with_id: &[],
    }
}

const BUILDSET_FIELDS: &[crate::query::Field] = &[
    field("bsid", "b.id", FieldType::Int),
    field("complete", "b.complete", FieldType::Flag),
    field("submitted_at", "b.submitted_at", FieldType::Int),
    field("complete_at", "b.complete_at", FieldType::Int),
    field("results", "b.results", FieldType::Int),
    field("reason", "b.reason", FieldType::Text),
    field("external_idstring", "b.external_idstring", FieldType::Text),
    field("parent_buildid", "b.parent_build_id", FieldType::Int),
    field("rebuilt_buildid", "b.rebuilt_build_id", FieldType::Int),
];

/// One request per builder of the buildset; returns their ids.
async fn insert_requests(
    tx: &mut Transaction<'static, Any>,
    bs: &NewBuildset,
    bsid: i64,
    pinned: Option<String>,
    now: i64,
) -> Result<Vec<i64>> {
    let ss = &bs.sourcestamp;
    let mut request_ids = Vec::with_capacity(bs.builder_ids.len());
    for chunk in bs.builder_ids.chunks(200) {
        let values: Vec<String> =
            (0..chunk.len()).map(|i| format!("($1, $2, $3, $4, $5, $6, $7, ${}, 0, -1, 0)", i + 8)).collect();
        let sql = format!(
            "INSERT INTO buildrequests (buildset_id, priority, repository, branch, pinned_revision, submitted_at, \
             patched, builder_id, complete, results, waited_for) VALUES {} RETURNING id",
            values.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(bsid)
            .bind(bs.priority)
            .bind(ss.repository.clone())
            .bind(ss.branch.clone())
            .bind(pinned.clone())
            .bind(now)
            .bind(i64::from(bs.patch.is_some()));
        for id in chunk {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut **tx).await? {
            request_ids.push(get(&row, "id")?);
        }
    }
    Ok(request_ids)
}

/// Inserts a buildset with its source stamp, changes, properties and one
/// request per builder, inside the caller's transaction.
pub(crate) async fn insert_buildset(
    tx: &mut Transaction<'static, Any>,
    bs: &NewBuildset,
    now: i64,
) -> Result<(i64, Vec<i64>)> {
    let ss = &bs.sourcestamp;
    let digest = bs.patch.as_ref().map(Patch::digest);
    let key = StampKey {
        codebase: &ss.codebase,
        repository: &ss.repository,
        branch: ss.branch.as_deref(),
        revision: ss.revision.as_deref(),
        project: &ss.project,
        patch: digest.as_deref(),
    };
    let ssid = sourcestamp_id(tx, &key, now).await?;
    if let Some(patch) = &bs.patch {
        set_patch(tx, ssid, patch).await?;
    }
    let row = sqlx::query(
        "INSERT INTO buildsets (external_idstring, reason, scheduler_id, submitted_at, complete, rebuilt_build_id) \
         VALUES ($1, $2, $3, $4, 0, $5) RETURNING id",
    )
    .bind(bs.external_idstring.clone())
    .bind(bs.reason.clone())
    .bind(bs.scheduler_id)
    .bind(now)
    .bind(bs.rebuilt_build_id)
    .fetch_one(&mut **tx)
    .await?;
    let bsid: i64 = get(&row, "id")?;
    sqlx::query("INSERT INTO buildset_sourcestamps (buildset_id, sourcestamp_id) VALUES ($1, $2)")
        .bind(bsid)
        .bind(ssid)
        .execute(&mut **tx)
        .await?;
    for chunk in bs.change_ids.chunks(400) {
        let values: Vec<String> = (0..chunk.len()).map(|i| format!("($1, ${})", i + 2)).collect();
        let sql = format!("INSERT INTO buildset_changes (buildset_id, change_id) VALUES {}", values.join(", "));
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(bsid);
        for id in chunk {
            q = q.bind(*id);
        }
        q.execute(&mut **tx).await?;
    }
    for (name, value) in &bs.properties {
        sqlx::query("INSERT INTO buildset_properties (buildset_id, name, value) VALUES ($1, $2, $3)")
            .bind(bsid)
            .bind(name.clone())
            .bind(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
            .execute(&mut **tx)
            .await?;
    }
    // A revision asked for with no changes behind it is pinned: the request
    // must build exactly that commit, so it only merges with its like.
    let pinned = if bs.change_ids.is_empty() || bs.pin_revision { ss.revision.clone() } else { None };
    let mut request_ids = insert_requests(tx, bs, bsid, pinned, now).await?;
    request_ids.sort_unstable();
    let event = Event::BuildRequested {
        buildset_id: bsid,
        builder_ids: bs.builder_ids.clone(),
        request_ids: request_ids.clone(),
    };
    record(tx, &event, now).await?;
    Ok((bsid, request_ids))
}

/// Puts a try job's diff on its source stamp (a stamp of its own: the
/// stamp's key names the diff).
async fn set_patch(tx: &mut Transaction<'static, Any>, ssid: i64, patch: &Patch) -> Result<()> {
    sqlx::query(
        "UPDATE sourcestamps SET patch_level = $1, patch_body = $2, patch_author = $3, patch_comment = $4 WHERE id = $5",
    )
    .bind(patch.level)
    .bind(patch.body.clone())
    .bind(patch.author.clone())
    .bind(patch.comment.clone())
    .bind(ssid)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Creates a buildset outside any scheduler firing (forced builds, rebuilds).
    pub async fn create_buildset(&self, bs: &NewBuildset, now: i64) -> Result<(i64, Vec<i64>)> {
        let mut tx = self.begin_write().await?;
        let created = insert_buildset(&mut tx, bs, now).await?;
        tx.commit().await?;
        self.events_committed();
        Ok(created)
    }

    /// One buildset, by id.
    pub async fn get_buildset(&self, bsid: i64) -> Result<Option<BuildsetRecord>> {
        Ok(self.list_buildsets(&ListQuery::default().eq("bsid", bsid)).await?.items.into_iter().next())
    }

    /// Lists buildsets (Buildbot's `/buildsets`) with their source stamps.
    pub async fn list_buildsets(&self, q: &ListQuery) -> Result<Page<BuildsetRecord>> {
        let (rows, total) = crate::query::list_page(&self.pool, self.backend(), &buildset_listing(), q).await?;
        let ids: Vec<i64> = rows.iter().map(|r| get(r, "id")).collect::<Result<_>>()?;
        let mut stamps: BTreeMap<i64, Vec<SourceStampRecord>> = BTreeMap::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT bss.buildset_id, {SOURCESTAMP_COLUMNS} FROM buildset_sourcestamps bss \
                 JOIN sourcestamps ss ON ss.id = bss.sourcestamp_id WHERE bss.buildset_id IN ({})",
                placeholders(1, chunk.len())
            );
            let binds: Vec<Bind> = chunk.iter().map(|&i| Bind::Int(i)).collect();
            for row in bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).fetch_all(&self.pool).await? {
                stamps.entry(get(&row, "buildset_id")?).or_default().push(sourcestamp_from(&row)?);
            }
        }
        let items = rows
            .iter()
            .map(|r| {
                let bsid: i64 = get(r, "id")?;
                Ok(BuildsetRecord {
                    bsid,
                    external_idstring: get(r, "external_idstring")?,
                    reason: get(r, "reason")?,
                    submitted_at: get(r, "submitted_at")?,
                    complete: get::<i64>(r, "complete")? != 0,
                    complete_at: get(r, "complete_at")?,
                    results: get(r, "results")?,
                    sourcestamps: stamps.remove(&bsid).unwrap_or_default(),
                    rebuilt_buildid: get(r, "rebuilt_build_id")?,
                    parent_buildid: get(r, "parent_build_id")?,
                    parent_relationship: get(r, "parent_relationship")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    /// Buildset properties as `name -> [value, source]`.
    pub async fn buildset_properties(&self, bsid: i64) -> Result<BTreeMap<String, Value>> {
        let rows = sqlx::query("SELECT name, value FROM buildset_properties WHERE buildset_id = $1")
            .bind(bsid)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((get::<String>(r, "name")?, crate::records::json_or_null(&get::<String>(r, "value")?))))
            .collect()
    }
}
