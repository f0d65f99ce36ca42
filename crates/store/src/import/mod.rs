//! `cascade import-buildbot`: a Buildbot 4 database (SQLite or PostgreSQL)
//! copied into this store, in batches that each commit with their progress,
//! so a run can stop anywhere and the next goes on; a second run adds
//! nothing. Builders and workers are matched by name (keeping Buildbot's id
//! when it is free); every other table keeps Buildbot's ids, moved by the
//! store's highest id of that table when the import began (0 in a new store,
//! so `/builds/N` and `/#/builders/N/builds/M` stay true).

pub mod decode;
mod progress;
mod spec;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

pub use progress::{Printer, Progress, Silent};
use spec::{Col, Conv, Fix, Part, TABLES, Table};

use crate::{Backend, Store, StoreError};

/// The name of the master row that imported builds and claims point to.
pub const IMPORT_MASTER: &str = "buildbot-import";
/// Results given to what Buildbot never finished (Buildbot's CANCELLED).
const CANCELLED: i64 = 6;
/// Bound parameters per statement (SQLite allows 32,766, PostgreSQL 65,535).
const BINDS_PER_STATEMENT: usize = 16_000;

/// What can stop an import.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The `--from` URL is not one this reads.
    #[error("{0}")]
    Url(String),
    /// The Buildbot database could not be opened.
    #[error("opening the Buildbot database: {0}")]
    Open(#[source] sqlx::Error),
    /// It opened, but is not a Buildbot 4 database.
    #[error("not a Buildbot 4 database: {0}")]
    NotBuildbot(String),
    /// A query on the Buildbot database failed.
    #[error("reading Buildbot's {table}: {source}")]
    Read {
        /// The table read.
        table: String,
        /// The database's error.
        #[source]
        source: sqlx::Error,
    },
    /// A row of the Buildbot database cannot be copied.
    #[error("Buildbot's {table}, row {key}: {reason}")]
    Row {
        /// The table.
        table: String,
        /// The row's id (for log chunks, the log's).
        key: i64,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing to this store failed.
    #[error("writing {table} (Buildbot's rows after id {after}): {source}")]
    Write {
        /// Cascade's table.
        table: String,
        /// The batch began after this Buildbot id.
        after: i64,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// Another store error (progress, counts).
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T, E = ImportError> = std::result::Result<T, E>;

/// How an import runs.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Stop after this many batches (as if interrupted), for tests.
    pub stop_after_batches: Option<u64>,
}

/// One table's rows: in Buildbot, and what this store holds of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    /// Cascade's table.
    pub table: String,
    /// Rows in the Buildbot database.
    pub source: i64,
    /// Of them, rows in this store.
    pub cascade: i64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Per table, in the order copied.
    pub counts: Vec<TableCount>,
    /// Rows written by this run (0 when everything was there already).
    pub written: i64,
    /// Builds written by this run.
    pub builds_written: i64,
    /// How long the run took.
    pub elapsed: Duration,
    /// Whether it went to the end (false when stopped by `stop_after_batches`).
    pub finished: bool,
    /// What was imported differently from Buildbot (builders or workers
    /// matched by name under another id, ids that were taken).
    pub notes: Vec<String>,
}

impl Summary {
    /// Whether every table holds what the source holds.
    pub fn matches(&self) -> bool {
        self.finished && self.counts.iter().all(|c| c.source == c.cascade)
    }

    /// The final report: each table's count in Buildbot and in Cascade.
    pub fn render(&self) -> String {
        let mut out = format!("{:<22} {:>12} {:>12}\n", "table", "buildbot", "cascade");
        for c in &self.counts {
            let mark = if c.source == c.cascade { "" } else { "  DIFFERS" };
            out.push_str(&format!("{:<22} {:>12} {:>12}{mark}\n", c.table, c.source, c.cascade));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        out.push_str(&format!(
            "{} rows written in {:.1} s; {} builds ({:.0} builds/s)\n",
            self.written,
            secs,
            self.builds_written,
            self.builds_written as f64 / secs
        ));
        if !self.finished {
            out.push_str("stopped before the end: run again to go on\n");
        }
        out
    }
}

/// A value read from Buildbot, converted, to be bound in Cascade.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Int(i64),
    NullInt,
    Text(String),
    NullText,
    Bytes(Vec<u8>),
}

/// What the copy needs to know beyond the rows themselves.
struct Ctx {
    source: String,
    src: AnyPool,
    src_backend: Backend,
    offsets: HashMap<String, i64>,
    builders: HashMap<i64, i64>,
    workers: HashMap<i64, i64>,
    master: i64,
}

/// Copies the Buildbot database at `from` (a Buildbot `db_url`, or a SQLite
/// file's path) into `store`, going on from where an earlier run stopped.
pub async fn import_buildbot(
    store: &Store,
    from: &str,
    options: &ImportOptions,
    progress: &mut dyn Progress,
) -> Result<Summary> {
    let started = Instant::now();
    let url = decode::source_url(from).map_err(ImportError::Url)?;
    sqlx::any::install_default_drivers();
    let src_backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
    let src = open_source(&url, src_backend).await?;
    check_schema(&src).await?;
    let mut notes = Vec::new();
    let master = import_master(store).await?;
    let builders = copy_builders(store, &src, &mut notes).await?;
    let workers = copy_workers(store, &src, &mut notes).await?;
    let source = decode::source_key(from);
    let offsets = prepare(store, &src, &source).await?;
    let ctx = Ctx { source, src, src_backend, offsets, builders, workers, master };
    let mut run = Run { batches: 0, written: 0, builds: 0, limit: options.stop_after_batches };
    let mut finished = true;
    for table in TABLES {
        if !copy_table(store, &ctx, table, &mut run, progress).await? {
            finished = false;
            break;
        }
    }
    // The builds came in wholesale: each builder's newest is read from them.
    store.refresh_builder_latest().await?;
    let mut counts = named_counts(store, &ctx).await?;
    for table in TABLES {
        counts.extend(table_counts(store, &ctx, table).await?);
    }
    ctx.src.close().await;
    Ok(Summary {
        counts,
        written: run.written,
        builds_written: run.builds,
        elapsed: started.elapsed(),
        finished,
        notes,
    })
}

/// Every query on the source walks an index: by id in batches, by
/// foreign key per row. A PostgreSQL database just restored has no
/// statistics yet, and its planner then picks scans of whole tables per
/// batch; this session tells it not to (read-only: nothing is analysed).
async fn open_source(url: &str, backend: Backend) -> Result<AnyPool> {
    AnyPoolOptions::new()
        .max_connections(2)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Postgres {
                    sqlx::Executor::execute(&mut *conn, "SET enable_seqscan = off").await?;
                    sqlx::Executor::execute(&mut *conn, "SET enable_hashjoin = off").await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .map_err(ImportError::Open)
}

async fn check_schema(src: &AnyPool) -> Result<()> {
    let version = sqlx::query("SELECT version_num FROM alembic_version")
        .fetch_optional(src)
        .await
        .map_err(|e| ImportError::NotBuildbot(format!("no alembic_version table ({e})")))?;
    let version: String = match version {
        Some(row) => row.try_get(0).map_err(|e| ImportError::NotBuildbot(e.to_string()))?,
        None => return Err(ImportError::NotBuildbot("alembic_version is empty".into())),
    };
    // Buildbot 4.0 starts at 060; 4.3 is at 067. Older schemas lack columns read here.
    match version.parse::<u32>() {
        Ok(v) if v >= 60 => Ok(()),
        _ => Err(ImportError::NotBuildbot(format!("schema version {version}, Buildbot 4 has 060 or later"))),
    }
}

/// The inactive master row every imported build and claim points to.
async fn import_master(store: &Store) -> Result<i64> {
    sqlx::query("INSERT INTO masters (name, active, last_active) VALUES ($1, 0, 0) ON CONFLICT (name) DO NOTHING")
        .bind(IMPORT_MASTER)
        .execute(&store.pool)
        .await
        .map_err(StoreError::from)?;
    let row = sqlx::query("SELECT id FROM masters WHERE name = $1")
        .bind(IMPORT_MASTER)
        .fetch_one(&store.pool)
        .await
        .map_err(StoreError::from)?;
    Ok(crate::records::get(&row, "id")?)
}

fn read_err(table: &str) -> impl FnOnce(sqlx::Error) -> ImportError + '_ {
    move |source| ImportError::Read { table: table.to_string(), source }
}

fn write_err(table: &str, after: i64) -> impl FnOnce(StoreError) -> ImportError + '_ {
    move |source| ImportError::Write { table: table.to_string(), after, source }
}

mod named;
use named::{copy_builders, copy_workers, named_counts};

mod copy;
use copy::{Run, copy_table, prepare, table_counts};
