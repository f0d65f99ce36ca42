//! Reads for the pages: each answers from indexes, whatever the history's
//! depth (a builder's builds by `(builder_id, number)`, a change's builds
//! through `buildset_changes (change_id)` and `buildrequests (buildset_id)`).

use sqlx::AssertSqlSafe;

use crate::builds::{STEP_COLUMNS, StepRecord, step_from};
use crate::records::{BUILD_COLUMNS, BuildRecord, build_from, get};
use crate::{Backend, Result, Store};

/// What a console cell knows: one build request for a change, and the build
/// that took it (if one has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleCell {
    /// The change.
    pub change_id: i64,
    /// The builder the request is for.
    pub builder_id: i64,
    /// Whether the request is complete.
    pub request_complete: bool,
    /// The request's result code; -1 until complete, as Buildbot.
    pub request_results: i64,
    /// Whether a master has claimed the request.
    pub claimed: bool,
    /// The build that took the request, if one has.
    pub build_id: Option<i64>,
    /// That build's number on its builder.
    pub number: Option<i64>,
    /// That build's result code; `None` while it runs.
    pub build_results: Option<i64>,
    /// Whether that build has finished.
    pub build_complete: bool,
}

/// A request and the build that took it, from a row of `console_cells` or
/// `buildset_cells`.
fn cell_from(r: &sqlx::any::AnyRow, change_id: i64) -> Result<ConsoleCell> {
    Ok(ConsoleCell {
        change_id,
        builder_id: get(r, "builder_id")?,
        request_complete: get::<i64>(r, "complete")? != 0,
        request_results: get(r, "request_results")?,
        claimed: get::<Option<i64>>(r, "claimed_by_master_id")?.is_some(),
        build_id: get(r, "build_id")?,
        number: get(r, "number")?,
        build_results: get(r, "build_results")?,
        build_complete: get::<Option<i64>>(r, "complete_at")?.is_some(),
    })
}

/// Each builder's newest build (or newest finished one) among `list`'s
/// ids: one row of `builder_latest` each, whatever the history's depth.
pub(crate) fn latest_builds_sql(finished_only: bool, list: &str) -> String {
    let column = if finished_only { "finished_build_id" } else { "build_id" };
    format!(
        "SELECT {BUILD_COLUMNS} FROM builder_latest l JOIN builds b ON b.id = l.{column} WHERE l.builder_id IN ({list})"
    )
}

/// `builder_latest` computed from the builds themselves (the migration's
/// backfill, and after writers that insert builds wholesale).
const BUILDER_LATEST_FROM_BUILDS: &str = "INSERT INTO builder_latest (builder_id, build_id, number, finished_build_id, finished_number) \
     SELECT bl.id, \
     (SELECT x.id FROM builds x WHERE x.builder_id = bl.id ORDER BY x.number DESC LIMIT 1), \
     (SELECT MAX(x.number) FROM builds x WHERE x.builder_id = bl.id), \
     (SELECT x.id FROM builds x WHERE x.builder_id = bl.id AND x.complete_at IS NOT NULL ORDER BY x.number DESC LIMIT 1), \
     (SELECT MAX(x.number) FROM builds x WHERE x.builder_id = bl.id AND x.complete_at IS NOT NULL) \
     FROM builders bl WHERE EXISTS (SELECT 1 FROM builds x WHERE x.builder_id = bl.id)";

