//! The copy of the tables in [`TABLES`]: each read in batches by its key
//! from where the last committed batch ended (`buildbot_imports`), its
//! rows and their children written with the new end in one transaction.

use std::collections::HashMap;
use std::time::Instant;

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::spec::id_tables;
use super::{
    Backend, CANCELLED, Col, Conv, Ctx, Fix, ImportError, Part, Progress, Result, Store, StoreError, TABLES, Table,
    TableCount, Val, decode, read_err, write_err,
};

/// Counters of one run.
pub(super) struct Run {
    pub batches: u64,
    pub written: i64,
    pub builds: i64,
    pub limit: Option<u64>,
}

/// The offsets of this source's ids, fixed by its first run: the store's
/// highest id of each table then (so 0 for a new store: ids are kept).
pub(super) async fn prepare(store: &Store, src: &sqlx::AnyPool, source: &str) -> Result<HashMap<String, i64>> {
    let mut tx = store.begin_write().await?;
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    for name in &names {
        let known = sqlx::query("SELECT id_offset FROM buildbot_imports WHERE source = $1 AND name = $2")
            .bind(source.to_string())
            .bind(name.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        if known.is_some() {
            continue;
        }
        let offset = if *name == "log_chunks" { 0 } else { max_id(&mut tx, name).await? };
        sqlx::query(
            "INSERT INTO buildbot_imports (source, name, id_offset, done_key, done_line) VALUES ($1, $2, $3, 0, -1)",
        )
        .bind(source.to_string())
        .bind(name.to_string())
        .bind(offset)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
    }
    let rows = sqlx::query("SELECT name, id_offset FROM buildbot_imports WHERE source = $1")
        .bind(source.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::from)?;
    let mut offsets = HashMap::new();
    for r in &rows {
        offsets.insert(crate::records::get::<String>(r, "name")?, crate::records::get::<i64>(r, "id_offset")?);
    }
    // Ids Cascade hands out from now on start past every imported one.
    if store.backend() == Backend::Postgres {
        for table in id_tables() {
            let top = offsets.get(table).copied().unwrap_or(0) + source_max(src, table_key(table)).await?;
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), GREATEST($1, (SELECT last_value FROM {table}_id_seq)))"
            );
            if top > 0 {
                sqlx::query(AssertSqlSafe(sql)).bind(top).execute(&mut *tx).await.map_err(StoreError::from)?;
            }
        }
    }
    tx.commit().await.map_err(StoreError::from)?;
    Ok(offsets)
}

fn table_key(name: &str) -> (&'static str, &'static str) {
    let t = TABLES.iter().find(|t| t.name == name).unwrap_or(&TABLES[0]);
    (t.main.from, t.main.key)
}

async fn max_id(tx: &mut sqlx::Transaction<'static, sqlx::Any>, table: &str) -> Result<i64> {
    let sql = format!("SELECT COALESCE(MAX(id), 0) AS m FROM {table}");
    let row = sqlx::query(AssertSqlSafe(sql)).fetch_one(&mut **tx).await.map_err(StoreError::from)?;
    Ok(crate::records::get(&row, "m")?)
}

async fn source_max(src: &sqlx::AnyPool, (from, key): (&str, &str)) -> Result<i64> {
    let sql = format!("SELECT CAST(COALESCE(MAX({key}), 0) AS BIGINT) AS m FROM {from}");
    let row = sqlx::query(AssertSqlSafe(sql)).fetch_one(src).await.map_err(read_err(from))?;
    row.try_get("m").map_err(read_err(from))
}

async fn source_count(src: &sqlx::AnyPool, from: &str, filter: &str, binds: &[i64]) -> Result<i64> {
    let sql = format!("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM {from} {filter}");
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for b in binds {
        q = q.bind(*b);
    }
    let row = q.fetch_one(src).await.map_err(read_err(from))?;
    row.try_get("n").map_err(read_err(from))
}

/// One batch, read and converted: each part's rows, and where it ends.
struct Batch {
    rows: Vec<Vec<Vec<Val>>>,
    main_rows: i64,
    end: (i64, i64),
}

