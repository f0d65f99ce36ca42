use axum::body::Body;
use axum::http::{Request, StatusCode};
use cascade_testkit::test_both;
use serde_json::Value;

use crate::harness::{Harness, synthetic_push};

test_both!(the_read_api_answers_in_buildbot_shapes, |db| {
    let h = Harness::new(db).await;
    let t0 = cascade_master::clock::now();
    let mut payload = synthetic_push("master", 3, 3, &["Lib/os.py"]);
    payload["commits"][2]["message"] = Value::String("<script>alert('x')</script> & \"quotes\"".into());
    payload["head_commit"] = payload["commits"][2].clone();
    let ids = h.push(&payload, "api-1").await;
    h.master.schedulers.tick(&h.store, t0 + 3600).await.expect("tick");

    let (status, page) = h.get("/api/v2/changes?branch=master&order=-changeid&limit=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["meta"]["total"], 3);
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
    assert_eq!(by_name["builders"][0]["tags"], serde_json::json!(["stable"]));
    assert_eq!(by_name["builders"][0]["masterids"], serde_json::json!([h.master.master_id]));
    let (_, stable) = h.get("/api/v2/builders?tags__contains=stable").await;
    assert_eq!(stable["meta"]["total"], 2);

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