impl Store {
    /// Runs `sql(list)` for `ids` and returns every row: `list` is a
    /// subquery of the ids, bound as one JSON array at `$1` (see [`id_list`]).
    pub(crate) async fn rows_for_ids(
        &self,
        ids: &[i64],
        sql: impl Fn(&str) -> String,
    ) -> Result<Vec<sqlx::any::AnyRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = sql(&id_list(self.backend(), 1));
        Ok(sqlx::query(AssertSqlSafe(sql)).bind(ids_json(ids)).fetch_all(&self.pool).await?)
    }

    /// Computes every builder's newest and newest finished build again from
    /// the builds: for writers that insert builds wholesale (the Buildbot
    /// importer, `fill-store`) instead of starting and ending them here.
    pub async fn refresh_builder_latest(&self) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM builder_latest").execute(&mut *tx).await?;
        sqlx::query(BUILDER_LATEST_FROM_BUILDS).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Each builder's newest build (or newest finished one), read from
    /// `builder_latest` in a single statement.
    pub async fn latest_builds(&self, builder_ids: &[i64], finished_only: bool) -> Result<Vec<BuildRecord>> {
        let rows = self.rows_for_ids(builder_ids, |list| latest_builds_sql(finished_only, list)).await?;
        rows.iter().map(build_from).collect()
    }

    /// The newest `per_builder` builds of each builder (newest first): the
    /// newest numbers first, then one statement of per-builder ranges, each
    /// an index range scan.
    pub async fn recent_builds_of(&self, builder_ids: &[i64], per_builder: i64) -> Result<Vec<BuildRecord>> {
        let latest = self.latest_builds(builder_ids, false).await?;
        let mut out = Vec::new();
        for chunk in latest.chunks(200) {
            let ranges: Vec<String> = (0..chunk.len())
                .map(|i| format!("(b.builder_id = ${} AND b.number > ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!(
                "SELECT {BUILD_COLUMNS} FROM builds b WHERE {} ORDER BY b.builder_id, b.number DESC",
                ranges.join(" OR ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for b in chunk {
                q = q.bind(b.builderid).bind(b.number - per_builder);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(build_from(&r)?);
            }
        }
        Ok(out)
    }

    /// A builder's builds, newest first, below `before` (keyset paging by number).
    pub async fn builder_builds_page(
        &self,
        builder_id: i64,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<BuildRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {BUILD_COLUMNS} FROM builds b WHERE b.builder_id = $1 AND b.number < $2 ORDER BY b.number DESC LIMIT $3"
        )))
        .bind(builder_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(build_from).collect()
    }

    /// The builds of these builders that ran in `[from, to)`, newest start
    /// first, at most `limit`: those started in it, and those started up to
    /// `reach` seconds before it and still running at `from`. One range of
    /// `(builder_id, started_at)` per builder.
    pub async fn builds_between(
        &self,
        builder_ids: &[i64],
        (from, to): (i64, i64),
        reach: i64,
        limit: i64,
    ) -> Result<Vec<BuildRecord>> {
        let mut out = Vec::new();
        // Listed as `$5, $6, …`, not as one JSON array: SQLite then sees how
        // many builders there are, and for a page of most of them walks the
        // window by start time instead of each builder's range (4 ms, not 15).
        for chunk in builder_ids.chunks(500) {
            let sql = builds_between_sql(&crate::changes::placeholders(5, chunk.len()));
            let mut q =
                sqlx::query(AssertSqlSafe(sql)).bind(from.saturating_sub(reach)).bind(from).bind(to).bind(limit);
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(build_from(&r)?);
            }
        }
        out.sort_by_key(|b| std::cmp::Reverse(b.started_at));
        out.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(out)
    }

    /// Each of these steps' first log: (step id, slug).
    pub async fn first_logs(&self, step_ids: &[i64]) -> Result<Vec<(i64, String)>> {
        let rows = self
            .rows_for_ids(step_ids, |list| {
                format!(
                    "SELECT l.step_id, l.slug FROM logs l WHERE l.id IN \
                     (SELECT MIN(x.id) FROM logs x WHERE x.step_id IN ({list}) GROUP BY x.step_id)"
                )
            })
            .await?;
        rows.iter().map(|r| Ok((get(r, "step_id")?, get(r, "slug")?))).collect()
    }

    /// How many requests wait (unclaimed) for each of these builders that
    /// has some: (builder id, count).
    pub async fn pending_counts(&self, builder_ids: &[i64]) -> Result<Vec<(i64, i64)>> {
        let rows = self.rows_for_ids(builder_ids, pending_counts_sql).await?;
        rows.iter().map(|r| Ok((get(r, "builder_id")?, get(r, "n")?))).collect()
    }

    /// Steps of several builds, by build and number.
    pub async fn steps_of(&self, build_ids: &[i64]) -> Result<Vec<StepRecord>> {
        let backend = self.backend();
        let rows = self.rows_for_ids(build_ids, |list| steps_of_sql(backend, list)).await?;
        let mut steps = match backend {
            Backend::Postgres => rows.iter().map(step_from).collect::<Result<Vec<_>>>()?,
            Backend::Sqlite => rows.iter().map(unpack_steps).collect::<Result<Vec<_>>>()?.concat(),
        };
        steps.sort_unstable_by_key(|s| (s.buildid, s.number));
        Ok(steps)
    }

    /// Every build request made for these changes, with its build.
    pub async fn console_cells(&self, change_ids: &[i64]) -> Result<Vec<ConsoleCell>> {
        let rows = self.rows_for_ids(change_ids, console_cells_sql).await?;
        rows.iter().map(|r| cell_from(r, get(r, "change_id")?)).collect()
    }

    /// The revision each build built: its `got_revision` (what the checkout
    /// found), else the revision its request was pinned to; builds that
    /// know neither are left out.
    pub async fn built_revisions(&self, build_ids: &[i64]) -> Result<std::collections::HashMap<i64, String>> {
        let rows = self.rows_for_ids(build_ids, built_revisions_sql).await?;
        let mut out = std::collections::HashMap::new();
        for r in &rows {
            let got: Option<String> = get(r, "got")?;
            // Properties are stored as JSON: a revision is a JSON string.
            let got = got.and_then(|v| serde_json::from_str::<String>(&v).ok());
            let pinned: Option<String> = get(r, "pinned_revision")?;
            if let Some(rev) = got.or(pinned).filter(|r| !r.is_empty()) {
                out.insert(get(r, "id")?, rev);
            }
        }
        Ok(out)
    }

    /// What became of each request of a buildset: its builder, and the build
    /// that took it, if one has (`change_id` is 0: no change is asked about).
    pub async fn buildset_cells(&self, buildset_id: i64) -> Result<Vec<(i64, ConsoleCell)>> {
        let rows = sqlx::query(
            "SELECT r.id, r.builder_id, r.complete, r.results AS request_results, r.claimed_by_master_id, \
             r.build_id, b.number, b.results AS build_results, b.complete_at \
             FROM buildrequests r LEFT JOIN builds b ON b.id = r.build_id WHERE r.buildset_id = $1 ORDER BY r.id",
        )
        .bind(buildset_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((get(r, "id")?, cell_from(r, 0)?))).collect()
    }

    /// Where each builder's failing streak began (for the builders given,
    /// those that have one), in three statements whatever their number.
    pub async fn breaking_builds(&self, builder_ids: &[i64]) -> Result<Vec<BuildRecord>> {
        let rows = self
            .rows_for_ids(builder_ids, |list| {
                format!(
                    "SELECT (SELECT b.id FROM builds b WHERE b.builder_id = bl.id AND b.complete_at IS NOT NULL \
                     AND b.number > COALESCE((SELECT g.number FROM builds g WHERE g.builder_id = bl.id \
                     AND g.complete_at IS NOT NULL AND g.results IN (0, 1) ORDER BY g.number DESC LIMIT 1), -1) \
                     ORDER BY b.number LIMIT 1) AS breaking FROM builders bl WHERE bl.id IN ({list})"
                )
            })
            .await?;
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| get::<Option<i64>>(r, "breaking"))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        let rows = self
            .rows_for_ids(&ids, |list| format!("SELECT {BUILD_COLUMNS} FROM builds b WHERE b.id IN ({list})"))
            .await?;
        rows.iter().map(build_from).collect()
    }

    /// (build id, change id) for every change the builds cover.
    pub async fn blamelist_pairs(&self, build_ids: &[i64]) -> Result<Vec<(i64, i64)>> {
        let rows = self.rows_for_ids(build_ids, blamelist_pairs_sql).await?;
        rows.iter().map(|r| Ok((get(r, "build_id")?, get(r, "change_id")?))).collect()
    }

    /// When each connected worker connected (worker id → Unix seconds).
    pub async fn worker_connected_since(&self) -> Result<std::collections::HashMap<i64, i64>> {
        let rows =
            sqlx::query("SELECT worker_id, MIN(connected_at) AS since FROM worker_connections GROUP BY worker_id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| Ok((get(r, "worker_id")?, get(r, "since")?))).collect()
    }

    /// Builds running now, on any master.
    pub async fn running_builds(&self) -> Result<Vec<BuildRecord>> {
        let rows = sqlx::query(AssertSqlSafe(running_builds_sql())).fetch_all(&self.pool).await?;
        rows.iter().map(build_from).collect()
    }
}

