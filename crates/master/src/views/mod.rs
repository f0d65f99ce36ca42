//! The pages: server-rendered (askama, escaped by default), one request
//! each, readable without JavaScript. Every list page filters by `branch=`
//! and `tag=` (repeatable). `cascade.js` adds live updates from `/events`.
//!
//! The pure parts (filters, result presentation, the release verdict, ANSI
//! colours) are plain functions tested here; the handlers read the store.

pub mod ansi;
pub mod build;
pub mod builders;
pub mod buildset;
pub mod changes;
pub mod console;
pub mod diagnosis;
pub mod home;
pub mod legacy;
pub mod live;
pub mod release;
pub mod waterfall;
pub mod workers;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cascade_config::BuilderConfig;
use cascade_model::Results;
use cascade_store::records::BuildRecord;
use cascade_store::{Store, StoreError};
use sha2::{Digest, Sha256};

use crate::auth::{Access, SessionView};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::error::HttpError;
use crate::events::Bus;
pub use crate::humanize::{ago, duration, when};

/// What the pages need.
pub struct Pages {
    /// Where everything shown is read from.
    pub store: Store,
    /// Builders, branches, schedulers.
    pub catalog: Arc<Catalog>,
    /// What time it is.
    pub clock: Clock,
    /// Who the visitor is.
    pub access: Arc<Access>,
    /// Live updates.
    pub bus: Bus,
}

/// Every page, `/events`, and the static files; errors answer as pages.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Pages>: FromRef<S>,
{
    Router::new()
        .route("/", get(home::page))
        .route("/static/cascade.css", get(home::stylesheet))
        .route("/static/cascade.js", get(home::script))
        .route("/console", get(console::console))
        .route("/grid", get(console::grid))
        .route("/pulls/{n}", get(console::pull_grid))
        .route("/waterfall", get(waterfall::page))
        .route("/release", get(release::page))
        .route("/builders", get(builders::list))
        .route("/builders/{id}", get(builders::one))
        .route("/builders/{id}/builds/{number}", get(build::page))
        .route("/builders/{id}/builds/{number}/steps/{step}/logs/{log}", get(build::log))
        .route("/builders/{id}/builds/{number}/artifacts/{*path}", get(build::artifact))
        .route("/builders/{id}/builds/{number}/tests/{set}/order", get(diagnosis::order))
        .route("/tests", get(diagnosis::page))
        .route("/builders/{id}/builds/{number}/steps/{step}/logs/{log}/raw", get(build::raw))
        .route("/workers", get(workers::list))
        .route("/workers/{id}", get(workers::one))
        .route("/changes", get(changes::list))
        .route("/changes/{id}", get(changes::one))
        .route("/pending", get(builders::pending))
        .route("/buildsets/{id}", get(buildset::page))
        .route("/events", get(live::stream))
        .route("/all", get(legacy::all))
        .route("/all/", get(legacy::all))
        .route("/all/{*rest}", get(legacy::all).post(legacy::all))
        .route("/builds/{id}", get(legacy::build))
        .route("/{shortcut}", get(legacy::shortcut))
        .route("/{shortcut}/", get(legacy::shortcut))
        .layer(axum::middleware::map_response(crate::error::as_page))
}

/// A page's query string as its pairs, in order (a malformed one as none).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query.and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default()
}

/// The first value of `key` in a page's query string.
pub fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query_pairs(query).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// `branch=` and `tag=` from a page's query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub branches: Vec<String>,
    pub tags: Vec<String>,
}

