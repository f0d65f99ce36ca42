//! `cascade-worker` as a library: the binary (main.rs) parses arguments
//! and calls [`run`]; `cascade demo` runs a worker in-process the same way.

pub mod commands;
pub mod info;
pub mod session;

use std::path::PathBuf;
use std::time::Duration;

/// Where to connect and as whom.
#[derive(Debug, Clone)]
pub struct Options {
    /// The master's worker port, HOST:PORT.
    pub master: String,
    pub name: String,
    pub password: String,
    pub basedir: PathBuf,
    /// Longest wait between reconnection attempts.
    pub max_delay: Duration,
}

/// Connects, runs commands, reconnects with back-off when the connection
/// drops; returns when the master sends `shutdown`.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.basedir)?;
    let basedir = std::fs::canonicalize(&opts.basedir)?;
    let mut delay = Duration::from_secs(1);
    loop {
        match session::run(&opts.master, &opts.name, &opts.password, &basedir).await {
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
        delay = delay.mul_f64(1.5).min(opts.max_delay);
    }
}
