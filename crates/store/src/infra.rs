use std::borrow::Cow;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Executor, SqlStr, Transaction};

use crate::{Result, StoreError};

/// Which database the store runs on; chosen by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:` URLs.
    Sqlite,
    /// `postgres://` and `postgresql://` URLs.
    Postgres,
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
    /// Bumped after every commit that recorded events (see `events.rs`),
    /// and when another master says it committed some.
    pub(crate) signal: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Notices between masters (see `notices.rs`).
    pub(crate) notices: std::sync::Arc<crate::notices::Notices>,
    /// Where the database is, for the notices' own connection (PostgreSQL).
    pub(crate) url: Option<std::sync::Arc<String>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish()
    }
}

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

fn migrations(backend: Backend) -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sqlite, postgres)| {
                let sql = match backend {
                    Backend::Sqlite => sqlite,
                    Backend::Postgres => postgres,
                };
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    )
}

/// `sqlite://x.sqlite` would fail on a missing file; a first run should
/// create it, so `mode=rwc` is added unless the URL chooses a mode.
fn normalize_url(url: &str) -> Result<(String, Backend)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((url.to_string(), Backend::Postgres));
    }
    if url.starts_with("sqlite:") {
        if url.contains("mode=") || url.contains(":memory:") {
            return Ok((url.to_string(), Backend::Sqlite));
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        return Ok((format!("{url}{sep}mode=rwc"), Backend::Sqlite));
    }
    Err(StoreError::UnsupportedUrl(url.to_string()))
}

/// The database file a `sqlite:` URL names (none for other stores and
/// in-memory databases).
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.contains(":memory:")).then(|| std::path::PathBuf::from(path))
}

impl Store {
    /// Connects and brings the schema up to date; a query waits at most
    /// 5 s for a connection.
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, Duration::from_secs(5)).await
    }

    /// Connects and brings the schema up to date; a query waits at most
    /// `acquire_timeout` for a connection (then the store is unavailable).
    pub async fn connect_with(url: &str, acquire_timeout: Duration) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let (url, backend) = normalize_url(url)?;
        let options: AnyConnectOptions = url.parse()?;
        // Migrate on a short-lived connection first, so the pool never caches
        // statements prepared against an older schema.
        {
            let migrate_pool = AnyPoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
            let mut attempt = 0;
            loop {
                match migrations(backend).run(&migrate_pool).await {
                    Ok(()) => break,
                    // PostgreSQL serialises migrators with an advisory lock;
                    // SQLite has none, so a second process migrating the same
                    // new file at the same moment fails: once the first has
                    // committed, running again finds nothing left to do.
                    Err(_) if backend == Backend::Sqlite && attempt < 20 => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            migrate_pool.close().await;
        }
        let max = match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Postgres {
                        disable_nagle_on_tcp_sockets();
                    }
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let signal = std::sync::Arc::new(tokio::sync::watch::Sender::new(0));
        let notices = std::sync::Arc::new(crate::notices::Notices::new());
        let url = (backend == Backend::Postgres).then(|| std::sync::Arc::new(url));
        Ok(Store { pool, backend, signal, notices, url })
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A transaction that will write. SQLite takes the write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads, then writes,
    /// can fail with "database is locked" instead of waiting its turn.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }

    /// Closes every pooled connection; waits for those in use.
    pub async fn close(&self) {
        self.stop_listening();
        self.pool.close().await;
    }

    /// A cheap round trip, for `/healthz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The pool now: connections open, of them idle, and the most it opens.
    pub fn pool_use(&self) -> PoolUse {
        PoolUse { open: self.pool.size(), idle: self.pool.num_idle(), max: self.pool.options().get_max_connections() }
    }

    /// Requests waiting for a master: how many, and when the oldest was submitted.
    pub async fn pending_requests(&self) -> Result<(i64, Option<i64>)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(submitted_at) AS oldest FROM buildrequests \
             WHERE complete = 0 AND claimed_by_master_id IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((crate::records::get(&row, "n")?, crate::records::get(&row, "oldest")?))
    }

    /// Notifications not yet sent or given up (the reporters' outbox).
    pub async fn queued_notifications(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM notifications WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        crate::records::get(&row, "n")
    }
}

/// How the store's connection pool is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// Connections open.
    pub open: u32,
    /// Of them, idle.
    pub idle: usize,
    /// The most the pool opens.
    pub max: u32,
}

/// sqlx 0.9.0 no longer sets TCP_NODELAY on its sockets (upstream issue
/// #4335, fixed by PR #4336 but not yet released), so a statement larger
/// than one segment waits ~40 ms for a delayed ACK: log ingest over TCP fell
/// from ~90 MB/s to ~1.5 MB/s. sqlx offers no hook on its socket, so right
/// after a connection opens this sets TCP_NODELAY on every TCP socket of the
/// process (harmless for any TCP socket; other kinds just refuse the option).
/// Remove once a sqlx release sets it again.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // one setsockopt; see SAFETY below
fn disable_nagle_on_tcp_sockets() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return };
    for entry in entries.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads `one` for the duration of the call only; on
        // a descriptor that is not (or no longer) a TCP socket it fails with
        // an error and changes nothing.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn disable_nagle_on_tcp_sockets() {}

/// Encodes a 0/1 flag column.
pub(crate) fn flag(b: bool) -> i64 {
    i64::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two schemas are written out per backend but must stay the same
    /// schema: they may differ only in how id and binary columns are declared.
    #[test]
    fn migrations_differ_only_in_column_types() {
        let normalize = |text: &str, id: &str, blob: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .map(|l| l.replace(id, "<ID>").replace(blob, "<BLOB>"))
                .collect()
        };
        for (version, _, sqlite, postgres) in MIGRATIONS {
            assert_eq!(
                normalize(sqlite, "id INTEGER PRIMARY KEY", " BLOB "),
                normalize(postgres, "id BIGSERIAL PRIMARY KEY", " BYTEA "),
                "migration {version}"
            );
        }
    }

    /// Every file in the migration folders is embedded (build.rs finds
    /// them), so none can be forgotten.
    #[test]
    fn every_migration_file_runs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        for backend in ["sqlite", "postgres"] {
            let mut files: Vec<String> = std::fs::read_dir(dir.join(backend))
                .expect("migrations folder")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".sql"))
                .collect();
            files.sort();
            let embedded: Vec<String> = MIGRATIONS.iter().map(|(v, d, _, _)| format!("{v:04}_{d}.sql")).collect();
            assert_eq!(files, embedded, "{backend}");
        }
        assert!(MIGRATIONS.len() >= 5);
        assert_eq!(migrations(Backend::Sqlite).iter().count(), MIGRATIONS.len());
    }

    #[test]
    fn sqlite_urls_create_their_file() {
        assert_eq!(normalize_url("sqlite://x.db").expect("ok").0, "sqlite://x.db?mode=rwc");
        assert_eq!(normalize_url("sqlite://x.db?mode=ro").expect("ok").0, "sqlite://x.db?mode=ro");
        assert_eq!(normalize_url("sqlite://x.db?cache=shared").expect("ok").0, "sqlite://x.db?cache=shared&mode=rwc");
        assert_eq!(normalize_url("postgres://h/db").expect("ok").1, Backend::Postgres);
        assert!(normalize_url("mysql://h/db").is_err());
    }
}
