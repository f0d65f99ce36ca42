//! `notify-load`: a burst of finished builds against a master served
//! through `server::spawn`, once with no reporter and once with a chat
//! webhook reporter told of every build's end; measures what the build path
//! (claim and finish, the outbox write included) costs in each, and how fast
//! the notifications drain to a local receiver. The numbers go into
//! docs/performance.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cascade_loadgen::{drop_database, percentile, scratch_database};
use clap::Parser;

#[derive(Parser)]
#[command(about = "A burst of finished builds with and without a reporter")]
struct Args {
    /// A PostgreSQL server to make a scratch database on, or a sqlite:// URL.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database: String,
    /// Builds in the burst.
    #[arg(long, default_value_t = 1000)]
    builds: usize,
}

fn config(database: &str, receiver: Option<&str>) -> String {
    let mut s = format!(
        "[master]\nname = \"notify-load\"\nurl = \"https://ci.example.org\"\ndatabase = \"{database}\"\n\
         [github]\ninsecure_webhook = true\n[[branch]]\nname = \"main\"\n[[worker]]\nname = \"w\"\npassword = \"pw\"\n\
         [[factory]]\nname = \"f\"\nsteps = [{{ command = \"true\" }}]\n"
    );
    for b in 0..10 {
        s += &format!("[[builder]]\nname = \"b{b}\"\nworkers = [\"w\"]\nfactory = \"f\"\nbranches = [\"main\"]\n");
    }
    if let Some(url) = receiver {
        s += &format!(
            "[[reporter]]\nname = \"chat\"\nkind = \"webhook\"\nurl = \"{url}/hook\"\nevents = [\"finished\"]\n"
        );
    }
    s
}

/// A local webhook receiver counting what arrives.
async fn receiver() -> anyhow::Result<(Arc<AtomicUsize>, String)> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((count, url))
}

struct Run {
    per_build: Vec<Duration>,
    burst: Duration,
    drained: Option<Duration>,
}

/// Finishes `builds` builds (round robin over the builders) and times each.
async fn run(database: &str, builds: usize, with_reporter: bool) -> anyhow::Result<Run> {
    let (received, url) = receiver().await?;
    let text = config(database, with_reporter.then_some(url.as_str()));
    let config =
        cascade_config::parse(&text, std::path::Path::new("notify.toml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let secrets = config.resolve_secrets().map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = cascade_store::Store::connect(database).await?;
    let master =
        cascade_master::Master::start(config, secrets, store.clone(), cascade_master::clock::Clock::System).await?;
    let served = cascade_master::server::spawn(master.clone(), cascade_master::Listeners::loopback().await?)?;
    let builders: Vec<i64> = master.catalog.builders().map(|(_, id)| id).collect();
    let driver = store.register_master(&format!("driver-{with_reporter}"), cascade_master::clock::now()).await?;
    let mut per_build = Vec::with_capacity(builds);
    let started = Instant::now();
    for i in 0..builds {
        let builder = builders[i % builders.len()];
        let now = cascade_master::clock::now();
        let bs = cascade_store::NewBuildset { reason: "load".into(), builder_ids: vec![builder], ..Default::default() };
        store.create_buildset(&bs, now).await?;
        let t = Instant::now();
        let claimed =
            store.claim_build(builder, driver, None, now).await?.ok_or_else(|| anyhow::anyhow!("no build"))?;
        store.finish_build(claimed.build_id, cascade_model::Results::Success, "ok", now).await?;
        per_build.push(t.elapsed());
    }
    let burst = started.elapsed();
    let drained = if with_reporter {
        while received.load(Ordering::Relaxed) < builds {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "notifications did not drain");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(started.elapsed())
    } else {
        None
    };
    served.stop().await?;
    store.close().await;
    per_build.sort();
    Ok(Run { per_build, burst, drained })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for with_reporter in [false, true] {
        let (url, scratch) = scratch_database(&args.database).await?;
        let r = run(&url, args.builds, with_reporter).await?;
        if let Some(name) = scratch {
            drop_database(&args.database, &name).await?;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{}: {} builds finished in {:.2} s; claim+finish p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms{}",
            if with_reporter { "with a reporter" } else { "no reporter    " },
            args.builds,
            r.burst.as_secs_f64(),
            ms(percentile(&r.per_build, 0.5)),
            ms(percentile(&r.per_build, 0.95)),
            ms(percentile(&r.per_build, 0.99)),
            r.drained
                .map(|d| format!(
                    "; all {} notifications received {:.2} s after the first build",
                    args.builds,
                    d.as_secs_f64()
                ))
                .unwrap_or_default(),
        );
    }
    Ok(())
}
