//! Store behaviour, each test run on SQLite and on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};

use cascade_model::NewChange;
use cascade_store::{
    BuilderSpec, Delivery, IngestOutcome, ListQuery, NewBuildset, NewSourceStamp, SchedulerTouch, Store, WorkerSpec,
};
use cascade_testkit::test_both;

const REPO: &str = "https://github.com/python/cpython";

fn change(branch: &str, revision: &str, files: &[&str]) -> NewChange {
    NewChange {
        author: "Ann <ann@example.org>".into(),
        committer: Some("Bob <bob@example.org>".into()),
        comments: format!("commit {revision}"),
        branch: Some(branch.into()),
        revision: Some(revision.into()),
        revlink: Some(format!("{REPO}/commit/{revision}")),
        when_timestamp: 1_700_000_000,
        category: None,
        repository: REPO.into(),
        codebase: String::new(),
        project: "python/cpython".into(),
        files: files.iter().map(std::string::ToString::to_string).collect(),
        properties: BTreeMap::from([("event".to_string(), serde_json::json!("push"))]),
    }
}

async fn setup(store: &Store) -> (BTreeMap<String, i64>, i64) {
    let builders: Vec<BuilderSpec> = ["Fedora 3.x", "Windows 3.x", "Fedora 3.14"]
        .iter()
        .map(|name| BuilderSpec {
            name: name.to_string(),
            definition: name.rsplit_once(' ').map(|(d, _)| d.to_string()).unwrap_or_default(),
            branch: name.rsplit_once(' ').map(|(_, b)| b.to_string()),
            description: None,
            tags: vec!["stable".into(), "tier-1".into()],
            workers: vec!["w1".into()],
        })
        .collect();
    let master = store.register_master("m1", 100).await.expect("register master");
    let (ids, _) = store
        .sync_configuration(master, &builders, &[WorkerSpec { name: "w1".into() }])
        .await
        .expect("sync configuration");
    (ids, master)
}

async fn buildset_for(store: &Store, change_ids: &[i64], revision: &str, builders: &[i64], now: i64) -> Vec<i64> {
    let bs = NewBuildset {
        reason: "test".into(),
        sourcestamp: NewSourceStamp {
            repository: REPO.into(),
            branch: Some("main".into()),
            revision: Some(revision.into()),
            project: "python/cpython".into(),
            codebase: String::new(),
        },
        change_ids: change_ids.to_vec(),
        builder_ids: builders.to_vec(),
        ..Default::default()
    };
    store.create_buildset(&bs, now).await.expect("create buildset").1
}

async fn ingest(store: &Store, changes: Vec<NewChange>) -> Vec<i64> {
    let with_touches: Vec<_> = changes.into_iter().map(|c| (c, vec![])).collect();
    match store.ingest_changes(None, &with_touches, 1000).await.expect("ingest") {
        IngestOutcome::Stored { change_ids } => change_ids,
        IngestOutcome::Duplicate => panic!("not a duplicate"),
    }
}

test_both!(changes_round_trip_with_files_properties_and_filters, |db| {
    let store = db.store().await;
    let ids = ingest(
        &store,
        vec![
            change("main", "aaa", &["Lib/os.py", "Doc/os.rst"]),
            change("main", "bbb", &[]),
            change("3.14", "ccc", &["README"]),
        ],
    )
    .await;
    assert_eq!(ids.len(), 3);
    let first = store.get_change(ids[0]).await.expect("get").expect("exists");
    assert_eq!(first.revision.as_deref(), Some("aaa"));
    assert_eq!(first.files, vec!["Doc/os.rst", "Lib/os.py"]);
    assert_eq!(first.properties["event"], (serde_json::json!("push"), "Change".to_string()));
    assert_eq!(first.sourcestamp.revision.as_deref(), Some("aaa"));
    assert_eq!(first.sourcestamp.branch.as_deref(), Some("main"));
    let second = store.get_change(ids[1]).await.expect("get").expect("exists");
    assert_eq!(second.parent_changeids, vec![ids[0]], "commits of one push chain");
    assert!(store.get_change(ids[2] + 100).await.expect("get").is_none());

    let main = store
        .list_changes(&ListQuery::default().eq("branch", "main").order_by("changeid", true).limit(1))
        .await
        .expect("list");
    assert_eq!(main.total, 2);
    assert_eq!(main.items.len(), 1);
    assert_eq!(main.items[0].changeid, ids[1]);
    let bad = store.list_changes(&ListQuery::default().eq("colour", "red")).await;
    assert!(matches!(bad, Err(cascade_store::StoreError::BadQuery(_))));
});

test_both!(a_redelivered_webhook_writes_nothing, |db| {
    let store = db.store().await;
    let delivery = Delivery { hook_id: "1".into(), delivery_id: "guid-1".into(), event: "push".into() };
    let batch = vec![(change("main", "aaa", &[]), vec![])];
    let first = store.ingest_changes(Some(&delivery), &batch, 10).await.expect("first");
    assert!(matches!(first, IngestOutcome::Stored { ref change_ids } if change_ids.len() == 1));
    let again = store.ingest_changes(Some(&delivery), &batch, 11).await.expect("again");
    assert_eq!(again, IngestOutcome::Duplicate);
    // Same GUID from another hook is a different delivery.
    let other_hook = Delivery { hook_id: "2".into(), ..delivery.clone() };
    let other = store.ingest_changes(Some(&other_hook), &batch, 12).await.expect("other hook");
    assert!(matches!(other, IngestOutcome::Stored { .. }));
    assert_eq!(store.list_changes(&ListQuery::default()).await.expect("list").total, 2);
    // Once pruned (older than GitHub's redelivery window), an id is new again.
    assert_eq!(store.prune_webhook_deliveries(11).await.expect("prune"), 1);
    let after_prune = store.ingest_changes(Some(&delivery), &batch, 13).await.expect("after prune");
    assert!(matches!(after_prune, IngestOutcome::Stored { .. }));
});

test_both!(polled_and_delivered_changes_never_double, |db| {
    use cascade_store::{POLLER_SOURCE, Redundant, SOURCE_PROPERTY};
    let store = db.store().await;
    let ids = |o: IngestOutcome| match o {
        IngestOutcome::Stored { change_ids } => change_ids.len(),
        IngestOutcome::Duplicate => usize::MAX,
    };
    let delivered = vec![(change("main", "aaa1", &[]), vec![])];
    assert_eq!(ids(store.ingest_changes(None, &delivered, 10).await.expect("delivered")), 1);
    let mut polled_change = change("main", "bbb2", &[]);
    polled_change.properties.insert(SOURCE_PROPERTY.into(), serde_json::json!(POLLER_SOURCE));
    let mut repeated = change("main", "aaa1", &[]);
    repeated.properties.insert(SOURCE_PROPERTY.into(), serde_json::json!(POLLER_SOURCE));
    // A poll that finds a delivered commit and a missed one stores only the missed one.
    let poll = vec![(repeated, vec![]), (polled_change, vec![])];
    assert_eq!(ids(store.ingest_changes_unless(None, &poll, Redundant::Known, 11).await.expect("poll")), 1);
    assert_eq!(store.newest_revision(REPO, "main").await.expect("newest").as_deref(), Some("bbb2"));
    assert_eq!(store.newest_revision(REPO, "3.14").await.expect("none"), None);
    // The late delivery of the polled commit adds nothing; a delivered one is not "polled".
    let late = vec![(change("main", "bbb2", &[]), vec![]), (change("main", "ccc3", &[]), vec![])];
    assert_eq!(ids(store.ingest_changes_unless(None, &late, Redundant::Polled, 12).await.expect("late")), 1);
    let again = vec![(change("main", "aaa1", &[]), vec![])];
    let rebuilt = store.ingest_changes_unless(None, &again, Redundant::Polled, 13).await.expect("again");
    assert_eq!(ids(rebuilt), 1, "a delivered commit pushed again (a force push back) is built again");
    // The same revision on another branch is another change.
    let other = vec![(change("3.14", "bbb2", &[]), vec![])];
    assert_eq!(ids(store.ingest_changes_unless(None, &other, Redundant::Known, 14).await.expect("other")), 1);
    let revisions: Vec<Option<String>> =
        store.list_changes(&ListQuery::default()).await.expect("list").items.into_iter().map(|c| c.revision).collect();
    assert_eq!(revisions.len(), 5, "{revisions:?}");
    let polled: Vec<Option<String>> =
        store.polled_changes(None, 10).await.expect("polled").into_iter().map(|c| c.revision).collect();
    assert_eq!(polled, [Some("bbb2".to_string())], "what the poller found, and nothing delivered");
    assert!(store.polled_changes(Some(2), 10).await.expect("older").is_empty());
});

