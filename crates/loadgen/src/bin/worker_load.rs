//! `worker-load`: how a master copes with many workers and much output.
//!
//! It starts a master in-process on a scratch database and connects
//! simulated workers over loopback WebSockets: each speaks
//! `msgpack_experimental_v7` as buildbot-worker does and answers every
//! `shell` command with `--lines` lines of output (in `update`s of about
//! 64 KiB, the worker's default batch) then `rc 0`. Every worker's builder
//! is forced once. Reported: the time until every build finished, the step
//! output stored per second, and this process's RSS (sampled) and CPU time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use cascade_protocol::Frame;
use cascade_protocol::msgpack::{MasterRequest, Request};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use rmpv::Value;
use sqlx::Executor;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Parser, Debug)]
#[command(about = "Simulated workers against an in-process master")]
struct Args {
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database: String,
    /// Simulated workers, each with its own builder.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Lines of output per build.
    #[arg(long, default_value_t = 1_000_000)]
    lines: usize,
    /// Bytes per line (including its newline).
    #[arg(long, default_value_t = 100)]
    line_bytes: usize,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_secs() -> f64 {
    // utime + stime, in clock ticks (100 per second on Linux).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .map(|s| {
            let f: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (t(11) + t(12)) / 100.0
        })
        .unwrap_or(0.0)
}

fn config_text(workers: usize, database: &str) -> String {
    let mut s = format!(
        "[master]\nname = \"worker-load\"\ndatabase = \"{database}\"\nworker_ping = \"30s\"\nworker_timeout = \"300s\"\n[github]\ninsecure_webhook = true\n[[branch]]\nname = \"main\"\n[[factory]]\nname = \"f\"\nsteps = [{{ name = \"output\", command = [\"produce\"] }}]\n"
    );
    for w in 0..workers {
        s += &format!(
            "[[worker]]\nname = \"w{w}\"\npassword = \"pw\"\n[[builder]]\nname = \"b{w}\"\nworkers = [\"w{w}\"]\nfactory = \"f\"\nbranches = [\"main\"]\n"
        );
    }
    s += "[[scheduler]]\nname = \"force\"\nkind = \"force\"\n";
    s
}

/// One simulated worker: attach, then answer each shell command with output.
/// Sixteen different 64 KiB batches of pseudo-random hex lines, shared by
/// every simulated worker: about as compressible as real test output (hex
/// holds 4 bits a byte). Returns the batches and one single line.
fn output_batches(line_bytes: usize) -> (Vec<String>, String) {
    let per_update = (65536 / line_bytes).max(1);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut hex_line = || {
        let mut l = String::with_capacity(line_bytes);
        while l.len() + 1 < line_bytes {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            l.push_str(&format!("{state:016x}"));
        }
        l.truncate(line_bytes.saturating_sub(1));
        l.push('\n');
        l
    };
    let batches = (0..16).map(|_| (0..per_update).map(|_| hex_line()).collect()).collect();
    (batches, hex_line())
}

async fn worker(
    port: u16,
    name: String,
    lines: usize,
    line_bytes: usize,
    output: Arc<(Vec<String>, String)>,
    sent: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let (batches, line) = (&output.0, &output.1);
    let mut req = format!("ws://127.0.0.1:{port}/").into_client_request()?;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{name}:pw"));
    req.headers_mut().insert("authorization", format!("Basic {token}").parse()?);
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false).await?;
    let (mut sink, mut stream) = ws.split();
    let mut seq = 0i64;
    let per_update = (65536 / line_bytes).max(1);
    while let Some(msg) = stream.next().await {
        let Message::Binary(bytes) = msg? else { continue };
        let Ok(Frame::Request { op, seq: their, fields }) = Frame::decode(&bytes) else { continue };
        let request = MasterRequest::parse(&op, &fields);
        let result = if matches!(request, Ok(MasterRequest::GetWorkerInfo)) {
            Value::Map(vec![
                (Value::from("basedir"), Value::from("/sim")),
                (Value::from("system"), Value::from("posix")),
            ])
        } else {
            Value::Nil
        };
        sink.send(Message::Binary(Frame::Response { seq: their, result: Ok(result) }.encode().into())).await?;
        let Ok(MasterRequest::StartCommand { command_id: id, .. }) = request else { continue };
        let mut left = lines;
        let mut turn = 0usize;
        while left > 0 {
            let n = left.min(per_update);
            turn += 1;
            let text = if n == per_update { batches[turn % batches.len()].clone() } else { line.repeat(n) };
            let entry = Value::Array(vec![
                Value::from("stdout"),
                Value::Array(vec![Value::from(text.as_str()), Value::Array(vec![]), Value::Array(vec![])]),
            ]);
            let update = Request {
                op: cascade_protocol::msgpack::Op::Update,
                fields: vec![
                    ("command_id".into(), Value::from(id.as_str())),
                    ("args".into(), Value::Array(vec![entry])),
                ],
            };
            sink.send(Message::Binary(update.into_frame(seq).encode().into())).await?;
            seq += 1;
            sent.fetch_add(text.len() as u64, Ordering::Relaxed);
            left -= n;
        }
        let tail = Value::Array(vec![Value::Array(vec![Value::from("rc"), Value::from(0)])]);
        let update = Request {
            op: cascade_protocol::msgpack::Op::Update,
            fields: vec![("command_id".into(), Value::from(id.as_str())), ("args".into(), tail)],
        };
        sink.send(Message::Binary(update.into_frame(seq).encode().into())).await?;
        let complete = Request {
            op: cascade_protocol::msgpack::Op::Complete,
            fields: vec![("command_id".into(), Value::from(id.as_str())), ("args".into(), Value::Nil)],
        };
        sink.send(Message::Binary(complete.into_frame(seq + 1).encode().into())).await?;
        seq += 2;
    }
    Ok(())
}

