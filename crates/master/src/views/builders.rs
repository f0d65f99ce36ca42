//! `/builders` (each builder's current state), `/builders/{id}` (its builds,
//! newest first, paged by number; its queue; a force form) and `/pending`
//! (the queue, with how long each request has waited).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use cascade_store::ListQuery;

use super::{Chrome, Filter, Look, NOTHING, Pages, ago, build_href, duration, look, not_found, render};
use crate::error::HttpError;

pub struct BuilderRow {
    pub id: i64,
    pub name: String,
    pub branch: String,
    pub tags: Vec<String>,
    pub look: Look,
    pub href: Option<String>,
    pub workers: Vec<(String, bool)>,
}

#[derive(Template)]
#[template(path = "builders.html")]
pub struct BuildersPage {
    pub chrome: Chrome,
    pub rows: Vec<BuilderRow>,
    /// The filter box's text (`q=`), as typed.
    pub search: String,
    /// How many builders the branch and tag filter admits before the box narrows them.
    pub of: usize,
}

/// The longest filter text read (longer text is cut, not refused).
const SEARCH_MAX: usize = 200;

/// The words of the filter box, lowercased.
pub fn search_words(text: &str) -> Vec<String> {
    text.chars().take(SEARCH_MAX).collect::<String>().split_whitespace().map(str::to_lowercase).collect()
}

/// Whether a builder matches every word: each is part of its name, its
/// branch or one of its workers' names, or the start of one of its tags
/// (`stable` is not `unstable`; `tier` is any tier).
pub fn matches(b: &cascade_config::BuilderConfig, words: &[String]) -> bool {
    words.iter().all(|w| {
        let has = |s: &str| s.to_lowercase().contains(w.as_str());
        has(&b.name)
            || b.tags.iter().any(|t| t.to_lowercase().starts_with(w.as_str()))
            || b.branch.as_deref().is_some_and(has)
            || b.workers.iter().any(|x| has(x))
    })
}

/// `q=` from a query string.
fn search_of(q: Option<&str>) -> String {
    super::query_value(q, "q").map(|v| v.chars().take(SEARCH_MAX).collect()).unwrap_or_default()
}

/// `GET /builders`.
pub async fn list(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let filter = Filter::from_query(q.as_deref(), &m.catalog)?;
    let search = search_of(q.as_deref());
    let words = search_words(&search);
    let mut builders = super::builders(&m.catalog, &filter);
    let of = builders.len();
    builders.retain(|(b, _)| matches(b, &words));
    let ids: Vec<i64> = builders.iter().map(|(_, id)| *id).collect();
    let (latest, presence) = super::standing(&m.store, &ids, false).await?;
    let rows = builders
        .iter()
        .map(|(b, id)| {
            let build = latest.get(id);
            BuilderRow {
                id: *id,
                name: b.name.clone(),
                branch: b.branch.clone().unwrap_or_default(),
                tags: b.tags.clone(),
                look: build.map(|b| look(b.results, b.complete)).unwrap_or(NOTHING),
                href: build.map(|bb| build_href(*id, bb.number)),
                workers: b.workers.iter().map(|w| (w.clone(), presence.online(w))).collect(),
            }
        })
        .collect();
    let chrome = Chrome::new(&m, &headers, "builders", filter).await;
    render(&headers, &BuildersPage { chrome, rows, search, of }, None)
}

pub struct BuildLine {
    pub number: i64,
    pub href: String,
    pub look: Look,
    pub started: String,
    pub took: String,
    pub state: String,
    pub worker: String,
}

