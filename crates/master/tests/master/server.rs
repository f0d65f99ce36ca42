//! The one seam, `server::serve`: what runs beside the HTTP server (the
//! heartbeat, the janitor, the event pump) and how a master stops.

use std::time::Duration;

use cascade_master::clock::Clock;
use cascade_master::events::EventReader;
use cascade_model::{Event, EventKind};
use cascade_store::{Delivery, IngestOutcome, ListQuery, NewSession};
use cascade_testkit::test_both;

use crate::harness::{CONFIG, Harness, synthetic_push};
use crate::workers::{BuildbotWorker, Kind, config, make_repo, push, run_master, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

/// Quick housekeeping, so the test sees it happen.
fn busy_config() -> String {
    CONFIG.replace("name = \"test-master\"", "name = \"test-master\"\nheartbeat = \"50ms\"")
        + "\n[janitor]\nevery = \"100ms\"\ndelivery_horizon = \"7d\"\n"
}

/// A session that expired long ago, left behind.
async fn expired_session(store: &cascade_store::Store, token_hash: &str, now: i64) {
    let roles: Vec<String> = vec![];
    let session = NewSession {
        token_hash,
        user: "ann",
        roles: &roles,
        source: "password",
        csrf_token: "c",
        expires_at: now - 3600,
    };
    store.create_session(&session, now - 7200).await.expect("session");
}

test_both!(serving_beats_and_sweeps, |db| {
    let t0 = cascade_master::clock::now();
    let store = db.store().await;
    // Left by an earlier run: an expired session, a delivery id from a
    // fortnight ago, and one from an hour ago.
    expired_session(&store, "old", t0).await;
    let delivery = |id: &str| Delivery { hook_id: "1".into(), delivery_id: id.into(), event: "push".into() };
    let change = |rev: &str| {
        let mut c = cascade_master::sendchange::SendChange { who: "Ann".into(), ..Default::default() };
        c.revision = Some(rev.into());
        (c, vec![])
    };
    let config = cascade_config::parse(&busy_config(), std::path::Path::new("t.toml")).expect("config");
    for (id, rev, at) in [("fortnight", "a", t0 - 14 * 86_400), ("hour", "b", t0 - 3600)] {
        let (c, touches) = change(rev);
        let batch = [(c.into_change(&config, at), touches)];
        assert!(matches!(
            store.ingest_changes(Some(&delivery(id)), &batch, at).await,
            Ok(IngestOutcome::Stored { .. })
        ));
    }
    let h = Harness::served(store, &busy_config(), Clock::manual(t0)).await;

    // The janitor ran: the expired session and the old delivery id are gone,
    // the recent delivery id is remembered.
    wait_for("the expired session to go", LIMIT, || async {
        h.store.session("old", 0).await.expect("session").is_none().then_some(())
    })
    .await;
    let batch = |rev: &str| [(change(rev).0.into_change(&config, t0), vec![])];
    let again = h.store.ingest_changes(Some(&delivery("hour")), &batch("b"), t0).await.expect("ingest");
    assert!(matches!(again, IngestOutcome::Duplicate), "an hour-old delivery id is still known");
    let old = h.store.ingest_changes(Some(&delivery("fortnight")), &batch("a"), t0).await.expect("ingest");
    assert!(matches!(old, IngestOutcome::Stored { .. }), "a fortnight-old one was forgotten");

    // The heartbeat: the master's row follows its clock.
    h.master.clock.set(t0 + 100);
    wait_for("a heartbeat", LIMIT, || async {
        let masters = h.store.list_masters().await.expect("masters");
        masters.iter().any(|m| m.masterid == h.master.master_id() && m.last_active == t0 + 100).then_some(())
    })
    .await;
});

test_both!(live_subscribers_get_each_event_and_a_stop_ends_their_streams, |db| {
    let h = Harness::frozen(db, CONFIG).await;
    let mut bus = h.master.bus.subscribe();
    cascade_master::outbound::install_crypto_provider();
    let mut events = reqwest::Client::new().get(format!("{}/events", h.url())).send().await.expect("/events");
    assert_eq!(events.status(), 200);

    // A forced build: the request is recorded, and the pump puts it on the bus.
    let req = cascade_master::scheduler::ForceRequest {
        scheduler: "force".into(),
        builders: vec!["Windows 3.x".into()],
        reason: "test".into(),
        owner: "ann".into(),
        ..Default::default()
    };
    let created = h.master.schedulers.force(&h.store, &req, h.master.clock.now()).await.expect("force");
    let got = tokio::time::timeout(LIMIT, bus.recv()).await.expect("in time").expect("an event");
    assert_eq!(got.event.kind(), EventKind::BuildRequested);
    assert!(matches!(&got.event, Event::BuildRequested { buildset_id, .. } if *buildset_id == created[0].0));
    assert!(got.id.is_some(), "recorded in the store");
    let first = tokio::time::timeout(LIMIT, events.chunk()).await.expect("in time").expect("bytes").expect("a chunk");
    let text = String::from_utf8_lossy(&first);
    assert!(text.contains("event: request") && text.contains("build_requested"), "{text}");

    // Stopping: the live stream ends, the master says it stopped, its ports close.
    let http = h.served.addresses.http;
    let (store, master_id) = (h.store.clone(), h.master.master_id());
    h.served.stop().await.expect("a clean stop");
    // The stream ends (cleanly or not), with no event after the stop.
    while let Ok(Some(chunk)) = tokio::time::timeout(LIMIT, events.chunk()).await.expect("the stream ends") {
        assert!(!String::from_utf8_lossy(&chunk).contains("event:"), "{chunk:?}");
    }
    let masters = store.list_masters().await.expect("masters");
    assert!(masters.iter().any(|m| m.masterid == master_id && !m.active), "{masters:?}");
    let last = store.events_after(0, 1000).await.expect("events").events.last().map(|e| e.event.clone());
    assert_eq!(last, Some(Event::MasterStopped { master_id }));
    assert!(tokio::net::TcpStream::connect(http).await.is_err(), "nothing listens any more");
});

test_both!(a_durable_reader_goes_on_where_it_was_after_a_restart, |db| {
    let store = db.store().await;
    let h = Harness::frozen(db, CONFIG).await;
    let push_one = |seed: u32| synthetic_push("master", seed, 1, &["Lib/os.py"]);
    let mut reader = EventReader::durable(&store, "irc").await.expect("reader");
    assert!(reader.poll().await.expect("poll").is_empty(), "a new consumer starts from now");
    h.push(&push_one(1), "d-1").await;
    h.master.schedulers.tick(&h.store, h.master.clock.now() + 3600).await.expect("tick");
    let seen: Vec<EventKind> = reader.poll().await.expect("poll").iter().map(|e| e.event.kind()).collect();
    assert_eq!(seen, vec![EventKind::BuildRequested]);
    reader.save(0).await.expect("save");
    // The consumer restarts: nothing handled comes again, what happened meanwhile does.
    drop(reader);
    h.store.claim_build(h.builder("Linux 3.x"), h.master.master_id(), None, 10).await.expect("claim");
    let mut again = EventReader::durable(&store, "irc").await.expect("reader");
    let seen: Vec<EventKind> = again.poll().await.expect("poll").iter().map(|e| e.event.kind()).collect();
    assert_eq!(seen, vec![EventKind::BuildStarted]);
    assert!(again.poll().await.expect("poll").is_empty(), "each event once");
    h.stop().await;
});

test_both!(stopping_the_master_retries_the_build_it_runs, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let go = dir.path().join("GO");
    let step = format!(
        r#"{{ name = "wait", command = ["sh", "-c", "while [ ! -f {} ]; do sleep 0.1; done"] }},"#,
        go.display()
    );
    let h = Harness::with_config(db, &config(&repo, &step)).await;
    let running = run_master(&h).await;
    let _worker = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), running.port, "w1", "pw-one").await;
    wait_for("the worker to attach", LIMIT, || async { h.master.workers.get("w1") }).await;
    push(&h, &sha).await;
    let build = wait_for("a running step", LIMIT, || async {
        let b = h.store.get_build(1).await.ok().flatten()?;
        let steps = h.store.list_steps(b.buildid).await.ok()?;
        steps.iter().any(|s| s.name == "wait" && !s.complete).then_some(b)
    })
    .await;
    let store = h.store.clone();
    h.served.stop().await.expect("a clean stop");
    let ended = store.get_build(build.buildid).await.expect("get").expect("build");
    assert_eq!(ended.results, Some(5), "RETRY: {}", ended.state_string);
    let waiting = store.list_buildrequests(&ListQuery::default().eq("claimed", "false")).await.expect("requests");
    assert_eq!(waiting.items.len(), 1, "the request waits for a master again");
    assert!(!waiting.items[0].complete);
    let worker = store.list_workers(&ListQuery::default()).await.expect("workers");
    assert!(worker.items[0].connected_to.is_empty(), "the worker's connection is recorded gone");
});

