//! The event log: every durable [`Event`] is written by the store call that
//! makes the change it describes, in the same transaction, so an event is
//! recorded exactly when its change is. Readers ask for ids above the
//! highest they saw and again for the holes below it
//! ([`cascade_model::event::Cursor`]); durable consumers keep where they are
//! in `event_cursors`.

use cascade_model::{Envelope, Event};
use sqlx::{AnyConnection, AssertSqlSafe};

use crate::changes::placeholders;
use crate::records::get;
use crate::{Result, Store, StoreError};

/// Writes `event` on `conn` (inside the caller's transaction); returns its id.
pub(crate) async fn record(conn: &mut AnyConnection, event: &Event, now: i64) -> Result<i64> {
    let body = serde_json::to_string(event).map_err(|e| StoreError::Corrupt(format!("encoding an event: {e}")))?;
    let row = sqlx::query("INSERT INTO events (kind, created_at, body) VALUES ($1, $2, $3) RETURNING id")
        .bind(event.kind().name())
        .bind(now)
        .bind(body)
        .fetch_one(conn)
        .await?;
    get(&row, "id")
}

/// Events read from the log. `ids` lists every row read, `events` those
/// this version understands (a newer master may record kinds this one does
/// not know; they are skipped, not fatal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRows {
    /// Every id read, ascending.
    pub ids: Vec<i64>,
    /// The events among them this version can read, ascending by id.
    pub events: Vec<Envelope>,
}

fn rows_to_events(rows: &[sqlx::any::AnyRow]) -> Result<EventRows> {
    let mut out = EventRows::default();
    for r in rows {
        let id: i64 = get(r, "id")?;
        out.ids.push(id);
        let body: String = get(r, "body")?;
        match serde_json::from_str::<Event>(&body) {
            Ok(event) => out.events.push(Envelope { id: Some(id), at: get(r, "created_at")?, event }),
            Err(e) => tracing::warn!(event = id, error = %e, "an event this version cannot read was skipped"),
        }
    }
    Ok(out)
}

/// Most holes asked for in one statement.
const IDS_PER_QUERY: usize = 500;

impl Store {
    /// Tells this process's event readers that events were just committed.
    pub(crate) fn events_committed(&self) {
        self.notices.events_committed();
        self.signal.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes (a counter) whenever this process commits events: readers
    /// wait on it instead of polling (events from other processes still
    /// need a poll).
    pub fn event_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.signal.subscribe()
    }

    /// Records an event that is a change of its own.
    pub async fn record_event(&self, event: &Event, now: i64) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        let id = record(&mut conn, event, now).await?;
        self.events_committed();
        Ok(id)
    }

    /// Up to `limit` events with ids above `after`, oldest first.
    pub async fn events_after(&self, after: i64, limit: i64) -> Result<EventRows> {
        let rows = sqlx::query("SELECT id, created_at, body FROM events WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await?;
        rows_to_events(&rows)
    }

    /// The events among `ids` that exist now (holes that have since committed).
    pub async fn events_with_ids(&self, ids: &[i64]) -> Result<EventRows> {
        let mut out = EventRows::default();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let sql = format!(
                "SELECT id, created_at, body FROM events WHERE id IN ({}) ORDER BY id",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            let found = rows_to_events(&q.fetch_all(&self.pool).await?)?;
            out.ids.extend(found.ids);
            out.events.extend(found.events);
        }
        Ok(out)
    }

    /// The lowest event id still kept; `None` when there are none.
    pub async fn first_event_id(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MIN(id) AS first FROM events").fetch_one(&self.pool).await?;
        get(&row, "first")
    }

    /// The highest event id so far; 0 before the first event.
    pub async fn last_event_id(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS last FROM events").fetch_one(&self.pool).await?;
        get(&row, "last")
    }

    /// Forgets events recorded before `before`; returns how many. The
    /// newest event always stays, so ids never start again from 1; so do
    /// the events a durable consumer seen since `before` has not read yet.
    pub async fn prune_events(&self, before: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM events WHERE created_at < $1 AND id < (SELECT COALESCE(MAX(id), 0) FROM events) \
             AND id < COALESCE((SELECT MIN(next_id) FROM event_cursors WHERE updated_at >= $1), id + 1)",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Where the durable consumer `consumer` stands: every event below the
    /// returned id was handled. `None` for a consumer never saved.
    pub async fn event_cursor(&self, consumer: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT next_id FROM event_cursors WHERE consumer = $1")
            .bind(consumer.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| get(&r, "next_id")).transpose()
    }

    /// Saves where `consumer` stands (see [`Store::event_cursor`]).
    pub async fn save_event_cursor(&self, consumer: &str, next_id: i64, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO event_cursors (consumer, next_id, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer) DO UPDATE SET next_id = excluded.next_id, updated_at = excluded.updated_at",
        )
        .bind(consumer.to_string())
        .bind(next_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
