//! Pull requests on the fleet: GitHub's real `pull_request` deliveries
//! (signed), `issue_comment`s of GitHub's shape, a GitHub stand-in that
//! answers from a real repository with `refs/pull/N/head` and
//! `refs/pull/N/merge`, and builds of the merge ref on `cascade-worker`
//! and an unmodified `buildbot-worker`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::StatusCode;
use cascade_store::ListQuery;
use cascade_testkit::test_both;
use serde_json::json;

use crate::github::{GithubStandIn, github_stand_in};
use crate::harness::{Harness, fixture_json};
use crate::poller::{a_worker_of, finished_builds};
use crate::workers::{Kind, git, make_repo, wait_for};

const REPOSITORY: &str = "Codertocat/Hello-World";

/// Adds PR `n` to `repo`: `refs/pull/n/head`, a commit on `main` adding
/// `pr-n.txt` with `message`, and `refs/pull/n/merge`, `main` with it merged.
/// Returns (head, merge).
fn add_pull_refs(repo: &Path, n: u64, message: &str) -> (String, String) {
    let (topic, merging) = (format!("topic-{n}"), format!("merging-{n}"));
    git(repo, &["checkout", "-q", "-b", &topic, "main"]);
    std::fs::write(repo.join(format!("pr-{n}.txt")), format!("pull request {n}\n")).expect("write");
    git(repo, &["add", &format!("pr-{n}.txt")]);
    git(repo, &["commit", "-q", "-m", message]);
    let head = git(repo, &["rev-parse", "HEAD"]);
    git(repo, &["checkout", "-q", "-b", &merging, "main"]);
    git(repo, &["merge", "-q", "--no-ff", "-m", &format!("Merge {head} into main"), &topic]);
    let merge = git(repo, &["rev-parse", "HEAD"]);
    git(repo, &["checkout", "-q", "main"]);
    git(repo, &["update-ref", &format!("refs/pull/{n}/head"), &head]);
    git(repo, &["update-ref", &format!("refs/pull/{n}/merge"), &merge]);
    git(repo, &["branch", "-q", "-D", &topic, &merging]);
    (head, merge)
}

/// The configuration: builders of the `PR` branch (two stable, one not),
/// a PR scheduler with two labels and the comment trigger.
fn config(api: &str, repo: &Path, steps: &str, cancel_running: bool) -> String {
    format!(
        r#"
[master]
name = "pr-test"
url = "https://ci.example.org/"
artifacts = "{artifacts}"
[github]
webhook_secret = "test-secret"
repository = "{REPOSITORY}"
api_url = "{api}"
token = "test-token"
poll_interval = "0s"
[[branch]]
name = "main"
[[branch]]
name = "PR"
[[worker]]
name = "w1"
password = "pw-one"
[[factory]]
name = "f"
steps = [
  {{ git = {{ repo = "{repo}", mode = "full", method = "fresh", depth = 5, clobber_on_failure = true }} }},
  {steps}
]
[[builder]]
name = "AMD64 Fedora Stable"
workers = ["w1"]
factory = "f"
branches = ["main", "PR"]
tags = ["stable"]
[[builder]]
name = "AMD64 Fedora Refleaks"
workers = ["w1"]
factory = "f"
branches = ["PR"]
tags = ["stable"]
[[builder]]
name = "ARM Raspbian"
workers = ["w1"]
factory = "f"
branches = ["PR"]
[[scheduler]]
name = "main"
kind = "branch"
branch = "main"
[[scheduler]]
name = "pull-request"
kind = "pull_request"
branch = "PR"
labels = {{ "bug" = ".*", "test-with-refleak-buildbots" = "Refleaks" }}
comment = '^!buildbot (.+)'
cancel_running = {cancel_running}
[[reporter]]
kind = "github_status"
branches = ["PR"]
"#,
        repo = repo.display(),
        artifacts = repo.parent().map(|p| p.join("artifacts")).unwrap_or_default().display(),
    )
}

