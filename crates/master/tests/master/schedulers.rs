use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cascade_master::scheduler::ForceRequest;
use cascade_master::sendchange::{SendChange, send};
use cascade_store::ListQuery;
use cascade_testkit::test_both;

use crate::harness::{CONFIG, Harness};

test_both!(sendchange_is_classified_like_a_webhook_change, |db| {
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let config = h.master.catalog.config.clone();
    let now = cascade_master::clock::now();
    let change = SendChange {
        who: "Ann <ann@example.org>".into(),
        branch: Some("3.x".into()),
        revision: Some("abc123".into()),
        comments: "by hand".into(),
        files: vec!["Lib/os.py".into()],
        properties: BTreeMap::from([("note".to_string(), "hi".to_string())]),
        ..Default::default()
    };
    let id = send(&h.store, &config, change, now).await.expect("send");
    let stored = h.store.get_change(id).await.expect("get").expect("stored");
    assert_eq!(stored.branch.as_deref(), Some("master"), "the label maps to its git branch");
    assert_eq!(stored.properties["note"].0, "hi");
    assert_eq!(stored.properties["event"].0, "sendchange");
    let waiting = h.store.waiting_changes().await.expect("waiting");
    assert_eq!(waiting.len(), 1);
    // the running master's next pass picks it up
    let report = h.master.schedulers.tick(&h.store, now + 3600).await.expect("tick");
    assert_eq!(report.fired.len(), 1);
});

test_both!(force_creates_a_pinned_buildset_per_branch, |db| {
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let now = h.master.clock.now();
    let req = ForceRequest {
        scheduler: "force".into(),
        builders: vec!["Linux 3.x".into(), "Linux feature".into()],
        revision: Some("deadbeef".into()),
        reason: "checking a flake".into(),
        owner: "ann".into(),
        ..Default::default()
    };
    let created = h.master.schedulers.force(&h.store, &req, now).await.expect("force");
    assert_eq!(created.len(), 2, "one buildset per branch");
    for (bsid, requests) in &created {
        assert_eq!(requests.len(), 1);
        let bs = h.store.get_buildset(*bsid).await.expect("get").expect("exists");
        assert_eq!(bs.sourcestamps[0].revision.as_deref(), Some("deadbeef"));
        assert_eq!(bs.reason, "A build was forced by 'ann': checking a flake");
        let props = h.store.buildset_properties(*bsid).await.expect("props");
        assert_eq!(props["owner"], serde_json::json!(["ann", "Force Build Form"]));
    }
    let unknown = ForceRequest { scheduler: "force".into(), builders: vec!["Nope".into()], ..Default::default() };
    assert!(h.master.schedulers.force(&h.store, &unknown, now).await.is_err());
    let wrong = ForceRequest { scheduler: "main".into(), ..Default::default() };
    assert!(h.master.schedulers.force(&h.store, &wrong, now).await.is_err());
});

test_both!(a_periodic_scheduler_fires_at_its_occurrence_once, |db| {
    let text = format!(
        "{CONFIG}\n[[scheduler]]\nname = \"nightly\"\nkind = \"periodic\"\nbranch = \"3.x\"\ncron = \"0 3 * * *\"\nbuilders = [\"Linux\"]\n"
    );
    let h = Harness::frozen(db, &text).await;
    let created = h
        .store
        .list_schedulers()
        .await
        .expect("list")
        .into_iter()
        .find(|s| s.name == "nightly")
        .expect("row")
        .created_at;
    let day = 86_400;
    // The first 03:00 UTC after the row was made (today's, before 03:00).
    let today_3am = created / day * day + 3 * 3600;
    let next_3am = if today_3am > created { today_3am } else { today_3am + day };
    let report = h.master.schedulers.tick(&h.store, next_3am - 60).await.expect("tick");
    assert!(report.fired.is_empty());
    assert!(report.next_due.is_some_and(|t| t <= next_3am * 1000));
    let report = h.master.schedulers.tick(&h.store, next_3am + 5).await.expect("tick");
    assert_eq!(report.fired.len(), 1);
    let (_, bsid, requests) = &report.fired[0];
    assert_eq!(requests.len(), 1, "only the Linux builder of 3.x");
    let bs = h.store.get_buildset(*bsid).await.expect("get").expect("exists");
    assert_eq!(bs.sourcestamps[0].revision, None, "the branch tip");
    assert_eq!(bs.sourcestamps[0].branch.as_deref(), Some("master"));
    assert!(h.master.schedulers.tick(&h.store, next_3am + 600).await.expect("tick").fired.is_empty());
    let reqs =
        h.store.list_buildrequests(&ListQuery::default().eq("builderid", h.builder("Linux 3.x"))).await.expect("list");
    assert_eq!(reqs.total, 1);
});

test_both!(a_disabled_scheduler_neither_collects_nor_fires, |db| {
    let h = Harness::frozen(db, crate::harness::CONFIG).await;
    let now = h.master.clock.now();
    let id = h.store.list_schedulers().await.expect("list").into_iter().find(|s| s.name == "main").expect("main").id;
    assert!(h.store.set_scheduler_enabled(id, false).await.expect("disable"));
    h.master.schedulers.tick(&h.store, now).await.expect("tick refreshes the enabled flags");
    h.push(&crate::harness::synthetic_push("master", 1, 1, &["x.c"]), "while-disabled").await;
    assert!(h.store.waiting_changes().await.expect("waiting").is_empty());
    assert!(h.master.schedulers.tick(&h.store, now + 3600).await.expect("tick").fired.is_empty());
});

