//! The pages: server-rendered (askama, escaped by default), one request
//! each, readable without JavaScript. Every list page filters by `branch=`
//! and `tag=` (repeatable). `cascade.js` adds live updates from `/events`.
//!
//! The pure parts (filters, result presentation, the release verdict, ANSI
//! colours) are plain functions tested here; the handlers read the store.

pub mod ansi;
pub mod build;
pub mod builders;
pub mod changes;
pub mod console;
pub mod events;
pub mod release;
pub mod waterfall;
pub mod workers;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cascade_config::BuilderConfig;
use cascade_model::Results;
use sha2::{Digest, Sha256};

use crate::app::Master;
use crate::home::SessionView;

/// `branch=` and `tag=` from a page's query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub branches: Vec<String>,
    pub tags: Vec<String>,
}

impl Filter {
    pub fn parse(query: Option<&str>) -> Filter {
        let pairs: Vec<(String, String)> = query.and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default();
        let mut f = Filter::default();
        for (k, v) in pairs {
            match k.as_str() {
                "branch" if !v.is_empty() => f.branches.push(v),
                "tag" if !v.is_empty() => f.tags.push(v),
                _ => {}
            }
        }
        f
    }

    /// Whether a builder passes: one of the branches (if any asked), all the tags.
    pub fn admits(&self, b: &BuilderConfig) -> bool {
        (self.branches.is_empty() || b.branch.as_ref().is_some_and(|br| self.branches.contains(br)))
            && self.tags.iter().all(|t| b.tags.contains(t))
    }

    /// The query string that reproduces this filter (`branch=…&tag=…`).
    pub fn query(&self) -> String {
        let pairs: Vec<(&str, &str)> = self
            .branches
            .iter()
            .map(|b| ("branch", b.as_str()))
            .chain(self.tags.iter().map(|t| ("tag", t.as_str())))
            .collect();
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }

    /// This filter, narrowed to one branch when it names none (pages whose
    /// columns are builders default to the first branch, not to a thousand columns).
    pub fn or_first_branch(mut self, master: &Master) -> Filter {
        if self.branches.is_empty()
            && let Some(b) = master.config.branches.first()
        {
            self.branches.push(b.name.clone());
        }
        self
    }
}

/// How a build (or request) looks: CSS class, a symbol, and a word, so
/// that every colour also reads without colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    pub class: &'static str,
    pub symbol: &'static str,
    pub word: &'static str,
}

pub const PENDING: Look = Look { class: "pending", symbol: "○", word: "pending" };
pub const RUNNING: Look = Look { class: "running", symbol: "◔", word: "running" };
pub const NOTHING: Look = Look { class: "none", symbol: "·", word: "no build" };

pub fn look(results: Option<i64>, complete: bool) -> Look {
    if !complete {
        return RUNNING;
    }
    match results.and_then(Results::from_code) {
        Some(Results::Success) => Look { class: "success", symbol: "✔", word: "success" },
        Some(Results::Warnings) => Look { class: "warnings", symbol: "⚠", word: "warnings" },
        Some(Results::Failure) => Look { class: "failure", symbol: "✘", word: "failure" },
        Some(Results::Skipped) => Look { class: "skipped", symbol: "–", word: "skipped" },
        Some(Results::Exception) => Look { class: "exception", symbol: "‼", word: "exception" },
        Some(Results::Retry) => Look { class: "retry", symbol: "↻", word: "retry" },
        Some(Results::Cancelled) => Look { class: "cancelled", symbol: "⊘", word: "cancelled" },
        None => Look { class: "none", symbol: "?", word: "unknown" },
    }
}

/// The builders a filter admits, grouped and ordered by tier tag, then name.
pub fn builders<'a>(master: &'a Master, filter: &Filter) -> Vec<(&'a BuilderConfig, i64)> {
    let mut out: Vec<(&BuilderConfig, i64)> = master
        .config
        .builders
        .iter()
        .filter(|b| filter.admits(b))
        .filter_map(|b| master.builder_ids.get(&b.name).map(|id| (b, *id)))
        .collect();
    out.sort_by(|(a, _), (b, _)| tier(a).cmp(&tier(b)).then_with(|| a.name.cmp(&b.name)));
    out
}

/// A builder's tier (`tier-1` → 1), 9 when it has none.
pub fn tier(b: &BuilderConfig) -> u8 {
    b.tags.iter().find_map(|t| t.strip_prefix("tier-").and_then(|n| n.parse().ok())).unwrap_or(9)
}

/// `3m ago`-style durations and `1h 02m` spans.
pub fn ago(now: i64, t: i64) -> String {
    format!("{} ago", crate::client::age(now - t))
}

pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A UTC timestamp for people.
pub fn when(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

/// What every page shares: title, navigation, the visitor, filters.
pub struct Chrome {
    pub title: String,
    pub page: &'static str,
    pub session: Option<SessionView>,
    pub branches: Vec<String>,
    pub filter: Filter,
    pub filter_query: String,
    /// Live updates: the page re-renders its `<main>` on build events.
    pub live: bool,
}

impl Chrome {
    pub async fn new(master: &Master, headers: &HeaderMap, page: &'static str, filter: Filter) -> Chrome {
        Chrome {
            title: master.config.master.title.clone(),
            page,
            session: crate::home::session_view(master, headers).await,
            branches: master.config.branches.iter().map(|b| b.name.clone()).collect(),
            filter_query: filter.query(),
            filter,
            live: true,
        }
    }

    pub fn branch_selected(&self, b: &str) -> bool {
        self.filter.branches.iter().any(|x| x == b)
    }
}

/// An HTML answer with an ETag (a hash of the page) and, when known, a
/// Last-Modified; a matching `If-None-Match` gets 304 and no body.
pub fn page(headers: &HeaderMap, html: String, last_modified: Option<i64>) -> Response {
    let tag = format!("\"{}\"", hex::encode(&Sha256::digest(html.as_bytes())[..12]));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    if let Some(t) = last_modified.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        && let Ok(v) = HeaderValue::from_str(&t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
    {
        h.insert(header::LAST_MODIFIED, v);
    }
    // Pages change as builds run: revalidate every time (cheap with the ETag).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Renders a template into a page response, or a 500 that says so.
pub fn render<T: askama::Template>(headers: &HeaderMap, t: &T, last_modified: Option<i64>) -> Response {
    match t.render() {
        Ok(html) => page(headers, html, last_modified),
        Err(e) => {
            tracing::error!(error = %e, "a page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render").into_response()
        }
    }
}

pub fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("no such {what}")).into_response()
}

pub fn store_error(e: cascade_store::StoreError) -> Response {
    crate::api::ApiError::from(e).into_response()
}

/// Builder id → its config, for lookups in a page.
pub fn builders_by_id(master: &Arc<Master>) -> BTreeMap<i64, &BuilderConfig> {
    master.config.builders.iter().filter_map(|b| master.builder_ids.get(&b.name).map(|id| (*id, b))).collect()
}

/// Which workers are connected now (to any master), by name.
pub struct Presence(std::collections::HashMap<String, bool>);

impl Presence {
    pub async fn load(m: &Master) -> Result<Presence, cascade_store::StoreError> {
        let workers = m.store.list_workers(&cascade_store::ListQuery::default().limit(1000)).await?.items;
        Ok(Presence::of(&workers))
    }

    pub fn of(workers: &[cascade_store::records::WorkerRecord]) -> Presence {
        Presence(workers.iter().map(|w| (w.name.clone(), !w.connected_to.is_empty())).collect())
    }

    pub fn online(&self, worker: &str) -> bool {
        self.0.get(worker).copied().unwrap_or(false)
    }

    /// Whether any worker of the builder is connected.
    pub fn serves(&self, b: &BuilderConfig) -> bool {
        b.workers.iter().any(|w| self.online(w))
    }
}

/// Each builder's newest build (or newest finished one), by builder id,
/// and which workers are online: what the builders and release pages show.
pub async fn standing(
    m: &Master,
    ids: &[i64],
    finished_only: bool,
) -> Result<(std::collections::HashMap<i64, cascade_store::records::BuildRecord>, Presence), cascade_store::StoreError>
{
    let latest = m.store.latest_builds(ids, finished_only).await?.into_iter().map(|b| (b.builderid, b)).collect();
    Ok((latest, Presence::load(m).await?))
}

/// A link to a build's page.
pub fn build_href(builder_id: i64, number: i64) -> String {
    format!("/builders/{builder_id}/builds/{number}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(name: &str, branch: &str, tags: &[&str]) -> BuilderConfig {
        BuilderConfig {
            name: name.into(),
            definition: name.into(),
            branch: Some(branch.into()),
            workers: vec![],
            factory: "f".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            description: None,
        }
    }

    #[test]
    fn filters_take_branches_and_all_tags() {
        let f = Filter::parse(Some("branch=3.x&branch=3.14&tag=stable&tag=tier-1&other=1"));
        assert_eq!(f.branches, vec!["3.x", "3.14"]);
        assert!(f.admits(&builder("a", "3.x", &["stable", "tier-1"])));
        assert!(!f.admits(&builder("b", "3.x", &["stable"])), "every tag is needed");
        assert!(!f.admits(&builder("c", "3.13", &["stable", "tier-1"])));
        assert_eq!(f.query(), "branch=3.x&branch=3.14&tag=stable&tag=tier-1");
        assert!(Filter::parse(None).admits(&builder("d", "PR", &[])));
    }

    #[test]
    fn every_result_has_a_symbol_and_a_word() {
        for code in 0..=6 {
            let l = look(Some(code), true);
            assert!(!l.symbol.is_empty() && !l.word.is_empty() && l.class == l.word);
        }
        assert_eq!(look(None, false), RUNNING);
        assert_eq!(duration(3725), "1h 02m");
        assert_eq!(duration(65), "1m 05s");
    }

    #[test]
    fn pages_answer_304_to_a_matching_etag() {
        let first = page(&HeaderMap::new(), "<p>x</p>".into(), Some(1_700_000_000));
        let tag = first.headers().get(header::ETAG).cloned().expect("etag");
        assert_eq!(
            first.headers().get(header::LAST_MODIFIED).and_then(|v| v.to_str().ok()),
            Some("Tue, 14 Nov 2023 22:13:20 GMT")
        );
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(page(&h, "<p>x</p>".into(), None).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(page(&h, "<p>y</p>".into(), None).status(), StatusCode::OK);
    }
}
