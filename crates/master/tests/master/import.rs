//! `cascade import-buildbot` against databases written by a real Buildbot
//! 4.3 master from PyPI that ran real builds on a real worker
//! (`tests/support/buildbot-history.sh`), on SQLite and on PostgreSQL,
//! into both of Cascade's stores: counts, a build, its properties, every
//! log's text (one of each compression Buildbot writes) against what
//! Buildbot's own Python modules decode, test results, a second run that
//! adds nothing, and a run stopped half way that the next one finishes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cascade_store::Store;
use cascade_store::import::{ImportOptions, Silent, import_buildbot};
use cascade_testkit::{Backend, TestDb};
use sqlx::Row;

/// The Python of the virtual environment the history script made (it has
/// zlib, bz2, lz4, zstandard and brotli); `None` (the test is skipped)
/// when buildbot is not installed.
fn buildbot_python() -> Option<PathBuf> {
    let Ok(buildbot) = std::env::var("CASCADE_BUILDBOT") else {
        eprintln!("skipped: CASCADE_BUILDBOT is not set (bash tests/support/buildbot.sh installs buildbot)");
        return None;
    };
    Some(Path::new(&buildbot).with_file_name("python"))
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/buildbot-history.sh")
}

/// Runs the history script into `db_url` (a SQLAlchemy URL).
fn write_history(db_url: &str) {
    let out = std::process::Command::new("bash").arg(script()).arg(db_url).output().expect("run buildbot-history.sh");
    assert!(out.status.success(), "buildbot-history.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The SQLite history, written once per version of the script and kept
/// in the target folder (writing it takes about a minute).
fn sqlite_history() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let text = std::fs::read(script()).expect("read the script");
        let hash = text.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3));
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("buildbot-history-{hash:016x}"));
        let file = dir.join("state.sqlite");
        if !file.exists() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("mkdir");
            let partial = dir.join("partial.sqlite");
            write_history(&format!("sqlite:///{}", partial.display()));
            std::fs::rename(&partial, &file).expect("rename");
        }
        file
    })
}

/// What Buildbot's own modules read from the source: each log's text
/// (its chunks in order, joined by newlines) and the codes of its chunks.
fn logs_by_python(python: &Path, url: &str) -> serde_json::Value {
    let code = r#"
import bz2, json, sys, zlib, brotli, lz4.block, zstandard
url = sys.argv[1]
if url.startswith("sqlite"):
    import sqlite3; db = sqlite3.connect(url.split(":///", 1)[1])
else:
    import psycopg2; db = psycopg2.connect(url)
def zstd(b): return zstandard.ZstdDecompressor().decompressobj().decompress(b)
decode = {0: bytes, 1: zlib.decompress, 2: bz2.decompress, 3: lz4.block.decompress, 4: zstd, 5: brotli.decompress}
cur = db.cursor()
cur.execute("SELECT logid, compressed, content FROM logchunks ORDER BY logid, first_line")
logs = {}
for logid, compressed, content in cur.fetchall():
    log = logs.setdefault(str(logid), {"codes": [], "chunks": []})
    log["codes"].append(compressed)
    log["chunks"].append(decode[compressed](bytes(content)).decode("utf-8"))
print(json.dumps({k: {"codes": v["codes"], "text": "\n".join(v["chunks"])} for k, v in logs.items()}))
"#;
    let out = std::process::Command::new(python).arg("-c").arg(code).arg(url).output().expect("run python");
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn cascade_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cascade")
}

