//! `/buildsets/{id}`: what a force, rebuild or rerun asked for, and what
//! became of it: each request, waiting or taken by a build (linked), with
//! the build's state. Control forms land here after making a buildset, with
//! `?done=` saying what was just done.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::{Chrome, Look, PENDING, Pages, RUNNING, build_href, look, not_found, render};
use crate::error::HttpError;
use crate::notice::Done;

/// One request of the buildset and its build.
pub struct RequestLine {
    pub id: i64,
    pub builder_id: i64,
    pub builder: String,
    pub look: Look,
    /// The build that took it, if one has: (number, link).
    pub build: Option<(i64, String)>,
}

#[derive(Template)]
#[template(path = "buildset.html")]
pub struct BuildsetPage {
    pub chrome: Chrome,
    pub id: i64,
    pub reason: String,
    pub submitted: String,
    pub owner: String,
    pub notice: Option<String>,
    pub requests: Vec<RequestLine>,
    /// The changes it was made for: (id, revision, title).
    pub changes: Vec<(i64, String, String)>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct Said {
    done: Option<String>,
}

/// What a request's line shows: its build's state, else waiting or how it ended.
fn request_look(c: &cascade_store::ConsoleCell) -> Look {
    match (c.build_id, c.build_complete) {
        (Some(_), false) => RUNNING,
        (Some(_), true) => look(c.build_results, true),
        (None, _) if !c.request_complete => PENDING,
        (None, _) => look(Some(c.request_results), true),
    }
}

/// `GET /buildsets/{id}`.
pub async fn page(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Query(said): Query<Said>,
) -> Result<Response, HttpError> {
    let id = raw.parse::<i64>().map_err(|_| not_found("buildset"))?;
    let bs = m.store.get_buildset(id).await?.ok_or_else(|| not_found("buildset"))?;
    let cells = m.store.buildset_cells(id).await?;
    let owner =
        m.store.buildset_properties(id).await?.get("owner").and_then(|v| v.get(0)?.as_str().map(str::to_string));
    let requests: Vec<RequestLine> = cells
        .iter()
        .map(|(request, c)| RequestLine {
            id: *request,
            builder_id: c.builder_id,
            builder: m
                .catalog
                .builder(c.builder_id)
                .map_or_else(|| format!("builder {}", c.builder_id), |b| b.name.clone()),
            look: request_look(c),
            build: c.build_id.and(c.number).map(|n| (n, build_href(c.builder_id, n))),
        })
        .collect();
    let changes = m
        .store
        .buildset_changes(id)
        .await?
        .into_iter()
        .map(|c| (c.changeid, c.revision.unwrap_or_default().chars().take(12).collect(), first_line(&c.comments)))
        .collect();
    let page = BuildsetPage {
        chrome: Chrome::plain(&m, &headers, "pending").await,
        id,
        reason: bs.reason,
        submitted: super::when(bs.submitted_at),
        owner: owner.unwrap_or_default(),
        notice: said.done.as_deref().and_then(Done::parse).map(|d| d.said(requests.len())),
        requests,
        changes,
    };
    render(&headers, &page, None)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}
