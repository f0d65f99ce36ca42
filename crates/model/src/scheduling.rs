//! Pure scheduler decisions: whether a change matters, and when a branch
//! scheduler's tree-stable timer fires.

use crate::glob::Glob;

/// A change is important unless every file it touches is ignored.
/// A change that names no files (a force push, a sendchange without files)
/// is important: nothing says it can be skipped.
pub fn is_important<S: AsRef<str>>(files: &[S], ignore: &[Glob]) -> bool {
    if files.is_empty() || ignore.is_empty() {
        return true;
    }
    files.iter().any(|f| !ignore.iter().any(|g| g.matches(f.as_ref())))
}

/// When the tree-stable timer fires: `tree_stable` after the last
/// important change *arrived* (not its commit time: the tree is stable when
/// nothing new has come for a while), both in milliseconds. `None` while
/// only unimportant changes wait; they ride along with the next important one.
pub fn tree_stable_fire_at(last_important_arrival_ms: Option<i64>, tree_stable_ms: i64) -> Option<i64> {
    last_important_arrival_ms.map(|last| last.saturating_add(tree_stable_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(ps: &[&str]) -> Vec<Glob> {
        ps.iter().map(|p| Glob::new(p).expect("valid")).collect()
    }

    #[test]
    fn importance() {
        let ignore = globs(&["Doc/**", "Misc/**", "*.rst"]);
        assert!(!is_important(&["Doc/whatsnew/3.15.rst", "Misc/NEWS.d/x.rst"], &ignore));
        assert!(is_important(&["Doc/a.rst", "Lib/os.py"], &ignore));
        assert!(is_important::<&str>(&[], &ignore));
        assert!(is_important(&["Doc/a.rst"], &[]));
    }

    #[test]
    fn timer_counts_from_the_last_important_arrival() {
        assert_eq!(tree_stable_fire_at(None, 30), None);
        assert_eq!(tree_stable_fire_at(Some(100), 30), Some(130));
        assert_eq!(tree_stable_fire_at(Some(i64::MAX), 30), Some(i64::MAX));
    }
}
