//! Builders and workers: matched by name, since Cascade's come from its
//! configuration. A Buildbot builder that Cascade has under the same name
//! becomes that builder; one it does not have is added unconfigured (its
//! history stays readable; configuring it later under that name makes it
//! live) with Buildbot's id when that id is free.

use std::collections::{BTreeMap, HashMap};

use sqlx::{Any, AnyPool, Row, Transaction};

use super::{ImportError, Result, TableCount, read_err};
use crate::{Store, StoreError};

/// What a Buildbot row with this name and id becomes in Cascade.
enum Place {
    /// Cascade has the name already, with this id.
    Existing(i64),
    /// Neither the name nor the id is taken: the row keeps its id.
    Free,
    /// The id is another row's: the row gets a new one.
    Taken,
}

async fn place(tx: &mut Transaction<'static, Any>, table: &str, id: i64, name: &str) -> Result<Place> {
    let sql = format!("SELECT id FROM {table} WHERE name = $1");
    if let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(name.to_string())
        .fetch_optional(&mut **tx)
        .await
        .map_err(StoreError::from)?
    {
        return Ok(Place::Existing(crate::records::get(&row, "id")?));
    }
    let sql = format!("SELECT id FROM {table} WHERE id = $1");
    let taken =
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut **tx).await.map_err(StoreError::from)?;
    Ok(if taken.is_some() { Place::Taken } else { Place::Free })
}

fn col<'r, T: sqlx::Decode<'r, Any> + sqlx::Type<Any>>(
    row: &'r sqlx::any::AnyRow,
    table: &str,
    name: &str,
) -> Result<T> {
    row.try_get(name).map_err(read_err(table))
}

/// Builders with their tags; returns Buildbot's id → Cascade's.
pub(super) async fn copy_builders(store: &Store, src: &AnyPool, notes: &mut Vec<String>) -> Result<HashMap<i64, i64>> {
    let mut tags: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let rows = sqlx::query(
        "SELECT CAST(bt.builderid AS BIGINT) AS builderid, t.name AS name FROM builders_tags bt \
         JOIN tags t ON t.id = bt.tagid ORDER BY bt.id",
    )
    .fetch_all(src)
    .await
    .map_err(read_err("builders_tags"))?;
    for r in &rows {
        tags.entry(col(r, "builders_tags", "builderid")?).or_default().push(col(r, "builders_tags", "name")?);
    }
    let rows = sqlx::query("SELECT CAST(id AS BIGINT) AS id, name, description FROM builders ORDER BY id")
        .fetch_all(src)
        .await
        .map_err(read_err("builders"))?;
    let mut tx = store.begin_write().await?;
    let mut map = HashMap::new();
    for r in &rows {
        let id: i64 = col(r, "builders", "id")?;
        let name: String = col(r, "builders", "name")?;
        let description: Option<String> = col(r, "builders", "description")?;
        let tags = serde_json::to_string(tags.get(&id).map_or(&[][..], Vec::as_slice)).unwrap_or_else(|_| "[]".into());
        let cascade = match place(&mut tx, "builders", id, &name).await? {
            Place::Existing(cascade) => cascade,
            placed => {
                let new_id = if let Place::Taken = placed { next_id(&mut tx, "builders").await? } else { id };
                sqlx::query(
                    "INSERT INTO builders (id, name, definition, branch, description, tags, configured) \
                     VALUES ($1, $2, $3, NULL, $4, $5, 0)",
                )
                .bind(new_id)
                .bind(name.clone())
                .bind(name.clone())
                .bind(description)
                .bind(tags)
                .execute(&mut *tx)
                .await
                .map_err(|e| row_err("builders", id, &e))?;
                new_id
            }
        };
        if cascade != id {
            notes.push(format!("builder {name:?} is Cascade's builder {cascade} (Buildbot's {id})"));
        }
        map.insert(id, cascade);
    }
    reserve(&mut tx, store, "builders").await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(map)
}