#[test]
fn the_token_cli_creates_lists_and_revokes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("t.sqlite").display());
    let config = dir.path().join("cascade.toml");
    let text = format!("{CONFIG}\n[[user]]\nname = \"ann\"\nroles = [\"core-dev\"]\n");
    std::fs::write(&config, text.replace("name = \"test-master\"", &format!("name = \"cli\"\ndatabase = \"{db}\"")))
        .expect("config");
    let cascade = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cascade")).args(args).output().expect("cascade runs")
    };
    let cfg = config.display().to_string();
    let created = cascade(&["token", "create", "--config", &cfg, "--user", "ann", "--label", "ci bot"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let token = String::from_utf8_lossy(&created.stdout).trim().to_string();
    assert!(token.starts_with("cascade_") && token.len() > 60, "{token}");
    let listed = String::from_utf8_lossy(&cascade(&["token", "list", "--config", &cfg]).stdout).to_string();
    assert!(listed.contains("ann\tactive") && listed.contains("ci bot"), "{listed}");
    assert!(!listed.contains(&token), "the token itself is never shown again");
    let unknown = cascade(&["token", "create", "--config", &cfg, "--user", "mallory"]);
    assert!(!unknown.status.success(), "tokens only for configured users");
    assert!(cascade(&["token", "revoke", "--config", &cfg, "1"]).status.success());
    let listed = String::from_utf8_lossy(&cascade(&["token", "list", "--config", &cfg]).stdout).to_string();
    assert!(listed.contains("ann\trevoked"), "{listed}");
}

/// Polls the store every 10 ms until `n` buildsets exist; when they did.
async fn buildsets_appear(h: &Harness, n: usize, limit: Duration) -> Instant {
    let start = Instant::now();
    loop {
        let count = h.store.list_buildsets(&ListQuery::default()).await.expect("buildsets").items.len();
        if count >= n {
            return Instant::now();
        }
        assert!(start.elapsed() < limit, "{n} buildsets did not appear in {limit:?} (found {count})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn buildset_count(h: &Harness) -> usize {
    h.store.list_buildsets(&ListQuery::default()).await.expect("buildsets").items.len()
}

test_both!(the_tree_stable_timer_never_fires_early_and_fires_soon_after, |db| {
    // Real time: a 1 s timer on 3.x, a 2 s timer on the feature branch.
    let text = CONFIG
        .replace("tree_stable = \"30s\"", "tree_stable = \"1s\"")
        .replace("tree_stable = \"60s\"", "tree_stable = \"2s\"");
    assert!(text.contains("tree_stable = \"1s\"") && text.contains("tree_stable = \"2s\""));
    let h = Harness::with_config(db, &text).await;
    // Pushes 0.9 s apart: each restarts the 1 s timer, so nothing fires between them.
    let mut last_sent = Instant::now();
    for push in 0..3u32 {
        if push > 0 {
            tokio::time::sleep(Duration::from_millis(900)).await;
            assert_eq!(buildset_count(&h).await, 0, "a 1 s timer fired within 0.9 s of a push");
        }
        last_sent = Instant::now();
        h.push(&crate::harness::synthetic_push("master", push + 1, 1, &["Lib/os.py"]), &format!("t-{push}")).await;
    }
    let fired = buildsets_appear(&h, 1, Duration::from_secs(10)).await;
    let after = fired.duration_since(last_sent);
    assert!(after >= Duration::from_secs(1), "fired {after:?} after the last push: early");
    assert!(after < Duration::from_millis(1800), "fired {after:?} after the last push: over 0.8 s late");
    let bs = &h.store.list_buildsets(&ListQuery::default()).await.expect("buildsets").items[0];
    assert_eq!(h.store.buildset_changes(bs.bsid).await.expect("changes").len(), 3, "one buildset for all three");

    // One push against the 2 s timer.
    let sent = Instant::now();
    h.push(&crate::harness::synthetic_push("feature-branch", 9, 1, &["Lib/os.py"]), "t-feature").await;
    let fired = buildsets_appear(&h, 2, Duration::from_secs(10)).await;
    let after = fired.duration_since(sent);
    assert!(after >= Duration::from_secs(2), "the 2 s timer fired after {after:?}: early");
    assert!(after < Duration::from_millis(2800), "the 2 s timer fired after {after:?}: over 0.8 s late");
});

test_both!(pushes_that_start_a_long_timer_ask_for_no_pass_of_their_own, |db| {
    // 3.x's timer is 30 s: a push cannot make anything due sooner, so it
    // does not wake the loop for a pass (the loop still looks once a second).
    let h = Harness::with_config(db, CONFIG).await;
    let (start, before) = (Instant::now(), h.master.metrics.scheduler_passes.get(&[]));
    for push in 0..12u32 {
        h.push(&crate::harness::synthetic_push("master", push + 1, 1, &["Lib/os.py"]), &format!("p-{push}")).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let passes = h.master.metrics.scheduler_passes.get(&[]) - before;
    let bound = start.elapsed().as_secs_f64().ceil() as u64 + 2;
    assert!(passes <= bound, "{passes} passes in {:?} of 12 pushes: each push asked for one", start.elapsed());
    assert_eq!(buildset_count(&h).await, 0, "nothing was due");
});
