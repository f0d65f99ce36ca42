//! `fill-store`: fills an empty Cascade database to the reference scale of
//! DESIGN.md, for measuring pages and the API on a deep history.
//!
//! 162 builder definitions over 8 branches make 1,036 builders (about 60 %
//! tagged `stable`, tiers 1–3), 57 workers; on each branch a run of pushes,
//! each a change, a buildset and one build request per builder of the branch,
//! each taken by a build with its steps and properties. The default is about a million
//! builds with six steps each. Rows are made by the database itself
//! (`INSERT … SELECT` over a recursive counter), so it takes minutes, not
//! hours; the same SQL runs on PostgreSQL and SQLite.
//!
//! ```sh
//! cargo run --release -p cascade-loadgen --bin fill-store -- --database sqlite:///tmp/big.sqlite
//! ```

use std::time::Instant;

use anyhow::{Context, bail};
use cascade_loadgen::BRANCHES;
use cascade_store::{BuilderSpec, Store, WorkerSpec};
use clap::Parser;
use sqlx::AssertSqlSafe;

const DEFINITIONS: usize = 162;
const WORKERS: usize = 57;
const STEP_NAMES: [&str; 6] = ["git", "configure", "compile", "test", "clean", "upload"];

#[derive(Parser, Debug)]
#[command(about = "Fill an empty Cascade database to the reference scale")]
struct Args {
    /// `postgres://…` or `sqlite://…` (created if missing).
    #[arg(long)]
    database: String,
    /// Builds wanted in all (rounded up to whole pushes on every branch).
    #[arg(long, default_value_t = 1_000_000)]
    builds: usize,
    /// Also write a master config describing the same builders, to serve the data.
    #[arg(long)]
    write_config: Option<std::path::PathBuf>,
}

/// A config whose builders are exactly the generated ones.
fn config_text(database: &str) -> String {
    let mut out = format!(
        "[master]\ntitle = \"Reference scale\"\nname = \"fill-store\"\nhttp = \"127.0.0.1:8010\"\npb = \"127.0.0.1:0\"\nmsgpack = \"127.0.0.1:0\"\ndatabase = \"{database}\"\n\n[github]\nrepository = \"python/cpython\"\ninsecure_webhook = true\n"
    );
    for (label, git) in BRANCHES {
        out.push_str(&format!("\n[[branch]]\nname = \"{label}\"\ngit = \"{git}\"\n"));
    }
    for i in 0..WORKERS {
        out.push_str(&format!("\n[[worker]]\nname = \"worker-{i}\"\npassword = \"pw\"\n"));
    }
    out.push_str("\n[[factory]]\nname = \"unix\"\nsteps = [{ command = [\"make\"] }]\n");
    for def in 0..DEFINITIONS {
        let tags = if def % 5 < 3 {
            format!("\"stable\", \"tier-{}\"", def % 3 + 1)
        } else {
            format!("\"tier-{}\"", def % 3 + 1)
        };
        let branches: Vec<String> = branches_of(def).iter().map(|(l, _)| format!("\"{l}\"")).collect();
        out.push_str(&format!(
            "\n[[builder]]\nname = \"{}\"\nworkers = [\"worker-{}\"]\nfactory = \"unix\"\nbranches = [{}]\ntags = [{tags}]\n",
            definition_name(def),
            def % WORKERS,
            branches.join(", ")
        ));
    }
    for (label, _) in BRANCHES {
        out.push_str(&format!("\n[[scheduler]]\nname = \"{label}\"\nkind = \"branch\"\nbranch = \"{label}\"\n"));
    }
    out.push_str("\n[[scheduler]]\nname = \"force\"\nkind = \"force\"\n");
    out
}

/// Which branches a definition builds: the first 98 every branch, the next
/// 60 four, the last 4 three (1,036 builders, as CPython's).
fn branches_of(def: usize) -> &'static [(&'static str, &'static str)] {
    match def {
        0..98 => &BRANCHES,
        98..158 => &BRANCHES[..4],
        _ => &BRANCHES[..3],
    }
}

