//! What the load tools share: a CPython-sized configuration, signed
//! pushes shaped like GitHub's, scratch databases, percentiles.

use std::time::Duration;

use anyhow::Context;
use hmac::{Hmac, KeyInit, Mac};
use sqlx::Executor;

/// The webhook secret of every load master.
pub const SECRET: &str = "load-test-secret";
/// CPython's branches: (label, git branch).
pub const BRANCHES: [(&str, &str); 8] = [
    ("3.x", "main"),
    ("3.15", "3.15"),
    ("3.14", "3.14"),
    ("3.13", "3.13"),
    ("3.12", "3.12"),
    ("3.11", "3.11"),
    ("3.10", "3.10"),
    ("PR", "pr-head"),
];

/// A CPython-sized configuration: `definitions` builders over the 8
/// branches, 57 workers, one branch scheduler per branch; `listen` is
/// `[master]`'s listener lines (`http = "127.0.0.1:8010"`).
pub fn config_text(definitions: usize, database: &str, listen: &str) -> String {
    let mut s = format!(
        "[master]\nname = \"load\"\n{listen}\ndatabase = \"{database}\"\n\n[github]\nrepository = \"python/cpython\"\nwebhook_secret = \"{SECRET}\"\n\n"
    );
    for (label, git) in BRANCHES {
        s += &format!("[[branch]]\nname = \"{label}\"\ngit = \"{git}\"\n\n");
    }
    for w in 0..57 {
        s += &format!("[[worker]]\nname = \"worker-{w}\"\npassword = \"pw\"\nmax_builds = 2\n\n");
    }
    s += "[[factory]]\nname = \"unix\"\nsteps = [{ git = {} }, { command = [\"make\", \"-j4\"] }, { command = \"make buildbottest\" }]\n\n";
    let labels: Vec<String> = BRANCHES.iter().map(|(l, _)| format!("\"{l}\"")).collect();
    for d in 0..definitions {
        let tier = if d % 3 == 0 { "\"stable\", \"tier-1\"" } else { "\"unstable\", \"tier-3\"" };
        s += &format!(
            "[[builder]]\nname = \"builder-{d}\"\nworkers = [\"worker-{}\"]\nfactory = \"unix\"\nbranches = [{}]\ntags = [{tier}]\n\n",
            d % 57,
            labels.join(", ")
        );
    }
    for (label, _) in BRANCHES {
        s += &format!(
            "[[scheduler]]\nname = \"{label}\"\nkind = \"branch\"\nbranch = \"{label}\"\ntree_stable = \"30s\"\nignore_files = [\"Doc/**\", \"*.rst\"]\n\n"
        );
    }
    s
}

/// Push `n`: `commits` new commits (ids derived from `n`) to one of the
/// branches, in turn.
pub fn push_body(n: usize, commits: usize) -> Vec<u8> {
    let (_, git) = BRANCHES[n % BRANCHES.len()];
    let ids = push_revisions(n, commits);
    let commit = |id: &String| {
        serde_json::json!({
            "id": id, "tree_id": id, "distinct": true, "message": format!("gh-{n}: change the thing\n\nLonger text."),
            "timestamp": "2026-11-26T05:00:00+00:00", "url": format!("https://github.com/python/cpython/commit/{id}"),
            "author": {"name": "A. Developer", "email": "dev@example.org", "username": "dev"},
            "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
            "added": [], "removed": [], "modified": ["Lib/os.py", "Lib/test/test_os.py", "Misc/NEWS.d/next/x.rst"]
        })
    };
    let list: Vec<_> = ids.iter().map(commit).collect();
    serde_json::to_vec(&serde_json::json!({
        "ref": format!("refs/heads/{git}"), "before": format!("{:040x}", n), "after": ids.last(),
        "created": false, "deleted": false, "forced": false,
        "compare": "https://github.com/python/cpython/compare/a...b",
        "commits": list, "head_commit": list.last(),
        "repository": {"id": 81598961, "name": "cpython", "full_name": "python/cpython",
                       "html_url": "https://github.com/python/cpython", "created_at": 1487182435, "pushed_at": 1795669709},
        "pusher": {"name": "dev", "email": "dev@example.org"}
    }))
    .unwrap_or_default()
}

/// The commit ids of push `n`.
pub fn push_revisions(n: usize, commits: usize) -> Vec<String> {
    (0..commits).map(|c| format!("{:040x}", (n as u128) << 16 | c as u128)).collect()
}

/// `X-Hub-Signature-256` for `body`.
pub fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Creates a scratch database next to the given PostgreSQL URL.
pub async fn scratch_database(url: &str) -> anyhow::Result<(String, Option<String>)> {
    if !url.starts_with("postgres") {
        return Ok((url.to_string(), None));
    }
    sqlx::any::install_default_drivers();
    let name = format!("cascade_bench_{}", std::process::id());
    let pool =
        sqlx::any::AnyPoolOptions::new().max_connections(1).connect(url).await.context("connecting to PostgreSQL")?;
    pool.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}"))).await?;
    pool.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await?;
    pool.close().await;
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    Ok((format!("{base}/{name}"), Some(name)))
}

/// Drops a scratch database made by `scratch_database`.
pub async fn drop_database(server: &str, name: &str) -> anyhow::Result<()> {
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(server).await?;
    pool.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await?;
    pool.close().await;
    Ok(())
}

/// The `p` percentile (0 to 1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