// A delivery of one commit (most pushes; one statement on PostgreSQL)
// keeps everything a longer push keeps, and the same answers.
test_both!(a_push_of_one_commit_keeps_all_it_carries, |db| {
    use cascade_store::{POLLER_SOURCE, Redundant, SOURCE_PROPERTY};
    let store = db.store().await;
    let delivery = Delivery { hook_id: "9".into(), delivery_id: "one".into(), event: "push".into() };
    let mut one = change("main", "abc1", &["Lib/os.py", "Doc/x \"q\".rst", "Lib/os.py"]);
    one.properties.insert("pusher".into(), serde_json::json!({"name": "ann", "n": [1, 2]}));
    let out = store.ingest_changes(Some(&delivery), &[(one.clone(), vec![])], 10).await.expect("first");
    let IngestOutcome::Stored { change_ids } = out else { panic!("stored") };
    let stored = store.get_change(change_ids[0]).await.expect("get").expect("exists");
    assert_eq!(stored.files, vec!["Doc/x \"q\".rst", "Lib/os.py"], "each file once");
    assert_eq!(stored.properties["pusher"].0, serde_json::json!({"name": "ann", "n": [1, 2]}));
    assert_eq!(stored.properties["event"].0, serde_json::json!("push"));
    assert!(stored.parent_changeids.is_empty());
    assert_eq!(stored.sourcestamp.revision.as_deref(), Some("abc1"));
    let again = store.ingest_changes(Some(&delivery), &[(one.clone(), vec![])], 11).await.expect("again");
    assert_eq!(again, IngestOutcome::Duplicate);
    // The same commit pushed again shares its source stamp, as in Buildbot.
    let IngestOutcome::Stored { change_ids: pushed_again } =
        store.ingest_changes(None, &[(one.clone(), vec![])], 12).await.expect("pushed again")
    else {
        panic!("stored")
    };
    let second = store.get_change(pushed_again[0]).await.expect("get").expect("exists");
    assert_eq!(second.sourcestamp.ssid, stored.sourcestamp.ssid);
    // A delivery that comes after the poller stored its commit adds nothing.
    let mut polled = change("main", "def2", &[]);
    polled.properties.insert(SOURCE_PROPERTY.into(), serde_json::json!(POLLER_SOURCE));
    store.ingest_changes_unless(None, &[(polled, vec![])], Redundant::Known, 13).await.expect("poll");
    let late = Delivery { delivery_id: "late".into(), ..delivery.clone() };
    let out = store
        .ingest_changes_unless(Some(&late), &[(change("main", "def2", &[]), vec![])], Redundant::Polled, 14)
        .await
        .expect("late");
    assert_eq!(out, IngestOutcome::Stored { change_ids: vec![] }, "recorded, nothing new");
    let redelivered = store
        .ingest_changes_unless(Some(&late), &[(change("main", "def2", &[]), vec![])], Redundant::Polled, 15)
        .await
        .expect("redelivered");
    assert_eq!(redelivered, IngestOutcome::Duplicate, "the late delivery itself was recorded");
    assert_eq!(store.list_changes(&ListQuery::default()).await.expect("list").total, 3);
});

test_both!(a_branch_scheduler_fires_once_for_all_waiting_changes, |db| {
    let store = db.store().await;
    let (builders, _) = setup(&store).await;
    let scheds = store
        .sync_schedulers(&[("3.x".into(), "branch".into()), ("3.14".into(), "branch".into())], 50)
        .await
        .expect("sync schedulers");
    let sid = scheds["3.x"].id;
    let mut all = Vec::new();
    for (i, rev) in ["r1", "r2", "r3"].iter().enumerate() {
        let touches = vec![SchedulerTouch { scheduler_id: sid, important: i != 1 }];
        let out =
            store.ingest_changes(None, &[(change("main", rev, &[]), touches)], 100 + i as i64).await.expect("ingest");
        let IngestOutcome::Stored { change_ids } = out else { panic!("stored") };
        all.extend(change_ids);
    }
    let waiting = store.waiting_changes().await.expect("waiting");
    assert_eq!(waiting.len(), 3);
    assert_eq!(waiting.iter().filter(|w| w.important).count(), 2);
    let summaries = store.waiting_summaries().await.expect("summaries");
    assert_eq!(summaries.len(), 1);
    assert_eq!(summaries[0].scheduler_id, sid);
    assert_eq!(summaries[0].count, 3);
    assert_eq!(summaries[0].up_to_change_id, *all.iter().max().expect("ids"));
    // r3 (received at 102) is important; r2 (101) is not, r1 (100) is.
    assert_eq!(summaries[0].last_important_ms, Some(102_000));

    let template = NewBuildset {
        reason: "The branch scheduler named '3.x' triggered this build".into(),
        builder_ids: vec![builders["Fedora 3.x"], builders["Windows 3.x"]],
        ..Default::default()
    };
    let max_id = *all.iter().max().expect("ids");
    let (bsid, requests) =
        store.fire_branch_scheduler(sid, max_id, &template, 200).await.expect("fire").expect("fired");
    assert_eq!(requests.len(), 2);
    assert!(store.fire_branch_scheduler(sid, max_id, &template, 201).await.expect("fire again").is_none());
    assert!(store.waiting_changes().await.expect("waiting").is_empty());

    let bs = store.get_buildset(bsid).await.expect("get").expect("exists");
    assert_eq!(bs.sourcestamps.len(), 1);
    assert_eq!(bs.sourcestamps[0].revision.as_deref(), Some("r3"), "built at the newest change");
    assert!(!bs.complete);
    let covered: Vec<i64> = store.buildset_changes(bsid).await.expect("changes").iter().map(|c| c.changeid).collect();
    assert_eq!(covered, all);
    let reqs = store
        .list_buildrequests(&ListQuery::default().eq("buildsetid", bsid).order_by("builderid", false))
        .await
        .expect("requests");
    assert_eq!(reqs.total, 2);
    assert!(reqs.items.iter().all(|r| !r.complete && !r.claimed && r.results == -1));
    let schedulers = store.list_schedulers().await.expect("schedulers");
    assert_eq!(schedulers.iter().find(|s| s.id == sid).and_then(|s| s.last_fired_at), Some(200));
});

test_both!(a_claim_merges_every_pending_request_of_the_builder_and_branch, |db| {
    let store = db.store().await;
    let (builders, master) = setup(&store).await;
    let fedora = builders["Fedora 3.x"];
    let windows = builders["Windows 3.x"];
    let mut change_ids = Vec::new();
    for i in 0..5 {
        let rev = format!("rev{i}");
        let ids = ingest(&store, vec![change("main", &rev, &[])]).await;
        buildset_for(&store, &ids, &rev, &[fedora, windows], 100 + i).await;
        change_ids.extend(ids);
    }
    // A build forced at one exact revision stays separate.
    let forced = NewBuildset {
        reason: "forced".into(),
        sourcestamp: NewSourceStamp {
            repository: REPO.into(),
            branch: Some("main".into()),
            revision: Some("pinned".into()),
            ..Default::default()
        },
        builder_ids: vec![fedora],
        ..Default::default()
    };
    let (_, forced_req) = store.create_buildset(&forced, 150).await.expect("forced");

    let build = store.claim_build(fedora, master, None, 200).await.expect("claim").expect("a build");
    assert_eq!(build.number, 1);
    assert_eq!(build.covered.len(), 5);
    assert_eq!(build.source.revision.as_deref(), Some("rev4"), "the newest revision is built");
    let blamelist: Vec<i64> =
        store.build_changes(build.build_id).await.expect("blamelist").iter().map(|c| c.changeid).collect();
    assert_eq!(blamelist, change_ids);
    assert_eq!(store.build_request_ids(build.build_id).await.expect("ids"), build.covered);
    let record = store.get_build(build.build_id).await.expect("get").expect("exists");
    assert_eq!((record.builderid, record.number, record.masterid), (fedora, 1, master));
    assert_eq!(record.buildrequestid, build.build_request_id);

    let forced_build = store.claim_build(fedora, master, None, 201).await.expect("claim").expect("forced build");
    assert_eq!(forced_build.covered, forced_req);
    assert_eq!(forced_build.number, 2);
    assert_eq!(forced_build.source.revision.as_deref(), Some("pinned"));
    assert!(store.claim_build(fedora, master, None, 202).await.expect("claim").is_none());

    let other = store.claim_build(windows, master, None, 203).await.expect("claim").expect("windows build");
    assert_eq!(other.number, 1);
    assert_eq!(other.covered.len(), 5);
    let claimed = store.list_buildrequests(&ListQuery::default().eq("claimed", "true")).await.expect("claimed");
    assert_eq!(claimed.total, 11);
    assert!(claimed.items.iter().all(|r| r.claimed_by_masterid == Some(master)));
});

