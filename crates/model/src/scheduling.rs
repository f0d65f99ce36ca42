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
    files
        .iter()
        .any(|f| !ignore.iter().any(|g| g.matches(f.as_ref())))
}

/// A change waiting in a scheduler, as far as the timer cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    pub important: bool,
    /// When the master received it (Unix seconds), not the commit time:
    /// the tree is stable when nothing new has *arrived* for a while.
    pub received_at: i64,
}

/// When the tree-stable timer fires: `tree_stable` seconds after the last
/// important change arrived. `None` while only unimportant changes wait;
/// they ride along with the next important one.
pub fn tree_stable_fire_at(waiting: &[Waiting], tree_stable_secs: i64) -> Option<i64> {
    waiting
        .iter()
        .filter(|w| w.important)
        .map(|w| w.received_at)
        .max()
        .map(|last| last.saturating_add(tree_stable_secs))
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
    fn timer_restarts_on_each_important_change() {
        let w = |important, received_at| Waiting { important, received_at };
        assert_eq!(tree_stable_fire_at(&[], 30), None);
        assert_eq!(tree_stable_fire_at(&[w(false, 100)], 30), None);
        assert_eq!(tree_stable_fire_at(&[w(true, 100)], 30), Some(130));
        assert_eq!(tree_stable_fire_at(&[w(true, 100), w(true, 120), w(false, 200)], 30), Some(150));
    }
}
