//! `webhook-load`: how fast a master takes signed GitHub pushes.
//!
//! It starts a master in-process on a scratch PostgreSQL (or SQLite)
//! database with a CPython-sized configuration (≈1,000 builders over 8
//! branches), then posts signed pushes over loopback HTTP from `concurrency`
//! connections and reports pushes/s and latency percentiles. Every push is a
//! real delivery: parsed, classified, committed before the answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hmac::{Hmac, KeyInit, Mac};
use sqlx::Executor;

const SECRET: &str = "load-test-secret";
const BRANCHES: [(&str, &str); 8] = [
    ("3.x", "main"),
    ("3.15", "3.15"),
    ("3.14", "3.14"),
    ("3.13", "3.13"),
    ("3.12", "3.12"),
    ("3.11", "3.11"),
    ("3.10", "3.10"),
    ("PR", "pr-head"),
];

#[derive(Parser, Debug)]
#[command(about = "Post signed GitHub pushes at an in-process master and measure it")]
struct Args {
    /// A PostgreSQL server to create the scratch database on (or a sqlite:// URL).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database: String,
    /// Pushes to send in all (after `warmup`).
    #[arg(long, default_value_t = 20_000)]
    pushes: usize,
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Connections sending at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Builder definitions; each is expanded over the 8 branches.
    #[arg(long, default_value_t = 130)]
    definitions: usize,
    /// Commits per push.
    #[arg(long, default_value_t = 1)]
    commits: usize,
}

fn config_text(definitions: usize, database: &str) -> String {
    let mut s = format!(
        "[master]\nname = \"load\"\nhttp = \"127.0.0.1:0\"\ndatabase = \"{database}\"\n\n[github]\nrepository = \"python/cpython\"\nwebhook_secret = \"{SECRET}\"\n\n"
    );
    for (label, git) in BRANCHES {
        s += &format!("[[branch]]\nname = \"{label}\"\ngit = \"{git}\"\n\n");
    }
    for w in 0..57 {
        s += &format!("[[worker]]\nname = \"worker-{w}\"\npassword = \"pw\"\nmax_builds = 2\n\n");
    }
    s += "[[factory]]\nname = \"unix\"\nsteps = [{ git = {} }, { command = [\"make\", \"-j4\"] }, { command = \"make buildbottest\" }]\n\n";
    let labels: Vec<String> = BRANCHES.iter().map(|(l, _)| format!("\"{l}\"")).collect();
    for d in 0..definitions {
        let tier = if d % 3 == 0 { "\"stable\", \"tier-1\"" } else { "\"unstable\", \"tier-3\"" };
        s += &format!(
            "[[builder]]\nname = \"builder-{d}\"\nworkers = [\"worker-{}\"]\nfactory = \"unix\"\nbranches = [{}]\ntags = [{tier}]\n\n",
            d % 57,
            labels.join(", ")
        );
    }
    for (label, _) in BRANCHES {
        s += &format!(
            "[[scheduler]]\nname = \"{label}\"\nkind = \"branch\"\nbranch = \"{label}\"\ntree_stable = \"30s\"\nignore_files = [\"Doc/**\", \"*.rst\"]\n\n"
        );
    }
    s
}