/// GitHub's real `pull_request` delivery of `action`, for PR `n` at `head`
/// (its merge commit: `repo`'s `refs/pull/n/merge`), sent by the writer `ann`.
fn pull_delivery(repo: &Path, action: &str, n: u64, head: &str, label: &str) -> Vec<u8> {
    let mut v = fixture_json(&format!("octokit-webhooks/pull_request-{action}.payload.json"));
    v["number"] = json!(n);
    v["pull_request"]["number"] = json!(n);
    v["pull_request"]["head"]["sha"] = json!(head);
    v["pull_request"]["merge_commit_sha"] = json!(git(repo, &["rev-parse", &format!("refs/pull/{n}/merge")]));
    v["sender"] = json!({"login": "ann", "type": "User"});
    if action == "labeled" {
        v["label"]["name"] = json!(label);
    }
    serde_json::to_vec(&v).expect("json")
}

/// An `issue_comment` `created` delivery on PR `n`, in GitHub's shape
/// (its `repository` and `sender` from the real PR payload).
fn comment_delivery(n: u64, login: &str, body: &str) -> Vec<u8> {
    let pr = fixture_json("octokit-webhooks/pull_request-labeled.payload.json");
    let v = json!({
        "action": "created",
        "issue": {
            "number": n,
            "title": "Update the README with new information.",
            "state": "open",
            "user": pr["pull_request"]["user"],
            "pull_request": {"url": format!("https://api.github.com/repos/{REPOSITORY}/pulls/{n}")},
        },
        "comment": {"id": 1, "body": body, "user": {"login": login, "type": "User"}},
        "repository": pr["repository"],
        "sender": {"login": login},
    });
    serde_json::to_vec(&v).expect("json")
}

/// The builders (names) of the requests of buildset `bsid`.
async fn requested(h: &Harness, bsid: i64) -> Vec<String> {
    let q = ListQuery::default().eq("buildsetid", bsid);
    let mut names: Vec<String> = Vec::new();
    for r in h.store.list_buildrequests(&q).await.expect("requests").items {
        let b = h.master.catalog.builder(r.builderid).expect("builder");
        names.push(b.name.clone());
    }
    names.sort();
    names
}

async fn comments(g: &GithubStandIn, n: u64, count: usize) -> Vec<String> {
    wait_for("the comments on the PR", Duration::from_secs(20), || async {
        let c = g.comments_on(n);
        (c.len() >= count).then_some(c)
    })
    .await
}

struct Setup {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    github: std::sync::Arc<GithubStandIn>,
    api: String,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, _) = make_repo(dir.path());
    let (github, api) = github_stand_in(&repo).await;
    github.permissions.lock().insert("ann".into(), "write".into());
    Setup { _dir: dir, repo, github, api }
}

/// A served master (its clock stands still) and a stand-in that knows
/// open PR `n` with `labels`, whose head commit says `message`; returns the head too.
async fn one_pull(db: &cascade_testkit::TestDb, n: u64, message: &str, labels: &[&str]) -> (Setup, Harness, String) {
    let s = setup().await;
    let (head, _) = add_pull_refs(&s.repo, n, message);
    s.github.open_pull(n, "Codertocat", labels);
    let h = Harness::served(db.store().await, &config(&s.api, &s.repo, "", false), frozen()).await;
    (s, h, head)
}

