use axum::body::Body;
use axum::http::{Request, StatusCode};
use cascade_master::webhook::signature::sign_sha256;
use cascade_store::ListQuery;
use cascade_testkit::test_both;
use serde_json::Value;

use crate::harness::{Harness, SECRET, fixture, fixture_json, synthetic_push};

test_both!(a_signed_push_stores_one_change_per_commit, |db| {
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let body = fixture("reallyfastci/webhook-push-to-master.json");
    let (status, answer) = h.deliver("push", &body, "88f41318-101a-11ea-99ad-ec7586fcd78e").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let ids: Vec<i64> = answer["changes"].as_array().expect("ids").iter().map(|v| v.as_i64().expect("id")).collect();
    let payload: Value = serde_json::from_slice(&body).expect("json");
    let commits = payload["commits"].as_array().expect("commits");
    assert_eq!(ids.len(), commits.len());
    for (id, commit) in ids.iter().zip(commits) {
        let c = h.store.get_change(*id).await.expect("get").expect("stored");
        assert_eq!(c.revision.as_deref(), commit["id"].as_str());
        assert_eq!(c.comments, commit["message"].as_str().expect("message"));
        assert_eq!(
            c.author,
            format!(
                "{} <{}>",
                commit["author"]["name"].as_str().expect("n"),
                commit["author"]["email"].as_str().expect("e")
            )
        );
        assert_eq!(
            c.committer,
            Some(format!(
                "{} <{}>",
                commit["committer"]["name"].as_str().expect("n"),
                commit["committer"]["email"].as_str().expect("e")
            ))
        );
        let when =
            chrono::DateTime::parse_from_rfc3339(commit["timestamp"].as_str().expect("ts")).expect("time").timestamp();
        assert_eq!(c.when_timestamp, when);
        assert_eq!(c.branch.as_deref(), Some("master"));
        assert_eq!(c.repository, "https://github.com/ailisp/gcbapp-buildconfig-example");
        assert_eq!(c.project, "ailisp/gcbapp-buildconfig-example");
        assert_eq!(c.revlink.as_deref(), commit["url"].as_str());
        let mut files: Vec<String> = ["added", "modified", "removed"]
            .iter()
            .flat_map(|k| commit[*k].as_array().cloned().unwrap_or_default())
            .map(|f| f.as_str().expect("path").to_string())
            .collect();
        files.sort();
        assert_eq!(c.files, files);
        assert_eq!(c.properties["event"].0, "push");
        assert_eq!(c.properties["github_compare"].0, payload["compare"]);
    }
    let last = h.store.get_change(*ids.last().expect("ids")).await.expect("get").expect("stored");
    assert_eq!(last.revision.as_deref(), payload["after"].as_str(), "the branch head is `after`");
    // Every commit waits in the 3.x scheduler; all touch only README.md,
    // which that scheduler's ignore_files ("*.md") marks unimportant.
    let waiting = h.store.waiting_changes().await.expect("waiting");
    assert_eq!(waiting.len(), ids.len());
    assert!(waiting.iter().all(|w| !w.important));
});

