//! From a red build to the cause, on real builds: CPython's own regrtest
//! (this machine's `python3 -m test`) runs `tests/regrtest` (a passing, a
//! failing, a flaky and a crashing test file) on `cascade-worker` and on a
//! stock buildbot-worker; the API, the pages and a rerun show what it said.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cascade_testkit::test_both;
use serde_json::{Value, json};

use crate::harness::Harness;
use crate::workers::{BuildbotWorker, Kind, config, make_repo, push, run_master, wait_for};

fn regrtest_dir() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/regrtest");
    dir.canonicalize().expect("tests/regrtest").display().to_string()
}

async fn page(h: &Harness, uri: &str) -> (StatusCode, String) {
    let (status, body) = h.send(Request::get(uri).body(Body::empty()).expect("request")).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn build_numbered(h: &Harness, number: i64) -> cascade_store::records::BuildRecord {
    wait_for(&format!("build {number} to finish"), Duration::from_secs(90), || async {
        let q = cascade_store::ListQuery::default().eq("number", number);
        let b = h.store.list_builds(&q).await.ok()?.items.into_iter().next()?;
        (b.complete && b.results != Some(5)).then_some(b)
    })
    .await
}

async fn a_failing_regrtest_run_is_diagnosed(db: &cascade_testkit::TestDb, kind: Kind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let mark = dir.path().join("flaky-mark");
    let steps = format!(
        r#"
  {{ name = "test", command = ["python3", "-m", "test", "--slow-ci", "--testdir", "{tests}", "--junit-xml", "results.xml"],
     env = {{ CASCADE_FLAKY_MARK = "{mark}" }} }},
  {{ name = "upload results", upload = {{ src = "results.xml", dest = "results.xml" }} }},
  {{ name = "rerun", command = ["echo", "seed=%(prop:randseed)s tests=%(prop:tests)s"] }},
  {{ name = "pieces", command = ["sh", "-c", "printf 'one li'; sleep 0.5; printf 'ne\\ntwo'"] }},"#,
        tests = regrtest_dir(),
        mark = mark.display(),
    );
    let text = config(&repo, &steps)
        .replace(r#"rules = { stop = ["core-dev"] }"#, r#"rules = { stop = ["core-dev"], rebuild = ["core-dev"] }"#);
    let h = Harness::with_config(db, &text).await;
    let running = run_master(&h).await;
    let _worker = BuildbotWorker::start_kind(kind, dir.path(), running.port_for(kind), "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    push(&h, &sha).await;
    let build = build_numbered(&h, 1).await;
    assert_eq!(build.results, Some(2), "FAILURE: {}", build.state_string);

    let sets = api_sets(&h, build.buildid).await;
    let regrtest = &sets[0];
    assert_eq!(regrtest["description"], "regrtest: test");
    assert_eq!((regrtest["category"].as_str(), regrtest["value_unit"].as_str()), (Some("pass_fail"), Some("boolean")));
    assert_eq!((regrtest["tests_passed"].as_i64(), regrtest["tests_failed"].as_i64()), (Some(2), Some(2)));
    assert_eq!(regrtest["complete"], true);
    let junit = sets.iter().find(|s| s["description"] == "junit: results.xml").expect("the uploaded JUnit file's set");
    assert!(junit["tests_failed"].as_i64().is_some_and(|n| n >= 1), "{junit}");

    let (status, results) = h.get(&format!("/api/v2/test_result_sets/{}/results", regrtest["test_result_setid"])).await;
    assert_eq!(status, StatusCode::OK);
    let value = |name: &str| {
        results["test_results"]
            .as_array()
            .and_then(|r| r.iter().find(|t| t["test_name"] == name))
            .map(|t| t["value"].clone())
    };
    assert_eq!(value("test_fail"), Some(json!("0")));
    assert_eq!(value("test_crash"), Some(json!("0")));
    assert_eq!(value("test_pass"), Some(json!("1")));
    assert_eq!(value("test_flaky"), Some(json!("1")), "flaky counts as passed: it passed on re-run");

    let (status, runs) = h.get(&format!("/api/v2/builds/{}/test_runs", build.buildid)).await;
    assert_eq!(status, StatusCode::OK);
    let run = &runs["test_runs"][0];
    let seed = run["seed"].as_str().expect("the seed").to_string();
    assert!(seed.chars().all(|c| c.is_ascii_digit()), "{seed}");
    let mut failed: Vec<&str> = run["failed"].as_array().expect("failed").iter().filter_map(Value::as_str).collect();
    failed.sort_unstable();
    assert_eq!(failed, ["test_crash", "test_fail"]);
    assert_eq!(run["flaky"], json!(["test_flaky"]));
    let reproduce = run["reproduce"].as_str().expect("a reproduce command");
    assert!(reproduce.contains("-m test --slow-ci --testdir"), "{reproduce}");
    assert!(reproduce.contains(&format!("--randseed {seed} ")), "{reproduce}");
    assert!(!reproduce.contains("--junit-xml"), "{reproduce}");
    assert!(
        run["fatal"]
            .as_array()
            .is_some_and(|f| f.iter().any(|l| l.as_str().is_some_and(|l| l.contains("Fatal Python error"))))
    );
    let method = run["problems"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["method"].as_str().is_some_and(|m| m.starts_with("test_fail."))));
    assert!(method.is_some_and(|m| m["detail"].as_str().is_some_and(|d| d.contains("AssertionError"))), "{run}");

    // Output sent in pieces that end mid-line is logged as whole lines.
    let steps = h.store.list_steps(build.buildid).await.expect("steps");
    let pieces = steps.iter().find(|s| s.name == "pieces").expect("the pieces step");
    let lines = crate::workers::log_of(&h, pieces).await;
    let output: Vec<&String> = lines.iter().filter(|l| l.starts_with('o')).collect();
    assert_eq!(output, ["oone line", "otwo"], "{lines:?}");

    check_pages(&h, &build, regrtest["test_result_setid"].as_i64().expect("id"), &seed).await;
    check_rerun(&h, &build, &seed).await;
}

async fn api_sets(h: &Harness, build_id: i64) -> Vec<Value> {
    let (status, sets) = h.get(&format!("/api/v2/builds/{build_id}/test_result_sets")).await;
    assert_eq!(status, StatusCode::OK, "{sets}");
    assert_eq!(sets["meta"]["total"], 2, "one set from the log, one from the JUnit upload: {sets}");
    sets["test_result_sets"].as_array().cloned().expect("sets")
}

async fn check_pages(h: &Harness, build: &cascade_store::records::BuildRecord, set_id: i64, seed: &str) {
    let href = format!("/builders/{}/builds/{}", build.builderid, build.number);
    let (status, html) = page(h, &href).await;
    assert_eq!(status, StatusCode::OK);
    let failed_at = html.find("Failed tests").expect("a Failed tests section");
    assert!(failed_at < html.find("<h3>Steps</h3>").expect("steps"), "failures come first");
    for want in [
        "id=\"test-test_fail\"",
        "id=\"test-test_crash\"",
        "Reproduce",
        "Flaky",
        "test_flaky",
        "Fatal Python error",
        "AssertionError",
    ] {
        assert!(html.contains(want), "the build page shows {want:?}");
    }
    assert!(html.contains(&format!("--randseed {seed}")), "the reproduce command carries the seed");
    let (status, order) = page(h, &format!("{href}/tests/{set_id}/order?test=test_fail")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order, "test_fail\n", "with -j each test file runs in a fresh process");
    assert_eq!(page(h, &format!("{href}/tests/{set_id}/order?test=test_nope")).await.0, StatusCode::NOT_FOUND);

    let (_, console) = page(h, "/console").await;
    assert!(
        console.contains("title=\"2 failed tests, first test_"),
        "the cell says how many failed (once each, though the log and the JUnit file both name them): {console}"
    );
    assert!(console.contains(&format!("{href}#test-test_")), "the cell links to the first failure");
    let (status, tests) = page(h, "/tests").await;
    assert_eq!(status, StatusCode::OK);
    assert!(tests.contains("<code>test_fail</code>") && tests.contains("<code>test_crash</code>"), "{tests}");
    assert!(tests.contains("<code>test_flaky</code>"), "the flaky table names test_flaky");
    let (_, filtered) = page(h, "/tests?test=crash").await;
    assert!(filtered.contains("<code>test_crash</code>") && !filtered.contains("<code>test_fail</code>"));
}

async fn check_rerun(h: &Harness, build: &cascade_store::records::BuildRecord, seed: &str) {
    let (token, hash) = cascade_master::auth::new_token();
    h.store.create_api_token("ann", "test", &hash, 0).await.expect("token");
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "rerun", "params": {} });
    let req = Request::post(format!("/api/v2/builds/{}", build.buildid))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(body.to_string()))
        .expect("request");
    let (status, answer) = h.send_json(req).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let rerun = build_numbered(h, 2).await;
    let steps = h.store.list_steps(rerun.buildid).await.expect("steps");
    let echo = steps.iter().find(|s| s.name == "rerun").expect("the rerun step");
    let lines = crate::workers::log_of(h, echo).await;
    let want = format!("oseed={seed} tests=test_crash test_fail");
    let want_other = format!("oseed={seed} tests=test_fail test_crash");
    assert!(lines.iter().any(|l| *l == want || *l == want_other), "{lines:?}");
}

test_both!(a_failing_regrtest_run_is_diagnosed_on_cascade_worker, |db| {
    a_failing_regrtest_run_is_diagnosed(db, Kind::Cascade).await;
});
test_both!(a_failing_regrtest_run_is_diagnosed_on_buildbot_worker, |db| {
    a_failing_regrtest_run_is_diagnosed(db, Kind::Buildbot).await;
});
