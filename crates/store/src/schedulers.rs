//! Schedulers' durable state: which changes each is waiting on, when a
//! periodic one last fired. Firing is one transaction that consumes the
//! waiting changes, so two masters can never fire the same changes twice.

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, Row};

use crate::buildrequests::cancel_pending_for_branch;
use crate::buildsets::{NewBuildset, NewSourceStamp, insert_buildset};
use crate::changes::Delivery;
use crate::changes::placeholders;
use crate::records::get;
use crate::{Result, Store};

/// A scheduler's row: its durable switch and firing time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerRow {
    /// The scheduler's id.
    pub id: i64,
    /// Its configured name, unique.
    pub name: String,
    /// `branch`, `periodic` or `force`.
    pub kind: String,
    /// A disabled scheduler does not fire; the switch is shared by every master.
    pub enabled: bool,
    /// When the row was made, Unix seconds.
    pub created_at: i64,
    /// When it last fired (a periodic one: the occurrence fired), Unix seconds.
    pub last_fired_at: Option<i64>,
}

/// What a scheduler's timer needs to know about its waiting changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitingSummary {
    /// The scheduler.
    pub scheduler_id: i64,
    /// The newest waiting change: a firing consumes up to it.
    pub up_to_change_id: i64,
    /// When the last important one arrived, Unix milliseconds, if any is waiting.
    pub last_important_ms: Option<i64>,
    /// How many changes are waiting.
    pub count: i64,
}

/// A change a scheduler is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitingChange {
    /// The scheduler.
    pub scheduler_id: i64,
    /// The change.
    pub change_id: i64,
    /// Whether it is important to the scheduler (not every file it touches is ignored).
    pub important: bool,
    /// When it arrived (not its commit time), Unix seconds.
    pub received_at: i64,
}

fn scheduler_from(row: &sqlx::any::AnyRow) -> Result<SchedulerRow> {
    Ok(SchedulerRow {
        id: get(row, "id")?,
        name: get(row, "name")?,
        kind: get(row, "kind")?,
        enabled: get::<i64>(row, "enabled")? != 0,
        created_at: get(row, "created_at")?,
        last_fired_at: get(row, "last_fired_at")?,
    })
}

