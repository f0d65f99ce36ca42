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
                assert_eq!(empty, key == "projects", "GET {uri} found the build's objects (none for projects)");
            }
            None => {
                let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
                assert!(ct.starts_with("text/plain"), "{uri}: {ct}");
            }
        }
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
    assert!(b["state_string"].as_str().is_some_and(|s| s.contains("fail")), "{b}");
    let (_, v) = h.get(&format!("/api/v2/builds/{}/steps", build.buildid)).await;
    assert_eq!(v["steps"][1]["name"], "hello");
    assert_eq!(v["steps"][1]["results"], 0);
    assert_eq!(v["steps"][2]["results"], 2);

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
    let (_, v) = h.get("/api/v2/builds?order=-number&limit=1").await;
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

    // No builds yet: nothing is failing.
    let (code, out, err) = cli(&["status", "--branch", "main"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("unix main") && out.contains("no builds"), "{out}");

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
    assert!(!out.contains('\x1b'), "no colour when not a terminal");
    let (_, out, _) = cli(&["status", "--tag", "nonexistent-tag"]);
    assert!(out.trim().is_empty(), "{out}");
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
    assert!(out.trim().is_empty(), "nothing failing: {out}");

    // Stopping needs a token, and a build that runs.
    let (code, _, err) = cli(&["stop", &failed.buildid.to_string()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = cli(&["stop", "--token", &token, &failed.buildid.to_string()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("already finished"), "{err}");
});
