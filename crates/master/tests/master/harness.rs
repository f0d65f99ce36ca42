use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use cascade_master::clock::Clock;
use cascade_master::webhook::signature::sign_sha256;
use cascade_master::{Listeners, Master, Served};
use cascade_store::{ListQuery, Store};
use cascade_testkit::TestDb;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const SECRET: &str = "test-secret";

pub const CONFIG: &str = r#"
[master]
title = "Test <CI> & co"
name = "test-master"

[github]
webhook_secret = "test-secret"

[[branch]]
name = "3.x"
git = "master"

[[branch]]
name = "feature"
git = "feature-branch"

[[worker]]
name = "w1"
password = "pw"

[[factory]]
name = "f"
steps = [{ command = "make" }]

[[builder]]
name = "Linux"
workers = ["w1"]
factory = "f"
branches = ["3.x", "feature"]
tags = ["stable"]

[[builder]]
name = "Windows"
workers = ["w1"]
factory = "f"
branches = ["3.x"]

[[scheduler]]
name = "main"
kind = "branch"
branch = "3.x"
tree_stable = "30s"
ignore_files = ["Doc/**", "*.md"]

[[scheduler]]
name = "feature"
kind = "branch"
branch = "feature"
tree_stable = "60s"

[[scheduler]]
name = "force"
kind = "force"
"#;

/// A master served as `cascade serve` serves one (listeners on loopback
/// port 0, scheduler, distributor, event pump, heartbeat, janitor), and its
/// router for requests made in-process (they may claim any client address).
pub struct Harness {
    pub store: Store,
    pub master: Master,
    pub app: Router,
    pub served: Served,
}

pub fn fixture(rel: &str) -> Vec<u8> {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/github").join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

pub fn fixture_json(rel: &str) -> Value {
    serde_json::from_slice(&fixture(rel)).expect("fixture is JSON")
}

/// A delivery of a push of `sha` alone to `main`, shaped like the real one.
/// An unsigned push of `sha` to `main` over HTTP to the master at `base`
/// (for masters whose config has `insecure_webhook`); asserts it is taken.
pub async fn push_over_http(http: &reqwest::Client, base: &str, sha: &str) {
    let pushed = http
        .post(format!("{base}/change_hook/github"))
        .header("x-github-event", "push")
        .json(&push_of(sha))
        .send()
        .await
        .expect("push");
    assert!(pushed.status().is_success(), "{}", pushed.status());
}

pub fn push_of(sha: &str) -> Value {
    let mut payload = synthetic_push("main", 1, 1, &["README"]);
    payload["commits"][0]["id"] = serde_json::json!(sha);
    payload["head_commit"] = payload["commits"][0].clone();
    payload["after"] = serde_json::json!(sha);
    payload
}

/// A push of `commits` new commits to `branch`, shaped like the real
/// 5-commit fixture; ids are derived from `seed` so pushes differ.
pub fn synthetic_push(branch: &str, seed: u32, commits: usize, files: &[&str]) -> Value {
    let mut v = fixture_json("reallyfastci/webhook-push-to-master.json");
    let template = v["commits"][0].clone();
    let ids: Vec<String> = (0..commits).map(|i| format!("{:040x}", (seed as u128) << 32 | i as u128)).collect();
    let list: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut c = template.clone();
            c["id"] = Value::String(id.clone());
            c["message"] = Value::String(format!("push {seed} commit {i}"));
            c["added"] = Value::Array(vec![]);
            c["removed"] = Value::Array(vec![]);
            c["modified"] = files.iter().map(|f| Value::String(f.to_string())).collect();
            c
        })
        .collect();
    v["ref"] = Value::String(format!("refs/heads/{branch}"));
    v["after"] = Value::String(ids.last().cloned().unwrap_or_default());
    v["head_commit"] = list.last().cloned().unwrap_or(Value::Null);
    v["commits"] = Value::Array(list);
    v
}

impl Harness {
    pub async fn with_config(db: &TestDb, text: &str) -> Harness {
        let store = db.store().await;
        Harness::on_store(store, text).await
    }

    pub async fn on_store(store: Store, text: &str) -> Harness {
        Harness::served(store, text, Clock::System).await
    }

    /// A master whose clock stands still (at the real time it started):
    /// time moves only where a test says so, as in `schedulers.tick(now)`.
    pub async fn frozen(db: &TestDb, text: &str) -> Harness {
        Harness::served(db.store().await, text, Clock::manual(cascade_master::clock::now())).await
    }

    pub async fn served(store: Store, text: &str, clock: Clock) -> Harness {
        if std::env::var("RUST_LOG").is_ok() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let config = cascade_config::parse(text, Path::new("test.toml")).unwrap_or_else(|e| panic!("config:\n{e}"));
        let secrets = config.resolve_secrets().expect("secrets");
        let master = Master::start(config, secrets, store.clone(), clock).await.expect("start");
        let app = cascade_master::router(master.clone());
        let listeners = Listeners::loopback().await.expect("listeners");
        let served = cascade_master::server::spawn(master.clone(), listeners).expect("served");
        Harness { store, master, app, served }
    }

