//! `cascade-worker`: connects to a master, runs the commands it is sent,
//! streams their output back, and reconnects when the connection drops.

mod commands;
mod info;
mod session;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "cascade-worker", version, about = "Runs builds for a Cascade master")]
pub struct Args {
    /// The master's worker port, HOST:PORT (msgpack protocol, default port 9990).
    #[arg(long)]
    pub master: String,
    /// This worker's name, as configured on the master.
    #[arg(long)]
    pub name: String,
    /// A file holding the worker's password (one line).
    #[arg(long)]
    pub password_file: PathBuf,
    /// Where builds happen; `info/admin` and `info/host` here describe the worker.
    #[arg(long)]
    pub basedir: PathBuf,
    /// Longest wait between reconnection attempts.
    #[arg(long, default_value = "60s", value_parser = humantime_secs)]
    pub max_delay: Duration,
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    let digits = s.trim_end_matches('s');
    digits.parse::<u64>().map(Duration::from_secs).map_err(|_| format!("expected seconds such as 60s, got {s:?}"))
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
    std::fs::create_dir_all(&args.basedir).with_context(|| format!("creating {}", args.basedir.display()))?;
    let basedir = std::fs::canonicalize(&args.basedir)?;
    let mut delay = Duration::from_secs(1);
    loop {
        match session::run(&args.master, &args.name, &password, &basedir).await {
            Ok(session::End::Shutdown) => {
                tracing::info!("the master asked this worker to shut down");
                return Ok(());
            }
            Ok(session::End::Disconnected) => {
                tracing::warn!("disconnected from the master");
                delay = Duration::from_secs(1);
            }
            Err(e) => tracing::warn!(error = %e, "cannot connect to the master"),
        }
        // Back off ×1.5 up to max_delay, with a little jitter so a fleet
        // does not reconnect in lockstep after a master restart.
        let jitter = Duration::from_millis(u64::from(std::process::id() % 500));
        tokio::time::sleep(delay + jitter).await;
        delay = (delay.mul_f64(1.5)).min(args.max_delay);
    }
}
