//! Test results: Buildbot's `test_result_sets` and `test_results` (with
//! `test_names`), and Cascade's additions beside them: what a run's output
//! said (`test_runs`) and each test that did not simply pass
//! (`test_problems`). A set is written whole, in one transaction.

use std::collections::HashMap;

use sqlx::{AnyConnection, AssertSqlSafe};

use crate::changes::placeholders;
use crate::query::{FieldType, ListQuery, Page, compile, fetch_page, field};
use crate::records::get;
use crate::{Result, Store};

const SET_FIELDS: &[crate::query::Field] = &[
    field("test_result_setid", "s.id", FieldType::Int),
    field("builderid", "s.builderid", FieldType::Int),
    field("buildid", "s.buildid", FieldType::Int),
    field("stepid", "s.stepid", FieldType::Int),
    field("description", "s.description", FieldType::Text),
    field("category", "s.category", FieldType::Text),
    field("value_unit", "s.value_unit", FieldType::Text),
    field("tests_passed", "s.tests_passed", FieldType::Int),
    field("tests_failed", "s.tests_failed", FieldType::Int),
    field("complete", "s.complete", FieldType::Flag),
];
const SET_COLUMNS: &str = "s.id, s.builderid, s.buildid, s.stepid, s.description, s.category, s.value_unit, \
                           s.tests_passed, s.tests_failed, s.complete";

const RESULT_FIELDS: &[crate::query::Field] = &[
    field("test_resultid", "r.id", FieldType::Int),
    field("builderid", "r.builderid", FieldType::Int),
    field("test_result_setid", "r.test_result_setid", FieldType::Int),
    field("test_name", "n.name", FieldType::Text),
    field("test_code_path", "p.path", FieldType::Text),
    field("line", "r.line", FieldType::Int),
    field("duration_ns", "r.duration_ns", FieldType::Int),
    field("value", "r.value", FieldType::Text),
];
const RESULT_FROM: &str = "test_results r LEFT JOIN test_names n ON n.id = r.test_nameid \
                           LEFT JOIN test_code_paths p ON p.id = r.test_code_pathid";

/// A test result set (Buildbot's `/test_result_sets`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestResultSetRecord {
    /// The set's id.
    pub test_result_setid: i64,
    /// The builder of its build.
    pub builderid: i64,
    /// Its build.
    pub buildid: i64,
    /// The step whose output (or upload) it was read from.
    pub stepid: i64,
    /// What it is (`regrtest: stdio of test`).
    pub description: Option<String>,
    /// Buildbot's category: `pass_fail` here.
    pub category: String,
    /// Buildbot's unit of `value`: `boolean` here.
    pub value_unit: String,
    /// Tests that passed (or passed when re-run).
    pub tests_passed: Option<i64>,
    /// Tests that failed for good.
    pub tests_failed: Option<i64>,
    /// Whether every result is in.
    pub complete: bool,
}

/// One test result (Buildbot's `/test_result_sets/{id}/results`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestResultRecord {
    /// The result's id.
    pub test_resultid: i64,
    /// The builder.
    pub builderid: i64,
    /// Its set.
    pub test_result_setid: i64,
    /// The test's name.
    pub test_name: Option<String>,
    /// The test's file.
    pub test_code_path: Option<String>,
    /// The line in that file.
    pub line: Option<i64>,
    /// How long it ran.
    pub duration_ns: Option<i64>,
    /// `1` passed, `0` failed.
    pub value: String,
}

/// What a run's output said besides the results (Cascade's addition).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TestRunRecord {
    /// The set it belongs to.
    pub test_result_setid: i64,
    /// Its build.
    pub buildid: i64,
    /// `regrtest` or `junit`.
    pub runner: String,
    /// The interpreter's version line.
    pub python: Option<String>,
    /// `Using random seed: N`.
    pub seed: Option<String>,
    /// The command that ran the tests.
    pub command: Option<String>,
    /// Whether tests ran in worker processes (`-j`).
    pub parallel: bool,
    /// The test files in the order they started.
    pub order: Vec<String>,
    /// `== Tests result: … ==`.
    pub summary: Option<String>,
    /// Leak lines.
    pub leaks: Vec<String>,
    /// `Fatal Python error` and timeout lines.
    pub fatal: Vec<String>,
    /// Whether the parser dropped something to stay bounded.
    pub truncated: bool,
}

