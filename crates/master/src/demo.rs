//! `cascade demo`: a self-contained demonstration on SQLite. It creates a
//! git repository, a configuration that builds it, starts the master and a
//! `cascade-worker` in this process, and makes commits (some of them break
//! the tests, some come in pairs that one build covers, the last breaks the
//! stable builder) so that builds come and go. A demo user, printed at the
//! start, may force, rebuild and stop. Nothing outside `--dir` is touched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::sendchange::{SendChange, send};

pub struct DemoOptions {
    pub dir: PathBuf,
    pub http: String,
    pub worker_port: u16,
    pub commits: usize,
    pub interval: Duration,
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Demo Developer")
        .env("GIT_AUTHOR_EMAIL", "dev@example.org")
        .env("GIT_COMMITTER_NAME", "Demo Developer")
        .env("GIT_COMMITTER_EMAIL", "dev@example.org")
        .output()
        .context("running git (is it installed?)")?;
    anyhow::ensure!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

// Slow enough to watch a step run (its duration and line count tick).
const BUILD_SH: &str = "#!/bin/sh\necho \"compiling $(cat VERSION)\"\nfor f in core io net parser eval; do echo \"  CC $f.o\"; sleep 0.8; done\necho 'linked demo'\n";
const TEST_SH: &str = "#!/bin/sh\nfor t in test_core test_io test_net test_unicode test_parser test_eval test_gc test_os; do\n  echo \"$t ... ok\"; sleep 0.7\ndone\nif [ -f BROKEN ]; then\n  echo 'test_regression ... FAIL' >&2\n  echo \"AssertionError: $(cat BROKEN)\" >&2\n  exit 1\nfi\nif [ $(( $(cat VERSION) % 3 )) -eq 0 ]; then echo 'WARNING: test_flaky was skipped'; fi\necho 'all tests passed'\n";

fn init_repo(repo: &Path) -> anyhow::Result<()> {
    if repo.join(".git").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(repo)?;
    git(repo, &["init", "-q", "-b", "main"])?;
    std::fs::write(repo.join("README"), "A tiny project that Cascade's demo builds.\n")?;
    std::fs::write(repo.join("VERSION"), "1\n")?;
    std::fs::write(repo.join("build.sh"), BUILD_SH)?;
    std::fs::write(repo.join("test.sh"), TEST_SH)?;
    git(repo, &["add", "."])?;
    git(repo, &["commit", "-q", "-m", "Start the demo project"])?;
    Ok(())
}

/// The demo's user, who may do everything (an admin).
pub const DEMO_USER: &str = "demo";

fn config_text(dir: &Path, repo: &Path, http: &str, worker_port: u16, password: &str, user_hash: &str) -> String {
    format!(
        r#"# Written by `cascade demo`; edit it and run `cascade serve --config` on it if you like.
[master]
title = "Cascade demo"
url = "http://{http}/"
http = "{http}"
msgpack = "127.0.0.1:{worker_port}"
# Stock buildbot-worker's default protocol; port 0 picks a free one (the log says which).
pb = "127.0.0.1:0"
database = "sqlite://{db}"
# Ctrl-C lets running builds finish for this long, not the hour a real master gives them.
stop_grace = "10s"

[[user]]
name = "{DEMO_USER}"
password_hash = "{user_hash}"
roles = ["admin"]

[github]
# The demo receives no webhooks; its changes come from `sendchange`.
insecure_webhook = true

[[branch]]
name = "main"

[[worker]]
name = "demo-worker"
password = "{password}"
max_builds = 2

[[factory]]
name = "demo"
steps = [
  {{ git = {{ repo = "{repo}", mode = "full", method = "fresh" }} }},
  {{ name = "compile", command = ["sh", "build.sh"], halt_on_failure = true }},
  {{ name = "test", command = ["sh", "test.sh"], timeout = "5m", warning_pattern = "^WARNING" }},
  {{ name = "clean", command = ["git", "clean", "-fdxq"], always_run = true }},
]

[[builder]]
name = "demo-linux"
workers = ["demo-worker"]
factory = "demo"
branches = ["main"]
tags = ["stable", "tier-1"]

[[builder]]
name = "demo-other"
workers = ["demo-worker"]
factory = "demo"
branches = ["main"]
tags = ["unstable", "tier-3"]

[[scheduler]]
name = "main"
kind = "branch"
branch = "main"
tree_stable = "2s"

[[scheduler]]
name = "force"
kind = "force"
"#,
        db = dir.join("cascade.sqlite").display(),
        repo = repo.display(),
    )
}

/// Whether commit `n` of `last` breaks the tests: every fourth from the
/// second, and the last, so the demo ends with its stable builder red.
pub fn breaks(n: usize, last: usize) -> bool {
    n % 4 == 2 || n == last
}

/// Whether commit `n` follows the one before within a second: two commits
/// inside the tree-stable window, which one build covers.
pub fn follows_at_once(n: usize) -> bool {
    n % 5 == 4
}

/// One commit in the demo repository, good or breaking, announced to the master.
async fn commit(
    store: &cascade_store::Store,
    config: &cascade_config::Config,
    repo: &Path,
    n: usize,
    breaks: bool,
) -> anyhow::Result<()> {
    let message = if breaks {
        std::fs::write(repo.join("BROKEN"), format!("change {n} broke the regression test\n"))?;
        format!("Change {n}: refactor the core (oops)")
    } else {
        let _ = std::fs::remove_file(repo.join("BROKEN"));
        format!("Change {n}: improve things")
    };
    std::fs::write(repo.join("VERSION"), format!("{}\n", n + 1))?;
    let mut changelog = std::fs::read_to_string(repo.join("CHANGES")).unwrap_or_default();
    changelog.push_str(&format!("{message}\n"));
    std::fs::write(repo.join("CHANGES"), changelog)?;
    git(repo, &["add", "-A"])?;
    git(repo, &["commit", "-q", "-m", &message])?;
    let sha = git(repo, &["rev-parse", "HEAD"])?;
    let change = SendChange {
        who: "Demo Developer <dev@example.org>".into(),
        branch: Some("main".into()),
        revision: Some(sha),
        comments: message,
        files: vec!["VERSION".into(), if breaks { "BROKEN".into() } else { "core.c".into() }],
        repository: Some(repo.display().to_string()),
        project: Some("demo".into()),
        ..Default::default()
    };
    send(store, config, change, crate::clock::now()).await?;
    Ok(())
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.dir).with_context(|| format!("creating {}", opts.dir.display()))?;
    let dir = std::fs::canonicalize(&opts.dir)?;
    let repo = dir.join("repo");
    init_repo(&repo)?;
    let password = uuid::Uuid::new_v4().simple().to_string();
    let user_password: String = uuid::Uuid::new_v4().simple().to_string().chars().take(12).collect();
    let user_hash = crate::password::hash(&user_password).map_err(|e| anyhow::anyhow!("{e}"))?;
    let config_path = dir.join("cascade.toml");
    let text = config_text(&dir, &repo, &opts.http, opts.worker_port, &password, &user_hash);
    std::fs::write(&config_path, text)?;
    let config = cascade_config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;

