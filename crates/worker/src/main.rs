//! `cascade-worker`: connects to a master, runs the commands it is sent,
//! streams their output back, and reconnects when the connection drops.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "cascade-worker", version, about = "Runs builds for a Cascade master")]
struct Args {
    /// The master's worker port, HOST:PORT (msgpack protocol, default port 9990).
    #[arg(long)]
    master: String,
    /// This worker's name, as configured on the master.
    #[arg(long)]
    name: String,
    /// A file holding the worker's password (one line).
    #[arg(long)]
    password_file: PathBuf,
    /// Where builds happen; `info/admin` and `info/host` here describe the worker.
    #[arg(long)]
    basedir: PathBuf,
    /// Longest wait between reconnection attempts, in seconds (`60s`).
    #[arg(long, default_value = "60s", value_parser = seconds)]
    max_delay: Duration,
}

fn seconds(s: &str) -> Result<Duration, String> {
    s.trim_end_matches('s')
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("expected seconds such as 60s, got {s:?}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let password = std::fs::read_to_string(&args.password_file)
        .with_context(|| format!("reading {}", args.password_file.display()))?
        .trim_end_matches(['\n', '\r'])
        .to_string();
    cascade_worker::run(cascade_worker::Options {
        master: args.master,
        name: args.name,
        password,
        basedir: args.basedir,
        max_delay: args.max_delay,
    })
    .await
}
