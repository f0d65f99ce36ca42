//! From a red cell to the cause: a build's failed and flaky tests with
//! their tracebacks, the command that reproduces them and the order file to
//! bisect; the changes that may have broken a builder; the count on a
//! console cell; and `/tests`, the tests failing now across builders.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use cascade_diagnosis::reproduce;
use cascade_diagnosis::verdict::{Run, TestState, flakiness, suspects};
use cascade_store::records::BuildRecord;
use cascade_store::{Store, StoreError, TestProblemRecord, TestRunRecord};

use super::{Chrome, Filter, Pages, build_href, not_found, render};
use crate::error::HttpError;

/// Builds per builder that `/tests` and flakiness rates look back over.
pub const HISTORY: i64 = 20;

/// One failing (or flaky) test file on a build page.
pub struct Failure {
    pub file: String,
    pub anchor: String,
    pub outcome: String,
    pub rerun: Option<String>,
    pub detail: String,
    /// (method, outcome, traceback).
    pub methods: Vec<(String, String, String)>,
    /// Where its `--fromfile` order file downloads from.
    pub order_href: Option<String>,
}

/// What one test run of a build said.
pub struct RunView {
    pub set_id: i64,
    pub runner: String,
    pub summary: String,
    pub seed: Option<String>,
    pub python: Option<String>,
    pub failed: Vec<Failure>,
    pub flaky: Vec<Failure>,
    pub leaks: Vec<String>,
    pub fatal: Vec<String>,
    pub reproduce: Option<String>,
    pub truncated: bool,
    /// Failed and flaky files past what the page lists.
    pub more: usize,
}

/// Failed (or flaky) files a build page lists per run; the API has them all.
const LISTED: usize = 300;

/// The changes that may have broken the builder, when this build is in a failing streak.
pub struct SuspectsView {
    pub breaking_href: String,
    pub breaking_number: i64,
    /// (change id, short revision, author, title, whether it is the likely cause).
    pub changes: Vec<(i64, String, String, String, bool)>,
    pub likely: Option<i64>,
    pub narrowed_by: usize,
}

/// A build page's diagnosis.
#[derive(Default)]
pub struct Diagnosis {
    pub runs: Vec<RunView>,
    pub suspects: Option<SuspectsView>,
}

impl Diagnosis {
    /// Whether a rerun has failed tests to run.
    pub fn can_rerun(&self) -> bool {
        self.runs.iter().any(|r| !r.failed.is_empty())
    }
}

/// The anchor of a test on its build page.
pub fn anchor(file: &str) -> String {
    let safe: String = file.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    format!("test-{safe}")
}

fn failure(p: &TestProblemRecord, methods: &[&TestProblemRecord], order_href: Option<String>) -> Failure {
    Failure {
        file: p.file.clone(),
        anchor: anchor(&p.file),
        outcome: p.outcome.replace('_', " "),
        rerun: p.rerun.as_ref().map(|r| r.replace('_', " ")),
        detail: p.detail.clone(),
        methods: methods
            .iter()
            .map(|m| (m.method.clone().unwrap_or_default(), m.outcome.replace('_', " "), m.detail.clone()))
            .collect(),
        order_href,
    }
}

fn run_view(href: &str, run: &TestRunRecord, problems: &[TestProblemRecord]) -> RunView {
    let mine: Vec<&TestProblemRecord> =
        problems.iter().filter(|p| p.test_result_setid == run.test_result_setid).collect();
    let mut by_file: HashMap<&str, Vec<&TestProblemRecord>> = HashMap::new();
    for m in mine.iter().filter(|m| m.method.is_some()) {
        by_file.entry(m.file.as_str()).or_default().push(m);
    }
    let (mut failed, mut flaky, mut more) = (Vec::new(), Vec::new(), 0);
    for file in mine.iter().filter(|p| p.method.is_none()) {
        let full = if file.flaky { flaky.len() >= LISTED } else { failed.len() >= LISTED };
        if full {
            more += 1;
            continue;
        }
        let methods: Vec<&TestProblemRecord> = by_file.get(file.file.as_str()).cloned().unwrap_or_default();
        let order = (!run.order.is_empty())
            .then(|| format!("{href}/tests/{}/order?test={}", run.test_result_setid, urlencode(&file.file)));
        let f = failure(file, &methods, order);
        if file.flaky { flaky.push(f) } else { failed.push(f) }
    }
    let names: Vec<&str> = failed.iter().map(|f| f.file.as_str()).collect();
    let reproduce = run
        .command
        .as_deref()
        .filter(|_| !names.is_empty())
        .and_then(|c| reproduce::command(c, run.seed.as_deref(), &names));
    RunView {
        set_id: run.test_result_setid,
        runner: run.runner.clone(),
        summary: run.summary.clone().unwrap_or_default(),
        seed: run.seed.clone(),
        python: run.python.clone(),
        failed,
        flaky,
        leaks: run.leaks.clone(),
        fatal: run.fatal.clone(),
        reproduce,
        truncated: run.truncated,
        more,
    }
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).map(|e| e.trim_start_matches('=').to_string()).unwrap_or_default()
}

