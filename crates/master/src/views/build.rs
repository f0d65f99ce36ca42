//! A build's page (result, reason, blamelist with links to the commits,
//! properties, worker, timing, steps with their logs, artifacts, stop and
//! rebuild) and a log's page (a range of lines with ANSI colours, the live
//! tail while the step runs; `/raw` for the whole text, streamed).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use cascade_model::log::split;
use cascade_model::naming::builder_folder;
use cascade_store::records::{BuildRecord, ChangeRecord};
use cascade_store::{ListQuery, LogRecord, StepRecord};

use super::{Chrome, Look, Pages, ansi, duration, look, not_found, render};
use crate::error::HttpError;

pub struct StepLine {
    pub number: i64,
    pub name: String,
    pub look: Look,
    pub state: String,
    pub took: String,
    /// Seconds it has run, while it runs: the page ticks on from here.
    pub running_for: Option<i64>,
    pub logs: Vec<(String, String, i64)>,
}

pub struct Blame {
    pub id: i64,
    pub revision: String,
    pub revlink: Option<String>,
    pub author: String,
    pub title: String,
}

#[derive(Template)]
#[template(path = "build.html")]
pub struct BuildPage {
    pub chrome: Chrome,
    pub builder_id: i64,
    pub builder: String,
    pub build_id: i64,
    pub number: i64,
    pub look: Look,
    pub complete: bool,
    pub state: String,
    pub reason: String,
    pub worker: String,
    pub started: String,
    pub finished: String,
    pub took: String,
    /// Seconds the build has run, while it runs.
    pub running_for: Option<i64>,
    pub blamelist: Vec<Blame>,
    pub blame: Window,
    pub properties: Vec<(String, String, String)>,
    pub steps: Vec<StepLine>,
    pub artifacts: Vec<(String, u64)>,
    pub artifact_window: Window,
    pub previous: Option<String>,
    pub next: Option<String>,
    pub diagnosis: super::diagnosis::Diagnosis,
    /// (reporter, event, state, attempts, last error, when sent).
    pub notifications: Vec<(String, String, String, i64, String, String)>,
}

pub(super) async fn find(m: &Pages, builder: &str, number: &str) -> Result<BuildRecord, HttpError> {
    let (Ok(builder_id), Ok(number)) = (builder.parse::<i64>(), number.parse::<i64>()) else {
        return Err(not_found("build"));
    };
    let q = ListQuery::default().eq("builderid", builder_id).eq("number", number);
    m.store.list_builds(&q).await?.items.into_iter().next().ok_or_else(|| not_found("build"))
}

fn artifact_root(m: &Pages, builder: &str, number: i64) -> std::path::PathBuf {
    m.catalog.config.master.artifacts.join(builder_folder(builder)).join(number.to_string())
}

/// Artifacts a build page lists at once; the rest are a link away.
pub const ARTIFACTS_PAGE: i64 = 200;
/// Files of one build's artifact folder that are looked at, at most (a
/// folder with more lists its first ones by name).
const ARTIFACTS_WALKED: usize = 10_000;

/// A page of the files under the build's artifact folder (relative paths
/// and sizes, by path), and how many there are (at most `ARTIFACTS_WALKED`).
fn artifacts(m: &Pages, builder: &str, number: i64, offset: i64) -> (Vec<(String, u64)>, i64) {
    let root = artifact_root(m, builder, number);
    let mut all = Vec::new();
    let mut stack = vec![root.clone()];
    'walk: while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else if let Ok(rel) = e.path().strip_prefix(&root) {
                all.push((rel.display().to_string(), meta.len()));
            }
            if all.len() >= ARTIFACTS_WALKED {
                break 'walk;
            }
        }
    }
    all.sort();
    let total = all.len() as i64;
    let page = all.into_iter().skip(offset.max(0) as usize).take(ARTIFACTS_PAGE as usize).collect();
    (page, total)
}

