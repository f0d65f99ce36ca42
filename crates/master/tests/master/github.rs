//! GitHub's REST API, as far as Cascade calls it, answering from a real
//! git repository: branch heads with ETags and `304 Not Modified`, the
//! compare and commit APIs, pull requests (from the repository's
//! `refs/pull/N/head`), their files, collaborator permissions, label
//! removal and comments. It answers as GitHub does: rate-limit headers on
//! every answer, `{"message": …}` bodies on errors, 401 for writes without
//! a token. Every answer's method, path and status are recorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use parking_lot::Mutex;
use serde_json::{Value, json};

/// One pull request the stand-in knows.
#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    pub author: String,
    pub title: String,
    pub labels: Vec<String>,
    /// Who added the labels (the issue events say so).
    pub labeler: String,
    pub open: bool,
}

pub struct GithubStandIn {
    repo: PathBuf,
    /// (method and path, status) of every answer.
    pub answered: Mutex<Vec<(String, u16)>>,
    /// (PR number, body) of every comment posted.
    pub comments: Mutex<Vec<(u64, String)>>,
    pub pulls: Mutex<BTreeMap<u64, Pull>>,
    /// Login → permission; anyone else may read (a public repository).
    pub permissions: Mutex<BTreeMap<String, String>>,
    /// (commit, state) of every status posted.
    pub statuses: Mutex<Vec<(String, String)>>,
    /// While set, every answer is GitHub's "rate limit exceeded".
    pub limited: std::sync::atomic::AtomicBool,
    /// While set, every answer takes a minute.
    pub slow: std::sync::atomic::AtomicBool,
}

pub fn git(repo: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).current_dir(repo).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// GitHub's headers on every answer.
fn with_headers(mut resp: Response, etag: Option<&str>) -> Response {
    let h = resp.headers_mut();
    for (k, v) in [("x-ratelimit-limit", "5000"), ("x-ratelimit-remaining", "4999"), ("x-ratelimit-resource", "core")] {
        h.insert(k, v.parse().expect("header"));
    }
    if let Some(e) = etag.and_then(|e| e.parse().ok()) {
        h.insert("etag", e);
    }
    resp
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"message": message, "documentation_url": "https://docs.github.com/rest"});
    with_headers((status, Json(body)).into_response(), None)
}

impl GithubStandIn {
    fn record(&self, method: &Method, path: String, status: StatusCode) {
        let what = if method == Method::GET { path } else { format!("{method} {path}") };
        self.answered.lock().push((what, status.as_u16()));
    }

    fn answer(&self, method: &Method, path: String, resp: Response) -> Response {
        self.record(method, path, resp.status());
        resp
    }

    /// How often `what` (a GET's path, or `METHOD path`) was answered with `status`.
    pub fn count(&self, what: &str, status: u16) -> usize {
        self.answered.lock().iter().filter(|(p, s)| p == what && *s == status).count()
    }

    fn commit(&self, sha: &str) -> Option<Value> {
        let fields = git(&self.repo, &["show", "-s", "--format=%an%x1f%ae%x1f%aI%x1f%cn%x1f%ce%x1f%cI%x1f%B", sha])?;
        let f: Vec<&str> = fields.split('\x1f').collect();
        let at = |i: usize| f.get(i).copied().unwrap_or("");
        Some(json!({
            "sha": sha,
            "html_url": format!("https://github.com/o/r/commit/{sha}"),
            "commit": {
                "author": {"name": at(0), "email": at(1), "date": at(2)},
                "committer": {"name": at(3), "email": at(4), "date": at(5)},
                "message": at(6),
            },
        }))
    }

    /// A PR as `GET /repos/{repo}/pulls/{n}` gives it.
    fn pull_json(&self, owner: &str, name: &str, p: &Pull) -> Option<Value> {
        let head = git(&self.repo, &["rev-parse", &format!("refs/pull/{}/head", p.number)])?;
        let base = git(&self.repo, &["rev-parse", "refs/heads/main"])?;
        let merge = git(&self.repo, &["rev-parse", &format!("refs/pull/{}/merge", p.number)]);
        let repo =
            json!({"full_name": format!("{owner}/{name}"), "html_url": format!("https://github.com/{owner}/{name}")});
        Some(json!({
            "number": p.number,
            "state": if p.open { "open" } else { "closed" },
            "title": p.title,
            "html_url": format!("https://github.com/{owner}/{name}/pull/{}", p.number),
            "user": {"login": p.author},
            "head": {"ref": format!("feature-{}", p.number), "sha": head, "repo": repo},
            "base": {"ref": "main", "sha": base, "repo": repo},
            "labels": p.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
            "merge_commit_sha": merge,
        }))
    }

    /// Adds a PR whose head is the repository's `refs/pull/N/head`.
    pub fn open_pull(&self, number: u64, author: &str, labels: &[&str]) {
        let pull = Pull {
            number,
            author: author.into(),
            title: format!("PR {number}"),
            labels: labels.iter().map(std::string::ToString::to_string).collect(),
            labeler: "ann".into(),
            open: true,
        };
        self.pulls.lock().insert(number, pull);
    }

