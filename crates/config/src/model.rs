//! The typed configuration, after parsing and cross-checking.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cascade_model::Glob;

use crate::error::{ConfigError, ConfigErrors};
use crate::secret::{Secret, SecretString};

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub master: MasterConfig,
    pub github: GithubConfig,
    pub branches: Vec<BranchConfig>,
    pub workers: Vec<WorkerConfig>,
    pub factories: Vec<FactoryConfig>,
    /// Builders after expansion: one per (definition, branch).
    pub builders: Vec<BuilderConfig>,
    pub schedulers: Vec<SchedulerConfig>,
    pub users: Vec<UserConfig>,
    pub auth: AuthConfig,
    pub janitor: JanitorConfig,
    pub limits: LimitsConfig,
    pub reporters: Vec<ReporterConfig>,
    /// Who may log in on the PB port with `buildbot sendchange`.
    pub sendchange: SendchangeConfig,
    /// Buildbot's web UI beside Cascade's pages.
    pub www: WwwConfig,
}

/// What the rules of `[auth]` may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Stop a running build.
    Stop,
    /// Force builds through a force scheduler.
    Force,
    /// Rebuild a finished build.
    Rebuild,
    /// Cancel a pending build request.
    Cancel,
    /// Pause, unpause, stop or kill a worker.
    Pause,
    /// Enable or disable a scheduler.
    Scheduler,
    /// Reload a master's configuration.
    Reconfig,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 7] = [
        Action::Stop,
        Action::Force,
        Action::Rebuild,
        Action::Cancel,
        Action::Pause,
        Action::Scheduler,
        Action::Reconfig,
    ];

    /// The name used in the config's `[auth] rules` and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Force => "force",
            Action::Rebuild => "rebuild",
            Action::Cancel => "cancel",
            Action::Pause => "pause",
            Action::Scheduler => "scheduler",
            Action::Reconfig => "reconfig",
        }
    }

    /// The action called `name`.
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `[www]`: Buildbot's own web UI served beside Cascade's pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WwwConfig {
    /// Serve Buildbot's UI (an installed `buildbot-www`) under `/buildbot/`.
    pub buildbot_ui: bool,
    /// The installed bundle's folder (`.../site-packages/buildbot_www/static`,
    /// the one holding `index.html`); its plugins are found beside it.
    pub buildbot_www: Option<PathBuf>,
}

/// Bounds on what clients and workers can hold of the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Open connections per listening port; past it, new ones are refused.
    pub connections: usize,
    /// Open connections from one address per port.
    pub connections_per_address: usize,
    /// How long a client has to send a request's headers; also how long an
    /// idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// How long a request's body and its answer may take (streamed answers,
    /// such as live events and raw logs, go on once they have begun).
    pub request_timeout: Duration,
    /// How long a request waits for the store before it is answered 503.
    pub store_timeout: Duration,
    /// Password checks (argon2, about 19 MiB each) running at once.
    pub password_checks: usize,
    /// Failed worker logins allowed per address within `worker_login_window`.
    pub worker_login_attempts: u32,
    /// Failed logins allowed per worker name within `worker_login_window`.
    pub worker_login_attempts_per_name: u32,
    /// The window of the two above.
    pub worker_login_window: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        LimitsConfig {
            connections: 2048,
            connections_per_address: 256,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            store_timeout: Duration::from_secs(5),
            password_checks: cores.min(4),
            worker_login_attempts: 10,
            worker_login_attempts_per_name: 30,
            worker_login_window: Duration::from_secs(600),
        }
    }
}

/// Housekeeping: how often it runs and how long what it prunes is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JanitorConfig {
    /// How often expired sessions, old delivery ids and old events go.
    pub every: Duration,
    /// Webhook delivery ids are kept this long (GitHub redelivers for 3
    /// days, GitHub Enterprise for 7), so a redelivery is recognised.
    pub delivery_horizon: Duration,
    /// Recorded events are kept this long for consumers that were away.
    pub event_horizon: Duration,
    /// Logs' contents of builds finished longer ago go (`None`: kept).
    pub log_horizon: Option<Duration>,
    /// Artifact folders of builds finished longer ago go.
    pub artifact_horizon: Option<Duration>,
    /// Steps, logs and test results of builds finished longer ago go; the
    /// build rows stay.
    pub build_horizon: Option<Duration>,
}

impl Default for JanitorConfig {
    fn default() -> Self {
        JanitorConfig {
            every: Duration::from_secs(3600),
            delivery_horizon: Duration::from_secs(7 * 24 * 3600),
            event_horizon: Duration::from_secs(30 * 24 * 3600),
            log_horizon: None,
            artifact_horizon: None,
            build_horizon: None,
        }
    }
}