test_both!(concurrent_claims_from_two_masters_never_share_a_request, |db| {
    let store = db.store().await;
    let (builders, m1) = setup(&store).await;
    let m2 = store.register_master("m2", 100).await.expect("m2");
    let targets = [builders["Fedora 3.x"], builders["Windows 3.x"], builders["Fedora 3.14"]];
    // Requests on two branches so that several builds per builder are needed.
    for i in 0..12 {
        let branch = if i % 2 == 0 { "main" } else { "feature" };
        let rev = format!("r{i}");
        let mut c = change(branch, &rev, &[]);
        c.branch = Some(branch.into());
        let ids = ingest(&store, vec![c]).await;
        let bs = NewBuildset {
            reason: "t".into(),
            sourcestamp: NewSourceStamp {
                repository: REPO.into(),
                branch: Some(branch.into()),
                revision: Some(rev),
                ..Default::default()
            },
            change_ids: ids,
            builder_ids: targets.to_vec(),
            ..Default::default()
        };
        store.create_buildset(&bs, 100 + i).await.expect("buildset");
    }
    let mut tasks = Vec::new();
    for n in 0..6 {
        let s = store.clone();
        let master = if n % 2 == 0 { m1 } else { m2 };
        tasks.push(tokio::spawn(async move {
            let mut builds = Vec::new();
            for &b in targets.iter().cycle().skip(n).take(9) {
                if let Some(build) = s.claim_build(b, master, None, 500).await.expect("claim") {
                    builds.push(build);
                }
            }
            builds
        }));
    }
    let mut seen = BTreeSet::new();
    let mut per_builder_branch: BTreeMap<(i64, Option<String>), usize> = BTreeMap::new();
    for t in tasks {
        for build in t.await.expect("task") {
            for r in &build.covered {
                assert!(seen.insert(*r), "request {r} claimed twice");
            }
            *per_builder_branch.entry((build.builder_id, build.source.branch.clone())).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 36, "every request claimed exactly once");
    // All requests were pending before any claim: one build per builder and branch.
    assert!(per_builder_branch.values().all(|&n| n == 1), "{per_builder_branch:?}");
    assert_eq!(per_builder_branch.len(), 6);
});

test_both!(deleting_a_branch_cancels_its_pending_requests, |db| {
    let store = db.store().await;
    let (builders, master) = setup(&store).await;
    let fedora = builders["Fedora 3.x"];
    let windows = builders["Windows 3.x"];
    let ids = ingest(&store, vec![change("main", "a", &[])]).await;
    buildset_for(&store, &ids, "a", &[fedora], 10).await;
    let claimed = store.claim_build(fedora, master, None, 11).await.expect("claim").expect("build");
    let reqs = buildset_for(&store, &ids, "a", &[fedora, windows], 12).await;
    let delivery = Delivery { hook_id: "1".into(), delivery_id: "del".into(), event: "push".into() };
    let deletion =
        store.delete_branch(Some(&delivery), REPO, "main", 13).await.expect("delete").expect("first delivery");
    assert_eq!(deletion.cancelled_requests, 2);
    assert!(store.delete_branch(Some(&delivery), REPO, "main", 14).await.expect("again").is_none(), "redelivery");
    for r in &reqs {
        let rec = store.get_buildrequest(*r).await.expect("get").expect("exists");
        assert!(rec.complete);
        assert_eq!(rec.results, 6);
    }
    let claimed_req = store.get_buildrequest(claimed.build_request_id).await.expect("get").expect("exists");
    assert!(!claimed_req.complete, "a running build is left alone");
    let complete = store.list_buildsets(&ListQuery::default().eq("complete", "true")).await.expect("list");
    assert_eq!(complete.total, 1);
    assert_eq!(complete.items[0].results, Some(6));
});

test_both!(a_periodic_scheduler_fires_once_per_occurrence, |db| {
    let store = db.store().await;
    let (builders, _) = setup(&store).await;
    let sid = store.sync_schedulers(&[("nightly".into(), "periodic".into())], 0).await.expect("sync")["nightly"].id;
    let bs = NewBuildset {
        reason: "nightly".into(),
        sourcestamp: NewSourceStamp { repository: REPO.into(), branch: Some("main".into()), ..Default::default() },
        builder_ids: vec![builders["Fedora 3.x"]],
        ..Default::default()
    };
    assert!(store.fire_periodic_scheduler(sid, 86_400, &bs, 86_401).await.expect("fire").is_some());
    assert!(store.fire_periodic_scheduler(sid, 86_400, &bs, 86_402).await.expect("again").is_none());
    assert!(store.fire_periodic_scheduler(sid, 2 * 86_400, &bs, 2 * 86_400).await.expect("next").is_some());
    assert_eq!(store.list_buildsets(&ListQuery::default()).await.expect("list").total, 2);
});

test_both!(configuration_sync_is_idempotent_and_listable, |db| {
    let store = db.store().await;
    let (first, _) = setup(&store).await;
    let (second, master) = setup(&store).await;
    assert_eq!(first, second, "ids are stable across restarts");
    let stable = store
        .list_builders(&ListQuery {
            filters: vec![cascade_store::Filter {
                field: "tags".into(),
                op: cascade_store::Op::Contains,
                values: vec!["stable".into()],
            }],
            ..Default::default()
        })
        .await
        .expect("builders");
    assert_eq!(stable.total, 3);
    assert!(stable.items[0].masterids.len() == 1);
    // "table" is inside "stable" but is not a tag.
    let none = store
        .list_builders(&ListQuery {
            filters: vec![cascade_store::Filter {
                field: "tags".into(),
                op: cascade_store::Op::Contains,
                values: vec!["table".into()],
            }],
            ..Default::default()
        })
        .await
        .expect("builders");
    assert_eq!(none.total, 0);
    let by_name = store.get_builder_by_name("Windows 3.x").await.expect("get").expect("exists");
    assert_eq!(by_name.tags, vec!["stable", "tier-1"]);
    let workers = store.list_workers(&ListQuery::default()).await.expect("workers");
    assert_eq!(workers.total, 1);
    assert_eq!(workers.items[0].configured_on.len(), 3);
    assert!(workers.items[0].connected_to.is_empty());
    // A builder dropped from the config keeps its row but no masters.
    store.sync_configuration(master, &[], &[WorkerSpec { name: "w1".into() }]).await.expect("sync");
    let gone = store.get_builder(first["Fedora 3.x"]).await.expect("get").expect("row kept");
    assert!(gone.masterids.is_empty());
});

test_both!(logs_keep_every_line_and_read_by_range, |db| {
    let store = db.store().await;
    let (builders, master) = setup(&store).await;
    let ids = ingest(&store, vec![change("main", "a", &[])]).await;
    buildset_for(&store, &ids, "a", &[builders["Fedora 3.x"]], 10).await;
    let build = store.claim_build(builders["Fedora 3.x"], master, None, 11).await.expect("claim").expect("build");
    let step = store.add_step(build.build_id, 0, "test", 12).await.expect("step");
    let log = store.add_log(step, "stdio", "s").await.expect("log");
    // 200,000 lines in the batches a live build produces, with odd content.
    let lines: Vec<String> = (0..200_000)
        .map(|i| match i % 4 {
            0 => format!("o line {i} <b>&amp; ünïcödé</b>"),
            1 => format!("e error {i}\tTAB"),
            2 => "o".to_string(),
            _ => format!("h {}", "x".repeat(i % 300)),
        })
        .collect();
    let mut count = 0;
    for batch in lines.chunks(7_919) {
        count = store.append_log_lines(log, count, batch).await.expect("append");
    }
    assert_eq!(count, 200_000);
    store.finish_log(log).await.expect("finish");
    let all = store.log_lines(log, 0, 199_999).await.expect("read");
    assert_eq!(all.len(), lines.len());
    assert!(all == lines, "every line comes back as it went in");
    assert_eq!(store.log_lines(log, 100_001, 100_003).await.expect("range"), lines[100_001..=100_003].to_vec());
    assert!(store.log_lines(log, 300_000, 300_010).await.expect("past the end").is_empty());
    let logs = store.list_logs(step).await.expect("logs");
    assert_eq!((logs[0].num_lines, logs[0].complete, logs[0].slug.as_str()), (200_000, true, "stdio"));
});

test_both!(finishing_and_retrying_builds, |db| {
    let store = db.store().await;
    let (builders, master) = setup(&store).await;
    let fedora = builders["Fedora 3.x"];
    let windows = builders["Windows 3.x"];
    let ids = ingest(&store, vec![change("main", "a", &[])]).await;
    let first = buildset_for(&store, &ids, "a", &[fedora, windows], 10).await;
    buildset_for(&store, &ids, "a", &[fedora], 11).await;

    let build = store.claim_build(fedora, master, None, 20).await.expect("claim").expect("build");
    assert_eq!(build.covered.len(), 2);
    // The worker is lost: RETRY, and the requests wait again.
    store.retry_build(build.build_id, "worker lost", 21).await.expect("retry");
    assert_eq!(store.get_build(build.build_id).await.expect("get").expect("b").results, Some(5));
    let again = store.claim_build(fedora, master, None, 22).await.expect("claim").expect("retried");
    assert_eq!(again.covered, build.covered);
    assert_eq!(again.number, 2);

    store.finish_build(again.build_id, cascade_model::Results::Failure, "failed test", 30).await.expect("finish");
    let r = store.get_buildrequest(first[0]).await.expect("get").expect("req");
    assert!(r.complete);
    assert_eq!(r.results, 2);
    // The first buildset still waits for Windows; the second is complete.
    let sets = store.list_buildsets(&ListQuery::default().order_by("bsid", false)).await.expect("sets");
    assert!(!sets.items[0].complete);
    assert!(sets.items[1].complete);
    assert_eq!(sets.items[1].results, Some(2));
    let win = store.claim_build(windows, master, None, 31).await.expect("claim").expect("windows");
    store.finish_build(win.build_id, cascade_model::Results::Success, "build successful", 32).await.expect("finish");
    let first_set = store.get_buildset(sets.items[0].bsid).await.expect("get").expect("set");
    assert!(first_set.complete);
    assert_eq!(first_set.results, Some(2), "the worst of failure and success");
});

test_both!(a_restarted_master_retries_the_builds_it_owned, |db| {
    let store = db.store().await;
    let (builders, master) = setup(&store).await;
    let ids = ingest(&store, vec![change("main", "a", &[])]).await;
    buildset_for(&store, &ids, "a", &[builders["Fedora 3.x"]], 10).await;
    let build = store.claim_build(builders["Fedora 3.x"], master, None, 11).await.expect("claim").expect("build");
    let step = store.add_step(build.build_id, 0, "compile", 12).await.expect("step");
    let workers = store.list_workers(&ListQuery::default()).await.expect("workers");
    let w = workers.items[0].workerid;
    store.worker_attached(w, master, &serde_json::json!({"basedir": "/w", "numcpus": 2}), 12).await.expect("attach");
    let listed = store.get_worker(w).await.expect("get").expect("worker");
    assert_eq!(listed.connected_to.len(), 1);
    assert_eq!(listed.workerinfo["basedir"], "/w");

    let retried = store.recover_master(master, 50).await.expect("recover");
    assert_eq!(retried, vec![build.build_id]);
    assert_eq!(store.get_build(build.build_id).await.expect("get").expect("b").results, Some(5));
    assert_eq!(store.list_steps(build.build_id).await.expect("steps")[0].results, Some(5));
    assert_eq!(store.list_steps(build.build_id).await.expect("steps")[0].stepid, step);
    assert!(store.get_worker(w).await.expect("get").expect("worker").connected_to.is_empty());
    assert_eq!(store.pending_builder_ids().await.expect("pending"), vec![builders["Fedora 3.x"]]);
    // Both are told: the build ended as RETRY, the worker's connection is gone.
    let events: Vec<cascade_model::Event> =
        store.events_after(0, 100).await.expect("events").events.into_iter().map(|e| e.event).collect();
    assert!(events.contains(&cascade_model::Event::BuildFinished {
        build_id: build.build_id,
        builder_id: builders["Fedora 3.x"],
        number: build.number,
        results: cascade_model::Results::Retry,
    }));
    assert!(events.contains(&cascade_model::Event::WorkerLost {
        worker_id: w,
        worker: "w1".into(),
        master_id: master
    }));
});

test_both!(api_tokens_are_found_by_hash_and_revocable, |db| {
    let store = db.store().await;
    let id = store.create_api_token("ann", "laptop", "hash-1", 10).await.expect("create");
    assert_eq!(store.api_token_user("hash-1").await.expect("find"), Some("ann".to_string()));
    assert_eq!(store.api_token_user("hash-2").await.expect("find"), None);
    assert!(store.revoke_api_token(id, 11).await.expect("revoke"));
    assert!(!store.revoke_api_token(id, 12).await.expect("again"), "revoking twice changes nothing");
    assert_eq!(store.api_token_user("hash-1").await.expect("find"), None, "a revoked token opens nothing");
    let listed = store.list_api_tokens().await.expect("list");
    assert_eq!((listed[0].user.as_str(), listed[0].label.as_str(), listed[0].revoked), ("ann", "laptop", true));
});

test_both!(sessions_expire_and_end_on_logout, |db| {
    let store = db.store().await;
    let roles = vec!["core-dev".to_string()];
    let s = cascade_store::NewSession {
        token_hash: "h1",
        user: "ann",
        roles: &roles,
        source: "password",
        csrf_token: "c1",
        expires_at: 100,
    };
    store.create_session(&s, 10).await.expect("create");
    let found = store.session("h1", 50).await.expect("find").expect("live");
    assert_eq!((found.user.as_str(), found.roles.clone(), found.csrf_token.as_str()), ("ann", roles.clone(), "c1"));
    assert_eq!(store.session("h2", 50).await.expect("find"), None);
    assert_eq!(store.session("h1", 100).await.expect("find"), None, "expired at its expiry");
    assert_eq!(store.prune_sessions(100).await.expect("prune"), 1);
    store.create_session(&cascade_store::NewSession { token_hash: "h3", ..s }, 10).await.expect("create");
    assert!(store.delete_session("h3").await.expect("logout"));
    assert_eq!(store.session("h3", 50).await.expect("find"), None);
});

test_both!(a_pending_request_can_be_cancelled_and_a_claimed_one_cannot, |db| {
    let store = db.store().await;
    let (builders, master) = setup(&store).await;
    let requests = buildset_for(&store, &[], "abc", &[builders["Fedora 3.x"], builders["Windows 3.x"]], 1000).await;
    assert_eq!(store.cancel_buildrequest(requests[0], 1001).await.expect("cancel"), cascade_store::Cancelled::Done);
    let r = store.get_buildrequest(requests[0]).await.expect("get").expect("exists");
    assert!(r.complete && r.results == 6, "CANCELLED: {r:?}");
    assert_eq!(
        store.cancel_buildrequest(requests[0], 1002).await.expect("again"),
        cascade_store::Cancelled::AlreadyComplete
    );
    assert_eq!(store.cancel_buildrequest(99_999, 1002).await.expect("none"), cascade_store::Cancelled::NotFound);
    let bs = store.list_buildsets(&ListQuery::default()).await.expect("buildsets").items;
    assert!(!bs[0].complete, "the other request still waits");
    let claimed = store.claim_build(builders["Windows 3.x"], master, None, 1003).await.expect("claim").expect("one");
    assert_eq!(claimed.build_request_id, requests[1]);
    assert_eq!(store.cancel_buildrequest(requests[1], 1004).await.expect("claimed"), cascade_store::Cancelled::Claimed);
});

test_both!(worker_pause_and_graceful_flags_and_build_owner, |db| {
    let store = db.store().await;
    let (builders, master) = setup(&store).await;
    let w = store.list_workers(&ListQuery::default()).await.expect("workers").items[0].workerid;
    assert!(store.set_worker_paused(w, true, Some("disk full")).await.expect("pause"));
    let rec = store.get_worker(w).await.expect("get").expect("exists");
    assert!(rec.paused && rec.pause_reason.as_deref() == Some("disk full"));
    assert!(store.set_worker_paused(w, false, Some("ignored")).await.expect("unpause"));
    let rec = store.get_worker(w).await.expect("get").expect("exists");
    assert!(!rec.paused && rec.pause_reason.is_none());
    assert!(store.set_worker_graceful(w, true).await.expect("graceful"));
    assert!(store.get_worker(w).await.expect("get").expect("exists").graceful);

    let bs = NewBuildset {
        reason: "forced".into(),
        sourcestamp: NewSourceStamp { repository: REPO.into(), branch: Some("main".into()), ..Default::default() },
        properties: BTreeMap::from([("owner".to_string(), (serde_json::json!("ann"), "Force Build Form".to_string()))]),
        builder_ids: vec![builders["Fedora 3.x"]],
        ..Default::default()
    };
    store.create_buildset(&bs, 10).await.expect("buildset");
    let claimed = store.claim_build(builders["Fedora 3.x"], master, Some(w), 11).await.expect("claim").expect("one");
    assert_eq!(store.build_owner(claimed.build_id).await.expect("owner"), Some("ann".to_string()));
    store
        .set_build_properties(claimed.build_id, &[("got_revision".into(), serde_json::json!("abc"), "Git".into())])
        .await
        .expect("props");
    let many = store.build_properties_many(&[claimed.build_id, 12_345]).await.expect("many");
    assert_eq!(many.len(), 1);
    assert_eq!(many[&claimed.build_id][0].0, "got_revision");
});

test_both!(page_reads_find_latest_recent_and_breaking_builds, |db| {
    let store = db.store().await;
    let (builders, master) = setup(&store).await;
    let fedora = builders["Fedora 3.x"];
    // Six builds: pass, pass, fail, pass, fail, fail: the streak began at #5.
    let outcomes = [0, 0, 2, 0, 2, 2];
    for (i, results) in outcomes.iter().enumerate() {
        let change = ingest(&store, vec![change("main", &format!("r{i}"), &["a.py"])]).await;
        buildset_for(&store, &change, &format!("r{i}"), &[fedora], 100 + i as i64).await;
        let c = store.claim_build(fedora, master, None, 200 + i as i64).await.expect("claim").expect("build");
        let r = cascade_model::Results::from_code(*results).expect("code");
        store.finish_build(c.build_id, r, "done", 300 + i as i64).await.expect("finish");
    }
    // A seventh, still running.
    let change = ingest(&store, vec![change("main", "r6", &["a.py"])]).await;
    buildset_for(&store, &change, "r6", &[fedora], 106).await;
    store.claim_build(fedora, master, None, 206).await.expect("claim").expect("build");

    let newest = store.latest_builds(&[fedora, builders["Windows 3.x"]], false).await.expect("latest");
    assert_eq!(newest.iter().map(|b| (b.number, b.complete)).collect::<Vec<_>>(), vec![(7, false)]);
    let finished = store.latest_builds(&[fedora], true).await.expect("latest finished");
    assert_eq!(finished[0].number, 6);
    let recent = store.recent_builds_of(&[fedora], 3).await.expect("recent");
    assert_eq!(recent.iter().map(|b| b.number).collect::<Vec<_>>(), vec![7, 6, 5]);
    let breaking = store.breaking_builds(&[fedora, builders["Windows 3.x"]]).await.expect("breaking");
    assert_eq!(breaking.iter().map(|b| b.number).collect::<Vec<_>>(), vec![5]);
    let pairs = store.blamelist_pairs(&[breaking[0].buildid]).await.expect("blamelist");
    assert_eq!(pairs.len(), 1);
    let page = store.builder_builds_page(fedora, Some(5), 2).await.expect("page");
    assert_eq!(page.iter().map(|b| b.number).collect::<Vec<_>>(), vec![4, 3]);
    let cells = store.console_cells(&[pairs[0].1]).await.expect("cells");
    assert_eq!(cells.len(), 1);
    assert_eq!((cells[0].number, cells[0].build_results, cells[0].build_complete), (Some(5), Some(2), true));
    assert_eq!(store.running_builds().await.expect("running").len(), 1);
    let steps = store.steps_of(&[breaking[0].buildid]).await.expect("steps");
    assert!(steps.is_empty());
});

// The waterfall's steps come packed by build (one row per build); they
// are the very steps each build's own list reads, in build and step order.
test_both!(steps_of_several_builds_are_each_builds_own_steps_in_order, |db| {
    let store = db.store().await;
    let (builders, master) = setup(&store).await;
    let ids = ingest(&store, vec![change("main", "a", &[])]).await;
    buildset_for(&store, &ids, "a", &[builders["Fedora 3.x"], builders["Windows 3.x"]], 10).await;
    let first = store.claim_build(builders["Fedora 3.x"], master, None, 11).await.expect("claim").expect("build");
    let second = store.claim_build(builders["Windows 3.x"], master, None, 11).await.expect("claim").expect("build");
    for (build, number, name) in
        [(second.build_id, 1, "test \"quoted\" ✘ \\ <b>"), (first.build_id, 0, "compile"), (second.build_id, 0, "git")]
    {
        let step = store.add_step(build, number, name, 12).await.expect("step");
        if number == 0 {
            store.finish_step(step, cascade_model::Results::Warnings, "warnings: 3", 13).await.expect("finish");
        }
    }
    let packed = store.steps_of(&[second.build_id, first.build_id, 999_999]).await.expect("steps");
    let mut each = store.list_steps(first.build_id).await.expect("steps");
    each.extend(store.list_steps(second.build_id).await.expect("steps"));
    assert_eq!(packed, each);
    assert_eq!(packed.len(), 3);
    assert_eq!(
        (packed[2].name.as_str(), packed[2].results, packed[2].complete),
        ("test \"quoted\" ✘ \\ <b>", None, false)
    );
    assert_eq!((packed[1].results, packed[1].complete_at), (Some(1), Some(13)));
});

test_both!(state_changes_are_recorded_as_events_with_them, |db| {
    use cascade_model::{Event, EventKind, Results};
    let store = db.store().await;
    let mut signal = store.event_signal();
    let (builders, master) = setup(&store).await;
    assert!(signal.has_changed().expect("signal"), "committing an event bumps the signal");
    signal.borrow_and_update();
    let fedora = builders["Fedora 3.x"];
    let ids = ingest(&store, vec![change("main", "a", &[])]).await;
    let requests = buildset_for(&store, &ids, "a", &[fedora], 10).await;
    let build = store.claim_build(fedora, master, None, 11).await.expect("claim").expect("build");
    let step = store.add_step(build.build_id, 0, "compile", 12).await.expect("step");
    store.finish_step(step, Results::Success, "compile", 13).await.expect("finish step");
    let w = store.list_workers(&ListQuery::default()).await.expect("workers").items[0].workerid;
    store.worker_attached(w, master, &serde_json::json!({}), 14).await.expect("attach");
    store.worker_detached(w, master, 15).await.expect("detach");
    store.worker_detached(w, master, 15).await.expect("a second detach says nothing");
    store.finish_build(build.build_id, Results::Failure, "failed", 16).await.expect("finish");
    store.deactivate_master(master, 17).await.expect("deactivate");
    assert!(signal.has_changed().expect("signal"));

    let rows = store.events_after(0, 100).await.expect("events");
    let kinds: Vec<EventKind> = rows.events.iter().map(|e| e.event.kind()).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::MasterStarted,
            EventKind::BuildRequested,
            EventKind::BuildStarted,
            EventKind::StepStarted,
            EventKind::StepFinished,
            EventKind::WorkerConnected,
            EventKind::WorkerLost,
            EventKind::BuildFinished,
            EventKind::MasterStopped,
        ]
    );
    assert_eq!(rows.ids.len(), rows.events.len());
    assert!(rows.ids.windows(2).all(|w| w[0] < w[1]), "ascending ids: {:?}", rows.ids);
    let by_kind = |k: EventKind| rows.events.iter().find(|e| e.event.kind() == k).expect("event").clone();
    assert_eq!(
        by_kind(EventKind::BuildRequested).event,
        Event::BuildRequested { buildset_id: 1, builder_ids: vec![fedora], request_ids: requests.clone() }
    );
    assert_eq!(
        by_kind(EventKind::StepFinished).event,
        Event::StepFinished {
            build_id: build.build_id,
            builder_id: fedora,
            number: build.number,
            step_id: step,
            step_number: 0,
            step: "compile".into(),
            results: Results::Success,
        }
    );
    assert_eq!(by_kind(EventKind::BuildFinished).at, 16);
    assert_eq!(
        by_kind(EventKind::WorkerLost).event,
        Event::WorkerLost { worker_id: w, worker: "w1".into(), master_id: master }
    );

    // Holes are asked for by id; paging goes on from an id.
    let some = store.events_with_ids(&[rows.ids[2], rows.ids[4], 999_999]).await.expect("by id");
    assert_eq!(some.ids, vec![rows.ids[2], rows.ids[4]]);
    let later = store.events_after(rows.ids[6], 100).await.expect("after");
    assert_eq!(later.ids, rows.ids[7..].to_vec());
    assert_eq!(store.last_event_id().await.expect("last"), *rows.ids.last().expect("some"));

    // Pruning keeps the newest event, so ids never start over.
    let last = store.last_event_id().await.expect("last");
    assert_eq!(store.prune_events(1_000_000).await.expect("prune"), rows.ids.len() as u64 - 1);
    assert_eq!(store.events_after(0, 100).await.expect("events").ids, vec![last]);
    store.register_master("m2", 20).await.expect("another master");
    assert!(store.last_event_id().await.expect("last") > last);

    // A durable consumer's place is kept.
    assert_eq!(store.event_cursor("irc").await.expect("cursor"), None);
    store.save_event_cursor("irc", 5, 21).await.expect("save");
    store.save_event_cursor("irc", 9, 22).await.expect("save again");
    assert_eq!(store.event_cursor("irc").await.expect("cursor"), Some(9));
});

