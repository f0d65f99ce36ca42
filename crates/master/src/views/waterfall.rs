//! `/waterfall`: builders as columns, time flowing down from the newest
//! moment on top, on a scale of fixed rows (a window of `hours`, cut in
//! [`ROWS`] rows); each build a box spanning the rows it ran, its steps
//! linked to their logs. Builds that ran at once on one builder (several
//! workers) sit side by side. Above, each builder's waiting requests and
//! whether a worker serves it; below, a link back in time.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use cascade_store::records::BuildRecord;

use super::{Chrome, Filter, Look, Pages, build_href, duration, look, render};
use crate::error::HttpError;

/// Rows of the time scale, whatever the window.
pub const ROWS: i64 = 120;
/// A time label every so many rows.
const LABEL_EVERY: i64 = 10;
/// The windows offered, in hours.
const WINDOWS: &[i64] = &[1, 2, 4, 8, 12, 24];
/// Builds read per page at most: about ten per builder of a CPython-sized
/// branch. A window that holds more (a page of 5,000 builds with their
/// steps was 2.2 MB and took 250–700 ms) is cut, and says a shorter one
/// shows them all.
const MAX_BUILDS: i64 = 1_500;
/// How long before the window a build still running into it may have begun.
const REACH: i64 = 2 * 86_400;

/// Where a build sits: rows `top..top + rows` (0 is the newest) in sub-column `lane`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub top: i64,
    pub rows: i64,
    pub lane: usize,
}

/// The rows a build running `[start, end)` covers in the window `[from, to)`
/// cut in rows of `slot` seconds, or none when it ran outside it.
pub fn rows_of(start: i64, end: i64, (from, to): (i64, i64), slot: i64) -> Option<(i64, i64)> {
    if start >= to || end.max(start + 1) <= from {
        return None;
    }
    let last = (to - from) / slot - 1;
    let top = ((to - end).max(0) / slot).min(last);
    let bottom = ((to - start.max(from) - 1) / slot).clamp(top, last);
    Some((top, bottom - top + 1))
}

/// Places one builder's builds (rows as [`rows_of`] gives them, any order)
/// in the fewest sub-columns in which none overlaps another; returns the
/// places in the given order and the number of sub-columns.
pub fn place(spans: &[(i64, i64)]) -> (Vec<Placed>, usize) {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| spans[i].0);
    // The first free row of each sub-column.
    let mut free: Vec<i64> = Vec::new();
    let mut out = vec![Placed { top: 0, rows: 0, lane: 0 }; spans.len()];
    for i in order {
        let (top, rows) = spans[i];
        let lane = free.iter().position(|&f| f <= top).unwrap_or(free.len());
        if lane == free.len() {
            free.push(0);
        }
        free[lane] = top + rows;
        out[i] = Placed { top, rows, lane };
    }
    let lanes = free.len().max(1);
    (out, lanes)
}

pub struct StepBox {
    pub name: String,
    pub look: Look,
    pub href: Option<String>,
}

pub struct BuildBox {
    pub number: i64,
    pub href: String,
    pub look: Look,
    pub title: String,
    /// "3 changes", when the build covered more than one.
    pub covered: String,
    pub steps: Vec<StepBox>,
}

/// One table cell of a sub-column: a build, or the gap until the next one.
pub struct Td {
    pub rows: i64,
    pub build: Option<BuildBox>,
}

/// A row of the table: its time label (every [`LABEL_EVERY`] rows) and the
/// cells that begin on it, left to right.
pub struct Row {
    pub label: Option<String>,
    pub cells: Vec<Td>,
}

pub struct Head {
    pub id: i64,
    pub name: String,
    pub lanes: usize,
    pub online: bool,
    pub pending: i64,
}

#[derive(Template)]
#[template(path = "waterfall.html")]
pub struct WaterfallPage {
    pub chrome: Chrome,
    pub heads: Vec<Head>,
    pub rows: Vec<Row>,
    pub label_rows: i64,
    pub window: String,
    pub hours: i64,
    pub windows: Vec<(i64, String)>,
    pub older: String,
    pub newer: Option<String>,
    /// The builds shown were cut at [`MAX_BUILDS`].
    pub cut: bool,
    /// An empty window: when the newest build of these builders started,
    /// and the window that shows it.
    pub last_seen: Option<(String, String)>,
}

/// `hours` and `before` from the query: the window's length (one of
/// [`WINDOWS`]) and the moment at its top (default: now).
fn window_of(q: Option<&str>, now: i64) -> Result<(i64, i64), HttpError> {
    let pairs = super::query_pairs(q);
    let (mut hours, mut before) = (4, now);
    for (k, v) in pairs {
        match k.as_str() {
            "hours" => {
                hours = v
                    .parse()
                    .ok()
                    .filter(|h| WINDOWS.contains(h))
                    .ok_or_else(|| HttpError::bad_request(format!("hours: one of {WINDOWS:?}")))?;
            }
            "before" => {
                before = v
                    .parse::<i64>()
                    .ok()
                    .filter(|t| (0..=now + 86_400).contains(t))
                    .ok_or_else(|| HttpError::bad_request("before: a Unix time, in seconds, not in the future"))?;
            }
            _ => {}
        }
    }
    Ok((hours, before))
}

