//! Notifications: written once per (reporter, dedupe key) from the event
//! log, claimed by one master at a time, sent, retried with back-off, and
//! given up with a reason.

use sqlx::AssertSqlSafe;

use crate::records::get;
use crate::{Result, Store, StoreError};

/// A notification to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// The reporter's name.
    pub reporter: String,
    /// Unique per reporter: `event:<id>`, or `pr:<n>:builder:<id>`.
    pub dedupe: String,
    /// The event it comes from.
    pub event_id: i64,
    /// The build it is about.
    pub build_id: Option<i64>,
    /// What to send (the reporter's own JSON).
    pub body: String,
    /// When it is given up if not sent.
    pub give_up_at: i64,
    /// When it is first sent (later than now for a worker's grace time).
    pub due_at: i64,
}

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NotificationRecord {
    /// Its id.
    pub id: i64,
    /// The reporter's name.
    pub reporter: String,
    /// Its dedupe key.
    pub dedupe: String,
    /// The event it comes from.
    pub event_id: i64,
    /// The build it is about.
    pub build_id: Option<i64>,
    /// What to send.
    pub body: String,
    /// When it was written.
    pub created_at: i64,
    /// Where it stands.
    pub state: NotificationState,
    /// Sending attempts so far.
    pub attempts: i64,
    /// When it may be tried next.
    pub next_attempt_at: i64,
    /// When it is given up.
    pub give_up_at: i64,
    /// When it was sent.
    pub sent_at: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationState {
    /// Waiting to be sent (or to be tried again).
    Pending,
    /// Sent.
    Sent,
    /// Given up: refused, or not sent in its reporter's time.
    Failed,
    /// Nothing to say by the time it was due (a worker came back, a build ended first).
    Skipped,
}

impl NotificationState {
    /// Every state.
    pub const ALL: [NotificationState; 4] =
        [NotificationState::Pending, NotificationState::Sent, NotificationState::Failed, NotificationState::Skipped];

    /// Its name, as stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            NotificationState::Pending => "pending",
            NotificationState::Sent => "sent",
            NotificationState::Failed => "failed",
            NotificationState::Skipped => "skipped",
        }
    }
}

fn state_from(name: &str) -> Result<NotificationState> {
    NotificationState::ALL
        .into_iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| StoreError::Corrupt(format!("a notification in state {name:?}")))
}

const COLUMNS: &str = "id, reporter, dedupe, event_id, build_id, body, created_at, state, attempts, next_attempt_at, \
                       give_up_at, sent_at, last_error";

fn from_row(r: &sqlx::any::AnyRow) -> Result<NotificationRecord> {
    Ok(NotificationRecord {
        id: get(r, "id")?,
        reporter: get(r, "reporter")?,
        dedupe: get(r, "dedupe")?,
        event_id: get(r, "event_id")?,
        build_id: get(r, "build_id")?,
        body: get(r, "body")?,
        created_at: get(r, "created_at")?,
        state: state_from(&get::<String>(r, "state")?)?,
        attempts: get(r, "attempts")?,
        next_attempt_at: get(r, "next_attempt_at")?,
        give_up_at: get(r, "give_up_at")?,
        sent_at: get(r, "sent_at")?,
        last_error: get(r, "last_error")?,
    })
}

