//! `page-bench`: how long a running master takes to answer pages and API
//! calls, and how big the answers are. Each path is fetched `--rounds`
//! times, one request at a time over loopback (so the time is the server's
//! plus a loopback round trip); the report gives p50, p95 and max.
//!
//! ```sh
//! cargo run --release -p cascade-loadgen --bin page-bench -- --url http://127.0.0.1:8010
//! ```

use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Time pages and API calls of a running master")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8010")]
    url: String,
    #[arg(long, default_value_t = 40)]
    rounds: usize,
    /// Paths to time (default: the main pages and API calls).
    paths: Vec<String>,
}

const DEFAULT_PATHS: &[&str] = &[
    "/",
    "/console",
    "/console?branch=3.14&tag=stable",
    "/grid",
    "/waterfall",
    "/release",
    "/release?branch=3.x",
    "/builders",
    "/builders/5",
    "/builders/5?before=500",
    "/builders/5/builds/900",
    "/changes",
    "/pending",
    "/workers",
    "/api/v2/builders",
    "/api/v2/builds?limit=50&order=-buildid",
    "/api/v2/builds?builderid=5&order=-number&limit=20",
    "/api/v2/builders/5/builds?complete=true&order=-number&limit=1",
    "/api/v2/builds/500000/steps",
    "/api/v2/builds/500000/changes",
    "/api/v2/changes?branch=main&order=-changeid&limit=50",
    "/api/v2/buildrequests?complete=false",
    // The orderings Buildbot's UI and release tooling use, each from an index.
    "/api/v2/builds?order=-started_at&limit=40",
    "/api/v2/builds?complete=true&order=-complete_at&limit=40",
    "/api/v2/builds?builderid=5&order=-complete_at&limit=1",
    "/api/v2/buildrequests?order=-buildrequestid&limit=1000",
    "/api/v2/buildrequests?order=-submitted_at&limit=200",
    "/api/v2/buildsets?order=-bsid&limit=50",
    "/api/v2/builders/5/builds/900/steps/2/logs",
    "/api/v2/builders/5/workers",
    "/api/v2/workers",
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cascade_master::outbound::install_crypto_provider();
    let client = reqwest::Client::new();
    let paths: Vec<String> = if args.paths.is_empty() {
        DEFAULT_PATHS.iter().map(std::string::ToString::to_string).collect()
    } else {
        args.paths.clone()
    };
    println!("{:<58} {:>6} {:>9} {:>9} {:>9} {:>9}", "path", "status", "bytes", "p50 ms", "p95 ms", "max ms");
    for path in &paths {
        let url = format!("{}{path}", args.url.trim_end_matches('/'));
        let mut times = Vec::with_capacity(args.rounds);
        let (mut status, mut bytes) = (0, 0);
        // One warm-up request: caches, the first connection.
        let _ = client.get(&url).send().await?.bytes().await?;
        for _ in 0..args.rounds {
            let started = Instant::now();
            let resp = client.get(&url).send().await?;
            status = resp.status().as_u16();
            let body = resp.bytes().await?;
            times.push(started.elapsed());
            bytes = body.len();
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<58} {:>6} {:>9} {:>9.1} {:>9.1} {:>9.1}",
            path,
            status,
            bytes,
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.95)),
            ms(times.last().copied().unwrap_or_default())
        );
    }
    Ok(())
}
