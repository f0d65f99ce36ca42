//! `/metrics`, scraped over HTTP and read with a Prometheus text-format
//! parser: what a build, a delivery and a connected worker leave there,
//! and who may read it.

use std::time::Duration;

use cascade_testkit::test_both;
use prometheus_parse::{Sample, Scrape, Value};

use crate::harness::Harness;
use crate::workers::{BuildbotWorker, Kind, config, finished_build, make_repo, push, run_master, wait_for};

const LIMIT: Duration = Duration::from_secs(60);

async fn scrape(url: &str, token: Option<&str>) -> (u16, String) {
    cascade_master::outbound::install_crypto_provider();
    let mut request = reqwest::Client::new().get(format!("{url}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.expect("/metrics");
    (answer.status().as_u16(), answer.text().await.expect("body"))
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("the Prometheus text format")
}

/// The sample of `name` whose labels include `labels`.
fn sample<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

fn number(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(scrape, name, labels).map(|s| &s.value) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

test_both!(a_build_a_delivery_and_a_worker_show_in_the_metrics, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let h = Harness::with_config(db, &config(&repo, r#"{ name = "say", command = ["echo", "hello"] },"#)).await;
    let running = run_master(&h).await;
    let _worker = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), running.port, "w1", "pw-one").await;
    wait_for("the worker to attach", LIMIT, || async { h.master.workers.get("w1") }).await;
    push(&h, &sha).await;
    let build = finished_build(&h, LIMIT).await;
    assert_eq!(build.results, Some(0), "{}", build.state_string);
    // The webhook over HTTP, so the delivery is counted where it is answered.
    let delivered = reqwest::Client::new()
        .post(format!("{}/change_hook/github", h.url()))
        .header("x-github-event", "ping")
        .json(&serde_json::json!({ "zen": "Keep it logically awesome." }))
        .send()
        .await
        .expect("ping");
    assert_eq!(delivered.status(), 200);

    let (status, text) = scrape(&h.url(), None).await;
    assert_eq!(status, 200, "{text}");
    let m = parse(&text);
    wait_for("the build's end to be counted", LIMIT, || async {
        let m = parse(&scrape(&h.url(), None).await.1);
        (number(&m, "cascade_builds_finished_total", &[("result", "success")]) == 1.0).then_some(())
    })
    .await;
    assert_eq!(number(&m, "cascade_builds_started_total", &[("tag", "main")]), 1.0);
    assert_eq!(number(&m, "cascade_webhook_deliveries_total", &[("event", "ping"), ("outcome", "accepted")]), 1.0);
    assert_eq!(number(&m, "cascade_workers_connected", &[("protocol", "msgpack")]), 1.0);
    assert_eq!(number(&m, "cascade_workers_connected", &[("protocol", "pb")]), 0.0);
    assert_eq!(number(&m, "cascade_pending_requests", &[]), 0.0);
    assert!(number(&m, "cascade_log_bytes_total", &[]) >= "ohello".len() as f64, "{text}");
    assert!(number(&m, "cascade_scheduler_passes_total", &[]) >= 1.0);
    assert!(number(&m, "cascade_store_connections", &[("state", "max")]) >= 1.0);
    let delivery = sample(&m, "cascade_webhook_duration_seconds", &[("event", "ping")]).map(|s| &s.value);
    let Some(Value::Histogram(buckets)) = delivery else { panic!("a latency histogram: {delivery:?}") };
    assert_eq!(buckets.last().map(|b| b.count), Some(1.0), "one delivery in the +Inf bucket");
    for operation in ["ingest", "claim", "log_lines"] {
        let timed = sample(&m, "cascade_store_duration_seconds", &[("operation", operation)]).map(|s| &s.value);
        assert!(
            matches!(timed, Some(Value::Histogram(b)) if b.last().is_some_and(|b| b.count >= 1.0)),
            "{operation}: {timed:?}"
        );
    }
    h.stop().await;
});

test_both!(a_private_master_keeps_its_metrics_for_tokens_unless_they_are_public, |db| {
    let private = format!("{}\n[auth]\nprivate = true\nadmins = [\"root\"]\n", crate::harness::CONFIG);
    let h = Harness::with_config(db, &private).await;
    let (status, _) = scrape(&h.url(), None).await;
    assert_eq!(status, 401, "no token, no metrics");
    let (token, hash) = cascade_master::auth::new_token();
    h.store.create_api_token("root", "prometheus", &hash, 0).await.expect("token");
    let (status, text) = scrape(&h.url(), Some(&token)).await;
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE cascade_builds_started_total counter"), "{text}");
    h.stop().await;

    let public = private.replace("private = true", "private = true\nmetrics = \"public\"");
    let h = Harness::with_config(db, &public).await;
    assert_eq!(scrape(&h.url(), None).await.0, 200, "public metrics on a private master");
    h.stop().await;
});
