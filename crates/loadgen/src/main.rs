//! `webhook-load`: how fast a master takes signed GitHub pushes.
//!
//! It starts a master in-process on a scratch PostgreSQL (or SQLite)
//! database with a CPython-sized configuration (≈1,000 builders over 8
//! branches), then posts signed pushes over loopback HTTP from `concurrency`
//! connections and reports pushes/s and latency percentiles. Every push is a
//! real delivery: parsed, classified, committed before the answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_loadgen::{BRANCHES, config_text, percentile, push_body, scratch_database, sign};
use clap::Parser;

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
        t0: Instant,
    ) -> anyhow::Result<Vec<(Duration, Duration)>> {
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
            latencies.push((t.elapsed(), t - t0));
            anyhow::ensure!(status.is_success(), "push {n} answered {status}");
        }
    }

    /// Posts pushes `range` from `concurrency` connections; every latency,
    /// with when its push was sent (since the run began).
    async fn run(&self, range: std::ops::Range<usize>) -> anyhow::Result<Vec<(Duration, Duration)>> {
        let t0 = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(range.start));
        let tasks: Vec<_> = (0..self.concurrency)
            .map(|_| {
                let (client, hook, bodies) = (self.client.clone(), self.hook.clone(), self.bodies.clone());
                tokio::spawn(Load::sender(client, hook, bodies, next.clone(), range.end, t0))
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
    let text = config_text(args.definitions, url, "http = \"127.0.0.1:0\"");
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Checkpoints PostgreSQL has made since its statistics were reset.
async fn checkpoints(url: &str) -> Option<i64> {
    if !url.starts_with("postgres") {
        return None;
    }
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(url).await.ok()?;
    let sql = "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter";
    let n = sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.ok();
    pool.close().await;
    n
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
    let checkpoints_before = checkpoints(&url).await;
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    eprintln!("measuring from Unix time {:.3} (to set beside the server's logs)", since_epoch.as_secs_f64());
    let t0 = Instant::now();
    let mut timed = load.run(args.warmup..total).await?;
    let elapsed = t0.elapsed();
    let checkpoints_after = checkpoints(&url).await;
    timed.sort();
    let latencies: Vec<Duration> = timed.iter().map(|(latency, _)| *latency).collect();
    // The tail, and when it happened: to set beside checkpoints and passes.
    let slowest: Vec<String> =
        timed.iter().rev().take(8).map(|(l, at)| format!("{:.1} ms at {:.2} s", ms(*l), at.as_secs_f64())).collect();
    eprintln!("slowest: {}", slowest.join(", "));
    if let (Some(b), Some(a)) = (checkpoints_before, checkpoints_after) {
        eprintln!("PostgreSQL checkpoints during the run: {}", a - b);
    }
    let stored = store.list_changes(&cascade_store::ListQuery::default().limit(0)).await?.total;
    report(&args, &store, elapsed, &latencies, stored);
    served.stop().await?;
    store.close().await;
    if let Some(name) = scratch {
        cascade_loadgen::drop_database(&args.database, &name).await?;
    }
    Ok(())
}