/// `cascade import-buildbot`: (exit success, stdout).
fn run_cli(from: &str, store_url: &str, extra: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(cascade_bin())
        .args(["import-buildbot", "--from", from, "--database", store_url])
        .args(extra)
        .env_remove("CASCADE_DATABASE_URL")
        .output()
        .expect("run cascade");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn one_i64(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(pool).await.expect(sql);
    row.try_get(0).expect(sql)
}

/// Everything checked after an import of a history from `from` (sqlx URL of
/// the source, for its own reading) into `store`.
async fn check_history(store: &Store, store_url: &str, source: &sqlx::AnyPool, python_url: &str, python: &Path) {
    // The builders keep their ids and names; linux-stable's tags came along.
    let stable = store.get_builder_by_name("linux-stable").await.expect("read").expect("linux-stable imported");
    let bb_id = one_i64(source, "SELECT CAST(id AS BIGINT) FROM builders WHERE name = 'linux-stable'").await;
    assert_eq!(stable.builderid, bb_id);
    assert!(stable.tags.iter().any(|t| t == "stable"), "{:?}", stable.tags);

    // Every build keeps its id, builder, number and results.
    let rows = sqlx::query("SELECT CAST(id AS BIGINT), CAST(builderid AS BIGINT), CAST(number AS BIGINT), CAST(results AS BIGINT) FROM builds")
        .fetch_all(source)
        .await
        .expect("builds");
    assert_eq!(rows.len(), 8);
    for r in &rows {
        let id: i64 = r.try_get(0).expect("id");
        let build = store.get_build(id).await.expect("read").expect("build imported");
        assert_eq!(
            (build.builderid, build.number, build.results),
            (r.try_get(1).expect("b"), r.try_get(2).expect("n"), r.try_get(3).expect("r"))
        );
        assert!(build.complete);
    }
    // A linux-stable build: its properties as Buildbot had them.
    let build_id =
        one_i64(source, &format!("SELECT CAST(MIN(id) AS BIGINT) FROM builds WHERE builderid = {bb_id}")).await;
    let props = store.build_properties(build_id).await.expect("properties");
    let prop = |name: &str| props.iter().find(|p| p.0 == name).map(|p| (p.1.clone(), p.2.clone()));
    assert_eq!(prop("buildername"), Some((serde_json::json!("linux-stable"), "Builder".to_string())));
    assert_eq!(prop("buildnumber"), Some((serde_json::json!(1), "Build".to_string())));
    let n =
        one_i64(source, &format!("SELECT CAST(COUNT(*) AS BIGINT) FROM build_properties WHERE buildid = {build_id}"))
            .await;
    assert_eq!(props.len() as i64, n);

    // A change with its files and its properties' values.
    let change = store.get_change(1).await.expect("read").expect("change 1");
    assert_eq!(change.author, "Alice Example <alice@example.org>");
    assert_eq!(change.properties.get("issue").map(|p| &p.0), Some(&serde_json::json!("gh-101")));
    assert_eq!(change.files.len(), 3);
    // The blamelist goes through buildset_changes, as Cascade's own builds'.
    let blamed = store.build_changes(build_id).await.expect("blamelist");
    assert!(blamed.iter().any(|c| c.changeid == 1), "{blamed:?}");

    // Every log reads as Buildbot's own decompressors read it.
    let logs = logs_by_python(python, python_url);
    let mut codes = std::collections::BTreeSet::new();
    for (id, log) in logs.as_object().expect("object") {
        let id: i64 = id.parse().expect("id");
        codes.extend(log["codes"].as_array().expect("codes").iter().map(|c| c.as_i64().expect("code")));
        let lines = store.log_lines(id, 0, i64::MAX).await.expect("lines");
        assert_eq!(lines.join("\n"), log["text"].as_str().expect("text"), "log {id}");
    }
    assert_eq!(codes.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5], "every compression is in the history");

    // Test results, with their names.
    let target = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(store_url).await.expect("store");
    let q = "SELECT COUNT(*) FROM test_results r JOIN test_names n ON n.id = r.test_nameid";
    assert_eq!(one_i64(&target, q).await, one_i64(source, &q.replace("COUNT(*)", "CAST(COUNT(*) AS BIGINT)")).await);
    let q = "SELECT COUNT(*) FROM test_results WHERE value = '0'";
    let failed = one_i64(&target, q).await;
    assert!(failed > 0);
    assert_eq!(failed, one_i64(source, &q.replace("COUNT(*)", "CAST(COUNT(*) AS BIGINT)")).await);
    target.close().await;
}

async fn source_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new().max_connections(1).connect(url).await.expect("source")
}

