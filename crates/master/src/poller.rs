//! Missed-event repair. GitHub never retries a delivery by itself, so a
//! push that lands while the master is down, or whose delivery is lost, is
//! never built unless someone asks. The poller asks GitHub's API for each
//! configured branch's head at start-up and every `[github] poll_interval`
//! (conditional requests: an unchanged answer costs no rate limit); when a
//! head is not the newest change Cascade has for its branch, it fetches the
//! commits in between (the compare API) and stores those no delivery
//! brought as changes marked `source = poller`, scheduled as a push is. A
//! delivery that comes later adds nothing (`Redundant::Polled`), and a poll
//! never repeats a delivered change (`Redundant::Known`).

use std::collections::HashMap;
use std::sync::Arc;

use cascade_model::text;
use cascade_model::{NewChange, change::clean_identity};
use cascade_store::{IngestOutcome, POLLER_SOURCE, Redundant, SOURCE_PROPERTY, Store, StoreError};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::github::{Fetched, GitHub, GithubError};
use crate::pulls::{PullError, Pulls};
use crate::scheduler::Schedulers;

/// Most commits one poll makes into changes for one branch; GitHub's
/// compare answer lists at most 250, and a longer gap is built from its head.
const MAX_COMMITS: usize = 250;

/// What polling needs.
pub struct Poller {
    pub store: Store,
    pub catalog: Arc<Catalog>,
    pub schedulers: Arc<Schedulers>,
    pub clock: Clock,
    pub github: GitHub,
    /// Builds the open labelled PRs no delivery built.
    pub pulls: Arc<Pulls>,
}

/// Why a poll did not finish.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Github(#[from] GithubError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PullError> for PollError {
    fn from(e: PullError) -> PollError {
        match e {
            PullError::Github(e) => PollError::Github(e),
            PullError::Store(e) => PollError::Store(e),
        }
    }
}

/// What a branch's head says against the newest change Cascade has for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollPlan {
    /// Nothing was missed.
    UpToDate,
    /// No change is known for the branch: there is nothing to compare
    /// with, and building all its history would be wrong; the next push starts it.
    NothingKnown,
    /// Commits after `base` up to the head were never delivered.
    Compare { base: String },
}

