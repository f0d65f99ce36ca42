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
    /// The builder's id; 0 for a collapsed group's column.
    pub id: i64,
    /// A collapsed group's builders (space-separated ids), for live updates.
    pub members: String,
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

/// A run of builders of one tier, shown under one heading; collapsed, it is
/// one column (or on the grid one row) with the worst of its builders' cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `tier-1`, …, or `untiered`.
    pub label: String,
    /// How many builders it holds.
    pub builders: usize,
    /// How many columns it takes on the page: 1 when collapsed.
    pub span: usize,
    pub collapsed: bool,
    /// The same page with this group collapsed or expanded.
    pub toggle: String,
}

/// How a page is laid out (`compact=1`, `collapse=tier-3`, repeatable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub compact: bool,
    pub collapsed: Vec<String>,
}

impl Layout {
    pub fn parse(q: Option<&str>) -> Layout {
        let pairs = super::query_pairs(q);
        let mut layout = Layout::default();
        for (k, v) in pairs {
            match k.as_str() {
                "compact" => layout.compact = v == "1",
                // Group labels are short; a longer value names none.
                "collapse" if v.len() <= 40 && !layout.collapsed.contains(&v) => layout.collapsed.push(v),
                _ => {}
            }
        }
        layout
    }
}

/// A group's label: its builders' tier.
fn group_label(tier: u8) -> String {
    if tier == 9 { "untiered".into() } else { format!("tier-{tier}") }
}

/// How bad a cell's look is: a collapsed group shows its worst.
fn badness(look: &Look) -> u8 {
    match look.class {
        "exception" => 9,
        "failure" => 8,
        "warnings" => 7,
        "running" => 6,
        "pending" => 5,
        "retry" => 4,
        "cancelled" => 3,
        "success" => 2,
        "skipped" | "covered" => 1,
        _ => 0,
    }
}

/// Folds each collapsed group's columns into one: its worst bubble
/// (offline only when all are), and in every row its worst cell, titled
/// with how many of its builders fail. `groups` are (label, columns,
/// collapsed), in the columns' order.
pub fn fold(columns: Vec<Column>, rows: &mut [Row], groups: &[(String, usize, bool)]) -> Vec<Column> {
    let mut columns = columns.into_iter();
    let mut left: Vec<std::vec::IntoIter<Cell>> =
        rows.iter_mut().map(|r| std::mem::take(&mut r.cells).into_iter()).collect();
    let mut kept: Vec<Vec<Cell>> = rows.iter().map(|_| Vec::new()).collect();
    let mut out = Vec::new();
    for (label, len, collapsed) in groups {
        let members: Vec<Column> = columns.by_ref().take(*len).collect();
        for (keep, cells) in kept.iter_mut().zip(&mut left) {
            let mine: Vec<Cell> = cells.by_ref().take(*len).collect();
            if *collapsed {
                keep.push(worst_cell(label, &mine));
            } else {
                keep.extend(mine);
            }
        }
        if *collapsed {
            out.push(group_column(label, &members));
        } else {
            out.extend(members);
        }
    }
    for (row, cells) in rows.iter_mut().zip(kept) {
        row.cells = cells;
    }
    out
}

fn worst_cell(label: &str, cells: &[Cell]) -> Cell {
    let failing = cells.iter().filter(|c| matches!(c.look.class, "failure" | "exception")).count();
    let worst = cells.iter().max_by_key(|c| badness(&c.look));
    Cell {
        look: worst.map_or(NOTHING, |c| c.look),
        href: worst.filter(|c| badness(&c.look) >= 8).and_then(|c| c.href.clone()),
        title: format!("{label}: {failing} of {} builders failing", cells.len()),
    }
}

fn group_column(label: &str, members: &[Column]) -> Column {
    let worst = members.iter().max_by_key(|c| badness(&c.bubble));
    Column {
        id: 0,
        members: members.iter().map(|c| c.id.to_string()).collect::<Vec<_>>().join(" "),
        name: format!("{label} ({} builders)", members.len()),
        tier: members.first().map_or(9, |c| c.tier),
        bubble: worst.map_or(NOTHING, |c| c.bubble),
        bubble_href: None,
        online: members.iter().any(|c| c.online),
    }
}

/// The groups of a page's columns (they come sorted by tier), each with the
/// link that toggles it.
fn groups(columns: &[Column], layout: &Layout, query: Option<&str>) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for c in columns {
        let label = group_label(c.tier);
        match out.last_mut() {
            Some(g) if g.label == label => g.builders += 1,
            _ => out.push(Group { label, builders: 1, span: 0, collapsed: false, toggle: String::new() }),
        }
    }
    for g in &mut out {
        g.collapsed = layout.collapsed.contains(&g.label);
        g.span = if g.collapsed { 1 } else { g.builders };
        g.toggle = toggled(query, "collapse", &g.label);
    }
    out
}

