//! Every page, rendered from a store holding hostile text: commit messages,
//! author names, branch and builder names, state strings and log lines with
//! `<script>`, quotes and ANSI sequences must appear as text. Plus what each
//! page must show (cells, verdicts, blamelists), and 304s for a known ETag.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cascade_model::Results;
use cascade_testkit::test_both;
use serde_json::{Value, json};

use crate::harness::{Harness, synthetic_push};

const HOSTILE: &str = "<script>alert(\"x\")</script> & 'quoted'";

pub(crate) fn config() -> String {
    r#"
[master]
title = "CI <b>&</b>"
name = "pages"
[github]
insecure_webhook = true
[[branch]]
name = "3.x<i>"
git = "main"
[[worker]]
name = "w<1>"
password = "pw"
[[factory]]
name = "f"
steps = [{ command = "make" }]
[[builder]]
name = "Fedora <script>"
workers = ["w<1>"]
factory = "f"
branches = ["3.x<i>"]
tags = ["stable", "tier-1"]
[[builder]]
name = "Windows"
workers = ["w<1>"]
factory = "f"
branches = ["3.x<i>"]
tags = ["tier-3"]
[[scheduler]]
name = "main"
kind = "branch"
branch = "3.x<i>"
tree_stable = "1s"
[[scheduler]]
name = "force"
kind = "force"
"#
    .to_string()
}

async fn html(h: &Harness, uri: &str) -> (StatusCode, String, axum::http::HeaderMap) {
    let (status, headers, body) = h.app_response(Request::get(uri).body(Body::empty()).expect("req")).await;
    (status, String::from_utf8(body).expect("utf-8"), headers)
}

fn assert_escaped(uri: &str, page: &str) {
    assert!(!page.contains("<script>alert"), "{uri} lets a script through:\n{page}");
    assert!(!page.contains("<b>&</b>"), "{uri}: the title is not escaped");
    assert!(!page.contains('\x1b'), "{uri}: raw ANSI escape in the page");
}

/// A finished build for `builder` covering the pushed change, with a step and its log.
pub(crate) async fn build_with_log(h: &Harness, builder: i64, results: Results, lines: &[&str]) -> (i64, i64) {
    let now = cascade_master::clock::now();
    let claimed = h.store.claim_build(builder, h.master.master_id(), None, now).await.expect("claim").expect("a build");
    let step = h.store.add_step(claimed.build_id, 0, "test <script>", now).await.expect("step");
    let log = h.store.add_log(step, "stdio", "s").await.expect("log");
    let lines: Vec<String> = lines.iter().map(std::string::ToString::to_string).collect();
    h.store.append_log_lines(log, 0, &lines).await.expect("lines");
    h.store.finish_log(log).await.expect("finish log");
    h.store.finish_step(step, results, &format!("test {HOSTILE}"), now).await.expect("finish step");
    h.store.finish_build(claimed.build_id, results, &format!("failed {HOSTILE}"), now).await.expect("finish");
    (claimed.build_id, claimed.number)
}