/// What a build page says about its tests and, if it fails, about the cause.
pub async fn diagnosis(m: &Pages, b: &BuildRecord) -> Result<Diagnosis, StoreError> {
    let runs = m.store.test_runs_of(&[b.buildid]).await?;
    let problems = m.store.test_problems_of(&[b.buildid]).await?;
    let href = build_href(b.builderid, b.number);
    let views: Vec<RunView> = runs.iter().map(|r| run_view(&href, r, &problems)).collect();
    let failing = b.complete
        && b.results
            .is_some_and(|r| cascade_model::Results::from_code(r).is_some_and(cascade_model::Results::is_failing));
    let suspects = if failing { suspects_of(m, b).await? } else { None };
    Ok(Diagnosis { runs: views, suspects })
}

/// Where `b`'s builder's failing streak began, its blamelist, narrowed by
/// the streaks of other builders of the same branch that began failing the
/// same tests.
async fn suspects_of(m: &Pages, b: &BuildRecord) -> Result<Option<SuspectsView>, StoreError> {
    let Some(breaking) = m.store.breaking_builds(&[b.builderid]).await?.into_iter().next() else { return Ok(None) };
    if breaking.number > b.number {
        return Ok(None);
    }
    let branch = m.catalog.builder(b.builderid).and_then(|c| c.branch.clone());
    let peers: Vec<i64> =
        m.catalog.builders().filter(|(c, id)| *id != b.builderid && c.branch == branch).map(|(_, id)| id).collect();
    let peer_breaks = m.store.breaking_builds(&peers).await?;
    let mut ids: Vec<i64> = peer_breaks.iter().map(|p| p.buildid).collect();
    ids.push(breaking.buildid);
    let failed = m.store.failed_test_files(&ids).await?;
    let pairs = m.store.blamelist_pairs(&ids).await?;
    let blamelist = |id: i64| pairs.iter().filter(|(b, _)| *b == id).map(|(_, c)| *c).collect::<Vec<i64>>();
    let own_failed = failed.get(&breaking.buildid).cloned().unwrap_or_default();
    let others: Vec<Vec<i64>> = peer_breaks
        .iter()
        .filter(|p| failed.get(&p.buildid).is_some_and(|f| f.iter().any(|t| own_failed.contains(t))))
        .map(|p| blamelist(p.buildid))
        .collect();
    let verdict = suspects(&blamelist(breaking.buildid), &others);
    let mut changes = Vec::new();
    for id in &verdict.changes {
        if let Some(c) = m.store.get_change(*id).await? {
            let rev: String = c.revision.clone().unwrap_or_default().chars().take(12).collect();
            let title = c.comments.lines().next().unwrap_or("").to_string();
            changes.push((c.changeid, rev, c.author.clone(), title, verdict.likely == Some(c.changeid)));
        }
    }
    Ok(Some(SuspectsView {
        breaking_href: build_href(breaking.builderid, breaking.number),
        breaking_number: breaking.number,
        changes,
        likely: verdict.likely,
        narrowed_by: verdict.narrowed_by,
    }))
}

/// The suspects of each breaking build (id → its blamelist), each narrowed
/// by the other breaking builds that began failing a test it fails.
pub async fn narrow(
    store: &Store,
    blamelists: &HashMap<i64, Vec<i64>>,
) -> Result<HashMap<i64, cascade_diagnosis::verdict::Suspects>, StoreError> {
    let ids: Vec<i64> = blamelists.keys().copied().collect();
    let failed = store.failed_test_files(&ids).await?;
    let shares = |a: i64, b: i64| {
        let (Some(x), Some(y)) = (failed.get(&a), failed.get(&b)) else { return false };
        x.iter().any(|t| y.contains(t))
    };
    Ok(blamelists
        .iter()
        .map(|(id, own)| {
            let others: Vec<Vec<i64>> =
                blamelists.iter().filter(|(o, _)| *o != id && shares(*id, **o)).map(|(_, l)| l.clone()).collect();
            (*id, suspects(own, &others))
        })
        .collect())
}

