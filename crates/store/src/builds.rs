//! Running builds: worker connections, steps, logs (compressed chunks,
//! readable by line range), properties, and how a build ends.

use std::io::{Read, Write};

use cascade_model::{Event, Results};
use sqlx::{AnyConnection, AssertSqlSafe};

use crate::changes::placeholders;
use crate::events::record;
use crate::records::get;
use crate::{Result, Store, StoreError};

/// Chunks at least this big (bytes of text) are stored deflated.
const COMPRESS_FROM: usize = 512;
/// Lines are stored in chunks of at most this much text.
const CHUNK_BYTES: usize = 64 * 1024;

/// A step (Buildbot's `/steps`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepRecord {
    /// The step's id.
    pub stepid: i64,
    /// The build it belongs to.
    pub buildid: i64,
    /// Its position in the build, from 0.
    pub number: i64,
    /// The step's name.
    pub name: String,
    /// When it started, Unix seconds.
    pub started_at: Option<i64>,
    /// Cascade has no locks: a step has what it needs when it starts.
    pub locks_acquired_at: Option<i64>,
    /// When it finished, Unix seconds.
    pub complete_at: Option<i64>,
    /// Whether it has finished.
    pub complete: bool,
    /// A short status line (`running`, then how it ended).
    pub state_string: String,
    /// Buildbot's result code; `None` while running.
    pub results: Option<i64>,
    /// Buildbot hides some steps from pages; never set here.
    pub hidden: bool,
    /// Buildbot's links a step adds; always empty here.
    pub urls: Vec<serde_json::Value>,
}

/// A log of a step (Buildbot's `/logs`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogRecord {
    /// The log's id.
    pub logid: i64,
    /// The step it belongs to.
    pub stepid: i64,
    /// The log's name (`stdio`, ...).
    pub name: String,
    /// The name with anything but ASCII letters and digits made `_`, unique within the step.
    pub slug: String,
    /// Buildbot's log type: `s` for stdio (each line led by its stream, `o`, `e` or `h`), `t` for text.
    #[serde(rename = "type")]
    pub log_type: String,
    /// How many lines it holds so far.
    pub num_lines: i64,
    /// Whether no more lines will come.
    pub complete: bool,
}

fn deflate(text: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(text).map_err(|e| StoreError::Corrupt(format!("compressing a log chunk: {e}")))?;
    enc.finish().map_err(|e| StoreError::Corrupt(format!("compressing a log chunk: {e}")))
}

/// A chunk's text as `log_chunks` keeps it: (compressed, content).
pub(crate) fn encode_chunk(text: String) -> Result<(i64, Vec<u8>)> {
    if text.len() >= COMPRESS_FROM { Ok((1, deflate(text.as_bytes())?)) } else { Ok((0, text.into_bytes())) }
}

