//! `reliability`: the long checks behind docs/reliability.md, against a
//! real `cascade serve` process on a scratch database.
//!
//! 1. Crash loop: signed pushes from several connections, each redelivered
//!    until it is acknowledged (as an operator redelivers from GitHub);
//!    the master is killed with SIGKILL `kills` times and restarted. At the
//!    end, the ledger of acknowledged deliveries must match the store:
//!    every acknowledged commit stored, none stored twice.
//! 2. Store restarts (`--restart-store "pg_ctlcluster ... restart"`):
//!    while pushes go on, the store restarts; every answer meanwhile must
//!    be 200 or 503 (never a 500, never a hang past GitHub's 10 s), and the
//!    ledger must still match.
//! 3. Soak: `soak` seconds of pushes, page reads and idle half-requests;
//!    the master's resident memory and open descriptors are sampled and
//!    must stay flat.
//! 4. Descriptors run out: under `ulimit -n descriptors`, twice as many
//!    idle connections; the master must keep running and answer again once
//!    they are gone.
//!
//! It prints a report and exits non-zero when a check fails.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cascade_loadgen::{config_text, push_body, push_revisions, scratch_database, sign};
use clap::Parser;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;

#[derive(Parser, Debug)]
#[command(about = "Kill -9 loops, store restarts and a soak against a cascade serve process")]
struct Args {
    /// A PostgreSQL server to create the scratch database on (or a sqlite:// URL).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database: String,
    /// The `cascade` binary (default: next to this one).
    #[arg(long)]
    cascade: Option<PathBuf>,
    /// SIGKILLs during the crash loop.
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Acknowledged pushes between two kills.
    #[arg(long, default_value_t = 3000)]
    pushes_per_kill: usize,
    /// Connections pushing at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// A shell command that restarts the store, run `store_restarts` times.
    #[arg(long)]
    restart_store: Option<String>,
    #[arg(long, default_value_t = 2)]
    store_restarts: usize,
    /// Seconds of soak (0 skips it).
    #[arg(long, default_value_t = 600)]
    soak: u64,
    /// The descriptor limit (`ulimit -n`) the master is flooded past at the
    /// end (0 skips it).
    #[arg(long, default_value_t = 256)]
    descriptors: u64,
    /// Builder definitions (each over 8 branches).
    #[arg(long, default_value_t = 130)]
    definitions: usize,
}

/// What the pushers were told: which pushes were acknowledged, and every
/// answer by status (0: no answer, the connection failed or timed out).
#[derive(Default)]
struct Ledger {
    acknowledged: Mutex<HashSet<usize>>,
    answers: Mutex<BTreeMap<u16, usize>>,
    slowest: Mutex<Duration>,
}

impl Ledger {
    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().len()
    }

    fn answer(&self, status: u16, took: Duration) {
        *self.answers.lock().entry(status).or_default() += 1;
        let mut slowest = self.slowest.lock();
        *slowest = (*slowest).max(took);
    }

    /// Answers seen since the last call, by status, and the slowest.
    fn take_answers(&self) -> (BTreeMap<u16, usize>, Duration) {
        (std::mem::take(&mut *self.answers.lock()), std::mem::take(&mut *self.slowest.lock()))
    }
}

/// A `cascade serve` process on fixed ports.
struct MasterProcess {
    binary: PathBuf,
    config: PathBuf,
    log: PathBuf,
    http: u16,
    /// `ulimit -n` for the process, when set.
    descriptors: Option<u64>,
    child: Option<tokio::process::Child>,
}

impl MasterProcess {
    fn start(&mut self) -> anyhow::Result<()> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut command = match self.descriptors {
            Some(n) => {
                let mut sh = tokio::process::Command::new("sh");
                sh.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")]).arg(&self.binary);
                sh
            }
            None => tokio::process::Command::new(&self.binary),
        };
        let child = command
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// Waits for `/healthz` to answer 200.
    async fn ready(&self, client: &reqwest::Client) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            if client.get(self.url("/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the master did not come up in 120 s; see {}", self.log.display())
    }
}