fn definition_name(def: usize) -> String {
    const OS: [&str; 9] = ["Fedora", "Debian", "Ubuntu", "RHEL8", "FreeBSD", "macOS", "Windows11", "Alpine", "Gentoo"];
    const CPU: [&str; 6] = ["AMD64", "ARM64", "x86", "PPC64LE", "s390x", "RISCV64"];
    let flavour = ["", " Refleaks", " LTO", " Clang", " NoGIL", " Debug"][def % 6];
    format!("{} {}{} {}", CPU[def % CPU.len()], OS[(def / 6) % OS.len()], flavour, def)
}

fn specs() -> Vec<BuilderSpec> {
    let mut out = Vec::new();
    for def in 0..DEFINITIONS {
        let name = definition_name(def);
        let mut tags = Vec::new();
        if def % 5 < 3 {
            tags.push("stable".to_string());
        }
        tags.push(format!("tier-{}", def % 3 + 1));
        for (label, _) in branches_of(def) {
            out.push(BuilderSpec {
                name: format!("{name} {label}"),
                definition: name.clone(),
                branch: Some(label.to_string()),
                description: None,
                tags: tags.clone(),
                workers: vec![format!("worker-{}", def % WORKERS)],
            });
        }
    }
    out
}

async fn exec(pool: &sqlx::AnyPool, what: &str, sql: String) -> anyhow::Result<u64> {
    let started = Instant::now();
    let done = sqlx::query(AssertSqlSafe(sql)).execute(pool).await.with_context(|| what.to_string())?;
    eprintln!("  {what}: {} rows in {:.1} s", done.rows_affected(), started.elapsed().as_secs_f64());
    Ok(done.rows_affected())
}

/// One branch's share of the history: the SQL fragments its statements share.
struct Fill<'a> {
    pool: &'a sqlx::AnyPool,
    /// The branch's index, label and git name.
    bi: usize,
    label: &'a str,
    git: &'a str,
    /// Pushes, and builders of the branch.
    pushes: i64,
    builders: i64,
    /// The first build (and request) id of this branch.
    next_id: i64,
    master: i64,
    first_worker: i64,
}

const T0: i64 = 1_700_000_000;