/// A list of ids for `IN (…)`, bound as one JSON array at `$at`: one
/// statement whatever their number, whose text stays the same (so it stays
/// prepared), where `$1, $2, …` would take several statements past the
/// backends' cap on parameters, and SQLite binds each `$n` by a search of
/// all the statement's names (quadratic in their number).
pub(crate) fn id_list(backend: Backend, at: usize) -> String {
    match backend {
        Backend::Sqlite => format!("SELECT value FROM json_each(${at})"),
        Backend::Postgres => format!("SELECT value::bigint FROM json_array_elements_text(${at}::json)"),
    }
}

/// The ids as the JSON array [`id_list`] reads.
pub(crate) fn ids_json(ids: &[i64]) -> String {
    serde_json::Value::from(ids.to_vec()).to_string()
}

/// `console_cells`: every request made for the changes `list` names, with its build.
pub(crate) fn console_cells_sql(list: &str) -> String {
    format!(
        "SELECT bc.change_id, r.builder_id, r.complete, r.results AS request_results, \
         r.claimed_by_master_id, r.build_id, b.number, b.results AS build_results, b.complete_at \
         FROM buildset_changes bc JOIN buildrequests r ON r.buildset_id = bc.buildset_id \
         LEFT JOIN builds b ON b.id = r.build_id WHERE bc.change_id IN ({list})"
    )
}

