//! Fresh, isolated databases for tests, on both backends.
//!
//! PostgreSQL tests need a server: `CASCADE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`, what `.ci/run` starts). Each
//! test gets its own database `cascade_t_<uuid>`, dropped when it finishes;
//! `.ci/run` sweeps any left by a crashed run. A missing server is a test
//! failure, not a skip: CI must exercise both backends.

use cascade_store::Store;
use sqlx::Executor;
use sqlx::any::AnyPoolOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

pub fn postgres_admin_url() -> String {
    std::env::var("CASCADE_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("cascade.sqlite").display());
                TestDb { url, backend, _dir: Some(dir), pg_name: None }
            }
            Backend::Postgres => {
                sqlx::any::install_default_drivers();
                let admin = postgres_admin_url();
                let name = format!("cascade_t_{}", uuid::Uuid::new_v4().simple());
                let pool = AnyPoolOptions::new()
                    .max_connections(1)
                    .connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is needed for this test: {e}"));
                pool.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .expect("create test database");
                pool.close().await;
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin);
                TestDb { url: format!("{base}/{name}"), backend, _dir: None, pg_name: Some(name) }
            }
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.url).await.unwrap_or_else(|e| panic!("connect to {}: {e}", self.url))
    }

    /// Drops a PostgreSQL test database (SQLite's folder goes with `self`).
    pub async fn finish(self) {
        if let Some(name) = &self.pg_name
            && let Ok(pool) = AnyPoolOptions::new().max_connections(1).connect(&postgres_admin_url()).await
        {
            let _ = pool.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await;
            pool.close().await;
        }
    }
}

/// Declares one async test per backend: `mod NAME { fn sqlite(); fn postgres(); }`.
/// The body is an async block given `db: &TestDb`.
#[macro_export]
macro_rules! test_both {
    ($name:ident, |$db:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($db: &$crate::TestDb) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::TestDb::new($crate::Backend::Sqlite).await;
                run(&db).await;
                db.finish().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = $crate::TestDb::new($crate::Backend::Postgres).await;
                run(&db).await;
                db.finish().await;
            }
        }
    };
}