fn step_line(b: &BuildRecord, s: StepRecord, logs: Vec<LogRecord>, now: i64) -> StepLine {
    let base = format!("/builders/{}/builds/{}/steps/{}/logs", b.builderid, b.number, s.number);
    StepLine {
        number: s.number,
        name: s.name,
        look: look(s.results, s.complete),
        state: s.state_string,
        took: s.started_at.map(|t| duration(s.complete_at.unwrap_or(now) - t)).unwrap_or_default(),
        running_for: s.started_at.filter(|_| !s.complete).map(|t| (now - t).max(0)),
        logs: logs.into_iter().map(|l| (l.name, format!("{base}/{}", l.slug), l.num_lines)).collect(),
    }
}

fn blame_line(c: ChangeRecord) -> Blame {
    Blame {
        revlink: super::revlink(&c),
        id: c.changeid,
        revision: c.revision.unwrap_or_default().chars().take(12).collect(),
        author: c.author,
        title: c.comments.lines().next().unwrap_or("").to_string(),
    }
}

/// The changes a build page shows at once; the rest are a link away.
pub const BLAME_PAGE: i64 = 100;

/// `?blame=N` and `?artifacts=N`: where the page's long lists start.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListsAt {
    blame: Option<i64>,
    artifacts: Option<i64>,
}

/// Where a page of a long list stands: "21–40 of 95", and links to the
/// pages around it.
pub struct Window {
    pub first: i64,
    pub last: i64,
    pub total: i64,
    pub earlier: Option<String>,
    pub later: Option<String>,
}

impl Window {
    /// `(param, anchor)`: the list's query parameter and its heading's id.
    fn new(base: &str, (param, anchor): (&str, &str), offset: i64, shown: i64, total: i64, size: i64) -> Window {
        let link = |at: i64| format!("{base}?{param}={at}#{anchor}");
        Window {
            first: offset + 1,
            last: offset + shown,
            total,
            earlier: (offset > 0).then(|| link((offset - size).max(0))),
            later: (offset + shown < total).then(|| link(offset + shown)),
        }
    }

    /// Whether the whole list is on this page.
    pub fn is_whole(&self) -> bool {
        self.earlier.is_none() && self.later.is_none()
    }
}

/// Why the build ran (its buildset's reason) and on which worker.
async fn reason_and_worker(m: &Pages, b: &BuildRecord) -> Result<(String, String), HttpError> {
    let reason = match m.store.get_buildrequest(b.buildrequestid).await? {
        Some(r) => m.store.get_buildset(r.buildsetid).await?.map(|bs| bs.reason).unwrap_or_default(),
        None => String::new(),
    };
    let worker = match b.workerid {
        Some(w) => m.store.get_worker(w).await?.map(|w| w.name).unwrap_or_default(),
        None => String::new(),
    };
    Ok((reason, worker))
}

/// What was sent about a build, and what failed.
async fn notifications(
    m: &Pages,
    build_id: i64,
) -> Result<Vec<(String, String, String, i64, String, String)>, cascade_store::StoreError> {
    Ok(m.store
        .notifications_of_build(build_id)
        .await?
        .into_iter()
        .map(|n| {
            let event = serde_json::from_str::<serde_json::Value>(&n.body)
                .ok()
                .and_then(|v| v["event"].as_str().map(str::to_string))
                .unwrap_or_default();
            let sent = n.sent_at.map(super::when).unwrap_or_default();
            (n.reporter, event, n.state.name().to_string(), n.attempts, n.last_error.unwrap_or_default(), sent)
        })
        .collect())
}