/// Pushes `n` from `next` on until `stop`, each redelivered until it is
/// acknowledged.
async fn pusher(
    client: reqwest::Client,
    hook: String,
    next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    ledger: Arc<Ledger>,
) {
    while !stop.load(Ordering::Relaxed) {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let body = push_body(n, 1);
        let signature = sign(&body);
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let sent = client
                .post(&hook)
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", format!("reliability-{n}"))
                .header("x-hub-signature-256", &signature)
                .body(body.clone())
                .send()
                .await;
            let status = sent.map_or(0, |r| r.status().as_u16());
            ledger.answer(status, started.elapsed());
            if status == 200 {
                ledger.acknowledged.lock().insert(n);
                break;
            }
            tokio::time::sleep(Duration::from_millis(if status == 0 { 100 } else { 20 })).await;
        }
    }
}

/// Pushers running until `stop` is set.
struct Pushing {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pushing {
    fn start(client: &reqwest::Client, hook: &str, from: usize, concurrency: usize, ledger: &Arc<Ledger>) -> Pushing {
        let (stop, next) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(from)));
        let tasks = (0..concurrency)
            .map(|_| {
                let (c, h, n, s, l) = (client.clone(), hook.to_string(), next.clone(), stop.clone(), ledger.clone());
                tokio::spawn(pusher(c, h, n, s, l))
            })
            .collect();
        Pushing { stop, tasks }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn until_acknowledged(ledger: &Ledger, count: usize) {
    while ledger.acknowledged() < count {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every acknowledged push's commit is stored, and no commit twice.
async fn check_ledger(url: &str, ledger: &Ledger) -> anyhow::Result<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(url).await?;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT revision, COUNT(*) FROM changes GROUP BY revision").fetch_all(&pool).await?;
    let doubled = rows.iter().filter(|(_, n)| *n > 1).count();
    let stored: HashSet<String> = rows.into_iter().map(|(r, _)| r).collect();
    let acknowledged: Vec<usize> = ledger.acknowledged.lock().iter().copied().collect();
    let missing: Vec<usize> =
        acknowledged.iter().copied().filter(|n| !stored.contains(&push_revisions(*n, 1)[0])).collect();
    for n in missing.iter().take(5) {
        let delivery = format!("reliability-{n}");
        let known: Vec<(String, i64)> =
            sqlx::query_as("SELECT delivery_id, received_at FROM webhook_deliveries WHERE delivery_id = $1")
                .bind(&delivery)
                .fetch_all(&pool)
                .await?;
        eprintln!("lost: push {n} ({}), its delivery stored: {known:?}", push_revisions(*n, 1)[0]);
    }
    pool.close().await;
    let lost = missing.len();
    let line = format!(
        "{} acknowledged, {} stored, {lost} acknowledged but lost, {doubled} stored twice",
        acknowledged.len(),
        stored.len()
    );
    if lost > 0 || doubled > 0 {
        bail!("the ledger does not match the store: {line}");
    }
    Ok(line)
}

/// Part 1: SIGKILL the master `kills` times while pushes go on.
async fn crash_loop(
    args: &Args,
    master: &mut MasterProcess,
    client: &reqwest::Client,
    ledger: &Arc<Ledger>,
) -> anyhow::Result<()> {
    let hook = master.url("/change_hook/github");
    // From 1: push 0's commit id would be all zeros, git's "no commit".
    let pushing = Pushing::start(client, &hook, 1, args.concurrency, ledger);
    let mut restarts = Vec::new();
    for round in 1..=args.kills {
        until_acknowledged(ledger, round * args.pushes_per_kill).await;
        master.kill9().await;
        master.start()?;
        restarts.push(master.ready(client).await?);
    }
    until_acknowledged(ledger, (args.kills + 1) * args.pushes_per_kill).await;
    pushing.stop().await;
    let (answers, _) = ledger.take_answers();
    println!("## crash loop\n");
    println!("- {} SIGKILLs during sustained pushes from {} connections", args.kills, args.concurrency);
    println!("- restarts took {restarts:.1?} to answer /healthz again");
    println!("- answers by status (0: refused while down): {answers:?}");
    Ok(())
}

/// Part 2: restart the store while pushes go on; only 200 and 503 answers.
async fn store_restarts(
    args: &Args,
    command: &str,
    master: &MasterProcess,
    client: &reqwest::Client,
    ledger: &Arc<Ledger>,
) -> anyhow::Result<()> {
    let from = 10_000_000;
    let pushing = Pushing::start(client, &master.url("/change_hook/github"), from, args.concurrency, ledger);
    let mut recoveries = Vec::new();
    for _ in 0..args.store_restarts {
        let before = ledger.acknowledged();
        until_acknowledged(ledger, before + 500).await;
        let started = Instant::now();
        let status = tokio::process::Command::new("sh").args(["-c", command]).status().await?;
        if !status.success() {
            bail!("`{command}` failed: {status}");
        }
        master.ready(client).await?;
        let back = ledger.acknowledged();
        until_acknowledged(ledger, back + 100).await;
        recoveries.push(started.elapsed());
    }
    pushing.stop().await;
    let (answers, slowest) = ledger.take_answers();
    println!("\n## store restarts\n");
    println!("- {} restarts of the store (`{command}`) during sustained pushes", args.store_restarts);
    println!("- pushes flowing again {recoveries:.1?} after each restart began");
    println!("- answers by status: {answers:?}; the slowest answer took {slowest:.1?}");
    if answers.keys().any(|s| !matches!(s, 200 | 503)) {
        bail!("answers other than 200 and 503 while the store restarted: {answers:?}");
    }
    if slowest > Duration::from_secs(10) {
        bail!("an answer took {slowest:.1?}, longer than GitHub waits");
    }
    Ok(())
}

/// Resident memory (KiB) and open descriptors of a process.
fn footprint(pid: u32) -> anyhow::Result<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok((rss, fds))
}

/// Page reads, wrong worker logins and idle connections, until `stop`.
async fn visitors(master_http: u16, client: reqwest::Client, stop: Arc<AtomicBool>) {
    let pages = ["/", "/console", "/waterfall", "/builders", "/changes", "/api/v2/builds?limit=50"];
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let page = format!("http://127.0.0.1:{master_http}{}", pages[i % pages.len()]);
        if let Ok(answer) = client.get(page).send().await {
            let _ = answer.bytes().await;
        }
        if let Ok(mut idle) = tokio::net::TcpStream::connect(("127.0.0.1", master_http)).await {
            let _ = idle.write_all(b"GET / HTTP/1.1\r\n").await;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(15)).await;
                drop(idle);
            });
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Part 3: `soak` seconds of mixed load; memory and descriptors sampled.
async fn soak(
    args: &Args,
    master: &MasterProcess,
    client: &reqwest::Client,
    ledger: &Arc<Ledger>,
) -> anyhow::Result<()> {
    let pid = master.pid().context("the master is not running")?;
    let pushing = Pushing::start(client, &master.url("/change_hook/github"), 20_000_000, 2, ledger);
    let stop = Arc::new(AtomicBool::new(false));
    let visiting = tokio::spawn(visitors(master.http, client.clone(), stop.clone()));
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(args.soak) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        samples.push((started.elapsed().as_secs(), footprint(pid)?));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = visiting.await;
    pushing.stop().await;
    let (answers, _) = ledger.take_answers();
    report_soak(args, &samples, &answers)
}

