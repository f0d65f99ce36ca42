//! Missed-event repair end to end: pushes made while the master is down
//! reach it through the poller. GitHub's API is a local stand-in that
//! answers from a real git repository (branch heads with ETags and
//! `304 Not Modified`, the compare API), and `cascade-worker` builds what
//! the poller found.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cascade_store::ListQuery;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::harness::Harness;
use crate::workers::{BuildbotWorker, Kind, config, make_repo, wait_for};

const REPOSITORY: &str = "python/cpython";

/// GitHub's REST API over a local repository; it records each answer's
/// path and status.
pub struct GithubStandIn {
    repo: PathBuf,
    pub answered: Mutex<Vec<(String, u16)>>,
}

fn git(repo: &Path, args: &[&str]) -> Option<String> {
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

impl GithubStandIn {
    fn record(&self, path: String, status: StatusCode) {
        self.answered.lock().push((path, status.as_u16()));
    }

    fn commit(&self, sha: &str) -> Value {
        let fields = git(&self.repo, &["show", "-s", "--format=%an%x1f%ae%x1f%aI%x1f%cn%x1f%ce%x1f%cI%x1f%B", sha])
            .unwrap_or_default();
        let f: Vec<&str> = fields.split('\x1f').collect();
        let at = |i: usize| f.get(i).copied().unwrap_or("");
        json!({
            "sha": sha,
            "html_url": format!("https://github.com/{REPOSITORY}/commit/{sha}"),
            "commit": {
                "author": {"name": at(0), "email": at(1), "date": at(2)},
                "committer": {"name": at(3), "email": at(4), "date": at(5)},
                "message": at(6),
            },
        })
    }
}

async fn repository(State(g): State<Arc<GithubStandIn>>) -> Response {
    g.record(format!("/repos/{REPOSITORY}"), StatusCode::OK);
    let body = json!({"full_name": REPOSITORY, "html_url": format!("https://github.com/{REPOSITORY}")});
    with_headers(axum::Json(body).into_response(), None)
}

async fn branch(
    State(g): State<Arc<GithubStandIn>>,
    UrlPath((_, _, name)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/branches/{name}");
    let Some(sha) = git(&g.repo, &["rev-parse", &format!("refs/heads/{name}")]) else {
        g.record(path, StatusCode::NOT_FOUND);
        return with_headers(
            (StatusCode::NOT_FOUND, axum::Json(json!({"message": "Branch not found"}))).into_response(),
            None,
        );
    };
    let etag = format!("\"{sha}\"");
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        g.record(path, StatusCode::NOT_MODIFIED);
        return with_headers(StatusCode::NOT_MODIFIED.into_response(), Some(&etag));
    }
    g.record(path, StatusCode::OK);
    let body = json!({"name": name, "commit": g.commit(&sha), "protected": false});
    with_headers(axum::Json(body).into_response(), Some(&etag))
}

async fn compare(
    State(g): State<Arc<GithubStandIn>>,
    UrlPath((_, _, spec)): UrlPath<(String, String, String)>,
) -> Response {
    let path = format!("/compare/{spec}");
    let Some((base, head)) = spec.split_once("...") else {
        g.record(path, StatusCode::NOT_FOUND);
        return StatusCode::NOT_FOUND.into_response();
    };
    let log = git(&g.repo, &["rev-list", "--reverse", &format!("{base}..{head}")]);
    let Some(log) = log.filter(|_| git(&g.repo, &["cat-file", "-e", base]).is_some()) else {
        g.record(path, StatusCode::NOT_FOUND);
        return with_headers(
            (StatusCode::NOT_FOUND, axum::Json(json!({"message": "Not Found"}))).into_response(),
            None,
        );
    };
    let ahead = git(&g.repo, &["merge-base", "--is-ancestor", base, head]).is_some();
    let commits: Vec<Value> = log.lines().map(|sha| g.commit(sha)).collect();
    g.record(path, StatusCode::OK);
    let body =
        json!({"status": if ahead { "ahead" } else { "diverged" }, "total_commits": commits.len(), "commits": commits});
    with_headers(axum::Json(body).into_response(), None)
}

/// Serves the stand-in on a free port; returns it and its base URL.
pub async fn github_stand_in(repo: &Path) -> (Arc<GithubStandIn>, String) {
    let g = Arc::new(GithubStandIn { repo: repo.to_path_buf(), answered: Mutex::new(Vec::new()) });
    let app = axum::Router::new()
        .route("/repos/{owner}/{name}", axum::routing::get(repository))
        .route("/repos/{owner}/{name}/branches/{branch}", axum::routing::get(branch))
        .route("/repos/{owner}/{name}/compare/{spec}", axum::routing::get(compare))
        .with_state(g.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (g, url)
}

fn commit_file(repo: &Path, name: &str) -> String {
    std::fs::write(repo.join(name), format!("{name}\n")).expect("write");
    crate::workers::git(repo, &["add", name]);
    crate::workers::git(repo, &["commit", "-q", "-m", &format!("add {name}")]);
    crate::workers::git(repo, &["rev-parse", "HEAD"])
}

/// A delivery of a push of `sha` (alone) to main, as GitHub sends it.
fn push_payload(sha: &str) -> Value {
    let mut payload = crate::harness::synthetic_push("main", 1, 1, &["README"]);
    payload["commits"][0]["id"] = json!(sha);
    payload["head_commit"] = payload["commits"][0].clone();
    payload["after"] = json!(sha);
    payload["repository"]["full_name"] = json!(REPOSITORY);
    payload["repository"]["html_url"] = json!(format!("https://github.com/{REPOSITORY}"));
    payload
}

async fn a_worker(h: &Harness, dir: &Path) -> BuildbotWorker {
    let port = h.served.addresses.msgpack.port();
    let worker = BuildbotWorker::start_kind(Kind::Cascade, dir, port, "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    worker
}

async fn finished_builds(h: &Harness) -> Vec<cascade_store::records::BuildRecord> {
    let all = h.store.list_builds(&ListQuery::default()).await.expect("builds").items;
    all.into_iter().filter(|b| b.complete).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_made_while_the_master_was_down_are_polled_built_once_and_a_late_delivery_adds_nothing() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, first) = make_repo(dir.path());
    let (github, api) = github_stand_in(&repo).await;
    let github_section = format!(
        "[github]\ninsecure_webhook = true\nrepository = \"{REPOSITORY}\"\napi_url = \"{api}\"\npoll_interval = \"1s\""
    );
    let text = config(&repo, r#"{ name = "test", command = ["sh", "-c", "ls"] },"#)
        .replace("[github]\ninsecure_webhook = true", &github_section);
    let store = db.store().await;

    // Up, and a push delivered as usual: built.
    let h = Harness::on_store(store.clone(), &text).await;
    let mut worker = a_worker(&h, dir.path()).await;
    h.push(&push_payload(&first), "delivery-1").await;
    wait_for("the first build", Duration::from_secs(60), || async {
        (finished_builds(&h).await.len() == 1).then_some(())
    })
    .await;
    h.served.stop().await.expect("a clean stop");
    worker.kill().await;

    // Down: two pushes whose deliveries never arrive.
    let second = commit_file(&repo, "a.txt");
    let third = commit_file(&repo, "b.txt");

    // Up again: the poller finds both at start-up and they are built once.
    let h = Harness::on_store(store.clone(), &text).await;
    let _worker = a_worker(&h, dir.path()).await;
    let builds = wait_for("the polled build", Duration::from_secs(60), || async {
        let builds = finished_builds(&h).await;
        (builds.len() == 2).then_some(builds)
    })
    .await;
    let changes = h.store.list_changes(&ListQuery::default()).await.expect("changes").items;
    let revisions: Vec<&str> = changes.iter().filter_map(|c| c.revision.as_deref()).collect();
    assert_eq!(revisions, [first.as_str(), second.as_str(), third.as_str()]);
    let source = |c: &cascade_store::records::ChangeRecord| c.properties.get("source").map(|(v, _)| v.clone());
    assert_eq!(source(&changes[0]), None, "delivered");
    assert_eq!((source(&changes[1]), source(&changes[2])), (Some(json!("poller")), Some(json!("poller"))));
    assert_eq!(changes[2].author, "Ann <ann@example.org>");
    let newest = builds.iter().max_by_key(|b| b.buildid).expect("a build");
    let blamelist = h.store.build_changes(newest.buildid).await.expect("blamelist");
    let blamed: Vec<&str> = blamelist.iter().filter_map(|c| c.revision.as_deref()).collect();
    assert_eq!(blamed, [second.as_str(), third.as_str()], "one build covers both polled pushes");

    // The changes page tells the operator which pushes were never delivered.
    let req = axum::http::Request::get("/changes?source=poller").body(axum::body::Body::empty()).expect("request");
    let (status, page) = h.send(req).await;
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(&second[..12]) && page.contains(&third[..12]), "{page}");
    assert!(!page.contains(&first[..12]), "a delivered change is not listed as polled");
    assert_eq!(page.matches("class=\"tag polled\"").count(), 2);

    // GitHub's late delivery of the last push adds nothing.
    let before = h.counts().await;
    let late = h.push(&push_payload(&third), "delivery-late").await;
    assert!(late.is_empty(), "stored again: {late:?}");
    assert_eq!(h.counts().await, before);

    // Later polls are conditional: an unchanged head is a 304 that costs no rate limit.
    wait_for("a 304 from the stand-in", Duration::from_secs(30), || async {
        github.answered.lock().iter().any(|(p, s)| p == "/branches/main" && *s == 304).then_some(())
    })
    .await;
    assert_eq!(finished_builds(&h).await.len(), 2, "nothing more was built");
    h.stop().await;
    db.finish().await;
}
