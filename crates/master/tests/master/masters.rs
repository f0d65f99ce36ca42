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
    wait_for("master a to answer", Duration::from_secs(60), || async {
        http.get(format!("{base}/healthz")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await;
    let _w1 = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), ports.1, "w1", "pw-one").await;

    let pushed = http
        .post(format!("{base}/change_hook/github"))
        .header("x-github-event", "push")
        .json(&crate::harness::push_of(&sha))
        .send()
        .await
        .expect("push");
    assert!(pushed.status().is_success(), "{}", pushed.status());
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