test_both!(an_ended_build_keeps_its_end_and_cancellations_are_events, |db| {
    use cascade_model::{Event, Results};
    let store = db.store().await;
    let (builders, master) = setup(&store).await;
    let (fedora, windows) = (builders["Fedora 3.x"], builders["Windows 3.x"]);
    let ids = ingest(&store, vec![change("main", "a", &[])]).await;
    buildset_for(&store, &ids, "a", &[fedora], 10).await;
    let build = store.claim_build(fedora, master, None, 11).await.expect("claim").expect("build");
    store.finish_build(build.build_id, Results::Failure, "failed", 12).await.expect("finish");
    // A late retry (a lost worker noticed after the end) changes nothing.
    store.retry_build(build.build_id, "late", 13).await.expect("retry");
    store.finish_build(build.build_id, Results::Success, "again", 14).await.expect("finish again");
    store.finish_step(999_999, Results::Success, "no such step", 14).await.expect("an unknown step is left alone");
    let b = store.get_build(build.build_id).await.expect("get").expect("build");
    assert_eq!((b.results, b.state_string.as_str(), b.complete_at), (Some(2), "failed", Some(12)));
    let finished = |events: &[cascade_model::Envelope]| {
        events.iter().filter(|e| matches!(e.event, Event::BuildFinished { .. })).count()
    };
    assert_eq!(finished(&store.events_after(0, 100).await.expect("events").events), 1, "one end, one event");

    // Cancelling a request, and deleting a branch, say which requests went.
    let one = buildset_for(&store, &ids, "a", &[windows], 20).await;
    assert_eq!(store.cancel_buildrequest(one[0], 21).await.expect("cancel"), cascade_store::Cancelled::Done);
    let two = buildset_for(&store, &ids, "a", &[fedora, windows], 22).await;
    store.delete_branch(None, REPO, "main", 23).await.expect("delete").expect("done");
    let cancelled: Vec<Event> = store
        .events_after(0, 100)
        .await
        .expect("events")
        .events
        .into_iter()
        .map(|e| e.event)
        .filter(|e| matches!(e, Event::BuildRequestsCancelled { .. }))
        .collect();
    assert_eq!(
        cancelled,
        vec![
            Event::BuildRequestsCancelled { request_ids: one.clone(), builder_ids: vec![windows] },
            Event::BuildRequestsCancelled { request_ids: two.clone(), builder_ids: vec![fedora, windows] },
        ]
    );
});

