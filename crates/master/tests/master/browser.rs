//! The pages in a real browser: Debian's headless Chromium, driven over
//! the WebDriver protocol through `chromedriver` (both installed by
//! `tests/support/chromium.sh`, which `.ci/run` runs). A push arrives and the
//! console's cell turns from running to green without a reload; a log page
//! tails its running step; the release page's verdict flips when a stable
//! build fails. Screenshots of the main pages are saved under
//! `<target>/browser-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use cascade_testkit::test_both;
use serde_json::{Value, json};

use crate::harness::Harness;
use crate::workers::{BuildbotWorker, Kind, config, make_repo, push, run_master, wait_for};

/// The chromedriver executable: `CASCADE_CHROMEDRIVER`, or the one the
/// support script installs (run here if needed).
fn chromedriver() -> PathBuf {
    if let Ok(p) = std::env::var("CASCADE_CHROMEDRIVER") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/chromium.sh");
    let out = std::process::Command::new("bash").arg(&script).output().expect("run chromium.sh");
    assert!(out.status.success(), "installing chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// axe-core's script: `CASCADE_AXE_CORE`, or the one the support script
/// installs (run here if needed).
fn axe_source() -> &'static str {
    static SOURCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SOURCE.get_or_init(|| {
        let path = crate::harness::installed("CASCADE_AXE_CORE", "axe-core.sh");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("axe-core at {}: {e}", path.display()))
    })
}