    println!("Cascade demo: http://{}/", opts.http);
    println!("  state and config in {} (a worker builds a git repository there)", dir.display());
    println!("  log in as {DEMO_USER:?} with password {user_password:?} to force, rebuild and stop builds");
    println!(
        "  {} commits will arrive, about one every {:?} (some in pairs that one build covers; the last breaks the \
         stable builder); Ctrl-C stops the demo.",
        opts.commits, opts.interval
    );

    let worker = tokio::spawn(cascade_worker::run(cascade_worker::Options {
        master: format!("127.0.0.1:{}", opts.worker_port),
        name: "demo-worker".into(),
        password,
        basedir: dir.join("worker"),
        max_delay: Duration::from_secs(2),
    }));
    let commits = {
        let (config, repo, n, interval) = (config.clone(), repo.clone(), opts.commits, opts.interval);
        tokio::spawn(async move {
            let made = async {
                let store = cascade_store::Store::connect(&config.master.database).await?;
                for i in 1..=n {
                    let wait = if follows_at_once(i) { Duration::from_secs(1) } else { interval };
                    tokio::time::sleep(wait).await;
                    commit(&store, &config, &repo, i, breaks(i, n)).await?;
                    tracing::info!(commit = i, "demo commit made");
                }
                anyhow::Ok(())
            };
            if let Err(e) = made.await {
                tracing::error!(error = %e, "the demo could not make its commits");
            }
        })
    };
    let served = crate::server::run(config, None).await;
    worker.abort();
    commits.abort();
    Ok(served?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_is_valid_and_its_repository_builds_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        init_repo(&repo).expect("repo");
        init_repo(&repo).expect("a second run reuses it");
        let hash = crate::password::hash("user-pw").expect("hash");
        let text = config_text(dir.path(), &repo, "127.0.0.1:8010", 9990, "pw", &hash);
        let config = cascade_config::parse(&text, &dir.path().join("cascade.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.builders.len(), 2);
        assert_eq!(config.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), [DEMO_USER]);
        assert_eq!(config.master.stop_grace, Duration::from_secs(10));
        assert!(config.resolve_secrets().is_ok());
        assert_eq!(git(&repo, &["rev-list", "--count", "HEAD"]).expect("count"), "1");
    }

    #[test]
    fn the_demo_ends_red_and_has_pairs_one_build_covers() {
        let last = 16;
        let broken: Vec<usize> = (1..=last).filter(|n| breaks(*n, last)).collect();
        assert_eq!(broken, [2, 6, 10, 14, 16], "the last commit breaks the stable builder");
        assert!((1..=last).any(follows_at_once), "some commits come in pairs");
        assert!(!follows_at_once(1), "the first waits for the worker");
    }
}