/// A real Buildbot's SQLite history into both stores, through the command;
/// the second run adds nothing.
async fn sqlite_source_into(backend: Backend) {
    let Some(python) = buildbot_python() else { return };
    let file = tokio::task::spawn_blocking(sqlite_history).await.expect("history");
    let from = format!("sqlite:///{}", file.display());
    let db = TestDb::new(backend).await;
    let (ok, out) = run_cli(&from, &db.url, &[]);
    assert!(ok, "{out}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>())
    };
    assert_eq!(row("builds"), Some(vec!["8", "8"]), "{out}");
    assert_eq!(row("log_chunks").map(|c| c[0] == c[1] && c[0] != "0"), Some(true), "{out}");
    assert!(!out.contains("DIFFERS"), "{out}");
    let store = db.store().await;
    let source = source_pool(&format!("sqlite://{}?mode=ro", file.display())).await;
    check_history(&store, &db.url, &source, &from, &python).await;
    let (ok, again) = run_cli(&from, &db.url, &[]);
    assert!(ok, "{again}");
    assert!(again.contains("\n0 rows written"), "{again}");
    store.close().await;
    source.close().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildbot_sqlite_history_into_sqlite() {
    sqlite_source_into(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildbot_sqlite_history_into_postgres() {
    sqlite_source_into(Backend::Postgres).await;
}

/// A real Buildbot's PostgreSQL history (its URL as Buildbot takes it,
/// with the driver) into both stores, through the library.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildbot_postgres_history() {
    let Some(python) = buildbot_python() else { return };
    let source_db = TestDb::new(Backend::Postgres).await;
    let buildbot_url = source_db.url.replacen("postgres://", "postgresql://", 1);
    let url = buildbot_url.clone();
    tokio::task::spawn_blocking(move || write_history(&url)).await.expect("history");
    let from = buildbot_url.replacen("postgresql://", "postgresql+psycopg2://", 1);
    let source = source_pool(&source_db.url).await;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let summary = import_buildbot(&store, &from, &ImportOptions::default(), &mut Silent).await.expect("import");
        assert!(summary.matches(), "{}", summary.render());
        assert_eq!(summary.builds_written, 8);
        check_history(&store, &db.url, &source, &buildbot_url, &python).await;
        let again = import_buildbot(&store, &from, &ImportOptions::default(), &mut Silent).await.expect("again");
        assert_eq!((again.written, again.matches()), (0, true), "{}", again.render());
        store.close().await;
        db.finish().await;
    }
    source.close().await;
    source_db.finish().await;
}

/// A run stopped after a few batches leaves a partial copy and says so
/// (exit status 1); the next goes on from there and ends with the counts
/// of a run that was never stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_goes_on() {
    if buildbot_python().is_none() {
        return;
    }
    let file = tokio::task::spawn_blocking(sqlite_history).await.expect("history");
    let from = format!("sqlite:///{}", file.display());
    let db = TestDb::new(Backend::Sqlite).await;
    let (ok, out) = run_cli(&from, &db.url, &["--stop-after-batches", "4"]);
    assert!(!ok, "{out}");
    assert!(out.contains("stopped before the end"), "{out}");
    let store = db.store().await;
    let partial = import_buildbot(&store, &from, &ImportOptions { stop_after_batches: Some(0) }, &mut Silent)
        .await
        .expect("counts");
    assert!(!partial.matches());
    let builds = partial.counts.iter().find(|c| c.table == "builds").expect("builds");
    assert_eq!((builds.source, builds.cascade), (8, 8), "4 batches: sourcestamps, changes, buildsets, builds");
    let steps = partial.counts.iter().find(|c| c.table == "steps").expect("steps");
    assert_eq!(steps.cascade, 0);
    let rest = import_buildbot(&store, &from, &ImportOptions::default(), &mut Silent).await.expect("rest");
    assert!(rest.matches(), "{}", rest.render());
    assert_eq!(rest.builds_written, 0, "the builds were in already");
    let source = source_pool(&format!("sqlite://{}?mode=ro", file.display())).await;
    let python = buildbot_python().expect("python");
    check_history(&store, &db.url, &source, &from, &python).await;
    store.close().await;
    source.close().await;
    db.finish().await;
}