fn report_soak(args: &Args, samples: &[(u64, (u64, usize))], answers: &BTreeMap<u16, usize>) -> anyhow::Result<()> {
    // The first minute is warm-up (caches, pools); flat means after it.
    let warm: Vec<_> = samples.iter().filter(|(t, _)| *t >= 60).collect();
    let (Some(first), Some(last)) = (warm.first(), warm.last()) else { bail!("the soak was too short to judge") };
    let max_rss = warm.iter().map(|(_, (r, _))| *r).max().unwrap_or(0);
    let max_fds = warm.iter().map(|(_, (_, f))| *f).max().unwrap_or(0);
    println!("\n## soak\n");
    println!("- {} s of pushes (2 connections), page reads, idle half-requests, every 50 ms", args.soak);
    println!("- answers by status: {answers:?}");
    println!(
        "- resident memory after 60 s: {} MiB, at the end: {} MiB, highest: {} MiB",
        first.1.0 / 1024,
        last.1.0 / 1024,
        max_rss / 1024
    );
    println!("- open descriptors after 60 s: {}, at the end: {}, highest: {max_fds}", first.1.1, last.1.1);
    if last.1.0 > first.1.0 + first.1.0 / 4 + 8 * 1024 {
        bail!("memory grew over the soak");
    }
    if last.1.1 > first.1.1 + 64 {
        bail!("descriptors grew over the soak");
    }
    Ok(())
}

