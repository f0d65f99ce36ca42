//! Buildbot's own command-line tools against Cascade's PB port, unmodified
//! from PyPI: `buildbot sendchange` stores a change that the schedulers
//! build, `buildbot try --wait` builds a diff on a stock `buildbot-worker`
//! and reports the result, and wrong passwords or builders are refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cascade_store::ListQuery;
use cascade_testkit::test_both;

use crate::harness::Harness;
use crate::workers::{BuildbotWorker, Kind, config, log_of, make_repo, run_master, wait_for};

/// The `buildbot` executable: `CASCADE_BUILDBOT`, or the one the support
/// script installs (it prints its path).
fn buildbot() -> PathBuf {
    if let Ok(p) = std::env::var("CASCADE_BUILDBOT") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/buildbot.sh");
    let out = std::process::Command::new("bash").arg(&script).output().expect("run buildbot.sh");
    assert!(out.status.success(), "installing buildbot failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs a `buildbot` subcommand, bounded; returns (success, stdout and
/// stderr). A refused login leaves `buildbot try` running after it prints
/// the error, so a client that has not ended within `limit` is killed and
/// counts as a failure.
async fn client_within(limit: Duration, home: &Path, args: &[String]) -> (bool, String) {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = home.join(format!("client-{n}.out"));
    let out = std::fs::File::create(&path).expect("output file");
    let mut child = tokio::process::Command::new(buildbot())
        .args(args)
        .current_dir(home)
        .env("HOME", home)
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("the buildbot client runs");
    let status = tokio::time::timeout(limit, child.wait()).await;
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    match status {
        Ok(Ok(s)) => (s.success(), text),
        _ => (false, text + "\n[killed: it did not end in time]"),
    }
}

async fn client(home: &Path, args: &[String]) -> (bool, String) {
    client_within(Duration::from_secs(120), home, args).await
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_string()).collect()
}

const TOOLS: &str = r#"
[sendchange]
users = [{ name = "change", password = "changepw" }]

[[scheduler]]
name = "try"
kind = "try"
builders = ["unix"]
users = [{ name = "alice", password = "alicepw" }]
"#;

test_both!(buildbot_sendchange_stores_a_change_the_schedulers_build, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let text = config(&repo, r#"{ name = "hello", command = ["echo", "hello"] },"#) + TOOLS;
    let h = Harness::with_config(db, &text).await;
    let pb = run_master(&h).await.pb_port;
    let master = format!("127.0.0.1:{pb}");
    let send = |auth: &str| {
        strings(&[
            "sendchange",
            "--master",
            &master,
            "--auth",
            auth,
            "--who",
            "Alice <alice@example.org>",
            "--branch",
            "main",
            "--revision",
            &sha,
            "--comments",
            "fix the thing",
            "--property",
            "pr:42",
            "Lib/os.py",
            "Doc/os.rst",
        ])
    };
    let (ok, out) = client(dir.path(), &send("change:wrong")).await;
    assert!(!ok && out.contains("wrong login name or password"), "a wrong password is refused: {out}");
    assert_eq!(h.store.list_changes(&ListQuery::default()).await.expect("changes").items.len(), 0);

    let (ok, out) = client(dir.path(), &send("change:changepw")).await;
    assert!(ok && out.contains("change sent successfully"), "{out}");
    let changes = h.store.list_changes(&ListQuery::default()).await.expect("changes").items;
    assert_eq!(changes.len(), 1);
    let c = &changes[0];
    assert_eq!((c.author.as_str(), c.comments.as_str()), ("Alice <alice@example.org>", "fix the thing"));
    assert_eq!((c.branch.as_deref(), c.revision.as_deref()), (Some("main"), Some(sha.as_str())));
    assert_eq!(c.files, vec!["Doc/os.rst", "Lib/os.py"]);
    assert_eq!(c.properties.get("pr").and_then(|(v, _)| v.as_str()), Some("42"));
    // The branch scheduler takes it as it takes a push.
    wait_for("a build request for the change", Duration::from_secs(30), || async {
        let requests = h.store.list_buildrequests(&ListQuery::default()).await.ok()?.items;
        (!requests.is_empty()).then_some(())
    })
    .await;
});

test_both!(buildbot_try_builds_a_diff_on_a_stock_worker_and_waits_for_it, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let step = r#"{ name = "show", command = ["sh", "-c", "cat README; test -f NEWS"] },"#;
    let text = config(&repo, step) + TOOLS;
    let h = Harness::with_config(db, &text).await;
    let pb = run_master(&h).await.pb_port;
    let _worker = BuildbotWorker::start_kind(Kind::BuildbotPb, dir.path(), pb, "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    let diff = dir.path().join("change.diff");
    std::fs::write(
        &diff,
        "diff --git a/README b/README\n--- a/README\n+++ b/README\n@@ -1 +1 @@\n-the demo project\n+the patched project\n\
         diff --git a/NEWS b/NEWS\nnew file mode 100644\n--- /dev/null\n+++ b/NEWS\n@@ -0,0 +1 @@\n+news\n",
    )
    .expect("diff");
    let master = format!("127.0.0.1:{pb}");
    let base = ["try", "--connect", "pb", "--master", &master, "--username", "alice"];
    let (ok, out) =
        client(dir.path(), &strings(&[&base[..], &["--passwd", "alicepw", "--get-builder-names"]].concat())).await;
    assert!(ok && out.contains("available for the try scheduler") && out.contains("\nunix main\n"), "{out}");

    let job = |passwd: &str, builder: &str| {
        let diff = diff.display().to_string();
        let rest = ["--passwd", passwd, "--diff", &diff, "-p", "1", "--branch", "main", "--baserev", &sha];
        strings(&[&base[..], &rest, &["--builder", builder, "--who", "alice", "--comment", "a try", "--wait"]].concat())
    };
    let (ok, out) = client_within(Duration::from_secs(10), dir.path(), &job("wrong", "unix main")).await;
    assert!(!ok && out.contains("wrong login name or password"), "a wrong password is refused: {out}");
    let (_, out) = client(dir.path(), &job("alicepw", "no such builder")).await;
    assert!(out.contains("does not have the builder configured"), "{out}");
    assert_eq!(h.store.list_buildsets(&ListQuery::default()).await.expect("buildsets").items.len(), 0);

    let (ok, out) = client(dir.path(), &job("alicepw", "unix main")).await;
    assert!(ok, "the try build passes: {out}");
    assert!(out.contains("All Builds Complete") && out.contains("unix main: success"), "{out}");
    let build = h.store.get_build(1).await.expect("store").expect("the try build");
    assert_eq!(build.results, Some(0), "{}", build.state_string);
    let steps = h.store.list_steps(build.buildid).await.expect("steps");
    let shown = log_of(&h, &steps[1]).await;
    assert!(shown.contains(&"othe patched project".to_string()), "the diff was applied: {shown:?}");
    let buildsets = h.store.list_buildsets(&ListQuery::default()).await.expect("buildsets").items;
    let patch = buildsets[0].sourcestamps[0].patch.as_ref().expect("the stamp carries the diff");
    assert_eq!((patch.level, patch.author.as_str(), patch.comment.as_str()), (1, "alice", "a try"));
    assert!(buildsets[0].reason.contains("'try' job by user alice"), "{}", buildsets[0].reason);
});
