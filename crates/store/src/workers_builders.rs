//! Builders and workers: rows mirrored from the configuration at start-up.

use std::collections::BTreeMap;

use sqlx::AssertSqlSafe;

use crate::changes::placeholders;
use crate::query::{Bind, FieldType, ListQuery, Page, bind_all, compile, fetch_page, field};
use crate::records::{BuilderMaster, BuilderRecord, ConnectedMaster, WorkerRecord, get, json_or_null};
use crate::{Result, Store};

/// A configured builder, as mirrored into the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderSpec {
    /// Its expanded name, `<definition> <branch>`; unique.
    pub name: String,
    /// The builder definition it was expanded from.
    pub definition: String,
    /// The branch label it builds (`3.x`); `None` if its definition lists no branches.
    pub branch: Option<String>,
    /// Its configured description.
    pub description: Option<String>,
    /// Its configured tags.
    pub tags: Vec<String>,
    /// The names of the workers that may run its builds.
    pub workers: Vec<String>,
}

/// A configured worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    /// The name it logs in with.
    pub name: String,
}

const BUILDER_FIELDS: &[crate::query::Field] = &[
    field("builderid", "b.id", FieldType::Int),
    field("name", "b.name", FieldType::Text),
    field("description", "b.description", FieldType::Text),
    field("tags", "b.tags", FieldType::Text),
    // Cascade's: the branch label a builder was expanded for.
    field("branch", "b.branch", FieldType::Text),
];

const WORKER_FIELDS: &[crate::query::Field] = &[
    field("workerid", "w.id", FieldType::Int),
    field("name", "w.name", FieldType::Text),
    field("paused", "w.paused", FieldType::Flag),
    field("graceful", "w.graceful", FieldType::Flag),
];