test_both!(five_pushes_in_the_tree_stable_window_give_one_request_per_builder, |db| {
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let t0 = h.master.clock.now();
    let mut all_changes = Vec::new();
    for push in 0..5u32 {
        let payload = synthetic_push("master", push + 1, 2, &["Lib/os.py"]);
        all_changes.extend(h.push(&payload, &format!("delivery-{push}")).await);
    }
    assert_eq!(all_changes.len(), 10);
    let early = h.master.schedulers.tick(&h.store, t0 + 5).await.expect("tick");
    assert!(early.fired.is_empty(), "the tree is not stable yet");
    assert!(early.next_due.is_some_and(|t| t >= (t0 + 30) * 1000), "milliseconds: {early:?}");
    let report = h.master.schedulers.tick(&h.store, t0 + 3600).await.expect("tick");
    assert_eq!(report.fired.len(), 1, "{report:?}");
    let again = h.master.schedulers.tick(&h.store, t0 + 3601).await.expect("tick");
    assert!(again.fired.is_empty());

    let requests = h.store.list_buildrequests(&ListQuery::default()).await.expect("requests");
    assert_eq!(requests.total, 2, "one per builder of the branch");
    let mut builders: Vec<i64> = requests.items.iter().map(|r| r.builderid).collect();
    builders.sort();
    let mut expected = vec![h.builder("Linux 3.x"), h.builder("Windows 3.x")];
    expected.sort();
    assert_eq!(builders, expected);
    let (_, bsid, _) = &report.fired[0];
    let covered: Vec<i64> =
        h.store.buildset_changes(*bsid).await.expect("changes").iter().map(|c| c.changeid).collect();
    assert_eq!(covered, all_changes, "the blamelist holds every commit of every push");
    let bs = h.store.get_buildset(*bsid).await.expect("get").expect("exists");
    assert_eq!(
        bs.sourcestamps[0].revision,
        h.store.get_change(*all_changes.last().expect("c")).await.expect("g").expect("c").revision
    );

    // A worker taking the request builds once, with all ten commits.
    let build = h
        .store
        .claim_build(h.builder("Linux 3.x"), h.master.master_id(), None, t0 + 3700)
        .await
        .expect("claim")
        .expect("build");
    let blamelist: Vec<i64> =
        h.store.build_changes(build.build_id).await.expect("blame").iter().map(|c| c.changeid).collect();
    assert_eq!(blamelist, all_changes);
});

test_both!(pushes_after_the_window_are_merged_when_a_worker_takes_them, |db| {
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let t0 = h.master.clock.now();
    let mut all = Vec::new();
    // Three pushes, each in its own tree-stable window: three buildsets.
    for push in 0..3u32 {
        all.extend(h.push(&synthetic_push("master", push + 10, 1, &["Lib/x.py"]), &format!("d{push}")).await);
        let fired = h.master.schedulers.tick(&h.store, t0 + 3600 * (push as i64 + 1)).await.expect("tick");
        assert_eq!(fired.fired.len(), 1);
    }
    let windows = h.builder("Windows 3.x");
    let build =
        h.store.claim_build(windows, h.master.master_id(), None, t0 + 20_000).await.expect("claim").expect("build");
    assert_eq!(build.covered.len(), 3, "one build for the three pending requests");
    let blamelist: Vec<i64> =
        h.store.build_changes(build.build_id).await.expect("blame").iter().map(|c| c.changeid).collect();
    assert_eq!(blamelist, all);
    assert!(h.store.claim_build(windows, h.master.master_id(), None, t0 + 20_001).await.expect("claim").is_none());
});

test_both!(changes_touching_only_ignored_files_wait_for_an_important_one, |db| {
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let t0 = h.master.clock.now();
    h.push(&synthetic_push("master", 1, 1, &["Doc/library/os.rst", "README.md"]), "doc").await;
    let waiting = h.store.waiting_changes().await.expect("waiting");
    assert_eq!(waiting.len(), 1);
    assert!(!waiting[0].important);
    let report = h.master.schedulers.tick(&h.store, t0 + 3600).await.expect("tick");
    assert!(report.fired.is_empty(), "documentation alone builds nothing");
    h.push(&synthetic_push("master", 2, 1, &["Lib/os.py"]), "code").await;
    let report = h.master.schedulers.tick(&h.store, t0 + 7200).await.expect("tick");
    assert_eq!(report.fired.len(), 1);
    let (_, bsid, _) = &report.fired[0];
    assert_eq!(h.store.buildset_changes(*bsid).await.expect("changes").len(), 2, "the doc change rides along");
});