/// A local user: logs in with a password (pages) or API tokens (scripts).
#[derive(Debug, Clone)]
pub struct UserConfig {
    pub name: String,
    /// argon2 PHC string from `cascade hash-password`; none: tokens only.
    pub password_hash: Option<String>,
    pub roles: Vec<String>,
}

/// Who may do what. `admins` may do everything; each action names the
/// roles allowed to do it.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub admins: Vec<String>,
    /// Action → the roles allowed to do it.
    pub rules: BTreeMap<Action, Vec<String>>,
    /// Everything, reading included, needs a login (or a token).
    pub private: bool,
    /// `/metrics` needs a login or a token (by default, as `private`).
    pub private_metrics: bool,
    /// How long a page login lasts.
    pub session_lifetime: Duration,
    /// Failed logins allowed per address within `login_window`.
    pub login_attempts: u32,
    pub login_window: Duration,
    pub github: Option<GithubLoginConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            admins: Vec::new(),
            rules: BTreeMap::new(),
            private: false,
            private_metrics: false,
            session_lifetime: Duration::from_secs(7 * 24 * 3600),
            login_attempts: 5,
            login_window: Duration::from_secs(15 * 60),
            github: None,
        }
    }
}

/// Logging in with GitHub (OAuth): team membership gives roles.
#[derive(Debug, Clone)]
pub struct GithubLoginConfig {
    pub client_id: String,
    pub client_secret: Secret,
    /// `org/team-slug` → roles, e.g. `"python/python-core" = ["core-dev"]`.
    pub teams: BTreeMap<String, Vec<String>>,
    /// GitHub user names who may do everything.
    pub admins: Vec<String>,
    pub authorize_url: String,
    pub token_url: String,
    pub api_url: String,
}

impl AuthConfig {
    /// Whether a user with these roles may do `action`.
    pub fn allows(&self, user: &str, roles: &[String], action: Action) -> bool {
        self.admins.iter().any(|a| a == user)
            || roles.iter().any(|r| r == "admin")
            || self.rules.get(&action).is_some_and(|allowed| allowed.iter().any(|a| roles.contains(a)))
    }
}

#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub title: String,
    /// Public base URL, used in links (ends with `/`).
    pub url: String,
    /// This master's name in the `masters` table; defaults to the host name.
    pub name: Option<String>,
    pub http: String,
    pub pb: String,
    pub msgpack: String,
    pub database: String,
    /// Where uploaded artifacts go: `<artifacts>/<builder>/<build number>/...`.
    pub artifacts: std::path::PathBuf,
    /// How often workers are pinged.
    pub worker_ping: Duration,
    /// A worker silent this long is taken for dead (its builds RETRY).
    pub worker_timeout: Duration,
    /// How often this master proves to the others that it is alive.
    pub heartbeat: Duration,
    /// A master whose heartbeat is older than this is declared dead by
    /// the others, which take its running builds over.
    pub master_expiry: Duration,
    /// On SIGTERM, how long running builds may go on before they are
    /// stopped and retried; zero stops them at once.
    pub stop_grace: Duration,
    /// Proxies whose `X-Forwarded-For` is believed: addresses or CIDR
    /// ranges (`127.0.0.1`, `10.0.0.0/8`, `::1`).
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct GithubConfig {
    /// `owner/name`; pushes for other repositories are ignored.
    pub repository: Option<String>,
    pub webhook_secret: Option<Secret>,
    pub insecure_webhook: bool,
    /// Accept the legacy `X-Hub-Signature` (HMAC-SHA1) header.
    pub allow_sha1_signature: bool,
    /// Turn pushed tags into changes (branch = the tag name).
    pub build_tags: bool,
    /// The GitHub API token (statuses, comments).
    pub token: Option<Secret>,
    /// GitHub's REST API, or GitHub Enterprise's, or a stand-in in tests.
    pub api_url: String,
    /// How often the branches' heads are asked of GitHub's API, to build
    /// pushes whose delivery never came; zero turns the poller off.
    pub poll_interval: Duration,
}

/// A notification target: `[[reporter]]`.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// Unique; defaults to `<kind>-<position>`.
    pub name: String,
    pub kind: ReporterKind,
    /// The events it is told about.
    pub events: Vec<cascade_model::transition::NotifyEvent>,
    /// Which builders: any of these tags (none: all).
    pub tags: Vec<String>,
    /// Which builders: these builder definitions or expanded names (none: all).
    pub builders: Vec<String>,
    /// Which builders: of these branch labels (none: all).
    pub branches: Vec<String>,
    /// A notification not delivered by then is given up, with its reason logged.
    pub give_up_after: Duration,
}