test_both!(every_page_renders_hostile_text_as_text, |db| {
    let h = Harness::frozen(db, &config()).await;
    let mut payload = synthetic_push("main", 5, 2, &["Lib/os.py"]);
    payload["commits"][1]["message"] = json!(format!("{HOSTILE}\n\nbody \u{1b}[31mred\u{1b}[0m"));
    payload["commits"][1]["author"]["name"] = json!("<b>Eve</b>");
    payload["head_commit"] = payload["commits"][1].clone();
    let changes = h.push(&payload, "pages-1").await;
    h.master.schedulers.tick(&h.store, cascade_master::clock::now() + 60).await.expect("tick");
    let fedora = h.builder("Fedora <script> 3.x<i>");
    let windows = h.builder("Windows 3.x<i>");
    let (build_id, number) = build_with_log(
        &h,
        fedora,
        Results::Failure,
        &["hstarting <script>", "o\u{1b}[1;31mFAIL\u{1b}[0m: test_os <b>", "e\"quotes\" & 'apostrophes'"],
    )
    .await;

    let uris = [
        "/".to_string(),
        "/console".into(),
        "/grid".into(),
        "/waterfall".into(),
        "/release".into(),
        "/builders".into(),
        format!("/builders/{fedora}"),
        format!("/builders/{fedora}/builds/{number}"),
        format!("/builders/{fedora}/builds/{number}/steps/0/logs/stdio"),
        "/workers".into(),
        "/workers/1".into(),
        "/changes".into(),
        format!("/changes/{}", changes[1]),
        "/pending".into(),
        "/login".into(),
    ];
    for uri in &uris {
        let (status, page, headers) = html(&h, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {page}");
        assert!(
            headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("text/html")),
            "{uri}"
        );
        assert_escaped(uri, &page);
    }

    // The console: the change's row, a failure cell linking to the build, a pending one for Windows.
    let (_, console, headers) = html(&h, "/console").await;
    let eve = console.find("Eve").map(|i| &console[i.saturating_sub(30)..i + 30]).unwrap_or("");
    assert!(eve.contains("&#60;b&#62;Eve") || eve.contains("&lt;b&gt;Eve"), "author escaped: {eve}");
    assert!(console.contains(&format!("href=\"/builders/{fedora}/builds/{number}\">✘</a>")), "{console}");
    assert!(console.contains("cell pending"), "Windows has not built yet");
    // 304 for the same page again.
    let etag = headers.get(header::ETAG).expect("an etag").clone();
    let req = Request::get("/console").header(header::IF_NONE_MATCH, etag).body(Body::empty()).expect("req");
    let (status, _, body) = h.app_response(req).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());

    // The release page: a failing stable tier-1 builder blocks; its breaking build and blamelist show.
    let (_, release, _) = html(&h, "/release").await;
    assert!(release.contains("verdict blocked"), "{release}");
    assert!(release.contains(&format!("#{number}")));
    assert!(!release.contains("Windows"), "only stable builders");

    // The build page: blamelist (both changes of the push), state, step, log link.
    let (_, build, _) = html(&h, &format!("/builders/{fedora}/builds/{number}")).await;
    assert!(build.contains("✘ failure"));
    assert!(build.contains(&format!("/changes/{}", changes[0])) && build.contains(&format!("/changes/{}", changes[1])));
    assert!(build.contains(&format!("/builders/{fedora}/builds/{number}/steps/0/logs/stdio")));

    // The log page: streams as classes, ANSI as spans, text escaped.
    let (_, log, _) = html(&h, &format!("/builders/{fedora}/builds/{number}/steps/0/logs/stdio")).await;
    assert!(log.contains("<span class=\"ansi-bold ansi-fg1\">FAIL</span>: test_os &lt;b&gt;"), "{log}");
    assert!(log.contains("class=\"stderr\""));
    let (status, raw, headers) = html(&h, &format!("/builders/{fedora}/builds/{number}/steps/0/logs/stdio/raw")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("text/plain"))
    );
    assert!(raw.starts_with("starting <script>\n"), "raw is the text itself: {raw}");
    let disposition = |h: &axum::http::HeaderMap| {
        h.get(header::CONTENT_DISPOSITION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
    };
    assert!(disposition(&headers).starts_with("attachment"), "raw downloads by default");
    let raw_uri = format!("/builders/{fedora}/builds/{number}/steps/0/logs/stdio/raw");
    let (_, shown, headers) = html(&h, &format!("{raw_uri}?download=0")).await;
    assert_eq!((shown, disposition(&headers).as_str()), (raw, "inline"), "?download=0 shows it in the browser");
    // The log page numbers its lines from 1 and links both.
    assert!(log.contains("lines 1–") && !log.contains("lines 0–"), "{log}");
    assert!(log.contains(&format!("{raw_uri}?download=0")), "{log}");

    // Filters: a tag narrows the builders list.
    let (_, stable, _) = html(&h, "/builders?tag=stable").await;
    assert!(stable.contains("Fedora &#60;script&#62;") && !stable.contains(">Windows 3.x"), "{stable}");
    let (_, pending, _) = html(&h, "/pending").await;
    assert!(pending.contains(&format!("/builders/{windows}")), "{pending}");

    // Unknown things are 404s.
    for uri in
        ["/builders/999999", "/builders/abc", &format!("/builders/{fedora}/builds/999"), "/changes/0", "/workers/999"]
    {
        assert_eq!(html(&h, uri).await.0, StatusCode::NOT_FOUND, "{uri}");
    }
    let _ = (build_id, Value::Null);
});