/// The page's query with `key=value` removed if it is there, added if not.
pub fn toggled(query: Option<&str>, key: &str, value: &str) -> String {
    let mut pairs = super::query_pairs(query);
    let before = pairs.len();
    pairs.retain(|(k, v)| !(k == key && v == value));
    if pairs.len() == before {
        pairs.push((key.to_string(), value.to_string()));
    }
    format!("?{}", serde_urlencoded::to_string(pairs).unwrap_or_default())
}

#[derive(Template)]
#[template(path = "console.html")]
pub struct ConsolePage {
    pub chrome: Chrome,
    pub columns: Vec<Column>,
    pub groups: Vec<Group>,
    /// One narrow cell per builder, names on hover: 162 builders fit 1,920 px.
    pub compact: bool,
    /// The same page, compact or not.
    pub compact_toggle: String,
    /// Older changes (keyset: `before=` the last one shown), and back to the newest.
    pub older: Option<String>,
    pub newer: Option<String>,
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
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let n: u64 = n
        .parse()
        .ok()
        .filter(|n| (1..=pull::NUMBER_MAX).contains(n))
        .ok_or_else(|| HttpError::not_found("no such pull request"))?;
    // The layout and paging of the asked query stay; the branch is the PR's.
    let mut pairs = super::query_pairs(q.as_deref());
    pairs.retain(|(k, _)| k != "branch");
    pairs.push(("branch".into(), pull::merge_ref(n)));
    page(m, headers, Some(serde_urlencoded::to_string(pairs).unwrap_or_default()), true).await
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
    super::query_value(q, "changes").and_then(|v| v.parse().ok()).unwrap_or(if grid { 15 } else { 20 }).clamp(1, 100)
}

/// `before=ID` from the query: rows are the changes older than that one
/// (keyset paging: no count, no offset, one index range however deep).
fn before_of(q: Option<&str>) -> Result<Option<i64>, HttpError> {
    match super::query_value(q, "before") {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| HttpError::bad_request("before: a change id")),
    }
}

