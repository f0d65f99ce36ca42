//! `/console`: rows are a branch's changes (newest first), columns its
//! builders grouped by tier; each cell is the build that covered that change
//! (a build that merged several changes fills all their rows). Above, a
//! bubble per builder: its current state. `/grid` is the same data with
//! builders as rows and changes as columns.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use cascade_model::pull;
use cascade_store::{ConsoleCell, ListQuery};

use super::diagnosis::{Mark, anchor};
use super::{Chrome, Filter, Look, NOTHING, PENDING, Pages, RUNNING, build_href, look, render};
use crate::catalog::Catalog;
use crate::error::HttpError;

pub struct Column {
    pub id: i64,
    pub name: String,
    pub tier: u8,
    /// Current state: the newest build's look, or idle/offline.
    pub bubble: Look,
    pub bubble_href: Option<String>,
    pub online: bool,
}

pub struct Cell {
    pub look: Look,
    pub href: Option<String>,
    /// What hovering says: what the build covered, the failed tests' count.
    pub title: String,
}

/// A covered change's cell: joined to its build's cell, above it on the
/// console (changes run down) and to its left on the grid (they run across).
const COVERED_DOWN: Look = Look { class: "covered", symbol: "┊", word: "covered by a newer change's build" };
const COVERED_ACROSS: Look = Look { class: "covered", symbol: "┄", word: "covered by a newer change's build" };

pub struct Row {
    pub change_id: i64,
    pub revision: String,
    pub revlink: Option<String>,
    pub author: String,
    pub title: String,
    pub cells: Vec<Cell>,
}

impl Row {
    /// The cell under column `i` (for the grid, which walks columns first).
    pub fn at(&self, i: &&usize) -> &Cell {
        &self.cells[**i]
    }
}

#[derive(Template)]
#[template(path = "console.html")]
pub struct ConsolePage {
    pub chrome: Chrome,
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
    pub grid: bool,
    /// The pull request shown (`?branch=refs/pull/N/merge`, `/pulls/N`).
    pub pull: Option<u64>,
    /// The newest pull requests: (number, title).
    pub pulls: Vec<(u64, String)>,
}

impl ConsolePage {
    /// Whether the page is pull request `n`'s.
    pub fn showing(&self, n: &u64) -> bool {
        self.pull == Some(*n)
    }
}

/// What a build covered: the newest of its changes and how many there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covers {
    pub newest: i64,
    pub changes: usize,
}

/// Each build's coverage, from (build, change) pairs.
pub fn coverage(pairs: &[(i64, i64)]) -> HashMap<i64, Covers> {
    let mut out: HashMap<i64, Covers> = HashMap::new();
    for &(build, change) in pairs {
        let c = out.entry(build).or_insert(Covers { newest: change, changes: 0 });
        c.newest = c.newest.max(change);
        c.changes += 1;
    }
    out
}

/// What a change's cell on one builder says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A build whose newest change this is speaks for it: running or its result.
    Own {
        build_id: i64,
        number: i64,
        look: Look,
        changes: usize,
    },
    /// Only a build shown on a newer change covered it: neutral, joined to that one.
    Covered {
        build_id: i64,
        number: i64,
        others: usize,
    },
    Pending,
    /// Its requests ended without a build (cancelled).
    Ended(Look),
    Nothing,
}

/// The verdict from the requests made for `change` on one builder: a build
/// of its own (the newest) wins, then a request still waiting, then a build
/// that covered it on a newer change, so an innocent change never shows
/// the culprit's result.
pub fn verdict(change: i64, cells: &[&ConsoleCell], covers: &HashMap<i64, Covers>) -> Verdict {
    let built = |own: bool| {
        cells
            .iter()
            .filter_map(|c| Some((c, c.build_id?, c.number?)))
            .filter(move |(_, id, _)| covers.get(id).is_none_or(|cv| cv.newest <= change) == own)
            .max_by_key(|(_, id, _)| *id)
    };
    let changes = |id: i64| covers.get(&id).map_or(1, |c| c.changes);
    if let Some((c, build_id, number)) = built(true) {
        let look = look(c.build_results, c.build_complete);
        return Verdict::Own { build_id, number, look, changes: changes(build_id) };
    }
    if cells.iter().any(|c| !c.request_complete && c.build_id.is_none()) {
        return Verdict::Pending;
    }
    if let Some((_, build_id, number)) = built(false) {
        return Verdict::Covered { build_id, number, others: changes(build_id).saturating_sub(1) };
    }
    match cells.first() {
        Some(c) => Verdict::Ended(look(Some(c.request_results), true)),
        None => Verdict::Nothing,
    }
}

/// "with 2 other changes", "with 1 other change".
fn others(n: usize) -> String {
    format!("with {n} other change{}", if n == 1 { "" } else { "s" })
}

/// How many of the newest pull requests the console and grid link to.
const PULLS_LISTED: usize = 15;

/// `GET /console`.
pub async fn console(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    page(m, headers, q, false).await
}

/// `GET /grid`.
pub async fn grid(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    page(m, headers, q, true).await
}