/// A test that did not simply pass (Cascade's addition).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TestProblemRecord {
    /// Its set.
    pub test_result_setid: i64,
    /// Its build.
    pub buildid: i64,
    /// The build's builder.
    pub builderid: i64,
    /// The test file.
    pub file: String,
    /// The method, when known; `None` for the file's own row.
    pub method: Option<String>,
    /// How the first run ended (`cascade_diagnosis::Outcome`'s name).
    pub outcome: String,
    /// How the re-run ended.
    pub rerun: Option<String>,
    /// Failed, then passed on re-run.
    pub flaky: bool,
    /// Its traceback or what else the output said.
    pub detail: String,
}

/// One result to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTestResult {
    /// The test's name.
    pub name: String,
    /// Whether it passed (or passed on re-run).
    pub passed: bool,
    /// How long it ran.
    pub duration_ns: Option<i64>,
}

/// A whole set to store: Buildbot's rows and Cascade's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTestSet {
    /// The builder.
    pub builder_id: i64,
    /// The build.
    pub build_id: i64,
    /// The step it was read from.
    pub step_id: i64,
    /// What it is.
    pub description: String,
    /// Every test's result.
    pub results: Vec<NewTestResult>,
    /// What the output said (its ids are filled in when stored).
    pub run: TestRunRecord,
    /// The tests that did not simply pass (ids filled in when stored).
    pub problems: Vec<TestProblemRecord>,
}

