use axum::body::Body;
use axum::http::{Request, StatusCode};
use cascade_testkit::test_both;
use serde_json::{Value, json};

use crate::harness::{CONFIG, Harness, synthetic_push};

test_both!(the_read_api_answers_in_buildbot_shapes, |db| {
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let t0 = h.master.clock.now();
    let mut payload = synthetic_push("master", 3, 3, &["Lib/os.py"]);
    payload["commits"][2]["message"] = Value::String("<script>alert('x')</script> & \"quotes\"".into());
    payload["head_commit"] = payload["commits"][2].clone();
    let ids = h.push(&payload, "api-1").await;
    h.master.schedulers.tick(&h.store, t0 + 3600).await.expect("tick");

    let (status, page) = h.get("/api/v2/changes?branch=master&order=-changeid&limit=2&total=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["meta"]["total"], 3);
    // Uncounted unless asked: the rows up to the page's end, a lower bound when it is full.
    let (_, uncounted) = h.get("/api/v2/changes?branch=master&order=-changeid&limit=2").await;
    assert_eq!(uncounted["meta"], json!({ "total": 2, "total_capped": true }));
    let (_, last) = h.get("/api/v2/changes?branch=master&order=-changeid&limit=2&offset=2").await;
    assert_eq!(last["meta"], json!({ "total": 3 }), "a short page ends the list");
    let changes = page["changes"].as_array().expect("list");
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["changeid"], ids[2]);
    for key in [
        "author",
        "comments",
        "branch",
        "revision",
        "when_timestamp",
        "files",
        "properties",
        "repository",
        "sourcestamp",
        "parent_changeids",
        "codebase",
        "project",
        "revlink",
        "category",
        "committer",
    ] {
        assert!(changes[0].get(key).is_some(), "change lacks {key}: {}", changes[0]);
    }
    assert_eq!(changes[0]["properties"]["event"], serde_json::json!(["push", "Change"]));
    assert!(changes[0]["sourcestamp"]["ssid"].as_i64().is_some());
    assert_eq!(changes[0]["parent_changeids"], serde_json::json!([ids[1]]));

    let (status, one) = h.get(&format!("/api/v2/changes/{}", ids[0])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["changes"][0]["changeid"], ids[0]);
    assert_eq!(one["meta"]["total"], 1);
    let (status, missing) = h.get("/api/v2/changes/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(missing["error"].is_string());

    // projection
    let (_, projected) = h.get("/api/v2/changes?field=changeid&field=revision").await;
    let first = projected["changes"][0].as_object().expect("object");
    assert_eq!(first.len(), 2);

    let linux = h.builder("Linux 3.x");
    let (status, reqs) = h.get(&format!("/api/v2/buildrequests?builderid={linux}&complete=false")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reqs["meta"]["total"], 1);
    let r = &reqs["buildrequests"][0];
    assert_eq!(r["builderid"], linux);
    assert_eq!(r["complete"], false);
    assert_eq!(r["claimed"], false);
    assert_eq!(r["results"], -1);
    assert!(r["submitted_at"].as_i64().is_some());
    let (_, none) = h.get(&format!("/api/v2/buildrequests?builderid={linux}&complete=true")).await;
    assert_eq!(none["meta"]["total"], 0);
    let (_, by_builder) = h.get(&format!("/api/v2/builders/{linux}/buildrequests")).await;
    assert_eq!(by_builder["meta"]["total"], 1);

    let (_, sets) = h.get("/api/v2/buildsets?order=-bsid").await;
    assert_eq!(sets["meta"]["total"], 1);
    let bs = &sets["buildsets"][0];
    assert_eq!(bs["complete"], false);
    assert_eq!(bs["sourcestamps"][0]["revision"], payload["after"]);
    assert!(bs["reason"].as_str().expect("reason").contains("'main'"));
    let (status, _) = h.get(&format!("/api/v2/buildsets/{}", bs["bsid"])).await;
    assert_eq!(status, StatusCode::OK);

    let (_, builders) = h.get("/api/v2/builders").await;
    assert_eq!(builders["meta"]["total"], 3);
    let (status, by_name) = h.get("/api/v2/builders/Linux%203.x").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_name["builders"][0]["builderid"], linux);
    assert_eq!(by_name["builders"][0]["tags"], serde_json::json!(["stable", "3.x"]), "the branch label is a tag");
    assert_eq!(by_name["builders"][0]["masterids"], serde_json::json!([h.master.master_id()]));
    let (_, stable) = h.get("/api/v2/builders?tags__contains=stable").await;
    assert_eq!(stable["meta"]["total"], 2);
    let (_, of_branch) = h.get("/api/v2/builders?tags__contains=3.x").await;
    assert_eq!(of_branch["meta"]["total"], 2, "Linux 3.x and Windows 3.x: {of_branch}");

    let (_, workers) = h.get("/api/v2/workers").await;
    assert_eq!(workers["workers"][0]["name"], "w1");
    assert_eq!(workers["workers"][0]["configured_on"].as_array().map(Vec::len), Some(3));
    let (_, masters) = h.get("/api/v2/masters").await;
    assert_eq!(masters["masters"][0]["name"], "test-master");

    // bad queries are 400/404 with a JSON reason, never 500
    for (uri, code) in [
        ("/api/v2/changes?colour=red", StatusCode::BAD_REQUEST),
        ("/api/v2/changes?limit=lots", StatusCode::BAD_REQUEST),
        ("/api/v2/changes?changeid__near=1", StatusCode::BAD_REQUEST),
        ("/api/v2/buildrequests?complete=perhaps", StatusCode::BAD_REQUEST),
        ("/api/v2/changes?order=-colour", StatusCode::BAD_REQUEST),
        ("/api/v2/changes/abc", StatusCode::NOT_FOUND),
        ("/api/v2/nothing/here", StatusCode::NOT_FOUND),
    ] {
        let (status, body) = h.get(uri).await;
        assert_eq!(status, code, "{uri}: {body}");
        assert!(body["error"].is_string(), "{uri}");
    }

    // health and the home page, which escapes what commits say
    let (status, body) = h.send(Request::get("/healthz").body(Body::empty()).expect("req")).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
    let (status, body) = h.send(Request::get("/").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::OK);
    let html = String::from_utf8(body).expect("utf8");
    assert!(html.contains("Test &#60;CI&#62; &#38; co"), "title escaped");
    assert!(!html.contains("<script>alert"), "commit message escaped");
    assert!(html.contains("&#60;script&#62;"));
    let (status, css) = h.send(Request::get("/static/cascade.css").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&css).contains("body"));
});