/// The box of a build, with its steps linked to their first logs.
fn build_box(
    b: &BuildRecord,
    steps: Vec<(cascade_store::StepRecord, Option<String>)>,
    changes: usize,
    now: i64,
) -> BuildBox {
    let href = build_href(b.builderid, b.number);
    let look = look(b.results, b.complete);
    let steps = steps
        .into_iter()
        .map(|(s, slug)| StepBox {
            look: super::look(s.results, s.complete),
            href: slug.map(|slug| format!("{href}/steps/{}/logs/{slug}", s.number)),
            name: s.name,
        })
        .collect();
    let took = duration(b.complete_at.unwrap_or(now) - b.started_at);
    BuildBox {
        number: b.number,
        title: format!(
            "#{} {}: started {}, {took}; {}",
            b.number,
            look.word,
            super::when(b.started_at),
            b.state_string
        ),
        covered: if changes > 1 { format!("{changes} changes") } else { String::new() },
        href,
        look,
        steps,
    }
}

/// The table's rows from each column's builds and places.
fn table(columns: Vec<Vec<(Placed, BuildBox)>>, lanes: &[usize], to: i64, slot: i64) -> Vec<Row> {
    let mut rows: Vec<Row> = (0..ROWS)
        .map(|r| Row {
            label: (r % LABEL_EVERY == 0).then(|| label(to - r * slot, r == 0 || (to - r * slot) % 86_400 == 0)),
            cells: Vec::new(),
        })
        .collect();
    for (column, &n) in columns.into_iter().zip(lanes) {
        let mut by_lane: Vec<Vec<(Placed, BuildBox)>> = (0..n).map(|_| Vec::new()).collect();
        for (p, b) in column {
            by_lane[p.lane].push((p, b));
        }
        for mut lane in by_lane {
            lane.sort_by_key(|(p, _)| p.top);
            let mut next = 0;
            for (p, b) in lane {
                if p.top > next {
                    rows[idx(next)].cells.push(Td { rows: p.top - next, build: None });
                }
                rows[idx(p.top)].cells.push(Td { rows: p.rows, build: Some(b) });
                next = p.top + p.rows;
            }
            if next < ROWS {
                rows[idx(next)].cells.push(Td { rows: ROWS - next, build: None });
            }
        }
    }
    rows
}

fn idx(row: i64) -> usize {
    usize::try_from(row).unwrap_or(0)
}

/// `14:20`, with the date on the top row and at midnight.
fn label(t: i64, dated: bool) -> String {
    let full = super::when(t);
    if dated { full.get(..16).unwrap_or(&full).to_string() } else { full.get(11..16).unwrap_or(&full).to_string() }
}

