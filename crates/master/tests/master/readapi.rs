//! The read API on a store filled by a real build: every route of the
//! OpenAPI document answers as the document says, objects have Buildbot's
//! fields (name by name) and types, lists filter, order, page and project.
//! And `cascade status`, `force` and `stop` against a served master.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cascade_master::api::openapi::{ROUTES, spec};
use cascade_testkit::test_both;
use serde_json::{Value, json};

use crate::harness::Harness;
use crate::workers::{BuildbotWorker, Kind, config, finished_build, make_repo, push, run_master, wait_for};

/// Buildbot 4's field names per resource (`master/buildbot/data/*.py`);
/// `properties` is optional where Buildbot's is `NoneOk`.
const BUILDBOT_FIELDS: &[(&str, &[&str])] = &[
    (
        "test_result_sets",
        &[
            "test_result_setid",
            "builderid",
            "buildid",
            "stepid",
            "description",
            "category",
            "value_unit",
            "tests_passed",
            "tests_failed",
            "complete",
        ],
    ),
    (
        "test_results",
        &[
            "test_resultid",
            "builderid",
            "test_result_setid",
            "test_name",
            "test_code_path",
            "line",
            "duration_ns",
            "value",
        ],
    ),
    (
        "builds",
        &[
            "buildid",
            "number",
            "builderid",
            "buildrequestid",
            "workerid",
            "masterid",
            "started_at",
            "complete",
            "complete_at",
            "locks_duration_s",
            "results",
            "state_string",
        ],
    ),
    (
        "buildrequests",
        &[
            "buildrequestid",
            "buildsetid",
            "builderid",
            "priority",
            "claimed",
            "claimed_at",
            "claimed_by_masterid",
            "complete",
            "results",
            "submitted_at",
            "complete_at",
            "waited_for",
        ],
    ),
    (
        "builders",
        &[
            "builderid",
            "name",
            "masterids",
            "description",
            "description_format",
            "description_html",
            "projectid",
            "tags",
        ],
    ),
    (
        "steps",
        &[
            "stepid",
            "number",
            "name",
            "buildid",
            "started_at",
            "locks_acquired_at",
            "complete",
            "complete_at",
            "results",
            "state_string",
            "urls",
            "hidden",
        ],
    ),
    ("logs", &["logid", "name", "slug", "stepid", "complete", "num_lines", "type"]),
    (
        "workers",
        &["workerid", "name", "connected_to", "configured_on", "workerinfo", "paused", "pause_reason", "graceful"],
    ),
    (
        "changes",
        &[
            "changeid",
            "parent_changeids",
            "author",
            "committer",
            "files",
            "comments",
            "revision",
            "when_timestamp",
            "branch",
            "category",
            "revlink",
            "properties",
            "repository",
            "project",
            "codebase",
            "sourcestamp",
        ],
    ),
    (
        "buildsets",
        &[
            "bsid",
            "external_idstring",
            "reason",
            "rebuilt_buildid",
            "submitted_at",
            "complete",
            "complete_at",
            "results",
            "sourcestamps",
            "parent_buildid",
            "parent_relationship",
        ],
    ),
    ("masters", &["masterid", "name", "active", "last_active"]),
    ("schedulers", &["schedulerid", "name", "enabled", "master"]),
];

