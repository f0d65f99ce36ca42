//! `/waterfall`: builders as columns, time flowing down (newest on top);
//! each build a box with its result, its steps and a link.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::{Chrome, Filter, Look, Pages, build_href, duration, look, render};
use crate::error::HttpError;

/// Builds shown per builder.
const PER_BUILDER: i64 = 4;

pub struct StepBox {
    pub name: String,
    pub look: Look,
}

pub struct BuildBox {
    pub number: i64,
    pub href: String,
    pub look: Look,
    pub started: String,
    pub took: String,
    pub state: String,
    pub steps: Vec<StepBox>,
}

pub struct Lane {
    pub id: i64,
    pub name: String,
    pub builds: Vec<BuildBox>,
}

#[derive(Template)]
#[template(path = "waterfall.html")]
pub struct WaterfallPage {
    pub chrome: Chrome,
    pub lanes: Vec<Lane>,
}

/// `GET /waterfall`.
pub async fn page(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let filter = Filter::from_query(q.as_deref(), &m.catalog)?.or_first_branch(&m.catalog);
    let builders = super::builders(&m.catalog, &filter);
    let ids: Vec<i64> = builders.iter().map(|(_, id)| *id).collect();
    let builds = m.store.recent_builds_of(&ids, PER_BUILDER).await?;
    let build_ids: Vec<i64> = builds.iter().map(|b| b.buildid).collect();
    let steps = m.store.steps_of(&build_ids).await?;
    let now = m.clock.now();
    let mut steps_by_build: HashMap<i64, Vec<StepBox>> = HashMap::new();
    for s in steps {
        steps_by_build.entry(s.buildid).or_default().push(StepBox { name: s.name, look: look(s.results, s.complete) });
    }
    let mut by_builder: HashMap<i64, Vec<BuildBox>> = HashMap::new();
    let mut newest: Option<i64> = None;
    for b in builds {
        newest = newest.max(b.complete_at.or(Some(b.started_at)));
        by_builder.entry(b.builderid).or_default().push(BuildBox {
            number: b.number,
            href: build_href(b.builderid, b.number),
            look: look(b.results, b.complete),
            started: super::when(b.started_at),
            took: duration(b.complete_at.unwrap_or(now) - b.started_at),
            state: b.state_string,
            steps: steps_by_build.remove(&b.buildid).unwrap_or_default(),
        });
    }
    let lanes = builders
        .iter()
        .map(|(b, id)| Lane { id: *id, name: b.name.clone(), builds: by_builder.remove(id).unwrap_or_default() })
        .collect();
    let chrome = Chrome::new(&m, &headers, "waterfall", filter).await;
    render(&headers, &WaterfallPage { chrome, lanes }, newest)
}
