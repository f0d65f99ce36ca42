//! `cascade`: the master and its command-line tools.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cascade", version, about = "Cascade, a Buildbot-style CI master")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
enum Command {
    /// Run the master.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
        /// Overrides `master.database` from the config.
        #[arg(long, env = "CASCADE_DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
    },
    /// A self-contained demo on SQLite: a git repository, a worker, and commits that make builds.
    Demo {
        /// Where the demo keeps its repository, database, config and worker folder.
        #[arg(long, default_value = "cascade-demo")]
        dir: PathBuf,
        /// Address for the web pages and API.
        #[arg(long, default_value = "127.0.0.1:8010")]
        http: String,
        /// Port for the demo's worker connection (loopback only).
        #[arg(long, default_value_t = 9990)]
        worker_port: u16,
        /// How many commits to make.
        #[arg(long, default_value_t = 8)]
        commits: usize,
        /// Seconds between commits.
        #[arg(long, default_value_t = 8)]
        interval: u64,
    },
    /// Check a config file; print every error with file, line, column and key.
    CheckConfig { config: PathBuf },
    /// Inject a change by hand, as Buildbot's sendchange.
    Sendchange {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, env = "CASCADE_DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
        /// Author, e.g. "Ann <ann@example.org>".
        #[arg(long, short = 'W')]
        who: String,
        /// Git branch name or configured branch label.
        #[arg(long, short)]
        branch: Option<String>,
        #[arg(long, short)]
        revision: Option<String>,
        #[arg(long, short = 'm', default_value = "")]
        comments: String,
        #[arg(long)]
        repository: Option<String>,
        #[arg(long)]
        project: Option<String>,
        #[arg(long, short = 'C')]
        category: Option<String>,
        #[arg(long)]
        revlink: Option<String>,
        /// Commit time, Unix seconds (default: now).
        #[arg(long)]
        when: Option<i64>,
        /// A property NAME=VALUE (repeatable).
        #[arg(long = "property", short = 'p', value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Files the change touches.
        files: Vec<String>,
    },
    /// Print an argon2 hash of a password read from standard input.
    HashPassword,
    /// Each builder's latest finished build (exit status 1 if one of them failed).
    Status {
        #[command(flatten)]
        remote: Remote,
        /// Only builders of this branch label (e.g. `3.x`).
        #[arg(long, short)]
        branch: Option<String>,
        /// Only builders with this tag (repeatable: all of them).
        #[arg(long = "tag", short)]
        tags: Vec<String>,
        /// Only builders whose latest build failed.
        #[arg(long)]
        failing: bool,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Force builds through a force scheduler (needs a token).
    Force {
        #[command(flatten)]
        remote: Remote,
        /// The force scheduler.
        #[arg(long, default_value = "force")]
        scheduler: String,
        #[arg(long, short)]
        branch: Option<String>,
        #[arg(long, short)]
        revision: Option<String>,
        #[arg(long, short = 'm', default_value = "forced from the command line")]
        reason: String,
        /// Builder names (default: every builder of the scheduler).
        builders: Vec<String>,
    },
    /// Stop a running build (needs a token).
    Stop {
        #[command(flatten)]
        remote: Remote,
        #[arg(long, short = 'm', default_value = "stopped from the command line")]
        reason: String,
        build_id: i64,
    },
    /// API tokens for scripts (`Authorization: Bearer <token>`).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

/// Where the master is, and the token to show it.
#[derive(clap::Args)]
struct Remote {
    /// The master's base URL.
    #[arg(long, env = "CASCADE_URL", default_value = "http://127.0.0.1:8010")]
    url: String,
    /// An API token (`cascade token create`).
    #[arg(long, env = "CASCADE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token for a configured user; it is printed once, never stored.
    Create {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, env = "CASCADE_DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
        /// A `[[user]]` of the config (or one of `auth.admins`).
        #[arg(long)]
        user: String,
        /// What the token is for, shown by `list`.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List tokens (never their values).
    List {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, env = "CASCADE_DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
    },
    /// Revoke a token by its id.
    Revoke {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, env = "CASCADE_DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
        id: i64,
    },
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn,tower_http=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn load_config(path: &Path) -> anyhow::Result<cascade_config::Config> {
    cascade_config::load(path).map_err(|e| anyhow::anyhow!("{} error(s) in the configuration:\n{e}", e.0.len()))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cascade: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    use cascade_master::client;
    match command {
        Command::Status { remote, branch, tags, failing, json } => {
            let api = client::Client::new(&remote.url, remote.token);
            let mut rows = tokio::time::timeout(client::TIMEOUT, client::status(&api, branch.as_deref(), &tags))
                .await
                .context("the master did not answer in time")??;
            let any_failing = rows.iter().any(client::StatusRow::failing);
            if failing {
                rows.retain(client::StatusRow::failing);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
                print!("{}", client::render(&rows, cascade_master::clock::now(), color));
            }
            Ok(if any_failing { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Force { remote, scheduler, branch, revision, reason, builders } => {
            let api = client::Client::new(&remote.url, remote.token);
            let result =
                client::force(&api, &scheduler, &builders, branch.as_deref(), revision.as_deref(), &reason).await?;
            println!("forced: buildset {} requests {}", result[0], result[1]);
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop { remote, reason, build_id } => {
            let api = client::Client::new(&remote.url, remote.token);
            client::stop(&api, build_id, &reason).await?;
            println!("build {build_id} is stopping");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config, database } => {
            init_tracing();
            let config = load_config(&config)?;
            cascade_master::serve(config, database).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir, http, worker_port, commits, interval } => {
            init_tracing();
            cascade_master::demo::run(cascade_master::demo::DemoOptions {
                dir,
                http,
                worker_port,
                commits,
                interval: std::time::Duration::from_secs(interval),
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => match cascade_config::load(&config) {
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("{e}");
                }
                eprintln!("{}: {} error(s)", config.display(), errors.0.len());
                Ok(ExitCode::FAILURE)
            }
            Ok(cfg) => {
                // Secrets belong to the machine that runs the master; a
                // missing one here is worth a warning, not a failure.
                if let Err(missing) = cfg.resolve_secrets() {
                    for e in &missing.0 {
                        eprintln!("warning: {e}");
                    }
                }
                println!(
                    "{}: ok ({} builders, {} workers, {} schedulers)",
                    config.display(),
                    cfg.builders.len(),
                    cfg.workers.len(),
                    cfg.schedulers.len()
                );
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Sendchange {
            config,
            database,
            who,
            branch,
            revision,
            comments,
            repository,
            project,
            category,
            revlink,
            when,
            properties,
            files,
        } => {
            let cfg = load_config(&config)?;
            let url = database.unwrap_or_else(|| cfg.master.database.clone());
            let store = cascade_store::Store::connect(&url).await.with_context(|| "opening the store")?;
            let change = cascade_master::sendchange::SendChange {
                who,
                branch,
                revision,
                comments,
                files,
                repository,
                project,
                category,
                revlink,
                when,
                properties: properties.into_iter().collect(),
            };
            let id = cascade_master::sendchange::send(&store, &cfg, change, cascade_master::clock::now()).await?;
            store.close().await;
            println!("change {id} stored");
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { action } => {
            let (config, database) = match &action {
                TokenAction::Create { config, database, .. }
                | TokenAction::List { config, database }
                | TokenAction::Revoke { config, database, .. } => (config.clone(), database.clone()),
            };
            let cfg = load_config(&config)?;
            let url = database.unwrap_or_else(|| cfg.master.database.clone());
            let store = cascade_store::Store::connect(&url).await.with_context(|| "opening the store")?;
            let now = cascade_master::clock::now();
            match action {
                TokenAction::Create { user, label, .. } => {
                    let known = cfg.users.iter().any(|u| u.name == user) || cfg.auth.admins.contains(&user);
                    anyhow::ensure!(known, "{user} is neither a [[user]] nor in auth.admins of {}", config.display());
                    let (token, hash) = cascade_master::auth::new_token();
                    let id = store.create_api_token(&user, &label, &hash, now).await?;
                    eprintln!("token {id} for {user}; it is shown only now:");
                    println!("{token}");
                }
                TokenAction::List { .. } => {
                    for t in store.list_api_tokens().await? {
                        let state = if t.revoked { "revoked" } else { "active" };
                        println!("{}\t{}\t{}\t{}\t{}", t.id, t.user, state, t.created_at, t.label);
                    }
                }
                TokenAction::Revoke { id, .. } => {
                    anyhow::ensure!(store.revoke_api_token(id, now).await?, "no active token {id}");
                    println!("token {id} revoked");
                }
            }
            store.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::HashPassword => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("password (then Enter; it is echoed):");
            }
            let mut line = String::new();
            stdin.lock().read_line(&mut line)?;
            let password = line.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                anyhow::bail!("empty password");
            }
            println!("{}", cascade_master::password::hash(password)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