// A build that covers many changes lists them a page at a time (a build
// covering 92,975 changes once made an 11 MB page), with links to the rest.
test_both!(long_lists_on_a_build_page_are_paged, |db| {
    let folder = tempfile::tempdir().expect("artifacts");
    let text = config().replacen("[master]\n", &format!("[master]\nartifacts = \"{}\"\n", folder.path().display()), 1);
    let h = Harness::frozen(db, &text).await;
    h.push(&synthetic_push("main", 6, 250, &["Lib/os.py"]), "many-1").await;
    h.master.schedulers.tick(&h.store, cascade_master::clock::now() + 60).await.expect("tick");
    let fedora = h.builder("Fedora <script> 3.x<i>");
    let (_, number) = build_with_log(&h, fedora, Results::Success, &["ok"]).await;
    let page = |query: &'static str| {
        let uri = format!("/builders/{fedora}/builds/{number}{query}");
        let h = &h;
        async move { html(h, &uri).await }
    };
    let (status, first, _) = page("").await;
    assert_eq!(status, StatusCode::OK);
    let shown = |html: &str| html.matches("href=\"/changes/").count();
    assert_eq!(shown(&first), cascade_master::views::build::BLAME_PAGE as usize);
    assert!(first.contains("Changes 1–100 of 250") && first.contains("?blame=100#blamelist"), "{first}");
    assert!(first.contains("push 6 commit 0<") && !first.contains("push 6 commit 100<"));
    let (_, last, _) = page("?blame=200").await;
    assert_eq!(shown(&last), 50);
    assert!(last.contains("Changes 201–250 of 250") && last.contains("?blame=100#blamelist"), "{last}");
    assert!(!last.contains("later</a>"), "nothing after the last page");
    let (status, _, _) = page("?blame=-5").await;
    assert_eq!(status, StatusCode::OK, "a negative offset is the first page");
    let (status, _, _) = page("?blame=abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // 250 uploaded files: 200 a page, by name.
    let builder_name = h.master.catalog.builder(fedora).expect("builder").name.clone();
    let dir = folder.path().join(cascade_model::naming::builder_folder(&builder_name)).join(number.to_string());
    std::fs::create_dir_all(dir.join("logs")).expect("folder");
    for i in 0..250 {
        std::fs::write(dir.join("logs").join(format!("test-{i:03}.xml")), b"<x/>").expect("file");
    }
    let (_, first, _) = page("").await;
    assert!(first.contains("Files 1–200 of 250") && first.contains("?artifacts=200#artifacts"), "{first}");
    assert!(first.contains("test-000.xml") && !first.contains("test-200.xml"));
    let (_, last, _) = page("?artifacts=200").await;
    assert!(last.contains("Files 201–250 of 250") && last.contains("test-249.xml") && !last.contains("test-199.xml"));
});