#[derive(Template)]
#[template(path = "builder.html")]
pub struct BuilderPage {
    pub chrome: Chrome,
    pub id: i64,
    pub name: String,
    pub description: String,
    pub branch: String,
    pub tags: Vec<String>,
    pub workers: Vec<(String, bool)>,
    pub builds: Vec<BuildLine>,
    pub older: Option<String>,
    pub pending: i64,
    /// Force schedulers that can build this builder.
    pub forces: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
pub struct Paging {
    before: Option<i64>,
}

/// Builds per page of a builder.
const PAGE: i64 = 50;

/// `GET /builders/{id}`.
pub async fn one(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Query(p): Query<Paging>,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let id = raw.parse::<i64>().map_err(|_| not_found("builder"))?;
    let b = m.catalog.builder(id).ok_or_else(|| not_found("builder"))?;
    let builds = m.store.builder_builds_page(id, p.before, PAGE).await?;
    let waiting = ListQuery::default().eq("builderid", id).eq("complete", "false").eq("claimed", "false").limit(0);
    let pending = m.store.list_buildrequests(&waiting).await?.total;
    let names = m.store.worker_names().await?;
    let presence = super::Presence::load(&m.store).await?;
    let now = m.clock.now();
    let older = (builds.len() as i64 == PAGE).then(|| builds.last().map(|l| format!("?before={}", l.number))).flatten();
    let newest = builds.first().map(|b| b.complete_at.unwrap_or(b.started_at));
    let lines = builds
        .into_iter()
        .map(|bb| BuildLine {
            number: bb.number,
            href: build_href(id, bb.number),
            look: look(bb.results, bb.complete),
            started: super::when(bb.started_at),
            took: duration(bb.complete_at.unwrap_or(now) - bb.started_at),
            state: bb.state_string,
            worker: bb.workerid.and_then(|w| names.get(&w).map(std::string::ToString::to_string)).unwrap_or_default(),
        })
        .collect();
    let forces = m
        .catalog
        .force_schedulers()
        .filter(|s| m.catalog.forceable(s).any(|f| f.name == b.name))
        .map(|s| s.name.clone())
        .collect();
    let page = BuilderPage {
        chrome: Chrome::plain(&m, &headers, "builders").await.told(crate::notice::Said::of_query(q.as_deref())),
        id,
        name: b.name.clone(),
        description: b.description.clone().unwrap_or_default(),
        branch: b.branch.clone().unwrap_or_default(),
        tags: b.tags.clone(),
        workers: b.workers.iter().map(|w| (w.clone(), presence.online(w))).collect(),
        builds: lines,
        older,
        pending,
        forces,
    };
    render(&headers, &page, newest)
}

pub struct PendingLine {
    pub id: i64,
    pub builder_id: i64,
    pub builder: String,
    pub waited: String,
    pub submitted: String,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "pending.html")]
pub struct PendingPage {
    pub chrome: Chrome,
    pub lines: Vec<PendingLine>,
    pub total: i64,
}

/// `GET /pending`.
pub async fn pending(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let filter = Filter::from_query(q.as_deref(), &m.catalog)?;
    let query =
        ListQuery::default().eq("complete", "false").eq("claimed", "false").order_by("submitted_at", false).limit(500);
    let page = m.store.list_buildrequests(&query).await?;
    let now = m.clock.now();
    let lines = page
        .items
        .into_iter()
        .filter(|r| m.catalog.builder(r.builderid).is_some_and(|b| filter.admits(b)))
        .map(|r| PendingLine {
            id: r.buildrequestid,
            builder_id: r.builderid,
            builder: m.catalog.builder(r.builderid).map(|b| b.name.clone()).unwrap_or_default(),
            waited: ago(now, r.submitted_at),
            submitted: super::when(r.submitted_at),
            reason: String::new(),
        })
        .collect::<Vec<_>>();
    let chrome = Chrome::new(&m, &headers, "pending", filter).await.told(crate::notice::Said::of_query(q.as_deref()));
    let total = lines.len() as i64;
    render(&headers, &PendingPage { chrome, lines, total }, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_config::BuilderConfig;

    fn builder(name: &str, tags: &[&str], workers: &[&str]) -> BuilderConfig {
        BuilderConfig {
            name: name.into(),
            definition: name.into(),
            branch: Some("3.x".into()),
            workers: workers.iter().map(|w| (*w).to_string()).collect(),
            factory: "f".into(),
            tags: tags.iter().map(|t| (*t).to_string()).collect(),
            description: None,
        }
    }

    #[test]
    fn the_filter_box_matches_names_tags_and_workers_by_every_word() {
        let fedora = builder("AMD64 Fedora Stable 3.x", &["stable", "tier-1"], &["cstratak-fedora"]);
        let windows = builder("AMD64 Windows11 Refleaks 3.x", &["unstable"], &["ware-win11"]);
        let find = |text: &str| [&fedora, &windows].into_iter().filter(|b| matches(b, &search_words(text))).count();
        assert_eq!(find(""), 2, "no words: everything");
        assert_eq!(find("fedora"), 1, "by name, any case");
        assert_eq!(find("  Stable   "), 1, "a tag from its start: 'unstable' is not 'stable'");
        assert_eq!(find("tier"), 1);
        assert_eq!(find("tier-1"), 1, "by tag");
        assert_eq!(find("ware-win"), 1, "by worker");
        assert_eq!(find("amd64 win11"), 1, "every word must match");
        assert_eq!(find("3.x"), 2, "by branch");
        assert_eq!(find("freebsd"), 0);
        assert_eq!(search_words(&"x ".repeat(500)).len(), SEARCH_MAX / 2, "long text is cut");
    }
}
