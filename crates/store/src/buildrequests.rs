//! Build requests: listing, the atomic claim that starts a build (merging
//! every compatible pending request into it), and cancellation.

use cascade_model::{Event, PendingRequest, Results, plan_claim};
use sqlx::{AnyConnection, AssertSqlSafe};

use crate::changes::placeholders;
use crate::events::record;
use crate::query::{FieldType, ListQuery, Page, field};
use crate::records::{
    BUILD_COLUMNS, BuildRecord, BuildRequestRecord, SOURCESTAMP_COLUMNS, SourceStampRecord, build_from, get,
    sourcestamp_from,
};
use crate::{Result, Store, StoreError};

const BUILD_FIELDS: &[crate::query::Field] = &[
    field("buildid", "b.id", FieldType::Int),
    field("number", "b.number", FieldType::Int),
    field("builderid", "b.builder_id", FieldType::Int),
    field("buildrequestid", "b.build_request_id", FieldType::Int),
    field("workerid", "b.worker_id", FieldType::Int),
    field("masterid", "b.master_id", FieldType::Int),
    field("started_at", "b.started_at", FieldType::Int),
    field("complete_at", "b.complete_at", FieldType::Int),
    field("complete", "b.complete_at", FieldType::Present),
    field("results", "b.results", FieldType::Int),
    field("state_string", "b.state_string", FieldType::Text),
];

const REQUEST_FIELDS: &[crate::query::Field] = &[
    field("buildrequestid", "r.id", FieldType::Int),
    field("buildsetid", "r.buildset_id", FieldType::Int),
    field("builderid", "r.builder_id", FieldType::Int),
    field("priority", "r.priority", FieldType::Int),
    field("complete", "r.complete", FieldType::Flag),
    field("claimed", "r.claimed_by_master_id", FieldType::Present),
    field("claimed_by_masterid", "r.claimed_by_master_id", FieldType::Int),
    field("results", "r.results", FieldType::Int),
    field("submitted_at", "r.submitted_at", FieldType::Int),
    field("complete_at", "r.complete_at", FieldType::Int),
    field("claimed_at", "r.claimed_at", FieldType::Int),
    field("waited_for", "r.waited_for", FieldType::Flag),
];

/// A build just started by a claim.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedBuild {
    /// The new build's id.
    pub build_id: i64,
    /// Its number on the builder.
    pub number: i64,
    /// The builder it runs on.
    pub builder_id: i64,
    /// The request taken; the build's `buildrequestid`.
    pub build_request_id: i64,
    /// Every request the build covers, ascending (includes the taken one).
    pub covered: Vec<i64>,
    /// What the build runs: the newest covered request's source stamp.
    pub source: SourceStampRecord,
}

/// The builder's unclaimed, incomplete requests.
async fn pending_requests(conn: &mut AnyConnection, builder_id: i64) -> Result<Vec<PendingRequest>> {
    let rows = sqlx::query(
        "SELECT id, builder_id, repository, branch, pinned_revision, priority, patched FROM buildrequests \
         WHERE builder_id = $1 AND complete = 0 AND claimed_by_master_id IS NULL",
    )
    .bind(builder_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PendingRequest {
                id: get(r, "id")?,
                builder_id: get(r, "builder_id")?,
                repository: get(r, "repository")?,
                branch: get(r, "branch")?,
                pinned_revision: get(r, "pinned_revision")?,
                priority: get(r, "priority")?,
                patched: get::<i64>(r, "patched")? != 0,
            })
        })
        .collect()
}

/// Claims every request in `ids` for `master_id`; false if another master
/// took one of them first.
async fn mark_claimed(conn: &mut AnyConnection, ids: &[i64], master_id: i64, now: i64) -> Result<bool> {
    let list = placeholders(3, ids.len());
    let mut q = sqlx::query(AssertSqlSafe(format!(
        "UPDATE buildrequests SET claimed_by_master_id = $1, claimed_at = $2 \
         WHERE id IN ({list}) AND complete = 0 AND claimed_by_master_id IS NULL"
    )))
    .bind(master_id)
    .bind(now);
    for id in ids {
        q = q.bind(*id);
    }
    Ok(q.execute(conn).await?.rows_affected() == ids.len() as u64)
}

