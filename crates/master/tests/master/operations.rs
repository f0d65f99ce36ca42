//! Operating a `cascade serve` process as an operator does: SIGHUP (and
//! `cascade reconfig`) reload its configuration, keeping connected workers
//! and refusing a broken file; SIGTERM stops it gracefully, and a second
//! SIGTERM at once.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{MasterProcess, free_port};
use crate::workers::{BuildbotWorker, Kind, make_repo, wait_for};

const LIMIT: Duration = Duration::from_secs(60);

struct Ports {
    http: u16,
    pb: u16,
    msgpack: u16,
}

/// One worker `w1`; `builders` all on it, each building `step`.
fn config(dir: &Path, ports: &Ports, builders: &[&str], step: &str) -> String {
    let mut text = format!(
        r#"
[master]
name = "ops"
http = "127.0.0.1:{http}"
pb = "127.0.0.1:{pb}"
msgpack = "127.0.0.1:{msgpack}"
database = "sqlite://{db}"
artifacts = "{artifacts}"
[github]
insecure_webhook = true
[auth]
admins = ["root"]
[[branch]]
name = "main"
[[worker]]
name = "w1"
password = "pw-one"
[[factory]]
name = "f"
steps = [{step}]
[[scheduler]]
name = "main"
kind = "branch"
branch = "main"
tree_stable = "0s"
"#,
        http = ports.http,
        pb = ports.pb,
        msgpack = ports.msgpack,
        db = dir.join("ops.sqlite").display(),
        artifacts = dir.join("artifacts").display(),
    );
    for name in builders {
        text.push_str(&format!(
            "[[builder]]\nname = \"{name}\"\nworkers = [\"w1\"]\nfactory = \"f\"\nbranches = [\"main\"]\n"
        ));
    }
    text
}

fn signal(master: &MasterProcess, name: &str) {
    let pid = master.0.id().expect("the master runs");
    let sent = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().expect("kill");
    assert!(sent.success(), "kill -{name}");
}

fn log_has(log: &Path, text: &str) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches(text).count()
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn get(&self, path: &str) -> Option<Value> {
        let answer = self.http.get(format!("{}/api/v2/{path}", self.base)).send().await.ok()?;
        answer.json().await.ok()
    }

    /// The builders some master serves, by name.
    async fn builders(&self) -> Vec<String> {
        let list = self.get("builders").await.unwrap_or_default();
        let rows = list["builders"].as_array().cloned().unwrap_or_default();
        let served = rows.iter().filter(|b| b["masterids"].as_array().is_some_and(|m| !m.is_empty()));
        let mut names: Vec<String> = served.filter_map(|b| b["name"].as_str().map(String::from)).collect();
        names.sort();
        names
    }

    async fn push(&self, sha: &str) {
        crate::harness::push_over_http(&self.http, &self.base, sha).await;
    }

    async fn health(&self) -> Option<String> {
        self.http.get(format!("{}/healthz", self.base)).send().await.ok()?.text().await.ok()
    }
}

/// The master running `file`, answering its API.
async fn started(dir: &Path, file: &Path, ports: &Ports) -> (MasterProcess, Api, std::path::PathBuf) {
    let log = dir.join("master.log");
    let url = format!("sqlite://{}", dir.join("ops.sqlite").display());
    let master = MasterProcess::start(file, &url, &log);
    cascade_master::outbound::install_crypto_provider();
    let api = Api { http: reqwest::Client::new(), base: format!("http://127.0.0.1:{}", ports.http) };
    wait_for("the master to answer", LIMIT, || async { api.health().await.filter(|h| h == "ok") }).await;
    (master, api, log)
}