impl Store {
    /// Makes sure every configured scheduler has a row; returns all rows by name.
    pub async fn sync_schedulers(
        &self,
        schedulers: &[(String, String)],
        now: i64,
    ) -> Result<BTreeMap<String, SchedulerRow>> {
        let mut tx = self.begin_write().await?;
        for (name, kind) in schedulers {
            sqlx::query(
                "INSERT INTO schedulers (name, kind, enabled, created_at) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (name) DO UPDATE SET kind = excluded.kind",
            )
            .bind(name.clone())
            .bind(kind.clone())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let rows = self.list_schedulers().await?;
        Ok(rows.into_iter().map(|r| (r.name.clone(), r)).collect())
    }

    /// Every scheduler's row, by id.
    pub async fn list_schedulers(&self) -> Result<Vec<SchedulerRow>> {
        let rows = sqlx::query("SELECT id, name, kind, enabled, created_at, last_fired_at FROM schedulers ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(scheduler_from).collect()
    }

    /// Switches a scheduler on or off; false if there is no such scheduler.
    pub async fn set_scheduler_enabled(&self, scheduler_id: i64, enabled: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE schedulers SET enabled = $1 WHERE id = $2")
            .bind(crate::infra::flag(enabled))
            .bind(scheduler_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One row per scheduler with waiting changes, computed in the database
    /// (a scheduler pass must not read every waiting change).
    pub async fn waiting_summaries(&self) -> Result<Vec<WaitingSummary>> {
        let rows = sqlx::query(
            "SELECT scheduler_id, MAX(change_id) AS up_to, \
             MAX(CASE WHEN important = 1 THEN COALESCE(received_ms, received_at * 1000) END) AS last_important, \
             COUNT(*) AS n \
             FROM scheduler_changes GROUP BY scheduler_id ORDER BY scheduler_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WaitingSummary {
                    scheduler_id: get(r, "scheduler_id")?,
                    up_to_change_id: get(r, "up_to")?,
                    last_important_ms: get(r, "last_important")?,
                    count: get(r, "n")?,
                })
            })
            .collect()
    }

    /// Every change a scheduler is still waiting on (a small table: rows
    /// leave it when their scheduler fires).
    pub async fn waiting_changes(&self) -> Result<Vec<WaitingChange>> {
        let rows = sqlx::query(
            "SELECT scheduler_id, change_id, important, received_at FROM scheduler_changes ORDER BY scheduler_id, change_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WaitingChange {
                    scheduler_id: get(r, "scheduler_id")?,
                    change_id: get(r, "change_id")?,
                    important: get::<i64>(r, "important")? != 0,
                    received_at: get(r, "received_at")?,
                })
            })
            .collect()
    }

    /// Fires a branch scheduler: consumes its waiting changes up to
    /// `up_to_change_id` and creates one buildset for them, built at the
    /// newest change's revision. `None` if another master fired them first.
    pub async fn fire_branch_scheduler(
        &self,
        scheduler_id: i64,
        up_to_change_id: i64,
        template: &NewBuildset,
        now: i64,
    ) -> Result<Option<(i64, Vec<i64>)>> {
        let mut tx = self.begin_write().await?;
        let taken = sqlx::query(
            "DELETE FROM scheduler_changes WHERE scheduler_id = $1 AND change_id <= $2 RETURNING change_id",
        )
        .bind(scheduler_id)
        .bind(up_to_change_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut change_ids: Vec<i64> = taken.iter().map(|r| get(r, "change_id")).collect::<Result<_>>()?;
        if change_ids.is_empty() {
            tx.rollback().await?;
            return Ok(None);
        }
        change_ids.sort_unstable();
        let newest = *change_ids.last().unwrap_or(&up_to_change_id);
        let row = sqlx::query("SELECT repository, branch, revision, project, codebase FROM changes WHERE id = $1")
            .bind(newest)
            .fetch_one(&mut *tx)
            .await?;
        let mut buildset = template.clone();
        buildset.sourcestamp = NewSourceStamp {
            repository: row.try_get("repository")?,
            branch: row.try_get("branch")?,
            revision: row.try_get("revision")?,
            project: row.try_get("project")?,
            codebase: row.try_get("codebase")?,
        };
        buildset.change_ids = change_ids;
        buildset.scheduler_id = Some(scheduler_id);
        let created = insert_buildset(&mut tx, &buildset, now).await?;
        sqlx::query("UPDATE schedulers SET last_fired_at = $1 WHERE id = $2")
            .bind(now)
            .bind(scheduler_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.events_committed();
        Ok(Some(created))
    }

    /// Fires a periodic scheduler for one occurrence, once across all
    /// masters: only the caller that moves `last_fired_at` forward creates
    /// the buildset.
    pub async fn fire_periodic_scheduler(
        &self,
        scheduler_id: i64,
        occurrence: i64,
        buildset: &NewBuildset,
        now: i64,
    ) -> Result<Option<(i64, Vec<i64>)>> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE schedulers SET last_fired_at = $1 WHERE id = $2 AND (last_fired_at IS NULL OR last_fired_at < $1)",
        )
        .bind(occurrence)
        .bind(scheduler_id)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let mut buildset = buildset.clone();
        buildset.scheduler_id = Some(scheduler_id);
        let created = insert_buildset(&mut tx, &buildset, now).await?;
        tx.commit().await?;
        self.events_committed();
        Ok(Some(created))
    }

    /// A deleted branch, atomically with its delivery record: schedulers
    /// stop waiting on its changes and its unclaimed requests are cancelled.
    /// `None` when the delivery was seen before.
    pub async fn delete_branch(
        &self,
        delivery: Option<&Delivery>,
        repository: &str,
        branch: &str,
        now: i64,
    ) -> Result<Option<BranchDeletion>> {
        let Some(mut tx) = self.begin_delivery(delivery, now).await? else { return Ok(None) };
        let ids = sqlx::query(
            "SELECT sc.change_id FROM scheduler_changes sc JOIN changes c ON c.id = sc.change_id \
             WHERE c.branch = $1 AND c.repository = $2",
        )
        .bind(branch.to_string())
        .bind(repository.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<i64> = ids.iter().map(|r| get(r, "change_id")).collect::<Result<_>>()?;
        let mut dropped_changes = 0;
        for chunk in ids.chunks(500) {
            let sql = format!("DELETE FROM scheduler_changes WHERE change_id IN ({})", placeholders(1, chunk.len()));
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            dropped_changes += q.execute(&mut *tx).await?.rows_affected();
        }
        let cancelled_requests = cancel_pending_for_branch(&mut tx, repository, branch, now).await?;
        tx.commit().await?;
        self.events_committed();
        Ok(Some(BranchDeletion { cancelled_requests, dropped_changes }))
    }
}

/// What deleting a branch undid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BranchDeletion {
    /// Unclaimed requests of the branch now cancelled.
    pub cancelled_requests: u64,
    /// Changes of the branch no scheduler waits on any more.
    pub dropped_changes: u64,
}
