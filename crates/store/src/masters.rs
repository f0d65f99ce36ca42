//! Masters: each running master has a row and keeps it fresh, so that
//! others sharing the database can tell a live master from a dead one.

use cascade_model::Event;

use crate::events::record;
use crate::records::{MasterRecord, get};
use crate::{Result, Store};

impl Store {
    /// Registers (or re-activates) the master called `name`; returns its
    /// id ([`Event::MasterStarted`]).
    pub async fn register_master(&self, name: &str, now: i64) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO masters (name, active, last_active) VALUES ($1, 1, $2) \
             ON CONFLICT (name) DO UPDATE SET active = 1, last_active = excluded.last_active RETURNING id",
        )
        .bind(name.to_string())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let master_id: i64 = get(&row, "id")?;
        record(&mut tx, &Event::MasterStarted { master_id, name: name.to_string() }, now).await?;
        tx.commit().await?;
        self.events_committed();
        Ok(master_id)
    }

    /// Keeps the master's row fresh, so others know it is alive; false when
    /// another master has declared this one dead meanwhile.
    pub async fn master_heartbeat(&self, master_id: i64, now: i64) -> Result<bool> {
        // Only the time: a late beat must not undo a stop.
        let row = sqlx::query("UPDATE masters SET last_active = $1 WHERE id = $2 RETURNING active")
            .bind(now)
            .bind(master_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| get::<i64>(&r, "active")).transpose()?.is_some_and(|a| a != 0))
    }

    /// Declares dead every active master but `me` whose heartbeat is older
    /// than `before` (one master wins each: the row is switched off with a
    /// conditional update), then takes over the unfinished builds of every
    /// inactive master (they end as RETRY and their requests wait again),
    /// which also repairs a takeover cut short. Returns (id, name, builds
    /// retried) of each master declared dead or taken over.
    pub async fn expire_masters(&self, me: i64, before: i64, now: i64) -> Result<Vec<(i64, String, Vec<i64>)>> {
        let mut expired = self.declare_dead(me, before, now).await?;
        // A dead master's workers are not connected to it, builds or not.
        for (id, _, _) in &expired {
            self.forget_connections(*id, now).await?;
        }
        let orphans = sqlx::query(
            "SELECT DISTINCT b.master_id, m.name FROM builds b JOIN masters m ON m.id = b.master_id              WHERE b.complete_at IS NULL AND m.active = 0 AND b.master_id <> $1",
        )
        .bind(me)
        .fetch_all(&self.pool)
        .await?;
        for row in &orphans {
            let (id, name): (i64, String) = (get(row, "master_id")?, get(row, "name")?);
            let builds = self.take_over_builds(id, "retry: its master stopped answering", now).await?;
            match expired.iter_mut().find(|(e, _, _)| *e == id) {
                Some(e) => e.2 = builds,
                None => expired.push((id, name, builds)),
            }
        }
        Ok(expired)
    }

    /// Switches off the masters whose heartbeat is older than `before`.
    async fn declare_dead(&self, me: i64, before: i64, now: i64) -> Result<Vec<(i64, String, Vec<i64>)>> {
        let rows = sqlx::query("SELECT id FROM masters WHERE active = 1 AND last_active < $1 AND id <> $2")
            .bind(before)
            .bind(me)
            .fetch_all(&self.pool)
            .await?;
        let mut expired = Vec::new();
        for candidate in rows.iter().map(|r| get::<i64>(r, "id")) {
            let id = candidate?;
            let mut tx = self.begin_write().await?;
            let won = sqlx::query(
                "UPDATE masters SET active = 0 WHERE id = $1 AND active = 1 AND last_active < $2 RETURNING name",
            )
            .bind(id)
            .bind(before)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = won else {
                tx.rollback().await?;
                continue;
            };
            let name: String = get(&row, "name")?;
            record(&mut tx, &Event::MasterStopped { master_id: id }, now).await?;
            tx.commit().await?;
            self.events_committed();
            expired.push((id, name, Vec::new()));
        }
        Ok(expired)
    }

    /// The master stopped cleanly ([`Event::MasterStopped`]).
    pub async fn deactivate_master(&self, master_id: i64, now: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE masters SET active = 0 WHERE id = $1").bind(master_id).execute(&mut *tx).await?;
        record(&mut tx, &Event::MasterStopped { master_id }, now).await?;
        tx.commit().await?;
        self.events_committed();
        Ok(())
    }

    /// Every master, live or not, by id.
    pub async fn list_masters(&self) -> Result<Vec<MasterRecord>> {
        let rows =
            sqlx::query("SELECT id, name, active, last_active FROM masters ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(MasterRecord {
                    masterid: get(r, "id")?,
                    name: get(r, "name")?,
                    active: get::<i64>(r, "active")? != 0,
                    last_active: get(r, "last_active")?,
                })
            })
            .collect()
    }
}

/// An API token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The token's id.
    pub id: i64,
    /// The user it authenticates as.
    pub user: String,
    /// What its owner called it.
    pub label: String,
    /// When it was created, Unix seconds.
    pub created_at: i64,
    /// Whether it was revoked; a revoked token logs nobody in.
    pub revoked: bool,
}

impl Store {
    /// Records a token by its hash; returns its id.
    pub async fn create_api_token(&self, user: &str, label: &str, token_hash: &str, now: i64) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO api_tokens (user_name, label, token_hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(user.to_string())
        .bind(label.to_string())
        .bind(token_hash.to_string())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        get(&row, "id")
    }

    /// The user of a live (not revoked) token, by the token's hash.
    pub async fn api_token_user(&self, token_hash: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT user_name FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL")
            .bind(token_hash.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| get(&r, "user_name")).transpose()
    }

    /// Revokes a token; false if it does not exist or was revoked already.
    pub async fn revoke_api_token(&self, id: i64, now: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every token, revoked ones too, by id.
    pub async fn list_api_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT id, user_name, label, created_at, revoked_at FROM api_tokens ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenRecord {
                    id: get(r, "id")?,
                    user: get(r, "user_name")?,
                    label: get(r, "label")?,
                    created_at: get(r, "created_at")?,
                    revoked: get::<Option<i64>>(r, "revoked_at")?.is_some(),
                })
            })
            .collect()
    }
}
