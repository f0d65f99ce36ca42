//! A GitHub `push` payload, and what it means for Cascade: changes to
//! store, a deleted branch to clean up, or nothing.

use std::collections::BTreeMap;

use cascade_model::change::clean_identity;
use cascade_model::gitref::is_null_sha;
use cascade_model::text::{self, FieldError};
use cascade_model::{GitRef, NewChange};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
pub struct PushEvent {
    #[serde(rename = "ref")]
    pub git_ref: String,
    #[serde(default)]
    pub before: Option<String>,
    pub after: String,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub forced: bool,
    #[serde(default)]
    pub compare: Option<String>,
    #[serde(default)]
    pub commits: Vec<Commit>,
    #[serde(default)]
    pub head_commit: Option<Commit>,
    pub repository: Repository,
    #[serde(default)]
    pub pusher: Option<Person>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Commit {
    pub id: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub author: Option<Person>,
    #[serde(default)]
    pub committer: Option<Person>,
    #[serde(default)]
    pub added: Vec<String>,
    #[serde(default)]
    pub removed: Vec<String>,
    #[serde(default)]
    pub modified: Vec<String>,
    #[serde(default)]
    pub distinct: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Person {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    #[serde(default)]
    pub full_name: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    /// In 2012-era payloads this is the web URL; today it is the API URL.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub owner: Option<Owner>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Owner {
    #[serde(default)]
    pub login: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl Repository {
    /// `owner/name`, also for old payloads that lack `full_name`.
    pub fn full_name(&self) -> Option<String> {
        if let Some(f) = &self.full_name {
            return Some(f.clone());
        }
        let owner = self.owner.as_ref().and_then(|o| o.login.clone().or_else(|| o.name.clone()))?;
        Some(format!("{owner}/{}", self.name.as_ref()?))
    }

    /// The repository's web address, which Buildbot uses as `repository`.
    pub fn web_url(&self) -> Option<String> {
        self.html_url
            .clone()
            .or_else(|| self.url.clone().filter(|u| !u.contains("api.github.com")))
            .or_else(|| self.full_name().map(|f| format!("https://github.com/{f}")))
    }
}

/// What a push asks Cascade to do.
#[derive(Debug, Clone, PartialEq)]
pub enum PushPlan {
    /// Store these changes (oldest first; the last one is the new head).
    Changes(Vec<NewChange>),
    /// The branch is gone: cancel what is pending for it.
    DeleteBranch { repository: String, branch: String },
    /// Nothing to do; the reason is logged and returned to the sender.
    Ignore(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PushError(pub String);

/// What every change of one push shares.
struct PushContext<'a> {
    event: &'a PushEvent,
    repository: String,
    project: String,
    branch: String,
    /// `Some("tag")` for a pushed tag.
    category: Option<String>,
    pusher: Option<String>,
    properties: BTreeMap<String, serde_json::Value>,
    /// Stands in for unparseable commit times.
    now: i64,
}

/// `event`, and what GitHub says about the push: compare link, pusher, force.
fn push_properties(event: &PushEvent, pusher: Option<&String>) -> BTreeMap<String, serde_json::Value> {
    let mut props: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    props.insert("event".into(), json!("push"));
    if let Some(c) = event.compare.as_deref().and_then(text::http_link) {
        props.insert("github_compare".into(), json!(c));
    }
    if let Some(p) = pusher {
        props.insert("github_pusher".into(), json!(p));
    }
    if event.forced {
        props.insert("github_forced".into(), json!(true));
    }
    props
}

fn identity(p: Option<&Person>) -> String {
    p.map(|p| clean_identity(p.name.as_deref(), p.email.as_deref())).unwrap_or_default()
}

/// A commit's id and files, which are stored as they are.
fn check_commit(field: &str, c: &Commit) -> Result<(), FieldError> {
    text::revision(&format!("{field}.id"), &c.id)?;
    for (list, files) in [("added", &c.added), ("modified", &c.modified), ("removed", &c.removed)] {
        for (j, f) in files.iter().enumerate() {
            text::no_nul(&format!("{field}.{list}[{j}]"), f, text::PATH_MAX)?;
        }
    }
    Ok(())
}

/// What of a push is stored as it is must be fit to store on both
/// backends; free text (names, messages) is cleaned instead.
fn check_push(event: &PushEvent) -> Result<(), FieldError> {
    text::name_like("ref", &event.git_ref, text::REF_MAX + "refs/heads/".len())?;
    if !event.deleted && !is_null_sha(&event.after) {
        text::revision("after", &event.after)?;
    }
    let r = &event.repository;
    for (field, value) in [("repository.html_url", &r.html_url), ("repository.url", &r.url)] {
        if let Some(v) = value {
            text::name_like(field, v, text::URL_MAX)?;
        }
    }
    // Checked as it is used: given, or made of `owner` and `name` by old payloads.
    for (field, value) in [("repository.full_name", &r.full_name()), ("repository.name", &r.name)] {
        if let Some(v) = value {
            text::name_like(field, v, text::PROJECT_MAX)?;
        }
    }
    for (i, c) in event.commits.iter().enumerate() {
        check_commit(&format!("commits[{i}]"), c)?;
    }
    match &event.head_commit {
        Some(h) => check_commit("head_commit", h),
        None => Ok(()),
    }
}

impl PushContext<'_> {
    /// One commit as a change.
    fn change(&self, c: &Commit) -> NewChange {
        let files: Vec<String> = c.added.iter().chain(&c.modified).chain(&c.removed).cloned().collect();
        let mut properties = self.properties.clone();
        properties.insert("github_distinct".into(), json!(c.distinct.unwrap_or(true)));
        let author = identity(c.author.as_ref());
        NewChange {
            author: if author.is_empty() { self.pusher.clone().unwrap_or_default() } else { author },
            committer: Some(identity(c.committer.as_ref())).filter(|s| !s.is_empty()),
            comments: text::clean(&c.message, text::MESSAGE_MAX),
            branch: Some(self.branch.clone()),
            revision: Some(c.id.clone()),
            revlink: c.url.as_deref().and_then(text::http_link).map(str::to_string),
            when_timestamp: c
                .timestamp
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or(self.now, |t| t.timestamp()),
            category: self.category.clone(),
            repository: self.repository.clone(),
            codebase: String::new(),
            project: self.project.clone(),
            files,
            properties,
        }
    }

    /// The new head, when `commits` does not list it: from `head_commit`
    /// if that is it, else a change with nothing but the revision.
    fn head(&self, revision: &str) -> NewChange {
        match &self.event.head_commit {
            Some(h) if h.id == revision => {
                // Its files are not new on this ref; listing none makes the
                // change important, so the moved ref is always built.
                let mut c = self.change(h);
                c.files.clear();
                c
            }
            _ => {
                let bare = Commit {
                    id: revision.to_string(),
                    message: String::new(),
                    timestamp: None,
                    url: None,
                    author: None,
                    committer: None,
                    added: vec![],
                    removed: vec![],
                    modified: vec![],
                    distinct: None,
                };
                let mut c = self.change(&bare);
                c.when_timestamp = self.now;
                c
            }
        }
    }
}

/// Turns a push into a plan. `now` stands in for unparseable commit times.
pub fn plan_push(event: &PushEvent, build_tags: bool, now: i64) -> Result<PushPlan, PushError> {
    check_push(event).map_err(|e| PushError(e.to_string()))?;
    let repository = event.repository.web_url().ok_or_else(|| PushError("the push names no repository URL".into()))?;
    let (branch, category) = match GitRef::parse(&event.git_ref) {
        GitRef::Branch(b) => (b, None),
        GitRef::Tag(t) if build_tags => (t, Some("tag".to_string())),
        GitRef::Tag(t) => return Ok(PushPlan::Ignore(format!("tag {t} ignored (github.build_tags is off)"))),
        GitRef::Other(r) => return Ok(PushPlan::Ignore(format!("ref {r} is neither a branch nor a tag"))),
    };
    if event.deleted || is_null_sha(&event.after) {
        if category.is_some() {
            return Ok(PushPlan::Ignore(format!("tag {branch} deleted")));
        }
        return Ok(PushPlan::DeleteBranch { repository, branch });
    }
    let pusher = event.pusher.as_ref().and_then(|p| p.name.as_deref()).map(|n| text::clean(n, text::NAME_MAX));
    let properties = push_properties(event, pusher.as_ref());
    let project = event.repository.full_name().unwrap_or_default();
    let ctx = PushContext { event, repository, project, branch, category, pusher, properties, now };
    // Commits already pushed on another ref are skipped, as Buildbot does.
    let mut changes: Vec<NewChange> =
        event.commits.iter().filter(|c| c.distinct != Some(false)).map(|c| ctx.change(c)).collect();
    // The new head must be built even when `commits` does not list it: a
    // branch created at an existing commit, a force push to an older one,
    // a tag, or a head that was already pushed elsewhere.
    let head_revision = match (&ctx.category, &event.head_commit) {
        (Some(_), Some(h)) => h.id.clone(),
        _ => event.after.clone(),
    };
    if !changes.iter().any(|c| c.revision.as_deref() == Some(head_revision.as_str())) {
        changes.push(ctx.head(&head_revision));
    }
    Ok(PushPlan::Changes(changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(v: serde_json::Value) -> PushEvent {
        serde_json::from_value(v).expect("push event")
    }

    fn commit(id: &str, distinct: bool, files: &[&str]) -> serde_json::Value {
        json!({"id": id, "message": format!("m {id}"), "timestamp": "2019-11-26T15:01:13+08:00",
               "author": {"name": "A", "email": "a@x"}, "committer": {"name": "C", "email": "c@x"},
               "added": files, "modified": [], "removed": [], "distinct": distinct})
    }

    fn repo() -> serde_json::Value {
        json!({"full_name": "o/r", "html_url": "https://github.com/o/r"})
    }

    #[test]
    fn commits_become_changes_and_non_distinct_ones_are_skipped() {
        let e = event(json!({"ref": "refs/heads/main", "after": "c3c3", "repository": repo(),
            "commits": [commit("c1c1", true, &["a"]), commit("c2c2", false, &["b"]), commit("c3c3", true, &["c"])],
            "head_commit": commit("c3c3", true, &["c"])}));
        let PushPlan::Changes(changes) = plan_push(&e, false, 0).expect("plan") else { panic!("changes") };
        let revs: Vec<_> = changes.iter().map(|c| c.revision.clone().unwrap_or_default()).collect();
        assert_eq!(revs, vec!["c1c1", "c3c3"]);
        assert_eq!(changes[0].author, "A <a@x>");
        assert_eq!(changes[0].when_timestamp, 1574751673);
        assert_eq!(changes[1].files, vec!["c"]);
    }

    #[test]
    fn a_non_distinct_head_is_still_built() {
        let e = event(json!({"ref": "refs/heads/main", "after": "c2c2", "repository": repo(),
            "commits": [commit("c2c2", false, &["b"])], "head_commit": commit("c2c2", false, &["b"])}));
        let PushPlan::Changes(changes) = plan_push(&e, false, 0).expect("plan") else { panic!("changes") };
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].revision.as_deref(), Some("c2c2"));
        assert!(changes[0].files.is_empty(), "a head-only change is always important");
    }

    #[test]
    fn tags_only_when_configured() {
        let v = json!({"ref": "refs/tags/v1.0", "after": "7a9c", "repository": repo(), "created": true,
                       "commits": [], "head_commit": commit("c9c9", true, &[])});
        assert!(matches!(plan_push(&event(v.clone()), false, 0), Ok(PushPlan::Ignore(_))));
        let PushPlan::Changes(changes) = plan_push(&event(v), true, 0).expect("plan") else { panic!("changes") };
        assert_eq!(changes[0].branch.as_deref(), Some("v1.0"));
        assert_eq!(changes[0].revision.as_deref(), Some("c9c9"), "the tagged commit, not the tag object");
        assert_eq!(changes[0].category.as_deref(), Some("tag"));
    }

    #[test]
    fn deletions_and_odd_refs() {
        let del = json!({"ref": "refs/heads/gone", "after": "0000000000000000000000000000000000000000",
                         "deleted": true, "repository": repo(), "commits": [], "head_commit": null});
        assert_eq!(
            plan_push(&event(del), false, 0).expect("plan"),
            PushPlan::DeleteBranch { repository: "https://github.com/o/r".into(), branch: "gone".into() }
        );
        let odd = json!({"ref": "refs/pull/1/head", "after": "abcd", "repository": repo()});
        assert!(matches!(plan_push(&event(odd), false, 0), Ok(PushPlan::Ignore(_))));
        let nowhere = json!({"ref": "refs/heads/x", "after": "abcd", "repository": {}});
        assert!(plan_push(&event(nowhere), false, 0).is_err());
    }

    #[test]
    fn legacy_repository_shape() {
        let r: Repository =
            serde_json::from_value(json!({"name": "gith", "url": "https://github.com/danheberden/gith",
            "owner": {"name": "danheberden", "email": "x"}}))
            .expect("repo");
        assert_eq!(r.full_name().as_deref(), Some("danheberden/gith"));
        assert_eq!(r.web_url().as_deref(), Some("https://github.com/danheberden/gith"));
    }
}
