//! `cascade demo`: a self-contained demonstration on SQLite. It creates a
//! git repository, a configuration that builds it, starts the master and a
//! `cascade-worker` in this process, and makes commits (some of them break
//! the tests) so that builds come and go. Nothing outside `--dir` is touched.

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

const BUILD_SH: &str = "#!/bin/sh\necho \"compiling $(cat VERSION)\"\nfor f in core io net; do echo \"  CC $f.o\"; sleep 0.3; done\necho 'linked demo'\n";
const TEST_SH: &str = "#!/bin/sh\nfor t in test_core test_io test_net test_unicode; do\n  echo \"$t ... ok\"; sleep 0.4\ndone\nif [ -f BROKEN ]; then\n  echo 'test_regression ... FAIL' >&2\n  echo \"AssertionError: $(cat BROKEN)\" >&2\n  exit 1\nfi\nif [ $(( $(cat VERSION) % 3 )) -eq 0 ]; then echo 'WARNING: test_flaky was skipped'; fi\necho 'all tests passed'\n";

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

fn config_text(dir: &Path, repo: &Path, http: &str, worker_port: u16, password: &str) -> String {
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

/// One commit in the demo repository, good or breaking, announced to the master.
async fn commit(
    store: &cascade_store::Store,
    config: &cascade_config::Config,
    repo: &Path,
    n: usize,
) -> anyhow::Result<()> {
    let breaks = n % 4 == 2;
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
    let config_path = dir.join("cascade.toml");
    std::fs::write(&config_path, config_text(&dir, &repo, &opts.http, opts.worker_port, &password))?;
    let config = cascade_config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;

    println!("Cascade demo: http://{}/", opts.http);
    println!("  state and config in {} (a worker builds a git repository there)", dir.display());
    println!("  {} commits will arrive, one every {:?}; Ctrl-C stops the demo.", opts.commits, opts.interval);

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
                    tokio::time::sleep(interval).await;
                    commit(&store, &config, &repo, i).await?;
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
        let text = config_text(dir.path(), &repo, "127.0.0.1:8010", 9990, "pw");
        let config = cascade_config::parse(&text, &dir.path().join("cascade.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.builders.len(), 2);
        assert!(config.resolve_secrets().is_ok());
        assert_eq!(git(&repo, &["rev-list", "--count", "HEAD"]).expect("count"), "1");
    }
}
