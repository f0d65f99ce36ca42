//! Running builds: worker connections, steps, logs (compressed chunks,
//! readable by line range), properties, and how a build ends.

use std::io::{Read, Write};

use cascade_model::Results;
use sqlx::AssertSqlSafe;

use crate::changes::placeholders;
use crate::records::get;
use crate::{Result, Store, StoreError};

/// Chunks at least this big (bytes of text) are stored deflated.
const COMPRESS_FROM: usize = 512;
/// Lines are stored in chunks of at most this much text.
const CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepRecord {
    pub stepid: i64,
    pub buildid: i64,
    pub number: i64,
    pub name: String,
    pub started_at: Option<i64>,
    /// Cascade has no locks: a step has what it needs when it starts.
    pub locks_acquired_at: Option<i64>,
    pub complete_at: Option<i64>,
    pub complete: bool,
    pub state_string: String,
    pub results: Option<i64>,
    pub hidden: bool,
    pub urls: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogRecord {
    pub logid: i64,
    pub stepid: i64,
    pub name: String,
    pub slug: String,
    #[serde(rename = "type")]
    pub log_type: String,
    pub num_lines: i64,
    pub complete: bool,
}

fn deflate(text: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(text).map_err(|e| StoreError::Corrupt(format!("compressing a log chunk: {e}")))?;
    enc.finish().map_err(|e| StoreError::Corrupt(format!("compressing a log chunk: {e}")))
}

fn inflate(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| StoreError::Corrupt(format!("a log chunk does not inflate: {e}")))?;
    Ok(out)
}