impl Store {
    /// Mirrors master `master_id`'s configured builders and workers into
    /// the database: its own rows of `builder_masters`, `worker_masters` and
    /// `configured_workers` are replaced, other masters' stay. Builders and
    /// workers no master configures keep their rows (their history stays
    /// reachable) but are marked unconfigured.
    pub async fn sync_configuration(
        &self,
        master_id: i64,
        builders: &[BuilderSpec],
        workers: &[WorkerSpec],
    ) -> Result<(BTreeMap<String, i64>, BTreeMap<String, i64>)> {
        let mut tx = self.begin_write().await?;
        let mut builder_ids = BTreeMap::new();
        for b in builders {
            let tags = serde_json::to_string(&b.tags).unwrap_or_else(|_| "[]".into());
            let row = sqlx::query(
                "INSERT INTO builders (name, definition, branch, description, tags, configured) \
                 VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, \
                 branch = excluded.branch, description = excluded.description, tags = excluded.tags, configured = 1 \
                 RETURNING id",
            )
            .bind(b.name.clone())
            .bind(b.definition.clone())
            .bind(b.branch.clone())
            .bind(b.description.clone())
            .bind(tags)
            .fetch_one(&mut *tx)
            .await?;
            builder_ids.insert(b.name.clone(), get::<i64>(&row, "id")?);
        }
        let mut worker_ids = BTreeMap::new();
        for w in workers {
            let row = sqlx::query(
                "INSERT INTO workers (name, configured) VALUES ($1, 1) \
                 ON CONFLICT (name) DO UPDATE SET configured = 1 RETURNING id",
            )
            .bind(w.name.clone())
            .fetch_one(&mut *tx)
            .await?;
            worker_ids.insert(w.name.clone(), get::<i64>(&row, "id")?);
        }
        let mut pairs = Vec::new();
        for b in builders {
            for w in &b.workers {
                if let (Some(bid), Some(wid)) = (builder_ids.get(&b.name), worker_ids.get(w)) {
                    pairs.push((*wid, *bid));
                }
            }
        }
        for table in ["builder_masters", "worker_masters", "configured_workers"] {
            let sql = format!("DELETE FROM {table} WHERE master_id = $1");
            sqlx::query(AssertSqlSafe(sql)).bind(master_id).execute(&mut *tx).await?;
        }
        for id in builder_ids.values() {
            insert_pair(&mut tx, "INSERT INTO builder_masters (builder_id, master_id) VALUES ($1, $2)", *id, master_id)
                .await?;
        }
        for id in worker_ids.values() {
            insert_pair(&mut tx, "INSERT INTO worker_masters (worker_id, master_id) VALUES ($1, $2)", *id, master_id)
                .await?;
        }
        for (wid, bid) in pairs {
            sqlx::query("INSERT INTO configured_workers (worker_id, builder_id, master_id) VALUES ($1, $2, $3)")
                .bind(wid)
                .bind(bid)
                .bind(master_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE builders SET configured = 0 WHERE configured = 1 \
             AND NOT EXISTS (SELECT 1 FROM builder_masters m WHERE m.builder_id = builders.id)",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE workers SET configured = 0 WHERE configured = 1 \
             AND NOT EXISTS (SELECT 1 FROM worker_masters m WHERE m.worker_id = workers.id)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((builder_ids, worker_ids))
    }

    /// The names of every worker connected now (to any master), however
    /// many there are: pages use it, so no page cap applies.
    pub async fn connected_worker_names(&self) -> Result<std::collections::BTreeSet<String>> {
        let rows = sqlx::query("SELECT DISTINCT w.name FROM workers w JOIN worker_connections c ON c.worker_id = w.id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| get(r, "name")).collect()
    }

    /// How many workers are connected to each master, however many there are.
    pub async fn connections_by_master(&self) -> Result<BTreeMap<i64, i64>> {
        let rows = sqlx::query("SELECT master_id, COUNT(*) AS n FROM worker_connections GROUP BY master_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((get(r, "master_id")?, get(r, "n")?))).collect()
    }

    /// Every worker's name by id, however many there are.
    pub async fn worker_names(&self) -> Result<BTreeMap<i64, String>> {
        let rows = sqlx::query("SELECT id, name FROM workers").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((get(r, "id")?, get(r, "name")?))).collect()
    }
}

/// One row of a two-column table.
async fn insert_pair(tx: &mut sqlx::Transaction<'static, sqlx::Any>, sql: &'static str, a: i64, b: i64) -> Result<()> {
    sqlx::query(sql).bind(a).bind(b).execute(&mut **tx).await?;
    Ok(())
}

impl Store {
    /// For each id of `column` in `table`, the active masters that serve it.
    async fn active_masters_of(
        &self,
        table: &'static str,
        column: &'static str,
        ids: &[i64],
    ) -> Result<BTreeMap<i64, Vec<i64>>> {
        let rows = self
            .rows_for_ids(ids, |list| {
                format!(
                    "SELECT t.{column} AS id, t.master_id FROM {table} t JOIN masters m ON m.id = t.master_id \
                     WHERE m.active = 1 AND t.{column} IN ({list}) ORDER BY t.master_id"
                )
            })
            .await?;
        let mut out: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for r in &rows {
            out.entry(get(r, "id")?).or_default().push(get(r, "master_id")?);
        }
        Ok(out)
    }

    /// Lists builders (Buildbot's `/builders`); `tags` filters only with `tags__contains`.
    pub async fn list_builders(&self, q: &ListQuery) -> Result<Page<BuilderRecord>> {
        // Tags are a JSON list in one column; `tags__contains=stable` must not
        // match "unstable", so the quoted form is searched.
        let mut q = q.clone();
        for f in q.filters.iter_mut().filter(|f| f.field == "tags") {
            if f.op != crate::Op::Contains {
                return Err(crate::StoreError::BadQuery("field tags: use tags__contains=TAG".into()));
            }
            for v in f.values.iter_mut() {
                *v = serde_json::to_string(v).unwrap_or_default();
            }
        }
        let compiled = compile(BUILDER_FIELDS, &q, "b.id")?;
        let (rows, total) =
            fetch_page(&self.pool, "b.id, b.name, b.description, b.tags, b.configured", "builders b", &compiled)
                .await?;
        let ids: Vec<i64> = rows.iter().map(|r| get(r, "id")).collect::<Result<_>>()?;
        let mut masters = self.active_masters_of("builder_masters", "builder_id", &ids).await?;
        let items = rows
            .iter()
            .map(|r| {
                let tags: String = get(r, "tags")?;
                let id: i64 = get(r, "id")?;
                Ok(BuilderRecord {
                    builderid: id,
                    name: get(r, "name")?,
                    masterids: masters.remove(&id).unwrap_or_default(),
                    description: get(r, "description")?,
                    description_format: None,
                    description_html: None,
                    projectid: None,
                    tags: serde_json::from_str(&tags).unwrap_or_default(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    /// One builder, by id.
    pub async fn get_builder(&self, id: i64) -> Result<Option<BuilderRecord>> {
        Ok(self.list_builders(&ListQuery::default().eq("builderid", id)).await?.items.into_iter().next())
    }

    /// One builder, by name.
    pub async fn get_builder_by_name(&self, name: &str) -> Result<Option<BuilderRecord>> {
        Ok(self.list_builders(&ListQuery::default().eq("name", name)).await?.items.into_iter().next())
    }

    /// Lists workers (Buildbot's `/workers`) with the builders they serve and the masters they are on.
    pub async fn list_workers(&self, q: &ListQuery) -> Result<Page<WorkerRecord>> {
        let compiled = compile(WORKER_FIELDS, q, "w.id")?;
        let (rows, total) = fetch_page(
            &self.pool,
            "w.id, w.name, w.info, w.paused, w.pause_reason, w.graceful, w.configured, w.disconnected_at",
            "workers w",
            &compiled,
        )
        .await?;
        let ids: Vec<i64> = rows.iter().map(|r| get(r, "id")).collect::<Result<_>>()?;
        let mut configured_on: BTreeMap<i64, Vec<BuilderMaster>> = BTreeMap::new();
        let mut connected_to: BTreeMap<i64, Vec<ConnectedMaster>> = BTreeMap::new();
        for chunk in ids.chunks(500) {
            let binds: Vec<Bind> = chunk.iter().map(|&i| Bind::Int(i)).collect();
            let sql = format!(
                "SELECT c.worker_id, c.builder_id, c.master_id FROM configured_workers c \
                 JOIN masters m ON m.id = c.master_id WHERE m.active = 1 AND c.worker_id IN ({}) \
                 ORDER BY c.builder_id, c.master_id",
                placeholders(1, chunk.len())
            );
            for row in bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).fetch_all(&self.pool).await? {
                let list = configured_on.entry(get(&row, "worker_id")?).or_default();
                list.push(BuilderMaster { builderid: get(&row, "builder_id")?, masterid: get(&row, "master_id")? });
            }
            let sql = format!(
                "SELECT worker_id, master_id FROM worker_connections WHERE worker_id IN ({})",
                placeholders(1, chunk.len())
            );
            for row in bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).fetch_all(&self.pool).await? {
                connected_to
                    .entry(get(&row, "worker_id")?)
                    .or_default()
                    .push(ConnectedMaster { masterid: get(&row, "master_id")? });
            }
        }
        let items = rows
            .iter()
            .map(|r| {
                let id: i64 = get(r, "id")?;
                let info: String = get(r, "info")?;
                Ok(WorkerRecord {
                    workerid: id,
                    name: get(r, "name")?,
                    workerinfo: json_or_null(&info),
                    paused: get::<i64>(r, "paused")? != 0,
                    pause_reason: get(r, "pause_reason")?,
                    graceful: get::<i64>(r, "graceful")? != 0,
                    configured_on: configured_on.remove(&id).unwrap_or_default(),
                    connected_to: connected_to.remove(&id).unwrap_or_default(),
                    disconnected_at: get(r, "disconnected_at")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    /// The workers some running master configures for `builder_id`, by id.
    pub async fn builder_worker_ids(&self, builder_id: i64) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT DISTINCT c.worker_id FROM configured_workers c JOIN masters m ON m.id = c.master_id \
             WHERE m.active = 1 AND c.builder_id = $1 ORDER BY c.worker_id",
        )
        .bind(builder_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| get(r, "worker_id")).collect()
    }

    /// Pauses a worker (no new builds) or lets it work again.
    pub async fn set_worker_paused(&self, id: i64, paused: bool, reason: Option<&str>) -> Result<bool> {
        let done = sqlx::query("UPDATE workers SET paused = $1, pause_reason = $2 WHERE id = $3")
            .bind(crate::infra::flag(paused))
            .bind(if paused { reason.map(str::to_string) } else { None })
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a worker as shutting down once idle (or not).
    pub async fn set_worker_graceful(&self, id: i64, graceful: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE workers SET graceful = $1 WHERE id = $2")
            .bind(crate::infra::flag(graceful))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// One worker, by id.
    pub async fn get_worker(&self, id: i64) -> Result<Option<WorkerRecord>> {
        Ok(self.list_workers(&ListQuery::default().eq("workerid", id)).await?.items.into_iter().next())
    }
}