    /// The served master's pages and API, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.served.url()
    }

    /// Stops the master (as SIGTERM would) and closes its store.
    pub async fn stop(self) {
        self.served.stop().await.expect("a clean stop");
        self.store.close().await;
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Vec<u8>) {
        let resp = self.app.clone().oneshot(req).await.expect("router answers");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
        (status, body)
    }

    /// Status, headers and body.
    pub async fn app_response(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let resp = self.app.clone().oneshot(req).await.expect("router answers");
        let (parts, body) = resp.into_parts();
        (parts.status, parts.headers, body.collect().await.expect("body").to_bytes().to_vec())
    }

    pub async fn send_json(&self, req: Request<Body>) -> (StatusCode, Value) {
        let (status, body) = self.send(req).await;
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("not JSON ({status}): {}", String::from_utf8_lossy(&body)));
        (status, value)
    }

    /// A signed JSON delivery.
    pub async fn deliver(&self, event: &str, body: &[u8], delivery: &str) -> (StatusCode, Value) {
        let req = Request::post("/change_hook/github")
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-github-hook-id", "4242")
            .header("x-hub-signature-256", sign_sha256(SECRET.as_bytes(), body))
            .body(Body::from(body.to_vec()))
            .expect("request");
        self.send_json(req).await
    }

    pub async fn push(&self, payload: &Value, delivery: &str) -> Vec<i64> {
        let body = serde_json::to_vec(payload).expect("serialize");
        let (status, answer) = self.deliver("push", &body, delivery).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["changes"]
            .as_array()
            .unwrap_or_else(|| panic!("no changes in {answer}"))
            .iter()
            .map(|v| v.as_i64().expect("id"))
            .collect()
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send_json(Request::get(uri).body(Body::empty()).expect("request")).await
    }

    /// A snapshot of everything a webhook can write, to prove a refusal wrote nothing.
    pub async fn counts(&self) -> (i64, i64, i64, usize) {
        let all = ListQuery::default();
        (
            self.store.list_changes(&all).await.expect("changes").total,
            self.store.list_buildsets(&all).await.expect("buildsets").total,
            self.store.list_buildrequests(&all).await.expect("requests").total,
            self.store.waiting_changes().await.expect("waiting").len(),
        )
    }

    pub fn builder(&self, name: &str) -> i64 {
        self.master.catalog.builder_id(name).unwrap_or_else(|| panic!("no builder {name}"))
    }
}

/// A free loopback port (bound, then released for the process under test).
/// Asks for a build of `builder` and ends it with `results`, straight in
/// the store (as master `master`); returns its id.
pub async fn end_a_new_build(store: &Store, builder: i64, master: i64, results: cascade_model::Results) -> i64 {
    let now = cascade_master::clock::now();
    let bs = cascade_store::NewBuildset { reason: "test".into(), builder_ids: vec![builder], ..Default::default() };
    store.create_buildset(&bs, now).await.expect("buildset");
    let claimed = store.claim_build(builder, master, None, now).await.expect("claim").expect("a build");
    store.finish_build(claimed.build_id, results, results.name(), now).await.expect("finish");
    claimed.build_id
}

/// Runs `tests/support/<script>` with `args`; its output's lines (paths of
/// what it installed or made).
pub fn support(script: &str, args: &[&Path]) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support").join(script);
    let out = std::process::Command::new("bash").arg(&path).args(args).output().expect("run a support script");
    assert!(out.status.success(), "{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// A throw-away CA and a server certificate for 127.0.0.1 in `dir`:
/// `ca.pem`, `server.pem`, `server.key`.
pub fn tls_certificates(dir: &Path) {
    support("tls-certs.sh", &[dir]);
}

/// The path a support script prints, or `env` when it is set (`.ci/run` installs beforehand).
pub fn installed(env: &str, script: &str) -> PathBuf {
    std::env::var(env).map(PathBuf::from).unwrap_or_else(|_| support(script, &[]).concat().into())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// `cascade serve` as its own process, killed with SIGKILL on drop.
pub struct MasterProcess(pub tokio::process::Child);

impl MasterProcess {
    pub fn start(config: &Path, database: &str, log: &Path) -> MasterProcess {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(["serve", "--config"])
            .arg(config)
            .env("CASCADE_DATABASE_URL", database)
            .stdout(Stdio::from(out.try_clone().expect("dup")))
            .stderr(Stdio::from(out))
            .kill_on_drop(true)
            .spawn()
            .expect("cascade serve starts");
        MasterProcess(child)
    }

    /// Waits for `GET {base}/healthz` to answer 200; fails with the
    /// master's log if it exits first or does not answer within `limit`.
    pub async fn wait_healthy(&mut self, http: &reqwest::Client, base: &str, log: &Path, limit: Duration) {
        let start = std::time::Instant::now();
        loop {
            let ok = http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            let exited = self.0.try_wait().ok().flatten();
            if exited.is_some() || start.elapsed() > limit {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                panic!("the master did not answer ({exited:?} after {:?}); its log:\n{text}", start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn kill(&mut self) {
        let _ = self.0.start_kill();
        let _ = self.0.wait().await;
    }
}
