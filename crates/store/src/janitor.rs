//! The janitor's removals from finished builds: their logs' contents,
//! their artifacts (the caller deletes the folders), their steps. Each call
//! handles one small batch in one short transaction, so writers never wait
//! long behind it; the build rows always stay.

use sqlx::AssertSqlSafe;

use crate::Result;
use crate::changes::placeholders;
use crate::infra::Store;
use crate::records::get;

/// What of an old build the janitor removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Its logs' contents (the logs' names and line counts stay).
    Logs,
    /// Its artifact folder.
    Artifacts,
    /// Its steps, with their logs and test results.
    Steps,
}

impl Removal {
    /// The column that records when this was removed.
    fn column(self) -> &'static str {
        match self {
            Removal::Logs => "logs_removed_at",
            Removal::Artifacts => "artifacts_removed_at",
            Removal::Steps => "steps_removed_at",
        }
    }
}

/// A finished build with something left to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removable {
    /// The build.
    pub build_id: i64,
    /// Its builder's name (artifact folders are named after it).
    pub builder: String,
    /// Its number.
    pub number: i64,
}

impl Store {
    /// The oldest builds finished before `before` whose `what` is still
    /// there, at most `limit`; with `master`, only the builds it ran
    /// (artifacts are on the disk of the master that ran the build).
    pub async fn removable_builds(
        &self,
        what: Removal,
        before: i64,
        limit: i64,
        master: Option<i64>,
    ) -> Result<Vec<Removable>> {
        let column = what.column();
        let only = if master.is_some() { "AND b.master_id = $3" } else { "" };
        let sql = format!(
            "SELECT b.id, b.number, r.name FROM builds b JOIN builders r ON r.id = b.builder_id \
             WHERE b.{column} IS NULL AND b.complete_at IS NOT NULL AND b.complete_at < $1 {only} \
             ORDER BY b.complete_at LIMIT $2"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(before).bind(limit);
        if let Some(m) = master {
            q = q.bind(m);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok(Removable { build_id: get(r, "id")?, builder: get(r, "name")?, number: get(r, "number")? }))
            .collect()
    }

    /// Removes `what` of these builds (for artifacts: records that the
    /// caller removed them) in one transaction; returns the rows deleted.
    pub async fn remove_from_builds(&self, what: Removal, build_ids: &[i64], now: i64) -> Result<u64> {
        if build_ids.is_empty() {
            return Ok(0);
        }
        let ids = placeholders(1, build_ids.len());
        let logs = format!("SELECT l.id FROM logs l JOIN steps s ON s.id = l.step_id WHERE s.build_id IN ({ids})");
        let deletes: Vec<String> = match what {
            Removal::Logs => vec![format!("DELETE FROM log_chunks WHERE log_id IN ({logs})")],
            Removal::Artifacts => vec![],
            Removal::Steps => vec![
                format!("DELETE FROM log_chunks WHERE log_id IN ({logs})"),
                format!("DELETE FROM logs WHERE step_id IN (SELECT id FROM steps WHERE build_id IN ({ids}))"),
                format!(
                    "DELETE FROM test_results WHERE test_result_setid IN \
                     (SELECT id FROM test_result_sets WHERE buildid IN ({ids}))"
                ),
                format!("DELETE FROM test_problems WHERE buildid IN ({ids})"),
                format!("DELETE FROM test_runs WHERE buildid IN ({ids})"),
                format!("DELETE FROM test_result_sets WHERE buildid IN ({ids})"),
                format!("DELETE FROM steps WHERE build_id IN ({ids})"),
            ],
        };
        let rest = placeholders(2, build_ids.len());
        let mut marks = vec![format!("UPDATE builds SET {} = $1 WHERE id IN ({rest})", what.column())];
        if what == Removal::Steps {
            // No steps, no logs.
            marks.push(format!(
                "UPDATE builds SET logs_removed_at = $1 WHERE id IN ({rest}) AND logs_removed_at IS NULL"
            ));
        }
        let mut tx = self.begin_write().await?;
        let mut deleted = 0;
        for sql in &deletes {
            let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
            for id in build_ids {
                q = q.bind(*id);
            }
            deleted += q.execute(&mut *tx).await?.rows_affected();
        }
        for sql in &marks {
            let mut q = sqlx::query(AssertSqlSafe(sql.as_str())).bind(now);
            for id in build_ids {
                q = q.bind(*id);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// When the janitor removed the contents of this build's logs, if it did.
    pub async fn logs_removed_at(&self, build_id: i64) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT logs_removed_at FROM builds WHERE id = $1")
            .bind(build_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => get(&r, "logs_removed_at"),
            None => Ok(None),
        }
    }
}