/// A build whose step waits for the file `GO-<build number>` in `dir`.
fn waiting_config(dir: &std::path::Path, repo: &std::path::Path, master: &str) -> String {
    let step = format!(
        r#"{{ name = "wait", command = ["sh", "-c", "while [ ! -f {}/GO-%(prop:buildnumber)s ]; do sleep 0.1; done"] }},"#,
        dir.display()
    );
    config(repo, &step).replace("name = \"worker-test\"", &format!("name = \"worker-test\"\n{master}"))
}

/// A master with `w1` attached, building its first build (still running).
async fn building(
    h: &Harness,
    dir: &std::path::Path,
    sha: &str,
) -> (BuildbotWorker, cascade_store::records::BuildRecord) {
    let running = run_master(h).await;
    let worker = BuildbotWorker::start_kind(Kind::Cascade, dir, running.port, "w1", "pw-one").await;
    wait_for("the worker to attach", LIMIT, || async { h.master.workers.get("w1") }).await;
    push(h, sha).await;
    let build = wait_for("a running step", LIMIT, || async {
        let b = h.store.get_build(1).await.ok().flatten()?;
        let steps = h.store.list_steps(b.buildid).await.ok()?;
        steps.iter().any(|s| s.name == "wait" && !s.complete).then_some(b)
    })
    .await;
    (worker, build)
}