/// `pending_counts`: unclaimed requests per builder of `list`.
pub(crate) fn pending_counts_sql(list: &str) -> String {
    format!(
        "SELECT r.builder_id, COUNT(*) AS n FROM buildrequests r WHERE r.complete = 0 \
         AND r.claimed_by_master_id IS NULL AND r.builder_id IN ({list}) GROUP BY r.builder_id"
    )
}

/// `built_revisions`: each build's `got_revision`, or its request's pinned revision.
pub(crate) fn built_revisions_sql(list: &str) -> String {
    format!(
        "SELECT b.id, (SELECT p.value FROM build_properties p WHERE p.build_id = b.id \
         AND p.name = 'got_revision') AS got, r.pinned_revision \
         FROM builds b LEFT JOIN buildrequests r ON r.id = b.build_request_id WHERE b.id IN ({list})"
    )
}

/// `blamelist_pairs`: (build, change) for every change the builds `list` cover.
pub(crate) fn blamelist_pairs_sql(list: &str) -> String {
    format!(
        "SELECT DISTINCT r.build_id, bc.change_id FROM buildrequests r \
         JOIN buildset_changes bc ON bc.buildset_id = r.buildset_id WHERE r.build_id IN ({list}) \
         ORDER BY r.build_id, bc.change_id"
    )
}

/// `builds_between` for the builders `list` names (from `$5`): `$1` the
/// reach back, `$2`–`$3` the window, `$4` the limit.
pub(crate) fn builds_between_sql(list: &str) -> String {
    format!(
        "SELECT {BUILD_COLUMNS} FROM builds b WHERE b.builder_id IN ({list}) AND b.started_at >= $1 \
         AND b.started_at < $3 AND (b.started_at >= $2 OR b.complete_at IS NULL OR b.complete_at >= $2) \
         ORDER BY b.started_at DESC LIMIT $4"
    )
}

/// `running_builds`: builds not yet finished, on any master.
pub(crate) fn running_builds_sql() -> String {
    format!("SELECT {BUILD_COLUMNS} FROM builds b WHERE b.complete_at IS NULL ORDER BY b.id")
}

/// `steps_of`: the steps of the builds `list` names. On SQLite one row per
/// build with its steps as a JSON array of [`PackedStep`]s: a waterfall
/// shows thousands of steps, and there each row the driver hands from
/// SQLite's thread to the page costs more than SQLite's work to find it
/// (9,000 steps: 37 ms as rows, 14 ms of it SQLite's). PostgreSQL's rows
/// cost little to hand over and its JSON much to build, so there they
/// come as rows.
pub(crate) fn steps_of_sql(backend: Backend, list: &str) -> String {
    match backend {
        Backend::Sqlite => format!(
            "SELECT build_id, json_group_array(json_array(id, number, name, started_at, complete_at, \
             state_string, results)) AS steps FROM steps WHERE build_id IN ({list}) GROUP BY build_id"
        ),
        Backend::Postgres => format!("SELECT {STEP_COLUMNS} FROM steps WHERE build_id IN ({list})"),
    }
}

/// One build's row of `steps_of_sql` on SQLite: its steps.
fn unpack_steps(r: &sqlx::any::AnyRow) -> Result<Vec<StepRecord>> {
    let build_id: i64 = get(r, "build_id")?;
    let packed: String = get(r, "steps")?;
    let parsed: Vec<PackedStep> = serde_json::from_str(&packed)
        .map_err(|e| crate::StoreError::Corrupt(format!("steps of build {build_id}: {e}")))?;
    Ok(parsed.into_iter().map(|p| p.record(build_id)).collect())
}

/// One step as `steps_of_sql` packs it.
#[derive(serde::Deserialize)]
struct PackedStep(i64, i64, String, Option<i64>, Option<i64>, String, Option<i64>);

impl PackedStep {
    fn record(self, buildid: i64) -> StepRecord {
        let PackedStep(stepid, number, name, started_at, complete_at, state_string, results) = self;
        StepRecord {
            stepid,
            buildid,
            number,
            name,
            started_at,
            locks_acquired_at: started_at,
            complete_at,
            complete: complete_at.is_some(),
            state_string,
            results,
            hidden: false,
            urls: Vec::new(),
        }
    }
}