/// What a reporter talks to.
#[derive(Debug, Clone)]
pub enum ReporterKind {
    /// A chat service's incoming webhook, or any URL taking JSON.
    Webhook { url: Secret, format: ChatFormat },
    /// GitHub commit statuses; `context` may hold `{builder}`.
    GithubStatus { context: String },
    /// A comment on the merged pull request whose commit broke a stable builder.
    GithubComment { guide: Option<String> },
    /// Lines in IRC channels.
    Irc(IrcReporter),
    /// Mail over SMTP.
    Mail(MailReporter),
}

/// A mail reporter's server and addresses.
#[derive(Debug, Clone)]
pub struct MailReporter {
    /// `host:port`.
    pub smtp: String,
    pub starttls: bool,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
    /// How long a worker must be gone before `worker_missing` is sent.
    pub worker_grace: Duration,
    /// Certificates that verify the server instead of the web's roots.
    pub ca_file: Option<PathBuf>,
}

/// An IRC reporter's connection.
#[derive(Debug, Clone)]
pub struct IrcReporter {
    /// `host:port`.
    pub server: String,
    pub tls: bool,
    pub nick: String,
    /// SASL PLAIN's password, when set.
    pub password: Option<Secret>,
    pub channels: Vec<String>,
    /// mIRC colours by event.
    pub colours: bool,
    /// Certificates that verify the server instead of the web's roots.
    pub ca_file: Option<PathBuf>,
}

impl ReporterKind {
    /// The config's spelling.
    pub fn name(&self) -> &'static str {
        match self {
            ReporterKind::Webhook { .. } => "webhook",
            ReporterKind::GithubStatus { .. } => "github_status",
            ReporterKind::GithubComment { .. } => "github_comment",
            ReporterKind::Irc(_) => "irc",
            ReporterKind::Mail(_) => "mail",
        }
    }
}

/// The body a webhook reporter posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFormat {
    /// `{"text": ...}` with Slack's mrkdwn links.
    Slack,
    /// `{"content": ...}` with Markdown links.
    Discord,
    /// Zulip's incoming webhook: `{"text": ...}` with Markdown.
    Zulip,
    /// Cascade's own: the facts as fields (documented in docs/config.md).
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchConfig {
    /// The label used in builder names and schedulers (`3.x`).
    pub name: String,
    /// The git branch it builds (`main`).
    pub git: String,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub name: String,
    pub password: WorkerPassword,
    pub max_builds: u32,
    pub properties: BTreeMap<String, String>,
    /// Its owner's address, for `worker_missing` mail.
    pub notify: Option<String>,
}

/// A login on the PB port for one of Buildbot's command-line tools
/// (`buildbot sendchange`, `buildbot try`). PB's MD5 challenge needs the
/// password itself, so there is no hashed form.
#[derive(Debug, Clone)]
pub struct ToolUser {
    pub name: String,
    pub password: Secret,
}

/// `[sendchange]`: Buildbot's `PBChangeSource` on the PB port.
#[derive(Debug, Clone, Default)]
pub struct SendchangeConfig {
    pub users: Vec<ToolUser>,
}

#[derive(Debug, Clone)]
pub enum WorkerPassword {
    Plain(Secret),
    /// A PHC string from `cascade hash-password` (argon2).
    Hash(String),
}

