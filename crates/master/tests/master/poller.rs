//! Missed-event repair end to end: pushes made while the master is down
//! reach it through the poller. GitHub's API is a local stand-in that
//! answers from a real git repository (branch heads with ETags and
//! `304 Not Modified`, the compare API), and `cascade-worker` builds what
//! the poller found.

use std::path::Path;
use std::time::Duration;

use axum::http::StatusCode;
use cascade_store::ListQuery;
use serde_json::{Value, json};

use crate::github::github_stand_in;
use crate::harness::Harness;
use crate::workers::{BuildbotWorker, Kind, config, make_repo, wait_for};

const REPOSITORY: &str = "python/cpython";

pub fn commit_file(repo: &Path, name: &str) -> String {
    std::fs::write(repo.join(name), format!("{name}\n")).expect("write");
    crate::workers::git(repo, &["add", name]);
    crate::workers::git(repo, &["commit", "-q", "-m", &format!("add {name}")]);
    crate::workers::git(repo, &["rev-parse", "HEAD"])
}

/// A delivery of a push of `sha` (alone) to main, as GitHub sends it.
fn push_payload(sha: &str) -> Value {
    let mut payload = crate::harness::push_of(sha);
    payload["repository"]["full_name"] = json!(REPOSITORY);
    payload["repository"]["html_url"] = json!(format!("https://github.com/{REPOSITORY}"));
    payload
}

pub async fn a_worker(h: &Harness, dir: &Path) -> BuildbotWorker {
    a_worker_of(Kind::Cascade, h, dir).await
}

/// Worker `w1` (password `pw-one`) of `kind`, attached.
pub async fn a_worker_of(kind: Kind, h: &Harness, dir: &Path) -> BuildbotWorker {
    let port = if kind.is_pb() { h.served.addresses.pb.port() } else { h.served.addresses.msgpack.port() };
    let worker = BuildbotWorker::start_kind(kind, dir, port, "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    worker
}

pub async fn finished_builds(h: &Harness) -> Vec<cascade_store::records::BuildRecord> {
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
