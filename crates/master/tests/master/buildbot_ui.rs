//! Buildbot's own web UI on Cascade: `/ws` speaks Buildbot's protocol
//! (consuming paths, events as Buildbot sends them, Buildbot's error codes
//! for bad frames, bounded), and with `[www] buildbot_ui` the installed
//! `buildbot-www` bundle is served under `/buildbot/`. The browser test of
//! the UI itself is in `browser.rs`.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cascade_testkit::test_both;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::Harness;

pub(crate) const CONFIG: &str = r#"
[master]
name = "bbui"
title = "Cascade under Buildbot's UI"
[github]
insecure_webhook = true
[[branch]]
name = "main"
[[worker]]
name = "w1"
password = "pw"
[[factory]]
name = "f"
steps = [{ name = "t", command = ["true"] }]
[[builder]]
name = "linux"
workers = ["w1"]
factory = "f"
branches = ["main"]
[[scheduler]]
name = "main"
kind = "branch"
branch = "main"
"#;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(h: &Harness, path: &str) -> Ws {
    let url = format!("{}{path}", h.url().replacen("http://", "ws://", 1));
    tokio_tungstenite::connect_async(url).await.expect("a WebSocket").0
}

/// The next text frame as JSON (pings skipped); fails after 20 s.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("a frame in time");
        match msg {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn ask(ws: &mut Ws, frame: &str) -> Value {
    ws.send(Message::Text(frame.into())).await.expect("send");
    next(ws).await
}

fn consume(path: &str, id: i64) -> String {
    json!({ "cmd": "startConsuming", "path": path, "_id": id }).to_string()
}

/// A build of `builder` claimed now (its event: started).
async fn start_build(h: &Harness, builder: i64) -> cascade_store::ClaimedBuild {
    let now = cascade_master::clock::now();
    let bs = cascade_store::NewBuildset { reason: "ws test".into(), builder_ids: vec![builder], ..Default::default() };
    h.store.create_buildset(&bs, now).await.expect("buildset");
    h.store.claim_build(builder, h.master.master_id(), None, now).await.expect("claim").expect("a build")
}

test_both!(ws_sends_build_events_as_buildbot_does, |db| {
    let h = Harness::with_config(db, CONFIG).await;
    let builder = h.builder("linux main");
    let mut ws = connect(&h, "/ws").await;
    assert_eq!(ask(&mut ws, &consume("builds/*/*", 1)).await, json!({ "msg": "OK", "code": 200, "_id": 1 }));
    assert_eq!(ask(&mut ws, &consume("builds/*/*", 2)).await["code"], 200, "consuming twice is no error");

    // A build starts: `builds/<id>/new`, whose message is the API's object.
    let claimed = start_build(&h, builder).await;
    let frame = next(&mut ws).await;
    assert_eq!(frame["k"], format!("builds/{}/new", claimed.build_id), "{frame}");
    let (_, api) = h.get(&format!("/api/v2/builds/{}", claimed.build_id)).await;
    assert_eq!(frame["m"], api["builds"][0], "the message is what /api/v2 answers");
    assert_eq!(frame["m"]["builderid"], builder);
    assert!(frame.get("code").is_none(), "an event has no code: the UI tells them from answers so");

    // It finishes: `builds/<id>/finished`, complete with its results.
    let now = cascade_master::clock::now();
    h.store.finish_build(claimed.build_id, cascade_model::Results::Failure, "failed", now).await.expect("finish");
    let frame = next(&mut ws).await;
    assert_eq!(frame["k"], format!("builds/{}/finished", claimed.build_id), "{frame}");
    assert_eq!((frame["m"]["complete"].clone(), frame["m"]["results"].clone()), (json!(true), json!(2)));

    // Stopped: the next build's events are not sent. Its request's
    // completion, consumed instead, comes after where the build's would have.
    let stop = json!({ "cmd": "stopConsuming", "path": "builds/*/*", "_id": 3 }).to_string();
    assert_eq!(ask(&mut ws, &stop).await, json!({ "msg": "OK", "code": 200, "_id": 3 }));
    assert_eq!(ask(&mut ws, &consume("buildrequests/*/complete", 4)).await["code"], 200);
    let second = start_build(&h, builder).await;
    h.store.finish_build(second.build_id, cascade_model::Results::Success, "ok", now).await.expect("finish");
    let frame = next(&mut ws).await;
    assert!(frame["k"].as_str().is_some_and(|k| k.starts_with("buildrequests/")), "no build event: {frame}");
    assert_eq!(frame["m"]["complete"], true, "{frame}");
    ws.close(None).await.expect("close");
    h.stop().await;
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_announces_a_change_and_its_requests_when_a_buildset_builds_it() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let h = Harness::with_config(&db, CONFIG).await;
    let builder = h.builder("linux main");
    let mut ws = connect(&h, "/ws").await;
    for (i, path) in ["changes/*/*", "builders/*/buildrequests/*/*"].into_iter().enumerate() {
        assert_eq!(ask(&mut ws, &consume(path, i as i64)).await["code"], 200);
    }
    let changes = h.push(&crate::harness::synthetic_push("main", 7, 1, &["README"]), "ws-change").await;
    let now = cascade_master::clock::now();
    let bs = cascade_store::NewBuildset {
        reason: "ws test".into(),
        change_ids: changes.clone(),
        builder_ids: vec![builder],
        ..Default::default()
    };
    let (_, requests) = h.store.create_buildset(&bs, now).await.expect("buildset");
    let frame = next(&mut ws).await;
    assert_eq!(frame["k"], format!("changes/{}/new", changes[0]), "{frame}");
    let (_, api) = h.get(&format!("/api/v2/changes/{}", changes[0])).await;
    assert_eq!(frame["m"], api["changes"][0], "the message is what /api/v2 answers");
    let frame = next(&mut ws).await;
    assert_eq!(frame["k"], format!("builders/{builder}/buildrequests/{}/new", requests[0]), "{frame}");
    assert_eq!(frame["m"]["claimed"], false);
    h.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_answers_bad_frames_with_buildbots_codes() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let h = Harness::with_config(&db, CONFIG).await;
    let mut ws = connect(&h, "/ws").await;
    for (frame, code, id) in [
        ("not json", 400, Value::Null),
        (r#"{"cmd":"startConsuming","path":"builds/*/*"}"#, 400, Value::Null),
        (r#"{"_id":1}"#, 400, Value::Null),
        (r#"{"cmd":"explode","_id":2}"#, 404, json!(2)),
        (r#"{"cmd":"startConsuming","_id":3}"#, 400, json!(3)),
        (r#"{"cmd":"startConsuming","path":7,"_id":4}"#, 400, json!(4)),
        (r#"{"cmd":"stopConsuming","path":"builds/*/*","_id":5}"#, 400, json!(5)),
    ] {
        let answer = ask(&mut ws, frame).await;
        assert_eq!((answer["code"].clone(), answer["_id"].clone()), (json!(code), id), "{frame}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let answer = ask(&mut ws, r#"{"cmd":"stopConsuming","path":"builds/*/*","_id":5}"#).await;
    assert_eq!(answer["error"], "path was not consumed 'builds/*/*'");
    ws.send(Message::Binary(vec![1, 2, 3].into())).await.expect("send");
    assert_eq!(next(&mut ws).await["code"], 400, "a binary frame");
    assert_eq!(ask(&mut ws, r#"{"cmd":"ping","_id":9}"#).await, json!({ "msg": "pong", "code": 200, "_id": 9 }));

    // Bounded: paths per connection, then the frame size.
    let cap = cascade_master::www::MAX_SUBSCRIPTIONS;
    for i in 0..cap {
        let answer = ask(&mut ws, &consume(&format!("builds/{i}/*"), i as i64)).await;
        assert_eq!(answer["code"], 200, "{answer}");
    }
    let answer = ask(&mut ws, &consume("changes/*/*", 0)).await;
    assert_eq!(answer["code"], 400, "past the cap: {answer}");
    let huge = format!(r#"{{"cmd":"ping","_id":"{}"}}"#, "x".repeat(cascade_master::www::MAX_FRAME_BYTES + 1));
    let _ = ws.send(Message::Text(huge.into())).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "an oversized frame ends the connection");

    // The master goes on serving.
    let mut again = connect(&h, "/ws").await;
    assert_eq!(ask(&mut again, r#"{"cmd":"ping","_id":1}"#).await["code"], 200);
    h.stop().await;
    db.finish().await;
}

/// A client that cannot keep up (here: a burst far larger than the bus
/// holds, while it reads nothing) is closed, code 1013, not buffered for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_drops_a_client_that_falls_behind() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let h = Harness::with_config(&db, CONFIG).await;
    let claimed = start_build(&h, h.builder("linux main")).await;
    let now = cascade_master::clock::now();
    let step = h.store.add_step(claimed.build_id, 0, "talk", now).await.expect("step");
    let log = h.store.add_log(step, "stdio", "s").await.expect("log");
    let mut ws = connect(&h, "/ws").await;
    assert_eq!(ask(&mut ws, &consume("logs/*/*", 1)).await["code"], 200);

    let batches = 20_000;
    for i in 0..batches {
        h.master.bus.publish_lines(log, i, vec![format!("oline {i}")], now);
    }
    let mut received = 0;
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(_))) => received += 1,
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    let code = ended.expect("the master drops the client");
    assert!(received < batches, "dropped before everything was sent ({received} frames)");
    assert!(code.is_none_or(|c| c == 1013), "closed as behind: {code:?}");

    let mut again = connect(&h, "/ws").await;
    assert_eq!(ask(&mut again, r#"{"cmd":"ping","_id":1}"#).await["code"], 200, "the master goes on serving");
    h.stop().await;
    db.finish().await;
}

/// Lines published while a client consumes no log path do not count
/// against it: it is not dropped when it starts consuming one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_hears_lines_only_while_a_log_path_is_consumed() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let h = Harness::with_config(&db, CONFIG).await;
    let claimed = start_build(&h, h.builder("linux main")).await;
    let now = cascade_master::clock::now();
    let step = h.store.add_step(claimed.build_id, 0, "talk", now).await.expect("step");
    let log = h.store.add_log(step, "stdio", "s").await.expect("log");
    let mut ws = connect(&h, "/ws").await;
    // A path no event of this test reaches (the build's own events, late
    // through the store's log on a busy machine, would come between).
    assert_eq!(ask(&mut ws, &consume("changes/*/*", 1)).await["code"], 200);
    for i in 0..10_000 {
        h.master.bus.publish_lines(log, i, vec![format!("oline {i}")], now);
    }
    assert_eq!(ask(&mut ws, &consume("logs/*/*", 2)).await["code"], 200, "still connected");
    h.master.bus.publish_lines(log, 10_000, vec!["oline last".into()], now);
    let frame = next(&mut ws).await;
    assert_eq!(frame["k"], format!("logs/{log}/append"), "{frame}");
    h.stop().await;
    db.finish().await;
}

/// Where `tests/support/buildbot-www.sh` installed Buildbot's bundle, or
/// `None` (with a message) when `CASCADE_BUILDBOT_WWW` is not set.
pub(crate) fn bundle() -> Option<PathBuf> {
    match std::env::var("CASCADE_BUILDBOT_WWW") {
        Ok(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => {
            eprintln!(
                "skipped: CASCADE_BUILDBOT_WWW is not set (bash tests/support/buildbot-www.sh installs buildbot-www)"
            );
            None
        }
    }
}

/// `CONFIG` with Buildbot's UI on, over the bundle in `dir`.
pub(crate) fn with_ui(config: &str, dir: &std::path::Path) -> String {
    format!("{config}\n[www]\nbuildbot_ui = true\nbuildbot_www = {:?}\n", dir.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_is_served_under_buildbot_with_its_config() {
    let Some(dir) = bundle() else { return };
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let h = Harness::with_config(&db, &with_ui(CONFIG, &dir)).await;
    let (status, headers, _) = h.app_response(Request::get("/buildbot").body(Body::empty()).expect("req")).await;
    assert_eq!(
        (status, headers.get(header::LOCATION).cloned()),
        (StatusCode::PERMANENT_REDIRECT, Some("/buildbot/".parse().expect("hv")))
    );

    let (status, headers, body) = h.app_response(Request::get("/buildbot/").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8(body).expect("utf-8");
    let start = page.find("window.buildbotFrontendConfig = ").expect("the config is in the page") + 32;
    let json_text = &page[start..page[start..].find(";\n").map(|e| start + e).expect("its end")];
    let config: Value = serde_json::from_str(json_text).expect("the config is JSON");
    assert_eq!(config["title"], "Cascade under Buildbot's UI");
    let plugins: Vec<&String> = config["plugins"].as_object().expect("plugins").keys().collect();
    assert_eq!(plugins, ["console_view", "grid_view", "waterfall_view"], "the three view plugins are installed");
    assert!(page.contains("./assets/index-"), "the bundle's own index.html");
    let csp = headers.get(header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(csp.contains("'sha256-") && !csp.contains("unsafe-eval"), "the page's own policy: {csp}");

    for (uri, kind) in [
        ("/buildbot/plugins/console_view/scripts.js", "text/javascript"),
        ("/buildbot/browser-warning.js", "text/javascript"),
        ("/buildbot/config", "application/json"),
        ("/buildbot/api/v2/builders", "application/json"),
    ] {
        let (status, headers, _) = h.app_response(Request::get(uri).body(Body::empty()).expect("req")).await;
        let got = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(status == StatusCode::OK && got.starts_with(kind), "{uri}: {status} {got}");
    }
    for uri in [
        "/buildbot/..%2f..%2fetc/passwd",
        "/buildbot/assets/..%2f..%2f__init__.py",
        "/buildbot/plugins/nope/scripts.js",
    ] {
        let (status, _, _) = h.app_response(Request::get(uri).body(Body::empty()).expect("req")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
    }
    let mut ws = connect(&h, "/buildbot/ws").await;
    assert_eq!(ask(&mut ws, r#"{"cmd":"ping","_id":1}"#).await["msg"], "pong");
    h.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_master_sends_buildbots_ui_to_its_login() {
    let Some(dir) = bundle() else { return };
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let h = Harness::with_config(&db, &with_ui(&format!("{CONFIG}\n[auth]\nprivate = true\n"), &dir)).await;
    for uri in ["/buildbot/", "/buildbot/ws", "/ws", "/buildbot/api/v2/builds"] {
        let (status, headers, _) = h.app_response(Request::get(uri).body(Body::empty()).expect("req")).await;
        let to = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(status.is_redirection() && to.starts_with("/login?next="), "{uri}: {status} {to}");
    }
    h.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_buildbot_ui_cascades_pages_stay_alone() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let h = Harness::with_config(&db, CONFIG).await;
    let (status, _, _) = h.app_response(Request::get("/buildbot/").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = h.app_response(Request::get("/").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::OK, "Cascade's home");
    h.stop().await;
    db.finish().await;
}

#[test]
fn buildbot_ui_needs_an_installed_bundle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("master.toml");
    for (www, wanted) in [
        ("buildbot_ui = true", "needs the folder"),
        ("buildbot_ui = true\nbuildbot_www = \"nowhere\"", "no index.html"),
    ] {
        std::fs::write(&path, format!("{CONFIG}\n[www]\n{www}\n")).expect("write");
        let errors = cascade_config::load(&path).expect_err("refused").to_string();
        assert!(errors.contains("www.buildbot_www") && errors.contains(wanted), "{errors}");
    }
}
