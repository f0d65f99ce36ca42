//! Building a pull request: its change stored with a buildset on the
//! chosen PR builders (one transaction), then, in the background, the
//! trigger label removed (so adding it again builds again) and one comment
//! with the link to the PR's grid. The webhook calls it for a label or a
//! writer's comment; the poller for an open labelled PR never built.

use std::sync::Arc;
use std::time::Duration;

use cascade_model::pull;
use cascade_store::{Delivery, PullBuild, Store, StoreError};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::github::{GitHub, GithubError, segment};
use crate::scheduler::{PullTarget, Schedulers};

pub mod payload;

use payload::{Place, PullRequest, pull_change, scheduled_comment};

/// At most this many of a PR's files are asked for (one page).
const FILES_PAGE: usize = 100;

/// How long what is said back on a PR may take.
const FOLLOW_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// What building a PR needs.
pub struct Pulls {
    pub store: Store,
    pub catalog: Arc<Catalog>,
    pub schedulers: Arc<Schedulers>,
    pub github: GitHub,
    pub clock: Clock,
    /// Woken when requests are made, so a free worker takes them at once.
    pub wake_builds: Arc<Notify>,
}

/// What asked for a PR build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// This label was added (and is removed once the build is stored).
    Label(String),
    /// This writer commented.
    Comment(String),
}

/// A PR build about to be stored.
pub struct Build<'a> {
    /// `owner/name`.
    pub repo: &'a str,
    /// The repository's web address.
    pub place: &'a str,
    pub pr: &'a PullRequest,
    pub target: PullTarget,
    pub trigger: Trigger,
}

/// Why a PR could not be built now.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Github(#[from] GithubError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `GET /repos/{repo}/commits/{sha}`: the head commit's message.
#[derive(Debug, Clone, Deserialize)]
struct CommitAnswer {
    commit: CommitMessage,
}

#[derive(Debug, Clone, Deserialize)]
struct CommitMessage {
    #[serde(default)]
    message: String,
}

/// A file a PR changes (`GET /repos/{repo}/pulls/{n}/files`).
#[derive(Debug, Clone, Deserialize)]
struct PullFile {
    filename: String,
}

/// An issue event (`GET /repos/{repo}/issues/{n}/events`): who labelled.
#[derive(Debug, Clone, Deserialize)]
struct IssueEvent {
    event: String,
    #[serde(default)]
    label: Option<payload::Label>,
    #[serde(default)]
    actor: Option<payload::User>,
}

