//! Masters: each running master has a row and keeps it fresh, so that
//! others sharing the database can tell a live master from a dead one.

use crate::records::{MasterRecord, get};
use crate::{Result, Store};

impl Store {
    /// Registers (or re-activates) the master called `name`; returns its id.
    pub async fn register_master(&self, name: &str, now: i64) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO masters (name, active, last_active) VALUES ($1, 1, $2) \
             ON CONFLICT (name) DO UPDATE SET active = 1, last_active = excluded.last_active RETURNING id",
        )
        .bind(name.to_string())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        get(&row, "id")
    }

    pub async fn master_heartbeat(&self, master_id: i64, now: i64) -> Result<()> {
        sqlx::query("UPDATE masters SET active = 1, last_active = $1 WHERE id = $2")
            .bind(now)
            .bind(master_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn deactivate_master(&self, master_id: i64) -> Result<()> {
        sqlx::query("UPDATE masters SET active = 0 WHERE id = $1").bind(master_id).execute(&self.pool).await?;
        Ok(())
    }

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
