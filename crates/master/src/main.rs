//! `cascade`: the master and its command-line tools. Each subcommand is
//! one function; the work is in the library.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cascade_master::{client, clock};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cascade", version, about = "Cascade, a Buildbot-style CI master")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the master.
    Serve(ServeArgs),
    /// A self-contained demo on SQLite: a git repository, a worker, and commits that make builds.
    Demo(DemoArgs),
    /// Check a config file; print every error with file, line, column and key.
    CheckConfig { config: PathBuf },
    /// Inject a change by hand, as Buildbot's sendchange.
    Sendchange(Box<SendchangeArgs>),
    /// Print an argon2 hash of a password read from standard input.
    HashPassword,
    /// Each builder's latest finished build (exit status 1 if one of them failed).
    Status(StatusArgs),
    /// Force builds through a force scheduler (needs a token).
    Force(ForceArgs),
    /// Stop a running build (needs a token).
    Stop(StopArgs),
    /// Reload a running master's configuration, as SIGHUP does (needs a token).
    Reconfig(ReconfigArgs),
    /// API tokens for scripts (`Authorization: Bearer <token>`).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Copy a Buildbot 4 database's history into the store (run it with the master stopped; run it
    /// again to go on after an interruption). Exit status 1 when the final counts differ.
    ImportBuildbot(ImportArgs),
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The Buildbot database: its `db_url` (`sqlite:///state.sqlite`, `postgresql://...`) or a SQLite file.
    #[arg(long = "from", value_name = "URL")]
    from: String,
    /// The config whose `master.database` receives the history.
    #[arg(long, short, required_unless_present = "database")]
    config: Option<PathBuf>,
    /// The store to write to, instead of the config's.
    #[arg(long, env = "CASCADE_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// Stop after this many batches, as an interruption would (for tests).
    #[arg(long, hide = true)]
    stop_after_batches: Option<u64>,
}

/// The config, and the database if not the configured one.
#[derive(clap::Args)]
struct Local {
    #[arg(long, short)]
    config: PathBuf,
    /// Overrides `master.database` from the config.
    #[arg(long, env = "CASCADE_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    local: Local,
}

#[derive(clap::Args)]
struct DemoArgs {
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
    #[arg(long, default_value_t = 16)]
    commits: usize,
    /// Seconds between commits.
    #[arg(long, default_value_t = 15)]
    interval: u64,
}

#[derive(clap::Args)]
struct SendchangeArgs {
    #[command(flatten)]
    local: Local,
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

impl Remote {
    fn client(self) -> client::Client {
        client::Client::new(&self.url, self.token)
    }
}

#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    remote: Remote,
    /// Only builders of this branch: its label (`3.x`) or git name (`main`).
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
}

#[derive(clap::Args)]
struct ForceArgs {
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
}

#[derive(clap::Args)]
struct StopArgs {
    #[command(flatten)]
    remote: Remote,
    #[arg(long, short = 'm', default_value = "stopped from the command line")]
    reason: String,
    build_id: i64,
}

#[derive(clap::Args)]
struct ReconfigArgs {
    #[command(flatten)]
    remote: Remote,
    /// Which master: its id in `/api/v2/masters`, or `this` (the one at `--url`).
    #[arg(long, default_value = "this")]
    master: String,
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token for a configured user; it is printed once, never stored.
    Create {
        #[command(flatten)]
        local: Local,
        /// A `[[user]]` of the config (or one of `auth.admins`).
        #[arg(long)]
        user: String,
        /// What the token is for, shown by `list`.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List tokens (never their values).
    List {
        #[command(flatten)]
        local: Local,
    },
    /// Revoke a token by its id.
    Revoke {
        #[command(flatten)]
        local: Local,
        id: i64,
    },
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Demo(args) => demo(args).await,
        Command::CheckConfig { config } => check_config(&config),
        Command::Sendchange(args) => sendchange(*args).await,
        Command::HashPassword => hash_password(),
        Command::Status(args) => status(args).await,
        Command::Force(args) => force(args).await,
        Command::Stop(args) => stop(args).await,
        Command::Reconfig(args) => reconfig(args).await,
        Command::Token { action } => token(action).await,
        Command::ImportBuildbot(args) => import_buildbot(args).await,
    };
    result.unwrap_or_else(|e| {
        eprintln!("cascade: {e:#}");
        ExitCode::FAILURE
    })
}

fn load_config(path: &Path) -> anyhow::Result<cascade_config::Config> {
    cascade_config::load(path).map_err(|e| anyhow::anyhow!("{} error(s) in the configuration:\n{e}", e.0.len()))
}

/// The config and its store, for the tools that write to the store directly.
async fn open(local: &Local) -> anyhow::Result<(cascade_config::Config, cascade_store::Store)> {
    let config = load_config(&local.config)?;
    let url = local.database.clone().unwrap_or_else(|| config.master.database.clone());
    let store = cascade_store::Store::connect(&url).await.with_context(|| "opening the store")?;
    Ok((config, store))
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    cascade_master::logging::init();
    let config = load_config(&args.local.config)?;
    cascade_master::server::run(config, args.local.database).await?;
    Ok(ExitCode::SUCCESS)
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    cascade_master::logging::init();
    let interval = std::time::Duration::from_secs(args.interval);
    let (dir, http, worker_port, commits) = (args.dir, args.http, args.worker_port, args.commits);
    cascade_master::demo::run(cascade_master::demo::DemoOptions { dir, http, worker_port, commits, interval }).await?;
    Ok(ExitCode::SUCCESS)
}

fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = match cascade_config::load(path) {
        Ok(cfg) => cfg,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    // Secrets belong to the machine that runs the master; a missing one
    // here is worth a warning, not a failure.
    if let Err(missing) = cfg.resolve_secrets() {
        for e in &missing.0 {
            eprintln!("warning: {e}");
        }
    }
    let (builders, workers, schedulers) = (cfg.builders.len(), cfg.workers.len(), cfg.schedulers.len());
    println!("{}: ok ({builders} builders, {workers} workers, {schedulers} schedulers)", path.display());
    Ok(ExitCode::SUCCESS)
}

async fn sendchange(args: SendchangeArgs) -> anyhow::Result<ExitCode> {
    let (cfg, store) = open(&args.local).await?;
    let change = cascade_master::sendchange::SendChange {
        who: args.who,
        branch: args.branch,
        revision: args.revision,
        comments: args.comments,
        files: args.files,
        repository: args.repository,
        project: args.project,
        category: args.category,
        revlink: args.revlink,
        when: args.when,
        properties: args.properties.into_iter().collect(),
    };
    let id = cascade_master::sendchange::send(&store, &cfg, change, clock::now()).await?;
    store.close().await;
    println!("change {id} stored");
    Ok(ExitCode::SUCCESS)
}

fn hash_password() -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("password (then Enter; it is echoed):");
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "empty password");
    println!("{}", cascade_master::password::hash(password)?);
    Ok(ExitCode::SUCCESS)
}

/// Exit status 0: all selected builders pass; 1: one fails; 2: bad usage
/// or an unknown branch; 3: the master unreachable or answering an error.
async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let api = args.remote.client();
    let asked = tokio::time::timeout(client::TIMEOUT, client::status(&api, args.branch.as_deref(), &args.tags)).await;
    let mut rows = match asked {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            eprintln!("cascade: {e:#}");
            return Ok(ExitCode::from(client::exit_status_of(&e)));
        }
        Err(_) => {
            eprintln!("cascade: the master did not answer in time");
            return Ok(ExitCode::from(3));
        }
    };
    let selected = rows.len();
    let any_failing = rows.iter().any(client::StatusRow::failing);
    if args.failing {
        rows.retain(client::StatusRow::failing);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if args.failing && rows.is_empty() {
        print!("{}", client::all_passing(selected));
    } else {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", client::render(&rows, clock::now(), color));
    }
    Ok(if any_failing { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn force(args: ForceArgs) -> anyhow::Result<ExitCode> {
    let api = args.remote.client();
    let (branch, revision) = (args.branch.as_deref(), args.revision.as_deref());
    let result = client::force(&api, &args.scheduler, &args.builders, branch, revision, &args.reason).await?;
    println!("forced: buildset {} requests {}", result[0], result[1]);
    Ok(ExitCode::SUCCESS)
}

async fn stop(args: StopArgs) -> anyhow::Result<ExitCode> {
    let api = args.remote.client();
    client::stop(&api, args.build_id, &args.reason).await?;
    println!("build {} is stopping", args.build_id);
    Ok(ExitCode::SUCCESS)
}

async fn reconfig(args: ReconfigArgs) -> anyhow::Result<ExitCode> {
    let api = args.remote.client();
    let changed = client::reconfig(&api, &args.master).await?;
    print!("{}", client::reloaded_text(&changed));
    Ok(ExitCode::SUCCESS)
}

async fn token(action: TokenAction) -> anyhow::Result<ExitCode> {
    let (TokenAction::Create { local, .. } | TokenAction::List { local } | TokenAction::Revoke { local, .. }) = &action;
    let (cfg, store) = open(local).await?;
    let now = clock::now();
    match action {
        TokenAction::Create { user, label, local } => {
            let known = cfg.users.iter().any(|u| u.name == user) || cfg.auth.admins.contains(&user);
            anyhow::ensure!(known, "{user} is neither a [[user]] nor in auth.admins of {}", local.config.display());
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

async fn import_buildbot(args: ImportArgs) -> anyhow::Result<ExitCode> {
    use cascade_store::import;
    let url = match (args.database, &args.config) {
        (Some(url), _) => url,
        (None, Some(config)) => load_config(config)?.master.database,
        (None, None) => anyhow::bail!("give --config or --database"),
    };
    let store = cascade_store::Store::connect(&url).await.with_context(|| "opening the store")?;
    let options = import::ImportOptions { stop_after_batches: args.stop_after_batches };
    let terminal = std::io::stderr().is_terminal();
    let mut progress = import::Printer::new(std::io::stderr(), terminal);
    let summary = import::import_buildbot(&store, &args.from, &options, &mut progress).await?;
    store.close().await;
    print!("{}", summary.render());
    Ok(if summary.matches() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