    /// The labels PR `number` carries now.
    pub fn labels(&self, number: u64) -> Vec<String> {
        self.pulls.lock().get(&number).map(|p| p.labels.clone()).unwrap_or_default()
    }

    /// The comments posted on PR `number`.
    pub fn comments_on(&self, number: u64) -> Vec<String> {
        self.comments.lock().iter().filter(|(n, _)| *n == number).map(|(_, b)| b.clone()).collect()
    }
}

type Shared = State<Arc<GithubStandIn>>;
type Repo = UrlPath<(String, String)>;

async fn repository(State(g): Shared, UrlPath((owner, name)): Repo) -> Response {
    let body =
        json!({"full_name": format!("{owner}/{name}"), "html_url": format!("https://github.com/{owner}/{name}")});
    g.answer(&Method::GET, format!("/repos/{owner}/{name}"), with_headers(Json(body).into_response(), None))
}

async fn branch(
    State(g): Shared,
    UrlPath((_, _, name)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/branches/{name}");
    let Some(sha) = git(&g.repo, &["rev-parse", &format!("refs/heads/{name}")]) else {
        return g.answer(&Method::GET, path, error(StatusCode::NOT_FOUND, "Branch not found"));
    };
    let etag = format!("\"{sha}\"");
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return g.answer(&Method::GET, path, with_headers(StatusCode::NOT_MODIFIED.into_response(), Some(&etag)));
    }
    let body = json!({"name": name, "commit": g.commit(&sha), "protected": false});
    g.answer(&Method::GET, path, with_headers(Json(body).into_response(), Some(&etag)))
}

async fn compare(State(g): Shared, UrlPath((_, _, spec)): UrlPath<(String, String, String)>) -> Response {
    let path = format!("/compare/{spec}");
    let Some((base, head)) = spec.split_once("...") else {
        return g.answer(&Method::GET, path, error(StatusCode::NOT_FOUND, "Not Found"));
    };
    let log = git(&g.repo, &["rev-list", "--reverse", &format!("{base}..{head}")]);
    let Some(log) = log.filter(|_| git(&g.repo, &["cat-file", "-e", base]).is_some()) else {
        return g.answer(&Method::GET, path, error(StatusCode::NOT_FOUND, "Not Found"));
    };
    let ahead = git(&g.repo, &["merge-base", "--is-ancestor", base, head]).is_some();
    let commits: Vec<Value> = log.lines().filter_map(|sha| g.commit(sha)).collect();
    let body =
        json!({"status": if ahead { "ahead" } else { "diverged" }, "total_commits": commits.len(), "commits": commits});
    g.answer(&Method::GET, path, with_headers(Json(body).into_response(), None))
}

async fn commit(State(g): Shared, UrlPath((_, _, sha)): UrlPath<(String, String, String)>) -> Response {
    let path = format!("/commits/{sha}");
    match g.commit(&sha) {
        Some(c) => g.answer(&Method::GET, path, with_headers(Json(c).into_response(), None)),
        None => g.answer(&Method::GET, path, error(StatusCode::UNPROCESSABLE_ENTITY, "No commit found for SHA")),
    }
}

async fn pulls(State(g): Shared, UrlPath((owner, name)): Repo, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let open_only = q.get("state").is_none_or(|s| s == "open");
    let list: Vec<Value> = {
        let pulls = g.pulls.lock();
        pulls.values().filter(|p| p.open || !open_only).filter_map(|p| g.pull_json(&owner, &name, p)).collect()
    };
    g.answer(&Method::GET, "/pulls".into(), with_headers(Json(list).into_response(), None))
}

async fn pull(State(g): Shared, UrlPath((owner, name, n)): UrlPath<(String, String, u64)>) -> Response {
    let found = g.pulls.lock().get(&n).cloned().and_then(|p| g.pull_json(&owner, &name, &p));
    let path = format!("/pulls/{n}");
    match found {
        Some(p) => g.answer(&Method::GET, path, with_headers(Json(p).into_response(), None)),
        None => g.answer(&Method::GET, path, error(StatusCode::NOT_FOUND, "Not Found")),
    }
}

async fn pull_files(State(g): Shared, UrlPath((_, _, n)): UrlPath<(String, String, u64)>) -> Response {
    let range = format!("refs/heads/main...refs/pull/{n}/head");
    let names = git(&g.repo, &["diff", "--name-only", &range]).unwrap_or_default();
    let files: Vec<Value> = names.lines().map(|f| json!({"filename": f, "status": "modified"})).collect();
    g.answer(&Method::GET, format!("/pulls/{n}/files"), with_headers(Json(files).into_response(), None))
}

async fn issue_events(State(g): Shared, UrlPath((_, _, n)): UrlPath<(String, String, u64)>) -> Response {
    let pull = g.pulls.lock().get(&n).cloned();
    let events: Vec<Value> = pull
        .iter()
        .flat_map(|p| {
            let actor = json!({"login": p.labeler, "type": "User"});
            p.labels.iter().map(move |l| json!({"event": "labeled", "label": {"name": l}, "actor": actor}))
        })
        .collect();
    g.answer(&Method::GET, format!("/issues/{n}/events"), with_headers(Json(events).into_response(), None))
}