impl Fill<'_> {
    /// Change, source stamp and buildset ids start after this.
    fn base(&self) -> i64 {
        self.bi as i64 * self.pushes
    }

    fn counter(&self) -> String {
        format!("WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {})", self.pushes)
    }

    /// Ten minutes between pushes, branches interleaved.
    fn when(&self) -> String {
        format!("({T0} + n * 600 + {} * 60)", self.bi)
    }

    /// Every (push, builder) pair with its build id: `next_id` + (push − 1) ×
    /// builders + the builder's rank on the branch.
    fn pairs(&self) -> String {
        let (label, next_id, nb, counter) = (self.label, self.next_id, self.builders, self.counter());
        let ranked = format!(
            "ranked AS (SELECT id AS builder_id, ROW_NUMBER() OVER (ORDER BY id) - 1 AS j FROM builders WHERE branch = '{label}')"
        );
        format!(
            "{counter}, {ranked} SELECT s.n, r.builder_id, r.j, {next_id} + (s.n - 1) * {nb} + r.j AS id FROM s CROSS JOIN ranked r"
        )
    }

    /// One change, source stamp and buildset per push.
    async fn changes(&self) -> anyhow::Result<()> {
        let (bi, label, git, base, counter, when) =
            (self.bi, self.label, self.git, self.base(), self.counter(), self.when());
        exec(
            self.pool,
            "source stamps",
            format!(
                "INSERT INTO sourcestamps (id, ss_key, branch, revision, repository, project, codebase, created_at) \
             {counter} SELECT {base} + n, 'gen-{bi}-' || n, '{git}', 'rev{bi}x' || n, \
             'https://github.com/python/cpython', 'python/cpython', '', {when} FROM s"
            ),
        )
        .await?;
        exec(self.pool, "changes", format!(
            "INSERT INTO changes (id, author, committer, comments, branch, revision, revlink, when_timestamp, category, \
             repository, codebase, project, sourcestamp_id, parent_change_id, received_at) \
             {counter} SELECT {base} + n, 'Developer ' || (n % 40) || ' <dev' || (n % 40) || '@example.org>', NULL, \
             'gh-' || (100000 + n) || ': change ' || n || ' on {label}\n\nA longer description of the change.', \
             '{git}', 'rev{bi}x' || n, 'https://github.com/python/cpython/commit/rev{bi}x' || n, {when}, NULL, \
             'https://github.com/python/cpython', '', 'python/cpython', {base} + n, \
             CASE WHEN n > 1 THEN {base} + n - 1 END, {when} FROM s"
        )).await?;
        exec(self.pool, "buildsets", format!(
            "INSERT INTO buildsets (id, reason, submitted_at, complete, complete_at, results) \
             {counter} SELECT {base} + n, 'The SingleBranchScheduler scheduler named ''{label}'' triggered this build', \
             {when}, 1, {when} + 3000, CASE WHEN n % 7 = 0 THEN 2 ELSE 0 END FROM s"
        )).await?;
        exec(
            self.pool,
            "buildset changes",
            format!(
                "INSERT INTO buildset_changes (buildset_id, change_id) {counter} SELECT {base} + n, {base} + n FROM s"
            ),
        )
        .await?;
        exec(self.pool, "buildset source stamps", format!(
            "INSERT INTO buildset_sourcestamps (buildset_id, sourcestamp_id) {counter} SELECT {base} + n, {base} + n FROM s"
        )).await?;
        Ok(())
    }

    /// A build and its request per (push, builder); returns how many.
    async fn builds(&self) -> anyhow::Result<i64> {
        let (bi, git, base, master, pairs) = (self.bi, self.git, self.base(), self.master, self.pairs());
        // About one build in nine fails, one in seventeen warns, one in a hundred is an exception.
        let results = "CASE WHEN (p.n * 7 + p.j) % 9 = 0 THEN 2 WHEN (p.n * 3 + p.j) % 17 = 0 THEN 1 \
                       WHEN (p.n + p.j) % 100 = 0 THEN 4 ELSE 0 END";
        let start = format!("({T0} + p.n * 600 + {bi} * 60 + 30 + p.j % 300)");
        let worker = format!("{} + (p.j % {WORKERS})", self.first_worker);
        exec(self.pool, "builds", format!(
            "INSERT INTO builds (id, number, builder_id, build_request_id, worker_id, master_id, started_at, complete_at, \
             state_string, results) \
             SELECT p.id, p.n, p.builder_id, p.id, {worker}, {master}, {start}, \
             {start} + 900 + p.j % 1800, CASE WHEN {results} = 2 THEN 'failed test' ELSE 'build successful' END, {results} \
             FROM ({pairs}) p"
        )).await?;
        exec(self.pool, "build requests", format!(
            "INSERT INTO buildrequests (id, buildset_id, builder_id, priority, repository, branch, submitted_at, complete, \
             complete_at, results, waited_for, claimed_by_master_id, claimed_at, build_id) \
             SELECT p.id, {base} + p.n, p.builder_id, 0, 'https://github.com/python/cpython', '{git}', \
             {T0} + p.n * 600 + {bi} * 60, 1, {start} + 900 + p.j % 1800, {results}, 0, {master}, {start}, p.id \
             FROM ({pairs}) p"
        )).await?;
        Ok(self.pushes * self.builders)
    }

    /// Every build's steps.
    async fn steps(&self, builds: i64) -> anyhow::Result<()> {
        let next_id = self.next_id;
        let steps_values: Vec<String> =
            STEP_NAMES.iter().enumerate().map(|(i, name)| format!("SELECT {i} AS k, '{name}' AS name")).collect();
        exec(self.pool, "steps", format!(
            "WITH st AS ({}) INSERT INTO steps (id, build_id, number, name, started_at, complete_at, state_string, results, hidden) \
             SELECT (b.id - 1) * {n} + st.k + 1, b.id, st.k, st.name, b.started_at + st.k * 120, b.started_at + st.k * 120 + 110, \
             st.name || CASE WHEN b.results = 2 AND st.name = 'test' THEN ' failed' ELSE '' END, \
             CASE WHEN st.name = 'test' THEN b.results ELSE 0 END, 0 \
             FROM builds b CROSS JOIN st WHERE b.id >= {next_id} AND b.id < {next_id} + {builds}",
            steps_values.join(" UNION ALL "),
            n = STEP_NAMES.len()
        )).await?;
        Ok(())
    }

    /// Every build's properties, as a Buildbot master sets them (values are JSON).
    async fn properties(&self, builds: i64) -> anyhow::Result<()> {
        let (next_id, label) = (self.next_id, self.label);
        let names: Vec<String> = ["got_revision", "buildername", "buildnumber", "workername", "scheduler", "branch"]
            .iter()
            .enumerate()
            .map(|(k, name)| format!("SELECT {k} AS k, '{name}' AS name"))
            .collect();
        exec(
            self.pool,
            "build properties",
            format!(
                "WITH pr AS ({}) INSERT INTO build_properties (build_id, name, value, source) \
                 SELECT b.id, pr.name, CASE pr.k WHEN 0 THEN '\"rev' || b.id || '\"' \
                 WHEN 1 THEN '\"builder-' || b.builder_id || '\"' WHEN 2 THEN CAST(b.number AS TEXT) \
                 WHEN 3 THEN '\"worker-' || b.worker_id || '\"' ELSE '\"{label}\"' END, \
                 CASE pr.k WHEN 0 THEN 'Git' WHEN 1 THEN 'Builder' WHEN 3 THEN 'Worker' \
                 WHEN 4 THEN 'Scheduler' ELSE 'Build' END \
                 FROM builds b CROSS JOIN pr WHERE b.id >= {next_id} AND b.id < {next_id} + {builds}",
                names.join(" UNION ALL ")
            ),
        )
        .await?;
        Ok(())
    }
}