test_both!(builds_steps_and_logs_read_as_buildbot_shapes, |db| {
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let t0 = h.master.clock.now();
    let ids = h.push(&synthetic_push("master", 4, 2, &["Lib/os.py"]), "api-builds").await;
    h.master.schedulers.tick(&h.store, t0 + 3600).await.expect("tick");
    let linux = h.builder("Linux 3.x");
    let build = h.store.claim_build(linux, h.master.master_id(), None, t0).await.expect("claim").expect("build");
    let step = h.store.add_step(build.build_id, 0, "test", t0).await.expect("step");
    let log = h.store.add_log(step, "stdio", "s").await.expect("log");
    let lines: Vec<String> = (0..25).map(|i| format!("oline {i} <b>")).collect();
    h.store.append_log_lines(log, 0, &lines).await.expect("lines");
    h.store.finish_log(log).await.expect("finish log");
    h.store.finish_step(step, cascade_model::Results::Failure, "test failed", t0 + 5).await.expect("finish step");
    h.store
        .finish_build(build.build_id, cascade_model::Results::Failure, "failure: test", t0 + 6)
        .await
        .expect("finish");

    let (status, all) = h.get(&format!("/api/v2/builds?builderid={linux}&complete=true&order=-number")).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["meta"]["total"], 1);
    let b = &all["builds"][0];
    for key in [
        "buildid",
        "number",
        "builderid",
        "buildrequestid",
        "workerid",
        "masterid",
        "started_at",
        "complete_at",
        "complete",
        "state_string",
        "results",
    ] {
        assert!(b.get(key).is_some(), "build lacks {key}: {b}");
    }
    assert_eq!(b["results"], 2);
    assert_eq!(b["complete"], true);
    let (_, by_number) = h.get(&format!("/api/v2/builders/{linux}/builds/{}", build.number)).await;
    assert_eq!(by_number["builds"][0]["buildid"], build.build_id);
    let (_, none) = h.get(&format!("/api/v2/builds?builderid={linux}&complete=false")).await;
    assert_eq!(none["meta"]["total"], 0);

    let (_, steps) = h.get(&format!("/api/v2/builds/{}/steps", build.build_id)).await;
    assert_eq!(steps["steps"][0]["name"], "test");
    assert_eq!(steps["steps"][0]["results"], 2);
    assert_eq!(steps["steps"][0]["state_string"], "test failed");
    let (_, logs) = h.get(&format!("/api/v2/steps/{step}/logs")).await;
    assert_eq!(logs["logs"][0]["slug"], "stdio");
    assert_eq!(logs["logs"][0]["type"], "s");
    assert_eq!(logs["logs"][0]["num_lines"], 25);
    let (_, contents) = h.get(&format!("/api/v2/logs/{log}/contents?offset=10&limit=3")).await;
    assert_eq!(contents["logchunks"][0]["firstline"], 10);
    assert_eq!(contents["logchunks"][0]["content"], "oline 10 <b>\noline 11 <b>\noline 12 <b>\n");
    assert_eq!(contents["meta"]["total"], 25);
    let (status, contents) = h.get(&format!("/api/v2/logs/{log}/contents?offset={}", i64::MAX)).await;
    assert_eq!(status, StatusCode::OK, "an offset past the end is an empty page, not an overflow");
    assert_eq!(contents["logchunks"], serde_json::json!([]));
    let (_, blame) = h.get(&format!("/api/v2/builds/{}/changes", build.build_id)).await;
    let blamed: Vec<i64> =
        blame["changes"].as_array().expect("list").iter().map(|c| c["changeid"].as_i64().expect("id")).collect();
    assert_eq!(blamed, ids);
    let (_, page) = h.get(&format!("/api/v2/builds/{}/changes?offset=1&limit=1", build.build_id)).await;
    assert_eq!(page["changes"][0]["changeid"].as_i64(), Some(ids[1]), "the blamelist pages");
    assert_eq!(page["meta"]["total"].as_i64(), Some(ids.len() as i64));
    for uri in ["/api/v2/builds/999999", "/api/v2/logs/999999/contents", "/api/v2/steps/x/logs"] {
        let (status, _) = h.get(uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
    }
});