/// PostgreSQL refuses NUL in text; test output may hold one.
fn clean(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

impl Store {
    /// Stores a set whole; returns its id.
    pub async fn add_test_set(&self, set: &NewTestSet) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let passed = set.results.iter().filter(|r| r.passed).count() as i64;
        let row = sqlx::query(
            "INSERT INTO test_result_sets (builderid, buildid, stepid, description, category, value_unit, \
             tests_passed, tests_failed, complete) VALUES ($1, $2, $3, $4, 'pass_fail', 'boolean', $5, $6, 1) \
             RETURNING id",
        )
        .bind(set.builder_id)
        .bind(set.build_id)
        .bind(set.step_id)
        .bind(clean(&set.description))
        .bind(passed)
        .bind(set.results.len() as i64 - passed)
        .fetch_one(&mut *tx)
        .await?;
        let set_id: i64 = get(&row, "id")?;
        let names: Vec<String> = set.results.iter().map(|r| clean(&r.name)).collect();
        let ids = name_ids(&mut tx, set.builder_id, &names).await?;
        let rows: Vec<(Option<i64>, Option<i64>, &str)> = set
            .results
            .iter()
            .zip(&names)
            .map(|(r, name)| (ids.get(name).copied(), r.duration_ns, if r.passed { "1" } else { "0" }))
            .collect();
        // Many rows per statement: a CPython run has about 500.
        for chunk in rows.chunks(200) {
            let values: Vec<String> =
                (0..chunk.len()).map(|i| format!("($1, $2, ${}, ${}, ${})", 3 * i + 3, 3 * i + 4, 3 * i + 5)).collect();
            let sql = format!(
                "INSERT INTO test_results (builderid, test_result_setid, test_nameid, duration_ns, value) VALUES {}",
                values.join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(set.builder_id).bind(set_id);
            for (name_id, duration, value) in chunk {
                q = q.bind(*name_id).bind(*duration).bind(value.to_string());
            }
            q.execute(&mut *tx).await?;
        }
        add_run(&mut tx, set_id, set).await?;
        for p in &set.problems {
            sqlx::query(
                "INSERT INTO test_problems (test_result_setid, buildid, builderid, file, method, outcome, rerun, \
                 flaky, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(set_id)
            .bind(set.build_id)
            .bind(set.builder_id)
            .bind(clean(&p.file))
            .bind(p.method.as_deref().map(clean))
            .bind(clean(&p.outcome))
            .bind(p.rerun.as_deref().map(clean))
            .bind(i64::from(p.flaky))
            .bind(clean(&p.detail))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(set_id)
    }

    /// Test result sets, as Buildbot's list endpoints filter them.
    pub async fn list_test_sets(&self, q: &ListQuery) -> Result<Page<TestResultSetRecord>> {
        let compiled = compile(SET_FIELDS, q, "s.id")?;
        let (rows, total) = fetch_page(&self.pool, SET_COLUMNS, "test_result_sets s", &compiled).await?;
        Ok(Page { items: rows.iter().map(set_from).collect::<Result<_>>()?, total })
    }

    /// The results of sets, as Buildbot's `/test_result_sets/{id}/results` filters them.
    pub async fn list_test_results(&self, q: &ListQuery) -> Result<Page<TestResultRecord>> {
        let compiled = compile(RESULT_FIELDS, q, "r.id")?;
        let select = "r.id, r.builderid, r.test_result_setid, n.name, p.path, r.line, r.duration_ns, r.value";
        let (rows, total) = fetch_page(&self.pool, select, RESULT_FROM, &compiled).await?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(TestResultRecord {
                    test_resultid: get(r, "id")?,
                    builderid: get(r, "builderid")?,
                    test_result_setid: get(r, "test_result_setid")?,
                    test_name: get(r, "name")?,
                    test_code_path: get(r, "path")?,
                    line: get(r, "line")?,
                    duration_ns: get(r, "duration_ns")?,
                    value: get(r, "value")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Page { items, total })
    }

    /// What the runs of these builds' sets said, by set id ascending.
    pub async fn test_runs_of(&self, build_ids: &[i64]) -> Result<Vec<TestRunRecord>> {
        let rows = self
            .rows_for_ids(build_ids, |list| {
                format!(
                    "SELECT test_result_setid, buildid, runner, python, seed, command, parallel, test_order, \
                     summary, leaks, fatal, truncated FROM test_runs WHERE buildid IN ({list}) \
                     ORDER BY test_result_setid"
                )
            })
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TestRunRecord {
                    test_result_setid: get(r, "test_result_setid")?,
                    buildid: get(r, "buildid")?,
                    runner: get(r, "runner")?,
                    python: get(r, "python")?,
                    seed: get(r, "seed")?,
                    command: get(r, "command")?,
                    parallel: get::<i64>(r, "parallel")? != 0,
                    order: lines(&get::<String>(r, "test_order")?),
                    summary: get(r, "summary")?,
                    leaks: lines(&get::<String>(r, "leaks")?),
                    fatal: lines(&get::<String>(r, "fatal")?),
                    truncated: get::<i64>(r, "truncated")? != 0,
                })
            })
            .collect()
    }

    /// The tests that did not simply pass in these builds, in the order stored.
    pub async fn test_problems_of(&self, build_ids: &[i64]) -> Result<Vec<TestProblemRecord>> {
        let rows = self
            .rows_for_ids(build_ids, |list| {
                format!(
                    "SELECT test_result_setid, buildid, builderid, file, method, outcome, rerun, flaky, detail \
                     FROM test_problems WHERE buildid IN ({list}) ORDER BY buildid, id"
                )
            })
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TestProblemRecord {
                    test_result_setid: get(r, "test_result_setid")?,
                    buildid: get(r, "buildid")?,
                    builderid: get(r, "builderid")?,
                    file: get(r, "file")?,
                    method: get(r, "method")?,
                    outcome: get(r, "outcome")?,
                    rerun: get(r, "rerun")?,
                    flaky: get::<i64>(r, "flaky")? != 0,
                    detail: get(r, "detail")?,
                })
            })
            .collect()
    }

    /// The test files each build failed for good (not flaky), in the order
    /// stored; a file the log and an uploaded JUnit file both name counts once.
    pub async fn failed_test_files(&self, build_ids: &[i64]) -> Result<HashMap<i64, Vec<String>>> {
        let rows = self
            .rows_for_ids(build_ids, |list| {
                format!(
                    "SELECT buildid, file FROM test_problems WHERE buildid IN ({list}) AND method IS NULL \
                     AND flaky = 0 ORDER BY buildid, id"
                )
            })
            .await?;
        let mut out: HashMap<i64, Vec<String>> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            let (build, file): (i64, String) = (get(r, "buildid")?, get(r, "file")?);
            if seen.insert((build, file.clone())) {
                out.entry(build).or_default().push(file);
            }
        }
        Ok(out)
    }

    /// Which of these builds have test results at all.
    pub async fn builds_with_tests(&self, build_ids: &[i64]) -> Result<Vec<i64>> {
        let rows = self
            .rows_for_ids(build_ids, |list| format!("SELECT DISTINCT buildid FROM test_runs WHERE buildid IN ({list})"))
            .await?;
        rows.iter().map(|r| get(r, "buildid")).collect()
    }
}