/// The schema and the configuration's rows, through the store; returns the
/// builders and this tool's master id.
async fn prepare(database: &str) -> anyhow::Result<(Vec<BuilderSpec>, i64)> {
    let store = Store::connect(database).await.context("opening the store")?;
    let specs = specs();
    let workers: Vec<WorkerSpec> = (0..WORKERS).map(|i| WorkerSpec { name: format!("worker-{i}") }).collect();
    let master = store.register_master("fill-store", 0).await?;
    store.sync_configuration(master, &specs, &workers).await?;
    store.close().await;
    eprintln!("{} builders, {} workers", specs.len(), workers.len());
    Ok((specs, master))
}

/// One connection, checked empty and tuned for bulk inserts.
async fn bulk_pool(database: &str) -> anyhow::Result<sqlx::AnyPool> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(database).await?;
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM builds").fetch_one(&pool).await?;
    if existing > 0 {
        bail!("the database already holds {existing} builds; fill-store wants an empty one");
    }
    if database.starts_with("sqlite") {
        sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
        sqlx::query("PRAGMA synchronous = OFF").execute(&pool).await?;
        // Each statement inserts millions of rows into a dozen indexes: with
        // SQLite's default 2 MB page cache a 10 M-build fill thrashes.
        sqlx::query("PRAGMA cache_size = -4000000").execute(&pool).await?;
    }
    Ok(pool)
}

/// Sequences past the ids written by hand, and fresh statistics.
async fn finish(pool: &sqlx::AnyPool, database: &str) -> anyhow::Result<()> {
    if database.starts_with("postgres") {
        for table in ["sourcestamps", "changes", "buildsets", "buildrequests", "builds", "steps"] {
            sqlx::query(AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
            )))
            .execute(pool)
            .await?;
        }
    }
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    if let Some(path) = &args.write_config {
        std::fs::write(path, config_text(&args.database)).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let (specs, master) = prepare(&args.database).await?;
    let pool = bulk_pool(&args.database).await?;
    // Pushes per branch so that every builder gets `per_builder` builds.
    let per_builder = args.builds.div_ceil(specs.len());
    let first_worker: i64 = sqlx::query_scalar("SELECT MIN(id) FROM workers").fetch_one(&pool).await?;
    let mut next_id: i64 = 1;
    for (bi, (label, git)) in BRANCHES.iter().enumerate() {
        let count = format!("SELECT COUNT(*) FROM builders WHERE branch = '{label}'");
        let builders: i64 = sqlx::query_scalar(AssertSqlSafe(count)).fetch_one(&pool).await?;
        eprintln!("branch {label}: {builders} builders, {per_builder} pushes");
        let fill =
            Fill { pool: &pool, bi, label, git, pushes: per_builder as i64, builders, next_id, master, first_worker };
        fill.changes().await?;
        let builds = fill.builds().await?;
        fill.steps(builds).await?;
        fill.properties(builds).await?;
        next_id += builds;
    }
    // The builds went in wholesale: each builder's newest is read from them.
    Store::connect(&args.database).await?.refresh_builder_latest().await?;
    finish(&pool, &args.database).await?;
    eprintln!("{} builds in {:.0} s", next_id - 1, started.elapsed().as_secs_f64());
    Ok(())
}