test_both!(a_graceful_stop_lets_the_running_build_finish_while_the_master_still_answers, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let h = Harness::with_config(db, &waiting_config(dir.path(), &repo, "")).await;
    let (_worker, build) = building(&h, dir.path(), &sha).await;
    let (store, url, operator) = (h.store.clone(), h.url(), h.served.operator());
    let stopping = tokio::spawn(h.served.stop_gracefully());
    wait_for("the master to stop taking builds", LIMIT, || async { operator.is_stopping().then_some(()) }).await;

    // Meanwhile it answers: its health says it is stopping, a push is taken.
    let http = reqwest::Client::new();
    let health = http.get(format!("{url}/healthz")).send().await.expect("healthz");
    assert_eq!(health.text().await.expect("body"), "ok, stopping");
    crate::harness::push_over_http(&http, &url, &sha).await;
    let unclaimed = ListQuery::default().eq("claimed", "false");
    wait_for("the push's request (schedulers still run)", LIMIT, || async {
        (store.list_buildrequests(&unclaimed).await.ok()?.items.len() == 1).then_some(())
    })
    .await;
    assert!(!stopping.is_finished(), "the stop waits for the running build");

    std::fs::write(dir.path().join("GO-1"), "").expect("go");
    stopping.await.expect("joined").expect("a clean stop");
    let ended = store.get_build(build.buildid).await.expect("get").expect("build");
    assert_eq!(ended.results, Some(0), "it finished: {}", ended.state_string);
    let builds = store.list_builds(&ListQuery::default()).await.expect("builds");
    assert_eq!(builds.items.len(), 1, "no build started while stopping");
    let waiting = store.list_buildrequests(&unclaimed).await.expect("requests");
    assert_eq!(waiting.items.len(), 1, "the push made during the stop waits for the next master");
});

test_both!(a_build_still_running_when_the_grace_time_ends_is_retried, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let h = Harness::with_config(db, &waiting_config(dir.path(), &repo, "stop_grace = \"1s\"")).await;
    let (_worker, build) = building(&h, dir.path(), &sha).await;
    let store = h.store.clone();
    h.served.stop_gracefully().await.expect("a clean stop");
    let ended = store.get_build(build.buildid).await.expect("get").expect("build");
    assert_eq!(ended.results, Some(5), "RETRY: {}", ended.state_string);
    let waiting = store.list_buildrequests(&ListQuery::default().eq("claimed", "false")).await.expect("requests");
    assert_eq!(waiting.items.len(), 1, "its request waits for a master again");
});

