//! A change: one pushed commit (or one injected by hand), before it is stored.

use std::collections::BTreeMap;

/// What a change source hands to the store. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChange {
    /// `Name <email>`, as Buildbot writes it.
    pub author: String,
    /// The committer, when the push names one; `None` for sendchange and forced builds.
    pub committer: Option<String>,
    /// The commit message.
    pub comments: String,
    /// The git branch name (`main`), not the configured label (`3.x`).
    pub branch: Option<String>,
    /// The commit's full sha; `None` when the change names no commit.
    pub revision: Option<String>,
    /// A link to the commit, shown on pages.
    pub revlink: Option<String>,
    /// When the commit was made (from the commit), Unix seconds.
    pub when_timestamp: i64,
    /// `Some("tag")` for a pushed tag, `None` for a branch.
    pub category: Option<String>,
    /// The repository's web URL.
    pub repository: String,
    /// Buildbot's codebase; always empty here, as there is one repository.
    pub codebase: String,
    /// The repository's `owner/name`.
    pub project: String,
    /// Paths added, modified or removed, for `ignore_files` to judge.
    pub files: Vec<String>,
    /// Property values as JSON; their source is always "Change".
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// [`format_identity`] of what a sender says (cleaned free text), or empty.
pub fn clean_identity(name: Option<&str>, email: Option<&str>) -> String {
    let part = |v: Option<&str>| crate::text::clean(v.unwrap_or(""), crate::text::NAME_MAX);
    format_identity(&part(name), &part(email))
}

/// Formats a git identity the way Buildbot stores it.
pub fn format_identity(name: &str, email: &str) -> String {
    match (name.trim(), email.trim()) {
        ("", "") => String::new(),
        (n, "") => n.to_string(),
        ("", e) => format!("<{e}>"),
        (n, e) => format!("{n} <{e}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_formats() {
        assert_eq!(format_identity("Ann", "ann@example.org"), "Ann <ann@example.org>");
        assert_eq!(format_identity("Ann", ""), "Ann");
        assert_eq!(format_identity("", "a@b"), "<a@b>");
    }
}