test_both!(a_trigger_label_builds_the_stable_pr_builders_removes_the_label_and_says_so_once, |db| {
    let (s, h, head) = one_pull(db, 2, "Update the README", &["bug"]).await;

    // A label from someone who may not start builds (the real payload's sender) is no approval.
    let mut from_reader: serde_json::Value =
        serde_json::from_slice(&pull_delivery(&s.repo, "labeled", 2, &head, "bug")).expect("json");
    from_reader["sender"] = json!({"login": "Codertocat", "type": "User"});
    let body = serde_json::to_vec(&from_reader).expect("json");
    let (status, answer) = h.deliver("pull_request", &body, "l-0").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(h.counts().await.1, 0);

    let (status, answer) = h.deliver("pull_request", &pull_delivery(&s.repo, "labeled", 2, &head, "bug"), "l-1").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let bsid = answer["buildset"].as_i64().expect("a buildset");
    // Pinned to the merge commit as it was approved: a later push is not what runs.
    let merge = git(&s.repo, &["rev-parse", "refs/pull/2/merge"]);
    let buildset = h.store.get_buildset(bsid).await.expect("get").expect("buildset");
    assert_eq!(buildset.sourcestamps[0].revision.as_deref(), Some(merge.as_str()));
    assert_eq!(requested(&h, bsid).await, ["AMD64 Fedora Refleaks PR", "AMD64 Fedora Stable PR"], "stable only");
    let change = h.store.get_change(answer["change"].as_i64().expect("change")).await.expect("get").expect("stored");
    assert_eq!(change.branch.as_deref(), Some("refs/pull/2/merge"));
    assert_eq!(change.revision.as_deref(), Some(head.as_str()));
    assert_eq!(change.files, ["pr-2.txt"]);
    assert_eq!(change.properties["pr_number"].0, json!(2));
    assert_eq!(change.properties["pr_head_sha"].0, json!(head));

    // The label goes (so adding it again builds again) and one comment links the PR's grid.
    let said = comments(&s.github, 2, 1).await;
    assert!(said[0].contains("https://ci.example.org/pulls/2"), "{}", said[0]);
    assert!(said[0].contains("`AMD64 Fedora Stable PR`") && !said[0].contains("Raspbian"), "{}", said[0]);
    wait_for("the label's removal", Duration::from_secs(20), || async { s.github.labels(2).is_empty().then_some(()) })
        .await;
    assert_eq!(s.github.count("DELETE /issues/2/labels/bug", 200), 1);

    // A redelivery builds nothing more and says nothing more.
    let (status, answer) = h.deliver("pull_request", &pull_delivery(&s.repo, "labeled", 2, &head, "bug"), "l-1").await;
    assert_eq!((status, answer["duplicate"].as_bool()), (StatusCode::OK, Some(true)));
    assert_eq!(s.github.comments_on(2).len(), 1);

    // The PR's grid shows its builders and its head; the console lists the PR.
    let (status, page) = h.send(get("/pulls/2")).await;
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("pull request #2") && page.contains(&head[..10]), "{page}");
    assert!(page.contains("AMD64 Fedora Stable PR") && !page.contains("AMD64 Fedora Stable main"), "{page}");
    let (_, console) = h.send(get("/console")).await;
    assert!(String::from_utf8_lossy(&console).contains("href=\"/pulls/2\""));

    // New commits cancel what is pending; closing finds nothing left.
    let (status, answer) = h.deliver("pull_request", &pull_delivery(&s.repo, "synchronize", 2, &head, ""), "s-1").await;
    assert_eq!((status, answer["cancelled_requests"].as_u64()), (StatusCode::OK, Some(2)), "{answer}");
    let requests = h.store.list_buildrequests(&ListQuery::default().eq("buildsetid", bsid)).await.expect("r");
    assert!(requests.items.iter().all(|r| r.complete && r.results == 6), "cancelled");
    let (_, answer) = h.deliver("pull_request", &pull_delivery(&s.repo, "closed", 2, &head, ""), "c-1").await;
    assert_eq!(answer["cancelled_requests"].as_u64(), Some(0));
    h.stop().await;
});

test_both!(a_skip_marker_and_labels_that_trigger_nothing_build_nothing, |db| {
    let (s, h, head) = one_pull(db, 3, "Fix a typo [skip ci]", &["bug"]).await;
    let (status, answer) = h.deliver("pull_request", &pull_delivery(&s.repo, "labeled", 3, &head, "bug"), "l-3").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(answer["ignored"].as_str().expect("reason").contains("skip CI"), "{answer}");
    let (status, answer) = h.deliver("pull_request", &pull_delivery(&s.repo, "labeled", 3, &head, "docs"), "l-4").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(answer["ignored"].as_str().expect("reason").contains("triggers no build"), "{answer}");
    let (status, _) = h.deliver("pull_request", &pull_delivery(&s.repo, "opened", 3, &head, ""), "o-3").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(h.counts().await, (0, 0, 0, 0));
    assert_eq!(s.github.labels(3), ["bug"], "a skipped PR keeps its label");
    h.stop().await;
});

