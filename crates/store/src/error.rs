/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database answered with an error, or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Bringing the schema up to date failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The URL names no backend this store speaks.
    #[error("unsupported database URL {0:?}: expected sqlite:// or postgres://")]
    UnsupportedUrl(String),
    /// A list query named a field or value the resource does not have.
    #[error("{0}")]
    BadQuery(String),
    /// What was read back cannot be what was written.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// SQLite's busy and locked codes (primary and extended), and PostgreSQL's
/// connection exceptions (class 08), operator interventions (57P) and
/// too many connections.
fn unavailable_code(code: &str) -> bool {
    matches!(code, "5" | "6" | "261" | "262" | "517" | "773" | "53300")
        || code.starts_with("08")
        || code.starts_with("57P")
}

impl StoreError {
    /// Whether the store could not be reached or was too busy to answer:
    /// the caller may try again later (HTTP 503), unlike a bug or corrupt
    /// data (HTTP 500).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::BeginFailed,
            ) => true,
            StoreError::Database(sqlx::Error::Database(db)) => db.code().is_some_and(|c| unavailable_code(&c)),
            _ => false,
        }
    }
}

impl StoreError {
    /// Whether the database refused a value the caller sent: PostgreSQL's
    /// text too long (22001), a number out of range (22003), a NUL or an
    /// untranslatable character (22021, 22P05), an index row too large
    /// (54000). The caller's fault (HTTP 400), never worth a retry.
    /// Callers validate first; this is the net under them.
    pub fn is_refused_value(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                db.code().is_some_and(|c| matches!(&*c, "22001" | "22003" | "22021" | "22P05" | "54000"))
            }
            _ => false,
        }
    }

    pub(crate) fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }
}