async fn scratch(url: &str) -> anyhow::Result<(String, Option<String>)> {
    if !url.starts_with("postgres") {
        return Ok((url.to_string(), None));
    }
    sqlx::any::install_default_drivers();
    let name = format!("cascade_wload_{}", std::process::id());
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(url).await.context("PostgreSQL")?;
    pool.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}"))).await?;
    pool.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await?;
    pool.close().await;
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    Ok((format!("{base}/{name}"), Some(name)))
}

/// What a run measured.
struct Measured {
    attached_in: Duration,
    elapsed: Duration,
    cpu: f64,
    rss_idle: u64,
    rss_mid: u64,
    rss_max: u64,
}

/// Forces one build per worker and waits for them all, sampling memory.
async fn run_builds(
    master: &cascade_master::Master,
    store: &cascade_store::Store,
    workers: usize,
) -> anyhow::Result<(Duration, f64, Vec<u64>)> {
    let t0 = Instant::now();
    let cpu0 = cpu_secs();
    let req = cascade_master::scheduler::ForceRequest {
        scheduler: "force".into(),
        reason: "load".into(),
        owner: "load".into(),
        ..Default::default()
    };
    master.schedulers.force(store, &req, cascade_master::clock::now()).await?;
    master.runner.nudge();
    let mut rss_samples = Vec::new();
    let complete = cascade_store::ListQuery::default().eq("complete", "true").limit(0);
    loop {
        let done = store.list_buildrequests(&complete).await?.total;
        rss_samples.push(rss_kib());
        if done as usize >= workers {
            break;
        }
        anyhow::ensure!(t0.elapsed() < Duration::from_secs(1800), "builds did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((t0.elapsed(), cpu_secs() - cpu0, rss_samples))
}

/// Connects the simulated workers and waits until all are attached.
async fn attach_workers(
    master: &cascade_master::Master,
    port: u16,
    args: &Args,
    sent: &Arc<AtomicU64>,
) -> anyhow::Result<Duration> {
    let output = Arc::new(output_batches(args.line_bytes));
    for w in 0..args.workers {
        let (sent, output) = (sent.clone(), output.clone());
        let (lines, line_bytes) = (args.lines, args.line_bytes);
        tokio::spawn(async move {
            if let Err(e) = worker(port, format!("w{w}"), lines, line_bytes, output, sent).await {
                eprintln!("worker w{w}: {e}");
            }
        });
    }
    let attach_start = Instant::now();
    while master.workers.connected().len() < args.workers {
        anyhow::ensure!(attach_start.elapsed() < Duration::from_secs(300), "workers did not all attach");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(attach_start.elapsed())
}

/// Lines stored by the builds.
async fn stored_lines(store: &cascade_store::Store, builds: usize) -> anyhow::Result<i64> {
    let mut n = 0;
    for b in store.recent_builds(builds as i64).await? {
        for s in store.list_steps(b.1.buildid).await? {
            for l in store.list_logs(s.stepid).await? {
                n += l.num_lines;
            }
        }
    }
    Ok(n)
}

fn report(args: &Args, backend: cascade_store::Backend, m: &Measured, bytes: u64, stored_lines: i64) {
    println!("workers={} lines/build={} line_bytes={} backend={backend:?}", args.workers, args.lines, args.line_bytes);
    println!(
        "attach={:.2}s  builds={:.2}s  output={:.1} MB  ingest={:.1} MB/s  stored_lines={}  cpu={:.1}s ({:.0}% of one core)  rss_idle={} MiB  rss_mid={} MiB  rss_max={} MiB",
        m.attached_in.as_secs_f64(),
        m.elapsed.as_secs_f64(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / m.elapsed.as_secs_f64(),
        stored_lines,
        m.cpu,
        100.0 * m.cpu / m.elapsed.as_secs_f64(),
        m.rss_idle / 1024,
        m.rss_mid / 1024,
        m.rss_max / 1024,
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (url, scratch_db) = scratch(&args.database).await?;
    let config = cascade_config::parse(&config_text(args.workers, &url), std::path::Path::new("load.toml"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let secrets = config.resolve_secrets().map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = cascade_store::Store::connect(&url).await?;
    let clock = cascade_master::clock::Clock::System;
    let master = cascade_master::Master::start(config, secrets, store.clone(), clock).await?;
    let served = cascade_master::server::spawn(master.clone(), cascade_master::Listeners::loopback().await?)?;
    let sent = Arc::new(AtomicU64::new(0));
    let attached_in = attach_workers(&master, served.addresses.msgpack.port(), &args, &sent).await?;
    let rss_idle = rss_kib();
    let (elapsed, cpu, rss) = run_builds(&master, &store, args.workers).await?;
    let measured = Measured {
        attached_in,
        elapsed,
        cpu,
        rss_idle,
        rss_mid: rss.get(rss.len() / 2).copied().unwrap_or(0),
        rss_max: rss.iter().copied().max().unwrap_or(0),
    };
    let lines = stored_lines(&store, args.workers).await?;
    report(&args, store.backend(), &measured, sent.load(Ordering::Relaxed), lines);
    served.stop().await?;
    store.close().await;
    if let Some(name) = scratch_db {
        let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&args.database).await?;
        pool.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await?;
    }
    Ok(())
}
