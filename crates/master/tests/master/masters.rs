//! Several masters on one PostgreSQL: a master killed with SIGKILL
//! mid-build is declared dead once its heartbeat is older than
//! `master_expiry`, and a living master builds its work again.

use std::path::Path;
use std::time::Duration;

use cascade_store::ListQuery;
use cascade_testkit::{Backend, TestDb};

use crate::harness::{Harness, MasterProcess, free_port};
use crate::workers::{BuildbotWorker, Kind, make_repo, wait_for};

/// Two workers on one builder; the build sleeps on `w1` (so it is still
/// running when its master dies) and passes at once on `w2`.
fn config(name: &str, repo: &Path, ports: (u16, u16, u16)) -> String {
    let (http, msgpack, pb) = ports;
    format!(
        r#"
[master]
name = "{name}"
http = "127.0.0.1:{http}"
msgpack = "127.0.0.1:{msgpack}"
pb = "127.0.0.1:{pb}"
heartbeat = "500ms"
master_expiry = "2s"
artifacts = "{artifacts}"
[github]
insecure_webhook = true
[[branch]]
name = "main"
[[worker]]
name = "w1"
password = "pw-one"
[[worker]]
name = "w2"
password = "pw-one"
[[factory]]
name = "f"
steps = [
  {{ git = {{ repo = "{repo}" }} }},
  {{ name = "test", command = ["sh", "-c", "test %(prop:workername)s = w2 || sleep 300"] }},
]
[[builder]]
name = "unix"
workers = ["w1", "w2"]
factory = "f"
branches = ["main"]
[[scheduler]]
name = "main"
kind = "branch"
branch = "main"
"#,
        repo = repo.display(),
        artifacts = repo.parent().map(|p| p.join(format!("artifacts-{name}"))).unwrap_or_default().display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_build_is_declared_dead_and_another_builds_its_work() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let ports = (free_port(), free_port(), free_port());
    let file = dir.path().join("a.toml");
    std::fs::write(&file, config("a", &repo, ports)).expect("config");
    let mut a = MasterProcess::start(&file, &db.url, &dir.path().join("a.log"));
    cascade_master::outbound::install_crypto_provider();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", ports.0);
    a.wait_healthy(&http, &base, &dir.path().join("a.log"), Duration::from_secs(60)).await;
    let _w1 = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), ports.1, "w1", "pw-one").await;

    crate::harness::push_over_http(&http, &base, &sha).await;
    let store = db.store().await;
    let first = wait_for("a's build to run", Duration::from_secs(60), || async {
        let builds = store.list_builds(&ListQuery::default()).await.ok()?.items;
        builds.into_iter().find(|b| !b.complete)
    })
    .await;

    // Master b shares the database and serves w2; then a dies without a word.
    let b =
        Harness::served(db.store().await, &config("b", &repo, (0, 0, 0)), cascade_master::clock::Clock::System).await;
    let _w2 =
        BuildbotWorker::start_kind(Kind::Cascade, dir.path(), b.served.addresses.msgpack.port(), "w2", "pw-one").await;
    a.kill().await;

    let rebuilt = wait_for("b to build a's work again", Duration::from_secs(60), || async {
        let builds = store.list_builds(&ListQuery::default()).await.ok()?.items;
        builds.into_iter().find(|b| b.buildid != first.buildid && b.complete)
    })
    .await;
    assert_eq!(rebuilt.results, Some(0), "{}", rebuilt.state_string);
    assert_eq!(rebuilt.masterid, b.master.master_id());
    let dead = store.get_build(first.buildid).await.expect("get").expect("first build");
    assert_eq!(dead.results, Some(5), "a's build ended as RETRY: {}", dead.state_string);
    let masters = store.list_masters().await.expect("masters");
    let active: Vec<(&str, bool)> = masters.iter().map(|m| (m.name.as_str(), m.active)).collect();
    assert_eq!(active, [("a", false), ("b", true)]);
    b.stop().await;
    store.close().await;
    db.finish().await;
}