async fn add_run(tx: &mut AnyConnection, set_id: i64, set: &NewTestSet) -> Result<()> {
    let run = &set.run;
    sqlx::query(
        "INSERT INTO test_runs (test_result_setid, buildid, runner, python, seed, command, parallel, test_order, \
         summary, leaks, fatal, truncated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(set_id)
    .bind(set.build_id)
    .bind(clean(&run.runner))
    .bind(run.python.as_deref().map(clean))
    .bind(run.seed.as_deref().map(clean))
    .bind(run.command.as_deref().map(clean))
    .bind(i64::from(run.parallel))
    .bind(clean(&run.order.join("\n")))
    .bind(run.summary.as_deref().map(clean))
    .bind(clean(&run.leaks.join("\n")))
    .bind(clean(&run.fatal.join("\n")))
    .bind(i64::from(run.truncated))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The ids of a builder's test names, adding those it lacks.
async fn name_ids(tx: &mut AnyConnection, builder_id: i64, names: &[String]) -> Result<HashMap<String, i64>> {
    let mut ids = HashMap::new();
    for chunk in names.chunks(400) {
        let values: Vec<String> = (0..chunk.len()).map(|i| format!("($1, ${})", i + 2)).collect();
        let sql = format!(
            "INSERT INTO test_names (builderid, name) VALUES {} ON CONFLICT (builderid, name) DO NOTHING",
            values.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(builder_id);
        for name in chunk {
            q = q.bind(name.clone());
        }
        q.execute(&mut *tx).await?;
        let sql = format!(
            "SELECT id, name FROM test_names WHERE builderid = $1 AND name IN ({})",
            placeholders(2, chunk.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(builder_id);
        for name in chunk {
            q = q.bind(name.clone());
        }
        for row in q.fetch_all(&mut *tx).await? {
            ids.insert(get(&row, "name")?, get(&row, "id")?);
        }
    }
    Ok(ids)
}

fn set_from(r: &sqlx::any::AnyRow) -> Result<TestResultSetRecord> {
    Ok(TestResultSetRecord {
        test_result_setid: get(r, "id")?,
        builderid: get(r, "builderid")?,
        buildid: get(r, "buildid")?,
        stepid: get(r, "stepid")?,
        description: get(r, "description")?,
        category: get(r, "category")?,
        value_unit: get(r, "value_unit")?,
        tests_passed: get(r, "tests_passed")?,
        tests_failed: get(r, "tests_failed")?,
        complete: get::<i64>(r, "complete")? != 0,
    })
}