test_both!(a_writers_comment_builds_the_builders_it_names_and_anyone_else_is_told_no, |db| {
    let (s, h, _) = one_pull(db, 2, "Update the README", &[]).await;

    let (status, answer) =
        h.deliver("issue_comment", &comment_delivery(2, "ann", "!buildbot REFLEAKS|raspbian"), "c-1").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let bsid = answer["buildset"].as_i64().expect("a buildset");
    // Matched ignoring case, on every PR builder (a comment is not limited to stable ones).
    assert_eq!(requested(&h, bsid).await, ["AMD64 Fedora Refleaks PR", "ARM Raspbian PR"]);
    let said = comments(&s.github, 2, 1).await;
    assert!(said[0].contains("`ARM Raspbian PR`") && !said[0].contains("Stable"), "{}", said[0]);

    let (status, _) = h.deliver("issue_comment", &comment_delivery(2, "bob", "!buildbot .*"), "c-2").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let said = comments(&s.github, 2, 2).await;
    assert!(said[1].starts_with("@bob: only users with write permission"), "{}", said[1]);
    let (status, _) = h.deliver("issue_comment", &comment_delivery(2, "ann", "!buildbot windows"), "c-3").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(comments(&s.github, 2, 3).await[2].contains("no pull-request builder matches `windows`"));
    let (status, _) = h.deliver("issue_comment", &comment_delivery(2, "ann", "!buildbot (unclosed"), "c-4").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(comments(&s.github, 2, 4).await[3].contains("not a valid regular expression"));
    let (status, _) = h.deliver("issue_comment", &comment_delivery(2, "ann", "LGTM"), "c-5").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // GitHub's rate limit: the delivery is refused as unavailable and nothing is stored.
    s.github.limited.store(true, std::sync::atomic::Ordering::Relaxed);
    let (status, answer) = h.deliver("issue_comment", &comment_delivery(2, "ann", "!buildbot .*"), "c-6").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer["error"].as_str().expect("reason").contains("rate limit"), "{answer}");
    s.github.limited.store(false, std::sync::atomic::Ordering::Relaxed);
    // A GitHub that does not answer: refused within the delivery's deadline, nothing stored.
    s.github.slow.store(true, std::sync::atomic::Ordering::Relaxed);
    let (status, answer) = h.deliver("issue_comment", &comment_delivery(2, "ann", "!buildbot .*"), "c-7").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer["error"].as_str().expect("reason").contains("GitHub's API was slow"), "{answer}");
    s.github.slow.store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(h.counts().await.1, 1, "one buildset in all");
    assert_eq!(s.github.count("/collaborators/bob/permission", 200), 1);
    h.stop().await;
});

test_both!(the_poller_builds_open_labelled_prs_no_delivery_built_and_only_once, |db| {
    let s = setup().await;
    add_pull_refs(&s.repo, 4, "Lost delivery");
    s.github.open_pull(4, "Codertocat", &["test-with-refleak-buildbots"]);
    s.github.open_pull(5, "Codertocat", &[]);
    add_pull_refs(&s.repo, 5, "Not labelled");
    add_pull_refs(&s.repo, 6, "Labelled by a triager");
    s.github.open_pull(6, "Codertocat", &["bug"]);
    s.github.pulls.lock().get_mut(&6).expect("pr").labeler = "bob".into();
    let h = Harness::served(db.store().await, &config(&s.api, &s.repo, "", false), frozen()).await;
    let poll = || async { h.master.poller.poll_all(REPOSITORY, &mut HashMap::new()).await.expect("a poll") };

    poll().await;
    let changes = h.store.list_changes(&ListQuery::default()).await.expect("changes").items;
    assert_eq!(changes.len(), 1, "only the PR a writer labelled");
    assert_eq!(changes[0].branch.as_deref(), Some("refs/pull/4/merge"));
    let bsid = h.store.list_buildsets(&ListQuery::default()).await.expect("bs").items[0].bsid;
    assert_eq!(requested(&h, bsid).await, ["AMD64 Fedora Refleaks PR"]);
    assert!(comments(&s.github, 4, 1).await[0].contains("/pulls/4"));

    // Had the label's removal failed, the next poll still builds nothing twice.
    s.github.pulls.lock().get_mut(&4).expect("pr").labels = vec!["test-with-refleak-buildbots".into()];
    poll().await;
    assert_eq!(h.counts().await.1, 1);
    h.stop().await;
});

