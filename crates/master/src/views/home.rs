//! `/`: a first page with what the master holds so far.

use std::sync::Arc;

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use cascade_model::Results;
use cascade_store::ListQuery;

use super::{Chrome, Filter, Pages};
use crate::error::HttpError;

pub struct ChangeRow {
    pub id: i64,
    pub revision: String,
    pub author: String,
    pub branch: String,
    pub title: String,
}

pub struct BuildRow {
    pub id: i64,
    pub builder_id: i64,
    pub symbol: &'static str,
    pub complete: bool,
    pub builder: String,
    pub number: i64,
    /// Buildbot's result name, or `running`; also the CSS class.
    pub result: String,
    pub state: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
pub struct Home {
    pub chrome: Chrome,
    pub builders: usize,
    pub workers: usize,
    pub pending: i64,
    pub changes: Vec<ChangeRow>,
    pub builds: Vec<BuildRow>,
    /// Force schedulers and the builders each can force.
    pub forces: Vec<(String, Vec<String>)>,
    pub branches: Vec<BranchSummary>,
    /// (id, name, kind, enabled) of every configured scheduler.
    pub schedulers: Vec<(i64, String, String, bool)>,
}

/// One line per branch: how its stable builders stand, what runs now.
pub struct BranchSummary {
    pub name: String,
    pub stable: usize,
    pub green: usize,
    pub red: usize,
    pub running: usize,
}

async fn branch_summaries(m: &Pages) -> Result<Vec<BranchSummary>, cascade_store::StoreError> {
    let stable = Filter { branches: vec![], tags: vec!["stable".into()] };
    let builders = super::builders(&m.catalog, &stable);
    let ids: Vec<i64> = builders.iter().map(|(_, id)| *id).collect();
    let latest = m.store.latest_builds(&ids, true).await?;
    let results: HashMap<i64, Option<Results>> = latest.iter().map(|b| (b.builderid, Results::of(b.results))).collect();
    let running = m.store.running_builds().await?;
    let branch_of: HashMap<i64, &str> =
        m.catalog.builders().filter_map(|(b, id)| Some((id, b.branch.as_deref()?))).collect();
    Ok(m.catalog
        .config
        .branches
        .iter()
        .map(|br| {
            let mine: Vec<i64> = builders
                .iter()
                .filter(|(b, _)| b.branch.as_deref() == Some(br.name.as_str()))
                .map(|(_, id)| *id)
                .collect();
            let of = |class: fn(Results) -> bool| {
                mine.iter().filter(|id| results.get(id).copied().flatten().is_some_and(class)).count()
            };
            BranchSummary {
                name: br.name.clone(),
                stable: mine.len(),
                green: of(Results::is_passing),
                red: of(Results::is_failing),
                running: running.iter().filter(|b| branch_of.get(&b.builderid) == Some(&br.name.as_str())).count(),
            }
        })
        .collect())
}

fn force_schedulers(m: &Pages) -> Vec<(String, Vec<String>)> {
    m.catalog
        .force_schedulers()
        .map(|s| (s.name.clone(), m.catalog.forceable(s).map(|b| b.name.clone()).collect()))
        .collect()
}

fn build_row(builder: String, b: cascade_store::records::BuildRecord) -> BuildRow {
    BuildRow {
        id: b.buildid,
        builder_id: b.builderid,
        symbol: super::look(b.results, b.complete).symbol,
        complete: b.complete,
        builder,
        number: b.number,
        result: match Results::of(b.results) {
            Some(r) if b.complete => r.name().to_string(),
            _ => "running".to_string(),
        },
        state: b.state_string,
    }
}

fn change_row(c: cascade_store::records::ChangeRecord) -> ChangeRow {
    ChangeRow {
        id: c.changeid,
        revision: c.revision.unwrap_or_default().chars().take(12).collect(),
        author: c.author,
        branch: c.branch.unwrap_or_default(),
        title: c.comments.lines().next().unwrap_or("").to_string(),
    }
}

/// `GET /`.
pub async fn page(
    State(m): State<Arc<Pages>>,
    headers: axum::http::HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    // No count of a table that grows with history: builders and workers
    // are the configuration's, pending requests a partial index's.
    let mut newest = ListQuery::default().order_by("changeid", true).limit(25);
    newest.skip_count = true;
    let changes = m.store.list_changes(&newest).await?;
    let (pending, _) = m.store.pending_requests().await?;
    let builds = m.store.recent_builds(25).await?;
    let schedulers = m
        .store
        .list_schedulers()
        .await?
        .into_iter()
        .filter(|s| m.catalog.has_scheduler(&s.name))
        .map(|s| (s.id, s.name, s.kind, s.enabled))
        .collect();
    let home = Home {
        chrome: Chrome::plain(&m, &headers, "home").await.told(crate::notice::Said::of_query(q.as_deref())),
        builders: m.catalog.builders().count(),
        workers: m.catalog.config.workers.len(),
        pending,
        changes: changes.items.into_iter().map(change_row).collect(),
        builds: builds.into_iter().map(|(builder, b)| build_row(builder, b)).collect(),
        forces: force_schedulers(&m),
        branches: branch_summaries(&m).await?,
        schedulers,
    };
    super::render(&headers, &home, None)
}

/// The script for live updates, compiled in like the stylesheet.
pub async fn script() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../../../static/cascade.js"),
    )
}

/// The stylesheet, compiled in so the master stays one file to deploy.
pub async fn stylesheet() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../../../../static/cascade.css"))
}