impl Filter {
    pub fn parse(query: Option<&str>) -> Filter {
        let pairs = query_pairs(query);
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

    /// The filter of a page's query, with each branch named by its label
    /// (`3.x`) or its git name (`main`); a pull request's ref stays as it is.
    /// A branch that is neither is a 404 naming the branches there are,
    /// never an empty page that reads as green.
    pub fn from_query(query: Option<&str>, catalog: &Catalog) -> Result<Filter, HttpError> {
        let mut f = Filter::parse(query);
        let mut labels: Vec<String> = Vec::new();
        for asked in std::mem::take(&mut f.branches) {
            labels.extend(catalog.branch_labels(&asked).map_err(HttpError::not_found)?);
        }
        labels.dedup();
        f.branches = labels;
        Ok(f)
    }

    /// This filter, narrowed to one branch when it names none (pages whose
    /// columns are builders default to the first branch, not to a thousand columns).
    pub fn or_first_branch(mut self, catalog: &Catalog) -> Filter {
        if self.branches.is_empty()
            && let Some(b) = catalog.config.branches.first()
        {
            self.branches.push(b.name.clone());
        }
        self
    }
}

/// What a page says of a branch no configuration names.
pub fn unknown_branch(asked: &str, catalog: &Catalog) -> String {
    catalog.unknown_branch(asked)
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

/// How a build looks: running until complete, then its result's look.
pub fn look(results: Option<i64>, complete: bool) -> Look {
    if !complete {
        return RUNNING;
    }
    match Results::of(results) {
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
pub fn builders<'a>(catalog: &'a Catalog, filter: &Filter) -> Vec<(&'a BuilderConfig, i64)> {
    let mut out: Vec<(&BuilderConfig, i64)> = catalog.builders().filter(|(b, _)| filter.admits(b)).collect();
    out.sort_by(|(a, _), (b, _)| tier(a).cmp(&tier(b)).then_with(|| a.name.cmp(&b.name)));
    out
}

/// A builder's tier (`tier-1` → 1), 9 when it has none.
pub fn tier(b: &BuilderConfig) -> u8 {
    b.tags.iter().find_map(|t| t.strip_prefix("tier-").and_then(|n| n.parse().ok())).unwrap_or(9)
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
    /// What a control form just did, said at the top of the page it returned to.
    pub notice: Option<&'static str>,
    /// Whether the page takes the branch and tag filters (lists do; one
    /// build's or worker's page does not).
    pub filters: bool,
}

impl Chrome {
    /// The chrome of `page` for the visitor of this request.
    pub async fn new(pages: &Pages, headers: &HeaderMap, page: &'static str, filter: Filter) -> Chrome {
        let config = &pages.catalog.config;
        Chrome {
            title: config.master.title.clone(),
            page,
            session: pages.access.session_view(headers).await,
            branches: config.branches.iter().map(|b| b.name.clone()).collect(),
            filter_query: filter.query(),
            filter,
            live: true,
            notice: None,
            filters: true,
        }
    }

    /// The chrome of a page of one thing, which no branch filter narrows.
    pub async fn plain(pages: &Pages, headers: &HeaderMap, page: &'static str) -> Chrome {
        Chrome { filters: false, ..Chrome::new(pages, headers, page, Filter::default()).await }
    }

    /// This chrome, saying what a control form just did.
    pub fn told(mut self, said: Option<crate::notice::Said>) -> Chrome {
        self.notice = said.map(crate::notice::Said::text);
        self
    }

    pub fn branch_selected(&self, b: &str) -> bool {
        self.filter.branches.iter().any(|x| x == b)
    }

    /// The filter link that narrows to the stable builders, or, when the
    /// page shows them already, widens back to every builder: (label, query).
    pub fn stable_toggle(&self) -> (&'static str, String) {
        let mut f = self.filter.clone();
        if f.tags.iter().any(|t| t == "stable") {
            f.tags.retain(|t| t != "stable");
            ("all builders", f.query())
        } else {
            f.tags.push("stable".into());
            ("stable only", f.query())
        }
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

/// Renders a template into a page response (a template that fails to
/// render is a bug: 500).
pub fn render<T: askama::Template>(
    headers: &HeaderMap,
    t: &T,
    last_modified: Option<i64>,
) -> Result<Response, HttpError> {
    let html = t.render().map_err(|e| HttpError::internal("a page failed to render", &e))?;
    Ok(page(headers, html, last_modified))
}

/// 404 for a page: `no such build`.
pub fn not_found(what: &str) -> HttpError {
    HttpError::not_found(format!("no such {what}"))
}

/// Which workers are connected now (to any master), by name.
pub struct Presence(BTreeSet<String>);

impl Presence {
    /// Who is connected now, of every worker (no page cap).
    pub async fn load(store: &Store) -> Result<Presence, StoreError> {
        Ok(Presence(store.connected_worker_names().await?))
    }

    pub fn online(&self, worker: &str) -> bool {
        self.0.contains(worker)
    }

    /// Whether any worker of the builder is connected.
    pub fn serves(&self, b: &BuilderConfig) -> bool {
        b.workers.iter().any(|w| self.online(w))
    }
}

/// Each builder's newest build (or newest finished one), by builder id,
/// and which workers are online: what the builders and release pages show.
pub async fn standing(
    store: &Store,
    ids: &[i64],
    finished_only: bool,
) -> Result<(HashMap<i64, BuildRecord>, Presence), StoreError> {
    let (latest, presence) = tokio::try_join!(store.latest_builds(ids, finished_only), Presence::load(store))?;
    Ok((latest.into_iter().map(|b| (b.builderid, b)).collect(), presence))
}

/// A link to a build's page.
/// A change's link, if it is one a page may show: user data becomes an
/// `href` only as an `http(s)` URL.
pub fn revlink(change: &cascade_store::records::ChangeRecord) -> Option<String> {
    change.revlink.as_deref().and_then(cascade_model::text::http_link).map(str::to_string)
}

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
            tags: tags.iter().map(std::string::ToString::to_string).collect(),
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