/// Where screenshots go: next to the build's other outputs.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let target = exe.ancestors().nth(3).map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let dir = target.join("browser-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// A WebDriver session on a headless Chromium.
struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    _driver: tokio::process::Child,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let driver = tokio::process::Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        cascade_master::outbound::install_crypto_provider();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver to be ready", Duration::from_secs(30), || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let v: Value = http.get(format!("{base}/status")).send().await.ok()?.json().await.ok()?;
                v["value"]["ready"].as_bool().filter(|r| *r)
            }
        })
        .await;
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": std::env::var("CASCADE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]
            }
        } } });
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("json");
        let session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        Browser { http, base, session, _driver: driver }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.expect("webdriver").json().await.expect("json");
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    async fn js(&self, script: &str) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": [] }))).await
    }

    /// Waits until `script` returns a truthy value.
    async fn until(&self, what: &str, limit: Duration, script: &str) -> Value {
        let started = Instant::now();
        loop {
            let v = self.js(script).await;
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            assert!(started.elapsed() < limit, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Marks the current document; `unreloaded` is true while it is the same one.
    async fn mark(&self) {
        self.js("window.__cascadeMark = 'same document'; return true;").await;
    }

    async fn unreloaded(&self) -> bool {
        self.js("return window.__cascadeMark === 'same document';").await == json!(true)
    }

    async fn screenshot(&self, name: &str) {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or("")).expect("png");
        std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Sets the window's size (screenshots at 1,920 px are what a wide screen shows).
    async fn size(&self, width: u32, height: u32) {
        self.cmd(reqwest::Method::POST, "/window/rect", Some(json!({ "width": width, "height": height }))).await;
    }

    /// Runs axe-core (from the npm registry, `tests/support/axe-core.sh`) on
    /// the page against WCAG 2.x A and AA, and returns its serious and
    /// critical violations, each with where it was seen.
    async fn accessibility_problems(&self) -> Vec<String> {
        self.js(&format!("{};\nreturn true;", axe_source())).await;
        let script = "const done = arguments[0]; \
            axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }) \
            .then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical') \
              .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.slice(0, 3).map(n => n.target.join(' ') + ' ' + (n.failureSummary || '').replace(/\\s+/g, ' ')).join(' | ')))) \
            .catch(e => done(['axe failed: ' + e]));";
        let v = self.cmd(reqwest::Method::POST, "/execute/async", Some(json!({ "script": script, "args": [] }))).await;
        match v.as_array() {
            Some(items) => items.iter().map(|i| i.as_str().unwrap_or("?").to_string()).collect(),
            None => vec![format!("axe gave no list: {v}")],
        }
    }

    async fn close(self) {
        let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send().await;
    }
}

test_both!(pages_update_live_in_a_real_browser, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let (go, fail) = (dir.path().join("GO"), dir.path().join("FAIL"));
    // The step talks until told to stop, then passes unless told to fail.
    let step = format!(
        r#"{{ name = "work", command = ["sh", "-c", "i=0; while [ ! -f {go} ]; do i=$((i+1)); echo line $i; sleep 0.2; done; test ! -f {fail}"] }},"#,
        go = go.display(),
        fail = fail.display()
    );
    let text = format!("{}\n[[scheduler]]\nname = \"force\"\nkind = \"force\"\n", config(&repo, &step))
        .replace("branches = [\"main\"]", "branches = [\"main\"]\ntags = [\"stable\", \"tier-1\"]");
    let h = Harness::with_config(db, &text).await;
    let running = run_master(&h).await;
    let site = h.url();
    let _worker = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), running.port, "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    let builder = h.builder("unix main");
    let browser = Browser::start().await;
    let live = Duration::from_secs(30);

    // The home page, open before anything ran, shows the build start without a reload.
    browser.go(&format!("{site}/")).await;
    sees(&browser, "the empty home page", "No builds yet").await;
    browser.mark().await;
    push(&h, &sha).await;
    browser
        .until(
            "the build on the home page",
            live,
            "return document.querySelector('table.builds td.result.running') !== null;",
        )
        .await;
    assert!(browser.unreloaded().await, "the home page updated in place");

    // The console: the running cell turns green, with no reload.
    browser.go(&format!("{site}/console")).await;
    browser.mark().await;
    browser.until("a running cell", live, "return document.querySelector('td.cell.running') !== null;").await;
    browser.screenshot("console-running").await;
    std::fs::write(&go, "").expect("go");
    browser.until("the cell to turn green", live, "return document.querySelector('td.cell.success') !== null;").await;
    assert!(browser.unreloaded().await, "the console updated in place");
    browser.screenshot("console").await;

    // The release page says releasable, then blocked when the stable build fails.
    browser.go(&format!("{site}/release")).await;
    browser.until("the verdict", live, "return document.querySelector('.verdict.releasable') !== null;").await;
    browser.mark().await;
    std::fs::remove_file(&go).expect("stop going");
    std::fs::write(&fail, "").expect("fail");
    h.master
        .schedulers
        .force(
            &h.store,
            &cascade_master::scheduler::ForceRequest {
                scheduler: "force".into(),
                builders: vec!["unix main".into()],
                branch: None,
                revision: Some(sha.clone()),
                reason: "browser test".into(),
                owner: "test".into(),
                properties: Default::default(),
            },
            cascade_master::clock::now(),
        )
        .await
        .expect("force");
    h.master.runner.nudge();

    // Meanwhile the second build's log page tails its running step.
    let second = wait_for("the second build's step", live, || async {
        let b = h.store.get_build(2).await.ok().flatten()?;
        let steps = h.store.list_steps(b.buildid).await.ok()?;
        steps.iter().find(|s| s.name == "work").map(|s| s.number)
    })
    .await;
    // Its build page: the running step's duration and line count tick, in place.
    browser.go(&format!("{site}/builders/{builder}/builds/2")).await;
    browser.mark().await;
    let reading = "const step = [...document.querySelectorAll('li.step.running')].find(s => s.textContent.includes('work')); \
        if (!step) return null; const took = step.querySelector('.took[data-elapsed]'); const lines = step.querySelector('small'); \
        return took && lines ? [took.textContent, parseInt(lines.textContent.replace(/[^0-9]/g, ''), 10)] : null;";
    let first = browser.until("the running step", live, reading).await;
    let script = format!(
        "const now = (function () {{ {reading} }})(); const was = {first}; \
         return now && now[0] !== was[0] && now[1] > was[1] ? now : null;"
    );
    let later = browser.until("the running step to tick", live, &script).await;
    assert!(browser.unreloaded().await, "the build page ticked in place: {first} then {later}");
    browser.screenshot("build-running").await;

    browser.go(&format!("{site}/builders/{builder}/builds/2/steps/{second}/logs/stdio")).await;
    browser.mark().await;
    let first_count = browser
        .until("log lines", live, "return document.querySelectorAll('#log span').length;")
        .await
        .as_i64()
        .unwrap_or(0);
    let script =
        format!("var n = document.querySelectorAll('#log span').length; return n > {} + 5 ? n : 0;", first_count);
    browser.until("the log to grow", live, &script).await;
    assert!(browser.unreloaded().await, "the log tailed in place");
    let text = browser.js("return document.getElementById('log').textContent;").await;
    let text = text.as_str().unwrap_or("");
    let numbers: Vec<i64> =
        text.lines().filter_map(|l| l.strip_prefix("line ").and_then(|n| n.trim().parse().ok())).collect();
    assert!(
        numbers.len() > 5 && numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "every line once, in order: {numbers:?}"
    );
    browser.screenshot("log-tail").await;

    browser.go(&format!("{site}/release")).await;
    browser.until("the page", live, "return document.querySelector('.verdict') !== null;").await;
    browser.mark().await;
    std::fs::write(&go, "").expect("go");
    browser.until("the verdict to flip", live, "return document.querySelector('.verdict.blocked') !== null;").await;
    assert!(browser.unreloaded().await, "the release page updated in place");
    browser.screenshot("release").await;

    // Screenshots of the other main pages, each rendered whole.
    for (name, path) in [
        ("home", "/".to_string()),
        ("waterfall", "/waterfall".into()),
        ("grid", "/grid".into()),
        ("builders", "/builders".into()),
        ("builder", format!("/builders/{builder}")),
        ("build", format!("/builders/{builder}/builds/2")),
        ("workers", "/workers".into()),
        ("changes", "/changes".into()),
        ("pending", "/pending".into()),
    ] {
        browser.go(&format!("{site}{path}")).await;
        let title = browser.until(name, live, "return document.readyState === 'complete' && document.title;").await;
        assert!(title.as_str().is_some_and(|t| t.contains("worker-test") || !t.is_empty()), "{name}: {title}");
        browser.screenshot(name).await;
    }
    browser.close().await;
});