/// Through master `a`'s API, a JSON-RPC call with an admin's token.
async fn call(http: &reqwest::Client, base: &str, path: &str, token: &str, method: &str) -> reqwest::StatusCode {
    let body = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": {} });
    let answer = http.post(format!("{base}/api/v2/{path}")).bearer_auth(token).json(&body).send().await.expect("call");
    answer.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_and_live_events_reach_the_master_a_build_and_a_worker_are_on() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let admin = "\n[auth]\nadmins = [\"root\"]\n";
    let clock = cascade_master::clock::Clock::System;
    let a = Harness::served(db.store().await, &(config("a", &repo, (0, 0, 0)) + admin), clock.clone()).await;
    let b = Harness::served(db.store().await, &(config("b", &repo, (0, 0, 0)) + admin), clock).await;
    // w1 (whose build sleeps) is on b only; everything below goes through a.
    let _w1 =
        BuildbotWorker::start_kind(Kind::Cascade, dir.path(), b.served.addresses.msgpack.port(), "w1", "pw-one").await;
    wait_for("w1 on b", Duration::from_secs(60), || async { b.master.workers.get("w1") }).await;
    let (token, hash) = cascade_master::auth::new_token();
    a.store.create_api_token("root", "test", &hash, 0).await.expect("token");
    cascade_master::outbound::install_crypto_provider();
    let http = reqwest::Client::new();
    let mut live = http.get(format!("{}/events", a.url())).send().await.expect("a's /events");

    crate::harness::push_over_http(&http, &a.url(), &sha).await;
    let build = wait_for("b's build to run", Duration::from_secs(60), || async {
        let builds = a.store.list_builds(&ListQuery::default()).await.ok()?.items;
        builds.into_iter().find(|x| !x.complete && x.masterid == b.master.master_id())
    })
    .await;
    // a's live stream shows the build b started.
    let mut seen = String::new();
    while !seen.contains("build_started") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), live.chunk()).await.expect("in time");
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("bytes").expect("a chunk")));
    }

    // a's workers page shows both masters, alive, and where w1 is.
    let page = http.get(format!("{}/workers", a.url())).send().await.expect("page").text().await.expect("text");
    assert!(page.contains("a <small>(this one)</small>") && page.contains("<td>b</td>"), "{page}");
    assert!(page.matches("● alive").count() == 2 && page.contains("connected to b"), "{page}");

    // Pause and unpause through a: b's connection obeys before a answers.
    let worker = a.store.list_workers(&ListQuery::default()).await.expect("workers").items;
    let w1 = worker.iter().find(|w| w.name == "w1").expect("w1").workerid;
    let paused =
        |h: &Harness| h.master.workers.get("w1").is_some_and(|w| w.paused.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(call(&http, &a.url(), &format!("workers/{w1}"), &token, "pause").await, 200);
    assert!(paused(&b), "b paused its connection");
    assert_eq!(call(&http, &a.url(), &format!("workers/{w1}"), &token, "unpause").await, 200);
    assert!(!paused(&b));

    // Stop through a: b stops the build.
    assert_eq!(call(&http, &a.url(), &format!("builds/{}", build.buildid), &token, "stop").await, 200);
    let stopped = wait_for("the build to end", Duration::from_secs(60), || async {
        a.store.get_build(build.buildid).await.ok().flatten().filter(|x| x.complete)
    })
    .await;
    assert_eq!(stopped.results, Some(6), "CANCELLED: {}", stopped.state_string);

    // Kill through a: b drops the connection (the worker then reconnects).
    let before = b.master.workers.get("w1").expect("connected");
    assert_eq!(call(&http, &a.url(), &format!("workers/{w1}"), &token, "kill").await, 200);
    assert!(before.conn.is_closed(), "b closed it before answering");

    // A master that does not answer: a stop through a says so.
    let b_id = b.master.master_id();
    b.served.stop().await.expect("b stops");
    let store = a.store.clone();
    buildset_on(&store, a.builder("unix main"), b_id).await;
    let orphan = store.list_builds(&ListQuery::default()).await.expect("builds").items;
    let orphan = orphan.into_iter().find(|x| !x.complete).expect("a build b claimed");
    assert_eq!(call(&http, &a.url(), &format!("builds/{}", orphan.buildid), &token, "stop").await, 503);
    a.stop().await;
    db.finish().await;
}