async fn permission(State(g): Shared, UrlPath((_, _, user)): UrlPath<(String, String, String)>) -> Response {
    let p = g.permissions.lock().get(&user).cloned().unwrap_or_else(|| "read".into());
    let body = json!({"permission": p, "role_name": p, "user": {"login": user}});
    g.answer(&Method::GET, format!("/collaborators/{user}/permission"), with_headers(Json(body).into_response(), None))
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("Bearer "))
}

async fn remove_label(
    State(g): Shared,
    UrlPath((_, _, n, label)): UrlPath<(String, String, u64, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/issues/{n}/labels/{label}");
    if !authorized(&headers) {
        return g.answer(&Method::DELETE, path, error(StatusCode::UNAUTHORIZED, "Requires authentication"));
    }
    let remaining = {
        let mut pulls = g.pulls.lock();
        let Some(p) = pulls.get_mut(&n).filter(|p| p.labels.contains(&label)) else {
            drop(pulls);
            return g.answer(&Method::DELETE, path, error(StatusCode::NOT_FOUND, "Label does not exist"));
        };
        p.labels.retain(|l| *l != label);
        p.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>()
    };
    g.answer(&Method::DELETE, path, with_headers(Json(remaining).into_response(), None))
}

async fn post_comment(
    State(g): Shared,
    UrlPath((_, _, n)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/issues/{n}/comments");
    if !authorized(&headers) {
        return g.answer(&Method::POST, path, error(StatusCode::UNAUTHORIZED, "Requires authentication"));
    }
    let Some(text) = body["body"].as_str() else {
        return g.answer(&Method::POST, path, error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request"));
    };
    let id = {
        let mut comments = g.comments.lock();
        comments.push((n, text.to_string()));
        comments.len()
    };
    let answer = json!({"id": id, "body": text});
    g.answer(&Method::POST, path, with_headers((StatusCode::CREATED, Json(answer)).into_response(), None))
}

async fn post_status(
    State(g): Shared,
    UrlPath((_, _, sha)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/statuses/{sha}");
    if !authorized(&headers) {
        return g.answer(&Method::POST, path, error(StatusCode::UNAUTHORIZED, "Requires authentication"));
    }
    let state = body["state"].as_str().unwrap_or_default().to_string();
    g.statuses.lock().push((sha, state.clone()));
    g.answer(
        &Method::POST,
        path,
        with_headers((StatusCode::CREATED, Json(json!({"state": state}))).into_response(), None),
    )
}

/// A slow GitHub while `slow` is set; its answer once the primary rate
/// limit is spent while `limited` is.
async fn rate_limit(State(g): Shared, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if g.slow.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
    if !g.limited.load(std::sync::atomic::Ordering::Relaxed) {
        return next.run(req).await;
    }
    let reset = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) + 60)
        .to_string();
    let mut resp = error(StatusCode::FORBIDDEN, "API rate limit exceeded");
    for (k, v) in [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", reset.as_str())] {
        resp.headers_mut().insert(k, v.parse().expect("header"));
    }
    g.answer(req.method(), req.uri().path().to_string(), resp)
}

/// Serves the stand-in on a free port; returns it and its base URL.
pub async fn github_stand_in(repo: &Path) -> (Arc<GithubStandIn>, String) {
    let g = Arc::new(GithubStandIn {
        repo: repo.to_path_buf(),
        answered: Mutex::new(Vec::new()),
        comments: Mutex::new(Vec::new()),
        pulls: Mutex::new(BTreeMap::new()),
        permissions: Mutex::new(BTreeMap::new()),
        statuses: Mutex::new(Vec::new()),
        limited: std::sync::atomic::AtomicBool::new(false),
        slow: std::sync::atomic::AtomicBool::new(false),
    });
    let r = "/repos/{owner}/{name}";
    let app = axum::Router::new()
        .route(r, get(repository))
        .route(&format!("{r}/branches/{{branch}}"), get(branch))
        .route(&format!("{r}/compare/{{spec}}"), get(compare))
        .route(&format!("{r}/commits/{{sha}}"), get(commit))
        .route(&format!("{r}/pulls"), get(pulls))
        .route(&format!("{r}/pulls/{{n}}"), get(pull))
        .route(&format!("{r}/pulls/{{n}}/files"), get(pull_files))
        .route(&format!("{r}/collaborators/{{user}}/permission"), get(permission))
        .route(&format!("{r}/issues/{{n}}/events"), get(issue_events))
        .route(&format!("{r}/issues/{{n}}/labels/{{label}}"), delete(remove_label))
        .route(&format!("{r}/issues/{{n}}/comments"), axum::routing::post(post_comment))
        .route(&format!("{r}/statuses/{{sha}}"), axum::routing::post(post_status))
        .layer(axum::middleware::from_fn_with_state(g.clone(), rate_limit))
        .with_state(g.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (g, url)
}