/// Every read path of Buildbot 4.3's Data API (the `pathPatterns` of
/// `master/buildbot/data/*.py`): each answers here, or is one of
/// [`cascade_master::api::NOT_SERVED`] and answers a 404 that says why.
const BUILDBOT_PATHS: &[&str] = &[
    "/application.spec",
    "/branches/n:branchid",
    "/builders",
    "/builders/:builderid/forceschedulers",
    "/builders/n:builderid",
    "/builders/n:builderid/buildrequests",
    "/builders/n:builderid/builds",
    "/builders/n:builderid/builds/n:build_number",
    "/builders/n:builderid/builds/n:build_number/changes",
    "/builders/n:builderid/builds/n:build_number/data",
    "/builders/n:builderid/builds/n:build_number/data/i:name",
    "/builders/n:builderid/builds/n:build_number/data/i:name/value",
    "/builders/n:builderid/builds/n:build_number/properties",
    "/builders/n:builderid/builds/n:build_number/steps",
    "/builders/n:builderid/builds/n:build_number/steps/i:step_name",
    "/builders/n:builderid/builds/n:build_number/steps/i:step_name/logs",
    "/builders/n:builderid/builds/n:build_number/steps/i:step_name/logs/i:log_slug",
    "/builders/n:builderid/builds/n:build_number/steps/i:step_name/logs/i:log_slug/contents",
    "/builders/n:builderid/builds/n:build_number/steps/i:step_name/logs/i:log_slug/raw",
    "/builders/n:builderid/builds/n:build_number/steps/i:step_name/logs/i:log_slug/raw_inline",
    "/builders/n:builderid/builds/n:build_number/steps/n:step_number",
    "/builders/n:builderid/builds/n:build_number/steps/n:step_number/logs",
    "/builders/n:builderid/builds/n:build_number/steps/n:step_number/logs/i:log_slug",
    "/builders/n:builderid/builds/n:build_number/steps/n:step_number/logs/i:log_slug/contents",
    "/builders/n:builderid/builds/n:build_number/steps/n:step_number/logs/i:log_slug/raw",
    "/builders/n:builderid/builds/n:build_number/steps/n:step_number/logs/i:log_slug/raw_inline",
    "/builders/n:builderid/masters",
    "/builders/n:builderid/masters/n:masterid",
    "/builders/n:builderid/test_result_sets",
    "/builders/n:builderid/workers",
    "/builders/n:builderid/workers/i:name",
    "/builders/n:builderid/workers/n:workerid",
    "/builders/s:buildername",
    "/builders/s:buildername/builds",
    "/builders/s:buildername/builds/n:build_number",
    "/builders/s:buildername/builds/n:build_number/data",
    "/builders/s:buildername/builds/n:build_number/data/i:name",
    "/builders/s:buildername/builds/n:build_number/data/i:name/value",
    "/builders/s:buildername/builds/n:build_number/steps",
    "/builders/s:buildername/builds/n:build_number/steps/i:step_name",
    "/builders/s:buildername/builds/n:build_number/steps/i:step_name/logs",
    "/builders/s:buildername/builds/n:build_number/steps/i:step_name/logs/i:log_slug",
    "/builders/s:buildername/builds/n:build_number/steps/n:step_number",
    "/builders/s:buildername/builds/n:build_number/steps/n:step_number/logs",
    "/builders/s:buildername/builds/n:build_number/steps/n:step_number/logs/i:log_slug",
    "/builders/s:buildername/test_result_sets",
    "/buildrequests",
    "/buildrequests/n:buildrequestid",
    "/buildrequests/n:buildrequestid/builds",
    "/builds",
    "/builds/n:buildid",
    "/builds/n:buildid/changes",
    "/builds/n:buildid/data",
    "/builds/n:buildid/data/i:name",
    "/builds/n:buildid/data/i:name/value",
    "/builds/n:buildid/properties",
    "/builds/n:buildid/property_list",
    "/builds/n:buildid/steps",
    "/builds/n:buildid/steps/i:step_name",
    "/builds/n:buildid/steps/i:step_name/logs",
    "/builds/n:buildid/steps/i:step_name/logs/i:log_slug",
    "/builds/n:buildid/steps/i:step_name/logs/i:log_slug/contents",
    "/builds/n:buildid/steps/i:step_name/logs/i:log_slug/raw",
    "/builds/n:buildid/steps/i:step_name/logs/i:log_slug/raw_inline",
    "/builds/n:buildid/steps/n:step_number",
    "/builds/n:buildid/steps/n:step_number/logs",
    "/builds/n:buildid/steps/n:step_number/logs/i:log_slug",
    "/builds/n:buildid/steps/n:step_number/logs/i:log_slug/contents",
    "/builds/n:buildid/steps/n:step_number/logs/i:log_slug/raw",
    "/builds/n:buildid/steps/n:step_number/logs/i:log_slug/raw_inline",
    "/builds/n:buildid/test_result_sets",
    "/builds/n:buildid/triggered_builds",
    "/buildsets",
    "/buildsets/:buildsetid/sourcestamps",
    "/buildsets/n:bsid",
    "/buildsets/n:bsid/properties",
    "/buildsets/n:bsid/properties_list",
    "/changes",
    "/changes/n:changeid",
    "/changes/n:changeid/builds",
    "/changes/n:changeid/properties_list",
    "/changesources",
    "/changesources/n:changesourceid",
    "/codebases",
    "/codebases/n:codebaseid",
    "/codebases/n:codebaseid/branches",
    "/codebases/n:codebaseid/commit_range/n:commitid1/n:commitid2/commits_common_parent",
    "/codebases/n:codebaseid/commit_range/n:commitid1/n:commitid2/test_result_sets",
    "/codebases/n:codebaseid/commits",
    "/codebases/n:codebaseid/commits_by_revision/s:revision",
    "/commits/n:commitid",
    "/forceschedulers",
    "/forceschedulers/i:schedulername",
    "/logchunks",
    "/logs/n:logid",
    "/logs/n:logid/contents",
    "/logs/n:logid/raw",
    "/logs/n:logid/raw_inline",
    "/masters",
    "/masters/n:masterid",
    "/masters/n:masterid/builders",
    "/masters/n:masterid/builders/n:builderid",
    "/masters/n:masterid/builders/n:builderid/workers",
    "/masters/n:masterid/builders/n:builderid/workers/i:name",
    "/masters/n:masterid/builders/n:builderid/workers/n:workerid",
    "/masters/n:masterid/changesources",
    "/masters/n:masterid/changesources/n:changesourceid",
    "/masters/n:masterid/schedulers",
    "/masters/n:masterid/schedulers/n:schedulerid",
    "/masters/n:masterid/workers",
    "/masters/n:masterid/workers/i:name",
    "/masters/n:masterid/workers/n:workerid",
    "/projects",
    "/projects/i:projectname",
    "/projects/n:projectid",
    "/projects/n:projectid/builders",
    "/projects/n:projectid/codebases/i:codebasename",
    "/schedulers",
    "/schedulers/n:schedulerid",
    "/sourcestamps",
    "/sourcestamps/n:ssid",
    "/sourcestamps/n:ssid/changes",
    "/steps/n:stepid",
    "/steps/n:stepid/logs",
    "/steps/n:stepid/logs/i:log_slug",
    "/steps/n:stepid/logs/i:log_slug/contents",
    "/steps/n:stepid/logs/i:log_slug/raw",
    "/steps/n:stepid/logs/i:log_slug/raw_inline",
    "/steps/n:stepid/test_result_sets",
    "/test_result_sets",
    "/test_result_sets/n:test_result_setid",
    "/test_result_sets/n:test_result_setid/results",
    "/workers",
    "/workers/i:name",
    "/workers/n:workerid",
    "/workers/n:workerid/builders",
    "/workers/n:workerid/builds",
];

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