#[derive(Debug, Clone)]
pub struct FactoryConfig {
    pub name: String,
    pub steps: Vec<StepConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepConfig {
    pub name: String,
    pub kind: StepKind,
    pub halt_on_failure: bool,
    pub flunk_on_failure: bool,
    pub warn_on_failure: bool,
    pub always_run: bool,
    /// Kill the step after this long without output.
    pub timeout: Option<Duration>,
    /// Kill the step after this long in all.
    pub max_time: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Git(GitStep),
    Shell(ShellStep),
    Upload(UploadStep),
    Download(DownloadStep),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadStep {
    /// A file on the master (relative paths: from the config file's folder).
    pub src: std::path::PathBuf,
    /// Where it goes on the worker, relative to the build folder.
    pub dest: String,
    /// Unix permissions for the new file, e.g. 0o755 written as 493.
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitStep {
    /// Defaults to `https://github.com/<github.repository>.git`.
    pub repo: Option<String>,
    pub mode: GitMode,
    pub method: GitMethod,
    pub submodules: bool,
    /// A shallow clone of this many commits.
    pub depth: Option<u32>,
    /// A partial clone's filter (`blob:none`, `tree:0`, `blob:limit=1m`).
    pub filter: Option<String>,
    /// When the checkout fails, remove the folder and check out once more
    /// from scratch (a corrupt repository left by a killed build).
    pub clobber_on_failure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitMode {
    Full,
    Incremental,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitMethod {
    Fresh,
    Clobber,
    Copy,
    Clean,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellStep {
    pub command: Command,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    /// Exit code -> result name (`success`, `warnings`, `failure`, ...).
    pub decode_rc: BTreeMap<i64, cascade_model::Results>,
    pub warning_pattern: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run through the worker's shell.
    Shell(String),
    /// Run directly, no shell.
    Argv(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStep {
    /// Path on the worker, relative to the build folder.
    pub src: String,
    /// Name under the build's artifact folder on the master.
    pub dest: String,
    /// `src` is a folder: it travels as a tar stream and is unpacked at `dest`.
    pub directory: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderConfig {
    /// Expanded name: `"<definition> <branch>"`, or the definition's name
    /// when it lists no branches.
    pub name: String,
    pub definition: String,
    /// The branch label this builder builds.
    pub branch: Option<String>,
    pub workers: Vec<String>,
    pub factory: String,
    pub tags: Vec<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub name: String,
    pub kind: SchedulerKind,
    /// Restricts the builders this scheduler feeds (definition or expanded
    /// names). `None`: every builder of its branch (or, for `force`, all).
    pub builders: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub enum SchedulerKind {
    Branch {
        branch: String,
        tree_stable: Duration,
        ignore_files: Vec<Glob>,
    },
    Periodic {
        branch: String,
        cron: String,
    },
    Force,
    /// Pull requests, built on the builders of `branch` when a trigger label
    /// is added or a writer comments.
    PullRequest(PullRequestTriggers),
    /// `buildbot try` jobs (a diff on top of a revision) from these users,
    /// as Buildbot's `Try_Userpass`.
    Try {
        users: Vec<ToolUser>,
    },
}

/// What makes a pull request build, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestTriggers {
    /// The branch label whose builders build pull requests (CPython: `PR`).
    pub branch: String,
    /// Label name → builder-name regex: adding the label builds the PR on
    /// the matching builders that carry `label_tag`.
    pub labels: Vec<(String, String)>,
    /// Label-triggered builds use only builders with this tag (`stable`).
    pub label_tag: Option<String>,
    /// A regex over a comment's body whose first group is a builder-name
    /// regex (`^!buildbot (.+)`); only writers may use it.
    pub comment: Option<String>,
    /// New commits on the PR also stop its running builds, not only its
    /// pending requests.
    pub cancel_running: bool,
}

impl SchedulerKind {
    pub fn name(&self) -> &'static str {
        match self {
            SchedulerKind::Branch { .. } => "branch",
            SchedulerKind::Periodic { .. } => "periodic",
            SchedulerKind::Force => "force",
            SchedulerKind::PullRequest(_) => "pull_request",
            SchedulerKind::Try { .. } => "try",
        }
    }

    pub fn branch(&self) -> Option<&str> {
        match self {
            SchedulerKind::Branch { branch, .. } | SchedulerKind::Periodic { branch, .. } => Some(branch),
            SchedulerKind::PullRequest(t) => Some(&t.branch),
            SchedulerKind::Force | SchedulerKind::Try { .. } => None,
        }
    }
}

/// Secrets read from their sources, ready for use.
#[derive(Debug, Clone, Default)]
pub struct ResolvedSecrets {
    pub webhook_secret: Option<SecretString>,
    /// The GitHub OAuth application's secret, when GitHub login is on.
    pub github_client_secret: Option<SecretString>,
    /// Plain worker passwords by worker name (hashed ones stay in the config).
    pub worker_passwords: BTreeMap<String, SecretString>,
    /// The GitHub API token.
    pub github_token: Option<SecretString>,
    /// Webhook reporters' URLs by reporter name.
    pub reporter_urls: BTreeMap<String, SecretString>,
    /// IRC reporters' SASL passwords by reporter name.
    pub reporter_passwords: BTreeMap<String, SecretString>,
    /// `sendchange` and `try` users' passwords by user name.
    pub tool_passwords: BTreeMap<String, SecretString>,
}

impl Config {
    pub fn branch(&self, label: &str) -> Option<&BranchConfig> {
        self.branches.iter().find(|b| b.name == label)
    }

    /// The branch labels whose builders build pull requests (a
    /// `pull_request` scheduler's `branch`): no git branch of that name is built.
    pub fn pull_request_labels(&self) -> Vec<&str> {
        self.schedulers
            .iter()
            .filter_map(|s| match &s.kind {
                SchedulerKind::PullRequest(t) => Some(t.branch.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The git branches pushes are built for: every branch's but the PR labels'.
    pub fn pushed_branches(&self) -> Vec<&str> {
        let pulls = self.pull_request_labels();
        let mut git: Vec<&str> =
            self.branches.iter().filter(|b| !pulls.contains(&b.name.as_str())).map(|b| b.git.as_str()).collect();
        git.sort_unstable();
        git.dedup();
        git
    }

    /// The label of the branch configured for a git branch name.
    pub fn branch_for_git(&self, git: &str) -> Option<&BranchConfig> {
        self.branches.iter().find(|b| b.git == git)
    }

    /// Builders a scheduler feeds, in config order.
    pub fn scheduler_builders(&self, scheduler: &SchedulerConfig) -> Vec<&BuilderConfig> {
        let branch = scheduler.kind.branch();
        self.builders
            .iter()
            .filter(|b| branch.is_none() || b.branch.as_deref() == branch)
            .filter(|b| match &scheduler.builders {
                None => true,
                Some(names) => names.iter().any(|n| *n == b.name || *n == b.definition),
            })
            .collect()
    }

    /// Reads every secret; all failures are reported together.
    pub fn resolve_secrets(&self) -> Result<ResolvedSecrets, ConfigErrors> {
        let mut errors: Vec<ConfigError> = Vec::new();
        let mut out = ResolvedSecrets::default();
        if let Some(secret) = &self.github.webhook_secret {
            match secret.resolve() {
                Ok(v) => out.webhook_secret = Some(v),
                Err(e) => errors.push(e),
            }
        }
        if let Some(gh) = &self.auth.github {
            match gh.client_secret.resolve() {
                Ok(v) => out.github_client_secret = Some(v),
                Err(e) => errors.push(e),
            }
        }
        if let Some(token) = &self.github.token {
            match token.resolve() {
                Ok(v) => out.github_token = Some(v),
                Err(e) => errors.push(e),
            }
        }
        for r in &self.reporters {
            let (secret, into) = match &r.kind {
                ReporterKind::Webhook { url, .. } => (url, &mut out.reporter_urls),
                ReporterKind::Irc(IrcReporter { password: Some(p), .. }) => (p, &mut out.reporter_passwords),
                ReporterKind::Mail(MailReporter { password: Some(p), .. }) => (p, &mut out.reporter_passwords),
                _ => continue,
            };
            match secret.resolve() {
                Ok(v) => {
                    into.insert(r.name.clone(), v);
                }
                Err(e) => errors.push(e),
            }
        }
        for w in &self.workers {
            if let WorkerPassword::Plain(secret) = &w.password {
                match secret.resolve() {
                    Ok(v) => {
                        out.worker_passwords.insert(w.name.clone(), v);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        for u in self.tool_users() {
            match u.password.resolve() {
                Ok(v) => {
                    out.tool_passwords.insert(u.name.clone(), v);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() { Ok(out) } else { Err(ConfigErrors(errors)) }
    }

    /// Every login of Buildbot's command-line tools: `[sendchange]`'s and
    /// each `try` scheduler's.
    pub fn tool_users(&self) -> impl Iterator<Item = &ToolUser> {
        let tries = self.schedulers.iter().filter_map(|s| match &s.kind {
            SchedulerKind::Try { users } => Some(users.iter()),
            _ => None,
        });
        self.sendchange.users.iter().chain(tries.flatten())
    }

    /// What a PB login name is for: a worker, `sendchange`, or a `try`
    /// scheduler (by name). Names are unique across all three.
    pub fn pb_role(&self, name: &str) -> Option<PbRole<'_>> {
        if self.workers.iter().any(|w| w.name == name) {
            return Some(PbRole::Worker);
        }
        if self.sendchange.users.iter().any(|u| u.name == name) {
            return Some(PbRole::Sendchange);
        }
        self.schedulers.iter().find_map(|s| match &s.kind {
            SchedulerKind::Try { users } if users.iter().any(|u| u.name == name) => Some(PbRole::Try(&s.name)),
            _ => None,
        })
    }
}

/// What a login on the PB port is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PbRole<'a> {
    Worker,
    /// `buildbot sendchange`.
    Sendchange,
    /// `buildbot try`, through the named scheduler.
    Try(&'a str),
}
