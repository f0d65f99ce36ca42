//! What Buildbot's clients take for granted: a list without `limit` is the
//! whole list (streamed), workers carry `workerinfo` in Buildbot's shape
//! and never their base folder, builders are addressed by name as well.

use std::fmt::Write as _;

use cascade_testkit::test_both;
use serde_json::{Value, json};

use crate::harness::Harness;

/// More builders than one page holds, as CPython's 1,036 are.
const BUILDERS: usize = 1_205;

fn many_builders() -> String {
    let mut text = String::from(
        "[master]\nname = \"wide\"\n[github]\ninsecure_webhook = true\n[[branch]]\nname = \"main\"\n\
         [[worker]]\nname = \"w1\"\npassword = \"pw\"\n[[factory]]\nname = \"f\"\nsteps = [{ name = \"t\", command = [\"true\"] }]\n",
    );
    for i in 0..BUILDERS {
        let tags = if i % 3 == 0 { "[\"stable\"]" } else { "[]" };
        let _ = write!(text, "[[builder]]\nname = \"b{i:04}\"\nworkers = [\"w1\"]\nfactory = \"f\"\ntags = {tags}\n");
    }
    text
}

fn names(v: &Value) -> Vec<String> {
    v["builders"]
        .as_array()
        .map(|a| a.iter().filter_map(|b| b["name"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

test_both!(a_list_without_limit_is_the_whole_list, |db| {
    let h = Harness::with_config(db, &many_builders()).await;
    // By id (keyset pages): every builder once, in order, counted.
    let (status, all) = h.get("/api/v2/builders").await;
    assert_eq!(status, 200);
    let got = names(&all);
    let want: Vec<String> = (0..BUILDERS).map(|i| format!("b{i:04}")).collect();
    assert_eq!(got, want);
    assert_eq!(all["meta"]["total"], BUILDERS);
    // By another order (offset pages): the same set, reversed.
    let (_, desc) = h.get("/api/v2/builders?order=-name&field=name").await;
    let mut reversed = want.clone();
    reversed.reverse();
    assert_eq!(names(&desc), reversed);
    assert_eq!(desc["builders"][0].as_object().map(serde_json::Map::len), Some(1), "field= still projects");
    // Descending ids, an offset, and a filter, all without a limit.
    let (_, down) = h.get("/api/v2/builders?order=-builderid&offset=5").await;
    assert_eq!(names(&down), reversed[5..].to_vec());
    let (_, stable) = h.get("/api/v2/builders?tags__contains=stable").await;
    assert_eq!(stable["meta"]["total"], BUILDERS.div_ceil(3));
    // A limit is one page (the configuration's lists count for free); nothing at all is still JSON.
    let (_, page) = h.get("/api/v2/builders?limit=10&offset=1200").await;
    assert_eq!((names(&page).len(), page["meta"]["total"].clone()), (5, json!(BUILDERS)));
    let (_, none) = h.get("/api/v2/builds").await;
    assert_eq!(none, json!({ "builds": [], "meta": { "total": 0 } }));
    // A bad query is still a 400 before anything streams.
    let (status, bad) = h.get("/api/v2/builders?colour=red").await;
    assert_eq!(status, 400, "{bad}");
});

const ONE_BUILDER: &str = r#"
[master]
name = "small"
[github]
insecure_webhook = true
[[branch]]
name = "main"
[[worker]]
name = "w1"
password = "pw"
[[worker]]
name = "w2"
password = "pw"
[[factory]]
name = "f"
steps = [{ name = "t", command = ["true"] }]
[[builder]]
name = "unix main"
workers = ["w1"]
factory = "f"
[[builder]]
name = "other"
workers = ["w2"]
factory = "f"
[[scheduler]]
name = "force"
kind = "force"
builders = ["other"]
"#;

test_both!(workers_answer_in_buildbots_shape_without_their_folder, |db| {
    let h = Harness::with_config(db, ONE_BUILDER).await;
    let w1 = h.store.list_workers(&Default::default()).await.expect("workers").items[0].workerid;
    let info = json!({ "admin": "Ann <ann@example.org>", "host": "a box", "basedir": "/home/ann/secret-place",
                       "environ": { "TOKEN": "x" }, "numcpus": 8, "system": "posix" });
    h.store.worker_attached(w1, h.master.master_id(), &info, 1).await.expect("attached");
    let (_, v) = h.get("/api/v2/workers/w1").await;
    let w = &v["workers"][0];
    assert_eq!(
        w["workerinfo"],
        json!({ "admin": "Ann <ann@example.org>", "host": "a box", "access_uri": null, "version": null })
    );
    assert_eq!(w["cascade_info"], json!({ "numcpus": 8, "system": "posix" }));
    let (_, listed) = h.get("/api/v2/workers").await;
    let text = listed.to_string();
    assert!(!text.contains("secret-place") && !text.contains("TOKEN"), "{text}");
    // A worker that never connected still has the four keys Buildbot's UI reads.
    assert_eq!(listed["workers"][1]["workerinfo"]["admin"], Value::Null);
    assert!(listed["workers"][1]["workerinfo"].as_object().is_some_and(|o| o.len() == 4));

    // Builders ↔ workers, builders by name, their force schedulers.
    let (_, ws) = h.get("/api/v2/builders/unix%20main/workers").await;
    assert_eq!(ws["workers"].as_array().map(Vec::len), Some(1));
    assert_eq!(ws["workers"][0]["name"], "w1");
    let (_, bs) = h.get(&format!("/api/v2/workers/{w1}/builders")).await;
    assert_eq!(names(&bs), ["unix main"]);
    let (_, fs) = h.get("/api/v2/builders/other/forceschedulers").await;
    assert_eq!(fs["forceschedulers"][0]["name"], "force");
    let (_, fs) = h.get("/api/v2/builders/unix%20main/forceschedulers").await;
    assert_eq!(fs["forceschedulers"], json!([]));
    let (status, _) = h.get("/api/v2/builders/nobody/builds").await;
    assert_eq!(status, 404);
    let (_, s) = h.get("/api/v2/schedulers").await;
    assert_eq!(s["schedulers"][0]["master"]["masterid"], h.master.master_id());
    let (status, p) = h.get("/api/v2/projects/1").await;
    assert_eq!((status.as_u16(), p["error"].is_string()), (404, true));
});
