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
    "/grid?branch=main&before={change}",
    "/console?before={change}",
    "/waterfall",
    "/waterfall?before={newest_start}",
    "/waterfall?before={middle_start}",
    "/release",
    "/release?branch=3.x",
    "/builders",
    "/builders/5",
    "/builders/5?before={number}",
    "/builders/5/builds/{number}",
    "/changes",
    "/pending",
    "/workers",
    "/api/v2/builders",
    "/api/v2/builds?limit=50&order=-buildid",
    "/api/v2/builds?builderid=5&order=-number&limit=20",
    "/api/v2/builders/5/builds?complete=true&order=-number&limit=1",
    "/api/v2/builds/{build}/steps",
    "/api/v2/builds/{build}/changes",
    "/api/v2/builds?builderid=5&order=-number&limit=20&property=*",
    "/api/v2/builds/{build}/property_list",
    "/api/v2/changes?branch=main&order=-changeid&limit=50",
    "/api/v2/buildrequests?complete=false",
    // The orderings Buildbot's UI and release tooling use, each from an index.
    "/api/v2/builds?order=-started_at&limit=40",
    "/api/v2/builds?complete=true&order=-complete_at&limit=40",
    "/api/v2/builds?builderid=5&order=-complete_at&limit=1",
    "/api/v2/buildrequests?order=-buildrequestid&limit=1000",
    "/api/v2/buildrequests?order=-submitted_at&limit=200",
    "/api/v2/buildsets?order=-bsid&limit=50",
    "/api/v2/builders/5/builds/{number}/steps/2/logs",
    "/api/v2/builders/5/workers",
    "/api/v2/workers",
];

/// The ids the paths name, read from the master: a build, a number of
/// builder 5 and a change halfway through the history, so the same paths
/// make sense at every depth.
struct Middle {
    build: i64,
    number: i64,
    change: i64,
    /// When the newest build started, and the middle one: the waterfall's windows.
    newest_start: i64,
    middle_start: i64,
}

/// The first object of the list `url` answers.
async fn first(client: &reqwest::Client, url: &str, list: &str) -> anyhow::Result<serde_json::Value> {
    let mut body: serde_json::Value = client.get(url).send().await?.error_for_status()?.json().await?;
    Ok(body[list][0].take())
}

fn int(v: &serde_json::Value, field: &str) -> anyhow::Result<i64> {
    v[field].as_i64().ok_or_else(|| anyhow::anyhow!("no {field} in {v}"))
}

async fn middle(client: &reqwest::Client, base: &str) -> anyhow::Result<Middle> {
    let api = format!("{base}/api/v2");
    let newest = first(client, &format!("{api}/builds?order=-buildid&limit=1"), "builds").await?;
    let build = int(&newest, "buildid")? / 2;
    let number =
        int(&first(client, &format!("{api}/builders/5/builds?order=-number&limit=1"), "builds").await?, "number")?;
    let change = int(&first(client, &format!("{api}/changes?order=-changeid&limit=1"), "changes").await?, "changeid")?;
    let middle_start = int(&first(client, &format!("{api}/builds/{build}"), "builds").await?, "started_at")?;
    let newest_start = int(&newest, "started_at")?;
    Ok(Middle { build, number: number / 2, change: change / 2, newest_start, middle_start })
}

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
    let base = args.url.trim_end_matches('/').to_string();
    let mid = middle(&client, &base).await?;
    let paths: Vec<String> = paths
        .iter()
        .map(|p| {
            p.replace("{build}", &mid.build.to_string())
                .replace("{number}", &mid.number.to_string())
                .replace("{change}", &mid.change.to_string())
                .replace("{newest_start}", &(mid.newest_start + 1).to_string())
                .replace("{middle_start}", &mid.middle_start.to_string())
        })
        .collect();
    println!("{:<58} {:>6} {:>9} {:>9} {:>9} {:>9}", "path", "status", "bytes", "p50 ms", "p95 ms", "max ms");
    for path in &paths {
        let url = format!("{base}{path}");
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