impl Pulls {
    /// Whether `login` may start builds: `admin`, `maintain` or `write`
    /// on the repository (not a collaborator at all: no).
    pub async fn may_build(&self, repo: &str, login: &str) -> Result<bool, GithubError> {
        let path = format!("/repos/{repo}/collaborators/{}/permission", segment(login));
        match self.github.get::<payload::PermissionAnswer>(&path).await {
            Ok(p) => Ok(pull::Permission::parse(&p.permission) == pull::Permission::Write),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Who added `label` to PR `number` last, as GitHub's issue events say.
    async fn labeler(&self, repo: &str, number: u64, label: &str) -> Result<Option<String>, GithubError> {
        let events: Vec<IssueEvent> =
            self.github.get(&format!("/repos/{repo}/issues/{number}/events?per_page=100")).await?;
        let last =
            events.into_iter().rfind(|e| e.event == "labeled" && e.label.as_ref().is_some_and(|l| l.name == label));
        Ok(last.and_then(|e| e.actor).filter(|a| !a.is_bot()).map(|a| a.login))
    }

    /// Whether the PR's head commit carries the skip marker.
    pub async fn head_skips_ci(&self, repo: &str, pr: &PullRequest) -> Result<bool, GithubError> {
        let head: CommitAnswer = self.github.get(&format!("/repos/{repo}/commits/{}", pr.head.sha)).await?;
        Ok(pull::skips_ci(&head.commit.message))
    }

    /// Stores the PR's change with a buildset on the target's builders,
    /// then says so on the PR; `None` for a redelivery.
    pub async fn schedule(&self, b: Build<'_>, delivery: Option<&Delivery>) -> Result<Option<PullBuild>, StoreError> {
        let number = b.pr.number;
        let files = self.files(b.repo, number).await;
        let place = Place { repository: b.place, project: b.repo };
        let now = self.clock.now();
        let change = pull_change(b.pr, &place, &files, "pull_request", now);
        let reason = match &b.trigger {
            Trigger::Label(l) => format!("Pull request #{number} labelled {l:?}"),
            Trigger::Comment(who) => format!("Pull request #{number}: builds asked by {who}"),
        };
        let buildset = self.schedulers.pull_buildset(&b.target, &change, reason);
        let Some(stored) = self.store.ingest_pull_request(delivery, &change, &buildset, now).await? else {
            return Ok(None);
        };
        self.wake_builds.notify_one();
        tracing::info!(pr = number, head = %b.pr.head.sha, builders = b.target.builders.len(), "pull request build scheduled");
        let link = format!("{}/pulls/{number}", self.catalog.config.master.url.trim_end_matches('/'));
        let label = match b.trigger {
            Trigger::Label(l) => Some(l),
            Trigger::Comment(_) => None,
        };
        self.follow_up(b.repo, number, label, scheduled_comment(&b.pr.head.sha, &b.target.builders, &link));
        Ok(Some(stored))
    }

    /// The files a PR changes (its first page); none when GitHub cannot
    /// say, which makes the change important to everyone.
    async fn files(&self, repo: &str, number: u64) -> Vec<String> {
        let path = format!("/repos/{repo}/pulls/{number}/files?per_page={FILES_PAGE}");
        match self.github.get::<Vec<PullFile>>(&path).await {
            Ok(files) => files.into_iter().take(FILES_PAGE).map(|f| f.filename).collect(),
            Err(e) => {
                tracing::info!(error = %e, pr = number, "the PR's files could not be listed");
                Vec::new()
            }
        }
    }

    /// Removes the trigger label, if any, and posts one comment, in the background.
    pub fn follow_up(&self, repo: &str, number: u64, label: Option<String>, comment: String) {
        let github = self.github.clone();
        let repo = repo.to_string();
        let work = async move {
            if let Some(label) = label {
                let path = format!("/repos/{repo}/issues/{number}/labels/{}", segment(&label));
                // Already gone (someone removed it) is as good as removed.
                if let Err(e) = github.delete(&path).await.or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) }) {
                    tracing::warn!(error = %e, pr = number, label = ?label, "the trigger label could not be removed");
                }
            }
            let path = format!("/repos/{repo}/issues/{number}/comments");
            if let Err(e) = github.post(&path, &json!({ "body": comment })).await {
                tracing::warn!(error = %e, pr = number, "the comment could not be posted");
            }
        };
        tokio::spawn(async move {
            if tokio::time::timeout(FOLLOW_UP_TIMEOUT, work).await.is_err() {
                tracing::warn!(pr = number, "GitHub did not answer the follow-up in time");
            }
        });
    }

    /// The poller's pass: open PRs that carry a trigger label, added by
    /// someone who may start builds, and that were never built (the
    /// delivery was lost, or GitHub failed while it was handled) are built
    /// now. One PR's failure does not stop the pass; a rate limit does.
    /// Returns how many were built.
    pub async fn repair(&self, repo: &str, place: &str) -> Result<usize, PullError> {
        let labels = self.schedulers.trigger_labels();
        if labels.is_empty() {
            return Ok(0);
        }
        let open: Vec<PullRequest> = self.github.get(&format!("/repos/{repo}/pulls?state=open&per_page=100")).await?;
        let mut built = 0;
        for pr in open.iter().filter(|pr| payload::check_pull_request(pr).is_ok()) {
            let Some(label) = pr.labels.iter().map(|l| l.name.as_str()).find(|l| labels.iter().any(|t| t == l)) else {
                continue;
            };
            match self.repair_one(repo, place, pr, label).await {
                Ok(done) => built += usize::from(done),
                Err(PullError::Github(e @ GithubError::RateLimited(_))) => return Err(e.into()),
                Err(e) => tracing::warn!(pr = pr.number, error = %e, "a labelled pull request could not be checked"),
            }
        }
        Ok(built)
    }

    /// Builds one labelled PR if it never was and its labeller may; true if built.
    async fn repair_one(&self, repo: &str, place: &str, pr: &PullRequest, label: &str) -> Result<bool, PullError> {
        if self.store.has_changes_on(place, &pull::merge_ref(pr.number)).await? {
            return Ok(false);
        }
        let Some(target) = self.schedulers.for_label(label).filter(|t| !t.builders.is_empty()) else {
            return Ok(false);
        };
        let Some(labeler) = self.labeler(repo, pr.number, label).await? else { return Ok(false) };
        if !self.may_build(repo, &labeler).await?
            || pr.merge_commit_sha.is_none()
            || self.head_skips_ci(repo, pr).await?
        {
            return Ok(false);
        }
        tracing::warn!(pr = pr.number, label = ?label, "a labelled pull request no delivery built");
        let build = Build { repo, place, pr, target, trigger: Trigger::Label(label.to_string()) };
        Ok(self.schedule(build, None).await?.is_some())
    }
}
