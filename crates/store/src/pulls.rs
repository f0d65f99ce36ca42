//! Pull requests: a PR's change stored with its buildset, what was asked
//! for a PR's head, and what runs for it.

use cascade_model::NewChange;
use sqlx::AssertSqlSafe;

use crate::buildrequests::cancel_pending_for_branch;
use crate::buildsets::{NewBuildset, insert_buildset};
use crate::changes::{Delivery, Redundant, insert_change};
use crate::records::get;
use crate::{Result, Store};

/// What storing a PR's build came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullBuild {
    /// The change made for the PR's head.
    pub change_id: i64,
    /// The buildset, with the change as its blamelist.
    pub buildset_id: i64,
    /// One request per builder.
    pub request_ids: Vec<i64>,
}

impl Store {
    /// Stores a PR's change and a buildset for it (its blamelist is the
    /// change) in one transaction with the delivery; `None` for a redelivery.
    pub async fn ingest_pull_request(
        &self,
        delivery: Option<&Delivery>,
        change: &NewChange,
        buildset: &NewBuildset,
        now: i64,
    ) -> Result<Option<PullBuild>> {
        let Some(mut tx) = self.begin_delivery(delivery, now).await? else { return Ok(None) };
        let Some(change_id) = insert_change(&mut tx, change, None, Redundant::Never, now).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let bs = NewBuildset { change_ids: vec![change_id], ..buildset.clone() };
        let (buildset_id, request_ids) = insert_buildset(&mut tx, &bs, now).await?;
        tx.commit().await?;
        self.events_committed();
        Ok(Some(PullBuild { change_id, buildset_id, request_ids }))
    }

    /// Whether any change was made on `branch` (a PR's merge ref): the
    /// poller builds only PRs that were never built, so a label left on a
    /// PR (its removal failed) is no standing approval of later pushes.
    pub async fn has_changes_on(&self, repository: &str, branch: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM (SELECT 1 FROM changes WHERE branch = $1 AND repository = $2 \
             AND category = 'pull' LIMIT 1) found",
        )
        .bind(branch.to_string())
        .bind(repository.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(get::<i64>(&row, "n")? > 0)
    }

    /// Cancels the unclaimed requests of a branch (a PR's merge ref after new
    /// commits or its closing), in one transaction with the delivery;
    /// `None` for a redelivery, else how many were cancelled.
    pub async fn cancel_pending(
        &self,
        delivery: Option<&Delivery>,
        repository: &str,
        branch: &str,
        now: i64,
    ) -> Result<Option<u64>> {
        let Some(mut tx) = self.begin_delivery(delivery, now).await? else { return Ok(None) };
        let cancelled = cancel_pending_for_branch(&mut tx, repository, branch, now).await?;
        tx.commit().await?;
        self.events_committed();
        Ok(Some(cancelled))
    }

    /// The newest pull requests with changes, newest first: (number,
    /// the newest change's first line), at most `limit` (up to 100).
    pub async fn recent_pull_requests(&self, limit: usize) -> Result<Vec<(u64, String)>> {
        let limit = limit.min(100);
        // Several changes per PR (one per push or trigger): read a few more.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT branch, comments FROM changes WHERE category = 'pull' ORDER BY id DESC LIMIT {}",
            limit * 10
        )))
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<(u64, String)> = Vec::new();
        for r in &rows {
            let branch: Option<String> = get(r, "branch")?;
            let Some(n) = branch.as_deref().and_then(cascade_model::pull::number_of) else { continue };
            if out.len() < limit && !out.iter().any(|(m, _)| *m == n) {
                let comments: String = get(r, "comments")?;
                out.push((n, comments.lines().next().unwrap_or("").to_string()));
            }
        }
        Ok(out)
    }

    /// The unfinished builds of a branch, with the master running each.
    pub async fn running_builds_on_branch(&self, repository: &str, branch: &str) -> Result<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT DISTINCT b.id, b.master_id FROM builds b JOIN buildrequests br ON br.build_id = b.id \
             WHERE b.complete_at IS NULL AND br.branch = $1 AND br.repository = $2 ORDER BY b.id",
        )
        .bind(branch.to_string())
        .bind(repository.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((get(r, "id")?, get(r, "master_id")?))).collect()
    }
}