/// The builder's next build, numbered after its last; returns (id, number).
async fn insert_build(
    conn: &mut AnyConnection,
    builder_id: i64,
    request_id: i64,
    worker_id: Option<i64>,
    master_id: i64,
    now: i64,
) -> Result<(i64, i64)> {
    let row = sqlx::query("SELECT COALESCE(MAX(number), 0) + 1 AS next FROM builds WHERE builder_id = $1")
        .bind(builder_id)
        .fetch_one(&mut *conn)
        .await?;
    let number: i64 = get(&row, "next")?;
    let row = sqlx::query(
        "INSERT INTO builds (number, builder_id, build_request_id, worker_id, master_id, started_at, state_string) \
         VALUES ($1, $2, $3, $4, $5, $6, 'created') RETURNING id",
    )
    .bind(number)
    .bind(builder_id)
    .bind(request_id)
    .bind(worker_id)
    .bind(master_id)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    let id: i64 = get(&row, "id")?;
    // The builder's newest build, kept as data in the same transaction.
    sqlx::query(
        "INSERT INTO builder_latest (builder_id, build_id, number) VALUES ($1, $2, $3) \
         ON CONFLICT (builder_id) DO UPDATE SET build_id = excluded.build_id, number = excluded.number \
         WHERE excluded.number > builder_latest.number",
    )
    .bind(builder_id)
    .bind(id)
    .bind(number)
    .execute(conn)
    .await?;
    Ok((id, number))
}

/// Points every covered request at the build; all but the taken one are
/// merged into it.
async fn link_requests(conn: &mut AnyConnection, ids: &[i64], build_id: i64, taken: i64) -> Result<()> {
    let list = placeholders(3, ids.len());
    let mut q = sqlx::query(AssertSqlSafe(format!(
        "UPDATE buildrequests SET build_id = $1, merged_into = CASE WHEN id = $2 THEN NULL ELSE $2 END \
         WHERE id IN ({list})"
    )))
    .bind(build_id)
    .bind(taken);
    for id in ids {
        q = q.bind(*id);
    }
    q.execute(conn).await?;
    Ok(())
}

/// What `/builds` reads.
pub(crate) fn build_listing() -> crate::query::Listing {
    crate::query::Listing {
        fields: BUILD_FIELDS,
        select: BUILD_COLUMNS.to_string(),
        from: "builds b",
        id: "b.id",
        with_id: &["builderid", "workerid"],
    }
}

/// What `/buildrequests` reads.
pub(crate) fn request_listing() -> crate::query::Listing {
    crate::query::Listing {
        fields: REQUEST_FIELDS,
        select: "r.id, r.buildset_id, r.builder_id, r.priority, r.claimed_by_master_id, r.claimed_at, r.complete, \
                 r.results, r.submitted_at, r.complete_at, r.waited_for"
            .to_string(),
        from: "buildrequests r",
        id: "r.id",
        with_id: &["builderid", "buildsetid"],
    }
}

/// How often a claim is retried when another master wins a race for the
/// same rows; each retry sees the other's commit.
const CLAIM_ATTEMPTS: usize = 8;