/// Copies one table to its end (true) or until the run's batch limit (false).
pub(super) async fn copy_table(
    store: &Store,
    ctx: &Ctx,
    table: &Table,
    run: &mut Run,
    progress: &mut dyn Progress,
) -> Result<bool> {
    let row = sqlx::query("SELECT done_key, done_line FROM buildbot_imports WHERE source = $1 AND name = $2")
        .bind(ctx.source.clone())
        .bind(table.name)
        .fetch_one(&store.pool)
        .await
        .map_err(StoreError::from)?;
    let mut after: (i64, i64) = (crate::records::get(&row, "done_key")?, crate::records::get(&row, "done_line")?);
    let m = &table.main;
    let total = source_count(&ctx.src, m.from, "", &[]).await?;
    let mut done = if table.by_line {
        source_count(&ctx.src, m.from, &format!("WHERE ({}, first_line) <= ($1, $2)", m.key), &[after.0, after.1])
            .await?
    } else {
        source_count(&ctx.src, m.from, &format!("WHERE {} <= $1", m.key), &[after.0]).await?
    };
    let started = Instant::now();
    progress.start(table.name, done, total);
    let mut next = read_batch(ctx, table, after).await?;
    loop {
        if run.limit.is_some_and(|l| run.batches >= l) {
            return Ok(false);
        }
        let Some(batch) = next else { break };
        // Read the next batch while this one is written.
        let (end, main_rows) = (batch.end, batch.main_rows);
        let (written, read) = tokio::join!(write_batch(store, ctx, table, after, batch), read_batch(ctx, table, end));
        run.written += written?;
        run.batches += 1;
        if table.name == "builds" {
            run.builds += main_rows;
        }
        done += main_rows;
        after = end;
        progress.advance(table.name, done, total);
        next = read?;
    }
    progress.finish(table.name, done, total, started.elapsed());
    Ok(true)
}

