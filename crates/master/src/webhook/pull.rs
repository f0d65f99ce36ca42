//! `pull_request` and `issue_comment` deliveries, as far as the webhook reads them.

use serde::Deserialize;

use super::push::Repository;
use crate::pulls::payload::{Label, PullRequest, User};

/// A `pull_request` delivery.
#[derive(Debug, Clone, Deserialize)]
pub struct PullRequestEvent {
    pub action: String,
    pub pull_request: PullRequest,
    /// The label added (`labeled`).
    #[serde(default)]
    pub label: Option<Label>,
    pub repository: Repository,
    /// Who did it (who added the label).
    #[serde(default)]
    pub sender: Option<User>,
}

/// An `issue_comment` delivery.
#[derive(Debug, Clone, Deserialize)]
pub struct IssueCommentEvent {
    pub action: String,
    pub issue: Issue,
    pub comment: Comment,
    pub repository: Repository,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Issue {
    pub number: u64,
    /// Present when the issue is a pull request.
    #[serde(default)]
    pub pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Comment {
    #[serde(default)]
    pub body: String,
    pub user: User,
}