/// A failing regrtest build's page in the browser: the failed test and the
/// reproduce command are shown, and Copy puts the command on the clipboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reproduce_command_copies_to_the_clipboard() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/regrtest").canonicalize().expect("tests");
    let step = format!(
        r#"{{ name = "test", command = ["python3", "-m", "test", "--slow-ci", "--testdir", "{}"], env = {{ CASCADE_FLAKY_MARK = "{}" }} }},"#,
        tests.display(),
        dir.path().join("mark").display()
    );
    let h = Harness::with_config(&db, &config(&repo, &step)).await;
    let running = run_master(&h).await;
    let _worker = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), running.port, "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    push(&h, &sha).await;
    let build = crate::workers::finished_build(&h, Duration::from_secs(90)).await;
    assert_eq!(build.results, Some(2), "{}", build.state_string);

    let browser = Browser::start().await;
    let page = format!("{}/builders/{}/builds/{}", h.url(), build.builderid, build.number);
    browser.go(&page).await;
    let shown = browser.js("return document.querySelector('#test-test_fail') !== null;").await;
    assert_eq!(shown, json!(true), "the failed test is listed");
    let command = browser.js("return document.querySelector('.reproduce pre').textContent;").await;
    let command = command.as_str().expect("a reproduce command").to_string();
    assert!(command.contains("--randseed ") && command.contains("test_fail"), "{command}");
    let grant = json!({ "descriptor": { "name": "clipboard-read" }, "state": "granted" });
    browser.cmd(reqwest::Method::POST, "/permissions", Some(grant)).await;
    let found = browser
        .cmd(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": "button.copy" })))
        .await;
    let element = found.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).expect("the Copy button");
    browser.cmd(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await;
    browser
        .until(
            "the button to say Copied",
            Duration::from_secs(10),
            "return document.querySelector('.copied').textContent === 'Copied';",
        )
        .await;
    let pasted = browser
        .cmd(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({ "script": "const done = arguments[0]; navigator.clipboard.readText().then(done, e => done('error: ' + e));", "args": [] })),
        )
        .await;
    assert_eq!(pasted.as_str(), Some(command.as_str()), "the clipboard holds the command");
    browser.screenshot("failing-build").await;
    browser.close().await;
    h.stop().await;
    db.finish().await;
}