impl Store {
    /// Writes notifications; one already written (same reporter and dedupe key) is left alone.
    /// Returns how many are new.
    pub async fn add_notifications(&self, items: &[NewNotification], now: i64) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let mut added = 0;
        for n in items {
            let done = sqlx::query(
                "INSERT INTO notifications (reporter, dedupe, event_id, build_id, body, created_at, state, attempts, \
                 next_attempt_at, give_up_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $8, $7) \
                 ON CONFLICT (reporter, dedupe) DO NOTHING",
            )
            .bind(n.reporter.clone())
            .bind(n.dedupe.clone())
            .bind(n.event_id)
            .bind(n.build_id)
            .bind(n.body.replace('\0', "\u{FFFD}"))
            .bind(now)
            .bind(n.give_up_at)
            .bind(n.due_at.max(now))
            .execute(&mut *tx)
            .await?;
            added += done.rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Claims up to `limit` due notifications for `master_id` until `until`
    /// (none another master holds), oldest first.
    pub async fn claim_notifications(
        &self,
        master_id: i64,
        now: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<NotificationRecord>> {
        let mut tx = self.begin_write().await?;
        // PostgreSQL: masters claiming at once take different rows (SQLite's
        // writes are one at a time anyway).
        let skip_locked = if self.backend() == crate::Backend::Postgres { "FOR UPDATE SKIP LOCKED" } else { "" };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM notifications WHERE state = 'pending' AND next_attempt_at <= $1 \
             AND (claimed_until IS NULL OR claimed_until < $1) ORDER BY id LIMIT $2 {skip_locked}"
        )))
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let n = from_row(r)?;
            // Taken only if nobody took it meanwhile: two masters never send one twice.
            let taken = sqlx::query(
                "UPDATE notifications SET claimed_by = $1, claimed_until = $2 WHERE id = $3 AND state = 'pending' \
                 AND (claimed_until IS NULL OR claimed_until < $4)",
            )
            .bind(master_id)
            .bind(until)
            .bind(n.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if taken.rows_affected() == 1 {
                out.push(n);
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Lets go of the notifications `master_id` holds (it restarted: what it
    /// was sending when it died is sent again; a receiver may see it twice
    /// only if it died after the receiver took it and before it said so).
    pub async fn release_notifications(&self, master_id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1 AND state = 'pending'",
        )
        .bind(master_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a notification that no longer needs sending (`skipped`), and why.
    pub async fn notification_skipped(&self, id: i64, why: &str) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET state = 'skipped', claimed_until = NULL, last_error = $1 WHERE id = $2 \
             AND state = 'pending'",
        )
        .bind(why.to_string())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a sent notification.
    pub async fn notification_sent(&self, id: i64, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET state = 'sent', sent_at = $1, attempts = attempts + 1, claimed_until = NULL, \
             last_error = NULL WHERE id = $2 AND state = 'pending'",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed attempt: tried again at `retry_at`, or given up
    /// (`failed`) when that is past its time. `counts` is false for a wait
    /// the receiver asked for (a rate limit), which is not a failure.
    pub async fn notification_failed(&self, id: i64, error: &str, retry_at: i64, counts: bool) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET attempts = attempts + $1, last_error = $2, next_attempt_at = $3, \
             claimed_until = NULL, state = CASE WHEN $3 > give_up_at THEN 'failed' ELSE 'pending' END \
             WHERE id = $4 AND state = 'pending'",
        )
        .bind(i64::from(counts))
        .bind(error.chars().take(1000).collect::<String>())
        .bind(retry_at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The dedupe key and state of a reporter's last notification about a worker.
    pub async fn last_worker_notification(
        &self,
        reporter: &str,
        worker_id: i64,
    ) -> Result<Option<(String, NotificationState)>> {
        let row = sqlx::query(
            "SELECT dedupe, state FROM notifications WHERE reporter = $1 AND build_id IS NULL \
             AND (dedupe LIKE $2 OR dedupe LIKE $3) ORDER BY id DESC LIMIT 1",
        )
        .bind(reporter.to_string())
        .bind(format!("worker_missing:{worker_id}:%"))
        .bind(format!("worker_back:{worker_id}:%"))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((get(&r, "dedupe")?, state_from(&get::<String>(&r, "state")?)?))).transpose()
    }

    /// Forgets notifications that are done (sent, given up, skipped) and
    /// were written before `before`; pending ones stay however old.
    pub async fn prune_notifications(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM notifications WHERE state <> 'pending' AND created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The newest notifications, oldest of them first.
    pub async fn recent_notifications(&self, limit: i64) -> Result<Vec<NotificationRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM notifications ORDER BY id DESC LIMIT $1) n ORDER BY id"
        )))
        .bind(limit.clamp(0, 1000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// The notifications of a build, oldest first.
    pub async fn notifications_of_build(&self, build_id: i64) -> Result<Vec<NotificationRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM notifications WHERE build_id = $1 ORDER BY id LIMIT 200"
        )))
        .bind(build_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// The result of the builder's last finished build before `number` that
    /// counts as a state (not RETRY, CANCELLED or SKIPPED).
    pub async fn previous_state(&self, builder_id: i64, number: i64) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT results FROM builds WHERE builder_id = $1 AND number < $2 AND complete_at IS NOT NULL \
             AND results NOT IN (3, 5, 6) ORDER BY number DESC LIMIT 1",
        )
        .bind(builder_id)
        .bind(number)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| get(&r, "results")).transpose()
    }
}