test_both!(pruning_keeps_what_a_live_consumer_has_not_read, |db| {
    let store = db.store().await;
    let (builders, _) = setup(&store).await;
    let ids = ingest(&store, vec![change("main", "a", &[])]).await;
    for t in 0..5 {
        buildset_for(&store, &ids, "a", &[builders["Fedora 3.x"]], 100 + t).await;
    }
    let all = store.events_after(0, 100).await.expect("events").ids;
    // A consumer seen at 1000 has read up to the third event; one not seen since 50 is stale.
    store.save_event_cursor("irc", all[2], 1000).await.expect("save");
    store.save_event_cursor("gone", all[0], 50).await.expect("save");
    store.prune_events(500).await.expect("prune");
    assert_eq!(store.events_after(0, 100).await.expect("events").ids, all[2..].to_vec());
});

test_both!(test_result_sets_round_trip_with_buildbots_fields_and_cascades, |db| {
    use cascade_store::{NewTestResult, NewTestSet, TestProblemRecord, TestRunRecord};
    let store = db.store().await;
    let (builders, master) = setup(&store).await;
    let fedora = builders["Fedora 3.x"];
    let ids = ingest(&store, vec![change("main", "a", &[])]).await;
    buildset_for(&store, &ids, "a", &[fedora], 10).await;
    let build = store.claim_build(fedora, master, None, 11).await.expect("claim").expect("build");
    let step = store.add_step(build.build_id, 0, "test", 12).await.expect("step");
    let result =
        |name: &str, passed: bool| NewTestResult { name: name.into(), passed, duration_ns: Some(5_000_000_000) };
    let set = NewTestSet {
        builder_id: fedora,
        build_id: build.build_id,
        step_id: step,
        description: "regrtest: test".into(),
        // 600 names: more than one statement's worth of name lookups.
        results: (0..600).map(|i| result(&format!("test_{i}"), i != 7)).collect(),
        run: TestRunRecord {
            runner: "regrtest".into(),
            seed: Some("1234".into()),
            command: Some("python -m test -j2".into()),
            parallel: true,
            order: vec!["test_0".into(), "test_7".into()],
            summary: Some("FAILURE".into()),
            ..TestRunRecord::default()
        },
        problems: vec![TestProblemRecord {
            file: "test_7".into(),
            method: Some("test_7.T.test_x".into()),
            outcome: "failed".into(),
            // Test output can hold anything, NUL included (PostgreSQL refuses NUL in text).
            detail: "Traceback\0 <script>".into(),
            ..TestProblemRecord::default()
        }],
    };
    let id = store.add_test_set(&set).await.expect("stored");
    // The same names again: a second set reuses the builder's test names.
    let again = store.add_test_set(&set).await.expect("stored again");
    assert_ne!(id, again);
    let sets = store.list_test_sets(&ListQuery::default().eq("buildid", build.build_id)).await.expect("sets");
    assert_eq!(sets.total, 2);
    let s = &sets.items[0];
    assert_eq!((s.category.as_str(), s.value_unit.as_str(), s.complete), ("pass_fail", "boolean", true));
    assert_eq!((s.tests_passed, s.tests_failed, s.stepid), (Some(599), Some(1), step));
    let failed = store
        .list_test_results(&ListQuery::default().eq("test_result_setid", id).eq("value", "0"))
        .await
        .expect("results");
    assert_eq!(failed.total, 1);
    assert_eq!(failed.items[0].test_name.as_deref(), Some("test_7"));
    assert_eq!(failed.items[0].duration_ns, Some(5_000_000_000), "durations past 32 bits survive");
    let by_name =
        store.list_test_results(&ListQuery::default().eq("test_name", "test_42").limit(10)).await.expect("by name");
    assert_eq!(by_name.total, 2, "one per set");
    let runs = store.test_runs_of(&[build.build_id]).await.expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[0].seed.as_deref(), runs[0].parallel), (Some("1234"), true));
    assert_eq!(runs[0].order, ["test_0", "test_7"]);
    let problems = store.test_problems_of(&[build.build_id]).await.expect("problems");
    assert_eq!(problems.len(), 2);
    assert_eq!(problems[0].detail, "Traceback\u{FFFD} <script>");
    assert_eq!(store.builds_with_tests(&[build.build_id, 999]).await.expect("with tests"), [build.build_id]);
    let bad = store.list_test_sets(&ListQuery::default().eq("nonsense", 1)).await;
    assert!(bad.is_err(), "unknown fields are refused");
});

