//! Notifications end to end: builds start and end in the store, the
//! master's notifier turns the event log into notifications and sends them
//! to a local chat webhook and to a local stand-in for GitHub's REST API
//! (statuses, issue comments, its rate-limit answers and a 502).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cascade_model::Results;
use cascade_store::NotificationState;
use cascade_testkit::test_both;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::harness::{Harness, synthetic_push};

/// A status code and headers the stand-in answers with.
type Answer = (u16, Vec<(&'static str, String)>);

/// What the stand-in received, and the answers it is told to give first.
#[derive(Default)]
pub struct Receiver {
    pub got: Mutex<Vec<(String, Value, Option<String>)>>,
    pub answers: Mutex<VecDeque<Answer>>,
}

async fn take(
    State(r): State<Arc<Receiver>>,
    path: Option<Path<String>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let planned = r.answers.lock().pop_front();
    let path = path.map(|p| p.0).unwrap_or_default();
    match planned {
        Some((code, headers)) => {
            let mut resp = (StatusCode::from_u16(code).unwrap_or(StatusCode::OK), "{}").into_response();
            for (k, v) in headers {
                if let Ok(v) = v.parse() {
                    resp.headers_mut().insert(k, v);
                }
            }
            resp
        }
        None => {
            r.got.lock().push((path, v, auth));
            (StatusCode::CREATED, axum::Json(json!({ "id": 1 }))).into_response()
        }
    }
}

/// A local HTTP server taking any POST; returns its base URL.
pub async fn receiver() -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver::default());
    let app = axum::Router::new().route("/{*path}", axum::routing::post(take)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

fn config(hook: &str, github: &str) -> String {
    format!(
        r#"
[master]
name = "notify"
url = "https://ci.example.org/"
[github]
insecure_webhook = true
repository = "python/cpython"
token = "gh-token"
api_url = "{github}"
[[branch]]
name = "main"
[[worker]]
name = "w1"
password = "pw"
[[factory]]
name = "f"
steps = [{{ command = "make" }}]
[[builder]]
name = "Fedora"
workers = ["w1"]
factory = "f"
branches = ["main"]
tags = ["stable", "tier-1"]
[[scheduler]]
name = "main"
kind = "branch"
branch = "main"
tree_stable = "1s"
[[reporter]]
name = "chat"
kind = "webhook"
url = "{hook}/chat"
[[reporter]]
name = "statuses"
kind = "github_status"
[[reporter]]
name = "comments"
kind = "github_comment"
tags = ["stable"]
guide = "https://devguide.python.org/testing/buildbots/"
"#
    )
}

/// Pushes one commit with `message`, lets the scheduler fire, starts it,
/// waits for GitHub to hear it is pending, and ends it with `results`.
async fn build(h: &Harness, github: &Receiver, seed: u32, message: &str, results: Results) -> i64 {
    let mut payload = synthetic_push("main", seed, 1, &["Lib/os.py"]);
    payload["commits"][0]["message"] = json!(message);
    payload["head_commit"] = payload["commits"][0].clone();
    payload["repository"]["full_name"] = json!("python/cpython");
    h.push(&payload, &format!("d-{seed}")).await;
    h.master.schedulers.tick(&h.store, cascade_master::clock::now() + 60).await.expect("tick");
    let now = cascade_master::clock::now();
    let claimed = h.store.claim_build(h.builder("Fedora main"), h.master.master_id(), None, now).await.expect("claim");
    let claimed = claimed.expect("a build");
    let pending = |g: &Receiver| {
        g.got
            .lock()
            .iter()
            .any(|(p, v, _)| p.ends_with(&format!("{:040x}", (seed as u128) << 32)) && v["state"] == "pending")
    };
    let started = std::time::Instant::now();
    while !pending(github) {
        assert!(started.elapsed() < Duration::from_secs(30), "no pending status for build {}", claimed.number);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.store.finish_build(claimed.build_id, results, results.name(), now).await.expect("finish");
    claimed.build_id
}

async fn finish_next(h: &Harness, results: Results) -> i64 {
    let now = cascade_master::clock::now();
    let b = h.builder("Fedora main");
    let claimed = h.store.claim_build(b, h.master.master_id(), None, now).await.expect("claim").expect("a build");
    h.store.finish_build(claimed.build_id, results, results.name(), now).await.expect("finish");
    claimed.build_id
}

async fn settled(h: &Harness, build_id: i64, count: usize) -> Vec<cascade_store::NotificationRecord> {
    let started = std::time::Instant::now();
    loop {
        let all = h.store.notifications_of_build(build_id).await.expect("notifications");
        if all.len() == count && all.iter().all(|n| n.state != NotificationState::Pending) {
            return all;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "build {build_id}: want {count} settled, have {all:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

test_both!(state_changes_reach_chat_and_github_once, |db| {
    let (chat, chat_url) = receiver().await;
    let (github, github_url) = receiver().await;
    // GitHub answers the very first call with a 502, then a secondary rate limit.
    github.answers.lock().push_back((502, vec![]));
    github.answers.lock().push_back((403, vec![("retry-after", "1".to_string())]));
    let h = Harness::with_config(db, &config(&chat_url, &github_url)).await;

    let first = build(&h, &github, 1, "Add a feature (#100)", Results::Success).await;
    settled(&h, first, 2).await;
    let second = build(&h, &github, 2, "gh-7: Break os (#101)", Results::Failure).await;
    let sent = settled(&h, second, 4).await;
    assert!(sent.iter().all(|n| n.state == NotificationState::Sent), "{sent:?}");
    let third = build(&h, &github, 3, "Unrelated (#102)", Results::Failure).await;
    settled(&h, third, 3).await;
    let fourth = build(&h, &github, 4, "Fix os (#103)", Results::Success).await;
    settled(&h, fourth, 3).await;
    // A failure of a commit without GitHub's suffix: worse, a status, and no comment.
    let fifth = build(&h, &github, 5, "Break it again, pushed directly", Results::Failure).await;
    settled(&h, fifth, 3).await;

    // The channel hears worse, then nothing, then better.
    let lines: Vec<String> = chat
        .got
        .lock()
        .iter()
        .map(|(_, v, _)| format!("{} #{}", v["event"].as_str().unwrap_or(""), v["number"]))
        .collect();
    assert_eq!(lines, ["worse #2", "better #4", "worse #5"]);
    let said = chat.got.lock()[0].1["text"].as_str().unwrap_or_default().to_string();
    assert!(said.starts_with("Fedora main #2: worse (failure) on 0000000000 by "), "{said}");
    assert!(said.ends_with("https://ci.example.org/builders/1/builds/2"), "{said}");

    let got = github.got.lock().clone();
    let statuses: Vec<(String, String)> = got
        .iter()
        .filter(|(p, _, _)| p.contains("/statuses/"))
        .map(|(p, v, _)| {
            (p.rsplit('/').next().unwrap_or("").to_string(), v["state"].as_str().unwrap_or("").to_string())
        })
        .collect();
    for (n, end) in [(1u128, "success"), (2, "failure"), (3, "failure"), (4, "success"), (5, "failure")] {
        let rev = format!("{:040x}", n << 32);
        for state in ["pending", end] {
            assert!(statuses.contains(&(rev.clone(), state.to_string())), "{rev} {state} in {statuses:?}");
        }
    }
    assert_eq!(statuses.len(), 10, "one pending and one end per build, after the 502 and the wait: {statuses:?}");
    assert!(got.iter().all(|(_, _, auth)| auth.as_deref() == Some("Bearer gh-token")));
    let context = got.iter().find(|(p, _, _)| p.contains("/statuses/")).map(|(_, v, _)| v["context"].clone());
    assert_eq!(context, Some(json!("buildbot/Fedora main")));
    // Exactly one comment, on the pull requests of the failing builds' squash-merged commits.
    let comments: Vec<&(String, Value, Option<String>)> =
        got.iter().filter(|(p, _, _)| p.contains("/comments")).collect();
    let paths: Vec<&str> = comments.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(paths, ["repos/python/cpython/issues/101/comments", "repos/python/cpython/issues/102/comments"]);
    let body = comments[0].1["body"].as_str().unwrap_or_default();
    assert!(body.contains("**Fedora main** (tier-1)") && body.contains("https://devguide.python.org/"), "{body}");

    // The build page says what was sent.
    let (status, page) =
        h.send(axum::http::Request::get("/builders/1/builds/2").body(axum::body::Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8_lossy(&page).into_owned();
    let table = page.split("id=\"notifications\"").nth(1).expect("a notifications table");
    for want in [
        "<td>chat</td><td>worse</td><td>sent</td>",
        "<td>comments</td><td>failure</td><td>sent</td>",
        "<td>statuses</td><td>started</td>",
    ] {
        assert!(table.contains(want), "{want} in {table}");
    }

    // A rebuild of the failing build (the same change) fails again: no second comment.
    let rebuilt = rebuild_failing(&h, second).await;
    // It comes after the failure of #5: no change for the channel, no comment; its start is
    // not reported once it has ended (a late `pending` would hide the result).
    settled(&h, rebuilt, 2).await;
    let again = github.got.lock().iter().filter(|(p, _, _)| p.ends_with("101/comments")).count();
    assert_eq!(again, 1, "one comment per pull request and builder");
    h.stop().await;
});

async fn rebuild_failing(h: &Harness, build_id: i64) -> i64 {
    let changes: Vec<i64> =
        h.store.build_changes(build_id).await.expect("changes").iter().map(|c| c.changeid).collect();
    let bs = cascade_store::NewBuildset {
        reason: "rebuild".into(),
        sourcestamp: cascade_store::NewSourceStamp {
            repository: "https://github.com/python/cpython".into(),
            branch: Some("main".into()),
            revision: None,
            project: String::new(),
            codebase: String::new(),
        },
        change_ids: changes,
        builder_ids: vec![h.builder("Fedora main")],
        ..Default::default()
    };
    h.store.create_buildset(&bs, cascade_master::clock::now()).await.expect("buildset");
    finish_next(h, Results::Failure).await
}

/// A real master process, killed with SIGKILL after a build's notification
/// and before the next build ends: after the restart the second build's
/// notification is sent, once, and the first is not sent again.
async fn killed_between_a_builds_end_and_its_notification(db: &cascade_testkit::TestDb) {
    use crate::harness::{MasterProcess, free_port};
    let (chat, chat_url) = receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let http = free_port();
    let config = dir.path().join("cascade.toml");
    let text = format!(
        "[master]\nname = \"killed\"\nurl = \"https://ci.example.org\"\nhttp = \"127.0.0.1:{http}\"\nmsgpack = \"127.0.0.1:{}\"\n\
         pb = \"127.0.0.1:{}\"\n[github]\ninsecure_webhook = true\n[[branch]]\nname = \"main\"\n[[worker]]\nname = \"w1\"\n\
         password = \"pw\"\n[[factory]]\nname = \"f\"\nsteps = [{{ command = \"true\" }}]\n[[builder]]\nname = \"unix\"\n\
         workers = [\"w1\"]\nfactory = \"f\"\nbranches = [\"main\"]\n[[reporter]]\nname = \"chat\"\nkind = \"webhook\"\n\
         url = \"{chat_url}/hook\"\nevents = [\"finished\"]\n",
        free_port(),
        free_port()
    );
    std::fs::write(&config, text).expect("config");
    let log = dir.path().join("master.log");
    let store = db.store().await;
    let mut master = MasterProcess::start(&config, &db.url, &log);
    // Serving means started: from here on every build event is the notifier's to read.
    cascade_master::outbound::install_crypto_provider();
    let client = reqwest::Client::new();
    master.wait_healthy(&client, &format!("http://127.0.0.1:{http}"), &log, Duration::from_secs(60)).await;
    let builder = wait_for_builder(&store, "unix main").await;
    // The test's own master row, with no heartbeat: on SQLite a live one
    // would keep the restarted master from starting.
    let driver = store.register_master("driver", 0).await.expect("driver");
    let numbers =
        |chat: &Receiver| -> Vec<i64> { chat.got.lock().iter().filter_map(|(_, v, _)| v["number"].as_i64()).collect() };

    let first = finish_one(&store, builder, driver).await;
    wait_until("the first notification", || numbers(&chat) == [1]).await;
    // Killed once the first is recorded as sent (a kill between the receiver
    // taking it and the store saying so would send it again: at least once).
    sent_once(&store, first).await;
    master.kill().await;
    // The build ends while no master runs: its event is in the log, its notification nowhere yet.
    let second = finish_one(&store, builder, driver).await;
    let mut master = MasterProcess::start(&config, &db.url, &log);
    wait_until("the second notification after the restart", || numbers(&chat).len() >= 2).await;
    sent_once(&store, second).await;
    assert_eq!(numbers(&chat), [1, 2], "each sent once");
    master.kill().await;
}

/// Waits until the build's one notification is recorded as sent.
async fn sent_once(store: &cascade_store::Store, build_id: i64) {
    let started = std::time::Instant::now();
    loop {
        let rows = store.notifications_of_build(build_id).await.expect("notifications");
        assert!(rows.len() <= 1, "written once: {rows:?}");
        if rows.first().is_some_and(|n| n.state == NotificationState::Sent) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never recorded as sent: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_builder(store: &cascade_store::Store, name: &str) -> i64 {
    let started = std::time::Instant::now();
    loop {
        let list = store.list_builders(&cascade_store::ListQuery::default()).await;
        if let Some(b) = list.ok().and_then(|l| l.items.into_iter().find(|b| b.name == name)) {
            return b.builderid;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the master never synced its builders");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !ok() {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn finish_one(store: &cascade_store::Store, builder: i64, master: i64) -> i64 {
    crate::harness::end_a_new_build(store, builder, master, Results::Success).await
}

test_both!(a_master_killed_between_a_builds_end_and_its_notification_sends_it_once, |db| {
    killed_between_a_builds_end_and_its_notification(db).await;
});