impl Store {
    /// A worker attached to `master_id`: its info (never its environment)
    /// and the connection are recorded.
    pub async fn worker_attached(
        &self,
        worker_id: i64,
        master_id: i64,
        info: &serde_json::Value,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE workers SET info = $1 WHERE id = $2")
            .bind(info.to_string())
            .bind(worker_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO worker_connections (worker_id, master_id, connected_at) VALUES ($1, $2, $3) \
             ON CONFLICT (worker_id, master_id) DO UPDATE SET connected_at = excluded.connected_at",
        )
        .bind(worker_id)
        .bind(master_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn worker_detached(&self, worker_id: i64, master_id: i64) -> Result<()> {
        sqlx::query("DELETE FROM worker_connections WHERE worker_id = $1 AND master_id = $2")
            .bind(worker_id)
            .bind(master_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Builders with pending requests, the one waiting longest first.
    pub async fn pending_builder_ids(&self) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT builder_id, MIN(id) AS first FROM buildrequests \
             WHERE complete = 0 AND claimed_by_master_id IS NULL GROUP BY builder_id ORDER BY first",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| get(r, "builder_id")).collect()
    }

    pub async fn set_build_properties(
        &self,
        build_id: i64,
        props: &[(String, serde_json::Value, String)],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for (name, value, source) in props {
            sqlx::query(
                "INSERT INTO build_properties (build_id, name, value, source) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (build_id, name) DO UPDATE SET value = excluded.value, source = excluded.source",
            )
            .bind(build_id)
            .bind(name.clone())
            .bind(value.to_string())
            .bind(source.clone())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn build_properties(&self, build_id: i64) -> Result<Vec<(String, serde_json::Value, String)>> {
        let rows = sqlx::query("SELECT name, value, source FROM build_properties WHERE build_id = $1 ORDER BY name")
            .bind(build_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let value: String = get(r, "value")?;
                Ok((get(r, "name")?, crate::records::json_or_null(&value), get(r, "source")?))
            })
            .collect()
    }

    /// Properties of several builds at once (for `property=` on a list).
    pub async fn build_properties_many(
        &self,
        build_ids: &[i64],
    ) -> Result<std::collections::BTreeMap<i64, Vec<(String, serde_json::Value, String)>>> {
        let mut out: std::collections::BTreeMap<i64, Vec<_>> = std::collections::BTreeMap::new();
        for chunk in build_ids.chunks(500) {
            let list = crate::changes::placeholders(1, chunk.len());
            let sql = format!(
                "SELECT build_id, name, value, source FROM build_properties WHERE build_id IN ({list}) ORDER BY build_id, name"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(*id);
            }
            for r in q.fetch_all(&self.pool).await? {
                let value = crate::records::json_or_null(&get::<String>(&r, "value")?);
                out.entry(get(&r, "build_id")?).or_default().push((get(&r, "name")?, value, get(&r, "source")?));
            }
        }
        Ok(out)
    }

    /// Who asked for a build (its buildset's `owner` property), if anyone did.
    pub async fn build_owner(&self, build_id: i64) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT p.value FROM builds b JOIN buildrequests r ON r.id = b.build_request_id \
             JOIN buildset_properties p ON p.buildset_id = r.buildset_id AND p.name = 'owner' WHERE b.id = $1",
        )
        .bind(build_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        // Stored as `[value, source]`.
        let value = crate::records::json_or_null(&get::<String>(&r, "value")?);
        Ok(value.get(0).and_then(|v| v.as_str()).or_else(|| value.as_str()).map(str::to_string))
    }

    pub async fn set_build_state(&self, build_id: i64, state: &str) -> Result<()> {
        sqlx::query("UPDATE builds SET state_string = $1 WHERE id = $2")
            .bind(state.to_string())
            .bind(build_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn add_step(&self, build_id: i64, number: i64, name: &str, now: i64) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO steps (build_id, number, name, started_at, state_string) VALUES ($1, $2, $3, $4, 'running') \
             RETURNING id",
        )
        .bind(build_id)
        .bind(number)
        .bind(name.to_string())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        get(&row, "id")
    }

    pub async fn finish_step(&self, step_id: i64, results: Results, state: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE steps SET complete_at = $1, results = $2, state_string = $3 WHERE id = $4")
            .bind(now)
            .bind(results.code())
            .bind(state.to_string())
            .bind(step_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list_steps(&self, build_id: i64) -> Result<Vec<StepRecord>> {
        let rows = sqlx::query(
            "SELECT id, build_id, number, name, started_at, complete_at, state_string, results FROM steps \
             WHERE build_id = $1 ORDER BY number",
        )
        .bind(build_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(step_from).collect()
    }

    pub async fn get_step(&self, step_id: i64) -> Result<Option<StepRecord>> {
        let row =
            sqlx::query("SELECT build_id FROM steps WHERE id = $1").bind(step_id).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        let build_id: i64 = get(&row, "build_id")?;
        Ok(self.list_steps(build_id).await?.into_iter().find(|s| s.stepid == step_id))
    }

    pub async fn get_log(&self, log_id: i64) -> Result<Option<LogRecord>> {
        let row = sqlx::query("SELECT step_id FROM logs WHERE id = $1").bind(log_id).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        let step_id: i64 = get(&row, "step_id")?;
        Ok(self.list_logs(step_id).await?.into_iter().find(|l| l.logid == log_id))
    }

    pub async fn add_log(&self, step_id: i64, name: &str, log_type: &str) -> Result<i64> {
        let slug: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let row = sqlx::query(
            "INSERT INTO logs (step_id, name, slug, type, num_lines, complete) VALUES ($1, $2, $3, $4, 0, 0) RETURNING id",
        )
        .bind(step_id)
        .bind(name.to_string())
        .bind(slug)
        .bind(log_type.to_string())
        .fetch_one(&self.pool)
        .await?;
        get(&row, "id")
    }

    pub async fn list_logs(&self, step_id: i64) -> Result<Vec<LogRecord>> {
        let rows = sqlx::query(
            "SELECT id, step_id, name, slug, type, num_lines, complete FROM logs WHERE step_id = $1 ORDER BY id",
        )
        .bind(step_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LogRecord {
                    logid: get(r, "id")?,
                    stepid: get(r, "step_id")?,
                    name: get(r, "name")?,
                    slug: get(r, "slug")?,
                    log_type: get(r, "type")?,
                    num_lines: get(r, "num_lines")?,
                    complete: get::<i64>(r, "complete")? != 0,
                })
            })
            .collect()
    }

    /// Appends whole lines (without their `\n`) to a log, starting at line
    /// `first_line` (0-based; the caller tracks the count). Returns the new count.
    pub async fn append_log_lines(&self, log_id: i64, first_line: i64, lines: &[String]) -> Result<i64> {
        if lines.is_empty() {
            return Ok(first_line);
        }
        let mut tx = self.begin_write().await?;
        let mut start = 0usize;
        while start < lines.len() {
            let mut end = start;
            let mut size = 0usize;
            while end < lines.len() && (end == start || size + lines[end].len() < CHUNK_BYTES) {
                size += lines[end].len() + 1;
                end += 1;
            }
            let text = lines[start..end].join("\n");
            let (compressed, content) =
                if text.len() >= COMPRESS_FROM { (1i64, deflate(text.as_bytes())?) } else { (0, text.into_bytes()) };
            sqlx::query(
                "INSERT INTO log_chunks (log_id, first_line, last_line, compressed, content) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(log_id)
            .bind(first_line + start as i64)
            .bind(first_line + end as i64 - 1)
            .bind(compressed)
            .bind(content)
            .execute(&mut *tx)
            .await?;
            start = end;
        }
        let total = first_line + lines.len() as i64;
        sqlx::query("UPDATE logs SET num_lines = $1 WHERE id = $2").bind(total).bind(log_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(total)
    }

    pub async fn finish_log(&self, log_id: i64) -> Result<()> {
        sqlx::query("UPDATE logs SET complete = 1 WHERE id = $1").bind(log_id).execute(&self.pool).await?;
        Ok(())
    }

    /// Lines `first..=last` of a log, reading only the chunks that hold them.
    pub async fn log_lines(&self, log_id: i64, first: i64, last: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT first_line, last_line, compressed, content FROM log_chunks \
             WHERE log_id = $1 AND first_line <= $3 AND last_line >= $2 ORDER BY first_line",
        )
        .bind(log_id)
        .bind(first)
        .bind(last)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let chunk_first: i64 = get(r, "first_line")?;
            let content: Vec<u8> = get(r, "content")?;
            let bytes = if get::<i64>(r, "compressed")? != 0 { inflate(&content)? } else { content };
            let text = String::from_utf8(bytes).map_err(|_| StoreError::Corrupt("a log chunk is not UTF-8".into()))?;
            for (i, line) in text.split('\n').enumerate() {
                let n = chunk_first + i as i64;
                if n >= first && n <= last {
                    out.push(line.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Ends a build: the build, every request it covers, and each buildset
    /// whose requests are now all complete (with the worst of their results).
    pub async fn finish_build(&self, build_id: i64, results: Results, state: &str, now: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE builds SET complete_at = $1, results = $2, state_string = $3 WHERE id = $4")
            .bind(now)
            .bind(results.code())
            .bind(state.to_string())
            .bind(build_id)
            .execute(&mut *tx)
            .await?;
        let sets = sqlx::query(
            "UPDATE buildrequests SET complete = 1, complete_at = $1, results = $2 WHERE build_id = $3 RETURNING buildset_id",
        )
        .bind(now)
        .bind(results.code())
        .bind(build_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut buildsets: Vec<i64> = sets.iter().map(|r| get(r, "buildset_id")).collect::<Result<_>>()?;
        buildsets.sort_unstable();
        buildsets.dedup();
        for bsid in buildsets {
            let rows = sqlx::query("SELECT complete, results FROM buildrequests WHERE buildset_id = $1")
                .bind(bsid)
                .fetch_all(&mut *tx)
                .await?;
            let mut worst: Option<Results> = None;
            let mut all_done = true;
            for r in &rows {
                if get::<i64>(r, "complete")? == 0 {
                    all_done = false;
                    break;
                }
                let res = Results::from_code(get(r, "results")?).unwrap_or(Results::Exception);
                worst = Some(worst.map_or(res, |w| w.worst(res)));
            }
            if all_done {
                sqlx::query("UPDATE buildsets SET complete = 1, complete_at = $1, results = $2 WHERE id = $3")
                    .bind(now)
                    .bind(worst.unwrap_or(Results::Success).code())
                    .bind(bsid)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ends a build as RETRY (its worker was lost, or its master stopped)
    /// and puts the requests it covered back in the queue.
    pub async fn retry_build(&self, build_id: i64, state: &str, now: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE builds SET complete_at = $1, results = $2, state_string = $3 WHERE id = $4")
            .bind(now)
            .bind(Results::Retry.code())
            .bind(state.to_string())
            .bind(build_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE buildrequests SET claimed_by_master_id = NULL, claimed_at = NULL, build_id = NULL, merged_into = NULL \
             WHERE build_id = $1 AND complete = 0",
        )
        .bind(build_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// At start-up: builds this master left running end as RETRY, their
    /// requests go back to the queue, and its worker connections are gone.
    pub async fn recover_master(&self, master_id: i64, now: i64) -> Result<Vec<i64>> {
        let rows = sqlx::query("SELECT id FROM builds WHERE master_id = $1 AND complete_at IS NULL")
            .bind(master_id)
            .fetch_all(&self.pool)
            .await?;
        let ids: Vec<i64> = rows.iter().map(|r| get(r, "id")).collect::<Result<_>>()?;
        for id in &ids {
            self.retry_build(*id, "retry: the master restarted", now).await?;
        }
        sqlx::query("DELETE FROM worker_connections WHERE master_id = $1").bind(master_id).execute(&self.pool).await?;
        // Steps and logs of those builds stay as they were, marked finished.
        if !ids.is_empty() {
            let sql = format!(
                "UPDATE steps SET complete_at = $1, results = $2 WHERE complete_at IS NULL AND build_id IN ({})",
                placeholders(3, ids.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now).bind(Results::Retry.code());
            for id in &ids {
                q = q.bind(*id);
            }
            q.execute(&self.pool).await?;
        }
        Ok(ids)
    }
}

pub(crate) const STEP_COLUMNS: &str = "id, build_id, number, name, started_at, complete_at, state_string, results";

pub(crate) fn step_from(r: &sqlx::any::AnyRow) -> Result<StepRecord> {
    let complete_at: Option<i64> = get(r, "complete_at")?;
    Ok(StepRecord {
        stepid: get(r, "id")?,
        buildid: get(r, "build_id")?,
        number: get(r, "number")?,
        name: get(r, "name")?,
        started_at: get(r, "started_at")?,
        locks_acquired_at: get(r, "started_at")?,
        complete_at,
        complete: complete_at.is_some(),
        state_string: get(r, "state_string")?,
        results: get(r, "results")?,
        hidden: false,
        urls: Vec::new(),
    })
}