test_both!(two_masters_never_claim_the_same_notification, |db| {
    use cascade_store::NewNotification;
    let store = db.store().await;
    let (a, b) = (store.register_master("a", 1).await.expect("a"), store.register_master("b", 1).await.expect("b"));
    let items: Vec<NewNotification> = (0..40)
        .map(|i| NewNotification {
            reporter: "chat".into(),
            dedupe: format!("event:{i}"),
            event_id: i,
            build_id: None,
            body: "{}".into(),
            give_up_at: 1_000,
            due_at: 10,
        })
        .collect();
    assert_eq!(store.add_notifications(&items, 10).await.expect("add"), 40);
    assert_eq!(store.add_notifications(&items, 10).await.expect("again"), 0, "written once per reporter and key");
    assert!(store.claim_notifications(a, 9, 100, 50).await.expect("early").is_empty(), "not due yet");
    let (x, y) = tokio::join!(store.claim_notifications(a, 10, 100, 25), store.claim_notifications(b, 10, 100, 25));
    let (x, y) = (x.expect("a claims"), y.expect("b claims"));
    let ids = |v: &[cascade_store::NotificationRecord]| v.iter().map(|n| n.id).collect::<BTreeSet<i64>>();
    assert!(ids(&x).is_disjoint(&ids(&y)), "a notification is held by one master");
    assert_eq!(x.len() + y.len(), 40);
    // Held until the lease ends; then another master may take what was not done.
    assert!(store.claim_notifications(b, 50, 200, 50).await.expect("held").is_empty());
    store.notification_sent(x[0].id, 60).await.expect("sent");
    store.notification_failed(x[1].id, "502", 2_000, true).await.expect("given up");
    let later = store.claim_notifications(b, 101, 300, 50).await.expect("after the lease");
    assert_eq!(later.len(), 38, "all but the sent and the given-up one");
    let recent = store.recent_notifications(100).await.expect("recent");
    let states: BTreeMap<i64, &str> = recent.iter().map(|n| (n.id, n.state.name())).collect();
    assert_eq!(states[&x[0].id], "sent");
    assert_eq!(states[&x[1].id], "failed", "retrying past give_up_at gives up");
    // Done ones are pruned past the horizon; pending ones stay.
    assert_eq!(store.prune_notifications(11).await.expect("prune"), 2);
    assert_eq!(store.recent_notifications(100).await.expect("left").len(), 38);
});

test_both!(a_pull_requests_change_and_buildset_are_one_write_and_its_builds_are_found, |db| {
    let store = db.store().await;
    let (builders, master) = setup(&store).await;
    let fedora = builders["Fedora 3.x"];
    let windows = builders["Windows 3.x"];
    let branch = "refs/pull/7/merge";
    let mut pr = change(branch, "abc7", &["Lib/x.py"]);
    pr.category = Some("pull".into());
    pr.comments = "GitHub Pull Request #7: Fix it\n\nbody".into();
    let bs = NewBuildset {
        reason: "labelled".into(),
        sourcestamp: NewSourceStamp { repository: REPO.into(), branch: Some(branch.into()), ..Default::default() },
        builder_ids: vec![fedora, windows],
        ..Default::default()
    };
    let delivery = Delivery { hook_id: "1".into(), delivery_id: "pr-7".into(), event: "pull_request".into() };
    let built = store.ingest_pull_request(Some(&delivery), &pr, &bs, 10).await.expect("ingest").expect("first");
    assert_eq!(built.request_ids.len(), 2);
    assert_eq!(store.buildset_changes(built.buildset_id).await.expect("blamelist")[0].changeid, built.change_id);
    assert!(store.ingest_pull_request(Some(&delivery), &pr, &bs, 11).await.expect("again").is_none(), "redelivery");
    assert!(store.has_changes_on(REPO, branch).await.expect("has"));
    assert!(!store.has_changes_on(REPO, "refs/pull/8/merge").await.expect("has"), "PR 8 was never built");
    assert_eq!(store.recent_pull_requests(10).await.expect("recent"), [(7, "GitHub Pull Request #7: Fix it".into())]);

    // One request runs; new commits cancel the other, and the running build is found to stop.
    let claimed = store.claim_build(fedora, master, None, 12).await.expect("claim").expect("a build");
    assert_eq!(store.running_builds_on_branch(REPO, branch).await.expect("running"), [(claimed.build_id, master)]);
    assert!(store.running_builds_on_branch(REPO, "refs/pull/8/merge").await.expect("other").is_empty());
    let sync = Delivery { delivery_id: "pr-7-sync".into(), ..delivery };
    assert_eq!(store.cancel_pending(Some(&sync), REPO, branch, 13).await.expect("cancel"), Some(1));
    assert_eq!(store.cancel_pending(Some(&sync), REPO, branch, 14).await.expect("again"), None, "redelivery");
});

test_both!(pages_see_every_worker_past_the_api_page_cap, |db| {
    let store = db.store().await;
    let workers: Vec<WorkerSpec> = (0..1005).map(|i| WorkerSpec { name: format!("w{i:04}") }).collect();
    let master = store.register_master("m1", 100).await.expect("register master");
    let (_, ids) = store.sync_configuration(master, &[], &workers).await.expect("sync");
    let last = ids["w1004"];
    store.worker_attached(last, master, &serde_json::json!({}), 101).await.expect("attach");
    assert_eq!(store.list_workers(&ListQuery::default()).await.expect("page").items.len(), 1000, "the API pages");
    let online = store.connected_worker_names().await.expect("online");
    assert_eq!(online.into_iter().collect::<Vec<_>>(), ["w1004"]);
    let names = store.worker_names().await.expect("names");
    assert_eq!((names.len(), names.get(&last).map(String::as_str)), (1005, Some("w1004")));
});