impl Store {
    /// Lists build requests (Buildbot's `/buildrequests`).
    pub async fn list_buildrequests(&self, q: &ListQuery) -> Result<Page<BuildRequestRecord>> {
        let (rows, total) = crate::query::list_page(&self.pool, self.backend(), &request_listing(), q).await?;
        let items = rows
            .iter()
            .map(|r| {
                let master: Option<i64> = get(r, "claimed_by_master_id")?;
                Ok(BuildRequestRecord {
                    buildrequestid: get(r, "id")?,
                    buildsetid: get(r, "buildset_id")?,
                    builderid: get(r, "builder_id")?,
                    priority: get(r, "priority")?,
                    claimed: master.is_some(),
                    claimed_at: get(r, "claimed_at")?,
                    claimed_by_masterid: master,
                    complete: get::<i64>(r, "complete")? != 0,
                    results: get(r, "results")?,
                    submitted_at: get(r, "submitted_at")?,
                    complete_at: get(r, "complete_at")?,
                    waited_for: get::<i64>(r, "waited_for")? != 0,
                    properties: None,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    /// One build request, by id.
    pub async fn get_buildrequest(&self, id: i64) -> Result<Option<BuildRequestRecord>> {
        Ok(self.list_buildrequests(&ListQuery::default().eq("buildrequestid", id)).await?.items.into_iter().next())
    }

    /// Takes the next request for `builder_id` and every pending request
    /// that merges with it, and starts one build covering them all. Safe
    /// against other masters claiming at the same time: a request is
    /// claimed by exactly one build.
    pub async fn claim_build(
        &self,
        builder_id: i64,
        master_id: i64,
        worker_id: Option<i64>,
        now: i64,
    ) -> Result<Option<ClaimedBuild>> {
        for _ in 0..CLAIM_ATTEMPTS {
            match self.try_claim(builder_id, master_id, worker_id, now).await {
                Ok(Attempt::Claimed(b)) => return Ok(Some(*b)),
                Ok(Attempt::Nothing) => return Ok(None),
                Ok(Attempt::Raced) => continue,
                Err(e) if e.is_unique_violation() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Corrupt(format!(
            "could not claim a request for builder {builder_id} after {CLAIM_ATTEMPTS} attempts"
        )))
    }

    async fn try_claim(&self, builder_id: i64, master_id: i64, worker_id: Option<i64>, now: i64) -> Result<Attempt> {
        let mut tx = self.begin_write().await?;
        let pending = pending_requests(&mut tx, builder_id).await?;
        let Some(claim) = plan_claim(&pending, builder_id) else {
            tx.rollback().await?;
            return Ok(Attempt::Nothing);
        };
        let covered = claim.all();
        if !mark_claimed(&mut tx, &covered, master_id, now).await? {
            tx.rollback().await?;
            return Ok(Attempt::Raced);
        }
        let (build_id, number) = insert_build(&mut tx, builder_id, claim.taken, worker_id, master_id, now).await?;
        link_requests(&mut tx, &covered, build_id, claim.taken).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SOURCESTAMP_COLUMNS} FROM buildrequests r \
             JOIN buildset_sourcestamps bss ON bss.buildset_id = r.buildset_id \
             JOIN sourcestamps ss ON ss.id = bss.sourcestamp_id WHERE r.id = $1"
        )))
        .bind(claim.source)
        .fetch_one(&mut *tx)
        .await?;
        let source = sourcestamp_from(&row)?;
        let event = Event::BuildStarted { build_id, builder_id, number, worker_id, master_id };
        record(&mut tx, &event, now).await?;
        tx.commit().await?;
        self.events_committed();
        Ok(Attempt::Claimed(Box::new(ClaimedBuild {
            build_id,
            number,
            builder_id,
            build_request_id: claim.taken,
            covered,
            source,
        })))
    }

    /// One build, by id.
    pub async fn get_build(&self, build_id: i64) -> Result<Option<BuildRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {BUILD_COLUMNS} FROM builds b WHERE b.id = $1")))
            .bind(build_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(build_from).transpose()
    }

    /// Lists builds (Buildbot's `/builds`).
    pub async fn list_builds(&self, q: &ListQuery) -> Result<Page<BuildRecord>> {
        let (rows, total) = crate::query::list_page(&self.pool, self.backend(), &build_listing(), q).await?;
        Ok(Page { items: rows.iter().map(build_from).collect::<Result<_>>()?, total })
    }

    /// The newest builds, with their builder's name, newest first.
    pub async fn recent_builds(&self, limit: i64) -> Result<Vec<(String, BuildRecord)>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {BUILD_COLUMNS}, bl.name AS builder_name FROM builds b \
             JOIN builders bl ON bl.id = b.builder_id ORDER BY b.id DESC LIMIT $1"
        )))
        .bind(limit.clamp(0, 1000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((get(r, "builder_name")?, build_from(r)?))).collect()
    }

    /// The requests a build covers, ascending.
    pub async fn build_request_ids(&self, build_id: i64) -> Result<Vec<i64>> {
        let rows = sqlx::query("SELECT id FROM buildrequests WHERE build_id = $1 ORDER BY id")
            .bind(build_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| get(r, "id")).collect()
    }
}

/// What cancelling one build request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// It is cancelled (results CANCELLED).
    Done,
    /// A build has it: stop the build instead.
    Claimed,
    /// It was complete already; nothing changed.
    AlreadyComplete,
    /// There is no such request.
    NotFound,
}

