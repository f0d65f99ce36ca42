//! A pull request as GitHub's API and deliveries give it, the change a PR
//! build is made of, and what is said back on the PR (pure).
//!
//! A PR's change carries only checked identifiers as properties (number,
//! commit ids, the base branch, the head repository and the author's
//! login): a fork's PR is anyone's text, and properties can end up in
//! commands. Its title and body stay in the change's comments.

use std::collections::BTreeMap;

use cascade_model::text::{self, FieldError};
use cascade_model::{NewChange, pull};
use serde::Deserialize;
use serde_json::json;

/// A pull request, as deliveries and `GET /repos/{repo}/pulls/{n}` give it.
#[derive(Debug, Clone, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub html_url: Option<String>,
    pub user: Option<User>,
    pub head: Side,
    pub base: Side,
    #[serde(default)]
    pub labels: Vec<Label>,
    /// GitHub's merge of the PR into its base; `None` while GitHub computes
    /// it or when the PR conflicts.
    #[serde(default)]
    pub merge_commit_sha: Option<String>,
}

/// A PR's head or base.
#[derive(Debug, Clone, Deserialize)]
pub struct Side {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    /// `None` when the fork was deleted.
    pub repo: Option<SideRepo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SideRepo {
    pub full_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Label {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub login: String,
    /// `User`, `Bot` or `Organization`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

impl User {
    /// An app or bot account: its comments are never commands.
    pub fn is_bot(&self) -> bool {
        self.kind.as_deref() == Some("Bot") || self.login.ends_with("[bot]")
    }
}

/// `GET /repos/{repo}/collaborators/{user}/permission`.
#[derive(Debug, Clone, Deserialize)]
pub struct PermissionAnswer {
    pub permission: String,
}

/// PR numbers beyond this are no PR's.
pub const PR_NUMBER_MAX: u64 = pull::NUMBER_MAX;

/// What of a PR is used as it is: commit ids, refs, names.
pub fn check_pull_request(pr: &PullRequest) -> Result<(), FieldError> {
    text::revision("pull_request.head.sha", &pr.head.sha)?;
    text::revision("pull_request.base.sha", &pr.base.sha)?;
    if let Some(m) = &pr.merge_commit_sha {
        text::revision("pull_request.merge_commit_sha", m)?;
    }
    text::name_like("pull_request.base.ref", &pr.base.git_ref, text::REF_MAX)?;
    text::name_like("pull_request.head.ref", &pr.head.git_ref, text::REF_MAX)?;
    if let Some(repo) = &pr.head.repo {
        text::name_like("pull_request.head.repo.full_name", &repo.full_name, text::PROJECT_MAX)?;
    }
    if let Some(u) = &pr.user {
        text::login("pull_request.user.login", &u.login)?;
    }
    text::positive("pull_request.number", pr.number, PR_NUMBER_MAX)
}

/// Where a PR's change belongs.
pub struct Place<'a> {
    /// The repository's web address (the change's `repository`).
    pub repository: &'a str,
    /// `owner/name`.
    pub project: &'a str,
}

/// The change a PR build is made of: the head commit on the merge ref
/// `refs/pull/N/merge`, the PR's identifiers as properties, its files.
/// The PR must have passed [`check_pull_request`].
pub fn pull_change(pr: &PullRequest, place: &Place<'_>, files: &[String], event: &str, now: i64) -> NewChange {
    let author = pr.user.as_ref().map(|u| u.login.clone()).unwrap_or_default();
    let mut properties: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    properties.insert("event".into(), json!(event));
    properties.insert("pr_number".into(), json!(pr.number));
    properties.insert("pr_head_sha".into(), json!(pr.head.sha.to_ascii_lowercase()));
    properties.insert("pr_base_sha".into(), json!(pr.base.sha.to_ascii_lowercase()));
    properties.insert("pr_base_ref".into(), json!(pr.base.git_ref));
    if let Some(m) = &pr.merge_commit_sha {
        properties.insert("pr_merge_sha".into(), json!(m.to_ascii_lowercase()));
    }
    if let Some(repo) = &pr.head.repo {
        properties.insert("pr_head_repo".into(), json!(repo.full_name));
    }
    if !author.is_empty() {
        properties.insert("pr_author".into(), json!(author));
    }
    let title = text::clean(&pr.title, text::MESSAGE_MAX);
    NewChange {
        author,
        committer: None,
        comments: format!("GitHub Pull Request #{}: {title}", pr.number),
        branch: Some(pull::merge_ref(pr.number)),
        revision: Some(pr.head.sha.to_ascii_lowercase()),
        revlink: pr.html_url.as_deref().and_then(text::http_link).map(str::to_string),
        when_timestamp: now,
        category: Some("pull".into()),
        repository: place.repository.to_string(),
        codebase: String::new(),
        project: place.project.to_string(),
        files: files.iter().filter(|f| text::no_nul("filename", f, text::PATH_MAX).is_ok()).cloned().collect(),
        properties,
    }
}

/// The comment posted when a build is scheduled.
pub fn scheduled_comment(head: &str, builders: &[(String, i64)], link: &str) -> String {
    let short: String = head.chars().take(10).collect();
    let mut out = format!(
        ":robot: A build of {short} is scheduled on {} builder{}; results at {link}\n\n",
        builders.len(),
        if builders.len() == 1 { "" } else { "s" }
    );
    for (name, _) in builders {
        out.push_str(&format!("- `{}`\n", name.replace('`', "'")));
    }
    out
}

/// The comment that refuses a build asked by someone who may not.
pub fn refused_comment(login: &str) -> String {
    format!(
        "@{login}: only users with write permission on the repository can start builds with a comment; \
         nothing was scheduled."
    )
}

/// The comment that says a pattern names no builder.
pub fn no_builder_comment(login: &str, pattern: &str) -> String {
    let pattern = pattern.replace('`', "'");
    format!("@{login}: no pull-request builder matches `{pattern}`; nothing was scheduled.")
}

/// The comment that says a pattern is no regex.
pub fn bad_pattern_comment(login: &str, reason: &str) -> String {
    let reason = text::clean(reason, 300).replace('`', "'");
    format!("@{login}: the builder pattern is not a valid regular expression ({reason}); nothing was scheduled.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PullRequest {
        let body =
            include_bytes!("../../../../tests/fixtures/github/octokit-webhooks/pull_request-labeled.payload.json");
        let delivery: serde_json::Value = serde_json::from_slice(body).expect("a real labeled payload");
        serde_json::from_value(delivery["pull_request"].clone()).expect("its pull request")
    }

    #[test]
    fn a_labeled_pr_becomes_a_change_on_its_merge_ref() {
        let pr = fixture();
        check_pull_request(&pr).expect("a real payload passes");
        let place =
            Place { repository: "https://github.com/Codertocat/Hello-World", project: "Codertocat/Hello-World" };
        let c = pull_change(&pr, &place, &["README.md".into()], "pull_request", 7);
        assert_eq!(c.branch.as_deref(), Some("refs/pull/2/merge"));
        assert_eq!(c.revision.as_deref(), Some("ec26c3e57ca3a959ca5aad62de7213c562f8c821"));
        assert_eq!(c.author, "Codertocat");
        assert_eq!(c.files, vec!["README.md".to_string()]);
        assert!(c.comments.starts_with("GitHub Pull Request #2: Update the README"));
        assert_eq!(c.properties["pr_number"], json!(2));
        assert_eq!(c.properties["pr_base_sha"], json!("f95f852bd8fca8fcc58a9a2d6c842781e32a215e"));
        assert_eq!(c.properties["pr_head_repo"], json!("Codertocat/Hello-World"));
        assert!(c.properties.keys().all(|k| k == "event" || k.starts_with("pr_")));
        assert!(!c.properties.contains_key("pr_title"), "free text is no property");
    }

    #[test]
    fn what_a_pr_says_is_checked_by_field() {
        let mut pr = fixture();
        pr.head.sha = "not a sha".into();
        assert!(check_pull_request(&pr).unwrap_err().to_string().contains("pull_request.head.sha"));
        pr = fixture();
        pr.user = Some(User { login: "x; rm -rf /".into(), kind: None });
        assert!(check_pull_request(&pr).unwrap_err().to_string().contains("pull_request.user.login"));
        assert!(text::login("l", "dependabot[bot]").is_ok());
        assert!(text::login("l", "").is_err());
        pr = fixture();
        pr.number = 0;
        assert!(check_pull_request(&pr).unwrap_err().to_string().contains("pull_request.number: out of range"));
    }

    #[test]
    fn comments_name_the_builders_and_cannot_break_out_of_code() {
        let c = scheduled_comment("ec26c3e57ca3a959", &[("AMD64 `x`".into(), 1)], "https://ci/pulls/2");
        assert!(c.contains("ec26c3e57c is scheduled on 1 builder;"));
        assert!(c.contains("results at https://ci/pulls/2"));
        assert!(c.contains("- `AMD64 'x'`"));
        assert!(no_builder_comment("bob", "a`b").contains("`a'b`"));
        assert!(refused_comment("bob").starts_with("@bob: only users with write permission"));
    }
}