/// `GET /pulls/{n}`: the grid of one pull request, its builds across its pushes.
pub async fn pull_grid(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    Path(n): Path<String>,
) -> Result<Response, HttpError> {
    let n: u64 = n
        .parse()
        .ok()
        .filter(|n| (1..=pull::NUMBER_MAX).contains(n))
        .ok_or_else(|| HttpError::not_found("no such pull request"))?;
    let query = serde_urlencoded::to_string([("branch", pull::merge_ref(n))]).unwrap_or_default();
    page(m, headers, Some(query), true).await
}

/// Which changes are a page's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rows {
    /// Those of these git branches (or of one PR's merge ref).
    Branches(Vec<String>),
    /// Every pull request's (the PR builders' branch label).
    Pulls,
}

/// What a page shows: the builders' filter, which changes are its rows,
/// and the PR, if it is one's.
fn scope(catalog: &Catalog, filter: &Filter) -> (Filter, Rows, Option<u64>) {
    let pull_labels = catalog.config.pull_request_labels();
    if let Some(n) = filter.branches.iter().find_map(|b| pull::number_of(b)) {
        // A PR is built by the builders of the PR schedulers' branch.
        let branches = pull_labels.iter().map(std::string::ToString::to_string).collect();
        let builders = Filter { branches, tags: filter.tags.clone() };
        return (builders, Rows::Branches(vec![pull::merge_ref(n)]), Some(n));
    }
    let filter = filter.clone().or_first_branch(catalog);
    if filter.branches.iter().any(|b| pull_labels.contains(&b.as_str())) {
        return (filter, Rows::Pulls, None);
    }
    let git =
        catalog.config.branches.iter().filter(|b| filter.branches.contains(&b.name)).map(|b| b.git.clone()).collect();
    (filter, Rows::Branches(git), None)
}

/// `changes=N` from the query: how many rows (1 to 100).
fn change_count(q: Option<&str>, grid: bool) -> i64 {
    q.and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .and_then(|p| p.into_iter().find(|(k, _)| k == "changes").and_then(|(_, v)| v.parse().ok()))
        .unwrap_or(if grid { 15 } else { 20 })
        .clamp(1, 100)
}

/// The bubble over a builder's column: its newest build, else nothing.
fn column(
    b: &cascade_config::BuilderConfig,
    id: i64,
    newest: Option<&&cascade_store::records::BuildRecord>,
    online: bool,
) -> Column {
    let (bubble, bubble_href) = match newest {
        Some(build) if !build.complete => (RUNNING, Some(build_href(id, build.number))),
        Some(build) => (look(build.results, true), Some(build_href(id, build.number))),
        None => (NOTHING, None),
    };
    Column { id, name: b.name.clone(), tier: super::tier(b), bubble, bubble_href, online }
}

/// What the page's cells are made from.
struct Cells<'a> {
    by_key: BTreeMap<(i64, i64), Vec<&'a ConsoleCell>>,
    covers: HashMap<i64, Covers>,
    marks: HashMap<i64, Mark>,
    grid: bool,
}

impl Cells<'_> {
    /// The cell of `change` under `col`.
    fn cell(&self, change: i64, col: &Column) -> Cell {
        let found = self.by_key.get(&(change, col.id)).map_or(&[][..], Vec::as_slice);
        match verdict(change, found, &self.covers) {
            Verdict::Own { build_id, number, look, changes } => {
                let mark = self.marks.get(&build_id);
                let href = match mark {
                    // Straight to the first failure, not only to the build.
                    Some(m) => format!("{}#{}", build_href(col.id, number), anchor(&m.first)),
                    None => build_href(col.id, number),
                };
                let mut title = mark.map(Mark::title).unwrap_or_default();
                if changes > 1 {
                    let covered = format!("#{number} covered this change {}", others(changes - 1));
                    title = if title.is_empty() { covered } else { format!("{covered}; {title}") };
                }
                Cell { look, href: Some(href), title }
            }
            Verdict::Covered { number, others: n, .. } => Cell {
                look: if self.grid { COVERED_ACROSS } else { COVERED_DOWN },
                href: Some(build_href(col.id, number)),
                title: format!("covered by #{number}, {}", others(n)),
            },
            Verdict::Pending => Cell { look: PENDING, href: None, title: String::new() },
            Verdict::Ended(look) => Cell { look, href: None, title: String::new() },
            Verdict::Nothing => Cell { look: NOTHING, href: None, title: String::new() },
        }
    }
}

/// A change's row: a cell per column, from the requests made for it.
fn row(c: &cascade_store::records::ChangeRecord, columns: &[Column], cells: &Cells<'_>) -> Row {
    Row {
        change_id: c.changeid,
        revision: c.revision.clone().unwrap_or_default().chars().take(10).collect(),
        revlink: super::revlink(c),
        author: c.author.split(" <").next().unwrap_or(&c.author).to_string(),
        title: c.comments.lines().next().unwrap_or("").chars().take(100).collect(),
        cells: columns.iter().map(|col| cells.cell(c.changeid, col)).collect(),
    }
}