impl Store {
    /// Cancels one request that no build has taken yet (results CANCELLED),
    /// completing its buildset if nothing else of it is left.
    pub async fn cancel_buildrequest(&self, id: i64, now: i64) -> Result<Cancelled> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE buildrequests SET complete = 1, complete_at = $1, results = $2 \
             WHERE id = $3 AND complete = 0 AND claimed_by_master_id IS NULL RETURNING buildset_id, builder_id",
        )
        .bind(now)
        .bind(Results::Cancelled.code())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(match self.get_buildrequest(id).await? {
                None => Cancelled::NotFound,
                Some(r) if r.complete => Cancelled::AlreadyComplete,
                Some(_) => Cancelled::Claimed,
            });
        };
        let bsid: i64 = get(&row, "buildset_id")?;
        complete_buildset_if_done(&mut tx, bsid, now).await?;
        let event =
            Event::BuildRequestsCancelled { request_ids: vec![id], builder_ids: vec![get(&row, "builder_id")?] };
        record(&mut tx, &event, now).await?;
        tx.commit().await?;
        self.events_committed();
        Ok(Cancelled::Done)
    }
}

/// Completes a buildset whose requests are all complete; its result is the
/// worst of theirs.
pub(crate) async fn complete_buildset_if_done(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    bsid: i64,
    now: i64,
) -> Result<()> {
    let open: i64 = get(
        &sqlx::query("SELECT COUNT(*) AS n FROM buildrequests WHERE buildset_id = $1 AND complete = 0")
            .bind(bsid)
            .fetch_one(&mut **tx)
            .await?,
        "n",
    )?;
    if open > 0 {
        return Ok(());
    }
    let rows =
        sqlx::query("SELECT results FROM buildrequests WHERE buildset_id = $1").bind(bsid).fetch_all(&mut **tx).await?;
    let mut worst = Results::Success;
    for r in &rows {
        let code: i64 = get(r, "results")?;
        if let Some(res) = Results::from_code(code) {
            worst = worst.worst(res);
        }
    }
    sqlx::query("UPDATE buildsets SET complete = 1, complete_at = $1, results = $2 WHERE id = $3 AND complete = 0")
        .bind(now)
        .bind(worst.code())
        .bind(bsid)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Cancels the unclaimed requests for a branch and completes buildsets left
/// with nothing to do, inside the caller's transaction.
pub(crate) async fn cancel_pending_for_branch(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    repository: &str,
    branch: &str,
    now: i64,
) -> Result<u64> {
    let cancelled = sqlx::query(
        "UPDATE buildrequests SET complete = 1, complete_at = $1, results = $2 \
         WHERE complete = 0 AND claimed_by_master_id IS NULL AND branch = $3 AND repository = $4 \
         RETURNING id, buildset_id, builder_id",
    )
    .bind(now)
    .bind(Results::Cancelled.code())
    .bind(branch.to_string())
    .bind(repository.to_string())
    .fetch_all(&mut **tx)
    .await?;
    let mut buildsets: Vec<i64> = cancelled.iter().map(|r| get(r, "buildset_id")).collect::<Result<_>>()?;
    buildsets.sort_unstable();
    buildsets.dedup();
    for bsid in &buildsets {
        // Cancelled ranks worst of all results, so it is the buildset's result.
        sqlx::query(
            "UPDATE buildsets SET complete = 1, complete_at = $1, results = $2 WHERE id = $3 AND complete = 0 \
             AND NOT EXISTS (SELECT 1 FROM buildrequests r WHERE r.buildset_id = $3 AND r.complete = 0)",
        )
        .bind(now)
        .bind(Results::Cancelled.code())
        .bind(*bsid)
        .execute(&mut **tx)
        .await?;
    }
    if !cancelled.is_empty() {
        let mut pairs: Vec<(i64, i64)> =
            cancelled.iter().map(|r| Ok((get(r, "id")?, get(r, "builder_id")?))).collect::<Result<_>>()?;
        pairs.sort_unstable();
        let (request_ids, builder_ids) = pairs.into_iter().unzip();
        record(tx, &Event::BuildRequestsCancelled { request_ids, builder_ids }, now).await?;
    }
    Ok(cancelled.len() as u64)
}

enum Attempt {
    Claimed(Box<ClaimedBuild>),
    Nothing,
    Raced,
}