/// Compares a branch's head with the newest revision known for it.
pub fn plan(head: &str, newest_known: Option<&str>) -> PollPlan {
    match newest_known {
        None => PollPlan::NothingKnown,
        Some(known) if known.eq_ignore_ascii_case(head) => PollPlan::UpToDate,
        Some(known) => PollPlan::Compare { base: known.to_string() },
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Repo {
    pub html_url: String,
    #[serde(default)]
    pub full_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Branch {
    pub commit: ApiCommit,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiCommit {
    pub sha: String,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub commit: Option<GitCommit>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GitCommit {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub author: Option<Signature>,
    #[serde(default)]
    pub committer: Option<Signature>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Signature {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub date: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Compare {
    /// `ahead`, `behind`, `diverged` or `identical`.
    pub status: String,
    #[serde(default)]
    pub commits: Vec<ApiCommit>,
}

/// Where the changes a poll makes belong.
pub struct Place<'a> {
    pub repository: &'a str,
    pub project: &'a str,
    pub branch: &'a str,
}

/// The commits a poll found, oldest first: those GitHub's compare lists
/// when the head is ahead of the base, else (a force push) the head alone.
pub fn missed_commits(compare: Option<&Compare>, head: &ApiCommit) -> Vec<ApiCommit> {
    match compare {
        Some(c) if c.status == "ahead" && !c.commits.is_empty() => {
            let mut commits: Vec<ApiCommit> = c.commits.iter().rev().take(MAX_COMMITS).cloned().collect();
            commits.reverse();
            if commits.last().is_none_or(|last| !last.sha.eq_ignore_ascii_case(&head.sha)) {
                commits.push(head.clone());
            }
            commits
        }
        _ => vec![head.clone()],
    }
}

/// A polled commit as a change; `None` for an id that is not a commit id.
pub fn change(c: &ApiCommit, place: &Place<'_>, now: i64) -> Option<NewChange> {
    text::revision("sha", &c.sha).ok()?;
    let git = c.commit.as_ref();
    let who =
        |s: Option<&Signature>| s.map(|s| clean_identity(s.name.as_deref(), s.email.as_deref())).unwrap_or_default();
    let when = git
        .and_then(|g| g.author.as_ref())
        .and_then(|a| a.date.as_deref())
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
        .map_or(now, |t| t.timestamp());
    let mut properties = std::collections::BTreeMap::new();
    properties.insert("event".to_string(), json!("push"));
    properties.insert(SOURCE_PROPERTY.to_string(), json!(POLLER_SOURCE));
    Some(NewChange {
        author: who(git.and_then(|g| g.author.as_ref())),
        committer: Some(who(git.and_then(|g| g.committer.as_ref()))).filter(|s| !s.is_empty()),
        comments: text::clean(git.map_or("", |g| g.message.as_str()), text::MESSAGE_MAX),
        branch: Some(place.branch.to_string()),
        revision: Some(c.sha.to_ascii_lowercase()),
        revlink: c.html_url.as_deref().and_then(text::http_link).map(str::to_string),
        when_timestamp: when,
        category: None,
        repository: place.repository.to_string(),
        codebase: String::new(),
        project: place.project.to_string(),
        // The compare API lists no files per commit: no files makes a change
        // important, so every polled push is built.
        files: Vec::new(),
        properties,
    })
}

impl Poller {
    /// Polls at start-up and every `poll_interval`, until `stopped` flips.
    pub async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let github = &self.catalog.config.github;
        let (Some(repo), every) = (github.repository.clone(), github.poll_interval) else { return };
        if every.is_zero() {
            return;
        }
        if self.github.token.is_none() {
            tracing::info!("polling GitHub without [github] token: 60 requests an hour at most");
        }
        let mut etags = HashMap::new();
        while !*stopped.borrow() {
            // A stop does not wait for GitHub to answer.
            let polled = tokio::select! {
                polled = self.poll_all(&repo, &mut etags) => polled,
                _ = stopped.changed() => return,
            };
            let wait = match polled {
                Ok(()) => every,
                Err(PollError::Github(GithubError::RateLimited(wait))) => wait.max(every),
                Err(e) => {
                    tracing::warn!(error = %e, "polling GitHub failed; trying again at the next poll");
                    every
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    /// Polls every configured branch once.
    pub async fn poll_all(&self, repo: &str, etags: &mut HashMap<String, String>) -> Result<(), PollError> {
        let r: Repo = self.github.get(&format!("/repos/{repo}")).await?;
        let repository = text::http_link(&r.html_url).unwrap_or(&r.html_url).to_string();
        let project = r.full_name.unwrap_or_else(|| repo.to_string());
        for branch in self.catalog.config.pushed_branches() {
            let place = Place { repository: &repository, project: &project, branch };
            match self.poll_branch(repo, &place, etags).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(%branch, changes = n, "the poller found pushes no delivery brought"),
                Err(e @ PollError::Github(GithubError::RateLimited(_))) => return Err(e),
                Err(e) => tracing::warn!(%branch, error = %e, "polling a branch failed"),
            }
        }
        let built = self.pulls.repair(repo, &repository).await?;
        if built > 0 {
            tracing::warn!(pull_requests = built, "the poller built labelled pull requests no delivery brought");
        }
        Ok(())
    }

    /// Polls one branch; returns how many changes it stored.
    async fn poll_branch(
        &self,
        repo: &str,
        place: &Place<'_>,
        etags: &mut HashMap<String, String>,
    ) -> Result<usize, PollError> {
        let path = format!("/repos/{repo}/branches/{}", place.branch);
        let (head, etag) = match self.github.get_if::<Branch>(&path, etags.get(&path).map(String::as_str)).await? {
            Fetched::Unchanged => return Ok(0),
            Fetched::Fresh { body, etag } => (body.commit, etag),
        };
        text::revision("commit.sha", &head.sha).map_err(|e| GithubError::Failed(e.to_string()))?;
        let newest = self.store.newest_revision(place.repository, place.branch).await?;
        let stored = match plan(&head.sha, newest.as_deref()) {
            PollPlan::UpToDate => 0,
            PollPlan::NothingKnown => {
                tracing::info!(branch = %place.branch, "no change known for the branch; polling starts from its next push");
                0
            }
            PollPlan::Compare { base } => {
                let compare = format!("/repos/{repo}/compare/{base}...{}", head.sha);
                let found = match self.github.get::<Compare>(&compare).await {
                    Ok(body) => Some(body),
                    // A base GitHub no longer has (a force push): the head alone.
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(e.into()),
                };
                self.store_commits(&missed_commits(found.as_ref(), &head), place).await?
            }
        };
        // Only once what it said is stored: a failed poll asks again in full.
        if let Some(etag) = etag {
            etags.insert(path, etag);
        }
        Ok(stored)
    }

    async fn store_commits(&self, commits: &[ApiCommit], place: &Place<'_>) -> Result<usize, PollError> {
        let now = self.clock.now();
        let batch: Vec<_> = commits
            .iter()
            .filter_map(|c| change(c, place, now))
            .map(|c| {
                let touches = self.schedulers.classify(&c);
                (c, touches)
            })
            .collect();
        let outcome = self.store.ingest_changes_at(None, &batch, Redundant::Known, self.clock.now_ms()).await?;
        let IngestOutcome::Stored { change_ids } = outcome else { return Ok(0) };
        if !change_ids.is_empty() {
            self.schedulers.nudge();
        }
        Ok(change_ids.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(sha: &str) -> ApiCommit {
        serde_json::from_value(json!({
            "sha": sha, "html_url": format!("https://github.com/o/r/commit/{sha}"),
            "commit": {"message": format!("m {sha}"), "author": {"name": "Ann", "email": "ann@x", "date": "2026-12-01T10:00:00Z"},
                       "committer": {"name": "GitHub", "email": "noreply@github.com", "date": "2026-12-01T10:00:00Z"}}
        }))
        .expect("commit")
    }

    #[test]
    fn a_head_is_compared_with_the_newest_known_revision() {
        assert_eq!(plan("abcd", Some("ABCD")), PollPlan::UpToDate);
        assert_eq!(plan("abcd", None), PollPlan::NothingKnown);
        assert_eq!(plan("abcd", Some("1234")), PollPlan::Compare { base: "1234".into() });
    }

    #[test]
    fn ahead_lists_the_commits_and_anything_else_builds_the_head() {
        let head = commit("c3c3");
        let ahead = Compare { status: "ahead".into(), commits: vec![commit("c2c2"), commit("c3c3")] };
        let shas = |v: Vec<ApiCommit>| v.into_iter().map(|c| c.sha).collect::<Vec<_>>();
        assert_eq!(shas(missed_commits(Some(&ahead), &head)), ["c2c2", "c3c3"]);
        let diverged = Compare { status: "diverged".into(), commits: vec![commit("c2c2")] };
        assert_eq!(shas(missed_commits(Some(&diverged), &head)), ["c3c3"], "a force push: the head alone");
        assert_eq!(shas(missed_commits(None, &head)), ["c3c3"]);
        // A gap longer than the compare lists: its newest commits, ending at the head.
        let long = Compare { status: "ahead".into(), commits: (0..300).map(|i| commit(&format!("{i:04x}"))).collect() };
        let got = missed_commits(Some(&long), &head);
        assert_eq!(got.len(), MAX_COMMITS + 1);
        assert_eq!(got.last().map(|c| c.sha.as_str()), Some("c3c3"));
    }

    #[test]
    fn a_polled_commit_is_a_change_marked_as_polled() {
        let place = Place { repository: "https://github.com/o/r", project: "o/r", branch: "main" };
        let c = change(&commit("C3C3"), &place, 5).expect("a change");
        assert_eq!((c.author.as_str(), c.revision.as_deref()), ("Ann <ann@x>", Some("c3c3")));
        assert_eq!(c.when_timestamp, 1_796_119_200);
        assert_eq!(c.properties[SOURCE_PROPERTY], json!("poller"));
        assert!(c.files.is_empty(), "no files: important to every scheduler");
        assert!(change(&commit("not a sha"), &place, 5).is_none());
    }
}
