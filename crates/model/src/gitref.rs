//! Git ref names as GitHub sends them (`refs/heads/main`, `refs/tags/v1.0`).

/// A ref, split by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// `refs/heads/NAME`: the branch name.
    Branch(String),
    /// `refs/tags/NAME`: the tag name.
    Tag(String),
    /// Any other ref (`refs/pull/1/head`), kept whole.
    Other(String),
}

impl GitRef {
    /// Splits a full ref name; anything but a branch or tag is `Other`.
    pub fn parse(full: &str) -> GitRef {
        if let Some(b) = full.strip_prefix("refs/heads/") {
            GitRef::Branch(b.to_string())
        } else if let Some(t) = full.strip_prefix("refs/tags/") {
            GitRef::Tag(t.to_string())
        } else {
            GitRef::Other(full.to_string())
        }
    }
}

/// GitHub writes 40 zeros for the missing side of a created or deleted ref.
pub fn is_null_sha(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_refs() {
        assert_eq!(GitRef::parse("refs/heads/main"), GitRef::Branch("main".into()));
        assert_eq!(GitRef::parse("refs/heads/feature/x"), GitRef::Branch("feature/x".into()));
        assert_eq!(GitRef::parse("refs/tags/v3.14.1"), GitRef::Tag("v3.14.1".into()));
        assert_eq!(GitRef::parse("refs/pull/1/head"), GitRef::Other("refs/pull/1/head".into()));
    }

    #[test]
    fn null_sha() {
        assert!(is_null_sha("0000000000000000000000000000000000000000"));
        assert!(!is_null_sha("0000000000000000000000000000000000000001"));
        assert!(!is_null_sha(""));
    }
}
