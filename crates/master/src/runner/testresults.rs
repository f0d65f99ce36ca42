//! A step's test results: regrtest's output read as it streams through the
//! step's log, JUnit files read once uploaded, each stored as one set in
//! Buildbot's shapes with Cascade's additions.

use cascade_diagnosis::{Outcome, TestReport, TestRunner};
use cascade_store::{NewTestResult, NewTestSet, TestProblemRecord, TestRunRecord};

/// Where a set came from, for the store.
pub struct Origin {
    pub builder_id: i64,
    pub build_id: i64,
    pub step_id: i64,
    pub description: String,
}

/// The rows a report stores as.
pub fn to_set(report: &TestReport, origin: Origin) -> NewTestSet {
    NewTestSet {
        builder_id: origin.builder_id,
        build_id: origin.build_id,
        step_id: origin.step_id,
        description: origin.description,
        results: results(report),
        run: run(report),
        problems: problems(report, origin.build_id, origin.builder_id),
    }
}

/// Buildbot's rows: one per file for regrtest (its unit), one per test
/// case for JUnit; value 1 when it passed, or passed when re-run.
fn results(report: &TestReport) -> Vec<NewTestResult> {
    let ns = |ms: Option<u64>| ms.and_then(|ms| i64::try_from(ms).ok()).map(|ms| ms.saturating_mul(1_000_000));
    match report.runner {
        TestRunner::Regrtest => report
            .files
            .iter()
            .filter(|f| f.outcome.is_some())
            .map(|f| NewTestResult { name: f.name.clone(), passed: !f.failed(), duration_ns: ns(f.duration_ms) })
            .collect(),
        TestRunner::Junit => report
            .files
            .iter()
            .flat_map(|f| &f.methods)
            .map(|m| NewTestResult {
                name: m.name.clone(),
                passed: !(m.outcome.is_failure() && m.rerun.is_none_or(Outcome::is_failure)),
                duration_ns: None,
            })
            .collect(),
    }
}

fn run(report: &TestReport) -> TestRunRecord {
    TestRunRecord {
        runner: report.runner.as_str().to_string(),
        python: report.python.clone(),
        seed: report.seed.clone(),
        command: report.command.clone(),
        parallel: report.parallel,
        order: report.files.iter().map(|f| f.name.clone()).collect(),
        summary: report.summary.clone(),
        leaks: report.leaks.iter().map(|l| l.line.clone()).collect(),
        fatal: report.fatal.clone(),
        truncated: report.truncated,
        ..TestRunRecord::default()
    }
}

/// Each file that failed (for good, or then passed on re-run), and its failed methods.
fn problems(report: &TestReport, build_id: i64, builder_id: i64) -> Vec<TestProblemRecord> {
    let mut out = Vec::new();
    for file in report.files.iter().filter(|f| f.failed() || f.flaky()) {
        let Some(outcome) = file.outcome else { continue };
        let crash: Vec<&str> =
            report.fatal.iter().filter_map(|line| line.strip_prefix(file.name.as_str())?.strip_prefix(": ")).collect();
        let detail = if file.detail.is_empty() { crash.join("\n") } else { file.detail.clone() };
        let row = TestProblemRecord {
            buildid: build_id,
            builderid: builder_id,
            file: file.name.clone(),
            method: None,
            outcome: outcome.as_str().to_string(),
            rerun: file.rerun.map(|r| r.as_str().to_string()),
            flaky: file.flaky(),
            detail,
            ..TestProblemRecord::default()
        };
        out.push(row);
        for m in file.methods.iter().filter(|m| m.outcome.is_failure() || m.rerun.is_some_and(Outcome::is_failure)) {
            out.push(TestProblemRecord {
                buildid: build_id,
                builderid: builder_id,
                file: file.name.clone(),
                method: Some(m.name.clone()),
                outcome: m.outcome.as_str().to_string(),
                rerun: m.rerun.map(|r| r.as_str().to_string()),
                flaky: m.outcome.is_failure() && m.rerun.is_some_and(|r| !r.is_failure()),
                detail: m.traceback.clone(),
                ..TestProblemRecord::default()
            });
        }
    }
    out
}

/// Reads an uploaded file as JUnit when it looks like one; `None` otherwise.
pub fn read_junit(path: &std::path::Path) -> Option<Result<TestReport, String>> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.len() > cascade_diagnosis::junit::MAX_BYTES as u64 {
        return Some(Err("too large to read as JUnit".into()));
    }
    let bytes = std::fs::read(path).ok()?;
    let head = &bytes[..bytes.len().min(4096)];
    if !head.windows(10).any(|w| w == b"<testsuite") {
        return None;
    }
    let text = String::from_utf8_lossy(&bytes);
    Some(cascade_diagnosis::junit::parse(&text).map_err(|e| e.to_string()))
}
