//! Builds on real workers: unmodified `buildbot-worker`s from PyPI
//! (installed by `tests/support/buildbot-worker.sh`, which `.ci/run` runs):
//! 4.3.0 speaking `msgpack_experimental_v7`, 4.3.0 with its default protocol
//! (Perspective Broker) and the newest 3.x over PB with `keepalive = 60` as
//! CPython's owners set it; and this project's `cascade-worker`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_store::{ListQuery, StepRecord};
use cascade_testkit::test_both;
use serde_json::json;

use crate::harness::{Harness, MasterProcess, free_port};

/// The newest 3.x release of buildbot-worker.
pub const BUILDBOT_WORKER_3: &str = "3.11.9";

/// A buildbot-worker executable: `CASCADE_BUILDBOT_WORKER` (4.3.0) or
/// `CASCADE_BUILDBOT_WORKER_3`, or the one the support script installs (it
/// is run here if needed).
fn buildbot_worker(version: &str) -> PathBuf {
    let var = if version == BUILDBOT_WORKER_3 { "CASCADE_BUILDBOT_WORKER_3" } else { "CASCADE_BUILDBOT_WORKER" };
    if let Ok(p) = std::env::var(var) {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/buildbot-worker.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("BUILDBOT_WORKER_VERSION", version)
        .output()
        .expect("run buildbot-worker.sh");
    assert!(out.status.success(), "installing buildbot-worker failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ann")
        .env("GIT_AUTHOR_EMAIL", "ann@example.org")
        .env("GIT_COMMITTER_NAME", "Ann")
        .env("GIT_COMMITTER_EMAIL", "ann@example.org")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A local repository with one commit on `main`; returns (path, sha).
pub fn make_repo(root: &Path) -> (PathBuf, String) {
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "the demo project\n").expect("write");
    git(&repo, &["add", "README"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    (repo, sha)
}

/// Which worker program a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An unmodified buildbot-worker 4.3.0 from PyPI, `--protocol msgpack_experimental_v7`.
    Buildbot,
    /// buildbot-worker 4.3.0 with its default protocol, Perspective Broker.
    BuildbotPb,
    /// The newest buildbot-worker 3.x over PB, with `keepalive = 60`.
    Buildbot3Pb,
    /// This project's `cascade-worker` binary.
    Cascade,
}

impl Kind {
    pub fn is_pb(self) -> bool {
        matches!(self, Kind::BuildbotPb | Kind::Buildbot3Pb)
    }

    /// What the worker reports as its version.
    pub fn version(self) -> String {
        match self {
            Kind::Buildbot | Kind::BuildbotPb => "4.3.0".into(),
            Kind::Buildbot3Pb => BUILDBOT_WORKER_3.into(),
            Kind::Cascade => format!("cascade-worker {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// `cascade-worker`, built next to this test binary by `cargo build --workspace`
/// (`.ci/run` does that before `cargo test`).
fn cascade_worker() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("cascade-worker");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before the tests (as .ci/run does)",
        path.display()
    );
    path
}

/// A running worker process, killed (with its process group) on drop.
pub struct BuildbotWorker {
    child: tokio::process::Child,
    pub basedir: PathBuf,
    log_path: PathBuf,
}

impl BuildbotWorker {
    pub async fn start(dir: &Path, port: u16, name: &str, password: &str) -> BuildbotWorker {
        BuildbotWorker::start_kind(Kind::Buildbot, dir, port, name, password).await
    }

    pub async fn start_kind(kind: Kind, dir: &Path, port: u16, name: &str, password: &str) -> BuildbotWorker {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let basedir = dir.join(format!("worker-{name}-{n}"));
        std::fs::create_dir_all(&basedir).expect("basedir");
        let log = std::fs::File::create(dir.join(format!("worker-{name}-{n}.log"))).expect("log file");
        let mut cmd = match kind {
            Kind::Buildbot | Kind::BuildbotPb | Kind::Buildbot3Pb => {
                let exe = buildbot_worker(if kind == Kind::Buildbot3Pb { BUILDBOT_WORKER_3 } else { "4.3.0" });
                let protocol: &[&str] = match kind {
                    Kind::Buildbot => &["--protocol", "msgpack_experimental_v7"],
                    // No flag: PB is the default. CPython's owners use keepalive 60.
                    Kind::Buildbot3Pb => &["--keepalive", "60"],
                    _ => &[],
                };
                let created = std::process::Command::new(&exe)
                    .args(["create-worker", "-q", "-f", "--maxdelay", "2", "--allow-shutdown", "signal"])
                    .args(protocol)
                    .arg(&basedir)
                    .arg(format!("127.0.0.1:{port}"))
                    .args([name, password])
                    .output()
                    .expect("create-worker");
                assert!(created.status.success(), "create-worker: {}", String::from_utf8_lossy(&created.stderr));
                let mut cmd = tokio::process::Command::new(exe.parent().expect("bin dir").join("twistd"));
                cmd.args(["--nodaemon", "--no_save", "--pidfile=", "-y", "buildbot.tac"]).current_dir(&basedir);
                cmd
            }
            Kind::Cascade => {
                // What `buildbot-worker create-worker` writes for the stock worker.
                std::fs::create_dir_all(basedir.join("info")).expect("info dir");
                std::fs::write(basedir.join("info/admin"), "Ann <ann@example.org>\n").expect("admin");
                std::fs::write(basedir.join("info/host"), "a test box\n").expect("host");
                let pw = dir.join(format!("password-{n}"));
                std::fs::write(&pw, format!("{password}\n")).expect("password file");
                let mut cmd = tokio::process::Command::new(cascade_worker());
                cmd.arg("--master")
                    .arg(format!("127.0.0.1:{port}"))
                    .args(["--name", name, "--max-delay", "2s", "--password-file"])
                    .arg(&pw)
                    .arg("--basedir")
                    .arg(&basedir);
                cmd
            }
        };
        let child = cmd
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("LANG", "C.UTF-8")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::from(log.try_clone().expect("dup")))
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("the worker starts");
        BuildbotWorker { child, basedir, log_path: dir.join(format!("worker-{name}-{n}.log")) }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> i32 {
        self.child.id().map(|p| p as i32).unwrap_or(0)
    }

    /// SIGKILL to the worker and everything it runs.
    pub async fn kill(&mut self) {
        let pid = self.pid();
        if pid > 0 {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        }
        let _ = self.child.wait().await;
    }

    /// What the worker logged (twistd's log for buildbot-worker, stderr for ours).
    pub fn log(&self) -> String {
        let twistd = std::fs::read_to_string(self.basedir.join("twistd.log")).unwrap_or_default();
        twistd + &std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for BuildbotWorker {
    fn drop(&mut self) {
        let pid = self.pid();
        if pid > 0 {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        }
    }
}

/// The served master's worker ports.
pub struct Running {
    /// msgpack (WebSocket) port.
    pub port: u16,
    /// Perspective Broker port.
    pub pb_port: u16,
}

impl Running {
    /// The port a worker of that kind connects to.
    pub fn port_for(&self, kind: Kind) -> u16 {
        if kind.is_pb() { self.pb_port } else { self.port }
    }
}

/// Where the harness's master (served through `server::serve`) takes workers.
pub async fn run_master(h: &Harness) -> Running {
    let a = h.served.addresses;
    Running { port: a.msgpack.port(), pb_port: a.pb.port() }
}

/// Waits for `check` to return `Some`, polling the store; fails after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn config(repo: &Path, steps: &str) -> String {
    format!(
        r#"
[master]
name = "worker-test"
artifacts = "{artifacts}"
[github]
insecure_webhook = true
[[branch]]
name = "main"
[[worker]]
name = "w1"
password = "pw-one"
properties = {{ flavour = "vanilla" }}
[[factory]]
name = "f"
steps = [
  {{ git = {{ repo = "{repo}", mode = "full", method = "fresh" }} }},
  {steps}
]
[[builder]]
name = "unix"
workers = ["w1"]
factory = "f"
branches = ["main"]
[[scheduler]]
name = "main"
kind = "branch"
branch = "main"
[[user]]
name = "ann"
roles = ["core-dev"]
[auth]
rules = {{ stop = ["core-dev"] }}
"#,
        repo = repo.display(),
        artifacts = repo.parent().map(|p| p.join("artifacts")).unwrap_or_default().display(),
    )
}

pub async fn push(h: &Harness, sha: &str) {
    let body = serde_json::to_vec(&crate::harness::push_of(sha)).expect("json");
    let req = axum::http::Request::post("/change_hook/github")
        .header("x-github-event", "push")
        .body(axum::body::Body::from(body))
        .expect("request");
    let (status, answer) = h.send_json(req).await;
    assert_eq!(status, axum::http::StatusCode::OK, "{answer}");
}

pub async fn finished_build(h: &Harness, limit: Duration) -> cascade_store::records::BuildRecord {
    wait_for("a finished build", limit, || async {
        for id in 1..50 {
            if let Ok(Some(b)) = h.store.get_build(id).await
                && b.complete
                && b.results != Some(5)
            {
                return Some(b);
            }
        }
        None
    })
    .await
}

pub async fn log_of(h: &Harness, step: &StepRecord) -> Vec<String> {
    let logs = h.store.list_logs(step.stepid).await.expect("logs");
    h.store.log_lines(logs[0].logid, 0, logs[0].num_lines - 1).await.expect("lines")
}

async fn a_pushed_build_runs(db: &cascade_testkit::TestDb, kind: Kind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let steps = r#"
  { name = "pass", command = ["sh", "-c", "echo hello from %(prop:workername)s %(prop:flavour)s; cat README"] },
  { name = "make report", command = ["sh", "-c", "head -c 300000 /dev/urandom > report.bin; echo report for build %(prop:buildnumber)s > report.txt"] },
  { name = "upload report", upload = { src = "report.txt", dest = "reports/build-%(prop:buildnumber)s.txt" } },
  { name = "upload binary", upload = { src = "report.bin", dest = "report.bin" } },
  { name = "make site", command = ["sh", "-c", "mkdir -p site/css && echo '<h1>hi</h1>' > site/index.html && echo 'h1{}' > site/css/a.css"] },
  { name = "upload site", upload = { src = "site", dest = "site", directory = true } },
  { name = "upload missing", upload = { src = "nope.txt", dest = "nope.txt" } },
  { name = "fetch tool", download = { src = "SRC_TOOL", dest = "tools/tool.sh", mode = 0o755 } },
  { name = "run tool", command = ["sh", "-c", "./tools/tool.sh && cmp -s tools/tool.sh ../../tool-copy && echo same"] },
  { name = "fail", command = "echo bad news >&2; exit 3" },
  { name = "halt", command = ["false"], halt_on_failure = true },
  { name = "skipped", command = ["echo", "never"] },
  { name = "cleanup", command = ["echo", "cleaned"], always_run = true },"#;
    // A 200 kB script (mostly a comment of pseudo-random letters) for the download step.
    let tool = dir.path().join("tool.sh");
    let mut script = b"#!/bin/sh\necho the tool ran\nexit 0\n#".to_vec();
    script.extend((0..200_000u32).map(|i| b'a' + ((i.wrapping_mul(2_654_435_761) >> 27) % 26) as u8));
    std::fs::write(&tool, &script).expect("tool");
    let steps = steps.replace("SRC_TOOL", &tool.display().to_string());
    let h = Harness::with_config(db, &config(&repo, &steps)).await;
    let running = run_master(&h).await;
    let worker = BuildbotWorker::start_kind(kind, dir.path(), running.port_for(kind), "w1", "pw-one").await;
    std::fs::write(worker.basedir.join("tool-copy"), &script).expect("reference copy");
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    // Info and connection are written together but listed by two statements:
    // wait until one listing shows both.
    let listed = wait_for("the store to record the connection", Duration::from_secs(10), || async {
        let listed = h.store.list_workers(&ListQuery::default()).await.ok()?;
        let w = &listed.items[0];
        (w.connected_to.len() == 1 && w.workerinfo.get("basedir").is_some()).then_some(listed)
    })
    .await;
    let info = &listed.items[0].workerinfo;
    assert_eq!(info["basedir"], worker.basedir.display().to_string(), "{info}");
    assert_eq!(info["version"], kind.version().as_str());
    assert!(info.get("environ").is_none(), "the worker's environment is never stored");
    assert!(info["admin"].as_str().is_some_and(|a| !a.is_empty()), "info/admin is reported: {info}");
    assert!(info["host"].as_str().is_some_and(|a| !a.is_empty()), "info/host is reported: {info}");
    if kind == Kind::Cascade {
        assert_eq!(info["admin"], "Ann <ann@example.org>\n");
        assert_eq!(info["host"], "a test box\n");
    }

    let mut live = h.master.bus.subscribe_lines();
    push(&h, &sha).await;
    let build = finished_build(&h, Duration::from_secs(60)).await;
    assert_eq!(build.results, Some(2), "FAILURE: {}", build.state_string);
    let steps = h.store.list_steps(build.buildid).await.expect("steps");
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "git",
            "pass",
            "make report",
            "upload report",
            "upload binary",
            "make site",
            "upload site",
            "upload missing",
            "fetch tool",
            "run tool",
            "fail",
            "halt",
            "cleanup"
        ],
        "halted before `skipped`, `cleanup` always runs"
    );
    let results: Vec<Option<i64>> = steps.iter().map(|s| s.results).collect();
    assert_eq!(
        results,
        vec![
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(2),
            Some(0),
            Some(0),
            Some(2),
            Some(2),
            Some(0)
        ]
    );
    // The download arrived whole (Buildbot 4.3's master sends nothing here) and executable.
    let fetched = worker.basedir.join("unix_main/build/tools/tool.sh");
    assert!(std::fs::read(&fetched).expect("downloaded") == script, "the download is byte for byte");
    let run_tool = log_of(&h, &steps[9]).await;
    assert!(run_tool.contains(&"othe tool ran".to_string()) && run_tool.contains(&"osame".to_string()), "{run_tool:?}");
    // Uploads land in <artifacts>/<builder>/<number>/<dest>, byte for byte.
    let artifacts = dir.path().join("artifacts/unix_main").join(build.number.to_string());
    let report =
        std::fs::read_to_string(artifacts.join(format!("reports/build-{}.txt", build.number))).expect("the report");
    assert_eq!(report, format!("report for build {}\n", build.number));
    let sent = std::fs::read(worker.basedir.join("unix_main/build/report.bin")).expect("worker copy");
    let got = std::fs::read(artifacts.join("report.bin")).expect("uploaded copy");
    assert_eq!(got.len(), 300_000);
    assert!(got == sent, "the binary upload is identical");
    assert!(!artifacts.join("nope.txt").exists(), "a failed upload leaves no file");
    // The build page links the artifacts, which download as they were.
    let page = format!("/builders/{}/builds/{}", build.builderid, build.number);
    let (status, html) = h.send(axum::http::Request::get(&page).body(axum::body::Body::empty()).expect("req")).await;
    assert_eq!(status, axum::http::StatusCode::OK);
    let link = format!("{page}/artifacts/reports/build-{}.txt", build.number);
    assert!(String::from_utf8_lossy(&html).contains(&link), "the build page links the report");
    let (status, body) = h.send(axum::http::Request::get(&link).body(axum::body::Body::empty()).expect("req")).await;
    assert_eq!((status, body), (axum::http::StatusCode::OK, report.clone().into_bytes()));
    for bad in ["%2E%2E/%2E%2E/etc/passwd", "..%2F..%2Fetc%2Fpasswd", "nope.txt"] {
        let req =
            axum::http::Request::get(format!("{page}/artifacts/{bad}")).body(axum::body::Body::empty()).expect("req");
        assert_eq!(h.send(req).await.0, axum::http::StatusCode::NOT_FOUND, "{bad}");
    }
    // A directory upload unpacks the whole tree.
    assert_eq!(std::fs::read_to_string(artifacts.join("site/index.html")).expect("index"), "<h1>hi</h1>\n");
    assert_eq!(std::fs::read_to_string(artifacts.join("site/css/a.css")).expect("css"), "h1{}\n");

    let pass = log_of(&h, &steps[1]).await;
    assert!(pass.contains(&"ohello from w1 vanilla".to_string()), "{pass:?}");
    // Live subscribers saw the same lines, in order, as they were stored.
    let pass_log = h.store.list_logs(steps[1].stepid).await.expect("logs")[0].logid;
    let mut seen: Vec<String> = Vec::new();
    while let Ok(envelope) = live.try_recv() {
        if let cascade_model::Event::LogLines { log_id, first_line, lines } = &envelope.event
            && *log_id == pass_log
        {
            assert_eq!(*first_line, seen.len() as i64);
            seen.extend(lines.iter().cloned());
        }
    }
    assert_eq!(seen, pass);
    assert!(pass.contains(&"othe demo project".to_string()), "the checkout is there: {pass:?}");
    let fail = log_of(&h, &steps[10]).await;
    assert!(fail.contains(&"ebad news".to_string()), "{fail:?}");
    assert!(fail.contains(&"hprogram finished with exit code 3".to_string()), "{fail:?}");
    let props = h.store.build_properties(build.buildid).await.expect("props");
    let got = props.iter().find(|(n, _, _)| n == "got_revision").map(|(_, v, _)| v.clone());
    assert_eq!(got, Some(json!(sha)));
    let requests = h.store.list_buildrequests(&ListQuery::default()).await.expect("requests");
    assert!(requests.items.iter().all(|r| r.complete && r.results == 2));
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_checkout_halts_the_build_and_only_clean_up_runs() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let steps = r#"
  { name = "compile", command = ["sh", "-c", "echo compiled"] },
  { name = "cleanup", command = ["echo", "cleaned"], always_run = true },"#;
    // The git step's repository does not exist: the checkout fails.
    let text =
        config(&repo, steps).replace(&repo.display().to_string(), &dir.path().join("gone").display().to_string());
    let h = Harness::with_config(&db, &text).await;
    let running = run_master(&h).await;
    let _worker =
        BuildbotWorker::start_kind(Kind::Cascade, dir.path(), running.port_for(Kind::Cascade), "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    push(&h, &sha).await;
    let build = finished_build(&h, Duration::from_secs(60)).await;
    assert_eq!(build.results, Some(2), "FAILURE: {}", build.state_string);
    let steps = h.store.list_steps(build.buildid).await.expect("steps");
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["git", "cleanup"], "nothing builds the previous tree");
    h.stop().await;
    db.finish().await;
}

test_both!(a_pushed_build_runs_on_buildbot_worker, |db| { a_pushed_build_runs(db, Kind::Buildbot).await });
test_both!(a_pushed_build_runs_on_cascade_worker, |db| { a_pushed_build_runs(db, Kind::Cascade).await });
test_both!(a_pushed_build_runs_on_buildbot_worker_pb, |db| { a_pushed_build_runs(db, Kind::BuildbotPb).await });
test_both!(a_pushed_build_runs_on_buildbot_worker_3_pb, |db| { a_pushed_build_runs(db, Kind::Buildbot3Pb).await });

async fn timeouts_stop_and_long_logs(db: &cascade_testkit::TestDb, kind: Kind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let steps = r#"
  { name = "lines", command = ["seq", "1", "200000"] },
  { name = "silent", command = ["sleep", "30"], timeout = "2s" },
  { name = "chatty", command = ["sh", "-c", "while true; do echo tick; sleep 0.2; done"], max_time = "2s" },
  { name = "long", command = ["sleep", "60"] },
  { name = "cleanup", command = ["echo", "cleaned"], always_run = true },"#;
    let h = Harness::with_config(db, &config(&repo, steps)).await;
    let running = run_master(&h).await;
    let _worker = BuildbotWorker::start_kind(kind, dir.path(), running.port_for(kind), "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    push(&h, &sha).await;

    // Stop the build while `long` runs.
    let (build_id, _) = wait_for("the `long` step to start", Duration::from_secs(60), || async {
        let build = h.store.get_build(1).await.ok().flatten()?;
        let steps = h.store.list_steps(build.buildid).await.ok()?;
        steps.iter().find(|s| s.name == "long" && !s.complete).map(|s| (build.buildid, s.stepid))
    })
    .await;
    // Stopped through the API, as a script or the stop button would.
    let call = |token: Option<&str>| {
        let mut req =
            axum::http::Request::post(format!("/api/v2/builds/{build_id}")).header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.body(axum::body::Body::from(r#"{"jsonrpc":"2.0","method":"stop","id":7,"params":{"reason":"enough"}}"#))
            .expect("request")
    };
    let (status, _) = h.send_json(call(None)).await;
    assert_eq!(status, axum::http::StatusCode::UNAUTHORIZED);
    let (token, hash) = cascade_master::auth::new_token();
    h.store.create_api_token("ann", "test", &hash, 0).await.expect("token");
    let (status, answer) = h.send_json(call(Some(&token))).await;
    assert_eq!(status, axum::http::StatusCode::OK, "{answer}");
    assert_eq!(answer["id"], 7);
    let build = finished_build(&h, Duration::from_secs(30)).await;
    assert_eq!(build.results, Some(6), "CANCELLED: {}", build.state_string);
    let steps = h.store.list_steps(build.buildid).await.expect("steps");
    let by_name = |n: &str| steps.iter().find(|s| s.name == n).cloned().unwrap_or_else(|| panic!("step {n}"));

    // 200,000 lines, line for line.
    let lines = log_of(&h, &by_name("lines")).await;
    let out: Vec<&String> = lines.iter().filter(|l| l.starts_with('o')).collect();
    assert_eq!(out.len(), 200_000);
    assert!(out.iter().enumerate().all(|(i, l)| **l == format!("o{}", i + 1)), "every line, in order");

    let silent = by_name("silent");
    assert_eq!(silent.results, Some(2));
    assert!(silent.state_string.contains("timed out"), "{}", silent.state_string);
    let chatty = by_name("chatty");
    assert_eq!(chatty.results, Some(2));
    assert!(chatty.state_string.contains("timed out"), "{}", chatty.state_string);
    assert!(log_of(&h, &chatty).await.iter().any(|l| l == "otick"));
    assert_eq!(by_name("long").results, Some(6), "the interrupted step is CANCELLED");
    assert_eq!(by_name("cleanup").results, Some(0), "always_run steps run after a stop");
}

test_both!(timeouts_stop_and_long_logs_on_buildbot_worker, |db| {
    timeouts_stop_and_long_logs(db, Kind::Buildbot).await;
});
test_both!(timeouts_stop_and_long_logs_on_cascade_worker, |db| {
    timeouts_stop_and_long_logs(db, Kind::Cascade).await;
});
test_both!(timeouts_stop_and_long_logs_on_buildbot_worker_pb, |db| {
    timeouts_stop_and_long_logs(db, Kind::BuildbotPb).await;
});
test_both!(timeouts_stop_and_long_logs_on_buildbot_worker_3_pb, |db| {
    timeouts_stop_and_long_logs(db, Kind::Buildbot3Pb).await;
});

async fn a_killed_worker_gives_retry_then_runs_again(db: &cascade_testkit::TestDb, kind: Kind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let marker = dir.path().join("second-run");
    let steps = format!(
        r#"  {{ name = "flaky", command = ["sh", "-c", "if [ -f {m} ]; then echo second run; exit 0; fi; touch {m}; echo first run; sleep 60"] }},"#,
        m = marker.display()
    );
    let h = Harness::with_config(db, &config(&repo, &steps)).await;
    let running = run_master(&h).await;
    let mut worker = BuildbotWorker::start_kind(kind, dir.path(), running.port_for(kind), "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    push(&h, &sha).await;
    wait_for("the first run to start sleeping", Duration::from_secs(60), || async { marker.exists().then_some(()) })
        .await;
    worker.kill().await;

    let retried = wait_for("the build to end as RETRY", Duration::from_secs(30), || async {
        let b = h.store.get_build(1).await.ok().flatten()?;
        (b.complete).then_some(b)
    })
    .await;
    assert_eq!(retried.results, Some(5), "RETRY");
    // The connection's end and the build's end race; both come.
    wait_for("the registry to forget the worker", Duration::from_secs(10), || async {
        h.master.workers.get("w1").is_none().then_some(())
    })
    .await;
    let pending = h.store.list_buildrequests(&ListQuery::default().eq("complete", "false")).await.expect("requests");
    assert_eq!(pending.total, 1, "the request waits again");

    let _back = BuildbotWorker::start_kind(kind, dir.path(), running.port_for(kind), "w1", "pw-one").await;
    let build = finished_build(&h, Duration::from_secs(60)).await;
    assert_eq!(build.number, 2);
    assert_eq!(build.results, Some(0));
    let steps = h.store.list_steps(build.buildid).await.expect("steps");
    assert!(log_of(&h, &steps[1]).await.contains(&"osecond run".to_string()));
}

test_both!(a_killed_worker_gives_retry_then_runs_again_on_buildbot_worker, |db| {
    a_killed_worker_gives_retry_then_runs_again(db, Kind::Buildbot).await;
});
test_both!(a_killed_worker_gives_retry_then_runs_again_on_cascade_worker, |db| {
    a_killed_worker_gives_retry_then_runs_again(db, Kind::Cascade).await;
});
test_both!(a_killed_worker_gives_retry_then_runs_again_on_buildbot_worker_pb, |db| {
    a_killed_worker_gives_retry_then_runs_again(db, Kind::BuildbotPb).await;
});
test_both!(a_killed_worker_gives_retry_then_runs_again_on_buildbot_worker_3_pb, |db| {
    a_killed_worker_gives_retry_then_runs_again(db, Kind::Buildbot3Pb).await;
});

async fn a_wrong_password_is_refused(db: &cascade_testkit::TestDb, kind: Kind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, _) = make_repo(dir.path());
    let h = Harness::with_config(db, &config(&repo, r#"{ name = "x", command = ["true"] },"#)).await;
    let running = run_master(&h).await;
    let mut worker =
        BuildbotWorker::start_kind(kind, dir.path(), running.port_for(kind), "w1", "not-the-password").await;
    // The worker keeps retrying: wait until it has been refused twice.
    wait_for("two refused attempts", Duration::from_secs(30), || async {
        let log = worker.log();
        let log = log.to_lowercase();
        (log.matches("401").count() >= 2 || log.matches("unauthorized").count() >= 2).then_some(())
    })
    .await;
    assert!(h.master.workers.get("w1").is_none());
    // Refused in a shape it retries after: the process is still there.
    assert!(worker.is_running(), "the worker keeps retrying: {}", worker.log());
    let listed = h.store.list_workers(&ListQuery::default()).await.expect("workers");
    assert!(listed.items[0].connected_to.is_empty());
    assert_eq!(listed.items[0].workerinfo, json!({}), "nothing about the worker was stored");
    drop(worker);
    // The right password for the same name still gets in.
    let good = BuildbotWorker::start_kind(kind, dir.path(), running.port_for(kind), "w1", "pw-one").await;
    wait_for("the right password to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    drop(good);
}

test_both!(a_wrong_password_is_refused_on_buildbot_worker, |db| {
    a_wrong_password_is_refused(db, Kind::Buildbot).await;
});
test_both!(a_wrong_password_is_refused_on_cascade_worker, |db| {
    a_wrong_password_is_refused(db, Kind::Cascade).await;
});
test_both!(a_wrong_password_is_refused_on_buildbot_worker_pb, |db| {
    a_wrong_password_is_refused(db, Kind::BuildbotPb).await;
});
test_both!(a_wrong_password_is_refused_on_buildbot_worker_3_pb, |db| {
    a_wrong_password_is_refused(db, Kind::Buildbot3Pb).await;
});

mod hostile {
    use super::*;
    use base64::Engine;
    use cascade_protocol::Frame;

    use futures_util::{SinkExt, StreamExt};
    use rmpv::Value;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

    async fn connect(port: u16, name: &str, password: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("ws://127.0.0.1:{port}/").into_client_request()?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
        req.headers_mut().insert("authorization", format!("Basic {token}").parse().expect("header"));
        Ok(tokio_tungstenite::connect_async(req).await?.0)
    }

    /// Answers the master's attach requests like a worker would.
    async fn answer_attach(ws: &mut Ws) {
        let mut answered = 0;
        while answered < 3 {
            let bytes = match ws.next().await {
                Some(Ok(Message::Binary(bytes))) => bytes,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("attach sequence: {other:?}"),
            };
            let Ok(Frame::Request { op, seq, .. }) = Frame::decode(&bytes) else { continue };
            let result = match op.as_str() {
                "get_worker_info" => Value::Map(vec![
                    (Value::from("basedir"), Value::from("/nonexistent")),
                    (Value::from("system"), Value::from("posix")),
                    (Value::from("version"), Value::from("hostile")),
                ]),
                _ => Value::Nil,
            };
            ws.send(Message::Binary(Frame::Response { seq, result: Ok(result) }.encode().into())).await.expect("send");
            answered += 1;
        }
    }

    async fn next_response(ws: &mut Ws) -> (i64, Result<Value, String>) {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    if let Ok(Frame::Response { seq, result }) = Frame::decode(&bytes) {
                        return (seq, result);
                    }
                }
                Some(Ok(_)) => continue,
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    /// Keeps answering the master's requests (as a live worker does) until dropped.
    fn keep_answering(mut ws: Ws) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Binary(bytes) = msg
                    && let Ok(Frame::Request { seq, .. }) = Frame::decode(&bytes)
                {
                    let reply = Frame::Response { seq, result: Ok(Value::Nil) };
                    if ws.send(Message::Binary(reply.encode().into())).await.is_err() {
                        return;
                    }
                }
            }
        })
    }

    test_both!(a_second_connection_under_a_live_name_is_refused, |db| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (repo, _) = make_repo(dir.path());
        let h = Harness::with_config(db, &config(&repo, r#"{ name = "x", command = ["true"] },"#)).await;
        let running = run_master(&h).await;
        let mut first = connect(running.port, "w1", "pw-one").await.expect("first");
        answer_attach(&mut first).await;
        let original = wait_for("w1 to attach", Duration::from_secs(10), || async { h.master.workers.get("w1") }).await;
        let first = keep_answering(first);

        // The first answers the master's ping, so the second is turned away.
        let mut second = connect(running.port, "w1", "pw-one").await.expect("upgrade");
        let mut answered = 0;
        while let Some(Ok(msg)) = second.next().await {
            if let Message::Binary(bytes) = msg
                && let Ok(Frame::Request { seq, op, .. }) = Frame::decode(&bytes)
            {
                let result = if op == "get_worker_info" { Value::Map(vec![]) } else { Value::Nil };
                let _ = second.send(Message::Binary(Frame::Response { seq, result: Ok(result) }.encode().into())).await;
                answered += 1;
            }
        }
        assert!(answered >= 1, "the attach sequence began");
        let still = h.master.workers.get("w1").expect("w1 still attached");
        assert!(Arc::ptr_eq(&still, &original), "the first connection kept its place");

        // Once the first is gone, a new connection takes the name.
        first.abort();
        let mut third = connect(running.port, "w1", "pw-one").await.expect("third");
        answer_attach(&mut third).await;
        let replaced = wait_for("the third to attach", Duration::from_secs(20), || async {
            h.master.workers.get("w1").filter(|w| !Arc::ptr_eq(w, &original))
        })
        .await;
        assert_eq!(replaced.name, "w1");
    });

    test_both!(argon2_hashed_worker_passwords, |db| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (repo, _) = make_repo(dir.path());
        let hash = cascade_master::password::hash("s3cret:with:colons").expect("hash");
        let text = config(&repo, r#"{ name = "x", command = ["true"] },"#)
            .replace("password = \"pw-one\"", &format!("password_hash = \"{hash}\""));
        let h = Harness::with_config(db, &text).await;
        let running = run_master(&h).await;
        assert!(connect(running.port, "w1", "s3cret").await.is_err(), "a wrong password is refused");
        assert!(connect(running.port, "nobody", "s3cret:with:colons").await.is_err(), "an unknown worker is refused");
        let mut ws = connect(running.port, "w1", "s3cret:with:colons").await.expect("the right password");
        answer_attach(&mut ws).await;
        wait_for("w1 to attach", Duration::from_secs(10), || async { h.master.workers.get("w1") }).await;
    });

    test_both!(a_silent_worker_is_dropped, |db| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (repo, _) = make_repo(dir.path());
        let text = config(&repo, r#"{ name = "x", command = ["true"] },"#).replace(
            "name = \"worker-test\"",
            "name = \"worker-test\"\nworker_ping = \"100ms\"\nworker_timeout = \"1s\"",
        );
        let h = Harness::with_config(db, &text).await;
        let running = run_master(&h).await;
        let mut ws = connect(running.port, "w1", "pw-one").await.expect("connects");
        answer_attach(&mut ws).await;
        wait_for("w1 to attach", Duration::from_secs(10), || async { h.master.workers.get("w1") }).await;
        // Stop reading: no pongs, no answers. The master must give up on it.
        wait_for("the silent worker to be dropped", Duration::from_secs(10), || async {
            h.master.workers.get("w1").is_none().then_some(())
        })
        .await;
        let listed = h.store.list_workers(&ListQuery::default()).await.expect("workers");
        assert!(listed.items[0].connected_to.is_empty());
        drop(ws);
    });

    test_both!(bad_input_from_a_worker_is_survived, |db| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (repo, sha) = make_repo(dir.path());
        let text = config(&repo, r#"{ name = "ok", command = ["echo", "fine"] },"#)
            .replace("workers = [\"w1\"]", "workers = [\"w2\"]")
            .replace("[[factory]]", "[[worker]]\nname = \"w2\"\npassword = \"pw-two\"\n\n[[factory]]");
        let h = Harness::with_config(db, &text).await;
        let running = run_master(&h).await;

        assert!(connect(running.port, "w1", "wrong").await.is_err(), "a wrong password gets no connection");
        let mut ws = connect(running.port, "w1", "pw-one").await.expect("connects");
        answer_attach(&mut ws).await;
        wait_for("w1 to attach", Duration::from_secs(10), || async { h.master.workers.get("w1") }).await;

        ws.send(Message::Binary(vec![0xc1, 0xff, 0x00].into())).await.expect("garbage");
        ws.send(Message::Binary(vec![0x93, 1, 2, 3].into())).await.expect("an array");
        ws.send(Message::Text("hello".into())).await.expect("text");
        let stray = Frame::Response { seq: 9999, result: Ok(Value::Nil) };
        ws.send(Message::Binary(stray.encode().into())).await.expect("stray response");
        let unknown = Frame::Request { op: "frobnicate".into(), seq: 1, fields: vec![] };
        ws.send(Message::Binary(unknown.encode().into())).await.expect("unknown op");
        assert_eq!(next_response(&mut ws).await, (1, Err("Command frobnicate does not exist.".into())));
        let orphan = Frame::Request {
            op: "update".into(),
            seq: 2,
            fields: vec![("command_id".into(), Value::from("no-such")), ("args".into(), Value::Array(vec![]))],
        };
        ws.send(Message::Binary(orphan.encode().into())).await.expect("orphan update");
        let (seq, result) = next_response(&mut ws).await;
        assert_eq!(seq, 2);
        assert!(result.is_err(), "an update for an unknown command is refused");
        // A 100 MB message: over the limit, so this connection is dropped.
        let _ = ws.send(Message::Binary(vec![b'x'; 100 << 20].into())).await;
        wait_for("the oversized connection to be dropped", Duration::from_secs(30), || async {
            h.master.workers.get("w1").is_none().then_some(())
        })
        .await;

        // Meanwhile everyone else is served: a stock worker builds.
        let _w2 = BuildbotWorker::start(dir.path(), running.port, "w2", "pw-two").await;
        wait_for("w2 to attach", Duration::from_secs(30), || async { h.master.workers.get("w2") }).await;
        push(&h, &sha).await;
        let build = finished_build(&h, Duration::from_secs(60)).await;
        assert_eq!(build.results, Some(0), "{}", build.state_string);
    });
}

async fn a_master_killed_mid_build_retries_it_after_restart(db: &cascade_testkit::TestDb, kind: Kind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let marker = dir.path().join("first-run");
    let (http, msgpack_port, pb_port) = (free_port(), free_port(), free_port());
    let steps = format!(
        r#"  {{ name = "slow", command = ["sh", "-c", "if [ -f {m} ]; then echo second run; exit 0; fi; touch {m}; sleep 60"] }},"#,
        m = marker.display()
    );
    let text = config(&repo, &steps).replace(
        "name = \"worker-test\"",
        &format!(
            "name = \"restart-test\"\nhttp = \"127.0.0.1:{http}\"\nmsgpack = \"127.0.0.1:{msgpack_port}\"\npb = \"127.0.0.1:{pb_port}\""
        ),
    );
    let config_path = dir.path().join("cascade.toml");
    std::fs::write(&config_path, &text).expect("config");
    let log = dir.path().join("master.log");
    let store = db.store().await;
    let mut master = MasterProcess::start(&config_path, &db.url, &log);
    let _worker =
        BuildbotWorker::start_kind(kind, dir.path(), if kind.is_pb() { pb_port } else { msgpack_port }, "w1", "pw-one")
            .await;
    wait_for("the worker to attach", Duration::from_secs(30), || async {
        let w = store.list_workers(&ListQuery::default()).await.ok()?;
        w.items.first().filter(|w| !w.connected_to.is_empty()).map(|_| ())
    })
    .await;

    // A change arrives as `cascade sendchange` would store it; the running
    // master's scheduler and distributor pick it up.
    let parsed = cascade_config::load(&config_path).expect("config");
    let change = cascade_master::sendchange::SendChange {
        who: "Ann <ann@example.org>".into(),
        branch: Some("main".into()),
        revision: Some(sha.clone()),
        comments: "slow change".into(),
        ..Default::default()
    };
    cascade_master::sendchange::send(&store, &parsed, change, cascade_master::clock::now()).await.expect("send");
    wait_for("the step to be running", Duration::from_secs(60), || async { marker.exists().then_some(()) }).await;

    master.kill().await;
    let mut master = MasterProcess::start(&config_path, &db.url, &log);
    let first = wait_for("the interrupted build to end as RETRY", Duration::from_secs(30), || async {
        store.get_build(1).await.ok().flatten().filter(|b| b.complete)
    })
    .await;
    assert_eq!(first.results, Some(5), "RETRY after the restart: {}", first.state_string);
    let second = wait_for("the build to run again and finish", Duration::from_secs(60), || async {
        store.get_build(2).await.ok().flatten().filter(|b| b.complete)
    })
    .await;
    assert_eq!(second.results, Some(0), "{}", second.state_string);
    let requests = store.list_buildrequests(&ListQuery::default()).await.expect("requests");
    assert_eq!(requests.total, 1);
    assert!(requests.items[0].complete && requests.items[0].results == 0, "the request was not lost");
    master.kill().await;
    store.close().await;
}

test_both!(a_master_killed_mid_build_retries_it_after_restart_on_buildbot_worker, |db| {
    a_master_killed_mid_build_retries_it_after_restart(db, Kind::Buildbot).await;
});
test_both!(a_master_killed_mid_build_retries_it_after_restart_on_cascade_worker, |db| {
    a_master_killed_mid_build_retries_it_after_restart(db, Kind::Cascade).await;
});
test_both!(a_master_killed_mid_build_retries_it_after_restart_on_buildbot_worker_pb, |db| {
    a_master_killed_mid_build_retries_it_after_restart(db, Kind::BuildbotPb).await;
});
test_both!(a_master_killed_mid_build_retries_it_after_restart_on_buildbot_worker_3_pb, |db| {
    a_master_killed_mid_build_retries_it_after_restart(db, Kind::Buildbot3Pb).await;
});

async fn step_options_and_git_modes(db: &cascade_testkit::TestDb, kind: Kind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let steps = r#"
  { name = "env and workdir", command = ["sh", "-c", "pwd; echo GREETING=$GREETING"], env = { GREETING = "hi %(prop:workername)s" }, workdir = "elsewhere" },
  { name = "decoded", command = ["sh", "-c", "exit 5"], decode_rc = { 0 = "success", 5 = "warnings" } },
  { name = "warned", command = ["sh", "-c", "echo 'Warning -- resource leak'"], warning_pattern = "^Warning -- " },
  { name = "soft failure", command = ["false"], flunk_on_failure = false, warn_on_failure = true },
  { name = "leftover", command = ["sh", "-c", "touch untracked.tmp"] },"#;
    // Three builders over the same repository, one per git method, on one worker.
    let mut text = config(&repo, steps);
    for (name, git) in [
        ("clobber", "{ repo = \"REPO\", mode = \"full\", method = \"clobber\" }"),
        ("copy", "{ repo = \"REPO\", mode = \"full\", method = \"copy\" }"),
        ("incremental", "{ repo = \"REPO\", mode = \"incremental\" }"),
    ] {
        text.push_str(&format!(
            "[[factory]]\nname = \"{name}\"\nsteps = [ {{ git = {git} }}, {{ name = \"list\", command = [\"sh\", \"-c\", \"ls -a | sort | tr '\\\\n' ' '; touch untracked.tmp\"] }} ]\n\
             [[builder]]\nname = \"{name}\"\nworkers = [\"w1\"]\nfactory = \"{name}\"\nbranches = [\"main\"]\n"
        ));
    }
    let text = text.replace("REPO", &repo.display().to_string()).replace(
        "[[worker]]\nname = \"w1\"\npassword = \"pw-one\"",
        "[[worker]]\nname = \"w1\"\npassword = \"pw-one\"\nmax_builds = 4",
    );
    let h = Harness::with_config(db, &text).await;
    let running = run_master(&h).await;
    let _worker = BuildbotWorker::start_kind(kind, dir.path(), running.port_for(kind), "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;

    // Two pushes, one after the other: the second build of each builder
    // shows what its git method keeps from the first.
    for round in 1..=2 {
        push(&h, &sha).await;
        wait_for("this round's builds", Duration::from_secs(90), || async {
            let done = h.store.list_buildrequests(&ListQuery::default().eq("complete", "true")).await.ok()?.total;
            (done >= 4 * round).then_some(())
        })
        .await;
    }
    let builds = h.store.recent_builds(20).await.expect("builds");
    let latest = |builder: &str| builds.iter().find(|(b, _)| b == builder).map(|(_, b)| b.clone()).expect("a build");

    let unix = latest("unix main");
    assert_eq!(unix.results, Some(1), "WARNINGS overall: {}", unix.state_string);
    let steps = h.store.list_steps(unix.buildid).await.expect("steps");
    let by = |n: &str| steps.iter().find(|s| s.name == n).cloned().unwrap_or_else(|| panic!("{n}"));
    let env_log = log_of(&h, &by("env and workdir")).await;
    assert!(env_log.contains(&"oGREETING=hi w1".to_string()), "{env_log:?}");
    assert!(env_log.iter().any(|l| l.starts_with('o') && l.ends_with("/unix_main/elsewhere")), "{env_log:?}");
    assert_eq!(by("decoded").results, Some(1), "exit 5 decodes to WARNINGS");
    assert_eq!(by("warned").results, Some(1), "a warning line makes WARNINGS");
    assert_eq!(by("soft failure").results, Some(2), "the step fails...");

    // What each git method left in the folder: the `list` step's output.
    let mut listing = std::collections::BTreeMap::new();
    for builder in ["clobber main", "copy main", "incremental main"] {
        let b = latest(builder);
        assert_eq!(b.results, Some(0), "{builder}: {}", b.state_string);
        let steps = h.store.list_steps(b.buildid).await.expect("steps");
        let line = log_of(&h, &steps[1]).await.into_iter().find(|l| l.starts_with("o. ")).unwrap_or_default();
        listing.insert(builder, line);
    }
    // clobber and copy start from a clean checkout; incremental keeps files.
    assert!(!listing["clobber main"].contains("untracked.tmp"), "{listing:?}");
    assert!(!listing["copy main"].contains("untracked.tmp"), "{listing:?}");
    assert!(listing["incremental main"].contains("untracked.tmp"), "{listing:?}");
    assert!(listing["copy main"].contains("README"), "{listing:?}");
}

test_both!(step_options_and_git_modes_on_buildbot_worker, |db| {
    step_options_and_git_modes(db, Kind::Buildbot).await;
});
test_both!(step_options_and_git_modes_on_cascade_worker, |db| { step_options_and_git_modes(db, Kind::Cascade).await });
test_both!(step_options_and_git_modes_on_buildbot_worker_pb, |db| {
    step_options_and_git_modes(db, Kind::BuildbotPb).await;
});
test_both!(step_options_and_git_modes_on_buildbot_worker_3_pb, |db| {
    step_options_and_git_modes(db, Kind::Buildbot3Pb).await;
});