/// Into a store in use: builders are matched by name (a name Cascade has
/// is its builder; an id another builder holds means a new id), and the
/// ids of tables that have rows already move past them, consistently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn into_a_store_in_use() {
    if buildbot_python().is_none() {
        return;
    }
    let file = tokio::task::spawn_blocking(sqlite_history).await.expect("history");
    let from = format!("sqlite:///{}", file.display());
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let target = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&db.url).await.expect("store");
    for sql in [
        "INSERT INTO builders (id, name, definition, tags, configured) VALUES (1, 'cascade-own', 'cascade-own', '[]', 1)",
        "INSERT INTO builders (id, name, definition, tags, configured) VALUES (5, 'linux-stable', 'linux-stable', '[]', 1)",
        "INSERT INTO sourcestamps (id, ss_key, repository, project, codebase, created_at) VALUES (1, 'own', '', '', '', 0)",
        "INSERT INTO changes (id, author, comments, when_timestamp, repository, codebase, project, sourcestamp_id, received_at) \
         VALUES (1, 'Own <own@example.org>', 'own', 0, '', '', '', 1, 0)",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&target).await.expect(sql);
    }
    // Which id Buildbot gave each builder depends on the order its master
    // registered them in: read them.
    let source = source_pool(&format!("sqlite://{}?mode=ro", file.display())).await;
    let id_of = |name: &'static str| {
        let source = source.clone();
        async move {
            let q = sqlx::query_scalar::<_, i64>("SELECT id FROM builders WHERE name = $1").bind(name);
            q.fetch_one(&source).await.expect("a Buildbot builder")
        }
    };
    let (docs, linux) = (id_of("docs").await, id_of("linux-stable").await);
    let summary = import_buildbot(&store, &from, &ImportOptions::default(), &mut Silent).await.expect("import");
    assert!(summary.matches(), "{}", summary.render());
    let mut notes = vec![format!("builder \"linux-stable\" is Cascade's builder 5 (Buildbot's {linux})")];
    if [1, 5].contains(&docs) {
        // Its id is taken here: it gets the next free one.
        notes.insert(0, format!("builder \"docs\" is Cascade's builder 6 (Buildbot's {docs})"));
    }
    assert_eq!(summary.notes, notes);
    // Cascade's own change keeps id 1; Buildbot's change 1 is 2 now, and
    // the builds that blame it say so.
    assert_eq!(store.get_change(1).await.expect("read").expect("own").author, "Own <own@example.org>");
    let alice = store.get_change(2).await.expect("read").expect("moved");
    assert_eq!(alice.author, "Alice Example <alice@example.org>");
    let q = "SELECT MIN(id) FROM builds WHERE builderid = $1";
    let first: i64 = sqlx::query_scalar(q).bind(linux).fetch_one(&source).await.expect("a linux-stable build");
    let q = "SELECT c.changeid FROM builds b JOIN buildrequests r ON r.id = b.buildrequestid \
             JOIN buildset_sourcestamps s ON s.buildsetid = r.buildsetid \
             JOIN changes c ON c.sourcestampid = s.sourcestampid WHERE b.id = $1 ORDER BY c.changeid";
    let changes: Vec<i64> = sqlx::query_scalar(q).bind(first).fetch_all(&source).await.expect("its changes");
    let build = store.get_build(first).await.expect("read").expect("the build");
    assert_eq!(build.builderid, 5, "linux-stable's builds are on Cascade's linux-stable");
    let blamed: Vec<i64> = store.build_changes(first).await.expect("blamelist").iter().map(|c| c.changeid).collect();
    assert_eq!(blamed, changes.iter().map(|c| c + 1).collect::<Vec<_>>(), "its changes, moved past Cascade's own");
    assert!(!blamed.is_empty());
    source.close().await;
    let again = import_buildbot(&store, &from, &ImportOptions::default(), &mut Silent).await.expect("again");
    assert_eq!((again.written, again.matches()), (0, true), "{}", again.render());
    target.close().await;
    store.close().await;
    db.finish().await;
}