/// A failing build of `builder` (taking every pending request), whose test
/// step failed `test_x`.
pub(crate) async fn build_failing_test(h: &Harness, builder: i64) -> (i64, i64) {
    use cascade_store::{NewTestResult, NewTestSet, TestProblemRecord, TestRunRecord};
    let now = cascade_master::clock::now();
    let claimed = h.store.claim_build(builder, h.master.master_id(), None, now).await.expect("claim").expect("a build");
    let step = h.store.add_step(claimed.build_id, 0, "test", now).await.expect("step");
    let set = NewTestSet {
        builder_id: builder,
        build_id: claimed.build_id,
        step_id: step,
        description: "regrtest: test".into(),
        results: vec![NewTestResult { name: "test_x".into(), passed: false, duration_ns: None }],
        run: TestRunRecord { runner: "regrtest".into(), order: vec!["test_x".into()], ..TestRunRecord::default() },
        problems: vec![TestProblemRecord { file: "test_x".into(), outcome: "failed".into(), ..Default::default() }],
    };
    h.store.add_test_set(&set).await.expect("test set");
    h.store.finish_step(step, Results::Failure, "test failure", now).await.expect("finish step");
    h.store.finish_build(claimed.build_id, Results::Failure, "failure: test", now).await.expect("finish");
    (claimed.build_id, claimed.number)
}

pub(crate) async fn pass(h: &Harness, builder: i64) {
    let now = cascade_master::clock::now();
    let claimed = h.store.claim_build(builder, h.master.master_id(), None, now).await.expect("claim").expect("a build");
    h.store.finish_build(claimed.build_id, Results::Success, "build successful", now).await.expect("finish");
}

pub(crate) async fn push_and_tick(h: &Harness, seed: u32, delivery: &str) -> i64 {
    let payload = synthetic_push("main", seed, 1, &["Lib/os.py"]);
    let ids = h.push(&payload, delivery).await;
    h.master.schedulers.tick(&h.store, cascade_master::clock::now() + 60).await.expect("tick");
    ids[0]
}

test_both!(the_breaking_change_is_narrowed_by_builders_failing_the_same_test, |db| {
    let text = config().replace("tags = [\"tier-3\"]", "tags = [\"stable\", \"tier-2\"]");
    let h = Harness::frozen(db, &text).await;
    let (fedora, windows) = (h.builder("Fedora <script> 3.x<i>"), h.builder("Windows 3.x<i>"));
    push_and_tick(&h, 1, "n-1").await;
    pass(&h, fedora).await;
    pass(&h, windows).await;
    // Windows builds the second change alone and passes; Fedora is slower.
    let second = push_and_tick(&h, 2, "n-2").await;
    pass(&h, windows).await;
    let third = push_and_tick(&h, 3, "n-3").await;
    // Fedora's first failing build covers both changes, Windows' only the third: both fail test_x.
    let (_, fedora_number) = build_failing_test(&h, fedora).await;
    build_failing_test(&h, windows).await;
    let (_, release, _) = html(&h, "/release").await;
    let fedora_row = release.split("<tr class=\"failing\">").nth(1).expect("Fedora's row");
    assert!(fedora_row.contains("likely cause:"), "{release}");
    assert_eq!(fedora_row.matches("<code>").count(), 1, "narrowed to one change: {fedora_row}");
    let (_, page, _) = html(&h, &format!("/builders/{fedora}/builds/{fedora_number}")).await;
    let suspects =
        page.split("id=\"suspects\"").nth(1).and_then(|s| s.split("<h3>Steps</h3>").next()).expect("suspects");
    assert!(suspects.contains("Likely cause"), "{suspects}");
    assert!(suspects.contains("The same tests began failing on 1 other builder"), "{suspects}");
    assert!(suspects.contains(&format!("/changes/{third}\"")), "{suspects}");
    assert!(!suspects.contains(&format!("/changes/{second}\"")), "Windows passed the second change: {suspects}");
    let blamelist = page.split("id=\"blamelist\"").nth(1).expect("blamelist");
    assert!(blamelist.contains(&format!("/changes/{second}\"")), "the blamelist itself still lists both");
});