/// What a console or grid cell of a failing build says on hover, and where it links.
pub struct Mark {
    pub count: usize,
    pub first: String,
}

/// The failed tests of builds, for their cells.
pub async fn marks(store: &Store, build_ids: &[i64]) -> Result<HashMap<i64, Mark>, StoreError> {
    let failed = store.failed_test_files(build_ids).await?;
    Ok(failed
        .into_iter()
        .filter_map(|(id, files)| Some((id, Mark { count: files.len(), first: files.first()?.clone() })))
        .collect())
}

impl Mark {
    /// `2 failed tests: test_os, test_sys`.
    pub fn title(&self) -> String {
        let noun = if self.count == 1 { "test" } else { "tests" };
        format!("{} failed {noun}, first {}", self.count, self.first)
    }
}

#[derive(serde::Deserialize)]
pub struct OrderQuery {
    test: String,
}

/// `GET /builders/{id}/builds/{number}/tests/{set}/order?test=NAME`: the
/// `--fromfile` file for bisecting a failed test.
pub async fn order(
    State(m): State<Arc<Pages>>,
    Path((builder, number, set)): Path<(String, String, String)>,
    Query(q): Query<OrderQuery>,
) -> Result<Response, HttpError> {
    let b = super::build::find(&m, &builder, &number).await?;
    let set_id: i64 = set.parse().map_err(|_| not_found("test result set"))?;
    let runs = m.store.test_runs_of(&[b.buildid]).await?;
    let run = runs.iter().find(|r| r.test_result_setid == set_id).ok_or_else(|| not_found("test result set"))?;
    let text = reproduce::order_file(&run.order, run.parallel, &q.test).ok_or_else(|| not_found("test"))?;
    let name: String = q.test.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.').collect();
    let disposition = format!("attachment; filename=\"order-{name}.txt\"");
    let mut response = text.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// One test failing now, on `/tests`.
pub struct FailingTest {
    pub name: String,
    /// (builder, link to the failure, since which build number, link to it).
    pub builders: Vec<(String, String, i64, String)>,
    /// Builders where it failed or flaked recently but passes now.
    pub elsewhere: Vec<String>,
    pub flaky: usize,
    pub runs: usize,
}

/// A flaky test, on `/tests`.
pub struct FlakyTest {
    pub name: String,
    pub flaky: usize,
    pub runs: usize,
    pub builders: Vec<String>,
}

#[derive(Template)]
#[template(path = "tests.html")]
pub struct TestsPage {
    pub chrome: Chrome,
    pub failing: Vec<FailingTest>,
    pub flaky: Vec<FlakyTest>,
    pub search: String,
    pub history: i64,
}

/// Each builder's recent builds with test results, oldest first, and how each test fared in each.
struct History {
    builds: BTreeMap<i64, Vec<BuildRecord>>,
    states: HashMap<(i64, String), TestState>,
    revisions: HashMap<i64, String>,
}

impl History {
    async fn load(store: &Store, builder_ids: &[i64]) -> Result<History, StoreError> {
        let recent = store.recent_builds_of(builder_ids, HISTORY).await?;
        let ids: Vec<i64> = recent.iter().filter(|b| b.complete).map(|b| b.buildid).collect();
        let tested: std::collections::HashSet<i64> = store.builds_with_tests(&ids).await?.into_iter().collect();
        let mut builds: BTreeMap<i64, Vec<BuildRecord>> = BTreeMap::new();
        for b in recent.into_iter().filter(|b| tested.contains(&b.buildid)) {
            builds.entry(b.builderid).or_default().push(b);
        }
        for list in builds.values_mut() {
            list.sort_by_key(|b| b.number);
        }
        let ids: Vec<i64> = tested.iter().copied().collect();
        let mut states = HashMap::new();
        for p in store.test_problems_of(&ids).await? {
            if p.method.is_none() {
                states.insert((p.buildid, p.file), if p.flaky { TestState::Flaky } else { TestState::Failed });
            }
        }
        // Revisions matter only where a test failed, and in the build after.
        let troubled: std::collections::HashSet<i64> = states.keys().map(|(id, _)| *id).collect();
        let mut wanted: Vec<i64> = Vec::new();
        for list in builds.values() {
            for (i, b) in list.iter().enumerate() {
                if troubled.contains(&b.buildid) {
                    wanted.push(b.buildid);
                    wanted.extend(list.get(i + 1).map(|n| n.buildid));
                }
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        let mut revisions = HashMap::new();
        for (id, props) in store.build_properties_many(&wanted).await? {
            let rev =
                |n: &str| props.iter().find(|(k, _, _)| k == n).and_then(|(_, v, _)| v.as_str().map(str::to_string));
            if let Some(r) = rev("got_revision").or_else(|| rev("revision")).filter(|r| !r.is_empty()) {
                revisions.insert(id, r);
            }
        }
        Ok(History { builds, states, revisions })
    }

    fn state(&self, build_id: i64, test: &str) -> TestState {
        self.states.get(&(build_id, test.to_string())).copied().unwrap_or(TestState::Passed)
    }

    /// (flaky runs, runs) of `test` over every builder's history.
    fn flakiness(&self, test: &str) -> (usize, usize) {
        self.builds.values().fold((0, 0), |(f, n), list| {
            let runs: Vec<Run<'_>> = list
                .iter()
                .map(|b| Run {
                    revision: self.revisions.get(&b.buildid).map(String::as_str),
                    state: self.state(b.buildid, test),
                })
                .collect();
            let (flaky, count) = flakiness(&runs);
            (f + flaky, n + count)
        })
    }
}

/// `GET /tests`: the tests failing now on the selected branch, and the flaky ones.
pub async fn page(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let filter = Filter::from_query(q.as_deref(), &m.catalog)?.or_first_branch(&m.catalog);
    let search = search_term(q.as_deref());
    let builders = super::builders(&m.catalog, &filter);
    let names: HashMap<i64, String> = builders.iter().map(|(b, id)| (*id, b.name.clone())).collect();
    let ids: Vec<i64> = builders.iter().map(|(_, id)| *id).collect();
    let history = History::load(&m.store, &ids).await?;
    let failing = failing_now(&history, &names, &search);
    let mut flaky: BTreeMap<String, FlakyTest> = BTreeMap::new();
    for ((build_id, test), state) in &history.states {
        if *state != TestState::Flaky || !test.contains(&search) {
            continue;
        }
        let entry = flaky.entry(test.clone()).or_insert_with(|| {
            let (flaky, runs) = history.flakiness(test);
            FlakyTest { name: test.clone(), flaky, runs, builders: Vec::new() }
        });
        let builder = history.builds.iter().find(|(_, l)| l.iter().any(|b| b.buildid == *build_id)).map(|(id, _)| *id);
        if let Some(name) = builder.and_then(|id| names.get(&id))
            && !entry.builders.contains(name)
        {
            entry.builders.push(name.clone());
        }
    }
    let mut flaky: Vec<FlakyTest> = flaky.into_values().collect();
    flaky.sort_by(|a, b| b.flaky.cmp(&a.flaky).then(a.name.cmp(&b.name)));
    let chrome = Chrome::new(&m, &headers, "tests", filter).await;
    render(&headers, &TestsPage { chrome, failing, flaky, search, history: HISTORY }, None)
}

fn search_term(q: Option<&str>) -> String {
    super::query_value(q, "test").map(|v| v.chars().take(200).collect()).unwrap_or_default()
}

/// The tests each builder's newest tested build failed, with where and since when.
fn failing_now(history: &History, names: &HashMap<i64, String>, search: &str) -> Vec<FailingTest> {
    let mut tests: BTreeMap<String, FailingTest> = BTreeMap::new();
    for (builder_id, list) in &history.builds {
        let Some(latest) = list.last() else { continue };
        let name = names.get(builder_id).cloned().unwrap_or_default();
        for ((build_id, test), state) in &history.states {
            if *build_id != latest.buildid || *state != TestState::Failed || !test.contains(search) {
                continue;
            }
            let since = list
                .iter()
                .rev()
                .take_while(|b| history.state(b.buildid, test) == TestState::Failed)
                .last()
                .unwrap_or(latest);
            let entry = tests.entry(test.clone()).or_insert_with(|| {
                let (flaky, runs) = history.flakiness(test);
                FailingTest { name: test.clone(), builders: Vec::new(), elsewhere: Vec::new(), flaky, runs }
            });
            let href = format!("{}#{}", build_href(*builder_id, latest.number), anchor(test));
            entry.builders.push((name.clone(), href, since.number, build_href(*builder_id, since.number)));
        }
    }
    for (builder_id, list) in &history.builds {
        let name = names.get(builder_id).cloned().unwrap_or_default();
        for t in tests.values_mut() {
            let failing_here = t.builders.iter().any(|(b, ..)| *b == name);
            if !failing_here && list.iter().any(|b| history.state(b.buildid, &t.name) != TestState::Passed) {
                t.elsewhere.push(name.clone());
            }
        }
    }
    tests.into_values().collect()
}