/// Two masters on one PostgreSQL: a browser on master a's console sees the
/// build that master b runs start and pass, with no reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_one_master_sees_the_builds_of_another_live() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let go = dir.path().join("GO");
    let step = format!(
        r#"{{ name = "work", command = ["sh", "-c", "while [ ! -f {} ]; do sleep 0.1; done"] }},"#,
        go.display()
    );
    let text = config(&repo, &step);
    let clock = cascade_master::clock::Clock::System;
    let a =
        Harness::served(db.store().await, &text.replace("name = \"worker-test\"", "name = \"a\""), clock.clone()).await;
    let b = Harness::served(db.store().await, &text.replace("name = \"worker-test\"", "name = \"b\""), clock).await;
    let _worker =
        BuildbotWorker::start_kind(Kind::Cascade, dir.path(), b.served.addresses.msgpack.port(), "w1", "pw-one").await;
    wait_for("the worker on b", Duration::from_secs(30), || async { b.master.workers.get("w1") }).await;
    let browser = Browser::start().await;
    let live = Duration::from_secs(30);
    browser.go(&format!("{}/console", a.url())).await;
    browser.mark().await;
    push(&a, &sha).await;
    browser
        .until("b's build running on a's page", live, "return document.querySelector('td.cell.running') !== null;")
        .await;
    std::fs::write(&go, "").expect("go");
    browser.until("the cell to turn green", live, "return document.querySelector('td.cell.success') !== null;").await;
    assert!(browser.unreloaded().await, "a's console updated in place");
    let built = a.store.get_build(1).await.expect("get").expect("the build");
    assert_eq!(built.masterid, b.master.master_id(), "b built it");
    browser.screenshot("console-across-masters").await;
    browser.close().await;
    a.stop().await;
    b.stop().await;
    db.finish().await;
}

/// Buildbot's addresses, `#` part and all, in a browser: each lands on
/// Cascade's page of the same thing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildbots_hash_links_land_on_cascades_pages() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let h = Harness::with_config(&db, crate::links::CONFIG).await;
    let fedora = h.builder("Fedora 3.x");
    let build =
        crate::harness::end_a_new_build(&h.store, fedora, h.master.master_id(), cascade_model::Results::Success).await;
    let number = h.store.get_build(build).await.expect("get").expect("build").number;
    let browser = Browser::start().await;
    for (link, lands) in [
        (format!("/all/#/builders/{fedora}/builds/{number}"), format!("/builders/{fedora}/builds/{number}")),
        (format!("/#/builders/{fedora}"), format!("/builders/{fedora}")),
        ("/#/grid?branch=main&tags=stable".to_string(), "/grid?branch=main&tag=stable".to_string()),
        ("/all/#/console".to_string(), "/console".to_string()),
        ("/#/workers".to_string(), "/workers".to_string()),
        ("/#//example.org/x".to_string(), "/".to_string()),
    ] {
        browser.go(&format!("{}{link}", h.url())).await;
        let script =
            format!("return location.pathname + location.search === {lands:?} && document.readyState === 'complete';");
        browser.until(&format!("{link} to land on {lands}"), Duration::from_secs(10), &script).await;
    }
    browser.go(&format!("{}/#/grid?branch=main&tags=stable", h.url())).await;
    browser
        .until(
            "the grid of 3.x's stable builders",
            Duration::from_secs(10),
            "return location.pathname === '/grid' && document.body.textContent.includes('Fedora 3.x');",
        )
        .await;
    browser.close().await;
    h.stop().await;
    db.finish().await;
}