async fn get_raw(h: &Harness, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    h.app_response(Request::get(uri).body(Body::empty()).expect("request")).await
}

test_both!(every_route_answers_as_documented_with_buildbots_shapes, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    // The first step also runs CPython's regrtest on one passing file, so the build has a test result set.
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/regrtest");
    let steps = format!(
        r#"  {{ name = "hello", command = ["sh", "-c", "echo 'one <b>'; echo two >&2; echo three; python3 -m test --testdir {} test_pass"] }},
  {{ name = "fail", command = ["false"] }},"#,
        tests.canonicalize().expect("tests/regrtest").display()
    );
    let text = format!("{}\n[[scheduler]]\nname = \"force\"\nkind = \"force\"\n", config(&repo, &steps));
    let h = Harness::with_config(db, &text).await;
    let running = run_master(&h).await;
    let _worker = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), running.port, "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    push(&h, &sha).await;
    let build = finished_build(&h, Duration::from_secs(60)).await;
    let steps = h.store.list_steps(build.buildid).await.expect("steps");
    let log = h.store.list_logs(steps[1].stepid).await.expect("logs")[0].clone();
    let change = h.store.build_changes(build.buildid).await.expect("changes")[0].changeid;
    let request = build.buildrequestid;
    let buildset = h.store.get_buildrequest(request).await.expect("get").expect("request").buildsetid;
    let worker = h.store.list_workers(&Default::default()).await.expect("workers").items[0].workerid;
    let scheduler = h.store.list_schedulers().await.expect("schedulers")[0].id;
    let sets = h.store.list_test_sets(&cascade_store::ListQuery::default()).await.expect("sets");
    let set = sets.items.first().expect("the build's test result set").test_result_setid;
    let ss = h.store.get_buildset(buildset).await.expect("get").expect("buildset").sourcestamps[0].ssid;

    // Every documented route, with real ids: 200 and the documented envelope.
    let doc = spec();
    for route in ROUTES {
        let documented = &doc["paths"][route.path][route.method];
        assert!(documented.is_object(), "{} {} is in the document", route.method, route.path);
        let ids = [
            ("/changes/{id}", change),
            ("/buildsets/{id}", buildset),
            ("/buildrequests/{id}", request),
            ("/builds/{id}", build.buildid),
            ("/steps/{id}", steps[1].stepid),
            ("/logs/{id}", log.logid),
            ("/workers/{id}", worker),
            ("/schedulers/{id}", scheduler),
            ("/test_result_sets/{id}", set),
            ("/sourcestamps/{id}", ss),
        ];
        let mut uri = format!("/api/v2{}", route.path);
        for (prefix, value) in ids {
            let head = prefix.trim_end_matches("/{id}");
            if route.path.starts_with(&format!("{head}/{{id}}")) {
                uri = uri.replacen("{id}", &value.to_string(), 1);
            }
        }
        uri = uri
            .replace("{id_or_name}", "unix main")
            .replace("{builder}", "unix main")
            .replace("{buildid}", &build.buildid.to_string())
            .replace("{stepid}", &steps[1].stepid.to_string())
            .replace("{step}", "hello")
            .replace("{slug}", "stdio")
            .replace("/builders/{id}", &format!("/builders/{}", build.builderid))
            .replace("{number}", &build.number.to_string())
            .replace("{name}", "force")
            .replace("{masterid}", &build.masterid.to_string())
            .replace("{worker}", "w1")
            .replace("{schedulerid}", &scheduler.to_string())
            .replace("{logid}", &log.logid.to_string())
            .replace(' ', "%20");
        assert!(!uri.contains('{'), "every parameter filled: {uri}");
        if route.method == "post" {
            let req = Request::post(&uri)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"method":"x"}"#))
                .expect("request");
            let (status, body) = h.send(req).await;
            assert!(
                status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST,
                "POST {uri} without a token: {status}"
            );
            assert!(documented["responses"][status.as_str()].is_object(), "{status} is documented for POST {uri}");
            let v: Value = serde_json::from_slice(&body).expect("a JSON error");
            assert!(v["error"].is_string());
            continue;
        }
        let (status, headers, body) = get_raw(&h, &uri).await;
        assert_eq!(status, StatusCode::OK, "GET {uri}: {}", String::from_utf8_lossy(&body));
        match route.key {
            Some(key) => {
                let v: Value = serde_json::from_slice(&body).expect("JSON");
                assert!(v[key].is_array(), "GET {uri} answers {{{key}: [...]}}: {v}");
                assert!(v["meta"]["total"].is_i64(), "GET {uri} has meta.total");
                let empty = v[key].as_array().expect("array").is_empty();
                let none_here = ["projects", "changesources", "codebases", "build_data"].contains(&key)
                    || route.path.ends_with("/triggered_builds");
                assert_eq!(empty, none_here, "GET {uri} found the build's objects (none for {key} here)");
            }
            None => {
                let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
                assert!(ct.starts_with("text/plain"), "{uri}: {ct}");
            }
        }
    }

    // Every path of Buildbot's Data API: served, or a documented 404.
    let mut wrong = Vec::new();
    let placeholder = regex::Regex::new(r"[nis]?:[a-z_0-9]+").expect("regex");
    for pattern in BUILDBOT_PATHS {
        let uri = pattern
            .replace("n:builderid", &build.builderid.to_string())
            .replace("s:buildername", "unix%20main")
            .replace("n:build_number", &build.number.to_string())
            .replace("i:step_name", "hello")
            .replace("n:step_number", &steps[1].number.to_string())
            .replace("i:log_slug", "stdio")
            .replace("n:buildid", &build.buildid.to_string())
            .replace("n:buildrequestid", &request.to_string())
            .replace("n:bsid", &buildset.to_string())
            .replace(":buildsetid", &buildset.to_string())
            .replace("n:changeid", &change.to_string())
            .replace("n:logid", &log.logid.to_string())
            .replace("n:masterid", &build.masterid.to_string())
            .replace("n:workerid", &worker.to_string())
            .replace("/workers/i:name", "/workers/w1")
            .replace("n:schedulerid", &scheduler.to_string())
            .replace("i:schedulername", "force")
            .replace("n:ssid", &ss.to_string())
            .replace("n:stepid", &steps[1].stepid.to_string())
            .replace("n:test_result_setid", &set.to_string())
            .replace("s:revision", &sha);
        // What has no such thing here (codebases, projects, build data) gets any id.
        let uri = placeholder.replace_all(&uri, "1").into_owned();
        let (status, _, body) = get_raw(&h, &format!("/api/v2{uri}")).await;
        let documented = cascade_master::api::NOT_SERVED.iter().any(|(p, _)| p == pattern);
        let want = if documented { StatusCode::NOT_FOUND } else { StatusCode::OK };
        if status != want {
            wrong.push(format!(
                "{pattern} ({uri}): {status} {}",
                String::from_utf8_lossy(&body).chars().take(120).collect::<String>()
            ));
        }
    }
    assert!(wrong.is_empty(), "Buildbot's paths answer here or are documented 404s:\n{}", wrong.join("\n"));
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/coming-from-buildbot.md"))
        .expect("docs/coming-from-buildbot.md");
    for (path, _) in cascade_master::api::NOT_SERVED {
        assert!(doc.contains(&format!("`{path}`")), "{path} is listed in docs/coming-from-buildbot.md");
    }

    // Objects have exactly Buildbot's fields.
    for (resource, fields) in BUILDBOT_FIELDS {
        let uri = match *resource {
            "steps" => format!("/api/v2/builds/{}/steps", build.buildid),
            "logs" => format!("/api/v2/steps/{}/logs", steps[1].stepid),
            "test_results" => format!("/api/v2/test_result_sets/{set}/results"),
            other => format!("/api/v2/{other}"),
        };
        let (status, v) = h.get(&uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let first = &v[*resource][0];
        let mut got = keys(first);
        got.remove("properties");
        if *resource == "workers" {
            assert!(got.remove("cascade_info"), "Cascade's worker facts are under their own key: {first}");
        }
        let want: BTreeSet<String> =
            fields.iter().map(std::string::ToString::to_string).filter(|f| f != "properties").collect();
        assert_eq!(got, want, "{resource}: {first}");
    }
    // ...and Buildbot's types.
    let (_, v) = h.get(&format!("/api/v2/builds/{}", build.buildid)).await;
    let b = &v["builds"][0];
    assert_eq!(b["properties"], json!({}), "builds carry properties, empty unless asked for: {b}");
    assert!(b["started_at"].is_i64() && b["complete_at"].is_i64(), "Unix seconds: {b}");
    assert_eq!(b["complete"], true);
    assert_eq!(b["results"], 2);
    // Worded as Buildbot words them: the failing step's command, quoted.
    assert_eq!(b["state_string"], "failed 'false' (failure)", "{b}");
    let (_, v) = h.get(&format!("/api/v2/builds/{}/steps", build.buildid)).await;
    assert_eq!(v["steps"][1]["name"], "hello");
    assert_eq!(v["steps"][1]["results"], 0);
    assert_eq!(v["steps"][2]["results"], 2);
    assert_eq!(
        (v["steps"][1]["state_string"].as_str(), v["steps"][2]["state_string"].as_str()),
        (Some("'sh -c ...'"), Some("'false' (failure)"))
    );

    // property=, the properties route, raw logs.
    let (_, v) = h.get(&format!("/api/v2/builds/{}?property=buildername&property=got_revision", build.buildid)).await;
    assert_eq!(v["builds"][0]["properties"]["got_revision"], json!([sha, "Git"]));
    assert_eq!(keys(&v["builds"][0]["properties"]).len(), 2);
    let (_, v) = h.get(&format!("/api/v2/builds/{}/properties", build.buildid)).await;
    assert_eq!(v["properties"][0]["workername"], json!(["w1", "Build"]));
    let (_, _, raw) = get_raw(&h, &format!("/api/v2/logs/{}/raw", log.logid)).await;
    let raw = String::from_utf8(raw).expect("text");
    let lines: Vec<&str> = raw.lines().collect();
    for want in ["one <b>", "two", "three"] {
        assert!(lines.contains(&want), "{want:?} without its stream marker: {raw}");
    }
    assert!(!lines.contains(&"oone <b>"));
    // The same log by builder name, build number, step number and slug.
    let nested = format!("/api/v2/builders/unix%20main/builds/{}/steps/{}/logs/stdio", build.number, steps[1].number);
    let (_, _, again) = get_raw(&h, &format!("{nested}/raw")).await;
    assert_eq!(String::from_utf8(again).expect("text"), raw);
    let (_, v) = h.get(&nested).await;
    assert_eq!(v["logs"][0]["logid"], log.logid);
    let (_, v) = h.get(&format!("/api/v2/builds/{}/steps/hello/logs/stdio/contents?limit=1", build.buildid)).await;
    assert_eq!(v["logchunks"][0]["logid"], log.logid);
    for missing in [
        format!("/api/v2/builds/{}/steps/nosuch/logs", build.buildid),
        format!("/api/v2/builds/{}/steps/hello/logs/nosuch/raw", build.buildid),
        "/api/v2/builders/nobody/builds/1/steps".to_string(),
        format!("/api/v2/steps/{}/logs/nosuch", steps[1].stepid),
    ] {
        let (status, v) = h.get(&missing).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}: {v}");
    }

    // Filters, order, paging, projection.
    push(&h, &sha).await;
    let second = wait_for("a second build", Duration::from_secs(60), || async {
        h.store.get_build(build.buildid + 1).await.ok().flatten().filter(|b| b.complete)
    })
    .await;
    let (_, v) = h.get("/api/v2/builds?order=-number&limit=1&total=1").await;
    assert_eq!((v["builds"][0]["number"].clone(), v["meta"]["total"].clone()), (json!(second.number), json!(2)));
    let (_, v) = h.get("/api/v2/builds?order=number&limit=1&offset=1").await;
    assert_eq!(v["builds"][0]["number"], second.number);
    let (_, v) = h.get(&format!("/api/v2/builds?number__gt={}", build.number)).await;
    assert_eq!(v["builds"].as_array().map(Vec::len), Some(1));
    let (_, v) =
        h.get(&format!("/api/v2/builds?number__in={},{}&results=2&complete=true", build.number, second.number)).await;
    assert_eq!(v["meta"]["total"], 2);
    let (_, v) = h.get("/api/v2/builds?field=buildid&field=results").await;
    assert_eq!(keys(&v["builds"][0]), BTreeSet::from(["buildid".to_string(), "results".to_string()]));
    let (_, v) = h.get("/api/v2/steps/0").await;
    assert!(v["error"].is_string());

    // Nonsense is a JSON 400 or 404, never a 500.
    for (uri, want) in [
        ("/api/v2/builds?colour=red", StatusCode::BAD_REQUEST),
        ("/api/v2/builds?number__near=3", StatusCode::BAD_REQUEST),
        ("/api/v2/builds?limit=many", StatusCode::BAD_REQUEST),
        ("/api/v2/builds/abc", StatusCode::NOT_FOUND),
        ("/api/v2/nothing/here", StatusCode::NOT_FOUND),
        ("/api/v2/logs/999999/raw", StatusCode::NOT_FOUND),
        ("/api/v2/forceschedulers/main", StatusCode::NOT_FOUND),
    ] {
        let (status, v) = h.get(uri).await;
        assert_eq!(status, want, "{uri}: {v}");
        assert!(v["error"].is_string(), "{uri}");
    }
});