test_both!(a_master_whose_heartbeat_stopped_is_declared_dead_once_and_its_builds_run_again, |db| {
    let store = db.store().await;
    let (builders, dead) = setup(&store).await;
    let alive = store.register_master("m2", 100).await.expect("register m2");
    let fedora = builders["Fedora 3.x"];
    let ids = ingest(&store, vec![change("main", "a", &[])]).await;
    buildset_for(&store, &ids, "a", &[fedora], 100).await;
    let claimed = store.claim_build(fedora, dead, None, 101).await.expect("claim").expect("a build");
    assert!(store.master_heartbeat(dead, 110).await.expect("beat"), "alive");
    assert!(store.master_heartbeat(alive, 190).await.expect("beat"));

    // At 200, with a 60 s expiry: m1 (last seen at 110) is dead, m2 is not.
    let expired = store.expire_masters(alive, 140, 200).await.expect("expire");
    assert_eq!(expired, [(dead, "m1".to_string(), vec![claimed.build_id])]);
    let build = store.get_build(claimed.build_id).await.expect("get").expect("build");
    assert_eq!((build.complete, build.results), (true, Some(5)), "RETRY: {}", build.state_string);
    let again = store.claim_build(fedora, alive, None, 201).await.expect("claim").expect("built again");
    assert_eq!(again.covered, claimed.covered, "the same request, by the living master");
    assert!(store.expire_masters(alive, 140, 202).await.expect("again").is_empty(), "once");
    let masters = store.list_masters().await.expect("masters");
    assert_eq!(masters.iter().map(|m| (m.name.as_str(), m.active)).collect::<Vec<_>>(), [("m1", false), ("m2", true)]);
    assert!(!store.master_heartbeat(dead, 203).await.expect("late beat"), "a late beat learns it was declared dead");
});

/// A finished build on `builder` (its own request), with one step, a log of
/// `lines` lines and a test set; returns (build, step, log).
async fn finished_build(store: &Store, builder: i64, master: i64, revision: &str, at: i64) -> (i64, i64, i64) {
    use cascade_store::{NewTestResult, NewTestSet, TestRunRecord};
    buildset_for(store, &[], revision, &[builder], at).await;
    let build = store.claim_build(builder, master, None, at).await.expect("claim").expect("a build");
    let step = store.add_step(build.build_id, 0, "test", at).await.expect("step");
    let log = store.add_log(step, "stdio", "s").await.expect("log");
    let lines: Vec<String> = (0..3).map(|i| format!("oline {i}")).collect();
    store.append_log_lines(log, 0, &lines).await.expect("lines");
    let result = NewTestResult { name: "test_os".into(), passed: true, duration_ns: None };
    let set = NewTestSet {
        builder_id: builder,
        build_id: build.build_id,
        step_id: step,
        description: "regrtest".into(),
        results: vec![result],
        run: TestRunRecord { runner: "regrtest".into(), ..TestRunRecord::default() },
        problems: vec![],
    };
    store.add_test_set(&set).await.expect("test set");
    store.finish_build(build.build_id, cascade_model::Results::Success, "build successful", at).await.expect("finish");
    (build.build_id, step, log)
}

test_both!(the_janitor_removes_old_builds_logs_and_steps_in_batches_and_keeps_the_builds, |db| {
    use cascade_store::Removal;
    let store = db.store().await;
    let (builders, master) = setup(&store).await;
    let fedora = builders["Fedora 3.x"];
    let mut old = Vec::new();
    for i in 0..25 {
        old.push(finished_build(&store, fedora, master, &format!("old{i}"), 1_000 + i).await);
    }
    let recent = finished_build(&store, fedora, master, "recent", 50_000).await;

    // Logs of builds finished before 10,000: two batches of at most 20.
    let first = store.removable_builds(Removal::Logs, 10_000, 20, None).await.expect("removable");
    assert_eq!(first.len(), 20);
    assert_eq!(first[0].build_id, old[0].0, "oldest first");
    assert_eq!((first[0].builder.as_str(), first[0].number), ("Fedora 3.x", 1));
    let ids: Vec<i64> = first.iter().map(|b| b.build_id).collect();
    assert_eq!(store.remove_from_builds(Removal::Logs, &ids, 60_000).await.expect("removed"), 20, "one chunk each");
    let rest = store.removable_builds(Removal::Logs, 10_000, 20, None).await.expect("removable");
    assert_eq!(rest.len(), 5, "the batch removed is not found again");
    assert!(store.log_lines(old[0].2, 0, 2).await.expect("lines").is_empty(), "the contents went");
    assert_eq!(store.list_logs(old[0].1).await.expect("logs").len(), 1, "the log row stays");
    assert_eq!(store.logs_removed_at(old[0].0).await.expect("when"), Some(60_000));
    assert_eq!(store.log_lines(recent.2, 0, 2).await.expect("lines").len(), 3, "a recent log stays");
    assert_eq!(store.logs_removed_at(recent.0).await.expect("when"), None);

    // Steps (with logs and test results) of the oldest: the build rows stay.
    let ids: Vec<i64> = old.iter().take(3).map(|b| b.0).collect();
    let removed = store.remove_from_builds(Removal::Steps, &ids, 61_000).await.expect("removed");
    assert!(removed >= 3 * 4, "chunks, logs, test results, runs, sets and steps: {removed}");
    for (build, _, _) in old.iter().take(3) {
        assert!(store.list_steps(*build).await.expect("steps").is_empty());
        let kept = store.get_build(*build).await.expect("get").expect("the build stays");
        assert_eq!(kept.results, Some(0));
        let sets = store.list_test_sets(&ListQuery::default().eq("buildid", *build)).await.expect("sets");
        assert_eq!(sets.total, 0);
    }
    assert_eq!(store.list_steps(old[3].0).await.expect("steps").len(), 1, "the rest keep their steps");
    let left = store.removable_builds(Removal::Steps, 10_000, 100, None).await.expect("removable");
    assert_eq!(left.len(), 22);
    // A running build is never removable.
    buildset_for(&store, &[], "running", &[fedora], 1).await;
    store.claim_build(fedora, master, None, 1).await.expect("claim").expect("running");
    let all = store.removable_builds(Removal::Artifacts, i64::MAX, 100, None).await.expect("removable");
    assert_eq!(all.len(), 26, "the finished builds only");
    let other = store.register_master("m2", 1).await.expect("another master");
    let theirs = store.removable_builds(Removal::Artifacts, i64::MAX, 100, Some(other)).await.expect("removable");
    assert!(theirs.is_empty(), "artifacts are on the disk of the master that ran the build");
    let ours = store.removable_builds(Removal::Artifacts, i64::MAX, 100, Some(master)).await.expect("removable");
    assert_eq!(ours.len(), 26);
    store.close().await;
});

test_both!(masters_with_different_configurations_each_keep_their_own, |db| {
    let store = db.store().await;
    let spec = |name: &str, worker: &str| BuilderSpec {
        name: name.into(),
        definition: name.into(),
        branch: None,
        description: None,
        tags: vec![],
        workers: vec![worker.into()],
    };
    let worker = |name: &str| WorkerSpec { name: name.into() };
    let a = store.register_master("a", 100).await.expect("a");
    let b = store.register_master("b", 100).await.expect("b");
    let (a_ids, _) = store.sync_configuration(a, &[spec("linux", "w1")], &[worker("w1")]).await.expect("a");
    let (b_ids, _) = store.sync_configuration(b, &[spec("windows", "w2")], &[worker("w2")]).await.expect("b");
    // Master a restarts (or reloads): b's builders and workers stay b's.
    store.sync_configuration(a, &[spec("linux", "w1")], &[worker("w1")]).await.expect("a again");
    let masters_of = |id: i64| {
        let store = store.clone();
        async move { store.get_builder(id).await.expect("get").expect("builder").masterids }
    };
    assert_eq!(masters_of(a_ids["linux"]).await, vec![a]);
    assert_eq!(masters_of(b_ids["windows"]).await, vec![b]);
    let workers = store.list_workers(&ListQuery::default()).await.expect("workers").items;
    let on: Vec<(String, Vec<(i64, i64)>)> = workers
        .iter()
        .map(|w| (w.name.clone(), w.configured_on.iter().map(|c| (c.builderid, c.masterid)).collect()))
        .collect();
    assert_eq!(on, vec![("w1".into(), vec![(a_ids["linux"], a)]), ("w2".into(), vec![(b_ids["windows"], b)])]);
    // A stopped master serves nothing; its configuration comes back with it.
    store.deactivate_master(b, 200).await.expect("stop b");
    assert!(masters_of(b_ids["windows"]).await.is_empty());
    assert_eq!(store.register_master("b", 300).await.expect("b again"), b);
    assert_eq!(masters_of(b_ids["windows"]).await, vec![b]);
    // Dropped from a's configuration, linux is served by no one.
    store.sync_configuration(a, &[], &[worker("w1")]).await.expect("a without linux");
    assert!(masters_of(a_ids["linux"]).await.is_empty());
});