/// `GET /builders/{id}/builds/{number}`.
pub async fn page(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    Path((builder, number)): Path<(String, String)>,
    Query(at): Query<ListsAt>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Result<Response, HttpError> {
    let b = find(&m, &builder, &number).await?;
    let builder_name =
        m.catalog.builder(b.builderid).map_or_else(|| format!("builder {}", b.builderid), |c| c.name.clone());
    let now = m.clock.now();
    let mut steps = Vec::new();
    for s in m.store.list_steps(b.buildid).await? {
        let logs = m.store.list_logs(s.stepid).await?;
        steps.push(step_line(&b, s, logs, now));
    }
    let offset = at.blame.unwrap_or(0).clamp(0, cascade_store::COUNT_CAP);
    let changes = m.store.build_changes_page(b.buildid, offset, BLAME_PAGE).await?;
    let href = super::build_href(b.builderid, b.number);
    let blame =
        Window::new(&href, ("blame", "blamelist"), offset, changes.items.len() as i64, changes.total, BLAME_PAGE);
    let from = at.artifacts.unwrap_or(0).max(0);
    let (artifacts, files) = artifacts(&m, &builder_name, b.number, from);
    let artifact_window =
        Window::new(&href, ("artifacts", "artifacts"), from, artifacts.len() as i64, files, ARTIFACTS_PAGE);
    let blamelist = changes.items.into_iter().map(blame_line).collect();
    let properties = m
        .store
        .build_properties(b.buildid)
        .await?
        .into_iter()
        .map(|(n, v, s)| (n, v.as_str().map_or_else(|| v.to_string(), str::to_string), s))
        .collect();
    let (reason, worker) = reason_and_worker(&m, &b).await?;
    let diagnosis = super::diagnosis::diagnosis(&m, &b).await?;
    let notifications = notifications(&m, b.buildid).await?;
    let page = BuildPage {
        chrome: Chrome::plain(&m, &headers, "build").await.told(crate::notice::Said::of_query(q.as_deref())),
        builder_id: b.builderid,
        builder: builder_name.clone(),
        build_id: b.buildid,
        number: b.number,
        look: look(b.results, b.complete),
        complete: b.complete,
        state: b.state_string.clone(),
        reason,
        worker,
        started: super::when(b.started_at),
        finished: b.complete_at.map(super::when).unwrap_or_default(),
        took: duration(b.complete_at.unwrap_or(now) - b.started_at),
        running_for: (!b.complete).then_some((now - b.started_at).max(0)),
        blamelist,
        blame,
        properties,
        steps,
        artifacts,
        artifact_window,
        previous: (b.number > 1).then(|| super::build_href(b.builderid, b.number - 1)),
        next: Some(super::build_href(b.builderid, b.number + 1)),
        diagnosis,
        notifications,
    };
    render(&headers, &page, b.complete_at.or(Some(b.started_at)))
}

#[derive(Template)]
#[template(path = "log.html")]
pub struct LogPage {
    pub chrome: Chrome,
    pub builder_id: i64,
    pub builder: String,
    pub number: i64,
    pub step: String,
    pub log_id: i64,
    pub log_name: String,
    pub raw: String,
    pub first: i64,
    pub total: i64,
    pub lines: Vec<(i64, &'static str, String)>,
    pub earlier: Option<String>,
    pub later: Option<String>,
    pub running: bool,
    /// When the janitor removed the log's contents (`[janitor] log_horizon`).
    pub removed: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
pub struct Range {
    first: Option<i64>,
    count: Option<i64>,
}

/// Lines per log page; the default page is the log's end, where failures are.
const LOG_PAGE: i64 = 1000;

async fn find_log(
    m: &Pages,
    builder: &str,
    number: &str,
    step: &str,
    slug: &str,
) -> Result<(BuildRecord, StepRecord, LogRecord), HttpError> {
    let b = find(m, builder, number).await?;
    let step_number = step.parse::<i64>().map_err(|_| not_found("step"))?;
    let s = m.store.list_steps(b.buildid).await?.into_iter().find(|s| s.number == step_number);
    let s = s.ok_or_else(|| not_found("step"))?;
    let l = m.store.list_logs(s.stepid).await?.into_iter().find(|l| l.slug == slug).ok_or_else(|| not_found("log"))?;
    Ok((b, s, l))
}

/// A stored line as shown: its stream's class and its text as HTML.
fn shown(text: &str, stdio: bool) -> (&'static str, String) {
    let (stream, body) = if stdio { split(text) } else { (cascade_model::log::Stream::Stdout, text) };
    (stream.name(), ansi::to_html(body))
}

/// `GET /builders/{id}/builds/{number}/steps/{step}/logs/{log}`.
pub async fn log(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    Path((builder, number, step, slug)): Path<(String, String, String, String)>,
    Query(range): Query<Range>,
) -> Result<Response, HttpError> {
    let (b, s, l) = find_log(&m, &builder, &number, &step, &slug).await?;
    let removed = m.store.logs_removed_at(b.buildid).await?;
    let total = if removed.is_some() { 0 } else { l.num_lines };
    let count = range.count.unwrap_or(LOG_PAGE).clamp(1, 10 * LOG_PAGE);
    let first = range.first.unwrap_or((total - count).max(0)).clamp(0, total.max(0));
    let last = (first + count - 1).min(total - 1);
    let raw_lines =
        if total == 0 || last < first { Vec::new() } else { m.store.log_lines(l.logid, first, last).await? };
    let stdio = l.log_type == "s";
    let lines = raw_lines
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let (class, html) = shown(text, stdio);
            (first + i as i64, class, html)
        })
        .collect();
    let base = format!("/builders/{}/builds/{}/steps/{}/logs/{}", b.builderid, b.number, s.number, l.slug);
    let page = LogPage {
        chrome: Chrome::plain(&m, &headers, "log").await,
        builder_id: b.builderid,
        builder: m.catalog.builder(b.builderid).map(|c| c.name.clone()).unwrap_or_default(),
        number: b.number,
        step: s.name.clone(),
        log_id: l.logid,
        log_name: l.name.clone(),
        raw: format!("{base}/raw"),
        first,
        total,
        lines,
        earlier: (first > 0).then(|| format!("{base}?first={}&count={count}", (first - count).max(0))),
        later: (last + 1 < total).then(|| format!("{base}?first={}&count={count}", last + 1)),
        running: !l.complete,
        removed: removed.map(crate::humanize::when),
    };
    render(&headers, &page, None)
}

/// `GET …/logs/{log}/raw`: the whole log as text.
/// `?download=0` shows the text in the browser; otherwise it downloads.
#[derive(serde::Deserialize)]
pub struct RawQuery {
    download: Option<String>,
}

pub async fn raw(
    State(m): State<Arc<Pages>>,
    Path((builder, number, step, slug)): Path<(String, String, String, String)>,
    axum::extract::Query(q): axum::extract::Query<RawQuery>,
) -> Result<Response, HttpError> {
    let (_, _, l) = find_log(&m, &builder, &number, &step, &slug).await?;
    Ok(if q.download.as_deref() == Some("0") {
        crate::rawlog::inline(&m.store, &l)
    } else {
        crate::rawlog::response(&m.store, &l)
    })
}

/// An artifact's relative path, if it stays inside the artifact folder
/// (plain names only: no `..`, no absolute paths, no empty parts).
pub fn safe_relative(path: &str) -> Option<std::path::PathBuf> {
    let mut out = std::path::PathBuf::new();
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\\') || part.contains('\0') {
            return None;
        }
        out.push(part);
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// `/builders/{id}/builds/{number}/artifacts/{path}`: an uploaded file,
/// streamed (memory does not grow with its size).
pub async fn artifact(
    State(m): State<Arc<Pages>>,
    Path((builder, number, path)): Path<(String, String, String)>,
) -> Result<Response, HttpError> {
    let b = find(&m, &builder, &number).await?;
    let rel = safe_relative(&path).ok_or_else(|| not_found("artifact"))?;
    let name = m.catalog.builder(b.builderid).map(|c| c.name.clone()).ok_or_else(|| not_found("artifact"))?;
    let root = artifact_root(&m, &name, b.number);
    let full = root.join(&rel);
    // Symlinks could lead out: the resolved file must still be under the root.
    let (Ok(real), Ok(real_root)) = (std::fs::canonicalize(&full), std::fs::canonicalize(&root)) else {
        return Err(not_found("artifact"));
    };
    if !real.starts_with(&real_root) || !real.is_file() {
        return Err(not_found("artifact"));
    }
    let file = tokio::fs::File::open(&real).await.map_err(|_| not_found("artifact"))?;
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    // A header value takes visible ASCII: anything else in the name becomes `_`.
    let filename: String = rel
        .file_name()
        .map(|f| {
            f.to_string_lossy()
                .chars()
                .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
                .collect()
        })
        .unwrap_or_default();
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
            (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::safe_relative;

    #[test]
    fn artifact_paths_stay_inside() {
        assert_eq!(safe_relative("reports/a.txt"), Some(std::path::PathBuf::from("reports/a.txt")));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\..\\b"] {
            assert_eq!(safe_relative(bad), None, "{bad:?}");
        }
    }
}