test_both!(a_build_with_hundreds_of_failed_tests_lists_the_first_ones, |db| {
    use cascade_store::{NewTestResult, NewTestSet, TestProblemRecord, TestRunRecord};
    let h = Harness::frozen(db, &config()).await;
    let fedora = h.builder("Fedora <script> 3.x<i>");
    let bs = cascade_store::NewBuildset { reason: "force".into(), builder_ids: vec![fedora], ..Default::default() };
    let now = cascade_master::clock::now();
    h.store.create_buildset(&bs, now).await.expect("buildset");
    let claimed = h.store.claim_build(fedora, h.master.master_id(), None, now).await.expect("claim").expect("a build");
    let step = h.store.add_step(claimed.build_id, 0, "test", now).await.expect("step");
    let names: Vec<String> = (0..320).map(|i| format!("test_{i:03}")).collect();
    let set = NewTestSet {
        builder_id: fedora,
        build_id: claimed.build_id,
        step_id: step,
        description: "regrtest: test".into(),
        results: names.iter().map(|n| NewTestResult { name: n.clone(), passed: false, duration_ns: None }).collect(),
        run: TestRunRecord { runner: "regrtest".into(), order: names.clone(), ..TestRunRecord::default() },
        problems: names
            .iter()
            .map(|n| TestProblemRecord { file: n.clone(), outcome: "failed".into(), ..Default::default() })
            .collect(),
    };
    h.store.add_test_set(&set).await.expect("set");
    h.store.finish_build(claimed.build_id, Results::Failure, "failure: test", now).await.expect("finish");
    let (status, page, _) = html(&h, &format!("/builders/{fedora}/builds/{}", claimed.number)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("id=\"test-test_299\"") && !page.contains("id=\"test-test_300\""),
        "the first 300 are listed"
    );
    assert!(page.contains("20 more failed or flaky test files are not listed"), "and the rest are counted");
});

test_both!(a_coalesced_build_shows_once_on_its_newest_change, |db| {
    let h = Harness::frozen(db, &config()).await;
    let fedora = h.builder("Fedora <script> 3.x<i>");
    let first = push_and_tick(&h, 1, "c-1").await;
    let second = push_and_tick(&h, 2, "c-2").await;
    let third = push_and_tick(&h, 3, "c-3").await;
    // One failing build takes the three changes' requests.
    let (_, number) = build_failing_test(&h, fedora).await;

    let (_, console, _) = html(&h, "/console").await;
    let row = |change: i64| {
        let start = format!("<th class=\"change\"><a href=\"/changes/{change}\">");
        let row = console.split(&start).nth(1).and_then(|r| r.split("</tr>").next());
        row.unwrap_or_else(|| panic!("no row for change {change}: {console}")).to_string()
    };
    let culprit = row(third);
    assert_eq!(culprit.matches('✘').count(), 1, "the build, on its newest change: {culprit}");
    assert!(culprit.contains(&format!("#{number} covered this change with 2 other changes")), "{culprit}");
    for innocent in [first, second] {
        let r = row(innocent);
        assert!(!r.contains('✘'), "an innocent change does not show the culprit's result: {r}");
        assert!(r.contains("cell covered"), "{r}");
        assert!(r.contains(&format!("title=\"covered by #{number}, with 2 other changes\"")), "{r}");
        assert!(r.contains(&format!("href=\"/builders/{fedora}/builds/{number}\">┊</a>")), "joined to the build: {r}");
        assert!(r.contains("cell pending"), "Windows has built none of them: {r}");
    }

    // The grid: changes run across, newest first; the build once, then two joined cells.
    let (_, grid, _) = html(&h, "/grid").await;
    let lane = grid.split(&format!("<tr data-builder=\"{fedora}\">")).nth(1).and_then(|r| r.split("</tr>").next());
    let lane = lane.expect("Fedora's row");
    let classes: Vec<&str> = lane.split("<td class=\"cell ").skip(1).filter_map(|c| c.split('"').next()).collect();
    assert_eq!(classes, ["failure", "covered", "covered"], "{lane}");
    assert_eq!(lane.matches("┄</a>").count(), 2, "{lane}");
});