/// A build claimed by master `master` (which is not running).
async fn buildset_on(store: &cascade_store::Store, builder: i64, master: i64) {
    let bs = cascade_store::NewBuildset {
        reason: "test".into(),
        sourcestamp: cascade_store::NewSourceStamp {
            repository: "r".into(),
            branch: Some("main".into()),
            revision: Some("x".into()),
            project: String::new(),
            codebase: String::new(),
        },
        builder_ids: vec![builder],
        ..Default::default()
    };
    store.create_buildset(&bs, 1).await.expect("buildset");
    store.claim_build(builder, master, None, 2).await.expect("claim").expect("a build");
}

#[tokio::test]
async fn sqlite_refuses_a_second_master_on_its_file() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, _) = make_repo(dir.path());
    let a = Harness::with_config(&db, &config("a", &repo, (0, 0, 0))).await;
    let text = config("b", &repo, (0, 0, 0));
    let second = cascade_config::parse(&text, Path::new("b.toml")).expect("config");
    let secrets = second.resolve_secrets().expect("secrets");
    let refused =
        cascade_master::Master::start(second, secrets, db.store().await, cascade_master::clock::Clock::System).await;
    let Err(e) = refused else { panic!("a second master started on one SQLite file") };
    let said = e.to_string();
    assert!(said.contains("master \"a\" is running on this SQLite database") && said.contains("PostgreSQL"), "{said}");
    a.stop().await;
}

/// Three builders any of three workers may build; a quick step.
fn shared_config(name: &str, repo: &Path) -> String {
    let mut text = format!(
        r#"
[master]
name = "{name}"
heartbeat = "500ms"
master_expiry = "2s"
artifacts = "{artifacts}"
[github]
insecure_webhook = true
[[branch]]
name = "main"
[[factory]]
name = "f"
steps = [{{ git = {{ repo = "{repo}" }} }}, {{ name = "test", command = ["true"] }}]
[[scheduler]]
name = "main"
kind = "branch"
branch = "main"
tree_stable = "0s"
"#,
        repo = repo.display(),
        artifacts = repo.parent().map(|p| p.join(format!("artifacts-{name}"))).unwrap_or_default().display(),
    );
    for w in ["w1", "w2", "w3"] {
        text.push_str(&format!("[[worker]]\nname = \"{w}\"\npassword = \"pw-one\"\n"));
    }
    for b in ["one", "two", "three"] {
        text.push_str(&format!(
            "[[builder]]\nname = \"{b}\"\nworkers = [\"w1\", \"w2\", \"w3\"]\nfactory = \"f\"\nbranches = [\"main\"]\n"
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_build_each_request_of_a_push_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let clock = cascade_master::clock::Clock::System;
    let mut masters = Vec::new();
    for name in ["a", "b", "c"] {
        masters.push(Harness::served(db.store().await, &shared_config(name, &repo), clock.clone()).await);
    }
    // cascade-worker on a and b, a stock buildbot-worker over PB on c.
    let mut workers = Vec::new();
    for (m, (w, kind)) in masters.iter().zip([("w1", Kind::Cascade), ("w2", Kind::Cascade), ("w3", Kind::BuildbotPb)]) {
        let a = m.served.addresses;
        let port = if matches!(kind, Kind::BuildbotPb) { a.pb.port() } else { a.msgpack.port() };
        workers.push(BuildbotWorker::start_kind(kind, dir.path(), port, w, "pw-one").await);
    }
    for (m, w) in masters.iter().zip(["w1", "w2", "w3"]) {
        wait_for("the workers", Duration::from_secs(60), || async { m.master.workers.get(w) }).await;
    }
    crate::workers::push(&masters[1], &sha).await;
    let store = &masters[0].store;
    let builds = wait_for("three finished builds", Duration::from_secs(120), || async {
        let builds = store.list_builds(&ListQuery::default()).await.ok()?.items;
        (builds.len() >= 3 && builds.iter().all(|b| b.complete)).then_some(builds)
    })
    .await;
    let mut built: Vec<i64> = builds.iter().map(|b| b.builderid).collect();
    built.sort();
    built.dedup();
    assert_eq!((builds.len(), built.len()), (3, 3), "each builder once: {builds:?}");
    assert!(builds.iter().all(|b| b.results == Some(0)), "{builds:?}");
    let requests = store.list_buildrequests(&ListQuery::default()).await.expect("requests").items;
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.complete), "{requests:?}");
    for m in masters {
        m.stop().await;
    }
    db.finish().await;
}