fn push_body(n: usize, commits: usize) -> Vec<u8> {
    let (_, git) = BRANCHES[n % BRANCHES.len()];
    let ids: Vec<String> = (0..commits).map(|c| format!("{:040x}", (n as u128) << 16 | c as u128)).collect();
    let commit = |id: &String| {
        serde_json::json!({
            "id": id, "tree_id": id, "distinct": true, "message": format!("gh-{n}: change the thing\n\nLonger text."),
            "timestamp": "2026-11-26T05:00:00+00:00", "url": format!("https://github.com/python/cpython/commit/{id}"),
            "author": {"name": "A. Developer", "email": "dev@example.org", "username": "dev"},
            "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
            "added": [], "removed": [], "modified": ["Lib/os.py", "Lib/test/test_os.py", "Misc/NEWS.d/next/x.rst"]
        })
    };
    let list: Vec<_> = ids.iter().map(commit).collect();
    serde_json::to_vec(&serde_json::json!({
        "ref": format!("refs/heads/{git}"), "before": format!("{:040x}", n), "after": ids.last(),
        "created": false, "deleted": false, "forced": false,
        "compare": "https://github.com/python/cpython/compare/a...b",
        "commits": list, "head_commit": list.last(),
        "repository": {"id": 81598961, "name": "cpython", "full_name": "python/cpython",
                       "html_url": "https://github.com/python/cpython", "created_at": 1487182435, "pushed_at": 1795669709},
        "pusher": {"name": "dev", "email": "dev@example.org"}
    }))
    .unwrap_or_default()
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Creates a scratch database next to the given PostgreSQL URL.
async fn scratch_database(url: &str) -> anyhow::Result<(String, Option<String>)> {
    if !url.starts_with("postgres") {
        return Ok((url.to_string(), None));
    }
    sqlx::any::install_default_drivers();
    let name = format!("cascade_bench_{}", std::process::id());
    let pool =
        sqlx::any::AnyPoolOptions::new().max_connections(1).connect(url).await.context("connecting to PostgreSQL")?;
    pool.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}"))).await?;
    pool.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await?;
    pool.close().await;
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    Ok((format!("{base}/{name}"), Some(name)))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The signed pushes, and where to post them.
struct Load {
    client: reqwest::Client,
    hook: String,
    bodies: Arc<Vec<(Vec<u8>, String)>>,
    concurrency: usize,
}

impl Load {
    /// One connection's share of the pushes `next..end`: their latencies.
    async fn sender(
        client: reqwest::Client,
        hook: String,
        bodies: Arc<Vec<(Vec<u8>, String)>>,
        next: Arc<std::sync::atomic::AtomicUsize>,
        end: usize,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut latencies = Vec::new();
        loop {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n >= end {
                return Ok(latencies);
            }
            let (body, sig) = &bodies[n];
            let t = Instant::now();
            let resp = client
                .post(&hook)
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", format!("load-{n}"))
                .header("x-hub-signature-256", sig)
                .body(body.clone())
                .send()
                .await?;
            let status = resp.status();
            let _ = resp.bytes().await?;
            latencies.push(t.elapsed());
            anyhow::ensure!(status.is_success(), "push {n} answered {status}");
        }
    }

    /// Posts pushes `range` from `concurrency` connections; every latency.
    async fn run(&self, range: std::ops::Range<usize>) -> anyhow::Result<Vec<Duration>> {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(range.start));
        let tasks: Vec<_> = (0..self.concurrency)
            .map(|_| {
                let (client, hook, bodies) = (self.client.clone(), self.hook.clone(), self.bodies.clone());
                tokio::spawn(Load::sender(client, hook, bodies, next.clone(), range.end))
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        Ok(all)
    }
}

/// A master on `url` with the CPython-sized configuration, served on loopback.
async fn start_master(args: &Args, url: &str) -> anyhow::Result<(cascade_store::Store, cascade_master::Served)> {
    let text = config_text(args.definitions, url);
    let config = cascade_config::parse(&text, std::path::Path::new("load.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let secrets = config.resolve_secrets().map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = cascade_store::Store::connect(url).await?;
    let started = Instant::now();
    let clock = cascade_master::clock::Clock::System;
    let master = cascade_master::Master::start(config, secrets, store.clone(), clock).await?;
    let (builders, backend) = (master.catalog.builder_count(), store.backend());
    eprintln!("master started with {builders} builders on {backend:?} in {:.1?}", started.elapsed());
    let served = cascade_master::server::spawn(master, cascade_master::Listeners::loopback().await?)?;
    Ok((store, served))
}

fn report(args: &Args, store: &cascade_store::Store, elapsed: Duration, latencies: &[Duration], stored: i64) {
    println!(
        "pushes={} commits/push={} concurrency={} builders={} backend={:?}",
        args.pushes,
        args.commits,
        args.concurrency,
        args.definitions * BRANCHES.len(),
        store.backend()
    );
    println!(
        "throughput={:.0} pushes/s  p50={:.2}ms  p90={:.2}ms  p99={:.2}ms  max={:.2}ms  changes_stored={stored}",
        args.pushes as f64 / elapsed.as_secs_f64(),
        percentile(latencies, 0.50).as_secs_f64() * 1e3,
        percentile(latencies, 0.90).as_secs_f64() * 1e3,
        percentile(latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (url, scratch) = scratch_database(&args.database).await?;
    let (store, served) = start_master(&args, &url).await?;
    let total = args.warmup + args.pushes;
    let bodies = (0..total)
        .map(|n| push_body(n, args.commits))
        .map(|b| {
            let signature = sign(&b);
            (b, signature)
        })
        .collect();
    cascade_master::outbound::install_crypto_provider();
    let load = Load {
        client: reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?,
        hook: format!("{}/change_hook/github", served.url()),
        bodies: Arc::new(bodies),
        concurrency: args.concurrency,
    };
    load.run(0..args.warmup).await?;
    let t0 = Instant::now();
    let mut latencies = load.run(args.warmup..total).await?;
    let elapsed = t0.elapsed();
    latencies.sort();
    let stored = store.list_changes(&cascade_store::ListQuery::default().limit(0)).await?.total;
    report(&args, &store, elapsed, &latencies, stored);
    served.stop().await?;
    store.close().await;
    if let Some(name) = scratch {
        let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&args.database).await?;
        pool.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await?;
    }
    Ok(())
}