/// Workers (unconfigured unless Cascade's configuration has them); returns
/// Buildbot's id → Cascade's.
pub(super) async fn copy_workers(store: &Store, src: &AnyPool, notes: &mut Vec<String>) -> Result<HashMap<i64, i64>> {
    let rows = sqlx::query(
        "SELECT CAST(id AS BIGINT) AS id, name, info, CAST(paused AS BIGINT) AS paused, pause_reason, \
         CAST(graceful AS BIGINT) AS graceful FROM workers ORDER BY id",
    )
    .fetch_all(src)
    .await
    .map_err(read_err("workers"))?;
    let mut tx = store.begin_write().await?;
    let mut map = HashMap::new();
    for r in &rows {
        let id: i64 = col(r, "workers", "id")?;
        let name: String = col(r, "workers", "name")?;
        let info: Option<String> = col(r, "workers", "info")?;
        let paused: Option<i64> = col(r, "workers", "paused")?;
        let reason: Option<String> = col(r, "workers", "pause_reason")?;
        let graceful: Option<i64> = col(r, "workers", "graceful")?;
        let cascade = match place(&mut tx, "workers", id, &name).await? {
            Place::Existing(cascade) => cascade,
            placed => {
                let new_id = if let Place::Taken = placed { next_id(&mut tx, "workers").await? } else { id };
                sqlx::query(
                    "INSERT INTO workers (id, name, info, paused, pause_reason, graceful, configured) \
                     VALUES ($1, $2, $3, $4, $5, $6, 0)",
                )
                .bind(new_id)
                .bind(name.clone())
                .bind(info.unwrap_or_else(|| "{}".into()))
                .bind(i64::from(paused.unwrap_or(0) != 0))
                .bind(reason)
                .bind(i64::from(graceful.unwrap_or(0) != 0))
                .execute(&mut *tx)
                .await
                .map_err(|e| row_err("workers", id, &e))?;
                new_id
            }
        };
        if cascade != id {
            notes.push(format!("worker {name:?} is Cascade's worker {cascade} (Buildbot's {id})"));
        }
        map.insert(id, cascade);
    }
    reserve(&mut tx, store, "workers").await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(map)
}

fn row_err(table: &str, key: i64, e: &sqlx::Error) -> ImportError {
    ImportError::Row { table: table.into(), key, reason: e.to_string() }
}

/// The id after the highest (the import runs with the master stopped).
async fn next_id(tx: &mut Transaction<'static, Any>, table: &str) -> Result<i64> {
    let sql = format!("SELECT COALESCE(MAX(id), 0) + 1 AS next FROM {table}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(&mut **tx).await.map_err(StoreError::from)?;
    Ok(crate::records::get(&row, "next")?)
}

/// On PostgreSQL, moves a table's id sequence past its highest id, so ids
/// Cascade gives later never meet an imported one.
pub(super) async fn reserve(tx: &mut Transaction<'static, Any>, store: &Store, table: &str) -> Result<()> {
    if store.backend() != crate::Backend::Postgres {
        return Ok(());
    }
    let sql = format!(
        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST((SELECT COALESCE(MAX(id), 0) FROM {table}), \
         (SELECT last_value FROM {table}_id_seq), 1))"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut **tx).await.map_err(StoreError::from)?;
    Ok(())
}

/// Builders and workers: how many Buildbot has, and how many of them Cascade has by name.
pub(super) async fn named_counts(store: &Store, ctx: &super::Ctx) -> Result<Vec<TableCount>> {
    let mut out = Vec::new();
    for (table, map) in [("builders", &ctx.builders), ("workers", &ctx.workers)] {
        let sql = format!("SELECT COUNT(*) AS n FROM {table}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(&ctx.src).await.map_err(read_err(table))?;
        let source: i64 = row.try_get("n").map_err(read_err(table))?;
        let mut cascade = 0;
        for id in map.values() {
            let sql = format!("SELECT id FROM {table} WHERE id = $1");
            if sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(*id)
                .fetch_optional(&store.pool)
                .await
                .map_err(StoreError::from)?
                .is_some()
            {
                cascade += 1;
            }
        }
        out.push(TableCount { table: table.into(), source, cascade });
    }
    Ok(out)
}