fn select_list(ctx: &Ctx, cols: &[Col]) -> String {
    cols.iter()
        .enumerate()
        .map(|(i, Col(expr, conv))| match conv {
            Conv::Text | Conv::OptText | Conv::TextOrEmpty | Conv::PropValue => format!("{expr} AS c{i}"),
            Conv::Bytes if ctx.src_backend == Backend::Sqlite => format!("CAST({expr} AS BLOB) AS c{i}"),
            Conv::Bytes => format!("{expr} AS c{i}"),
            _ => format!("CAST({expr} AS BIGINT) AS c{i}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn read_batch(ctx: &Ctx, table: &Table, after: (i64, i64)) -> Result<Option<Batch>> {
    let m = &table.main;
    let list = select_list(ctx, m.cols);
    let sql = if table.by_line {
        format!(
            "SELECT {list} FROM {} WHERE ({key}, first_line) > ($1, $2) ORDER BY {key}, first_line LIMIT $3",
            m.from,
            key = m.key
        )
    } else {
        format!("SELECT {list} FROM {} WHERE {key} > $1 ORDER BY {key} LIMIT $2", m.from, key = m.key)
    };
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(after.0);
    if table.by_line {
        q = q.bind(after.1);
    }
    let rows = q.bind(table.batch).fetch_all(&ctx.src).await.map_err(read_err(m.from))?;
    let Some(last) = rows.last() else { return Ok(None) };
    let end_key: i64 = last.try_get(0).map_err(read_err(m.from))?;
    let end = if table.by_line { (end_key, last.try_get(1).map_err(read_err(m.from))?) } else { (end_key, -1) };
    let main_rows = rows.len() as i64;
    let mut parts = vec![convert_all(ctx, m, &rows)?];
    for child in table.children {
        let sql = format!(
            "SELECT {} FROM {} WHERE {key} > $1 AND {key} <= $2",
            select_list(ctx, child.cols),
            child.from,
            key = child.key
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(after.0)
            .bind(end.0)
            .fetch_all(&ctx.src)
            .await
            .map_err(read_err(child.from))?;
        parts.push(convert_all(ctx, child, &rows)?);
    }
    Ok(Some(Batch { rows: parts, main_rows, end }))
}

fn convert_all(ctx: &Ctx, part: &Part, rows: &[AnyRow]) -> Result<Vec<Vec<Val>>> {
    rows.iter()
        .map(|r| {
            let key: Option<i64> = r.try_get(0).map_err(read_err(part.from))?;
            let key = key.unwrap_or(0);
            let err = |reason: String| ImportError::Row { table: part.from.to_string(), key, reason };
            let mut vals = Vec::with_capacity(part.cols.len());
            for (i, Col(expr, conv)) in part.cols.iter().enumerate() {
                vals.push(convert(ctx, r, i, *conv).map_err(|e| err(format!("{expr}: {e}")))?);
            }
            fix(part.fix, &mut vals).map_err(err)?;
            Ok(vals.into_iter().zip(part.cols).filter(|(_, c)| c.1 != Conv::Skip).map(|(v, _)| v).collect())
        })
        .collect()
}

fn convert(ctx: &Ctx, r: &AnyRow, i: usize, conv: Conv) -> std::result::Result<Val, String> {
    let int = || r.try_get::<Option<i64>, _>(i).map_err(|e| e.to_string());
    let text = || r.try_get::<Option<String>, _>(i).map_err(|e| e.to_string());
    let present = |v: Option<i64>| v.ok_or_else(|| "is NULL".to_string());
    let moved = |table: &str, v: i64| v + ctx.offsets.get(table).copied().unwrap_or(0);
    Ok(match conv {
        Conv::Int => Val::Int(present(int()?)?),
        Conv::OptInt | Conv::Skip => int()?.map_or(Val::NullInt, Val::Int),
        Conv::IntOr0 => Val::Int(int()?.unwrap_or(0)),
        Conv::IntOrNeg1 => Val::Int(int()?.unwrap_or(-1)),
        Conv::Text => Val::Text(text()?.ok_or("is NULL")?),
        Conv::OptText => text()?.map_or(Val::NullText, Val::Text),
        Conv::TextOrEmpty => Val::Text(text()?.unwrap_or_default()),
        Conv::Bytes => Val::Bytes(r.try_get::<Option<Vec<u8>>, _>(i).map_err(|e| e.to_string())?.unwrap_or_default()),
        Conv::Id(table) => Val::Int(moved(table, present(int()?)?)),
        Conv::OptId(table) => int()?.map_or(Val::NullInt, |v| Val::Int(moved(table, v))),
        Conv::Builder => {
            let id = present(int()?)?;
            Val::Int(*ctx.builders.get(&id).ok_or_else(|| format!("builder {id} is not in builders"))?)
        }
        Conv::OptWorker => match int()? {
            Some(id) => Val::Int(*ctx.workers.get(&id).ok_or_else(|| format!("worker {id} is not in workers"))?),
            None => Val::NullInt,
        },
        Conv::OptMaster => int()?.map_or(Val::NullInt, |_| Val::Int(ctx.master)),
        Conv::PropValue => {
            let (value, _source) = decode::split_property(&text()?.ok_or("is NULL")?)?;
            Val::Text(value.to_string())
        }
    })
}

fn int_at(vals: &[Val], i: usize) -> Option<i64> {
    match vals.get(i) {
        Some(Val::Int(v)) => Some(*v),
        _ => None,
    }
}

fn fix(fix: Fix, vals: &mut [Val]) -> std::result::Result<(), String> {
    match fix {
        Fix::None => {}
        Fix::Unfinished { complete, complete_at, results, since } => {
            let unfinished = match complete {
                Some(c) => int_at(vals, c) == Some(0),
                None => int_at(vals, complete_at).is_none(),
            };
            if let (true, Some(began)) = (unfinished, int_at(vals, since)) {
                if let Some(c) = complete {
                    vals[c] = Val::Int(1);
                }
                vals[complete_at] = Val::Int(began);
                vals[results] = Val::Int(CANCELLED);
            }
        }
        Fix::SourceStamp => {
            // Buildbot's own hash (of branch, revision, repository, project,
            // codebase, patch) is unique as Cascade's keys must be, and
            // cannot meet a key Cascade makes.
            let Val::Text(hash) = &vals[1] else { return Err("ss_hash is NULL".into()) };
            vals[1] = Val::Text(format!("buildbot:{hash}"));
        }
        Fix::LogChunk => {
            let code = int_at(vals, 3).ok_or("compressed is NULL")?;
            let Val::Bytes(bytes) = &vals[4] else { return Err("content is not bytes".into()) };
            let text = decode::decode_chunk(code, bytes)?;
            let (compressed, content) = crate::builds::encode_chunk(text).map_err(|e| e.to_string())?;
            vals[3] = Val::Int(compressed);
            vals[4] = Val::Bytes(content);
        }
    }
    Ok(())
}

async fn write_batch(store: &Store, ctx: &Ctx, table: &Table, after: (i64, i64), batch: Batch) -> Result<i64> {
    let werr = write_err(table.name, after.0);
    let result: std::result::Result<i64, StoreError> = async {
        let mut tx = store.begin_write().await?;
        let mut written = 0;
        for (part, rows) in std::iter::once(&table.main).chain(table.children).zip(batch.rows) {
            written += insert_rows(&mut tx, store.backend(), part, rows).await?;
        }
        sqlx::query("UPDATE buildbot_imports SET done_key = $1, done_line = $2 WHERE source = $3 AND name = $4")
            .bind(batch.end.0)
            .bind(batch.end.1)
            .bind(ctx.source.clone())
            .bind(table.name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(written)
    }
    .await;
    result.map_err(werr)
}

/// Multi-row inserts, as many rows per statement as the bind limit allows;
/// returns the rows written.
async fn insert_rows(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    part: &Part,
    rows: Vec<Vec<Val>>,
) -> std::result::Result<i64, StoreError> {
    let Some(width) = rows.first().map(Vec::len) else { return Ok(0) };
    let mut written = 0;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Val>> = rows.by_ref().take((BINDS / width).max(1)).collect();
        let values: Vec<String> = (0..chunk.len()).map(|r| row_placeholders(backend, r * width, width)).collect();
        let sql =
            format!("INSERT INTO {} ({}) VALUES {} {}", part.target, part.columns, values.join(", "), part.conflict);
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for v in chunk.into_iter().flatten() {
            q = match v {
                Val::Int(i) => q.bind(i),
                Val::NullInt => q.bind(None::<i64>),
                Val::Text(s) => q.bind(s),
                Val::NullText => q.bind(None::<String>),
                Val::Bytes(b) => q.bind(b),
            };
        }
        written += q.execute(&mut **tx).await?.rows_affected() as i64;
    }
    Ok(written)
}

const BINDS: usize = super::BINDS_PER_STATEMENT;

/// One row's placeholders, after `before` others. SQLite gets `?`: it finds
/// a numbered parameter's name by a linear search, so binding thousands of
/// `$N` costs their square; PostgreSQL needs `$N`.
fn row_placeholders(backend: Backend, before: usize, width: usize) -> String {
    let one = |c: usize| match backend {
        Backend::Sqlite => "?".to_string(),
        Backend::Postgres => format!("${}", before + c),
    };
    format!("({})", (1..=width).map(one).collect::<Vec<_>>().join(", "))
}

/// Each part's rows in Buildbot and, among those ids, in Cascade.
pub(super) async fn table_counts(store: &Store, ctx: &Ctx, table: &Table) -> Result<Vec<TableCount>> {
    let mut out = Vec::new();
    for part in std::iter::once(&table.main).chain(table.children) {
        let source = source_count(&ctx.src, part.from, "", &[]).await?;
        let offset = ctx.offsets.get(part.key_table).copied().unwrap_or(0);
        let top = offset + source_max(&ctx.src, (part.from, part.key)).await?;
        let sql = format!(
            "SELECT COUNT(*) AS n FROM {} WHERE {key} > $1 AND {key} <= $2",
            part.target,
            key = part.target_key
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(offset)
            .bind(top)
            .fetch_one(&store.pool)
            .await
            .map_err(StoreError::from)?;
        out.push(TableCount { table: part.target.to_string(), source, cascade: crate::records::get(&row, "n")? });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_per_backend() {
        assert_eq!(row_placeholders(Backend::Postgres, 3, 2), "($4, $5)");
        assert_eq!(row_placeholders(Backend::Sqlite, 3, 2), "(?, ?)");
    }

    #[test]
    fn unfinished_rows_end_cancelled_when_they_began() {
        let fix_of = |f: Fix, mut v: Vec<Val>| {
            fix(f, &mut v).expect("fix");
            v
        };
        // a build: id, number, builder, request, worker, master, started_at, complete_at, state, results
        let build = |complete_at: Val, results: Val| {
            vec![
                Val::Int(1),
                Val::Int(1),
                Val::Int(1),
                Val::Int(1),
                Val::NullInt,
                Val::Int(1),
                Val::Int(100),
                complete_at,
                Val::Text("x".into()),
                results,
            ]
        };
        let f = Fix::Unfinished { complete: None, complete_at: 7, results: 9, since: 6 };
        assert_eq!(fix_of(f, build(Val::NullInt, Val::NullInt)), build(Val::Int(100), Val::Int(CANCELLED)));
        assert_eq!(fix_of(f, build(Val::Int(150), Val::Int(2))), build(Val::Int(150), Val::Int(2)));
        // a request: complete flag at 1, complete_at 2, results 3, submitted_at 0
        let f = Fix::Unfinished { complete: Some(1), complete_at: 2, results: 3, since: 0 };
        let done = fix_of(f, vec![Val::Int(50), Val::Int(0), Val::NullInt, Val::Int(-1)]);
        assert_eq!(done, vec![Val::Int(50), Val::Int(1), Val::Int(50), Val::Int(CANCELLED)]);
    }

    #[test]
    fn log_chunks_are_stored_as_cascade_stores_them() {
        let long = "o".to_string() + &"x".repeat(2000);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, long.as_bytes()).expect("write");
        let mut vals = vec![Val::Int(1), Val::Int(0), Val::Int(0), Val::Int(1), Val::Bytes(z.finish().expect("zlib"))];
        fix(Fix::LogChunk, &mut vals).expect("fix");
        let Val::Bytes(stored) = &vals[4] else { panic!("bytes") };
        assert_eq!(vals[3], Val::Int(1));
        assert_eq!(crate::builds::decode_stored_chunk(1, stored).expect("inflate"), long);
        let mut short = vec![Val::Int(1), Val::Int(0), Val::Int(0), Val::Int(0), Val::Bytes(b"ohi".to_vec())];
        fix(Fix::LogChunk, &mut short).expect("fix");
        assert_eq!(short[3..], [Val::Int(0), Val::Bytes(b"ohi".to_vec())]);
        let mut bad = vec![Val::Int(1), Val::Int(0), Val::Int(0), Val::Int(7), Val::Bytes(vec![])];
        assert!(fix(Fix::LogChunk, &mut bad).unwrap_err().contains("unknown compression code 7"));
    }
}