fn write_config(args: &Args, dir: &Path, url: &str, http: u16) -> anyhow::Result<PathBuf> {
    let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
    let listen =
        format!("http = \"127.0.0.1:{http}\"\nmsgpack = \"127.0.0.1:{}\"\npb = \"127.0.0.1:{}\"", free()?, free()?);
    let path = dir.join("cascade.toml");
    std::fs::write(&path, config_text(args.definitions, url, &listen))?;
    Ok(path)
}

async fn run(args: &Args, url: &str) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("cascade-reliability-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let binary = match &args.cascade {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("cascade"),
    };
    let config = write_config(args, &dir, url, http)?;
    let log = dir.join("master.log");
    let mut master = MasterProcess { binary, config, log, http, descriptors: None, child: None };
    cascade_master::outbound::install_crypto_provider();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
    master.start()?;
    master.ready(&client).await?;
    let ledger = Arc::new(Ledger::default());
    crash_loop(args, &mut master, &client, &ledger).await?;
    println!("- ledger: {}", check_ledger(url, &ledger).await?);
    if let Some(command) = &args.restart_store {
        store_restarts(args, command, &master, &client, &ledger).await?;
        println!("- ledger: {}", check_ledger(url, &ledger).await?);
    }
    if args.soak > 0 {
        soak(args, &master, &client, &ledger).await?;
        println!("- ledger: {}", check_ledger(url, &ledger).await?);
    }
    if args.descriptors > 0 {
        descriptors_run_out(args.descriptors, &mut master, &client).await?;
    }
    master.kill9().await;
    Ok(())
}

/// Part 4: the master under `limit` descriptors, sent twice as many idle
/// connections: it must keep running, and answer again once they go.
async fn descriptors_run_out(limit: u64, master: &mut MasterProcess, client: &reqwest::Client) -> anyhow::Result<()> {
    master.kill9().await;
    master.descriptors = Some(limit);
    master.start()?;
    master.ready(client).await?;
    let mut flood = Vec::new();
    for _ in 0..limit * 2 {
        if let Ok(c) = tokio::net::TcpStream::connect(("127.0.0.1", master.http)).await {
            flood.push(c);
        }
    }
    let during = client.get(master.url("/healthz")).timeout(Duration::from_secs(3)).send().await;
    let during = during.map_or_else(|e| format!("no answer ({e})"), |r| r.status().to_string());
    let opened = flood.len();
    drop(flood);
    let back = master.ready(client).await?;
    let running = master.child.as_mut().is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()));
    let log = std::fs::read_to_string(&master.log).unwrap_or_default();
    let retried = log.contains("accept failed; retrying");
    println!("\n## descriptors run out\n");
    println!("- {opened} idle connections against `ulimit -n {limit}`; /healthz meanwhile: {during}");
    println!("- accept errors logged and retried: {retried}; /healthz answered {back:.1?} after the flood ended");
    if !running {
        bail!("the master stopped when it ran out of descriptors");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (url, scratch) = scratch_database(&args.database).await?;
    let outcome = run(&args, &url).await;
    if let Some(name) = scratch {
        cascade_loadgen::drop_database(&args.database, &name).await?;
    }
    outcome
}