async fn page(m: Arc<Pages>, headers: HeaderMap, q: Option<String>, grid: bool) -> Result<Response, HttpError> {
    let asked = Filter::from_query(q.as_deref(), &m.catalog)?;
    let (filter, rows, pull) = scope(&m.catalog, &asked);
    let builders = super::builders(&m.catalog, &filter);
    let ids: Vec<i64> = builders.iter().map(|(_, id)| *id).collect();
    let mut query = ListQuery::default().order_by("changeid", true).limit(change_count(q.as_deref(), grid));
    let changes = match rows {
        Rows::Branches(git) if git.is_empty() => Vec::new(),
        Rows::Branches(git) => {
            for g in &git {
                query = query.eq("branch", g);
            }
            m.store.list_changes(&query).await?.items
        }
        Rows::Pulls => m.store.list_changes(&query.eq("category", "pull")).await?.items,
    };
    let change_ids: Vec<i64> = changes.iter().map(|c| c.changeid).collect();
    let cells = m.store.console_cells(&change_ids).await?;
    let latest = m.store.latest_builds(&ids, false).await?;
    let presence = super::Presence::load(&m.store).await?;
    let latest: HashMap<i64, &cascade_store::records::BuildRecord> = latest.iter().map(|b| (b.builderid, b)).collect();
    let columns: Vec<Column> =
        builders.iter().map(|(b, id)| column(b, *id, latest.get(id), presence.serves(b))).collect();
    let mut by_key: BTreeMap<(i64, i64), Vec<&ConsoleCell>> = BTreeMap::new();
    for c in &cells {
        by_key.entry((c.change_id, c.builder_id)).or_default().push(c);
    }
    let failing: Vec<i64> =
        cells.iter().filter(|c| c.build_complete && c.build_results == Some(2)).filter_map(|c| c.build_id).collect();
    let marks = super::diagnosis::marks(&m.store, &failing).await?;
    let mut build_ids: Vec<i64> = cells.iter().filter_map(|c| c.build_id).collect();
    build_ids.sort_unstable();
    build_ids.dedup();
    let covers = coverage(&m.store.blamelist_pairs(&build_ids).await?);
    let parts = Cells { by_key, covers, marks, grid };
    let rows: Vec<Row> = changes.iter().map(|c| row(c, &columns, &parts)).collect();
    let newest = changes.first().map(|c| c.when_timestamp);
    let pulls = m.store.recent_pull_requests(PULLS_LISTED).await?;
    let shown = if pull.is_some() { asked } else { filter };
    let chrome = Chrome::new(&m, &headers, if grid { "grid" } else { "console" }, shown).await;
    render(&headers, &ConsolePage { chrome, columns, rows, grid, pull, pulls }, newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(build: Option<(i64, Option<i64>, bool)>, complete: bool) -> ConsoleCell {
        ConsoleCell {
            change_id: 1,
            builder_id: 1,
            request_complete: complete,
            request_results: if complete { 6 } else { -1 },
            claimed: build.is_some(),
            build_id: build.map(|b| b.0),
            number: build.map(|b| b.0),
            build_results: build.and_then(|b| b.1),
            build_complete: build.is_some_and(|b| b.2),
        }
    }

    fn word(v: Verdict) -> &'static str {
        match v {
            Verdict::Own { look, .. } | Verdict::Ended(look) => look.word,
            Verdict::Covered { .. } => "covered",
            Verdict::Pending => "pending",
            Verdict::Nothing => "nothing",
        }
    }

    #[test]
    fn a_cell_shows_the_newest_build_or_the_wait() {
        let alone = HashMap::new();
        let pending = cell(None, false);
        assert_eq!(verdict(1, &[&pending], &alone), Verdict::Pending);
        let running = cell(Some((7, None, false)), false);
        assert_eq!(word(verdict(1, &[&pending, &running], &alone)), "running");
        let failed = cell(Some((3, Some(2), true)), true);
        let passed = cell(Some((9, Some(0), true)), true);
        assert_eq!(word(verdict(1, &[&failed, &passed], &alone)), "success", "the newest build wins");
        assert_eq!(word(verdict(1, &[&cell(None, true)], &alone)), "cancelled");
        assert_eq!(verdict(1, &[], &alone), Verdict::Nothing);
    }

    #[test]
    fn a_coalesced_build_speaks_only_for_its_newest_change() {
        // Build 3 (a failure) covered changes 1, 2 and 5.
        let covers = coverage(&[(3, 1), (3, 2), (3, 5)]);
        assert_eq!(covers[&3], Covers { newest: 5, changes: 3 });
        let failed = cell(Some((3, Some(2), true)), true);
        assert!(matches!(verdict(5, &[&failed], &covers), Verdict::Own { changes: 3, .. }));
        assert_eq!(verdict(2, &[&failed], &covers), Verdict::Covered { build_id: 3, number: 3, others: 2 });
        // A rerun of change 2 alone speaks for it; one still waiting shows as such.
        let rerun = cell(Some((8, Some(0), true)), true);
        assert_eq!(word(verdict(2, &[&failed, &rerun], &covers)), "success");
        assert_eq!(verdict(2, &[&failed, &cell(None, false)], &covers), Verdict::Pending);
        assert_eq!(others(1), "with 1 other change");
    }
}