test_both!(cascade_status_force_and_stop_against_a_served_master, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, _) = make_repo(dir.path());
    let flag = dir.path().join("broken");
    let step = format!(r#"{{ name = "check", command = ["sh", "-c", "test ! -f {}"] }},"#, flag.display());
    let text = format!("{}\n[[scheduler]]\nname = \"force\"\nkind = \"force\"\n", config(&repo, &step))
        .replace("branches = [\"main\"]", "branches = [\"main\"]\ntags = [\"stable\"]")
        .replace("rules = { stop = [\"core-dev\"] }", "rules = { stop = [\"core-dev\"], force = [\"core-dev\"] }");
    assert!(text.contains("force = [\"core-dev\"]"));
    let h = Harness::with_config(db, &text).await;
    let running = run_master(&h).await;
    let url = h.url();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(args)
            .env("CASCADE_URL", &url)
            .env_remove("CASCADE_TOKEN")
            .output()
            .expect("cascade runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    // No builds yet: nothing is failing; the builder has no worker yet.
    let (code, out, err) = cli(&["status", "--branch", "main"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("BUILDER "), "a header row: {out}");
    let line = out.lines().find(|l| l.starts_with("unix main")).expect("the builder's line");
    assert!(line.contains("no builds") && line.ends_with("[offline: w1]"), "{line}");
    // An unknown branch is bad usage, saying which there are; no master is 3.
    let (code, out, err) = cli(&["status", "--branch", "nosuch"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("no branch \"nosuch\" here; the branches are main"), "{err}");
    let unreachable = std::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["status", "--url", "http://127.0.0.1:9"])
        .output()
        .expect("cascade runs");
    assert_eq!(unreachable.status.code(), Some(3), "{}", String::from_utf8_lossy(&unreachable.stderr));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("did not answer"));

    let _worker = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), running.port, "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    // A failing build: the flag file exists.
    std::fs::write(&flag, "").expect("flag");
    let (token, hash) = cascade_master::auth::new_token();
    h.store.create_api_token("ann", "cli", &hash, 0).await.expect("token");
    let (code, out, err) = cli(&["force", "--token", &token, "unix main"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("forced: buildset"), "{out}");
    let failed = finished_build(&h, Duration::from_secs(60)).await;
    assert_eq!(failed.results, Some(2));

    let (code, out, err) = cli(&["status", "--branch", "main", "--tag", "stable"]);
    assert_eq!(code, Some(1), "a failing builder fails the command: {out}{err}");
    let line = out.lines().find(|l| l.starts_with("unix main")).expect("the builder's line");
    assert!(line.contains("failure") && line.contains(&format!("#{}", failed.number)), "{line}");
    let page = format!("{url}/builders/{}/builds/{}", failed.builderid, failed.number);
    assert!(line.ends_with(&page), "a failing build's line ends with its page: {line}");
    assert!(!out.contains('\x1b'), "no colour when not a terminal");
    let (_, out, _) = cli(&["status", "--tag", "nonexistent-tag"]);
    assert_eq!(out.lines().count(), 1, "only the header: {out}");
    let (code, out, _) = cli(&["status", "--json", "--failing"]);
    assert_eq!(code, Some(1));
    let rows: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(rows[0]["builder"], "unix main");
    assert_eq!(rows[0]["results"], 2);

    // Fixed: the next build passes and the status turns green.
    std::fs::remove_file(&flag).expect("unflag");
    let (code, _, err) = cli(&["force", "--token", &token, "--reason", "fixed", "unix main"]);
    assert_eq!(code, Some(0), "{err}");
    wait_for("the passing build", Duration::from_secs(60), || async {
        h.store.get_build(failed.buildid + 1).await.ok().flatten().filter(|b| b.complete && b.results == Some(0))
    })
    .await;
    let (code, out, _) = cli(&["status", "--branch", "main", "--failing"]);
    assert_eq!(code, Some(0));
    assert_eq!(out, "all 1 builders passing\n", "nothing failing, and said so");

    // Stopping needs a token, and a build that runs.
    let (code, _, err) = cli(&["stop", &failed.buildid.to_string()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = cli(&["stop", "--token", &token, &failed.buildid.to_string()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("already finished"), "{err}");
});
