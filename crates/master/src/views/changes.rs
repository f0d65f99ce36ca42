//! `/changes` (newest first, paged by id, filtered by branch, or only what
//! the poller found: `?source=poller`) and
//! `/changes/{id}` (the change and every build that covered it).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use cascade_store::ListQuery;

use super::{Chrome, Filter, Look, PENDING, Pages, build_href, look, not_found, render};
use crate::error::HttpError;

pub struct ChangeLine {
    pub id: i64,
    pub revision: String,
    pub revlink: Option<String>,
    pub branch: String,
    pub author: String,
    pub when: String,
    pub title: String,
    /// No delivery brought it: the poller found it.
    pub polled: bool,
}

#[derive(Template)]
#[template(path = "changes.html")]
pub struct ChangesPage {
    pub chrome: Chrome,
    pub changes: Vec<ChangeLine>,
    pub older: Option<String>,
    /// Only the changes the poller found.
    pub polled_only: bool,
}

#[derive(Debug, serde::Deserialize)]
pub struct Paging {
    before: Option<i64>,
    source: Option<String>,
}

fn line(c: &cascade_store::records::ChangeRecord) -> ChangeLine {
    ChangeLine {
        id: c.changeid,
        revision: c.revision.clone().unwrap_or_default().chars().take(12).collect(),
        revlink: super::revlink(c),
        branch: c.branch.clone().unwrap_or_default(),
        author: c.author.clone(),
        when: super::when(c.when_timestamp),
        title: c.comments.lines().next().unwrap_or("").to_string(),
        polled: c
            .properties
            .get(cascade_store::SOURCE_PROPERTY)
            .is_some_and(|(v, _)| v == cascade_store::POLLER_SOURCE),
    }
}

/// `GET /changes`.
pub async fn list(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    Query(p): Query<Paging>,
) -> Result<Response, HttpError> {
    let filter = Filter::from_query(q.as_deref(), &m.catalog)?;
    let mut query = ListQuery::default().order_by("changeid", true).limit(50);
    query.skip_count = true;
    for b in m.catalog.config.branches.iter().filter(|b| filter.branches.contains(&b.name)) {
        query = query.eq("branch", &b.git);
    }
    if let Some(before) = p.before {
        query.filters.push(cascade_store::Filter {
            field: "changeid".into(),
            op: cascade_store::Op::Lt,
            values: vec![before.to_string()],
        });
    }
    let polled_only = p.source.as_deref() == Some(cascade_store::POLLER_SOURCE);
    let items = if polled_only {
        m.store.polled_changes(p.before, 50).await?
    } else {
        m.store.list_changes(&query).await?.items
    };
    let changes: Vec<ChangeLine> = items.iter().map(line).collect();
    let also = if polled_only { "&source=poller" } else { "" };
    let older = (changes.len() == 50)
        .then(|| changes.last().map(|c| format!("?{}{also}&before={}", filter.query(), c.id)))
        .flatten();
    let newest = items.first().map(|c| c.when_timestamp);
    let chrome = Chrome::new(&m, &headers, "changes", filter).await;
    render(&headers, &ChangesPage { chrome, changes, older, polled_only }, newest)
}

#[derive(Template)]
#[template(path = "change.html")]
pub struct ChangePage {
    pub chrome: Chrome,
    pub change: ChangeLine,
    pub comments: String,
    pub files: Vec<String>,
    pub builds: Vec<(String, Look, Option<String>)>,
}

/// `GET /changes/{id}`.
pub async fn one(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, HttpError> {
    let id = raw.parse::<i64>().map_err(|_| not_found("change"))?;
    let change = m.store.get_change(id).await?.ok_or_else(|| not_found("change"))?;
    let cells = m.store.console_cells(&[id]).await?;
    let mut builds: Vec<(String, Look, Option<String>)> = cells
        .iter()
        .map(|c| {
            let name = m.catalog.builder(c.builder_id).map(|b| b.name.clone()).unwrap_or_default();
            match (c.build_id, c.number) {
                (Some(_), Some(n)) => {
                    (format!("{name} #{n}"), look(c.build_results, c.build_complete), Some(build_href(c.builder_id, n)))
                }
                _ if !c.request_complete => (name, PENDING, None),
                _ => (name, look(Some(c.request_results), true), None),
            }
        })
        .collect();
    builds.sort_by(|a, b| a.0.cmp(&b.0));
    let page = ChangePage {
        chrome: Chrome::plain(&m, &headers, "changes").await,
        // Escaped, terminal escapes dropped (a pasted coloured traceback).
        comments: super::ansi::to_html(&change.comments),
        files: change.files.clone(),
        change: line(&change),
        builds,
    };
    render(&headers, &page, Some(change.when_timestamp))
}