/// A build of `builder` that finished at `at`, with a log and an artifact.
async fn old_build(h: &Harness, builder: &str, revision: &str, at: i64) -> (i64, i64, std::path::PathBuf) {
    let id = h.builder(builder);
    let bs = cascade_store::NewBuildset {
        reason: "test".into(),
        sourcestamp: cascade_store::NewSourceStamp {
            repository: "https://github.com/python/cpython".into(),
            branch: Some("main".into()),
            revision: Some(revision.into()),
            project: "python/cpython".into(),
            codebase: String::new(),
        },
        builder_ids: vec![id],
        ..Default::default()
    };
    h.store.create_buildset(&bs, at).await.expect("buildset");
    let build = h.store.claim_build(id, h.master.master_id(), None, at).await.expect("claim").expect("build");
    let step = h.store.add_step(build.build_id, 0, "test", at).await.expect("step");
    let log = h.store.add_log(step, "stdio", "s").await.expect("log");
    h.store.append_log_lines(log, 0, &["oall passed".to_string()]).await.expect("lines");
    h.store.finish_build(build.build_id, cascade_model::Results::Success, "build successful", at).await.expect("end");
    let folder = h.master.catalog.config.master.artifacts.join(cascade_model::naming::builder_folder(builder));
    let folder = folder.join(build.number.to_string());
    std::fs::create_dir_all(&folder).expect("artifact folder");
    std::fs::write(folder.join("junit.xml"), "<testsuites/>").expect("artifact");
    (build.build_id, build.number, folder)
}

test_both!(the_janitor_removes_what_outlived_its_horizons_and_says_so, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let janitor = "\n[janitor]\nevery = \"1000h\"\nlog_horizon = \"180d\"\nartifact_horizon = \"30d\"\nbuild_horizon = \"1000d\"\n";
    let text = CONFIG.replace(
        "name = \"test-master\"",
        &format!("name = \"test-master\"\nartifacts = \"{}\"", dir.path().display()),
    ) + janitor;
    let t0 = cascade_master::clock::now();
    let h = Harness::served(db.store().await, &text, Clock::manual(t0)).await;
    // The start-up sweep goes first: racing it, the test's own sweep would
    // count what that one removed, or it would see a build before its folder.
    let sweeps = || h.master.metrics.janitor_sweeps.get(&[]);
    wait_for("the start-up sweep", LIMIT, || async { (sweeps() == 1).then_some(()) }).await;
    let day = 86_400;
    let fresh = old_build(&h, "Linux 3.x", "a", t0 - 2 * day).await;
    let month = old_build(&h, "Linux 3.x", "b", t0 - 40 * day).await;
    let year = old_build(&h, "Linux 3.x", "c", t0 - 200 * day).await;
    let ancient = old_build(&h, "Linux 3.x", "d", t0 - 2000 * day).await;

    cascade_master::server::janitor(&h.master).sweep(t0).await;
    assert!(
        fresh.2.exists() && !month.2.exists() && !year.2.exists() && !ancient.2.exists(),
        "artifacts past 30 days go"
    );
    let lines = |build: i64| {
        let store = h.store.clone();
        async move {
            let steps = store.list_steps(build).await.expect("steps");
            let step = steps.first()?;
            let logs = store.list_logs(step.stepid).await.expect("logs");
            Some(store.log_lines(logs[0].logid, 0, 0).await.expect("lines").len())
        }
    };
    assert_eq!(lines(month.0).await, Some(1), "a 40-day-old log stays");
    assert_eq!(lines(year.0).await, Some(0), "a 200-day-old log's contents go, the log stays");
    assert_eq!(lines(ancient.0).await, None, "a 2000-day-old build's steps go");
    let kept = h.store.get_build(ancient.0).await.expect("get").expect("the build row stays");
    assert_eq!(kept.results, Some(0));
    let removed = |what: &str| h.master.metrics.janitor_removed.get(&[what]);
    assert_eq!(removed("artifacts"), 3);
    assert_eq!(removed("log_chunks"), 1);
    assert!(removed("steps") >= 3, "chunk, log and step: {}", removed("steps"));

    // The log page says what happened to it.
    let builder = h.builder("Linux 3.x");
    let path = format!("/builders/{builder}/builds/{}/steps/0/logs/stdio", year.1);
    let (status, body) = h.send(axum::http::Request::get(path).body(axum::body::Body::empty()).expect("request")).await;
    assert_eq!(status, 200);
    let page = String::from_utf8_lossy(&body);
    assert!(page.contains("The janitor removed this log"), "{page}");

    // Nothing is left to remove a second time.
    cascade_master::server::janitor(&h.master).sweep(t0).await;
    assert_eq!(sweeps(), 3, "no other sweep ran beside the test's");
    assert_eq!(removed("artifacts"), 3);
    assert_eq!(removed("log_chunks"), 1);
    h.stop().await;
});