/// The page's query with `before` set to `id` (or removed: the newest changes).
fn paged(query: Option<&str>, before: Option<i64>) -> String {
    let mut pairs = super::query_pairs(query);
    pairs.retain(|(k, _)| k != "before");
    if let Some(id) = before {
        pairs.push(("before".into(), id.to_string()));
    }
    format!("?{}", serde_urlencoded::to_string(pairs).unwrap_or_default())
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
    Column { id, members: String::new(), name: b.name.clone(), tier: super::tier(b), bubble, bubble_href, online }
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
    let count = change_count(q.as_deref(), grid);
    let before = before_of(q.as_deref())?;
    let mut query = ListQuery::default().order_by("changeid", true).limit(count);
    // A page never counts the branch's changes (that grows with history).
    query.skip_count = true;
    if let Some(id) = before {
        query.filters.push(cascade_store::Filter {
            field: "changeid".into(),
            op: cascade_store::Op::Lt,
            values: vec![id.to_string()],
        });
    }
    let changes = match rows {
        Rows::Branches(git) if git.is_empty() => Vec::new(),
        Rows::Branches(git) => {
            // One filter: the rows are those of any of the branches shown.
            query.filters.push(cascade_store::Filter {
                field: "branch".into(),
                op: cascade_store::Op::In,
                values: git,
            });
            m.store.list_changes(&query).await?.items
        }
        Rows::Pulls => m.store.list_changes(&query.eq("category", "pull")).await?.items,
    };
    let change_ids: Vec<i64> = changes.iter().map(|c| c.changeid).collect();
    // Independent reads, each on its own connection: the page waits for the slowest, not their sum.
    let (cells, latest, presence, pulls) = tokio::try_join!(
        m.store.console_cells(&change_ids),
        m.store.latest_builds(&ids, false),
        super::Presence::load(&m.store),
        m.store.recent_pull_requests(PULLS_LISTED),
    )?;
    let latest: HashMap<i64, &cascade_store::records::BuildRecord> = latest.iter().map(|b| (b.builderid, b)).collect();
    let columns: Vec<Column> =
        builders.iter().map(|(b, id)| column(b, *id, latest.get(id), presence.serves(b))).collect();
    let mut by_key: BTreeMap<(i64, i64), Vec<&ConsoleCell>> = BTreeMap::new();
    for c in &cells {
        by_key.entry((c.change_id, c.builder_id)).or_default().push(c);
    }
    let failing: Vec<i64> =
        cells.iter().filter(|c| c.build_complete && c.build_results == Some(2)).filter_map(|c| c.build_id).collect();
    let mut build_ids: Vec<i64> = cells.iter().filter_map(|c| c.build_id).collect();
    build_ids.sort_unstable();
    build_ids.dedup();
    let (marks, pairs) =
        tokio::try_join!(super::diagnosis::marks(&m.store, &failing), m.store.blamelist_pairs(&build_ids))?;
    let covers = coverage(&pairs);
    let parts = Cells { by_key, covers, marks, grid };
    let mut rows: Vec<Row> = changes.iter().map(|c| row(c, &columns, &parts)).collect();
    let layout = Layout::parse(q.as_deref());
    let groups = groups(&columns, &layout, q.as_deref());
    let spans: Vec<(String, usize, bool)> = groups.iter().map(|g| (g.label.clone(), g.builders, g.collapsed)).collect();
    let columns = fold(columns, &mut rows, &spans);
    let compact_toggle = toggled(q.as_deref(), "compact", "1");
    let older = (changes.len() as i64 == count).then(|| changes.last().map(|c| paged(q.as_deref(), Some(c.changeid))));
    let (older, newer) = (older.flatten(), before.map(|_| paged(q.as_deref(), None)));
    let newest = changes.first().map(|c| c.when_timestamp);
    let shown = if pull.is_some() { asked } else { filter };
    let chrome = Chrome::new(&m, &headers, if grid { "grid" } else { "console" }, shown).await;
    let page = ConsolePage {
        chrome,
        columns,
        groups,
        compact: layout.compact,
        compact_toggle,
        older,
        newer,
        rows,
        grid,
        pull,
        pulls,
    };
    render(&headers, &page, newest)
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

    fn col(id: i64, tier: u8, bubble: Look, online: bool) -> Column {
        Column { id, members: String::new(), name: format!("b{id}"), tier, bubble, bubble_href: None, online }
    }

    fn at(look: Look, href: &str) -> Cell {
        Cell { look, href: Some(href.into()), title: String::new() }
    }

    #[test]
    fn a_collapsed_group_is_one_column_with_the_worst_of_its_cells() {
        let failure = look(Some(2), true);
        let success = look(Some(0), true);
        let columns = vec![
            col(1, 1, success, true),
            col(2, 3, success, false),
            col(3, 3, failure, true),
            col(4, 9, NOTHING, true),
        ];
        let layout = Layout::parse(Some("collapse=tier-3&compact=1&collapse=tier-3"));
        assert_eq!(layout, Layout { compact: true, collapsed: vec!["tier-3".into()] });
        let gs = groups(&columns, &layout, Some("branch=3.x&collapse=tier-3"));
        let summary: Vec<(&str, usize, usize, bool)> =
            gs.iter().map(|g| (g.label.as_str(), g.builders, g.span, g.collapsed)).collect();
        assert_eq!(summary, [("tier-1", 1, 1, false), ("tier-3", 2, 1, true), ("untiered", 1, 1, false)]);
        assert_eq!(gs[1].toggle, "?branch=3.x", "a collapsed group's link expands it");
        assert_eq!(gs[0].toggle, "?branch=3.x&collapse=tier-3&collapse=tier-1");
        let mut rows = vec![Row {
            change_id: 9,
            revision: "abc".into(),
            revlink: None,
            author: "a".into(),
            title: "t".into(),
            cells: vec![at(success, "/1"), at(success, "/2"), at(failure, "/3"), at(PENDING, "/4")],
        }];
        let spans: Vec<(String, usize, bool)> = gs.iter().map(|g| (g.label.clone(), g.builders, g.collapsed)).collect();
        let folded = fold(columns, &mut rows, &spans);
        let ids: Vec<i64> = folded.iter().map(|c| c.id).collect();
        assert_eq!(ids, [1, 0, 4]);
        assert_eq!((folded[1].members.as_str(), folded[1].bubble.class, folded[1].online), ("2 3", "failure", true));
        let cells: Vec<&str> = rows[0].cells.iter().map(|c| c.look.class).collect();
        assert_eq!(cells, ["success", "failure", "pending"]);
        assert_eq!(rows[0].cells[1].href.as_deref(), Some("/3"), "the worst cell leads to the failure");
        assert_eq!(rows[0].cells[1].title, "tier-3: 1 of 2 builders failing");
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