fn cascade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cascade")).args(args).output().expect("cascade runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_reconfig_reload_the_configuration_and_keep_the_workers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_repo, sha) = make_repo(dir.path());
    let ports = Ports { http: free_port(), pb: free_port(), msgpack: free_port() };
    let file = dir.path().join("master.toml");
    let pass = r#"{ name = "check", command = ["true"] }"#;
    std::fs::write(&file, config(dir.path(), &ports, &["unix"], pass)).expect("config");
    let (mut master, api, log) = started(dir.path(), &file, &ports).await;
    // A stock buildbot-worker over PB: its builders are set by setBuilderList.
    let _w1 = BuildbotWorker::start_kind(Kind::BuildbotPb, dir.path(), ports.pb, "w1", "pw-one").await;
    wait_for("w1 to attach", LIMIT, || async { (log_has(&log, "worker attached over PB") == 1).then_some(()) }).await;

    // SIGHUP: `docs` replaces `unix`, and w1 builds it without reconnecting.
    std::fs::write(&file, config(dir.path(), &ports, &["docs"], pass)).expect("config");
    signal(&master, "HUP");
    wait_for("the reload", LIMIT, || async { (api.builders().await == ["docs main"]).then_some(()) }).await;
    api.push(&sha).await;
    let build = wait_for("a finished build", LIMIT, || async {
        let builds = api.get("builds").await?["builds"].as_array().cloned()?;
        builds.into_iter().find(|b| b["complete"] == true)
    })
    .await;
    assert_eq!(build["results"], 0, "{build}");
    let docs = api.get("builders/docs%20main").await.expect("docs")["builders"][0]["builderid"].clone();
    assert_eq!(build["builderid"], docs, "the new builder built it");
    let builds = api.get("builds").await.expect("builds")["builds"].as_array().map(Vec::len);
    assert_eq!(builds, Some(1), "nothing was built on the removed builder");
    assert_eq!(log_has(&log, "worker attached over PB"), 1, "the worker stayed connected");

    // `cascade reconfig` needs a token of someone allowed `reconfig`.
    let db = format!("sqlite://{}", dir.path().join("ops.sqlite").display());
    let made =
        cascade(&["token", "create", "--config", &file.display().to_string(), "--database", &db, "--user", "root"]);
    let token = String::from_utf8_lossy(&made.stdout).trim().to_string();
    assert!(made.status.success() && !token.is_empty(), "{made:?}");

    // A broken file: every error logged, the master keeps what it runs.
    std::fs::write(&file, config(dir.path(), &ports, &["docs"], pass) + "[[builder]]\nname = 7\n").expect("config");
    signal(&master, "HUP");
    wait_for("the refusal", LIMIT, || async { (log_has(&log, "reload refused") > 0).then_some(()) }).await;
    assert!(master.0.try_wait().expect("wait").is_none(), "the master still runs");
    assert_eq!(api.health().await.as_deref(), Some("ok"));
    assert_eq!(api.builders().await, ["docs main"]);

    // `cascade reconfig`: the same through the admin API, which answers
    // what changed, or every error.
    let reconfig = |token: &str| cascade(&["reconfig", "--url", &api.base, "--token", token]);
    let refused = reconfig(&token);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("builder[1].name"), "{refused:?}");
    std::fs::write(&file, config(dir.path(), &ports, &["docs", "unix"], pass)).expect("config");
    let applied = reconfig(&token);
    let said = String::from_utf8_lossy(&applied.stdout);
    assert!(applied.status.success(), "{applied:?}");
    assert!(said.contains("builders added: unix main"), "{said}");
    assert_eq!(api.builders().await, ["docs main", "unix main"]);
    let stranger = reconfig("not-a-token");
    assert!(!stranger.status.success(), "a reload needs a token");
    master.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_and_a_second_sigterm_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_repo, sha) = make_repo(dir.path());
    let ports = Ports { http: free_port(), pb: free_port(), msgpack: free_port() };
    let file = dir.path().join("master.toml");
    let wait = format!(
        r#"{{ name = "wait", command = ["sh", "-c", "while [ ! -f {}/GO ]; do sleep 0.1; done"] }}"#,
        dir.path().display()
    );
    std::fs::write(&file, config(dir.path(), &ports, &["unix"], &wait)).expect("config");
    let (mut master, api, log) = started(dir.path(), &file, &ports).await;
    let _w1 = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), ports.msgpack, "w1", "pw-one").await;
    wait_for("w1 to attach", LIMIT, || async { (log_has(&log, "worker attached") == 1).then_some(()) }).await;
    api.push(&sha).await;
    wait_for("a running build", LIMIT, || async {
        let builds = api.get("builds").await?["builds"].as_array().cloned()?;
        builds.into_iter().find(|b| b["complete"] == false && b["started_at"].is_number())
    })
    .await;

    signal(&master, "TERM");
    wait_for("the graceful stop", LIMIT, || async { api.health().await.filter(|h| h == "ok, stopping") }).await;
    let build = api.get("builds/1").await.expect("build")["builds"][0].clone();
    assert_eq!(build["complete"], false, "the build goes on: {build}");
    signal(&master, "TERM");
    let ended = tokio::time::timeout(LIMIT, master.0.wait()).await.expect("it stops at once").expect("status");
    assert!(ended.success(), "{ended:?}");

    let store = cascade_store::Store::connect(&format!("sqlite://{}", dir.path().join("ops.sqlite").display()))
        .await
        .expect("store");
    let build = store.get_build(1).await.expect("get").expect("build");
    assert_eq!(build.results, Some(5), "RETRY: {}", build.state_string);
    store.close().await;
}

#[test]
fn the_systemd_unit_reloads_with_sighup_and_outwaits_the_stop_grace() {
    let unit = include_str!("../../../../deploy/cascade.service");
    assert!(unit.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"), "systemctl reload sends SIGHUP");
    assert!(unit.contains("\nStateDirectory=cascade\n") && unit.contains("\nReadWritePaths=/var/lib/cascade\n"));
    let minutes: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec=")?.strip_suffix("min")?.parse().ok())
        .expect("TimeoutStopSec=<n>min");
    let minimal = "[github]\ninsecure_webhook = true\n[[branch]]\nname = \"main\"\n";
    let defaults = cascade_config::parse(minimal, Path::new("t.toml")).expect("config");
    assert!(minutes * 60 > defaults.master.stop_grace.as_secs(), "systemd waits longer than a graceful stop");
    // systemd's own reading of the unit, where systemd is installed.
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if analyze.exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cascade.service");
        std::fs::write(&file, unit.replace("/usr/local/bin/cascade", "/bin/true")).expect("unit");
        let checked = Command::new(analyze).arg("verify").arg(&file).output().expect("systemd-analyze");
        let said = String::from_utf8_lossy(&checked.stderr);
        assert!(checked.status.success() && !said.contains("Unknown"), "{said}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_sqlite_master_started_twice_refuses_the_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = Ports { http: free_port(), pb: free_port(), msgpack: free_port() };
    let file = dir.path().join("master.toml");
    std::fs::write(&file, config(dir.path(), &ports, &["unix"], r#"{ name = "check", command = ["true"] }"#))
        .expect("config");
    let (mut master, api, _) = started(dir.path(), &file, &ports).await;
    // systemd's and a hand-started one: the same file, the same name.
    let second = cascade(&["serve", "--config", &file.display().to_string()]);
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("another cascade process serves this SQLite database"), "{said}");
    assert_eq!(api.health().await.as_deref(), Some("ok"), "the first one goes on");
    master.kill().await;
}