/// `GET /waterfall`.
pub async fn page(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let filter = Filter::from_query(q.as_deref(), &m.catalog)?.or_first_branch(&m.catalog);
    let now = m.clock.now();
    let (hours, before) = window_of(q.as_deref(), now)?;
    let slot = hours * 3600 / ROWS;
    // The top is the label after `before`, so labels fall on round times.
    let step = slot * LABEL_EVERY;
    let to = (before.div_euclid(step) + 1) * step;
    let from = to - hours * 3600;
    let builders = super::builders(&m.catalog, &filter);
    let ids: Vec<i64> = builders.iter().map(|(_, id)| *id).collect();
    let builds = m.store.builds_between(&ids, (from, to), REACH, MAX_BUILDS).await?;
    let cut = builds.len() as i64 >= MAX_BUILDS;
    let build_ids: Vec<i64> = builds.iter().map(|b| b.buildid).collect();
    let steps_and_logs = async {
        let steps = m.store.steps_of(&build_ids).await?;
        let step_ids: Vec<i64> = steps.iter().map(|s| s.stepid).collect();
        Ok((steps, m.store.first_logs(&step_ids).await?))
    };
    // Independent reads, each on its own connection: the page waits for the slowest, not their sum.
    let ((steps, slugs), pairs, pending, presence) = tokio::try_join!(
        steps_and_logs,
        m.store.blamelist_pairs(&build_ids),
        m.store.pending_counts(&ids),
        super::Presence::load(&m.store),
    )?;
    let slugs: HashMap<i64, String> = slugs.into_iter().collect();
    let covers = super::console::coverage(&pairs);
    let pending: HashMap<i64, i64> = pending.into_iter().collect();

    let mut steps_by_build: HashMap<i64, Vec<_>> = HashMap::new();
    for s in steps {
        let slug = slugs.get(&s.stepid).cloned();
        steps_by_build.entry(s.buildid).or_default().push((s, slug));
    }
    let mut by_builder: HashMap<i64, Vec<&BuildRecord>> = HashMap::new();
    for b in &builds {
        by_builder.entry(b.builderid).or_default().push(b);
    }
    let newest = builds.iter().map(|b| b.complete_at.unwrap_or(b.started_at)).max();
    let (mut columns, mut heads, mut lanes) = (Vec::new(), Vec::new(), Vec::new());
    for (b, id) in &builders {
        let mine = by_builder.remove(id).unwrap_or_default();
        let spans: Vec<(&BuildRecord, (i64, i64))> = mine
            .into_iter()
            .filter_map(|b| Some((b, rows_of(b.started_at, b.complete_at.unwrap_or(now), (from, to), slot)?)))
            .collect();
        let (places, n) = place(&spans.iter().map(|(_, s)| *s).collect::<Vec<_>>());
        let column = spans
            .iter()
            .zip(places)
            .map(|((build, _), p)| {
                let steps = steps_by_build.remove(&build.buildid).unwrap_or_default();
                let changes = covers.get(&build.buildid).map_or(0, |c| c.changes);
                (p, build_box(build, steps, changes, now))
            })
            .collect();
        columns.push(column);
        lanes.push(n);
        let online = presence.serves(b);
        heads.push(Head {
            id: *id,
            name: b.name.clone(),
            lanes: n,
            online,
            pending: pending.get(id).copied().unwrap_or(0),
        });
    }
    let link = |hours: i64, before: Option<i64>| {
        let filter = filter.query();
        let before = before.map(|t| format!("&before={t}")).unwrap_or_default();
        format!("/waterfall?{filter}{}hours={hours}{before}", if filter.is_empty() { "" } else { "&" })
    };
    let asked_before = (before != now).then_some(to - 1);
    let windows = WINDOWS.iter().map(|&h| (h, link(h, asked_before))).collect();
    let older = link(hours, Some(from - 1));
    let newer = (to <= now).then(|| link(hours, Some(to + hours * 3600 - 1)));
    let window = format!("{} to {} UTC", label(from, true), label(to, true));
    let last_seen = match builds.is_empty() {
        true => m.store.latest_builds(&ids, false).await?.iter().map(|b| b.started_at).max().map(|t| {
            // The window whose top is just after that build began.
            (label(t, true), link(hours, Some(t + slot * LABEL_EVERY)))
        }),
        false => None,
    };
    let rows = table(columns, &lanes, to, slot);
    let chrome = Chrome::new(&m, &headers, "waterfall", filter.clone()).await;
    let page = WaterfallPage {
        chrome,
        heads,
        rows,
        label_rows: LABEL_EVERY,
        window,
        hours,
        windows,
        older,
        newer,
        cut,
        last_seen,
    };
    render(&headers, &page, newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_spans_the_rows_it_ran() {
        // A window of 1,200 s in rows of 10 s: row 0 is [1190, 1200).
        let w = (0, 1200);
        assert_eq!(rows_of(1150, 1200, w, 10), Some((0, 5)));
        assert_eq!(rows_of(1195, 1196, w, 10), Some((0, 1)), "a short build still shows");
        assert_eq!(rows_of(-500, 15, w, 10), Some((118, 2)), "cut at the window's bottom");
        assert_eq!(rows_of(1100, 5000, w, 10), Some((0, 10)), "still running past the top");
        assert_eq!(rows_of(1200, 1300, w, 10), None, "after the window");
        assert_eq!(rows_of(-100, -1, w, 10), None, "before it");
    }

    #[test]
    fn builds_at_once_sit_side_by_side_and_others_share_a_column() {
        let (places, lanes) = place(&[(0, 5), (2, 4), (6, 2), (5, 1)]);
        assert_eq!(lanes, 2);
        assert_eq!(places.iter().map(|p| p.lane).collect::<Vec<_>>(), [0, 1, 0, 0]);
        assert_eq!(place(&[]).1, 1, "an idle builder keeps its column");
    }

    #[test]
    fn cells_fill_every_row_of_every_column() {
        let bx = |n| BuildBox {
            number: n,
            href: String::new(),
            look: super::super::PENDING,
            title: String::new(),
            covered: String::new(),
            steps: Vec::new(),
        };
        let p = |top, rows, lane| Placed { top, rows, lane };
        let columns = vec![vec![(p(0, 5, 0), bx(2)), (p(3, 10, 1), bx(1))], vec![]];
        let rows = table(columns, &[2, 1], 1200, 10);
        // Each of the three sub-columns' cells add up to every row.
        let spans: i64 = rows.iter().flat_map(|r| &r.cells).map(|c| c.rows).sum();
        assert_eq!(spans, 3 * ROWS);
        assert_eq!(rows[0].cells.len(), 3, "the first build, the gap above the second, the idle column");
        assert!(rows[3].cells[0].build.as_ref().is_some_and(|b| b.number == 1));
        assert_eq!(rows[0].label.as_deref(), Some("1970-01-01 00:20"));
        assert_eq!(rows[10].label.as_deref(), Some("00:18"));
    }
}