// The orders and filters the pages, `cascade status` and Buildbot's own UI
// and tools use answer from an index on a filled store, on both backends:
// no listed query reads a whole growing table or sorts it. A new query, or
// a change of one, that loses its index fails here.
test_both!(every_listed_query_answers_from_an_index, |db| {
    use cascade_store::{Listed, Viewed, full_scans, full_work};
    let store = db.store().await;
    let (ids, master) = setup(&store).await;
    let fedora = ids["Fedora 3.x"];
    for i in 0..60 {
        let change = ingest(&store, vec![change("main", &format!("{i:040x}"), &["Lib/os.py"])]).await;
        buildset_for(&store, &change, &format!("{i:040x}"), &[fedora], 1000 + i).await;
        if i % 2 == 0 {
            let build = store.claim_build(fedora, master, None, 1000 + i).await.expect("claim").expect("a build");
            store.finish_build(build.build_id, cascade_model::Results::Success, "ok", 1001 + i).await.expect("finish");
        }
    }
    let q = || ListQuery::default().limit(200);
    let order = |field: &str| q().order_by(field, true);
    let listed: Vec<(&str, Listed, ListQuery)> = vec![
        ("builds?order=-buildid", Listed::Builds, order("buildid")),
        ("builds?order=-started_at", Listed::Builds, order("started_at")),
        ("builds?order=-complete_at", Listed::Builds, order("complete_at")),
        ("builds?builderid=&order=-number", Listed::Builds, order("number").eq("builderid", fedora)),
        ("builds?builderid=&order=-complete_at", Listed::Builds, order("complete_at").eq("builderid", fedora)),
        ("builds?builderid=&number=", Listed::Builds, q().eq("builderid", fedora).eq("number", 3)),
        ("builds?builderid=&order=-buildid", Listed::Builds, order("buildid").eq("builderid", fedora)),
        ("builds?workerid=&order=-buildid", Listed::Builds, order("buildid").eq("workerid", 1)),
        ("buildrequests?order=-buildrequestid", Listed::BuildRequests, order("buildrequestid")),
        ("buildrequests?order=-submitted_at", Listed::BuildRequests, order("submitted_at")),
        ("buildrequests?buildsetid=", Listed::BuildRequests, q().eq("buildsetid", 5)),
        (
            "buildrequests?builderid=&order=-buildrequestid",
            Listed::BuildRequests,
            order("buildrequestid").eq("builderid", fedora),
        ),
        ("buildsets?order=-bsid", Listed::Buildsets, order("bsid")),
        ("buildsets?order=-submitted_at", Listed::Buildsets, order("submitted_at")),
        ("changes?order=-changeid", Listed::Changes, order("changeid")),
        ("changes?branch=&order=-changeid (console)", Listed::Changes, order("changeid").eq("branch", "main")),
        (
            "changes?branch=&order=-changeid, older (console)",
            Listed::Changes,
            ListQuery { after_id: Some(30), ..order("changeid").eq("branch", "main") },
        ),
        ("changes?author=&order=-changeid", Listed::Changes, order("changeid").eq("author", "Guido")),
    ];
    let mut problems = Vec::new();
    for (name, what, query) in &listed {
        let plan = store.explain_list(*what, query).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!plan.is_empty(), "{name}: no plan");
        let bad = full_work(&plan, !query.filters.is_empty());
        if !bad.is_empty() {
            problems.push(format!("{name}: {bad:?}\n  plan: {plan:?}"));
        }
    }
    for finished in [false, true] {
        let plan = store.explain_latest_builds(&[fedora, ids["Windows 3.x"]], finished).await.expect("plan");
        if !full_work(&plan, true).is_empty() {
            problems.push(format!("latest_builds(finished {finished}): {plan:?}"));
        }
    }
    let builds: Vec<i64> = (1..=5).collect();
    let viewed: Vec<(Viewed, Vec<i64>)> = vec![
        (Viewed::ConsoleCells, vec![1, 2, 3]),
        (Viewed::PendingCounts, vec![fedora, ids["Windows 3.x"]]),
        (Viewed::BuiltRevisions, builds.clone()),
        (Viewed::BlamelistPairs, builds.clone()),
        (Viewed::BuildsBetween, vec![fedora, ids["Windows 3.x"]]),
        (Viewed::StepsOf, builds.clone()),
        (Viewed::RunningBuilds, vec![]),
    ];
    for (what, ids) in &viewed {
        let plan = store.explain_view(*what, ids).await.unwrap_or_else(|e| panic!("{what:?}: {e}"));
        // Bounded by the ids or the window given: sorting what they find is fine.
        if !full_scans(&plan).is_empty() {
            problems.push(format!("{what:?}: {plan:?}"));
        }
    }
    let running = store.explain_view(Viewed::RunningBuilds, &[]).await.expect("plan").join("\n");
    let searched = running.contains("builds_running") || running.contains("(complete_at=?)");
    assert!(searched, "running builds from an index on what is running, not a walk of every build: {running}");
    assert!(problems.is_empty(), "full scans or sorts:\n{}", problems.join("\n"));
    // The check sees a query that has no index to answer from.
    let unindexed = store.explain_list(Listed::Builds, &order("state_string")).await.expect("plan");
    assert!(!full_work(&unindexed, false).is_empty(), "ordering by an unindexed column is caught: {unindexed:?}");
});

// Each builder's newest build and newest finished build are kept as data
// when builds start and end, also when they end out of order, and a
// refresh from the builds themselves (after a wholesale import) agrees.
test_both!(the_latest_build_of_each_builder_is_kept_as_builds_start_and_end, |db| {
    use cascade_model::Results;
    let store = db.store().await;
    let (ids, master) = setup(&store).await;
    let (fedora, windows) = (ids["Fedora 3.x"], ids["Windows 3.x"]);
    let newest = |finished: bool| {
        let store = store.clone();
        async move {
            let mut got: Vec<(i64, i64)> = store
                .latest_builds(&[fedora, windows], finished)
                .await
                .expect("latest")
                .iter()
                .map(|b| (b.builderid, b.number))
                .collect();
            got.sort_unstable();
            got
        }
    };
    assert!(newest(false).await.is_empty(), "no build yet");
    let mut claimed = Vec::new();
    for i in 0..2 {
        buildset_for(&store, &[], &format!("{i:040x}"), &[fedora], 100 + i).await;
        claimed.push(store.claim_build(fedora, master, None, 100 + i).await.expect("claim").expect("a build"));
    }
    assert_eq!(newest(false).await, [(fedora, 2)]);
    assert!(newest(true).await.is_empty(), "none finished");
    // The second ends first; the first ending later does not take its place.
    store.finish_build(claimed[1].build_id, Results::Failure, "failed", 110).await.expect("finish");
    store.finish_build(claimed[0].build_id, Results::Success, "ok", 120).await.expect("finish");
    assert_eq!(newest(true).await, [(fedora, 2)]);
    buildset_for(&store, &[], &format!("{:040x}", 9), &[fedora, windows], 130).await;
    store.claim_build(fedora, master, None, 130).await.expect("claim").expect("a build");
    let w = store.claim_build(windows, master, None, 130).await.expect("claim").expect("a build");
    store.finish_build(w.build_id, Results::Success, "ok", 140).await.expect("finish");
    assert_eq!(newest(false).await, [(fedora, 3), (windows, 1)]);
    assert_eq!(newest(true).await, [(fedora, 2), (windows, 1)]);
    let (kept, kept_finished) = (newest(false).await, newest(true).await);
    store.refresh_builder_latest().await.expect("refresh");
    assert_eq!((newest(false).await, newest(true).await), (kept, kept_finished), "the builds say the same");
});

/// Push `i`: its own delivery, file, property and timer.
fn delivered(i: usize, delivery: &str, revision: &str, scheduler_id: i64) -> (Delivery, NewChange, SchedulerTouch) {
    let mut c = change("main", revision, &[&format!("Lib/f{i}.py")]);
    c.properties.insert("n".into(), serde_json::json!(i));
    let d = Delivery { hook_id: "9".into(), delivery_id: delivery.into(), event: "push".into() };
    (d, c, SchedulerTouch { scheduler_id, important: i.is_multiple_of(2) })
}

test_both!(pushes_arriving_at_once_are_each_stored_as_their_own, |db| {
    let store = db.store().await;
    let sid = store.sync_schedulers(&[("3.x".into(), "branch".into())], 50).await.expect("schedulers")["3.x"].id;
    let tasks: Vec<_> = (0..48)
        .map(|i| {
            let (store, (d, c, t)) = (store.clone(), delivered(i, &format!("d{}", i % 40), &format!("r{i}"), sid));
            tokio::spawn(async move {
                let at = 1_000_000 + i as i64;
                store.ingest_changes_at(Some(&d), &[(c, vec![t])], cascade_store::Redundant::Polled, at).await
            })
        })
        .collect();
    let mut stored = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.expect("task").expect("ingest") {
            IngestOutcome::Stored { change_ids } => {
                stored += 1;
                let c = store.get_change(change_ids[0]).await.expect("get").expect("stored");
                assert_eq!(c.files, vec![format!("Lib/f{i}.py")], "push {i}'s files");
                assert_eq!(c.properties["n"].0, serde_json::json!(i));
            }
            IngestOutcome::Duplicate => assert!(i % 40 < 8, "push {i} is no redelivery"),
        }
    }
    assert_eq!(stored, 40, "each of the 40 deliveries once");
    let waiting = store.waiting_changes().await.expect("waiting");
    assert_eq!(waiting.len(), 40, "one timer per stored push");
});