test_both!(control_calls_need_a_token_and_the_right_role, |db| {
    let text = format!(
        "{}\n[[user]]\nname = \"ann\"\nroles = [\"core-dev\"]\n[[user]]\nname = \"bob\"\nroles = [\"triage\"]\n\
         [[user]]\nname = \"gone\"\n[auth]\nadmins = [\"root\"]\nrules = {{ stop = [\"core-dev\"] }}\n",
        crate::harness::CONFIG
    );
    let h = Harness::frozen(db, &text).await;
    let t0 = h.master.clock.now();
    h.push(&synthetic_push("master", 9, 1, &["x.c"]), "ctl").await;
    h.master.schedulers.tick(&h.store, t0 + 3600).await.expect("tick");
    let build = h
        .store
        .claim_build(h.builder("Linux 3.x"), h.master.master_id(), None, t0)
        .await
        .expect("claim")
        .expect("build");
    let token = |user: &str| {
        let (token, hash) = cascade_master::auth::new_token();
        (token, hash, user.to_string())
    };
    let mut tokens = std::collections::BTreeMap::new();
    for user in ["ann", "bob", "root"] {
        let (t, hash, u) = token(user);
        let id = h.store.create_api_token(&u, "test", &hash, 0).await.expect("token");
        tokens.insert(user, (t, id));
    }
    let call = |bearer: Option<&str>, build: i64, body: &str| {
        let mut req = Request::post(format!("/api/v2/builds/{build}")).header("content-type", "application/json");
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.body(Body::from(body.to_string())).expect("request")
    };
    let stop = r#"{"jsonrpc":"2.0","method":"stop","id":1,"params":{"reason":"test"}}"#;
    let id = build.build_id;
    let ann = tokens["ann"].0.clone();
    let cases: Vec<(Option<&str>, i64, &str, StatusCode)> = vec![
        (None, id, stop, StatusCode::UNAUTHORIZED),
        (Some("not-a-token"), id, stop, StatusCode::UNAUTHORIZED),
        (Some(tokens["bob"].0.as_str()), id, stop, StatusCode::FORBIDDEN),
        (Some(ann.as_str()), 999_999, stop, StatusCode::NOT_FOUND),
        (Some(ann.as_str()), id, r#"{"method":"explode"}"#, StatusCode::BAD_REQUEST),
        (Some(ann.as_str()), id, "not json", StatusCode::BAD_REQUEST),
        // Claimed but not running on any worker of this master: nothing to interrupt here.
        (Some(ann.as_str()), id, stop, StatusCode::CONFLICT),
        (Some(tokens["root"].0.as_str()), id, stop, StatusCode::CONFLICT),
    ];
    for (bearer, build, body, want) in cases {
        let (status, answer) = h.send_json(call(bearer, build, body)).await;
        assert_eq!(status, want, "{bearer:?} {body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    // A revoked token opens nothing any more.
    assert!(h.store.revoke_api_token(tokens["ann"].1, 1).await.expect("revoke"));
    let (status, _) = h.send_json(call(Some(ann.as_str()), id, stop)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A finished build cannot be stopped.
    h.store.finish_build(id, cascade_model::Results::Success, "done", t0 + 1).await.expect("finish");
    let (status, _) = h.send_json(call(Some(tokens["root"].0.as_str()), id, stop)).await;
    assert_eq!(status, StatusCode::CONFLICT);
});

test_both!(cascade_status_reads_every_builder_page_after_page, |db| {
    let h = Harness::with_config(db, CONFIG).await;
    cascade_master::outbound::install_crypto_provider();
    let client = cascade_master::client::Client::new(&h.url(), None);
    // Two builders a page: three builders take two pages (the real page is 1,000).
    let rows = cascade_master::client::status_paged(&client, None, &[], 2).await.expect("status");
    let names: Vec<&str> = rows.iter().map(|r| r.builder.as_str()).collect();
    assert_eq!(names, ["Linux 3.x", "Linux feature", "Windows 3.x"]);
    let exact = cascade_master::client::status_paged(&client, None, &[], 3).await.expect("status");
    assert_eq!(exact.len(), 3, "a last page that is full is followed by an empty one");
    h.stop().await;
});