fn frozen() -> cascade_master::clock::Clock {
    cascade_master::clock::Clock::manual(cascade_master::clock::now())
}

fn get(uri: &str) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::get(uri).body(axum::body::Body::empty()).expect("request")
}

/// End to end on `kind`: a pending PR build cancelled by new commits, a
/// labelled PR built from its merge ref, a writer's comment building again.
async fn builds_the_merge_ref(kind: Kind) {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let s = setup().await;
    add_pull_refs(&s.repo, 8, "Superseded");
    let (head, merge) = add_pull_refs(&s.repo, 7, "Add pr-7.txt");
    s.github.open_pull(7, "Codertocat", &["test-with-refleak-buildbots"]);
    s.github.open_pull(8, "Codertocat", &["test-with-refleak-buildbots"]);
    // The build proves it has the PR merged into main: both parents, the PR's file.
    let step = r#"{ name = "test", command = ["sh", "-c", "test -f pr-7.txt && test -f README && git rev-list --parents -n 1 HEAD"] },"#;
    let h =
        Harness::served(db.store().await, &config(&s.api, &s.repo, step, true), cascade_master::clock::Clock::System)
            .await;

    // No worker yet: PR 8's build waits, and its new commits cancel it.
    let head8 = git(&s.repo, &["rev-parse", "refs/pull/8/head"]);
    let (status, _) = h
        .deliver("pull_request", &pull_delivery(&s.repo, "labeled", 8, &head8, "test-with-refleak-buildbots"), "l-8")
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, answer) = h.deliver("pull_request", &pull_delivery(&s.repo, "synchronize", 8, &head8, ""), "s-8").await;
    assert_eq!(answer["cancelled_requests"].as_u64(), Some(1), "{answer}");

    let _worker = a_worker_of(kind, &h, s.repo.parent().expect("dir")).await;
    let (status, answer) = h
        .deliver("pull_request", &pull_delivery(&s.repo, "labeled", 7, &head, "test-with-refleak-buildbots"), "l-7")
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let builds = wait_for("the PR's build", Duration::from_secs(90), || async {
        let b = finished_builds(&h).await;
        (!b.is_empty()).then_some(b)
    })
    .await;
    let build = &builds[0];
    assert_eq!(build.results, Some(0), "{kind:?}: {}", build.state_string);
    let props = h.store.build_properties(build.buildid).await.expect("props");
    let prop = |n: &str| props.iter().find(|(k, _, _)| k == n).map(|(_, v, _)| v.clone());
    assert_eq!(prop("got_revision"), Some(json!(merge)), "the merge ref was checked out");
    assert_eq!(prop("branch"), Some(json!("refs/pull/7/merge")));
    assert_eq!(prop("pr_head_sha"), Some(json!(head)));
    assert!(comments(&s.github, 7, 1).await[0].contains("/pulls/7"));

    // Its commit statuses go to the PR's head, never to GitHub's merge commit.
    wait_for("the PR's statuses", Duration::from_secs(30), || async {
        let states = s.github.statuses.lock().clone();
        states.iter().any(|(sha, state)| *sha == head && state == "success").then_some(())
    })
    .await;
    assert!(s.github.statuses.lock().iter().all(|(sha, _)| *sha == head));

    // A writer's comment builds it again, through a checkout left corrupt
    // (clobber_on_failure); a reader's is refused.
    corrupt_checkouts(s.repo.parent().expect("dir"));
    let (status, _) = h.deliver("issue_comment", &comment_delivery(7, "ann", "!buildbot refleaks"), "c-7").await;
    assert_eq!(status, StatusCode::OK);
    let builds = wait_for("the second build", Duration::from_secs(90), || async {
        let b = finished_builds(&h).await;
        (b.len() == 2).then_some(b)
    })
    .await;
    let again = builds.iter().max_by_key(|b| b.buildid).expect("second");
    assert_eq!(again.results, Some(0), "{kind:?}: {}", again.state_string);
    let (status, _) = h.deliver("issue_comment", &comment_delivery(7, "bob", "!buildbot refleaks"), "c-8").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(comments(&s.github, 7, 3).await[2].contains("@bob: only users with write permission"));
    assert_eq!(finished_builds(&h).await.len(), 2);
    h.stop().await;
    db.finish().await;
}