/// The text of a stored chunk.
#[cfg(test)]
pub(crate) fn decode_stored_chunk(compressed: i64, content: &[u8]) -> Result<String> {
    let bytes = if compressed != 0 { inflate(content)? } else { content.to_vec() };
    String::from_utf8(bytes).map_err(|_| StoreError::Corrupt("a log chunk is not UTF-8".into()))
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
    /// and the connection are recorded, and [`Event::WorkerConnected`].
    pub async fn worker_attached(
        &self,
        worker_id: i64,
        master_id: i64,
        info: &serde_json::Value,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("UPDATE workers SET info = $1 WHERE id = $2 RETURNING name")
            .bind(info.to_string())
            .bind(worker_id)
            .fetch_one(&mut *tx)
            .await?;
        let worker: String = get(&row, "name")?;
        sqlx::query(
            "INSERT INTO worker_connections (worker_id, master_id, connected_at) VALUES ($1, $2, $3) \
             ON CONFLICT (worker_id, master_id) DO UPDATE SET connected_at = excluded.connected_at",
        )
        .bind(worker_id)
        .bind(master_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        record(&mut tx, &Event::WorkerConnected { worker_id, worker, master_id }, now).await?;
        tx.commit().await?;
        self.events_committed();
        Ok(())
    }

    /// The worker's connection to `master_id` ended ([`Event::WorkerLost`]).
    pub async fn worker_detached(&self, worker_id: i64, master_id: i64, now: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let gone = sqlx::query("DELETE FROM worker_connections WHERE worker_id = $1 AND master_id = $2")
            .bind(worker_id)
            .bind(master_id)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() > 0 {
            let row = sqlx::query("UPDATE workers SET disconnected_at = $1 WHERE id = $2 RETURNING name")
                .bind(now)
                .bind(worker_id)
                .fetch_one(&mut *tx)
                .await?;
            let worker: String = get(&row, "name")?;
            record(&mut tx, &Event::WorkerLost { worker_id, worker, master_id }, now).await?;
        }
        tx.commit().await?;
        self.events_committed();
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

    /// Sets build properties as (name, value, source), replacing any of the same name.
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

    /// A build's properties as (name, value, source), by name.
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
        let rows = self
            .rows_for_ids(build_ids, |list| {
                format!(
                    "SELECT build_id, name, value, source FROM build_properties WHERE build_id IN ({list}) \
                     ORDER BY build_id, name"
                )
            })
            .await?;
        for r in &rows {
            let value = crate::records::json_or_null(&get::<String>(r, "value")?);
            out.entry(get(r, "build_id")?).or_default().push((get(r, "name")?, value, get(r, "source")?));
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

    /// Sets the build's status line.
    pub async fn set_build_state(&self, build_id: i64, state: &str) -> Result<()> {
        sqlx::query("UPDATE builds SET state_string = $1 WHERE id = $2")
            .bind(state.to_string())
            .bind(build_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Starts step `number` of a build ([`Event::StepStarted`]); returns its id.
    pub async fn add_step(&self, build_id: i64, number: i64, name: &str, now: i64) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO steps (build_id, number, name, started_at, state_string) VALUES ($1, $2, $3, $4, 'running') \
             RETURNING id",
        )
        .bind(build_id)
        .bind(number)
        .bind(name.to_string())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let step_id: i64 = get(&row, "id")?;
        let (builder_id, build_number) = build_of(&mut tx, build_id).await?;
        let event = Event::StepStarted {
            build_id,
            builder_id,
            number: build_number,
            step_id,
            step_number: number,
            step: name.to_string(),
        };
        record(&mut tx, &event, now).await?;
        tx.commit().await?;
        self.events_committed();
        Ok(step_id)
    }

    /// Ends a step ([`Event::StepFinished`]); an unknown step is left alone.
    pub async fn finish_step(&self, step_id: i64, results: Results, state: &str, now: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE steps SET complete_at = $1, results = $2, state_string = $3 WHERE id = $4 \
             RETURNING build_id, number, name",
        )
        .bind(now)
        .bind(results.code())
        .bind(state.to_string())
        .bind(step_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(());
        };
        let build_id: i64 = get(&row, "build_id")?;
        let (builder_id, number) = build_of(&mut tx, build_id).await?;
        let event = Event::StepFinished {
            build_id,
            builder_id,
            number,
            step_id,
            step_number: get(&row, "number")?,
            step: get(&row, "name")?,
            results,
        };
        record(&mut tx, &event, now).await?;
        tx.commit().await?;
        self.events_committed();
        Ok(())
    }

    /// A build's steps, in order.
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

    /// One step, by id.
    pub async fn get_step(&self, step_id: i64) -> Result<Option<StepRecord>> {
        let row =
            sqlx::query("SELECT build_id FROM steps WHERE id = $1").bind(step_id).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        let build_id: i64 = get(&row, "build_id")?;
        Ok(self.list_steps(build_id).await?.into_iter().find(|s| s.stepid == step_id))
    }

    /// One log, by id.
    pub async fn get_log(&self, log_id: i64) -> Result<Option<LogRecord>> {
        let row = sqlx::query("SELECT step_id FROM logs WHERE id = $1").bind(log_id).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        let step_id: i64 = get(&row, "step_id")?;
        Ok(self.list_logs(step_id).await?.into_iter().find(|l| l.logid == log_id))
    }

    /// Adds an empty log to a step; returns its id.
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

    /// A step's logs, oldest first.
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
            let (compressed, content) = encode_chunk(lines[start..end].join("\n"))?;
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

    /// Marks a log complete: no more lines will come.
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
    /// whose requests are now all complete (with the worst of their
    /// results); [`Event::BuildFinished`]. A build that has ended already
    /// keeps its first end.
    pub async fn finish_build(&self, build_id: i64, results: Results, state: &str, now: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let Some(event) = end_build(&mut tx, build_id, results, state, now).await? else {
            tx.rollback().await?;
            return Ok(());
        };
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
            crate::buildrequests::complete_buildset_if_done(&mut tx, bsid, now).await?;
        }
        record(&mut tx, &event, now).await?;
        tx.commit().await?;
        self.events_committed();
        Ok(())
    }

    /// Ends a build as RETRY (its worker was lost, or its master stopped)
    /// and puts the requests it covered back in the queue.
    pub async fn retry_build(&self, build_id: i64, state: &str, now: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let Some(event) = end_build(&mut tx, build_id, Results::Retry, state, now).await? else {
            tx.rollback().await?;
            return Ok(());
        };
        sqlx::query(
            "UPDATE buildrequests SET claimed_by_master_id = NULL, claimed_at = NULL, build_id = NULL, merged_into = NULL \
             WHERE build_id = $1 AND complete = 0",
        )
        .bind(build_id)
        .execute(&mut *tx)
        .await?;
        record(&mut tx, &event, now).await?;
        tx.commit().await?;
        self.events_committed();
        Ok(())
    }

    /// The worker connections a master left behind are gone
    /// ([`Event::WorkerLost`] for each).
    pub(crate) async fn forget_connections(&self, master_id: i64, now: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "SELECT c.worker_id, w.name FROM worker_connections c JOIN workers w ON w.id = c.worker_id \
             WHERE c.master_id = $1 ORDER BY c.worker_id",
        )
        .bind(master_id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM worker_connections WHERE master_id = $1").bind(master_id).execute(&mut *tx).await?;
        for r in &rows {
            let event = Event::WorkerLost { worker_id: get(r, "worker_id")?, worker: get(r, "name")?, master_id };
            record(&mut tx, &event, now).await?;
        }
        tx.commit().await?;
        self.events_committed();
        Ok(())
    }

    /// At start-up: builds this master left running end as RETRY, their
    /// requests go back to the queue, and its worker connections are gone.
    pub async fn recover_master(&self, master_id: i64, now: i64) -> Result<Vec<i64>> {
        self.take_over_builds(master_id, "retry: the master restarted", now).await
    }

    /// Ends a master's unfinished builds as RETRY (their requests wait
    /// again) and forgets its workers' connections; returns the builds.
    pub(crate) async fn take_over_builds(&self, master_id: i64, reason: &str, now: i64) -> Result<Vec<i64>> {
        let rows = sqlx::query("SELECT id FROM builds WHERE master_id = $1 AND complete_at IS NULL")
            .bind(master_id)
            .fetch_all(&self.pool)
            .await?;
        let ids: Vec<i64> = rows.iter().map(|r| get(r, "id")).collect::<Result<_>>()?;
        for id in &ids {
            self.retry_build(*id, reason, now).await?;
        }
        self.forget_connections(master_id, now).await?;
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

/// A build's builder and number.
async fn build_of(conn: &mut AnyConnection, build_id: i64) -> Result<(i64, i64)> {
    let row = sqlx::query("SELECT builder_id, number FROM builds WHERE id = $1").bind(build_id).fetch_one(conn).await?;
    Ok((get(&row, "builder_id")?, get(&row, "number")?))
}

/// Marks the build ended; returns the event that says so, or `None` if it
/// had ended already (the first end stands) or does not exist.
async fn end_build(
    conn: &mut AnyConnection,
    build_id: i64,
    results: Results,
    state: &str,
    now: i64,
) -> Result<Option<Event>> {
    let row = sqlx::query(
        "UPDATE builds SET complete_at = $1, results = $2, state_string = $3 WHERE id = $4 AND complete_at IS NULL \
         RETURNING builder_id, number",
    )
    .bind(now)
    .bind(results.code())
    .bind(state.to_string())
    .bind(build_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let (builder_id, number): (i64, i64) = (get(&row, "builder_id")?, get(&row, "number")?);
    // The builder's newest finished build, kept as data in the same
    // transaction (builds may end out of order: the higher number wins).
    sqlx::query(
        "UPDATE builder_latest SET finished_build_id = $1, finished_number = $2 \
         WHERE builder_id = $3 AND (finished_number IS NULL OR finished_number < $2)",
    )
    .bind(build_id)
    .bind(number)
    .bind(builder_id)
    .execute(conn)
    .await?;
    Ok(Some(Event::BuildFinished { build_id, builder_id, number, results }))
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