/// Waits until the page's text holds `text`; on timeout shows what it holds.
async fn sees(browser: &Browser, what: &str, text: &str) {
    let started = Instant::now();
    let script = "return document.body ? document.body.innerText : '';";
    loop {
        let shown = browser.js(script).await;
        let shown = shown.as_str().unwrap_or("");
        if shown.contains(text) {
            return;
        }
        let shot: String = shown.chars().take(3000).collect();
        assert!(started.elapsed() < Duration::from_secs(30), "{what}: {text:?} never appeared; the page says:\n{shot}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Forces a build of `unix main` at `sha` and waits for build `id` to start.
async fn force_a_build(h: &Harness, sha: &str, id: i64) -> cascade_store::records::BuildRecord {
    let force = cascade_master::scheduler::ForceRequest {
        scheduler: "force".into(),
        builders: vec!["unix main".into()],
        branch: None,
        revision: Some(sha.to_string()),
        reason: "Buildbot's UI test".into(),
        owner: "test".into(),
        properties: Default::default(),
    };
    h.master.schedulers.force(&h.store, &force, cascade_master::clock::now()).await.expect("force");
    h.master.runner.nudge();
    wait_for("the forced build", Duration::from_secs(30), || async { h.store.get_build(id).await.ok().flatten() }).await
}

/// Buildbot's own UI (`buildbot-www` 4.3.0 from PyPI, with the console,
/// waterfall and grid plugins) served by Cascade under `/buildbot/`: every
/// main page shows Cascade's data, and a build started after the page
/// loaded appears and finishes on it without a reload (over `/ws`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildbots_own_ui_shows_cascades_builds_live() {
    let Some(bundle) = crate::buildbot_ui::bundle() else { return };
    let live = Duration::from_secs(30);
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let go = dir.path().join("GO");
    std::fs::write(&go, "").expect("go");
    let step = format!(
        r#"{{ name = "talk", command = ["sh", "-c", "echo hello $((40+2)); while [ ! -f {} ]; do echo waiting; sleep 0.1; done; echo goodbye $((6*7))"] }},"#,
        go.display()
    );
    let text = format!("{}\n[[scheduler]]\nname = \"force\"\nkind = \"force\"\n", config(&repo, &step));
    let h = Harness::with_config(&db, &crate::buildbot_ui::with_ui(&text, &bundle)).await;
    let running = run_master(&h).await;
    let _worker = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), running.port, "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    push(&h, &sha).await;
    let first = crate::workers::finished_build(&h, Duration::from_secs(60)).await;
    let builder = first.builderid;
    let talk =
        h.store.list_steps(first.buildid).await.expect("steps").iter().find(|s| s.name == "talk").expect("talk").number;
    let ui = format!("{}/buildbot/", h.url());
    let browser = Browser::start().await;

    for (name, route, text) in [
        ("bb-home", "#/".to_string(), "unix main/1"),
        ("bb-builders", "#/builders".into(), "unix main"),
        ("bb-build", format!("#/builders/{builder}/builds/{}", first.number), "talk"),
        ("bb-log", format!("#/builders/{builder}/builds/{}/steps/{talk}/logs/stdio", first.number), "hello 42"),
        ("bb-console", "#/console".into(), "push 1 commit 0"),
        ("bb-waterfall", "#/waterfall".into(), "unix main"),
        ("bb-grid", "#/grid".into(), "push 1 commit 0"),
        ("bb-workers", "#/workers".into(), "w1"),
    ] {
        browser.go(&format!("{ui}{route}")).await;
        sees(&browser, name, text).await;
        browser.screenshot(name).await;
    }

    // The builder's page, loaded before a second build starts, shows it start and finish.
    browser.go(&format!("{ui}#/builders/{builder}")).await;
    sees(&browser, "the builder page", "unix main").await;
    browser.mark().await;
    std::fs::remove_file(&go).expect("hold the next build");
    let second = force_a_build(&h, &sha, first.buildid + 1).await;
    sees(&browser, "the new build, running", "building").await;
    browser.screenshot("bb-builder-running").await;
    std::fs::write(&go, "").expect("go");
    wait_for("the second build to finish", live, || async {
        h.store.get_build(second.buildid).await.ok().flatten().filter(|b| b.complete)
    })
    .await;
    let both_passed = "const t = document.body.innerText; \
        return !t.includes('building') && t.split('build successful').length === 3;";
    browser.until("both builds to show as successful", Duration::from_secs(30), both_passed).await;
    assert!(browser.unreloaded().await, "Buildbot's UI updated in place");
    browser.screenshot("bb-builder-finished").await;

    // A running build's log page tails it.
    std::fs::remove_file(&go).expect("hold the next build");
    let third = force_a_build(&h, &sha, second.buildid + 1).await;
    wait_for("the third build's first line", live, || async {
        let steps = h.store.list_steps(third.buildid).await.ok()?;
        let step = steps.iter().find(|s| s.name == "talk")?;
        let log = h.store.list_logs(step.stepid).await.ok()?.into_iter().next()?;
        h.store.log_lines(log.logid, 0, 0).await.ok().filter(|l| !l.is_empty())
    })
    .await;
    browser.go(&format!("{ui}#/builders/{builder}/builds/{}/steps/{talk}/logs/stdio", third.number)).await;
    sees(&browser, "the running log", "hello 42").await;
    browser.mark().await;
    std::fs::write(&go, "").expect("go");
    sees(&browser, "the log's next line", "goodbye 42").await;
    assert!(browser.unreloaded().await, "the log tailed in place");
    browser.screenshot("bb-log-tail").await;
    browser.close().await;
    h.stop().await;
    db.finish().await;
}

/// Every page at 1,920 px in a real browser: no serious or critical WCAG A/AA
/// problem (axe-core) on any; the console shows a coalesced build once,
/// its other changes joined to it; the console's builder header and the
/// grid's header stay in view when scrolled; a branch's git name selects
/// it, and an unknown branch says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_reads_well_at_1920_px() {
    use cascade_model::Results;
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let hash = cascade_master::password::hash("ann-password").expect("hash");
    let text = format!(
        "{}\n[[user]]\nname = \"ann\"\npassword_hash = \"{hash}\"\nroles = [\"admin\"]\n",
        crate::pages::config()
    );
    let h = Harness::frozen(&db, &text).await;
    let (fedora, windows) = (h.builder("Fedora <script> 3.x<i>"), h.builder("Windows 3.x<i>"));
    let mut changes = vec![crate::pages::push_and_tick(&h, 1, "b-1").await];
    let (_, passed) = crate::pages::build_with_log(&h, fedora, Results::Success, &["ohello"]).await;
    for seed in 2..=41 {
        changes.push(crate::pages::push_and_tick(&h, seed, &format!("b-{seed}")).await);
    }
    // One failing build takes all forty changes' requests: it speaks for the newest only.
    let (_, failed) = crate::pages::build_failing_test(&h, fedora).await;
    crate::pages::build_with_log(&h, windows, Results::Exception, &["eworker lost"]).await;
    let bsid = h.store.list_buildsets(&cascade_store::ListQuery::default().limit(1)).await.expect("sets").items[0].bsid;
    let browser = Browser::start().await;
    browser.size(1920, 1080).await;
    // The checker finds what it should: grey on white fails AA.
    browser
        .go("data:text/html,<html lang=en><title>t</title><main><p style='color:%23aaa'>faint</p></main></html>")
        .await;
    let found = browser.accessibility_problems().await;
    assert!(found.iter().any(|p| p.starts_with("color-contrast")), "axe-core sees a faint text: {found:?}");
    let site = h.url();
    let pages = [
        ("home", "/".to_string()),
        ("console-1920", "/console".into()),
        ("grid-1920", "/grid".into()),
        ("waterfall-1920", "/waterfall".into()),
        ("release-1920", "/release".into()),
        ("builders-1920", "/builders".into()),
        ("builders-filtered", "/builders?q=fedora".into()),
        ("builder", format!("/builders/{fedora}")),
        ("build-failed", format!("/builders/{fedora}/builds/{failed}")),
        ("log", format!("/builders/{fedora}/builds/{passed}/steps/0/logs/stdio")),
        ("workers-1920", "/workers".into()),
        ("changes-1920", "/changes".into()),
        ("change", format!("/changes/{}", changes[0])),
        ("pending-1920", "/pending".into()),
        ("tests", "/tests".into()),
        ("buildset", format!("/buildsets/{bsid}?done=rebuild")),
        ("unknown-branch", "/console?branch=nope".into()),
        ("console-compact", "/console?compact=1".into()),
        ("console-collapsed", "/console?collapse=tier-3".into()),
        ("login", "/login".into()),
    ];
    let mut problems = Vec::new();
    for (name, path) in &pages {
        browser.go(&format!("{site}{path}")).await;
        browser.until(name, Duration::from_secs(10), "return document.readyState === 'complete';").await;
        for p in browser.accessibility_problems().await {
            problems.push(format!("{path}: {p}"));
        }
        browser.screenshot(name).await;
    }
    // Logged in, the pages carry their forms (force, rebuild, stop, cancel, pause, switches).
    browser.go(&format!("{site}/login")).await;
    browser
        .js("document.querySelector('input[name=username]').value = 'ann'; \
             document.querySelector('input[name=password]').value = 'ann-password'; \
             document.querySelector('form.login').submit(); return true;")
        .await;
    sees(&browser, "the login", "Log out").await;
    for path in [
        "/".to_string(),
        format!("/builders/{fedora}"),
        format!("/builders/{fedora}/builds/{failed}"),
        "/workers".into(),
        "/pending".into(),
        "/tokens".into(),
    ] {
        browser.go(&format!("{site}{path}")).await;
        browser.until(&path, Duration::from_secs(10), "return document.readyState === 'complete';").await;
        for p in browser.accessibility_problems().await {
            problems.push(format!("{path} (logged in): {p}"));
        }
    }
    browser.screenshot("home-logged-in").await;
    assert!(problems.is_empty(), "accessibility problems:\n{}", problems.join("\n"));

    // The coalesced build: one ✘, on the newest change; the 39 others joined to it.
    browser.go(&format!("{site}/console")).await;
    let counts = browser
        .js(&format!(
            "const col = [...document.querySelectorAll('tr.bubbles td')].findIndex(td => td.dataset.builder === '{fedora}'); \
             const cells = [...document.querySelectorAll('table.console tbody tr')].map(r => r.querySelectorAll('td')[col]); \
             return [cells.filter(c => c.textContent.includes('✘')).length, cells.filter(c => c.classList.contains('covered')).length, \
                     cells[0].classList.contains('failure')];"
        ))
        .await;
    assert_eq!(counts, json!([1, 19, true]), "the build once, on the newest of the 20 rows shown; the rest covered");
    // Scrolled down, the builders' header is still at the top of the window.
    browser.go(&format!("{site}/console?changes=100")).await;
    let stuck = browser
        .js("window.scrollTo(0, 900); const head = document.querySelector('table.console thead').getBoundingClientRect(); \
             return [window.scrollY > 0, Math.abs(head.top) < 2];")
        .await;
    assert_eq!(stuck, json!([true, true]), "the console's header stays in view");
    browser.go(&format!("{site}/grid?changes=40")).await;
    let stuck = browser
        .js("const scroller = document.scrollingElement; window.scrollTo(0, 600); \
             const head = document.querySelector('table.grid thead').getBoundingClientRect(); \
             return scroller.scrollHeight <= window.innerHeight || Math.abs(head.top) < 2;")
        .await;
    assert_eq!(stuck, json!(true), "the grid's header stays in view");

    // A branch by its git name is that branch; an unknown one is an error, not an empty green page.
    browser.go(&format!("{site}/console?branch=main")).await;
    let selected = browser.js("return document.querySelector('nav.filters a.selected').textContent;").await;
    assert_eq!(selected, json!("3.x<i>"));
    browser.go(&format!("{site}/console?branch=nope")).await;
    sees(&browser, "the unknown branch", "nope").await;
    let text = browser.js("return document.body.innerText;").await;
    let text = text.as_str().unwrap_or("");
    assert!(
        text.contains("3.x<i>") && !text.contains("No changes on this branch"),
        "names the branches there are: {text}"
    );

    // What happens between a page's rendering and its subscription is not
    // lost: here the subscription waits until told, a build ends meanwhile,
    // and the page shows it once subscribed, though no event came after.
    let held = "const Real = window.EventSource; window.__connect = false; \
        window.EventSource = function (url) { const early = []; let real = null; \
          this.addEventListener = (t, f) => real ? real.addEventListener(t, f) : early.push([t, f]); \
          this.close = () => real && real.close(); \
          const wait = setInterval(() => { if (!window.__connect) return; clearInterval(wait); \
            real = new Real(url); early.forEach(([t, f]) => real.addEventListener(t, f)); }, 50); };";
    browser
        .cmd(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({ "cmd": "Page.addScriptToEvaluateOnNewDocument", "params": { "source": held } })),
        )
        .await;
    browser.go(&format!("{site}/builders/{windows}")).await;
    browser.until("the builder page", Duration::from_secs(10), "return document.readyState === 'complete';").await;
    browser.mark().await;
    let shown = "return document.querySelectorAll('table.builds tbody tr').length;";
    let before = browser.js(shown).await.as_i64().unwrap_or(-1);
    crate::pages::push_and_tick(&h, 99, "b-99").await;
    crate::pages::pass(&h, windows).await;
    browser.js("window.__connect = true; return true;").await;
    let script =
        format!("const n = document.querySelectorAll('table.builds tbody tr').length; return n > {before} ? n : 0;");
    browser.until("the build that ended before the subscription", Duration::from_secs(15), &script).await;
    assert!(browser.unreloaded().await, "caught up in place");
    browser.close().await;
    h.stop().await;
    db.finish().await;
}