test_both!(the_console_of_two_branches_shows_the_changes_of_both, |db| {
    let text = config().replace("[[worker]]", "[[branch]]\nname = \"3.14\"\ngit = \"3.14\"\n[[worker]]");
    let text = text.replace(
        "branches = [\"3.x<i>\"]\ntags = [\"tier-3\"]",
        "branches = [\"3.x<i>\", \"3.14\"]\ntags = [\"tier-3\"]",
    );
    let h = Harness::frozen(db, &text).await;
    let on_main = push_and_tick(&h, 1, "b-1").await;
    let on_314 = h.push(&synthetic_push("3.14", 2, 1, &["Lib/os.py"]), "b-2").await[0];
    let row = |change: i64| format!("<th class=\"change\"><a href=\"/changes/{change}\">");
    let (status, both, _) = html(&h, "/console?branch=3.x%3Ci%3E&branch=3.14").await;
    assert_eq!(status, StatusCode::OK, "{both}");
    assert!(both.contains(&row(on_main)) && both.contains(&row(on_314)), "either branch's change is a row: {both}");
    let (_, one, _) = html(&h, "/console?branch=3.14").await;
    assert!(one.contains(&row(on_314)) && !one.contains(&row(on_main)), "{one}");
});

test_both!(the_waterfall_runs_down_a_time_scale_and_pages_back, |db| {
    let h = Harness::frozen(db, &config()).await;
    let (fedora, windows) = (h.builder("Fedora <script> 3.x<i>"), h.builder("Windows 3.x<i>"));
    push_and_tick(&h, 1, "w-1").await;
    let (_, number) = build_with_log(&h, fedora, Results::Failure, &["ofail"]).await;
    push_and_tick(&h, 2, "w-2").await;

    let (status, page, _) = html(&h, "/waterfall").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let href = format!("/builders/{fedora}/builds/{number}");
    assert!(page.contains(&format!("<a href=\"{href}\">#{number} ✘</a>")), "the build's box: {page}");
    assert!(
        page.contains(&format!("href=\"{href}/steps/0/logs/stdio\" class=\"failure\"")),
        "its step links to its log"
    );
    assert!(page.contains("class=\"time\" rowspan=\"10\""), "a time scale: {page}");
    let windows_head = page.split(&format!("data-builder=\"{windows}\">")).nth(1).expect("Windows' column");
    let windows_head = windows_head.split("</th>").next().unwrap_or("");
    assert!(windows_head.contains("<small>(offline)</small>"), "no worker serves it: {windows_head}");
    assert!(
        page.contains(&format!("<a class=\"cell pending\" href=\"/builders/{windows}\">○ 2 pending</a>")),
        "{page}"
    );
    assert!(page.contains(&format!("<a class=\"cell pending\" href=\"/builders/{fedora}\">○ 1 pending</a>")), "{page}");

    // Back in time: the older page's window ends where this one began, and has no build.
    let older = page.split("<a href=\"").find(|s| s.contains("rel=\"prev\"")).and_then(|s| s.split('"').next());
    let older = older.expect("an older link").replace("&#38;", "&").replace("&amp;", "&");
    let (status, before, _) = html(&h, &older).await;
    assert_eq!(status, StatusCode::OK, "{older}: {before}");
    assert!(!before.contains(&href), "{older} shows a build from after its window");
    assert!(before.contains("rel=\"next\""), "and links forward again");
    assert!(before.contains("No build of these builders ran in this window"), "an empty window says so: {before}");
    let back = before.split("show that time").next().and_then(|s| s.rsplit("<a href=\"").next());
    let back = back.and_then(|s| s.split('"').next()).expect("a link to the newest build's time");
    let (_, shown, _) = html(&h, &back.replace("&#38;", "&")).await;
    assert!(shown.contains(&href), "the link shows the newest build: {back}");
    let (status, _, _) = html(&h, "/waterfall?hours=5").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a window it does not offer");
    let (status, _, _) = html(&h, "/waterfall?before=never").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
});