/// Breaks every worker checkout under `dir` (not the repository itself),
/// as a build killed mid-fetch can.
fn corrupt_checkouts(dir: &Path) {
    let mut broken = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == ".git") && path.is_dir() && !path.starts_with(dir.join("repo")) {
                std::fs::write(path.join("HEAD"), "garbage\n").expect("break HEAD");
                broken += 1;
            } else if path.is_dir() {
                stack.push(path);
            }
        }
    }
    assert!(broken > 0, "no worker checkout under {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_worker_builds_a_labelled_prs_merge_ref() {
    builds_the_merge_ref(Kind::Cascade).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildbot_worker_builds_a_labelled_prs_merge_ref() {
    builds_the_merge_ref(Kind::Buildbot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_commits_stop_a_running_pr_build_when_the_scheduler_says_so() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let s = setup().await;
    let (head, _) = add_pull_refs(&s.repo, 9, "Slow tests");
    s.github.open_pull(9, "Codertocat", &["test-with-refleak-buildbots"]);
    let step = r#"{ name = "test", command = ["sleep", "120"] },"#;
    let h =
        Harness::served(db.store().await, &config(&s.api, &s.repo, step, true), cascade_master::clock::Clock::System)
            .await;
    let _worker = a_worker_of(Kind::Cascade, &h, s.repo.parent().expect("dir")).await;
    let label = "test-with-refleak-buildbots";
    let (status, _) = h.deliver("pull_request", &pull_delivery(&s.repo, "labeled", 9, &head, label), "l-9").await;
    assert_eq!(status, StatusCode::OK);
    wait_for("the PR's build to run", Duration::from_secs(60), || async {
        let builds = h.store.list_builds(&ListQuery::default()).await.expect("builds").items;
        builds.iter().any(|b| !b.complete).then_some(())
    })
    .await;
    let (_, answer) = h.deliver("pull_request", &pull_delivery(&s.repo, "synchronize", 9, &head, ""), "s-9").await;
    assert_eq!(answer["stopped_builds"].as_u64(), Some(1), "{answer}");
    let ended = wait_for("the stopped build", Duration::from_secs(60), || async {
        finished_builds(&h).await.into_iter().next()
    })
    .await;
    assert_eq!(ended.results, Some(6), "cancelled: {}", ended.state_string);
    h.stop().await;
    db.finish().await;
}

test_both!(unsigned_deliveries_never_build_pull_requests, |db| {
    let s = setup().await;
    let (head, _) = add_pull_refs(&s.repo, 2, "Update the README");
    s.github.open_pull(2, "Codertocat", &["bug"]);
    let text =
        config(&s.api, &s.repo, "", false).replace("webhook_secret = \"test-secret\"", "insecure_webhook = true");
    let h = Harness::served(db.store().await, &text, frozen()).await;
    let (status, answer) = h.deliver("pull_request", &pull_delivery(&s.repo, "labeled", 2, &head, "bug"), "l-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (status, _) = h.deliver("issue_comment", &comment_delivery(2, "ann", "!buildbot .*"), "c-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a forged comment could name any writer");
    assert_eq!(h.counts().await, (0, 0, 0, 0));
    h.stop().await;
});