/// CPython's width: the 162 builders of a branch fit a 1,920 px screen in the
/// console's compact mode (and do not in its full one), and a collapsed
/// tier takes one column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compact_console_fits_162_builders_in_1920_px() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let mut text = String::from(
        "[master]\nname = \"wide\"\n[github]\ninsecure_webhook = true\n[[branch]]\nname = \"3.x\"\ngit = \"main\"\n\
         [[worker]]\nname = \"w1\"\npassword = \"pw\"\n[[factory]]\nname = \"f\"\nsteps = [{ command = \"make\" }]\n\
         [[scheduler]]\nname = \"main\"\nkind = \"branch\"\nbranch = \"3.x\"\n",
    );
    for i in 0..162 {
        let tier = i % 3 + 1;
        text.push_str(&format!(
            "[[builder]]\nname = \"AMD64 Builder {i:03} Refleaks\"\nworkers = [\"w1\"]\nfactory = \"f\"\nbranches = [\"3.x\"]\ntags = [\"stable\", \"tier-{tier}\"]\n"
        ));
    }
    let h = Harness::frozen(&db, &text).await;
    for seed in 1..=5 {
        crate::pages::push_and_tick(&h, seed, &format!("w-{seed}")).await;
    }
    let browser = Browser::start().await;
    browser.size(1920, 1080).await;
    let right = "const t = document.querySelector('table.console'); \
        return [t.querySelectorAll('tr.bubbles td').length, Math.ceil(t.getBoundingClientRect().right)];";
    browser.go(&format!("{}/console?compact=1", h.url())).await;
    let compact = browser.js(right).await;
    browser.screenshot("console-compact-162").await;
    assert_eq!(compact[0], json!(162), "a cell per builder");
    assert!(compact[1].as_i64().is_some_and(|r| r <= 1920), "162 builders fit 1,920 px in compact mode: {compact}");
    assert!(browser.accessibility_problems().await.is_empty(), "the compact console passes axe-core");
    browser.go(&format!("{}/console", h.url())).await;
    let full = browser.js(right).await;
    assert!(full[1].as_i64().is_some_and(|r| r > 1920), "the full console is wider: {full}");
    browser.go(&format!("{}/console?compact=1&collapse=tier-2&collapse=tier-3", h.url())).await;
    let folded = browser.js(right).await;
    assert_eq!(folded[0], json!(54 + 2), "tier-1's 54 builders, and one column for each collapsed tier");
    browser.close().await;
    h.stop().await;
    db.finish().await;
}
