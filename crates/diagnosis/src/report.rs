//! What a test run came to, whichever runner produced it.

use serde::Serialize;

/// How one test (a file, or a method in it) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It passed.
    Passed,
    /// An assertion failed, or it raised.
    Failed,
    /// It was skipped (or a resource it needs was denied).
    Skipped,
    /// It passed but changed the execution environment (regrtest's "env changed").
    EnvChanged,
    /// Its process died (`Fatal Python error`, a signal, a non-zero exit).
    Crashed,
    /// It ran past its time limit.
    TimedOut,
    /// It ran no tests at all.
    NoTests,
    /// The run was interrupted while it ran.
    Interrupted,
}

impl Outcome {
    /// Every outcome, for tests and parsers.
    pub const ALL: [Outcome; 8] = [
        Outcome::Passed,
        Outcome::Failed,
        Outcome::Skipped,
        Outcome::EnvChanged,
        Outcome::Crashed,
        Outcome::TimedOut,
        Outcome::NoTests,
        Outcome::Interrupted,
    ];

    /// Whether this outcome makes the run red.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Crashed | Outcome::TimedOut | Outcome::EnvChanged)
    }

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::EnvChanged => "env_changed",
            Outcome::Crashed => "crashed",
            Outcome::TimedOut => "timed_out",
            Outcome::NoTests => "no_tests",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// The outcome a stored spelling names.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// Which runner's output a report was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TestRunner {
    /// CPython's `python -m test`, read from the step's log.
    Regrtest,
    /// A JUnit XML file a step uploaded.
    Junit,
}

impl TestRunner {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TestRunner::Regrtest => "regrtest",
            TestRunner::Junit => "junit",
        }
    }

    /// The runner a stored spelling names.
    pub fn parse(s: &str) -> Option<TestRunner> {
        [TestRunner::Regrtest, TestRunner::Junit].into_iter().find(|r| r.as_str() == s)
    }
}

/// One test method (`test_fail.T.test_bad`), known when the output names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MethodResult {
    /// The dotted name: module, class, method.
    pub name: String,
    /// How its first run ended.
    pub outcome: Outcome,
    /// How its re-run ended, if it was re-run.
    pub rerun: Option<Outcome>,
    /// Its traceback (or the failure's message), possibly cut short.
    pub traceback: String,
}

/// One test file (regrtest's unit, `test_os`), or a JUnit test case's class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileResult {
    /// Its name, as the runner takes it on its command line.
    pub name: String,
    /// How its first run ended; `None` while it runs.
    pub outcome: Option<Outcome>,
    /// How its re-run ended, if it was re-run.
    pub rerun: Option<Outcome>,
    /// How long it took, when the output says.
    pub duration_ms: Option<u64>,
    /// The methods the output named (failures, mostly).
    pub methods: Vec<MethodResult>,
    /// What the output said about it outside any method (a short traceback, a crash).
    pub detail: String,
}

impl FileResult {
    /// A file that has started and not ended.
    pub fn new(name: &str) -> FileResult {
        FileResult {
            name: name.to_string(),
            outcome: None,
            rerun: None,
            duration_ms: None,
            methods: Vec::new(),
            detail: String::new(),
        }
    }

    /// Failed (or crashed, timed out) and did not pass when re-run.
    pub fn failed(&self) -> bool {
        self.outcome.is_some_and(Outcome::is_failure) && self.rerun.is_none_or(Outcome::is_failure)
    }

    /// Failed, then passed when re-run.
    pub fn flaky(&self) -> bool {
        self.outcome.is_some_and(Outcome::is_failure) && self.rerun.is_some_and(|r| !r.is_failure())
    }

    /// The outcome that counts: the re-run's when there was one.
    pub fn last_outcome(&self) -> Option<Outcome> {
        self.rerun.or(self.outcome)
    }
}

/// A leak regrtest's `-R` found: `test_x leaked [1, 1, 1] references, sum=3`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leak {
    /// The test file.
    pub test: String,
    /// What leaked: `references`, `memory blocks`, `file descriptors`.
    pub what: String,
    /// The whole line.
    pub line: String,
}

/// Everything a test run's output said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestReport {
    /// Whose output it was.
    pub runner: TestRunner,
    /// The `== CPython …` line's version text.
    pub python: Option<String>,
    /// `Using random seed: N`.
    pub seed: Option<String>,
    /// The command that ran the tests (regrtest prints it after `+ `).
    pub command: Option<String>,
    /// Whether the tests ran in worker processes (`-j`), each file in its own.
    pub parallel: bool,
    /// The test files, in the order they started.
    pub files: Vec<FileResult>,
    /// Leaks found by `-R`.
    pub leaks: Vec<Leak>,
    /// `Fatal Python error` and timeout lines, each with the test it hit.
    pub fatal: Vec<String>,
    /// The last `== Tests result: … ==` (or `Result: …`) text, e.g. `FAILURE then SUCCESS`.
    pub summary: Option<String>,
    /// Whether something was dropped to keep the report bounded.
    pub truncated: bool,
}

impl TestReport {
    /// An empty report of `runner`.
    pub fn new(runner: TestRunner) -> TestReport {
        TestReport {
            runner,
            python: None,
            seed: None,
            command: None,
            parallel: false,
            files: Vec::new(),
            leaks: Vec::new(),
            fatal: Vec::new(),
            summary: None,
            truncated: false,
        }
    }

    /// Whether the output was a test run at all.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.seed.is_none() && self.summary.is_none() && self.python.is_none()
    }

    /// The files that failed for good.
    pub fn failed(&self) -> impl Iterator<Item = &FileResult> {
        self.files.iter().filter(|f| f.failed())
    }

    /// The files that failed, then passed when re-run.
    pub fn flaky(&self) -> impl Iterator<Item = &FileResult> {
        self.files.iter().filter(|f| f.flaky())
    }

    /// (passed, failed) files: what Buildbot's `tests_passed` and `tests_failed` hold.
    pub fn counts(&self) -> (u64, u64) {
        let failed = self.failed().count() as u64;
        let passed = self.files.iter().filter(|f| f.last_outcome().is_some_and(|o| !o.is_failure())).count() as u64;
        (passed, failed)
    }

    /// The file named `name`.
    pub fn file(&self, name: &str) -> Option<&FileResult> {
        self.files.iter().find(|f| f.name == name)
    }
}
