//! `/`: a first page with what the master holds so far.

use std::sync::Arc;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use cascade_store::ListQuery;

use crate::app::Master;

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
    pub title: String,
    pub builders: i64,
    pub workers: i64,
    pub pending: i64,
    pub changes_total: i64,
    pub changes: Vec<ChangeRow>,
    pub builds: Vec<BuildRow>,
    pub session: Option<SessionView>,
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

async fn branch_summaries(m: &Master) -> Result<Vec<BranchSummary>, cascade_store::StoreError> {
    let stable = crate::views::Filter { branches: vec![], tags: vec!["stable".into()] };
    let builders = crate::views::builders(m, &stable);
    let ids: Vec<i64> = builders.iter().map(|(_, id)| *id).collect();
    let latest = m.store.latest_builds(&ids, true).await?;
    let results: std::collections::HashMap<i64, Option<i64>> =
        latest.iter().map(|b| (b.builderid, b.results)).collect();
    let running = m.store.running_builds().await?;
    let branch_of: std::collections::HashMap<i64, &str> =
        m.config.builders.iter().filter_map(|b| Some((*m.builder_ids.get(&b.name)?, b.branch.as_deref()?))).collect();
    Ok(m.config
        .branches
        .iter()
        .map(|br| {
            let mine: Vec<i64> = builders
                .iter()
                .filter(|(b, _)| b.branch.as_deref() == Some(br.name.as_str()))
                .map(|(_, id)| *id)
                .collect();
            let of = |want: &[i64]| {
                mine.iter().filter(|id| results.get(id).copied().flatten().is_some_and(|r| want.contains(&r))).count()
            };
            BranchSummary {
                name: br.name.clone(),
                stable: mine.len(),
                green: of(&[0, 1]),
                red: of(&[2, 4]),
                running: running.iter().filter(|b| branch_of.get(&b.builderid) == Some(&br.name.as_str())).count(),
            }
        })
        .collect())
}

/// Who is logged in, and the token their forms carry.
pub struct SessionView {
    pub user: String,
    pub csrf: String,
}

/// The logged-in visitor, for a page's header and forms.
pub async fn session_view(m: &Master, headers: &axum::http::HeaderMap) -> Option<SessionView> {
    match crate::auth::caller(m, headers, None).await {
        Ok(Some(crate::auth::Caller { user, via: crate::auth::Via::Session { csrf } })) => {
            Some(SessionView { user: user.name, csrf })
        }
        _ => None,
    }
}

fn force_schedulers(m: &Master) -> Vec<(String, Vec<String>)> {
    m.config
        .schedulers
        .iter()
        .filter(|s| matches!(s.kind, cascade_config::SchedulerKind::Force))
        .map(|s| {
            let builders = m
                .config
                .builders
                .iter()
                .filter(|b| s.builders.as_ref().is_none_or(|l| l.iter().any(|n| n == &b.definition || n == &b.name)))
                .map(|b| b.name.clone())
                .collect();
            (s.name.clone(), builders)
        })
        .collect()
}

pub async fn page(State(m): State<Arc<Master>>, headers: axum::http::HeaderMap) -> Response {
    let session = session_view(&m, &headers).await;
    let load = async {
        let changes = m.store.list_changes(&ListQuery::default().order_by("changeid", true).limit(25)).await?;
        let pending = m
            .store
            .list_buildrequests(&ListQuery::default().eq("complete", "false").eq("claimed", "false").limit(0))
            .await?;
        let builders = m.store.list_builders(&ListQuery::default().limit(0)).await?;
        let workers = m.store.list_workers(&ListQuery::default().limit(0)).await?;
        let builds = m.store.recent_builds(25).await?;
        let branches = branch_summaries(&m).await?;
        let schedulers = m
            .store
            .list_schedulers()
            .await?
            .into_iter()
            .filter(|s| m.config.schedulers.iter().any(|c| c.name == s.name))
            .map(|s| (s.id, s.name, s.kind, s.enabled))
            .collect();
        Ok::<_, cascade_store::StoreError>(Home {
            title: m.config.master.title.clone(),
            builders: builders.total,
            workers: workers.total,
            pending: pending.total,
            changes_total: changes.total,
            changes: changes
                .items
                .into_iter()
                .map(|c| ChangeRow {
                    id: c.changeid,
                    revision: c.revision.unwrap_or_default().chars().take(12).collect(),
                    author: c.author,
                    branch: c.branch.unwrap_or_default(),
                    title: c.comments.lines().next().unwrap_or("").to_string(),
                })
                .collect(),
            builds: builds
                .into_iter()
                .map(|(builder, b)| BuildRow {
                    id: b.buildid,
                    builder_id: b.builderid,
                    symbol: crate::views::look(b.results, b.complete).symbol,
                    complete: b.complete,
                    builder,
                    number: b.number,
                    result: match b.results.and_then(cascade_model::Results::from_code) {
                        Some(r) if b.complete => r.name().to_string(),
                        _ => "running".to_string(),
                    },
                    state: b.state_string,
                })
                .collect(),
            session,
            forces: force_schedulers(&m),
            branches,
            schedulers,
        })
    };
    match load.await {
        Ok(page) => page.into_response(),
        Err(e) => crate::api::ApiError::from(e).into_response(),
    }
}

/// The script for live updates, compiled in like the stylesheet.
pub async fn script() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("../../../static/cascade.js"))
}

/// The stylesheet, compiled in so the master stays one file to deploy.
pub async fn stylesheet() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../../../static/cascade.css"))
}
