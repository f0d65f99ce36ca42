//! Pull requests as CI sees them: their refs, the skip marker, and which
//! builders a trigger reaches. Pure; the webhook and the poller decide
//! with these.

/// PR numbers beyond this are no PR's (and stay exact in every store).
pub const NUMBER_MAX: u64 = 1_000_000_000_000;

/// The ref GitHub keeps with the PR merged into its base.
pub fn merge_ref(number: u64) -> String {
    format!("refs/pull/{number}/merge")
}

/// The PR number of `refs/pull/N/merge` or `refs/pull/N/head`.
pub fn number_of(branch: &str) -> Option<u64> {
    let rest = branch.strip_prefix("refs/pull/")?;
    let (n, tail) = rest.split_once('/')?;
    if tail != "merge" && tail != "head" || n.starts_with('0') || n.len() > 13 {
        return None;
    }
    n.parse().ok().filter(|n| (1..=NUMBER_MAX).contains(n))
}

/// Whether a commit message asks not to be built: `[skip ci]` or
/// `[ci skip]` anywhere, in any case, spaces allowed inside the brackets
/// (Buildbot's default `skips`, GitHub Actions' markers).
pub fn skips_ci(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { return false };
        let words: Vec<&str> = after[..close].split_whitespace().collect();
        if matches!(words.as_slice(), ["skip", "ci"] | ["ci", "skip"]) {
            return true;
        }
        rest = &after[close..];
    }
    false
}

/// What happened to a PR, as far as its builds care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullAction {
    /// A label was added: build when it is a trigger label.
    Labeled,
    /// New commits: what was asked for the old head is void.
    Synchronized,
    /// Closed or merged: nothing more to build.
    Closed,
    /// Anything else (opened, edited, unlabeled…): nothing to do.
    Other,
}

impl PullAction {
    /// GitHub's `action` field.
    pub fn parse(action: &str) -> PullAction {
        match action {
            "labeled" => PullAction::Labeled,
            "synchronize" => PullAction::Synchronized,
            "closed" => PullAction::Closed,
            _ => PullAction::Other,
        }
    }

    /// Whether pending requests (and, if asked, running builds) of the PR
    /// are cancelled.
    pub fn cancels(self) -> bool {
        matches!(self, PullAction::Synchronized | PullAction::Closed)
    }
}

/// A collaborator's permission on the repository, as
/// `GET /repos/{repo}/collaborators/{user}/permission` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `admin` or `write` (`maintain` is reported as `write`).
    Write,
    /// `read`, `triage`, `none`, or anything unknown.
    ReadOnly,
}

impl Permission {
    /// GitHub's `permission` field.
    pub fn parse(permission: &str) -> Permission {
        match permission {
            "admin" | "maintain" | "write" => Permission::Write,
            _ => Permission::ReadOnly,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_refs_name_their_number() {
        assert_eq!(merge_ref(42), "refs/pull/42/merge");
        assert_eq!(number_of("refs/pull/42/merge"), Some(42));
        assert_eq!(number_of("refs/pull/42/head"), Some(42));
        assert_eq!(number_of("refs/pull/42/other"), None);
        assert_eq!(number_of("refs/pull/042/merge"), None);
        assert_eq!(number_of("refs/pull//merge"), None);
        assert_eq!(number_of("main"), None);
        assert_eq!(number_of("refs/pull/99999999999999999/merge"), None);
        assert_eq!(number_of("refs/pull/1000000000000/merge"), Some(NUMBER_MAX));
        assert_eq!(number_of("refs/pull/1000000000001/merge"), None);
    }

    #[test]
    fn the_skip_marker_is_found_in_any_case_and_spacing() {
        assert!(skips_ci("Fix typo [skip ci]"));
        assert!(skips_ci("[CI SKIP] docs"));
        assert!(skips_ci("docs\n\n[ skip  ci ]"));
        assert!(!skips_ci("skip ci"));
        assert!(!skips_ci("[skip] ci"));
        assert!(!skips_ci("[skip ci"));
        assert!(!skips_ci("[x] [skip tests]"));
        assert!(skips_ci("[x] [skip ci]"));
    }

    #[test]
    fn writers_are_admins_maintainers_and_writers() {
        assert_eq!(Permission::parse("admin"), Permission::Write);
        assert_eq!(Permission::parse("write"), Permission::Write);
        assert_eq!(Permission::parse("maintain"), Permission::Write);
        assert_eq!(Permission::parse("triage"), Permission::ReadOnly);
        assert_eq!(Permission::parse("read"), Permission::ReadOnly);
        assert_eq!(Permission::parse("none"), Permission::ReadOnly);
    }

    #[test]
    fn new_commits_and_closing_cancel() {
        assert!(PullAction::parse("synchronize").cancels());
        assert!(PullAction::parse("closed").cancels());
        assert!(!PullAction::parse("labeled").cancels());
        assert_eq!(PullAction::parse("opened"), PullAction::Other);
    }
}