test_both!(refused_deliveries_leave_the_store_unchanged, |db| {
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let body = fixture("reallyfastci/webhook-push-to-master.json");
    let (status, _) = h.deliver("push", &body, "first").await;
    assert_eq!(status, StatusCode::OK);
    let before = h.counts().await;

    let post = |sig: Option<String>, body: Vec<u8>, content_type: &str, event: Option<&str>| {
        let mut req = Request::post("/change_hook/github")
            .header("content-type", content_type)
            .header("x-github-delivery", "other");
        if let Some(e) = event {
            req = req.header("x-github-event", e);
        }
        if let Some(s) = sig {
            req = req.header("x-hub-signature-256", s);
        }
        req.body(Body::from(body)).expect("request")
    };
    let json = "application/json";
    // unsigned
    let (status, answer) = h.send_json(post(None, body.clone(), json, Some("push"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    // wrongly signed: another secret, and a tampered body
    let (status, _) =
        h.send_json(post(Some(sign_sha256(b"not-the-secret", &body)), body.clone(), json, Some("push"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let mut tampered = body.clone();
    tampered.push(b' ');
    let (status, _) =
        h.send_json(post(Some(sign_sha256(SECRET.as_bytes(), &body)), tampered, json, Some("push"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // the legacy SHA-1 header is not enough unless the config allows it
    let sha1_only = Request::post("/change_hook/github")
        .header("x-github-event", "push")
        .header("x-hub-signature", "sha1=0000000000000000000000000000000000000000")
        .body(Body::from(body.clone()))
        .expect("request");
    assert_eq!(h.send(sha1_only).await.0, StatusCode::UNAUTHORIZED);
    // oversized: over GitHub's 25 MB cap
    let huge = vec![b' '; cascade_master::webhook::MAX_BODY_BYTES + 1];
    let (status, _) = h.send(post(Some(sign_sha256(SECRET.as_bytes(), &huge)), huge, json, Some("push"))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // malformed JSON, and JSON without what a push needs
    for bad in [&b"{\"ref\": "[..], &b"{\"ref\": \"refs/heads/master\"}"[..], &b"[1,2]"[..]] {
        let (status, answer) =
            h.send_json(post(Some(sign_sha256(SECRET.as_bytes(), bad)), bad.to_vec(), json, Some("push"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let reason = answer["error"].as_str().expect("a reason");
        assert!(!reason.contains('\n'), "one line: {reason}");
    }
    // no event header; an unsupported content type
    let (status, _) = h.send_json(post(Some(sign_sha256(SECRET.as_bytes(), &body)), body.clone(), json, None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) =
        h.send_json(post(Some(sign_sha256(SECRET.as_bytes(), &body)), body.clone(), "text/plain", Some("push"))).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // a redelivery of the accepted push
    let (status, answer) = h.deliver("push", &body, "first").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["duplicate"], true);

    assert_eq!(h.counts().await, before, "nothing refused was stored");
});

test_both!(form_encoded_deliveries_are_accepted, |db| {
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let json = fixture("reallyfastci/webhook-push-to-master.json");
    let form = serde_urlencoded::to_string([("payload", String::from_utf8(json).expect("utf8"))]).expect("form");
    let req = Request::post("/change_hook/github")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-github-event", "push")
        .header("x-github-delivery", "form-1")
        .header("x-hub-signature-256", sign_sha256(SECRET.as_bytes(), form.as_bytes()))
        .body(Body::from(form))
        .expect("request");
    let (status, answer) = h.send_json(req).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["changes"].as_array().map(Vec::len), Some(5));
});

test_both!(ping_tags_and_other_events_are_acknowledged_without_changes, |db| {
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let (status, _) = h.deliver("ping", &fixture("octokit-webhooks/ping.payload.json"), "p").await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) =
        h.deliver("pull_request", &fixture("octokit-webhooks/pull_request-opened.payload.json"), "pr").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let (status, answer) = h.deliver("push", &fixture("drone-go-scm/push_tag.json"), "tag").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(answer["ignored"].as_str().expect("reason").contains("tag"));
    assert_eq!(h.counts().await, (0, 0, 0, 0));
});

test_both!(created_branches_and_forced_pushes_still_build_the_head, |db| {
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let created = fixture_json("drone-go-scm/push_branch_create.json");
    assert!(created["commits"].as_array().expect("commits").is_empty());
    let ids = h.push(&created, "create").await;
    assert_eq!(ids.len(), 1);
    let head = h.store.get_change(ids[0]).await.expect("get").expect("stored");
    assert_eq!(head.revision.as_deref(), created["after"].as_str());
    assert_eq!(head.branch.as_deref(), Some("feature-branch"));

    let forced = fixture_json("gith/reset-head-hard-and-force-pushed.json");
    let ids = h.push(&forced, "force").await;
    assert_eq!(ids.len(), 1);
    let head = h.store.get_change(ids[0]).await.expect("get").expect("stored");
    assert_eq!(head.revision.as_deref(), forced["after"].as_str());
    assert_eq!(head.properties["github_forced"].0, true);
    // both wait, as important changes, in their branch's scheduler
    let waiting = h.store.waiting_changes().await.expect("waiting");
    assert_eq!(waiting.len(), 2);
    assert!(waiting.iter().all(|w| w.important));
});

test_both!(deleting_a_branch_cancels_what_is_pending_for_it, |db| {
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let t0 = h.master.clock.now();
    h.push(&synthetic_push("feature-branch", 1, 1, &["a.c"]), "f1").await;
    h.master.schedulers.tick(&h.store, t0 + 3600).await.expect("tick");
    h.push(&synthetic_push("feature-branch", 2, 1, &["b.c"]), "f2").await;
    assert_eq!(h.store.waiting_changes().await.expect("waiting").len(), 1);
    let pending = h.store.list_buildrequests(&ListQuery::default().eq("complete", "false")).await.expect("list");
    assert_eq!(pending.total, 1);

    // The real deletion payload, for the repository the pushes came from.
    let mut deletion = fixture_json("drone-go-scm/push_branch_delete.json");
    deletion["repository"] = synthetic_push("feature-branch", 0, 1, &[])["repository"].clone();
    let (status, answer) = h.deliver("push", &serde_json::to_vec(&deletion).expect("json"), "delete").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["cancelled_requests"], 1);
    assert_eq!(answer["dropped_changes"], 1);
    let request = h.store.get_buildrequest(pending.items[0].buildrequestid).await.expect("get").expect("exists");
    assert!(request.complete);
    assert_eq!(request.results, 6, "CANCELLED");
    assert!(h.store.waiting_changes().await.expect("waiting").is_empty());
    assert!(h.master.schedulers.tick(&h.store, t0 + 9999).await.expect("tick").fired.is_empty());
});

test_both!(a_restart_inside_the_tree_stable_window_still_builds, |db| {
    let t0 = cascade_master::clock::now();
    let changes = {
        let h = Harness::frozen(db, crate::harness::CONFIG).await;
        let ids = h.push(&synthetic_push("master", 7, 3, &["Lib/os.py"]), "before-restart").await;
        assert!(h.master.schedulers.tick(&h.store, t0 + 1).await.expect("tick").fired.is_empty());
        h.stop().await;
        ids
    };
    // A new master process on the same database.
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let report = h.master.schedulers.tick(&h.store, t0 + 3600).await.expect("tick");
    assert_eq!(report.fired.len(), 1);
    let (_, bsid, requests) = &report.fired[0];
    assert_eq!(requests.len(), 2);
    let covered: Vec<i64> =
        h.store.buildset_changes(*bsid).await.expect("changes").iter().map(|c| c.changeid).collect();
    assert_eq!(covered, changes);
    // and a redelivery after the restart is still recognised
    let body = serde_json::to_vec(&synthetic_push("master", 7, 3, &["Lib/os.py"])).expect("json");
    let (_, answer) = h.deliver("push", &body, "before-restart").await;
    assert_eq!(answer["duplicate"], true);
});

test_both!(insecure_mode_accepts_unsigned_deliveries, |db| {
    let text = crate::harness::CONFIG.replace("webhook_secret = \"test-secret\"", "insecure_webhook = true");
    let h = Harness::frozen(db, &text).await;
    let req = Request::post("/change_hook/github")
        .header("x-github-event", "push")
        .body(Body::from(fixture("reallyfastci/webhook-push-to-master.json")))
        .expect("request");
    let (status, answer) = h.send_json(req).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
});

test_both!(pushes_for_another_repository_are_ignored_when_one_is_configured, |db| {
    let text = crate::harness::CONFIG.replace("[github]\n", "[github]\nrepository = \"python/cpython\"\n");
    let h = Harness::frozen(db, &text).await;
    let (status, answer) = h.deliver("push", &fixture("reallyfastci/webhook-push-to-master.json"), "x").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(h.counts().await, (0, 0, 0, 0));
});
